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
