//! Where the watchdog listens: sockets handed over by whoever started it (systemd-style
//! `LISTEN_FDS`: fd 3 for requests, fd 4 for metrics), or ports it binds itself.
//!
//! Passing a listener lets a supervisor (or a test) bind port 0 and keep the socket, so no
//! one has to guess a free port and hope nobody takes it before the watchdog binds it.

use std::os::fd::{FromRawFd, RawFd};

use crate::config::ConfigError;

/// First descriptor of the socket-activation protocol.
const FIRST_FD: RawFd = 3;

/// The listeners passed in the environment, taken once; none when `LISTEN_FDS` is unset
/// or meant for another process (`LISTEN_PID`). The variables are removed, so the function
/// does not believe the sockets were meant for it, and the descriptors are closed on exec.
pub fn inherited() -> Result<Vec<std::net::TcpListener>, ConfigError> {
    let Some(n) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let pid_matches =
        std::env::var("LISTEN_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
    // Still single-threaded (called from main before the runtime starts).
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    if !pid_matches {
        return Ok(Vec::new());
    }
    let n = n
        .to_str()
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .filter(|n| (1..=2).contains(n))
        .ok_or_else(|| ConfigError::new("LISTEN_FDS", "must be 1 or 2 (requests, metrics)"))?;
    (FIRST_FD..FIRST_FD + n).map(take).collect()
}

fn take(fd: RawFd) -> Result<std::net::TcpListener, ConfigError> {
    use nix::sys::socket::{getsockopt, sockopt, AddressFamily, SockType, SockaddrLike};
    use std::os::fd::BorrowedFd;
    let bad = |why: String| ConfigError::new("LISTEN_FDS", format!("descriptor {fd}: {why}"));
    // SAFETY: only borrowed for the checks below; fcntl fails cleanly on a closed descriptor.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).map_err(|e| bad(e.to_string()))?;
    match getsockopt(&borrowed, sockopt::AcceptConn) {
        Ok(true) => {}
        Ok(false) => return Err(bad("is not a listening socket".into())),
        Err(e) => return Err(bad(format!("is not a socket ({e})"))),
    }
    let family = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
        .ok()
        .and_then(|a| a.family());
    let tcp = matches!(
        getsockopt(&borrowed, sockopt::SockType),
        Ok(SockType::Stream)
    ) && matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6));
    if !tcp {
        return Err(bad("is not a TCP socket".into()));
    }
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| bad(e.to_string()))?;
    // SAFETY: the descriptor is open, a listening stream socket, and handed to us by the
    // protocol; nothing else in this process owns it, and it is taken exactly once.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|e| bad(e.to_string()))?;
    Ok(listener)
}
