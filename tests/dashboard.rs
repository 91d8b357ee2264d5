//! The live dashboard: the server's routes and refusals over raw HTTP, its limits (the `Host`
//! check, the header and stalled-write timeouts, the connection cap; the load test is
//! `dashboard_load.rs`), and the page itself in
//! headless Chromium (driven through ChromeDriver's WebDriver protocol) against a real run that is
//! training while the browser watches. `.ci/run` installs Debian's chromium and chromium-driver.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gantry::serve::{self, Dashboard};
use gantry::train;
use serde_json::{Value, json};

/// Send one raw HTTP/1.1 GET (no client-side path normalisation) and return (status, body).
fn raw_get(addr: SocketAddr, target: &str) -> (u16, String) {
    let (status, body) = common::raw_get_bytes(addr, target);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Send one raw GET with the given `Host` header and return its status code.
fn get_with_host(addr: SocketAddr, target: &str, host: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let head = String::from_utf8_lossy(&bytes);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Serve `dashboard` from a background thread on a free loopback port.
fn start_server(dashboard: Dashboard) -> (SocketAddr, Arc<AtomicBool>) {
    start_server_with(dashboard, serve::ServeLimits::default())
}

fn start_server_with(dashboard: Dashboard, limits: serve::ServeLimits) -> (SocketAddr, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    std::thread::spawn(move || {
        serve::serve_blocking_with(
            Arc::new(dashboard),
            serve::bind_address(None, 0),
            limits,
            Some(flag),
            |a| tx.send(a).unwrap(),
        )
        .unwrap()
    });
    (rx.recv_timeout(Duration::from_secs(10)).unwrap(), stop)
}

/// A run folder without a training: a config, gantry's lock and `rows` rows of metrics.
fn fake_run(root: &std::path::Path, rows: usize) {
    std::fs::create_dir_all(root.join("samples")).unwrap();
    std::fs::write(root.join("config.toml"), toml::to_string(&gantry::config::Config::default()).unwrap())
        .unwrap();
    // What makes it gantry's run folder beside the config: the lock it takes first.
    drop(gantry::lock::RunLock::acquire(root).unwrap());
    let mut metrics = gantry::metrics::CSV_COLUMNS.join(",") + "\n";
    for r in 0..rows {
        metrics += &format!("{r},0.7,0.7,1.4,0.7,0.5,0.5,0.5,0.5,0.5\n");
    }
    std::fs::write(root.join("metrics.csv"), metrics).unwrap();
}

/// Whether the server closed `stream`, waiting up to `wait` (a response before the close is read
/// and ignored).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn server_serves_the_run_and_refuses_everything_else() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs/first");
    train::train(&common::tiny_config(30, 10, 1), &root).unwrap();
    std::fs::write(tmp.path().join("runs/secret.txt"), "not the run's").unwrap();
    let dashboard = Dashboard::from_paths(&[tmp.path().join("runs")]).unwrap();
    assert_eq!(dashboard.run_names(), ["first"]);
    let (addr, stop) = start_server(dashboard);
    assert!(addr.ip().is_loopback(), "binds loopback unless told otherwise: {addr}");

    let (code, page) = raw_get(addr, "/");
    assert_eq!(code, 200);
    assert!(page.contains("<canvas id=\"chart-loss\""));
    assert_eq!(raw_get(addr, "/api/runs").1, r#"["first"]"#);

    let (code, body) = raw_get(addr, "/api/runs/first/metrics?from=10");
    assert_eq!(code, 200);
    let metrics: Value = serde_json::from_str(&body).unwrap();
    let rows = metrics["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 20, "rows 10..30 of 30");
    assert_eq!(rows[0][0], json!(10.0));

    let status: gantry::serve::RunStatus =
        serde_json::from_str(&raw_get(addr, "/api/runs/first/status").1).unwrap();
    assert_eq!((status.iterations_done, status.iterations_total, status.finished), (30, Some(30), true));
    assert_eq!(status.grids, [0, 10, 20, 30]);
    assert!(status.ms_per_iteration.unwrap() > 0.0, "from run.json when not watched live");

    let (code, png) = common::raw_get_bytes(addr, "/runs/first/files/samples/step_000010.png");
    assert_eq!(code, 200);
    assert_eq!(png, std::fs::read(root.join("samples/step_000010.png")).unwrap());
    assert!(raw_get(addr, "/api/runs/first/config").1.contains("[train]"));

    for unknown in [
        "/nothing",
        "/api/runs/second/status",
        "/runs/second/files/config.toml",
        "/runs/first/files/nope.png",
    ] {
        assert_eq!(raw_get(addr, unknown).0, 404, "{unknown}");
    }
    for traversal in [
        "/runs/first/files/../secret.txt",
        "/runs/first/files/..%2fsecret.txt",
        "/runs/first/files/%2e%2e/secret.txt",
        "/runs/first/files/samples/..%2F..%2Fsecret.txt",
        "/runs/first/files/%2fetc%2fpasswd",
        "/runs/first/files/.lock",
    ] {
        let (code, body) = raw_get(addr, traversal);
        assert!(code == 403 || code == 404, "{traversal}: {code}");
        assert!(!body.contains("not the run's") && !body.contains("root:"), "{traversal} leaked: {body}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn dns_rebinding_host_is_refused_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    fake_run(&tmp.path().join("r"), 3);
    let (addr, stop) = start_server(Dashboard::from_paths(&[tmp.path().join("r")]).unwrap());
    let port = addr.port();
    for evil in ["evil.example", &format!("evil.example:{port}"), "localhost:1", "10.1.2.3"] {
        assert_eq!(get_with_host(addr, "/runs/r/files/metrics.csv", evil), 403, "Host: {evil}");
        assert_eq!(get_with_host(addr, "/api/runs/r/status", evil), 403, "Host: {evil}");
    }
    for ok in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".into(),
    ] {
        assert_eq!(get_with_host(addr, "/runs/r/files/metrics.csv", &ok), 200, "Host: {ok}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn events_stream_starts_with_the_status() {
    let tmp = tempfile::tempdir().unwrap();
    fake_run(&tmp.path().join("r"), 3);
    let (addr, stop) = start_server(Dashboard::from_paths(&[tmp.path().join("r")]).unwrap());
    let mut response = ureq::get(format!("http://{addr}/api/runs/r/events"))
        .config()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .call()
        .unwrap();
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert_eq!(content_type, "text/event-stream");
    let mut reader = response.body_mut().as_reader();
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    while !text.ends_with(b"\n\n") {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before its first event");
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(text).unwrap();
    let data = text.strip_prefix("event: status\ndata: ").and_then(|t| t.strip_suffix("\n\n")).unwrap();
    let status: gantry::serve::RunStatus = serde_json::from_str(data).unwrap();
    assert_eq!((status.iterations_done, status.finished), (3, false));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn slow_header_client_is_disconnected_after_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    fake_run(&tmp.path().join("r"), 3);
    let limits = serve::ServeLimits { header_timeout: Duration::from_secs(3), ..Default::default() };
    let (addr, stop) = start_server_with(Dashboard::from_paths(&[tmp.path().join("r")]).unwrap(), limits);
    let started = Instant::now();
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    // One byte of a request every 2 s: each byte is progress, but the head never completes.
    let request = b"GET /api/runs/r/status HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut closed = false;
    for byte in request.iter().take(10) {
        if slow.write_all(std::slice::from_ref(byte)).is_err()
            || closed_within(&mut slow, Duration::from_secs(2))
        {
            closed = true;
            break;
        }
    }
    let slow_after = started.elapsed();
    assert!(closed, "a client trickling its headers is still connected after {slow_after:?}");
    assert!(closed_within(&mut idle, Duration::from_secs(10)), "a silent socket is still connected");
    eprintln!(
        "header timeout {:?}: trickling client closed after {slow_after:?}, silent one by {:?}",
        limits.header_timeout,
        started.elapsed()
    );
    // The server still answers.
    assert_eq!(raw_get(addr, "/api/runs/r/status").0, 200);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn status_is_answered_when_the_connection_cap_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    fake_run(&tmp.path().join("r"), 3);
    let limits = serve::ServeLimits { max_connections: 8, ..Default::default() };
    let (addr, stop) = start_server_with(Dashboard::from_paths(&[tmp.path().join("r")]).unwrap(), limits);
    // Three times the cap of silent sockets: the stalest are closed to make room, none waits in the backlog.
    let silent: Vec<TcpStream> = (0..24).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let (code, body) = raw_get(addr, "/api/runs/r/status");
    eprintln!("status at a full cap of {}: {code} in {:?}", limits.max_connections, asked.elapsed());
    assert_eq!(code, 200, "{body}");
    drop(silent);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn a_client_that_never_reads_is_dropped_after_the_stalled_write_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    fake_run(&root, 3);
    let size = 64 << 20;
    std::fs::write(root.join("big.bin"), vec![7u8; size]).unwrap();
    let limits = serve::ServeLimits { stalled_write_timeout: Duration::from_secs(2), ..Default::default() };
    let (addr, stop) = start_server_with(Dashboard::from_paths(&[root]).unwrap(), limits);
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /runs/r/files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    // Not reading for well past the timeout; then whatever the kernel buffered, and the end.
    std::thread::sleep(Duration::from_secs(6));
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    eprintln!("a stalled download of {size} bytes got {received} before it was dropped");
    assert!(received < size, "the whole file arrived although the client stalled past the timeout");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn serve_refuses_a_folder_without_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry")).arg("serve").arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&tmp.path().display().to_string()) && err.contains("run folder"), "{err}");
}

#[test]
fn serve_on_a_missing_path_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let out = Command::new(env!("CARGO_BIN_EXE_gantry")).arg("serve").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()) && err.contains("does not exist"), "{err}");
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal WebDriver client (the W3C protocol is JSON over HTTP).
struct Browser {
    base: String,
    session: String,
    _driver: KillOnDrop,
}

impl Browser {
    fn start() -> Browser {
        let driver_path = std::env::var("GANTRY_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {driver_path} ({e}): install Debian's chromium and chromium-driver (.ci/run does)")
            });
        let driver = KillOnDrop(driver);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let chromium = std::env::var("GANTRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1050"]
        }}}});
        let created = post(&format!("{base}/session"), &caps);
        let session = created["value"]["sessionId"].as_str().expect("a WebDriver session").to_string();
        Browser { base, session, _driver: driver }
    }

    fn goto(&self, url: &str) {
        post(&format!("{}/session/{}/url", self.base, self.session), &json!({ "url": url }));
    }

    fn eval(&self, script: &str) -> Value {
        let r = post(
            &format!("{}/session/{}/execute/sync", self.base, self.session),
            &json!({"script": script, "args": []}),
        );
        r["value"].clone()
    }

    fn screenshot_png(&self) -> Vec<u8> {
        let text = ureq::get(format!("{}/session/{}/screenshot", self.base, self.session))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(v["value"].as_str().unwrap()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(format!("{}/session/{}", self.base, self.session)).call();
    }
}

