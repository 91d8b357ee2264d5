//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use gantry::config::Config;

/// The real MNIST files: `$GANTRY_DATA`, else `../shared/data/mnist` beside the repository.
pub fn mnist_dir() -> PathBuf {
    let dir = std::env::var_os("GANTRY_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist"));
    assert!(
        gantry::data::find_file(&dir, "train-images-idx3-ubyte").is_some(),
        "the tests need the real MNIST files: set GANTRY_DATA to their folder (looked in {})",
        dir.display()
    );
    dir
}

/// A small, fast configuration on the real data: `iterations` of batch 32, 2 threads.
pub fn tiny_config(iterations: usize, sample_interval: usize, seed: u64) -> Config {
    let mut c = Config::default();
    c.data.dir = Some(mnist_dir());
    c.train.iterations = iterations;
    c.train.seed = seed;
    c.train.threads = 2;
    c.output.sample_interval = sample_interval;
    // The sample-quality judge has its own tests (tests/eval.rs).
    c.eval.every = 0;
    c
}

/// Every file under `root` with its bytes, sorted by path: for "nothing changed" comparisons.
pub fn files_under(root: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Send one raw HTTP/1.1 GET with `Connection: close` (no client-side path normalisation) and
/// return (status, body). Reads time out after 20 s, so a server that stops answering fails the
/// test instead of hanging it.
pub fn raw_get_bytes(addr: std::net::SocketAddr, target: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, bytes[head_end + 4..].to_vec())
}

/// Train a quiet run of `iterations` with grids and checkpoints every `interval` into `out` with the
/// binary (data through $GANTRY_DATA, no judging), as a user's `gantry train` makes one.
pub fn cli_run(out: &std::path::Path, iterations: usize, interval: usize) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["train", "--iterations", &iterations.to_string(), "--sample-interval", &interval.to_string()])
        .args(["--eval-every", "0", "-q", "--out"])
        .arg(out)
        .env("GANTRY_DATA", mnist_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Bytes as a `.npy` array of `shape` (uint8), written to `path`: images as other tools save them.
pub fn write_u8_npy(path: &std::path::Path, bytes: &[u8], shape: &[u64]) {
    use npyz::WriterBuilder;
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut out).begin_nd().unwrap();
    w.extend(bytes.iter().copied()).unwrap();
    w.finish().unwrap();
    std::fs::write(path, out).unwrap();
}
