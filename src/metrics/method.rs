//! The `method` label, bounded as promhttp bounds it.

use http::Method;

/// The `method` label: the lower-case method for the methods client_golang's promhttp knows,
/// `unknown` for anything else, so a client inventing methods cannot grow the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    /// `get`
    Get,
    /// `put`
    Put,
    /// `head`
    Head,
    /// `post`
    Post,
    /// `delete`
    Delete,
    /// `connect`
    Connect,
    /// `options`
    Options,
    /// `notify`
    Notify,
    /// `trace`
    Trace,
    /// `patch`
    Patch,
    /// Any other method.
    Unknown,
}

impl MethodLabel {
    /// Maps a request method to its label, as promhttp's `sanitizeMethod` does (it accepts
    /// the lower-case spellings too).
    pub fn of(method: &Method) -> MethodLabel {
        match method.as_str() {
            "GET" | "get" => MethodLabel::Get,
            "PUT" | "put" => MethodLabel::Put,
            "HEAD" | "head" => MethodLabel::Head,
            "POST" | "post" => MethodLabel::Post,
            "DELETE" | "delete" => MethodLabel::Delete,
            "CONNECT" | "connect" => MethodLabel::Connect,
            "OPTIONS" | "options" => MethodLabel::Options,
            "NOTIFY" | "notify" => MethodLabel::Notify,
            "TRACE" | "trace" => MethodLabel::Trace,
            "PATCH" | "patch" => MethodLabel::Patch,
            _ => MethodLabel::Unknown,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "get",
            MethodLabel::Put => "put",
            MethodLabel::Head => "head",
            MethodLabel::Post => "post",
            MethodLabel::Delete => "delete",
            MethodLabel::Connect => "connect",
            MethodLabel::Options => "options",
            MethodLabel::Notify => "notify",
            MethodLabel::Trace => "trace",
            MethodLabel::Patch => "patch",
            MethodLabel::Unknown => "unknown",
        }
    }
}
