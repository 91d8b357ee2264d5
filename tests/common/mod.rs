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
