//! TensorBoard event files, written during training so `tensorboard --logdir runs/` shows every
//! scalar of every iteration and the sample grids as images.
//!
//! The format: a file `events.out.tfevents.<time>.<host>` of TFRecords (length, masked CRC-32C of
//! the length, an `Event` protocol buffer, masked CRC-32C of the data). The three messages used are
//! small, so they are encoded here field by field:
//! `Event { wall_time: double = 1, step: int64 = 2, file_version: string = 3, summary: Summary = 5 }`,
//! `Summary { repeated Value value = 1 }`,
//! `Value { tag: string = 1, simple_value: float = 2, image: Image = 4 }`,
//! `Image { height: int32 = 1, width: int32 = 2, colorspace: int32 = 3, encoded_image_string: bytes = 4 }`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};

/// Appends events to one TensorBoard event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Create a new event file in `dir` (the run folder).
    pub fn create(dir: &Path) -> Result<Self> {
        let secs = now();
        let path = dir.join(format!("events.out.tfevents.{}.gantry", secs as u64));
        let out = BufWriter::new(File::create(&path).at("create", &path)?);
        let mut w = Self { path, out };
        // The first event names the format version.
        let mut event = Vec::new();
        put_double(&mut event, 1, secs);
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars of one step, e.g. `[("loss/d", 0.6), ...]`.
    pub fn scalars(&mut self, step: usize, values: &[(&str, f32)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, tag.as_bytes());
            put_fixed32(&mut value, 2, v.to_bits());
            put_bytes(&mut summary, 1, &value);
        }
        self.event(step, &summary)
    }

    /// A PNG image (8-bit greyscale) of one step.
    pub fn image(
        &mut self,
        step: usize,
        tag: &str,
        png: &[u8],
        (width, height): (usize, usize),
        channels: usize,
    ) -> Result<()> {
        let mut image = Vec::new();
        put_varint_field(&mut image, 1, height as u64);
        put_varint_field(&mut image, 2, width as u64);
        put_varint_field(&mut image, 3, channels as u64); // colorspace: 1 greyscale, 3 RGB
        put_bytes(&mut image, 4, png);
        let mut value = Vec::new();
        put_bytes(&mut value, 1, tag.as_bytes());
        put_bytes(&mut value, 4, &image);
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &value);
        self.event(step, &summary)
    }

    /// Push buffered events to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().at("flush", &self.path)
    }

    fn event(&mut self, step: usize, summary: &[u8]) -> Result<()> {
        let mut event = Vec::new();
        put_double(&mut event, 1, now());
        put_varint_field(&mut event, 2, step as u64);
        put_bytes(&mut event, 5, summary);
        self.record(&event)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut frame = Vec::with_capacity(data.len() + 16);
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&masked_crc(&len).to_le_bytes());
        frame.extend_from_slice(data);
        frame.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out.write_all(&frame).at("write", &self.path)
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// TFRecord's masked CRC-32C.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, bits: u32) {
    put_key(out, field, 5);
    out.extend_from_slice(&bits.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C("123456789") = 0xE3069283 (RFC 3720).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn varints_and_fields_encode_as_protobuf_does() {
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, vec![0xac, 0x02]);
        let mut f = Vec::new();
        put_fixed32(&mut f, 2, 1.0f32.to_bits());
        assert_eq!(f, vec![0x15, 0x00, 0x00, 0x80, 0x3f]);
    }

    #[test]
    fn records_are_framed_with_checksums() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(tmp.path()).unwrap();
        w.scalars(3, &[("loss/g", 0.5)]).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let mut at = 0;
        let mut records = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(
                u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()),
                masked_crc(&bytes[at..at + 8])
            );
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            at += 16 + len;
            records += 1;
        }
        assert_eq!(records, 2);
    }
}
