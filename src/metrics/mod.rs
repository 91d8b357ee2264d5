//! The per-iteration record: what D and G did at every iteration, kept in memory, appended to
//! `metrics.csv` as training goes, and written as numpy `.npy` files (the notebook's three, plus
//! D's mean outputs) that `np.load` reads unmodified.

pub mod quality;

use std::fs::File;
use std::io::BufWriter;

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// One iteration's numbers, from the forward passes before each update (as Keras'
/// `train_on_batch` reports them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct IterationRecord {
    /// 0-based iteration.
    pub iteration: usize,
    /// D's binary cross-entropy on the real batch (label 1).
    pub d_loss_real: f32,
    /// D's binary cross-entropy on the fake batch (label 0).
    pub d_loss_fake: f32,
    /// Mean of the two.
    pub d_loss: f32,
    /// Fraction of real images D called real.
    pub acc_real: f32,
    /// Fraction of fake images D called fake.
    pub acc_fake: f32,
    /// Mean of the two.
    pub acc: f32,
    /// G's loss: D's cross-entropy on fresh fakes labelled real.
    pub g_loss: f32,
    /// D's mean output (probability "real") on the real batch.
    pub d_out_real: f32,
    /// D's mean output on the fake batch.
    pub d_out_fake: f32,
}

impl IterationRecord {
    /// The record of one iteration from D's (loss, accuracy, mean output) on the real and on the
    /// fake batch and G's loss; `d_loss` and `acc` are the means of the two batches'.
    pub fn from_terms(iteration: usize, real: [f32; 3], fake: [f32; 3], g_loss: f32) -> Self {
        let ([d_loss_real, acc_real, d_out_real], [d_loss_fake, acc_fake, d_out_fake]) = (real, fake);
        Self {
            iteration,
            d_loss_real,
            d_loss_fake,
            d_loss: 0.5 * (d_loss_real + d_loss_fake),
            acc_real,
            acc_fake,
            acc: 0.5 * (acc_real + acc_fake),
            g_loss,
            d_out_real,
            d_out_fake,
        }
    }
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 10] = [
    "iteration",
    "d_loss_real",
    "d_loss_fake",
    "d_loss",
    "acc_real",
    "acc_fake",
    "acc",
    "g_loss",
    "d_out_real",
    "d_out_fake",
];

/// Reads one metric of a record.
pub type Getter = fn(&IterationRecord) -> f32;

/// Names of the metric curves (everything but `iteration`), with accessors.
pub const METRICS: [(&str, Getter); 9] = [
    ("d_loss_real", |r| r.d_loss_real),
    ("d_loss_fake", |r| r.d_loss_fake),
    ("d_loss", |r| r.d_loss),
    ("acc_real", |r| r.acc_real),
    ("acc_fake", |r| r.acc_fake),
    ("acc", |r| r.acc),
    ("g_loss", |r| r.g_loss),
    ("d_out_real", |r| r.d_out_real),
    ("d_out_fake", |r| r.d_out_fake),
];

/// Appends records to `metrics.csv`, flushing when asked.
pub struct CsvLog {
    path: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
}

impl CsvLog {
    /// Create (truncate) the CSV file and write its header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).at("create", path)?;
        // The header is written once here, not by `serialize`, so that a run with no rows
        // still has it.
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(BufWriter::new(file));
        writer.write_record(CSV_COLUMNS).map_err(|e| csv_err(path, e))?;
        // On disk at once: a run killed before its first rows are flushed is still recognisably
        // one that logged nothing.
        writer.flush().at("write", path)?;
        Ok(Self { path: path.to_path_buf(), writer })
    }

    pub fn append(&mut self, r: &IterationRecord) -> Result<()> {
        self.writer.serialize(r).map_err(|e| csv_err(&self.path, e))
    }

    /// Open an existing CSV (header already there) to append rows.
    pub fn open_append(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().append(true).open(path).at("open", path)?;
        let writer = csv::WriterBuilder::new().has_headers(false).from_writer(BufWriter::new(file));
        Ok(Self { path: path.to_path_buf(), writer })
    }

    /// Push buffered rows to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush().at("flush", &self.path)
    }

    /// Push buffered rows and make them durable (before a checkpoint that counts on them).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.writer.get_ref().get_ref().sync_data().at("sync", &self.path)
    }
}

