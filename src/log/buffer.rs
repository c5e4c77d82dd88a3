//! The watchdog's stderr (its own log lines and the function's forwarded ones), written
//! when a runtime thread has nothing else to do.
//!
//! A `write(2)` per access-log line used to sit on the request path, before the response
//! went out, and through a pipe it woke the log reader once per request. Lines are now
//! gathered and written in one go when a runtime thread is about to sleep (the runtimes
//! call [`flush`] from `on_thread_park`), once 8 KiB have piled up, or when the oldest
//! waiting line is 50 ms old. Threads outside a runtime write through at once.

use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Pending bytes beyond which a write goes out at once.
const FLUSH_AT: usize = 8 * 1024;
/// Oldest a pending line may get while the runtime stays busy.
const MAX_DELAY: Duration = Duration::from_millis(50);

struct Pending {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    bytes: Vec::new(),
    since: None,
});

/// Queues `bytes` for stderr (or writes them now, outside a runtime).
pub fn write(bytes: &[u8]) {
    if tokio::runtime::Handle::try_current().is_err() {
        flush();
        write_out(bytes);
        return;
    }
    let mut p = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    p.bytes.extend_from_slice(bytes);
    let since = *p.since.get_or_insert_with(Instant::now);
    if p.bytes.len() >= FLUSH_AT || since.elapsed() >= MAX_DELAY {
        drain(&mut p);
    }
}

/// Writes out whatever is pending.
pub fn flush() {
    let mut p = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    if !p.bytes.is_empty() {
        drain(&mut p);
    }
}

fn drain(p: &mut Pending) {
    write_out(&p.bytes);
    p.bytes.clear();
    p.since = None;
}

fn write_out(bytes: &[u8]) {
    // Nowhere to report a failing stderr; the line is dropped, never the request.
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// A `std::io::Write` over [`write`], for the tracing subscriber.
pub struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
