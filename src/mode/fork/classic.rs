//! `compat=classic`: answers shaped the way the classic OpenFaaS watchdog shapes them, so a
//! classic Dockerfile that only sets `fprocess` behaves the same after the `FROM` swap.
//! Measured against classic-watchdog 0.3.9 on the same requests:
//!
//! - a run that exits non-zero is a 500 whose body is Go's description of the exit
//!   (`exit status 3`, `signal: killed`), a newline, then everything the function printed,
//!   as `text/plain; charset=utf-8`;
//! - otherwise the Content-Type is `content_type` when set, else the request's own, else
//!   what Go's sniffing gives for the body: `text/plain; charset=utf-8` for text (valid
//!   UTF-8 without control bytes other than whitespace) and `application/octet-stream`
//!   for anything else. Go also names HTML, images and a few more; those are not sniffed.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, StatusCode};

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// The status, headers and body the classic watchdog would send for this run.
pub fn shape(
    status: ExitStatus,
    out: Bytes,
    mut headers: HeaderMap,
    code: StatusCode,
    content_type: &str,
    request_type: Option<&HeaderValue>,
) -> (StatusCode, HeaderMap, Bytes) {
    if !status.success() {
        let why = go_exit(status);
        let mut body = BytesMut::with_capacity(why.len() + 1 + out.len());
        body.put_slice(why.as_bytes());
        body.put_u8(b'\n');
        body.put_slice(&out);
        headers.insert(header::CONTENT_TYPE, TEXT);
        headers.remove(header::CONTENT_LENGTH);
        return (StatusCode::INTERNAL_SERVER_ERROR, headers, body.freeze());
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        let chosen = match HeaderValue::from_str(content_type) {
            Ok(v) if !content_type.is_empty() => v,
            _ => request_type.cloned().unwrap_or_else(|| sniff(&out)),
        };
        headers.insert(header::CONTENT_TYPE, chosen);
    }
    (code, headers, out)
}

/// How Go's `os/exec` describes an exit that was not a success.
fn go_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let name = match status.signal() {
        Some(9) => "killed",
        Some(15) => "terminated",
        Some(2) => "interrupt",
        Some(6) => "aborted",
        Some(11) => "segmentation fault",
        Some(n) => return format!("signal: {n}"),
        None => return "exit status unknown".into(),
    };
    format!("signal: {name}")
}

/// Text or not, as Go's `http.DetectContentType` decides for the common cases.
fn sniff(body: &[u8]) -> HeaderValue {
    let head = &body[..body.len().min(512)];
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        // A multi-byte character cut at 512 bytes is still text.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return HeaderValue::from_static("application/octet-stream"),
    };
    if text
        .bytes()
        .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
    {
        return HeaderValue::from_static("application/octet-stream");
    }
    TEXT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_failed_run_is_500_with_gos_exit_line_then_the_output() {
        let (code, h, body) = shape(
            exit(3),
            Bytes::from_static(b"out\n"),
            HeaderMap::new(),
            StatusCode::OK,
            "",
            None,
        );
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(&body[..], b"exit status 3\nout\n");
        assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        let (_, _, body) = shape(
            ExitStatus::from_raw(9),
            Bytes::new(),
            HeaderMap::new(),
            StatusCode::OK,
            "",
            None,
        );
        assert_eq!(&body[..], b"signal: killed\n");
    }

    #[test]
    fn content_type_is_the_setting_then_the_requests_then_sniffed() {
        let rt = HeaderValue::from_static("text/x-foo");
        let ct = |set: &str, req: Option<&HeaderValue>, body: &'static [u8]| {
            let (_, h, _) = shape(
                exit(0),
                Bytes::from_static(body),
                HeaderMap::new(),
                StatusCode::OK,
                set,
                req,
            );
            h[header::CONTENT_TYPE].to_str().unwrap().to_string()
        };
        assert_eq!(ct("application/json", Some(&rt), b"x"), "application/json");
        assert_eq!(ct("", Some(&rt), b"x"), "text/x-foo");
        assert_eq!(ct("", None, b"hello\n"), "text/plain; charset=utf-8");
        assert_eq!(ct("", None, b"\x00\x01\xff"), "application/octet-stream");
    }
}
