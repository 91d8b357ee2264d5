//! Fetching MNIST from its well-known public mirrors when it is nowhere on this machine (and
//! pytorch-fid's Inception weights, `eval::inception`): each file is checked against its published
//! SHA-256, written beside its final name and renamed into place only once verified, so the cache
//! never holds a partial or wrong file.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::durable::{hex, sha256_file};
use crate::error::{Error, IoContext, Result};

/// Mirrors tried in order.
pub const MNIST_MIRRORS: [&str; 2] =
    ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"];

/// The four gzip files and their SHA-256 sums (the official files).
pub const MNIST_FILES: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
];

/// The largest MNIST file accepted (the training images are 9.9 MB).
const MNIST_MAX_BYTES: u64 = 64 << 20;

/// Download the four MNIST files into `dir` (skipping those already there and verified).
pub fn fetch_mnist(dir: &Path) -> Result<()> {
    for (name, sha) in MNIST_FILES {
        let dest = dir.join(name);
        if dest.is_file() && sha256_file(&dest)? == sha {
            continue;
        }
        let mut last_err = None;
        for mirror in MNIST_MIRRORS {
            match fetch_verified(&format!("{mirror}{name}"), sha, &dest, MNIST_MAX_BYTES) {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            return Err(e);
        }
    }
    Ok(())
}

/// Download `url` to `dest` (its folder made if missing), at most `limit` bytes, through a
/// partial file of this process's own (`dest` + `.partial-PID`), renamed into place only when the
/// bytes' SHA-256 is `sha`; a failed, oversized or wrong download leaves nothing.
pub fn fetch_verified(url: &str, sha: &str, dest: &Path, limit: u64) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).at("create", parent)?;
    }
    let fail = |problem: String| Error::Download { url: url.to_string(), problem };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(900)))
        .timeout_connect(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("downloading {}", dest.file_name().unwrap_or_default().to_string_lossy()));
    let mut partial = dest.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = std::path::PathBuf::from(partial);
    let result = (|| {
        let mut file = fs::File::create(&partial).at("create", &partial)?;
        let mut reader = response.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            received += n as u64;
            if received > limit {
                return Err(fail(format!("more than the {limit} bytes expected")));
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).at("write", &partial)?;
            bar.inc(n as u64);
        }
        file.sync_all().at("sync", &partial)?;
        let got = hex(&hasher.finalize());
        if got != sha {
            return Err(fail(format!("SHA-256 mismatch: expected {sha}, got {got}")));
        }
        fs::rename(&partial, dest).at("rename into", dest)
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A one-connection-at-a-time HTTP server on localhost answering every GET with `body`.
    fn serve(body: &'static [u8], requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(body).unwrap();
            }
        });
        format!("http://{addr}/weights.pth")
    }

    #[test]
    fn a_download_is_kept_only_when_its_sha256_is_the_one_expected() {
        let dir = tempfile::tempdir().unwrap();
        let url = serve(b"the weights", 3);
        let dest = dir.path().join("cache").join("weights.pth");
        let wrong = "0".repeat(64);
        let err = fetch_verified(&url, &wrong, &dest, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
        assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 0, "nothing left behind");
        let right = crate::durable::sha256_hex(b"the weights");
        let err = fetch_verified(&url, &right, &dest, 5).unwrap_err();
        assert!(err.to_string().contains("more than the 5 bytes"), "{err}");
        fetch_verified(&url, &right, &dest, 1 << 20).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"the weights");
    }
}
