//! Durable files, one low module for everything gantry writes or verifies: a file written beside
//! its final name, fsynced and renamed into place (so a reader or a crash sees the old file or
//! the new one, never half of one), folder fsyncs, SHA-256 of bytes and of files, and reads with
//! a size limit (a setting or header file is never read without bound, nor from a FIFO or device).
//! Checkpoints, metrics, weights, exports, the judge's cache and downloads all go through here.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// Write a file and fsync it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).at("create", path)?;
    f.write_all(bytes).at("write", path)?;
    f.sync_all().at("sync", path)
}

/// fsync a folder, so that a rename or new file in it is durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path).at("open", path)?.sync_all().at("sync", path)
}

/// The temporary name a [`write_atomic`] of `path` writes first: `NAME.partial` beside it.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Write `bytes` to `path` all or nothing: into `NAME.partial` beside it, fsynced, renamed over
/// `path`. On failure the partial file is removed and `path` is as it was. A folder at `path` is
/// refused before anything is written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.is_dir() {
        return Err(Error::io(
            "write",
            path,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a folder; give a file name"),
        ));
    }
    let partial = partial_path(path);
    let result = write_synced(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, path).at("rename into place", path));
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file, lowercase hex (streamed: the file is not held in memory).
pub fn sha256_file(path: &Path) -> Result<String> {
    sha256_read(&mut File::open(path).at("open", path)?, path)
}

/// SHA-256 of what `reader` (the file at `path`, named in errors) holds from where it stands.
pub fn sha256_read(reader: &mut impl Read, path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(reader, &mut hasher).at("read", path)?;
    Ok(hex(&hasher.finalize()))
}

/// Why [`read_limited`] refused a file.
#[derive(Debug)]
pub enum ReadRefused {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// Not a regular file (a folder, a FIFO, a device).
    NotAFile,
    /// Larger than the limit (bytes found, or at least the limit + 1).
    TooLarge(u64),
}

impl std::fmt::Display for ReadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadRefused::Io(e) => write!(f, "{e}"),
            ReadRefused::NotAFile => write!(f, "is not a regular file"),
            ReadRefused::TooLarge(n) => write!(f, "is too large ({n} bytes)"),
        }
    }
}

