use thiserror::Error;

/// Errors of the pipeline file: always the file, the key path and (for syntax and type
/// errors) the line, so the fix is obvious without reading the code.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read pipeline file {origin}: {message}")]
    Read { origin: String, message: String },
    /// TOML syntax, an unknown key, a wrong type.
    #[error("pipeline file {origin}, line {line}, at `{path}`: {message}")]
    Parse {
        origin: String,
        path: String,
        line: usize,
        message: String,
    },
    /// A value that parses but breaks a rule (a reference to a missing column, a limit).
    #[error("pipeline file {origin}, at `{path}`: {reason}")]
    Invalid {
        origin: String,
        path: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn from_toml(origin: &str, text: &str, path: &str, e: toml::de::Error) -> Self {
        let line = e
            .span()
            .map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            })
            .unwrap_or(0);
        let path = if path.is_empty() || path == "." {
            "(top level)".to_string()
        } else {
            path.to_string()
        };
        ConfigError::Parse {
            origin: origin.to_string(),
            path,
            line,
            message: e.message().trim().to_string(),
        }
    }
}

/// A broken rule at a key path, relative to the section that found it. Each enclosing
/// section adds its part of the path (`within`); the pipeline adds the file (`into_error`).
#[derive(Debug)]
pub(crate) struct Invalid {
    path: String,
    reason: String,
}

impl Invalid {
    /// The rule broken at `path` (empty: the section itself).
    pub(crate) fn at(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error seen from the enclosing section `prefix`: `batch_rows` within
    /// `output` is `output.batch_rows`.
    pub(crate) fn within(self, prefix: &str) -> Self {
        let path = if self.path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.path)
        };
        Self { path, ..self }
    }

    pub(crate) fn into_error(self, origin: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: origin.to_string(),
            path: self.path,
            reason: self.reason,
        }
    }
}
