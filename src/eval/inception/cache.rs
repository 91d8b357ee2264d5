//! The reference images' Inception features, kept between commands: extracting MNIST's 10,000
//! test images takes minutes on a CPU, and they are the same for every run judged with the same
//! weights. One file per (weights, data, count) under the cache's `inception/`: a JSON header line
//! (format, rows, columns, the real Inception Score, the SHA-256 of the features) then the
//! features as little-endian f32. A file whose header or bytes do not check out is extracted again
//! and replaced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::RealSet;
use crate::durable::{read_limited, sha256_hex, write_atomic};

const FORMAT: u32 = 1;
/// The largest cache file read (100,000 images of 2048 features).
const MAX_BYTES: u64 = 100_000 * 2048 * 4 + 4096;

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    rows: usize,
    cols: usize,
    inception_score: f64,
    sha256: String,
}

/// The cache key of the reference features of `count` images whose pixels are `pixels`, through
/// the weights of SHA-256 `weights` and this build's extractor ([`super::EXTRACTOR_VERSION`]).
pub fn key(weights: &str, pixels: &[u8], count: usize) -> String {
    let (version, images) = (super::EXTRACTOR_VERSION, sha256_hex(pixels));
    let text = format!("inception-reference {FORMAT} {version}\n{weights}\n{images}\n{count}");
    sha256_hex(text.as_bytes())[..32].to_string()
}

fn path(root: &Path, key: &str) -> PathBuf {
    root.join("inception").join(format!("reference-{key}.bin"))
}

/// The features of `rows` images, `cols` wide, stored under `key` in gantry's cache, and their
/// Inception Score, when there and whole.
pub fn load(key: &str, rows: usize, cols: usize) -> Option<(Vec<f32>, f64)> {
    load_from(&crate::data::cache_root()?, key, rows, cols)
}

/// Keep `real` under `key` in gantry's cache. A cache that cannot be written is said and
/// skipped: the scores stand.
pub fn store(key: &str, real: &RealSet) {
    if let Some(root) = crate::data::cache_root() {
        store_in(&root, key, real);
    }
}

fn load_from(root: &Path, key: &str, rows: usize, cols: usize) -> Option<(Vec<f32>, f64)> {
    let path = path(root, key);
    if !path.is_file() {
        return None;
    }
    let damaged = || eprintln!("gantry: {} is damaged; extracting the features again", path.display());
    let Ok(bytes) = read_limited(&path, MAX_BYTES) else {
        damaged();
        return None;
    };
    let newline = bytes.iter().position(|&b| b == b'\n');
    let Some((header, newline)) =
        newline.and_then(|n| Some((serde_json::from_slice::<Header>(&bytes[..n]).ok()?, n)))
    else {
        damaged();
        return None;
    };
    let data = &bytes[newline + 1..];
    let whole = header.format == FORMAT
        && (header.rows, header.cols) == (rows, cols)
        && header.rows.checked_mul(header.cols).and_then(|n| n.checked_mul(4)) == Some(data.len())
        && sha256_hex(data) == header.sha256;
    if !whole {
        damaged();
        return None;
    }
    let features = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Some((features, header.inception_score))
}

fn store_in(root: &Path, key: &str, real: &RealSet) {
    let path = path(root, key);
    let data: Vec<u8> = real.features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = Header {
        format: FORMAT,
        rows: real.count,
        cols: real.features.len() / real.count.max(1),
        inception_score: real.inception_score,
        sha256: sha256_hex(&data),
    };
    let mut bytes = serde_json::to_vec(&header).expect("the header serializes");
    bytes.push(b'\n');
    bytes.extend(data);
    if bytes.len() as u64 > MAX_BYTES {
        eprintln!("gantry: the reference features are too many to cache ({} bytes); not kept", bytes.len());
        return;
    }
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).map_err(|e| e.to_string());
    if let Err(e) = written.and_then(|()| write_atomic(&path, &bytes).map_err(|e| e.to_string())) {
        eprintln!("gantry: warning: the reference features were not cached ({}: {e})", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_reference_reads_back_and_a_damaged_one_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let real = RealSet {
            description: "d".into(),
            count: 2,
            features: vec![1.0, 2.0, 3.0, 4.5],
            inception_score: 1.5,
        };
        let k = key("w", b"data", 2);
        assert_ne!(k, key("w", b"data", 3));
        assert_ne!(k, key("w", b"date", 2));
        store_in(root, &k, &real);
        let (features, score) = load_from(root, &k, 2, 2).unwrap();
        assert!(load_from(root, &k, 1, 4).is_none(), "another shape is not these features");
        assert_eq!((features.len() / 2, features, score), (2, real.features.clone(), 1.5));
        let file = path(root, &k);
        let mut bytes = std::fs::read(&file).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&file, bytes).unwrap();
        assert!(load_from(root, &k, 2, 2).is_none());
    }
}
