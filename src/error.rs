//! The watchdog's own failures and the one place they become HTTP responses.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;

/// Header that marks a response made by the watchdog rather than the function.
pub const INTERNAL_HEADER: &str = "x-openfaas-internal";

/// Errors the watchdog answers itself. Each maps to one status code and a one-line body.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was malformed in a way the function must not see.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Missing or wrong credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The client took longer than `read_timeout` to send the body.
    #[error("request body not received within read_timeout")]
    ReadTimeout,
    /// Body over `max_body_size` (or the in-memory bound).
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    /// A request body of a kind the watchdog will not hand on (a CloudEvents batch).
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Request headers over the limit.
    #[error("request headers larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// `max_inflight` reached.
    #[error("concurrent request limit exceeded. Max concurrent requests: {0}")]
    TooManyRequests(usize),
    /// The function failed or could not be reached.
    #[error("function failed: {0}")]
    FunctionFailed(String),
    /// The function is not ready (http mode start) or the watchdog is shutting down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// A method this endpoint does not take; `allow` lists the ones it does.
    #[error("method not allowed: {why}")]
    MethodNotAllowed {
        /// The `Allow` header's value.
        allow: &'static str,
        /// The rest of the one-line reason.
        why: &'static str,
    },
    /// The function ran past its exec timeout.
    #[error("function timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl Error {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::ReadTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::FunctionFailed(_) => StatusCode::BAD_GATEWAY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A plain-text, one-line response marked as the watchdog's own.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let allow = match &self {
            Error::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        let mut line = self.to_string().replace(['\r', '\n'], " ");
        line.push('\n');
        let mut resp = Response::new(crate::body::full(line));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(INTERNAL_HEADER, HeaderValue::from_static("fwatchdog"));
        if let Some(allow) = allow {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
