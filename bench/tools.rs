//! Benchmark helpers, std only (compiled by the bench scripts with rustc -O):
//!   tools spawn CONC SECONDS CMD...   the machine's limit: spawn+wait CMD in CONC threads,
//!                                     each writing a 5-byte body and reading the output
//!   tools startup RUNS BIN            median time from spawning BIN to its port accepting
//!                                     (BIN gets PORT and metrics_port=0 in its env)
//!   tools healthy PORT CMD...         milliseconds from spawning CMD (with this environment)
//!                                     to its first 200 on GET /_/health at PORT; then CMD and
//!                                     everything it started are killed
//!   tools upstream PORT MICROS sleep|burn
//!                                     an HTTP/1.1 keep-alive server (a thread per connection)
//!                                     that answers every request with "ok" after sleeping,
//!                                     or burning CPU, for MICROS
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("spawn") => spawn(args[1].parse().unwrap(), args[2].parse().unwrap(), &args[3..]),
        Some("startup") => startup(args[1].parse().unwrap(), &args[2]),
        Some("healthy") => healthy(args[1].parse().unwrap(), &args[2..]),
        Some("upstream") => upstream(args[1].parse().unwrap(), args[2].parse().unwrap(), args[3] == "burn"),
        _ => eprintln!("usage: tools spawn CONC SECONDS CMD... | tools startup RUNS BIN | tools healthy PORT CMD... | tools upstream PORT MICROS sleep|burn"),
    }
}

fn spawn(conc: usize, secs: u64, cmd: &[String]) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..conc)
        .map(|_| {
            let (done, stop, cmd) = (done.clone(), stop.clone(), cmd.to_vec());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut c = Command::new(&cmd[0]);
                    c.args(&cmd[1..]).process_group(0);
                    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
                    let mut child = c.spawn().unwrap();
                    child.stdin.take().unwrap().write_all(b"hello").unwrap();
                    out.clear();
                    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
                    child.wait().unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!("{:.0}", done.load(Ordering::Relaxed) as f64 / secs as f64);
}

fn startup(runs: usize, bin: &str) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let t = Instant::now();
        let mut child = Command::new(bin)
            .env("PORT", port.to_string())
            .env("metrics_port", "0")
            .env("fprocess", "cat")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_micros(100));
        }
        times.push(t.elapsed());
        child.kill().unwrap();
        child.wait().unwrap();
    }
    times.sort();
    println!("{:.2}", times[runs / 2].as_secs_f64() * 1000.0);
}

fn healthy(port: u16, cmd: &[String]) {
    let t = Instant::now();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ok = loop {
        if health_ok(port) {
            break true;
        }
        if child.try_wait().unwrap().is_some() || t.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    for pid in descendants(child.id()) {
        unsafe { kill(pid as i32, 9) };
    }
    let _ = child.kill();
    let _ = child.wait();
    if !ok {
        eprintln!("{} was not healthy on port {port} within 10 s", cmd[0]);
        std::process::exit(1);
    }
    println!("{ms:.3}");
}

fn health_ok(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /_/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200")
}

/// Every process under pid, from /proc/PID/task/TID/children.
fn descendants(pid: u32) -> Vec<u32> {
    let mut todo = vec![pid];
    let mut out = Vec::new();
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let kids = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

fn upstream(port: u16, micros: u64, burn: bool) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let delay = Duration::from_micros(micros);
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            conn.set_nodelay(true).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // Bodiless requests only (wrk's GET): a request ends at its blank line.
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    if burn {
                        let t = Instant::now();
                        while t.elapsed() < delay {
                            std::hint::spin_loop();
                        }
                    } else {
                        std::thread::sleep(delay);
                    }
                    if conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                        return;
                    }
                }
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}
