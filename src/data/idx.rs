//! The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed, read defensively: every
//! malformed file (wrong magic, truncated data, counts that do not match the length, absurd
//! dimensions, a broken gzip stream) becomes an error naming the file and the problem, and nothing
//! is allocated from an unchecked header.

use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The IDX type byte for unsigned 8-bit data (the only one MNIST uses).
const UBYTE: u8 = 0x08;
/// Largest image side accepted; anything bigger is a corrupt header, not a data set.
const MAX_SIDE: u32 = 4096;
/// Largest payload accepted (1 GiB); MNIST's training images are 47 MB.
const MAX_PAYLOAD: u64 = 1 << 30;

/// A stack of 8-bit grayscale images, row-major, `count * rows * cols` pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Pixels of one image.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Read an IDX3 image file (raw or gzip, detected from its first bytes).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let (mut reader, raw_len) = open(path)?;
    let dims = read_header(&mut reader, path, 3)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(Error::bad_data(
            path,
            format!("absurd image dimensions {rows}x{cols} (each side must be 1..={MAX_SIDE})"),
        ));
    }
    let expected = count as u64 * rows as u64 * cols as u64;
    let pixels = read_payload(&mut reader, path, expected, raw_len, 16)?;
    Ok(IdxImages { count: count as usize, rows: rows as usize, cols: cols as usize, pixels })
}

/// Read an IDX1 label file (raw or gzip).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let (mut reader, raw_len) = open(path)?;
    let dims = read_header(&mut reader, path, 1)?;
    read_payload(&mut reader, path, dims[0] as u64, raw_len, 8)
}

/// The largest IDX file opened (MNIST's training images are 47 MB raw); what it holds is checked
/// against its header as it is read.
const MAX_FILE_BYTES: u64 = 16 << 30;

/// Open a file, transparently decompressing gzip. Returns the reader and, for raw files, the
/// file's length (to reject a lying header before allocating anything).
fn open(path: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    // A regular file only (a FIFO or a device named like MNIST's files is refused, never read).
    let (file, len) = crate::durable::open_input(path, MAX_FILE_BYTES, "data file")?;
    let mut buffered = BufReader::new(file);
    let mut magic = [0u8; 2];
    let n = read_fully(&mut buffered, &mut magic, path)?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(buffered);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok((Box::new(flate2::read::GzDecoder::new(chained)), None))
    } else {
        Ok((Box::new(chained), Some(len)))
    }
}

/// Read the magic number and `rank` big-endian u32 dimensions.
fn read_header(reader: &mut dyn Read, path: &Path, rank: u8) -> Result<Vec<u32>> {
    let mut magic = [0u8; 4];
    if read_fully(reader, &mut magic, path)? < 4 {
        return Err(Error::bad_data(path, "truncated: shorter than the 4-byte IDX magic number"));
    }
    let kind = if rank == 3 { "image (IDX3)" } else { "label (IDX1)" };
    if magic[0] != 0 || magic[1] != 0 || magic[2] != UBYTE || magic[3] != rank {
        return Err(Error::bad_data(
            path,
            format!(
                "wrong magic number {:#010x}: expected {:#010x} for an unsigned-byte {kind} file",
                u32::from_be_bytes(magic),
                u32::from_be_bytes([0, 0, UBYTE, rank])
            ),
        ));
    }
    let mut dims = Vec::with_capacity(rank as usize);
    for i in 0..rank {
        let mut b = [0u8; 4];
        if read_fully(reader, &mut b, path)? < 4 {
            return Err(Error::bad_data(path, format!("truncated header: dimension {i} is missing")));
        }
        dims.push(u32::from_be_bytes(b));
    }
    Ok(dims)
}

/// Read exactly `expected` payload bytes and check nothing follows them.
fn read_payload(
    reader: &mut dyn Read,
    path: &Path,
    expected: u64,
    raw_len: Option<u64>,
    header_len: u64,
) -> Result<Vec<u8>> {
    if expected > MAX_PAYLOAD {
        return Err(Error::bad_data(
            path,
            format!("header announces {expected} bytes of data, over the {MAX_PAYLOAD}-byte limit"),
        ));
    }
    if let Some(len) = raw_len {
        let found = len.saturating_sub(header_len);
        if found != expected {
            return Err(Error::bad_data(
                path,
                format!("header counts need {expected} bytes of data, the file has {found}"),
            ));
        }
    }
    // Read one byte more than expected to detect trailing data; the buffer grows with what is
    // actually read, so a lying gzip header cannot force a large allocation.
    let mut data = Vec::new();
    reader
        .take(expected + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::bad_data(path, format!("unreadable data ({e})")))?;
    let found = data.len() as u64;
    if found < expected {
        return Err(Error::bad_data(
            path,
            format!("truncated: header counts need {expected} bytes of data, found {found}"),
        ));
    }
    if found > expected {
        return Err(Error::bad_data(
            path,
            format!("header counts need {expected} bytes of data, but more follows"),
        ));
    }
    Ok(data)
}

