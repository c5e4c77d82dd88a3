//! `file`: the request body is written to a private file whose path the command gets as its
//! last argument. (Skeleton: completed in the file-mode issue.)

use std::sync::Arc;

use http::{Request, Response};

use crate::body::{Body, ReqBody};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::function::fork::Fork;
use crate::function::Ctx;
use crate::process::LogOptions;

/// The file-input command runner.
pub struct FileMode {
    fork: Fork,
}

impl FileMode {
    /// A runner for `config`; cleans scratch folders left by a crashed run.
    pub fn new(config: Arc<Config>, log: LogOptions) -> Result<FileMode, ConfigError> {
        Ok(FileMode {
            fork: Fork::new(config, log),
        })
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        self.fork.handle(req, ctx).await
    }
}
