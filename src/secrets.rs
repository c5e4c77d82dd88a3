//! Secrets: lookup order, required secrets at start, API-key and HMAC request checks.
//! (Skeleton: lookup and checks are completed in the secrets issue.)

use http::request::Parts;

use crate::body::ReqBody;
use crate::config::{Config, ConfigError};
use crate::error::Error;

/// Request authentication configured by `api_key_secret` and `hmac_secret`.
pub struct Auth {}

impl Auth {
    /// Validates `secrets`, `api_key_secret` and `hmac_secret` at start.
    pub fn from_config(_config: &Config) -> Result<Auth, ConfigError> {
        Ok(Auth {})
    }

    /// Checks a function request; returns the body to hand on (unchanged bytes).
    pub async fn verify(
        &self,
        _parts: &Parts,
        body: ReqBody,
        _read_deadline: tokio::time::Instant,
    ) -> Result<ReqBody, Error> {
        Ok(body)
    }
}