/// Check that a metrics CSV holds complete rows for iterations `0..rows` (rows after them, and a
/// half-written last line from a crash, are what a resumed run redoes) without changing it.
/// Returns those records and the file's text up to them, for [`write_prefix`].
pub fn read_prefix(path: &Path, rows: usize) -> Result<(Vec<IterationRecord>, String)> {
    let Some(text) = read_metrics_text(path)? else {
        return Err(Error::bad_data(path, "is missing; the run's records cannot be continued"));
    };
    let mut lines = text.split_inclusive('\n');
    let header = lines.next().unwrap_or_default();
    if header.trim_end() != CSV_COLUMNS.join(",") {
        return Err(Error::bad_data(path, "missing or unexpected CSV header"));
    }
    let kept: Vec<&str> = lines.take(rows).collect();
    let body: String = std::iter::once(header).chain(kept.iter().copied()).collect();
    let mut reader = csv::ReaderBuilder::new().from_reader(body.as_bytes());
    let mut records = Vec::with_capacity(rows.min(kept.len()));
    for (i, row) in reader.deserialize::<IterationRecord>().enumerate() {
        let r = row.map_err(|e| Error::bad_data(path, format!("row {}: {e}", i + 1)))?;
        if r.iteration != i {
            return Err(Error::bad_data(
                path,
                format!("row {} is iteration {}, expected {i}", i + 1, r.iteration),
            ));
        }
        records.push(r);
    }
    if records.len() != rows || !body.ends_with('\n') && rows > 0 {
        return Err(Error::bad_data(
            path,
            format!("holds {} complete rows, the checkpoint needs {rows}", records.len()),
        ));
    }
    Ok((records, body))
}

/// Rewrite a metrics CSV as `body` (from [`read_prefix`]), atomically.
pub fn write_prefix(path: &Path, body: &str) -> Result<()> {
    crate::durable::write_atomic(path, body.as_bytes())
}

fn csv_err(path: &Path, e: csv::Error) -> Error {
    Error::bad_data(path, format!("CSV: {e}"))
}

/// How many complete rows a `metrics.csv` holds, as a run killed at any moment leaves it: a
/// missing file, or one whose header is not yet complete, holds none. A file that cannot be read
/// or parsed is an error (its rows are results nobody should overwrite unseen).
pub fn rows_on_disk(path: &Path) -> Result<usize> {
    match read_metrics_text(path)? {
        None => Ok(0),
        Some(text) if !text.contains('\n') => Ok(0),
        Some(text) => parse_csv(path, &text).map(|r| r.len()),
    }
}

/// The largest metrics.csv read (a million iterations take about 120 MB).
const MAX_CSV_BYTES: u64 = 4 << 30;

/// A metrics.csv's text, or None when there is none. Anything but a regular file of at most
/// [`MAX_CSV_BYTES`] is refused as bad input before it is opened (a FIFO in its place never
/// blocks a resume or a report); text that is not UTF-8 is refused too.
fn read_metrics_text(path: &Path) -> Result<Option<String>> {
    use crate::durable::ReadRefused;
    let bytes = match crate::durable::read_limited(path, MAX_CSV_BYTES) {
        Ok(bytes) => bytes,
        Err(ReadRefused::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(ReadRefused::Io(e)) => return Err(Error::io("read", path, e)),
        Err(refused) => return Err(Error::bad_data(path, format!("the metrics file {refused}"))),
    };
    String::from_utf8(bytes).map(Some).map_err(|_| Error::bad_data(path, "is not UTF-8 text"))
}

/// Read every complete record of a `metrics.csv`. A last line without its newline is a row being
/// written (or cut off by a crash) and is left out, as the dashboard and resume leave it out.
pub fn read_csv(path: &Path) -> Result<Vec<IterationRecord>> {
    let Some(text) = read_metrics_text(path)? else {
        return Err(Error::bad_data(path, "is missing (no iteration finished?)"));
    };
    parse_csv(path, &text)
}

/// The complete records of a `metrics.csv`'s `text` (read from `path`, named in errors).
fn parse_csv(path: &Path, text: &str) -> Result<Vec<IterationRecord>> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut reader = csv::Reader::from_reader(complete.as_bytes());
    let headers = reader.headers().map_err(|e| csv_err(path, e))?.clone();
    if headers.iter().collect::<Vec<_>>() != CSV_COLUMNS {
        return Err(Error::bad_data(path, format!("unexpected CSV header {:?}", headers)));
    }
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.map_err(|e| Error::bad_data(path, format!("row {}: {e}", i + 1))))
        .collect()
}

/// Write the numpy files: `d_loss_real.npy` [N, 2] (loss, acc), `d_loss_fake.npy` [N, 2],
/// `g_loss.npy` [N] (the notebook's three, float64 like `np.zeros`), and `d_output.npy` [N, 2]
/// (D's mean output on real, on fake).
pub fn write_npy_files(dir: &Path, records: &[IterationRecord]) -> Result<()> {
    let pairs = |f: fn(&IterationRecord) -> [f32; 2]| -> Vec<f64> {
        records.iter().flat_map(|r| f(r).map(f64::from)).collect()
    };
    let n = records.len() as u64;
    write_npy(&dir.join("d_loss_real.npy"), &[n, 2], &pairs(|r| [r.d_loss_real, r.acc_real]))?;
    write_npy(&dir.join("d_loss_fake.npy"), &[n, 2], &pairs(|r| [r.d_loss_fake, r.acc_fake]))?;
    let g: Vec<f64> = records.iter().map(|r| r.g_loss as f64).collect();
    write_npy(&dir.join("g_loss.npy"), &[n], &g)?;
    write_npy(&dir.join("d_output.npy"), &[n, 2], &pairs(|r| [r.d_out_real, r.d_out_fake]))?;
    Ok(())
}

