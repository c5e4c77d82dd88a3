//! Benchmark helpers, std only (compiled by the bench scripts with rustc -O):
//!   tools spawn CONC SECONDS CMD...   the machine's limit: spawn+wait CMD in CONC threads,
//!                                     each writing a 5-byte body and reading the output
//!   tools startup RUNS BIN            median time from spawning BIN to its port accepting
//!                                     (BIN gets PORT and metrics_port=0 in its env)
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
        _ => eprintln!("usage: tools spawn CONC SECONDS CMD... | tools startup RUNS BIN"),
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
