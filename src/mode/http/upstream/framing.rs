//! Response body framing (RFC 9112 section 6 and 7.1): how many bytes belong to the body,
//! and the chunked decoder. Pure functions over a buffer, so they can be tested on any bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (with extensions) accepted from the upstream.
pub(super) const MAX_CHUNK_LINE: usize = 8 * 1024;
/// Largest trailer section accepted (it is read and dropped).
pub(super) const MAX_TRAILERS: usize = 64 * 1024;

/// How the response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RespFraming {
    /// No body (HEAD, 1xx, 204, 304), or all of it sent.
    Done,
    /// This many bytes left.
    Length(u64),
    /// Chunked, at this point of the chunk grammar.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

/// Where the chunked decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// In the trailer section, this many bytes of it consumed so far.
    Trailers(usize),
}

/// One step of the decoder.
#[derive(Debug)]
pub(super) enum ChunkStep {
    /// Moved to this state, maybe with data to hand on.
    Next(RespFraming, Option<Bytes>),
    /// The buffer does not hold enough to move on.
    NeedMore,
}

/// One step of the chunked-coding grammar over what is buffered. Bytes past the end of the
/// message stay in `buf` (so the caller can see that something was left over).
pub(super) fn chunk_step(state: Chunk, buf: &mut BytesMut) -> Result<ChunkStep, &'static str> {
    Ok(match state {
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                return Err("upstream sent an overlong chunk-size line")
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                let next = if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                };
                ChunkStep::Next(RespFraming::Chunked(next), None)
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_CHUNK_LINE => ChunkStep::NeedMore,
            Ok(httparse::Status::Partial) => {
                return Err("upstream sent an overlong chunk-size line")
            }
            Err(_) => return Err("upstream sent an invalid chunk size"),
        },
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(ChunkStep::NeedMore);
            }
            let (data, rest) = take_up_to(left, buf);
            let next = match rest {
                0 => Chunk::DataEnd,
                rest => Chunk::Data(rest),
            };
            ChunkStep::Next(RespFraming::Chunked(next), Some(data))
        }
        Chunk::DataEnd => match buf.get(..2) {
            None => ChunkStep::NeedMore,
            Some(b"\r\n") => {
                buf.advance(2);
                ChunkStep::Next(RespFraming::Chunked(Chunk::Size), None)
            }
            Some(_) => return Err("upstream sent a chunk without its CRLF"),
        },
        Chunk::Trailers(seen) => match buf.windows(2).position(|w| w == b"\r\n") {
            // An empty line ends the message; trailer fields are dropped.
            Some(0) => {
                buf.advance(2);
                ChunkStep::Next(RespFraming::Done, None)
            }
            Some(i) => {
                let seen = seen.saturating_add(i + 2);
                if seen > MAX_TRAILERS {
                    return Err("upstream sent an oversized trailer section");
                }
                buf.advance(i + 2);
                ChunkStep::Next(RespFraming::Chunked(Chunk::Trailers(seen)), None)
            }
            None if buf.len() <= MAX_CHUNK_LINE => ChunkStep::NeedMore,
            None => return Err("upstream sent an oversized trailer line"),
        },
    })
}

/// Splits off at most `left` bytes from the front of `buf`: the bytes, and how many of
/// `left` remain. Every byte taken is counted against `left`; none past it is taken.
pub(super) fn take_up_to(left: u64, buf: &mut BytesMut) -> (Bytes, u64) {
    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
    let data = buf.split_to(take).freeze();
    (data, left.saturating_sub(take as u64))
}

/// One step of a Content-Length body over what is buffered: the data, and the framing after.
pub(super) fn length_step(left: u64, buf: &mut BytesMut) -> (Bytes, RespFraming) {
    let (data, rest) = take_up_to(left, buf);
    let next = match rest {
        0 => RespFraming::Done,
        rest => RespFraming::Length(rest),
    };
    (data, next)
}
