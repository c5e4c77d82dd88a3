//! One connection to the upstream: its halves, its read buffer, the liveness checks made
//! before it is reused, and the raw stream an upgrade hands over.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

use super::head::{parse_head, HeadError, ParsedHead};
use super::{Failure, IDLE_FOR};
use crate::config::Upstream;

/// One connection to the upstream.
pub(super) struct Conn {
    pub(super) rd: Rd,
    pub(super) wr: Option<Wr>,
    pub(super) buf: BytesMut,
    /// The request head being sent, a buffer reused for every request on the connection.
    pub(super) wire: Vec<u8>,
    pub(super) reused: bool,
    /// How long it may sit idle in the pool (the upstream's Keep-Alive timeout may shorten it).
    pub(super) keep: Duration,
}

impl Conn {
    fn fd(&self) -> RawFd {
        match &self.rd {
            Sock::Tcp(r) => r.as_ref().as_raw_fd(),
            Sock::Unix(r) => r.as_ref().as_raw_fd(),
        }
    }

    /// False when the upstream closed the connection (or sent something unasked) while it
    /// sat in the pool, as far as the runtime's readiness state knows: no syscall when
    /// nothing was signalled. Enough right after the connection was used.
    pub(super) fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        let res = match &self.rd {
            Sock::Tcp(r) => r.try_read(&mut probe),
            Sock::Unix(r) => r.try_read(&mut probe),
        };
        matches!(res, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Like [`Conn::looks_open`], but asks the kernel: the runtime learns of a FIN only when
    /// its reactor next polls, which under load can be after this request went out on a
    /// connection the upstream already closed. A read of one byte on the non-blocking socket:
    /// EAGAIN means open and clean; EOF, an error or a byte (which the connection would
    /// otherwise take as the next answer) means it must go.
    pub(super) fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(
            nix::unistd::read(self.fd(), &mut probe),
            Err(nix::errno::Errno::EAGAIN)
        )
    }

    /// Reads until a complete response head (skipping 1xx other than 101) is buffered.
    pub(super) fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<ParsedHead, Failure>> {
        let mut read_any = !self.buf.is_empty();
        loop {
            loop {
                let head = match parse_head(&mut self.buf) {
                    Ok(Some(head)) => head,
                    Ok(None) => break,
                    Err(HeadError::TooLarge) => {
                        return Poll::Ready(Err(Failure::Broken(
                            "upstream response head too large".into(),
                        )))
                    }
                    Err(HeadError::Invalid(why)) => {
                        return Poll::Ready(Err(Failure::Broken(format!("upstream sent {why}"))))
                    }
                };
                let interim = head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS;
                if !interim {
                    return Poll::Ready(Ok(head));
                }
            }
            let why = match ready!(poll_fill(&mut self.rd, &mut self.buf, cx)) {
                Ok(0) if read_any => "upstream closed the connection mid-response".to_string(),
                Ok(0) => "upstream closed the connection without answering".to_string(),
                Ok(_) => {
                    read_any = true;
                    continue;
                }
                Err(e) => format!("reading response: {e}"),
            };
            // Only a connection that gave nothing back may take the request again.
            return Poll::Ready(Err(if read_any {
                Failure::Broken(why)
            } else {
                Failure::BeforeAnswer(why)
            }));
        }
    }
}

/// Reads whatever is available into the spare capacity of `buf`.
pub(super) fn poll_fill(
    rd: &mut Rd,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(16 * 1024);
    }
    let spare = buf.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    ready!(Pin::new(rd).poll_read(cx, &mut rb))?;
    let n = rb.filled().len();
    // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity (ReadBuf
    // tracks that), so extending the length over them exposes only written bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// The upstream side of a `101 Switching Protocols` exchange: the raw connection, with any
/// bytes the upstream sent after its head.
pub struct Upgraded {
    pub(super) conn: Conn,
}

impl Upgraded {
    /// Bytes already read past the response head, to be delivered first.
    pub fn take_leftover(&mut self) -> Bytes {
        self.conn.buf.split().freeze()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn.rd).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.conn.wr.as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.conn.wr.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.conn.wr.as_mut() {
            Some(w) => Pin::new(w).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Opens a new connection to the upstream (TCP with Nagle off, or a unix socket).
pub async fn connect_stream(upstream: &Upstream) -> io::Result<Stream> {
    match upstream {
        Upstream::Tcp { authority, .. } => {
            let s = TcpStream::connect(authority.as_str()).await?;
            let _ = s.set_nodelay(true);
            Ok(Sock::Tcp(s))
        }
        Upstream::Unix(path) => Ok(Sock::Unix(UnixStream::connect(path).await?)),
    }
}

/// A new connection, split so the body can be sent while the answer is read.
pub(super) async fn connect(upstream: &Upstream) -> io::Result<Conn> {
    let (rd, wr) = match connect_stream(upstream).await? {
        Sock::Tcp(s) => {
            let (r, w) = s.into_split();
            (Sock::Tcp(r), Sock::Tcp(w))
        }
        Sock::Unix(s) => {
            let (r, w) = s.into_split();
            (Sock::Unix(r), Sock::Unix(w))
        }
    };
    Ok(Conn {
        rd,
        wr: Some(wr),
        buf: BytesMut::with_capacity(8 * 1024),
        wire: Vec::with_capacity(512),
        reused: false,
        keep: IDLE_FOR,
    })
}

/// A connection to the upstream, or one half of it: over TCP or a unix socket.
pub enum Sock<T, U> {
    /// `http://host:port`.
    Tcp(T),
    /// `unix:/path`.
    Unix(U),
}

/// A whole connection to the upstream.
pub type Stream = Sock<TcpStream, UnixStream>;
pub(super) type Rd = Sock<tcp::OwnedReadHalf, unix::OwnedReadHalf>;
pub(super) type Wr = Sock<tcp::OwnedWriteHalf, unix::OwnedWriteHalf>;

impl<T: AsyncRead + Unpin, U: AsyncRead + Unpin> AsyncRead for Sock<T, U> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Sock::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin, U: AsyncWrite + Unpin> AsyncWrite for Sock<T, U> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Sock::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Sock::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Sock::Tcp(s) => s.is_write_vectored(),
            Sock::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_flush(cx),
            Sock::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Sock::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// The runtime's readiness state lags the socket until its reactor next runs; a pooled
    /// connection's liveness check must not trust it after an idle moment. Here nothing lets
    /// the reactor run between the upstream's bytes (or FIN) and the check, as under load.
    #[test]
    fn liveness_check_sees_what_the_reactor_has_not_yet() {
        use std::io::Write;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for unasked in [true, false] {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let upstream = crate::config::Upstream::Tcp {
                    authority: listener.local_addr().unwrap().to_string(),
                    prefix: String::new(),
                };
                let conn = connect(&upstream).await.unwrap();
                let (mut peer, _) = listener.accept().unwrap();
                // Let the reactor see the (empty) socket once.
                tokio::task::yield_now().await;
                assert!(conn.looks_open() && conn.still_open());
                if unasked {
                    peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE")
                        .unwrap();
                } else {
                    drop(peer);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                // No await since: the runtime has not been told.
                assert!(
                    conn.looks_open(),
                    "readiness is stale here (unasked={unasked})"
                );
                assert!(
                    !conn.still_open(),
                    "the socket itself says so (unasked={unasked})"
                );
            }
        });
    }
}