fn post(url: &str, body: &Value) -> Value {
    let mut response = ureq::post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

/// What the page shows, read from the live DOM: rows received, grids listed, charts drawn, the
/// grid image's width, and how many pixels of the loss chart are painted.
const PAGE_STATE: &str = r#"
    const c = document.getElementById('chart-loss');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let painted = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
    const img = document.getElementById('grid-img');
    return { rows: +document.body.dataset.rows, grids: +document.body.dataset.grids,
             charts: +document.body.dataset.charts, gridWidth: img.complete ? img.naturalWidth : 0,
             painted, state: document.getElementById('state').textContent,
             error: document.body.dataset.error || null };
"#;

#[test]
fn dashboard_renders_in_chromium_and_follows_a_training_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("live");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "train",
            "--iterations",
            "3000",
            "--sample-interval",
            "100",
            "--threads",
            "2",
            "-q",
            "--serve",
            "--eval-every",
            "0",
        ])
        .args(["--port", "0", "--out"])
        .arg(&run)
        .arg("--data")
        .arg(common::mnist_dir())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let training = KillOnDrop(child);
    let mut lines = stderr.lines();
    let url = loop {
        let line = lines.next().expect("train --serve prints the dashboard address").unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_string();
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "loopback by default: {url}");
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let browser = Browser::start();
    browser.goto(&url);
    let wait_for = |what: &str, ok: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = browser.eval(PAGE_STATE);
            if ok(&state) {
                return state;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; page state {state}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let first = wait_for("charts, a grid and some rows", &|s| {
        assert!(s["error"].is_null(), "script error on the page: {s}");
        s["rows"].as_u64() > Some(0)
            && s["charts"] == 3
            && s["gridWidth"].as_u64() > Some(0)
            && s["grids"].as_u64() > Some(1)
    });
    assert!(first["painted"].as_u64().unwrap() > 2_000, "the loss chart is drawn: {first}");
    // New rows and new grids appear while the run goes on, without reloading the page.
    let rows0 = first["rows"].as_u64().unwrap();
    let grids0 = first["grids"].as_u64().unwrap();
    let later = wait_for("new rows and a new grid", &|s| {
        s["rows"].as_u64().unwrap_or(0) >= rows0 + 100 && s["grids"].as_u64().unwrap_or(0) > grids0
    });
    let state = later["state"].as_str().unwrap();
    assert!(state.contains("/ 3,000") && state.contains("training") && state.contains("ETA"), "{state}");

    // The axes tick at round values (the bug: a 30,000-iteration axis read 7500 / 15000 / 22499 /
    // 29999), and the page carries its icon (its /favicon.ico 404 was the page's only console error).
    let ticks = browser.eval(
        "return [niceTicks(0, 29999, 4).ticks, niceTicks(0.31, 1.87, 4).ticks.map(niceTicks(0.31, 1.87, 4).text)];",
    );
    assert_eq!(ticks, json!([[0, 10000, 20000], ["0.5", "1.0", "1.5"]]), "{ticks}");
    let icon = browser.eval("const l = document.querySelector('link[rel=icon]'); return l ? l.href : null;");
    assert!(icon.as_str().is_some_and(|h| h.starts_with("data:image/svg+xml")), "{icon}");

    let png = browser.screenshot_png();
    assert!(png.starts_with(b"\x89PNG"));
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {} (page state {later})", shot.display());
    drop(browser);
    drop(training);
}

