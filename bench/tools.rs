//! Benchmark helpers, std only (compiled by the bench scripts with rustc -O):
//!   tools spawn CONC SECONDS CMD...   the machine's limit: spawn+wait CMD in CONC threads,
//!                                     each writing a 5-byte body and reading the output
//!   tools startup RUNS BIN            median time from spawning BIN to its port accepting
//!                                     (BIN gets PORT and metrics_port=0 in its env)
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
        Some("upstream") => upstream(args[1].parse().unwrap(), args[2].parse().unwrap(), args[3] == "burn"),
        _ => eprintln!("usage: tools spawn CONC SECONDS CMD... | tools startup RUNS BIN | tools upstream PORT MICROS sleep|burn"),
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
