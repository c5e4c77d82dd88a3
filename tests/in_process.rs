//! Each mode's lifecycle (start, ready, handle, exited, signal, shutdown) driven through the
//! library, with real function processes, and `run` itself on a listener bound here. The
//! other test files start the binary; these reach what the binary hides (the order of the
//! lifecycle steps, a mode's own readiness, a shutdown that leaves no process behind).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;

use fwatchdog::body::ReqBody;
use fwatchdog::config::{Config, LogFormat};
use fwatchdog::health::Health;
use fwatchdog::metrics::Metrics;
use fwatchdog::mode::{Ctx, Function, Shared};
use fwatchdog::process::LogOptions;

fn config(pairs: &[(&str, &str)]) -> Arc<Config> {
    let mut map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert("suppress_lock".into(), "true".into());
    Arc::new(Config::from_lookup(&map, None).expect("config"))
}

fn shared() -> Shared {
    Shared {
        health: Health::new(0, None),
        log: LogOptions {
            prefix: true,
            max_line: 4096,
            format: LogFormat::Text,
        },
        metrics: Metrics::new(),
    }
}

fn ctx() -> Ctx {
    let now = Instant::now();
    Ctx {
        call_id: "call-1".into(),
        call_id_value: None,
        received: now,
        exec_timeout: Some(Duration::from_secs(10)),
        deadline: Some(now + Duration::from_secs(10)),
        read_deadline: now + Duration::from_secs(10),
        peer_ip: None,
        env: Vec::new(),
        whole: false,
    }
}

fn request(method: &str, path: &str, body: &'static [u8]) -> Request<ReqBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(
            http_body_util::Full::new(Bytes::from_static(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}

async fn call(f: &Function, req: Request<ReqBody>) -> (StatusCode, Bytes) {
    let resp = f
        .handle(req, &ctx())
        .await
        .unwrap_or_else(|e| e.into_response());
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// True when `fut` is not ready on its first poll.
async fn pending<F: Future>(fut: F) -> bool {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fwd-inproc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn upstream_script() -> String {
    format!("{}/tests/upstream.py", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn a_fork_mode_is_ready_once_started_and_has_nothing_to_stop() {
    for mode in ["streaming", "serializing"] {
        let shared = shared();
        let f = Function::new(config(&[("mode", mode), ("fprocess", "cat")]), &shared).unwrap();
        assert!(!shared.health.is_ready(), "{mode}: ready before start");
        f.start(&shared.health).unwrap();
        assert!(shared.health.is_ready(), "{mode}");
        assert_eq!(f.ready().await, StatusCode::OK);
        assert_eq!(
            call(&f, request("POST", "/", b"hello")).await,
            (StatusCode::OK, Bytes::from_static(b"hello"))
        );
        // No long-lived process: nothing can exit on its own, a signal is only logged.
        assert!(pending(f.exited()).await, "{mode}");
        f.signal(nix::sys::signal::Signal::SIGHUP);
        f.shutdown().await;
    }
}

#[tokio::test]
async fn file_mode_hands_the_body_over_as_a_file() {
    let dir = scratch("file");
    let shared = shared();
    let cfg = config(&[
        ("mode", "file"),
        ("fprocess", "cat"),
        ("TMPDIR", dir.to_str().unwrap()),
    ]);
    let f = Function::new(cfg, &shared).unwrap();
    f.start(&shared.health).unwrap();
    assert!(shared.health.is_ready());
    let (status, body) = call(&f, request("POST", "/", b"{\"a\":1}")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"{\"a\":1}"[..]));
    f.shutdown().await;
}

#[tokio::test]
async fn static_mode_serves_its_folder() {
    let dir = scratch("static");
    std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
    let shared = shared();
    let cfg = config(&[("mode", "static"), ("static_path", dir.to_str().unwrap())]);
    let f = Function::new(cfg, &shared).unwrap();
    f.start(&shared.health).unwrap();
    let (status, body) = call(&f, request("GET", "/", b"")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"<p>hi</p>"[..]));
    let (status, _) = call(&f, request("POST", "/", b"")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(pending(f.exited()).await);
}

#[tokio::test]
async fn http_mode_starts_its_function_waits_for_it_and_stops_its_group() {
    let dir = scratch("http");
    let sock = dir.join("up.sock");
    let signals = dir.join("signals");
    let fprocess = format!(
        "python3 {} unix:{} --signal-file {}",
        upstream_script(),
        sock.display(),
        signals.display()
    );
    let url = format!("unix:{}", sock.display());
    let shared = shared();
    let cfg = config(&[
        ("mode", "http"),
        ("fprocess", &fprocess),
        ("upstream_url", &url),
        ("ready_path", "/ready"),
    ]);
    let f = Function::new(cfg, &shared).unwrap();
    f.start(&shared.health).unwrap();
    // A request made before the function listens waits for it.
    let (status, body) = call(&f, request("GET", "/echo?x=1", b"")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(shared.health.is_ready());
    assert_eq!(f.ready().await, StatusCode::OK);
    assert!(pending(f.exited()).await);

    f.signal(nix::sys::signal::Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&signals).is_ok_and(|s| s.contains("SIGUSR1")) {
        assert!(
            Instant::now() < deadline,
            "SIGUSR1 never reached the function"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    f.shutdown().await;
    // After shutdown the group is gone: the upstream no longer answers.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_err());
    assert!(
        pending(f.exited()).await,
        "a stop is not an exit on its own"
    );
}

#[tokio::test]
async fn http_mode_reports_a_function_that_dies_on_its_own() {
    let dir = scratch("http-dies");
    let sock = dir.join("up.sock");
    let fprocess = format!("python3 {} unix:{}", upstream_script(), sock.display());
    let url = format!("unix:{}", sock.display());
    let shared = shared();
    let cfg = config(&[
        ("mode", "http"),
        ("fprocess", &fprocess),
        ("upstream_url", &url),
    ]);
    let f = Function::new(cfg, &shared).unwrap();
    f.start(&shared.health).unwrap();
    let (status, _) = call(&f, request("GET", "/echo", b"")).await;
    assert_eq!(status, StatusCode::OK);
    let _ = call(&f, request("GET", "/crash", b"")).await;
    let how = tokio::time::timeout(Duration::from_secs(20), f.exited())
        .await
        .expect("the exit was never reported");
    assert!(how.contains('3'), "{how}");
    let (status, _) = call(&f, request("GET", "/echo", b"")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn run_serves_a_listener_it_is_given_until_told_to_stop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = config(&[("fprocess", "cat"), ("metrics_port", "0")]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listeners = fwatchdog::Listeners {
        http: listener,
        metrics: None,
    };
    let running = tokio::spawn(fwatchdog::run(listeners, (*cfg).clone(), async move {
        let _ = stop_rx.await;
        "test"
    }));
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (method, path, want) in [("GET", "/_/health", "OK\n"), ("POST", "/", "in process")] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(http_body_util::Full::new(Bytes::from_static(b"in process")))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, want.as_bytes(), "{path}");
    }
    drop(sender);
    stop_tx.send(()).unwrap();
    running.await.unwrap().expect("a clean drain");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