/// The overlay view: runs of two configurations (two seeds of `ns`, one of `hinge`) served from
/// one folder, drawn on one chart in two colours, with `/api/groups` naming the groups.
#[test]
fn the_overlay_view_draws_every_run_coloured_by_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("sweep");
    for (name, loss, seed, rows) in [("a", "ns", 0, 400), ("b", "ns", 1, 300), ("c", "hinge", 0, 350)] {
        let root = sweep.join(name);
        fake_run(&root, rows);
        let mut c = gantry::config::Config::default();
        c.train.loss = if loss == "ns" { gantry::config::Loss::Ns } else { gantry::config::Loss::Hinge };
        c.train.seed = seed;
        std::fs::write(root.join("config.toml"), c.to_toml()).unwrap();
    }
    let (addr, _stop) = start_server(Dashboard::from_paths(std::slice::from_ref(&sweep)).unwrap());
    let (code, groups) = raw_get(addr, "/api/groups");
    assert_eq!(code, 200);
    let groups: Value = serde_json::from_str(&groups).unwrap();
    let labels: Vec<&str> = groups.as_array().unwrap().iter().map(|g| g["group"].as_str().unwrap()).collect();
    assert_eq!(labels, ["loss=ns", "loss=ns", "loss=hinge"], "{groups}");

    let browser = Browser::start();
    browser.goto(&format!("http://{addr}/"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        browser.eval("const b = document.getElementById('compare-btn'); if (b && !window.clicked) { window.clicked = true; b.click(); }");
        let s = browser.eval(
            r#"const c = document.getElementById('chart-compare');
               let painted = 0;
               if (c.width) { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++; }
               return { runs: +(document.body.dataset.compareRuns || 0), groups: +(document.body.dataset.compareGroups || 0),
                        painted, single: document.getElementById('single').hidden,
                        legend: document.getElementById('legend-compare').textContent,
                        error: document.body.dataset.error || null };"#,
        );
        assert!(s["error"].is_null(), "script error on the page: {s}");
        if s["runs"] == 3 && s["groups"] == 2 {
            break s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the overlay; page state {s}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(state["single"], true, "the single-run view is hidden: {state}");
    assert!(state["painted"].as_u64().unwrap() > 2_000, "the overlay is drawn: {state}");
    let legend = state["legend"].as_str().unwrap();
    assert!(
        legend.contains("loss=ns") && legend.contains("(2 runs)") && legend.contains("loss=hinge"),
        "{legend}"
    );
}
