//! `static`: serves `static_path`. (Skeleton: completed in the static-mode issue.)

use std::path::PathBuf;

use http::{Request, Response};

use crate::body::{Body, ReqBody};
use crate::config::{Config, ConfigError};
use crate::error::Error;

/// The static file server.
pub struct StaticFiles {
    _root: PathBuf,
}

impl StaticFiles {
    /// A server for `config.static_path`.
    pub fn new(config: &Config) -> Result<StaticFiles, ConfigError> {
        Ok(StaticFiles {
            _root: config.static_path.clone(),
        })
    }

    /// Handles one request.
    pub async fn handle(&self, _req: Request<ReqBody>) -> Result<Response<Body>, Error> {
        Err(Error::Unavailable("static mode is not implemented yet"))
    }
}
