//! The dashboard under hostile load, alone in its own test binary so that the memory it measures
//! (this process's VmRSS) is the server's and not another test's: 200 clients that ask for a large
//! file and never read it, and 200 sockets that never send a byte, all on loopback.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry::serve::{self, Dashboard};

const DOWNLOADERS: usize = 200;
const IDLE: usize = 200;
const FILE_BYTES: usize = 12 << 20;
const RSS_LIMIT_MB: f64 = 300.0;

/// This process's resident memory in MB (from /proc/self/status).
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

/// One GET with `Connection: close`: (status code, body length).
fn get(addr: SocketAddr, target: &str) -> (u16, usize) {
    let (status, body) = common::raw_get_bytes(addr, target);
    (status, body.len())
}

#[cfg(target_os = "linux")]
#[test]
fn status_is_answered_while_400_hostile_connections_are_open_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    std::fs::create_dir_all(root.join("samples")).unwrap();
    std::fs::write(root.join("config.toml"), toml::to_string(&gantry::config::Config::default()).unwrap())
        .unwrap();
    // What makes it gantry's run folder beside the config: the lock it takes first.
    drop(gantry::lock::RunLock::acquire(&root).unwrap());
    let mut metrics = gantry::metrics::CSV_COLUMNS.join(",") + "\n";
    for r in 0..200 {
        metrics += &format!("{r},0.7,0.7,1.4,0.7,0.5,0.5,0.5,0.5,0.5\n");
    }
    std::fs::write(root.join("metrics.csv"), metrics).unwrap();
    std::fs::write(root.join("checkpoint.bin"), vec![0x5au8; FILE_BYTES]).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let dashboard = Arc::new(Dashboard::from_paths(&[root]).unwrap());
    let server = std::thread::spawn(move || {
        serve::serve_blocking(dashboard, serve::bind_address(None, 0), Some(flag), |a| tx.send(a).unwrap())
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (code, len) = get(addr, "/runs/r/files/checkpoint.bin");
    assert_eq!((code, len), (200, FILE_BYTES), "a reading client gets the whole file");
    let rss_before = rss_mb();

    // The hostile clients: requests for the large file that are never read, then silent sockets.
    let opened = Instant::now();
    let mut hostile = Vec::with_capacity(DOWNLOADERS + IDLE);
    for _ in 0..DOWNLOADERS {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /runs/r/files/checkpoint.bin HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        hostile.push(s);
    }
    for _ in 0..IDLE {
        hostile.push(TcpStream::connect(addr).unwrap());
    }
    // Let the server take them all and fill the downloaders' socket buffers.
    std::thread::sleep(Duration::from_secs(2));
    let rss_loaded = rss_mb();

    let asked = Instant::now();
    let (code, len) = get(addr, "/api/runs/r/status");
    let latency = asked.elapsed();
    let rss_after = rss_mb();
    eprintln!(
        "{} hostile connections open for {:?}: status answered {code} ({len} bytes) in {latency:?}; \
         VmRSS {rss_before:.1} MB before, {rss_loaded:.1} MB loaded, {rss_after:.1} MB after the status",
        hostile.len(),
        opened.elapsed(),
    );
    assert_eq!(code, 200);
    assert!(latency < Duration::from_secs(5), "status took {latency:?} under load");
    assert!(rss_loaded.max(rss_after) < RSS_LIMIT_MB, "VmRSS {rss_loaded:.1} / {rss_after:.1} MB");

    drop(hostile);
    stop.store(true, Ordering::SeqCst);
    let ended = Instant::now();
    server.join().unwrap().unwrap();
    eprintln!("server stopped {:?} after the stop flag", ended.elapsed());
}
