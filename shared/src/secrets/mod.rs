//! Secrets: the HMAC key for PII hashing. Read once at start-up, from Secrets Manager in AWS
//! or from a key file locally; wrapped so neither `Debug` nor `Display` can print it.

use std::fmt;
use std::path::Path;

use thiserror::Error;

/// The key for keyed hashing of PII columns.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

impl HashKey {
    /// Wraps key bytes. At least 16 bytes: a short key makes the hashes guessable.
    pub fn new(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.len() < 16 {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        Ok(Self(bytes))
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
    /// Reads a key file (the whole file is the key; one trailing newline is ignored so keys
    /// written with `echo` work).
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let mut b = std::fs::read(path).map_err(|e| SecretError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if b.last() == Some(&b'\n') {
            b.pop();
        }
        Self::new(b)
    }
    /// Reads the key from Secrets Manager: SecretString (as UTF-8 bytes) or SecretBinary.
    pub async fn from_secrets_manager(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
    ) -> Result<Self, SecretError> {
        let out = client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| {
                let f = crate::aws::classify(&e);
                SecretError::Fetch {
                    secret_id: secret_id.to_string(),
                    message: f.message,
                    retryable: f.retryable,
                }
            })?;
        let bytes = match (out.secret_string(), out.secret_binary()) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(b)) => b.as_ref().to_vec(),
            (None, None) => {
                return Err(SecretError::Empty {
                    secret_id: secret_id.to_string(),
                })
            }
        };
        Self::new(bytes)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// Errors reading a secret. Messages name the secret or file, never its content.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("hash key is {len} bytes; at least 16 are required")]
    TooShort { len: usize },
    #[error("cannot read hash key file {path}: {message}")]
    File { path: String, message: String },
    #[error("cannot read secret {secret_id} from Secrets Manager: {message}")]
    Fetch {
        secret_id: String,
        message: String,
        retryable: bool,
    },
    #[error("secret {secret_id} has neither SecretString nor SecretBinary")]
    Empty { secret_id: String },
    #[error("the pipeline hashes PII columns but no hash key is configured: set [hash_key] secret or file, or pass --hash-key-file")]
    Missing,
}

impl SecretError {
    /// Whether trying again may succeed (throttling, a network failure).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SecretError::Fetch {
                retryable: true,
                ..
            }
        )
    }
}

/// Loads the hash key the pipeline names: `override_file` first (CLI flag), then the
/// pipeline's `file`, then its `secret`. `None` when no table hashes anything.
pub async fn load_hash_key(
    pipeline: &crate::config::Pipeline,
    override_file: Option<&Path>,
    secrets: Option<&aws_sdk_secretsmanager::Client>,
) -> Result<Option<HashKey>, SecretError> {
    if let Some(f) = override_file {
        return HashKey::from_file(f).map(Some);
    }
    if let Some(f) = pipeline.hash_key_file() {
        return HashKey::from_file(&f).map(Some);
    }
    if let Some(id) = pipeline.hash_key.as_ref().and_then(|h| h.secret.as_deref()) {
        // The start-up's client when there is one; otherwise one from the environment.
        return match secrets {
            Some(client) => HashKey::from_secrets_manager(client, id).await,
            None => {
                let client = crate::aws::secrets_client(&crate::aws::sdk_config().await);
                HashKey::from_secrets_manager(&client, id).await
            }
        }
        .map(Some);
    }
    if pipeline.needs_hash_key() {
        return Err(SecretError::Missing);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let k = HashKey::new(b"super-secret-key-material".to_vec()).expect("key");
        assert_eq!(format!("{k:?}"), "HashKey(<redacted>)");
        assert!(HashKey::new(b"short".to_vec()).is_err());
    }
}