/// `read_exact` that reports how much it got instead of failing on a short read.
fn read_fully(reader: &mut dyn Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::bad_data(path, format!("unreadable ({e})"))),
        }
    }
    Ok(got)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Build an IDX3 file in memory.
    pub fn idx3(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, UBYTE, 3];
        for d in [count, rows, cols] {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn idx1(labels: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, UBYTE, 1];
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn err_of(r: Result<IdxImages>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn reads_raw_and_gzip_alike() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let raw = idx3(2, 3, 4, &pixels);
        for (name, bytes) in [("a-idx3-ubyte", raw.clone()), ("a-idx3-ubyte.gz", gz(&raw))] {
            let imgs = read_images(&write(dir.path(), name, &bytes)).unwrap();
            assert_eq!((imgs.count, imgs.rows, imgs.cols), (2, 3, 4));
            assert_eq!(imgs.image(1), &pixels[12..24]);
        }
        let labels = read_labels(&write(dir.path(), "l.gz", &gz(&idx1(&[3, 1, 4])))).unwrap();
        assert_eq!(labels, vec![3, 1, 4]);
    }

    #[test]
    fn wrong_magic_is_named() {
        let dir = tempfile::tempdir().unwrap();
        // A label file given where images are expected.
        let p = write(dir.path(), "labels-as-images", &idx1(&[1, 2]));
        let e = err_of(read_images(&p));
        assert!(e.contains("wrong magic") && e.contains("labels-as-images"), "{e}");
        let p = write(dir.path(), "text", b"hello world, not idx");
        assert!(err_of(read_images(&p)).contains("wrong magic"));
    }

    #[test]
    fn truncated_data_is_detected_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let raw = idx3(2, 2, 2, &[7; 8]);
        let cut = &raw[..raw.len() - 3];
        let e = err_of(read_images(&write(dir.path(), "cut", cut)));
        assert!(e.contains("need 8 bytes") && e.contains("has 5"), "{e}");
        let e = err_of(read_images(&write(dir.path(), "cut.gz", &gz(cut))));
        assert!(e.contains("truncated"), "{e}");
        let e = err_of(read_images(&write(dir.path(), "tiny", &raw[..6])));
        assert!(e.contains("truncated header"), "{e}");
        let e = err_of(read_images(&write(dir.path(), "empty", &[])));
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn counts_not_matching_length_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut long = idx3(2, 2, 2, &[7; 8]);
        long.extend_from_slice(&[1, 2, 3]);
        let e = err_of(read_images(&write(dir.path(), "long", &long)));
        assert!(e.contains("need 8 bytes"), "{e}");
        let e = err_of(read_images(&write(dir.path(), "long.gz", &gz(&long))));
        assert!(e.contains("more follows"), "{e}");
    }

    #[test]
    fn absurd_dimensions_are_rejected_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let e = err_of(read_images(&write(dir.path(), "wide", &idx3(1, 1, 1 << 20, &[]))));
        assert!(e.contains("absurd image dimensions"), "{e}");
        let e = err_of(read_images(&write(dir.path(), "zero", &idx3(1, 0, 28, &[]))));
        assert!(e.contains("absurd"), "{e}");
        // A gzip file whose header claims ~3.9 GB: refused from the header alone.
        let e = err_of(read_images(&write(dir.path(), "huge.gz", &gz(&idx3(u32::MAX, 28, 28, &[1; 10])))));
        assert!(e.contains("limit"), "{e}");
        // A header claiming 60000 images on a tiny gzip stream: read what is there, then fail.
        let e = err_of(read_images(&write(dir.path(), "lying.gz", &gz(&idx3(60_000, 28, 28, &[1; 10])))));
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn corrupt_gzip_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = gz(&idx3(4, 28, 28, &[9; 4 * 784]));
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        bytes[mid + 1] ^= 0x55;
        let r = read_images(&write(dir.path(), "flipped.gz", &bytes));
        assert!(r.is_err(), "a corrupted gzip stream must not parse");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = err_of(read_images(Path::new("/nonexistent/train-images-idx3-ubyte.gz")));
        assert!(e.contains("/nonexistent/train-images-idx3-ubyte.gz"), "{e}");
    }
}