/// Write one little-endian float64 C-order array.
pub fn write_npy(path: &Path, shape: &[u64], data: &[f64]) -> Result<()> {
    let file = File::create(path).at("create", path)?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .at("write", path)?;
    writer.extend(data.iter().copied()).at("write", path)?;
    writer.finish().at("write", path)
}

/// How many of `n` records make up the last `fraction` (at least one, when there are any).
pub fn tail_len(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).round() as usize).clamp(1.min(n), n)
}

/// Mean of each metric over the last `fraction` of the records (at least one record).
pub fn tail_means(records: &[IterationRecord], fraction: f64) -> Vec<(&'static str, f64)> {
    let n = records.len();
    let take = tail_len(n, fraction);
    let tail = &records[n - take..];
    METRICS
        .iter()
        .map(|(name, get)| {
            let mean = tail.iter().map(|r| get(r) as f64).sum::<f64>() / tail.len().max(1) as f64;
            (*name, mean)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize, v: f32) -> IterationRecord {
        IterationRecord { iteration: i, d_loss: v, g_loss: 2.0 * v, ..Default::default() }
    }

    #[test]
    fn csv_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let mut log = CsvLog::create(&path).unwrap();
        let rows: Vec<_> = (0..3).map(|i| rec(i, 0.1 * i as f32 + 1e-7)).collect();
        for r in &rows {
            log.append(r).unwrap();
        }
        log.flush().unwrap();
        assert_eq!(read_csv(&path).unwrap(), rows);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("iteration,d_loss_real,d_loss_fake,d_loss,acc_real"));
        assert_eq!(text.lines().count(), 4, "one header line and three rows:\n{text}");
    }

    #[test]
    fn report_and_plot_skip_an_incomplete_last_line() {
        // The bug: `report` and `plot` refused a torn last line that the dashboard and resume skip.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let mut log = CsvLog::create(&path).unwrap();
        for i in 0..3 {
            log.append(&rec(i, i as f32)).unwrap();
        }
        log.flush().unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("3,0.5,0.");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_csv(&path).unwrap().len(), 3);
        // A damaged complete row is still an error.
        std::fs::write(&path, text.replace("\n1,", "\nx,")).unwrap();
        assert!(read_csv(&path).unwrap_err().to_string().contains("row 2"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_csv(&path).unwrap_err().exit_code(), 2, "a missing metrics.csv is bad input");
    }

    #[test]
    fn truncation_keeps_whole_rows_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let mut log = CsvLog::create(&path).unwrap();
        for i in 0..5 {
            log.append(&rec(i, i as f32)).unwrap();
        }
        log.flush().unwrap();
        // A crash mid-write leaves half a line.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("5,0.1,0.");
        std::fs::write(&path, &text).unwrap();
        let (kept, body) = read_prefix(&path, 3).unwrap();
        write_prefix(&path, &body).unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(read_csv(&path).unwrap(), kept);
        // Appending continues after the kept rows.
        let mut log = CsvLog::open_append(&path).unwrap();
        log.append(&rec(3, 3.0)).unwrap();
        log.flush().unwrap();
        assert_eq!(read_csv(&path).unwrap().len(), 4);
        // Asking for more rows than are complete is an error naming the file.
        let err = read_prefix(&path, 10).unwrap_err().to_string();
        assert!(err.contains("metrics.csv") && err.contains("needs 10"), "{err}");
    }

    #[test]
    fn npy_header_is_numpy_format() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<_> = (0..5).map(|i| rec(i, i as f32)).collect();
        write_npy_files(dir.path(), &rows).unwrap();
        let bytes = std::fs::read(dir.path().join("d_loss_real.npy")).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header = String::from_utf8_lossy(&bytes[10..]);
        assert!(header.contains("'descr': '<f8'") && header.contains("'shape': (5, 2"), "{header}");
        let g_bytes = std::fs::read(dir.path().join("g_loss.npy")).unwrap();
        let g = npyz::NpyFile::new(&g_bytes[..]).unwrap();
        assert_eq!(g.shape(), &[5]);
        let v: Vec<f64> = g.into_vec().unwrap();
        assert_eq!(v, vec![0.0, 2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn tail_means_use_the_last_tenth() {
        let rows: Vec<_> = (0..100).map(|i| rec(i, if i >= 90 { 1.0 } else { 5.0 })).collect();
        let m = tail_means(&rows, 0.1);
        let d = m.iter().find(|(n, _)| *n == "d_loss").unwrap().1;
        assert_eq!(d, 1.0);
        assert_eq!(tail_means(&rows[..1], 0.1).len(), METRICS.len());
    }
}