/// Read a regular file of at most `limit` bytes. A FIFO, device or folder is refused before it is
/// opened for reading (so a FIFO cannot block the process), and a file that grows past the limit
/// while it is read is refused too.
pub fn read_limited(path: &Path, limit: u64) -> std::result::Result<Vec<u8>, ReadRefused> {
    let meta = std::fs::metadata(path).map_err(ReadRefused::Io)?;
    if !meta.is_file() {
        return Err(ReadRefused::NotAFile);
    }
    if meta.len() > limit {
        return Err(ReadRefused::TooLarge(meta.len()));
    }
    let file = File::open(path).map_err(ReadRefused::Io)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(ReadRefused::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadRefused::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Open a file of the user's (an image, a sample file) for reading: a regular file, links
/// followed, of at most `limit` bytes. Anything else is refused as bad input naming `path`
/// before it is opened (so a FIFO or a device never blocks and is never read without bound): a
/// missing file, a link to nothing or a link loop, a folder, a FIFO, a device, a file over the
/// limit. Returns the open file and its length.
pub fn open_input(path: &Path, limit: u64, what: &str) -> Result<(File, u64)> {
    let bad = |problem: String| Error::bad_data(path, problem);
    let meta = std::fs::metadata(path)
        .map_err(|e| bad(format!("the {what} cannot be read: {}", input_problem(&e))))?;
    if !meta.is_file() {
        return Err(bad(format!("the {what} is not a regular file ({})", kind_of(&meta))));
    }
    if meta.len() > limit {
        return Err(bad(format!("the {what} is {} bytes; at most {limit} are read", meta.len())));
    }
    let file =
        File::open(path).map_err(|e| bad(format!("the {what} cannot be read: {}", input_problem(&e))))?;
    // Checked again on the open file: the name may have been replaced in between.
    let open = file.metadata().map_err(|e| bad(format!("the {what} cannot be read: {e}")))?;
    if !open.is_file() || open.len() > limit {
        return Err(bad(format!("the {what} changed while it was opened")));
    }
    Ok((file, open.len()))
}

/// Why an input file cannot be opened, in words (a dangling link reads "not found").
pub fn input_problem(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file (or a link to nothing)".into(),
        _ if is_link_loop(e) => "a loop of links".into(),
        _ => e.to_string(),
    }
}

fn is_link_loop(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// What a file system entry that is not a regular file is, in words.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() { "a folder" } else { "not a plain file" }
}

/// [`read_limited`] as UTF-8 text, with every failure an error naming `path` (I/O: exit 1 unless
/// the file is missing; not a file, too large or not UTF-8: bad input).
pub fn read_text_limited(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_limited(path, limit).map_err(|e| match e {
        ReadRefused::Io(e) if e.kind() != std::io::ErrorKind::NotFound => Error::io("read", path, e),
        ReadRefused::Io(e) => Error::bad_data(path, format!("cannot read the {what}: {e}")),
        ReadRefused::NotAFile => Error::bad_data(path, format!("the {what} is not a regular file")),
        ReadRefused::TooLarge(n) => {
            Error::bad_data(path, format!("the {what} is {n} bytes; at most {limit} are read"))
        }
    })?;
    String::from_utf8(bytes).map_err(|_| Error::bad_data(path, format!("the {what} is not UTF-8 text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_and_refuses_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let folder = tmp.path().join("dir.png");
        std::fs::create_dir(&folder).unwrap();
        let err = write_atomic(&folder, b"x").unwrap_err().to_string();
        assert!(err.contains("dir.png") && err.contains("folder"), "{err}");
        assert!(!partial_path(&folder).exists(), "no partial file is left behind");
    }

    #[test]
    fn limited_reads_refuse_big_files_folders_and_fifos() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.toml");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert_eq!(read_limited(&path, 100).unwrap().len(), 100);
        assert!(matches!(read_limited(&path, 99), Err(ReadRefused::TooLarge(100))));
        assert!(matches!(read_limited(tmp.path(), 99), Err(ReadRefused::NotAFile)));
        #[cfg(target_os = "linux")]
        {
            let fifo = tmp.path().join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert!(matches!(read_limited(&fifo, 99), Err(ReadRefused::NotAFile)), "a FIFO never blocks");
        }
    }

    #[test]
    fn open_input_refuses_fifos_devices_dangling_links_and_big_files_as_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = tmp.path().join("a.png");
        std::fs::write(&ok, b"12345").unwrap();
        assert_eq!(open_input(&ok, 5, "image").unwrap().1, 5);
        let too_big = open_input(&ok, 4, "image").unwrap_err();
        assert_eq!(too_big.exit_code(), 2, "{too_big}");
        let missing = open_input(&tmp.path().join("none.png"), 9, "image").unwrap_err();
        assert!(missing.to_string().contains("none.png") && missing.exit_code() == 2, "{missing}");
        #[cfg(target_os = "linux")]
        {
            let fifo = tmp.path().join("x.png");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let e = open_input(&fifo, 9, "image").unwrap_err().to_string();
            assert!(e.contains("FIFO"), "a FIFO is refused before it is opened: {e}");
            let zero = tmp.path().join("zero.png");
            std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
            assert!(open_input(&zero, 9, "image").unwrap_err().to_string().contains("device"));
            let dangling = tmp.path().join("gone.png");
            std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
            assert!(open_input(&dangling, 9, "image").unwrap_err().to_string().contains("link to nothing"));
            let (a, b) = (tmp.path().join("l1.png"), tmp.path().join("l2.png"));
            std::os::unix::fs::symlink(&b, &a).unwrap();
            std::os::unix::fs::symlink(&a, &b).unwrap();
            let e = open_input(&a, 9, "image").unwrap_err();
            assert!(e.to_string().contains("loop") && e.exit_code() == 2, "{e}");
        }
    }

    #[test]
    fn file_and_bytes_hashes_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; // SHA-256("abc")
        assert_eq!(sha256_file(&path).unwrap(), expected);
        assert_eq!(sha256_hex(b"abc"), expected);
    }
}
