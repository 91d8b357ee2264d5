//! `eval.csv`, the sample quality measured during training: one row per evaluation (the judge's
//! FID, KID, precision, recall, Inception-Score analogue, classes present, separability, and a
//! conditional run's class accuracy). Its one owner: the record, the writer and the reader. The
//! training loop measures (`train::quality`); plots, the dashboard, reports and comparisons read.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, IoContext, Result};

/// Header of `eval.csv`; a conditional run's has [`CLASS_ACCURACY`] after these.
pub const EVAL_COLUMNS: [&str; 8] =
    ["iteration", "fid", "kid", "precision", "recall", "inception_score", "classes_present", "separability"];

/// The column of a conditional run's class accuracy in `eval.csv`.
pub const CLASS_ACCURACY: &str = "class_accuracy";

/// One row of `eval.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    pub iteration: usize,
    pub fid: f64,
    pub kid: f64,
    pub precision: f64,
    pub recall: f64,
    pub inception_score: f64,
    pub classes_present: usize,
    pub separability: f64,
    /// A conditional run's: the share of samples asked for class c that the judge classifies as c.
    #[serde(default)]
    pub class_accuracy: Option<f64>,
}

/// Append one row to `eval.csv` (created with its header when missing), synced.
pub fn append(path: &Path, r: &QualityRecord) -> Result<()> {
    let exists = path.is_file();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).at("open", path)?;
    let mut text = if exists { String::new() } else { header(r) };
    text.push_str(&row(r));
    file.write_all(text.as_bytes()).at("write", path)?;
    file.sync_data().at("sync", path)
}

/// The header line of a file whose rows are like `r` (with the class accuracy column or not).
fn header(r: &QualityRecord) -> String {
    let mut text = EVAL_COLUMNS.join(",");
    if r.class_accuracy.is_some() {
        text.push_str(&format!(",{CLASS_ACCURACY}"));
    }
    text.push('\n');
    text
}

/// One row, as written.
fn row(r: &QualityRecord) -> String {
    let mut text = format!(
        "{},{},{},{},{},{},{},{}",
        r.iteration,
        short(r.fid),
        short(r.kid),
        short(r.precision),
        short(r.recall),
        short(r.inception_score),
        r.classes_present,
        short(r.separability)
    );
    if let Some(a) = r.class_accuracy {
        text.push_str(&format!(",{}", short(a)));
    }
    text.push('\n');
    text
}

/// `x` rounded to 7 significant digits and written in its shortest form, so that a share such as
/// 1949/2000 reads `0.9745`, not `0.9744999999999999` (the judge's numbers carry no more precision).
fn short(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let rounded: f64 = format!("{x:.6e}").parse().unwrap_or(x);
    rounded.to_string()
}

/// Read `eval.csv` (empty when missing).
pub fn read(path: &Path) -> Result<Vec<QualityRecord>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let mut reader = csv::Reader::from_path(path).map_err(|e| Error::bad_data(path, e.to_string()))?;
    reader.deserialize().map(|row| row.map_err(|e| Error::bad_data(path, e.to_string()))).collect()
}

/// Keep only the rows up to `iteration` (a resume redoes what came after), rewriting the file
/// all or nothing ([`durable::write_atomic`]); with no row left, the file goes.
pub fn truncate(path: &Path, iteration: usize) -> Result<()> {
    let rows = read(path)?;
    if rows.iter().all(|r| r.iteration <= iteration) {
        return Ok(());
    }
    let kept: Vec<&QualityRecord> = rows.iter().filter(|r| r.iteration <= iteration).collect();
    let Some(first) = kept.first() else {
        return std::fs::remove_file(path).at("remove", path);
    };
    let mut text = header(first);
    for r in &kept {
        text.push_str(&row(r));
    }
    durable::write_atomic(path, text.as_bytes())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_csv_values_carry_no_float_noise() {
        assert_eq!(short(0.974_499_999_999_999_9), "0.9745");
        assert_eq!(short(21.912_345_678), "21.91235");
        assert_eq!(short(7.33e-5), "0.0000733");
        assert_eq!(short(f64::NAN), "NaN");
    }

    fn record(iteration: usize) -> QualityRecord {
        QualityRecord {
            iteration,
            fid: 1.5,
            kid: 0.01,
            precision: 0.7,
            recall: 0.6,
            inception_score: 8.0,
            classes_present: 10,
            separability: 0.8,
            class_accuracy: None,
        }
    }

    #[test]
    fn rows_round_trip_and_truncate_at_the_resume_point() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("eval.csv");
        for it in [0, 100, 200, 300] {
            append(&path, &record(it)).unwrap();
        }
        assert_eq!(read(&path).unwrap(), [0, 100, 200, 300].map(record));
        truncate(&path, 200).unwrap();
        assert_eq!(read(&path).unwrap(), [0, 100, 200].map(record));
        truncate(&path, 200).unwrap();
        assert_eq!(read(&path).unwrap().len(), 3);
    }

    #[test]
    fn a_conditional_runs_rows_carry_their_class_accuracy_and_an_older_file_still_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("eval.csv");
        let rows = [0, 100].map(|it| QualityRecord { class_accuracy: Some(0.975), ..record(it) });
        for r in &rows {
            append(&path, r).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().ends_with(",separability,class_accuracy"), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with(",0.975"), "{text}");
        assert_eq!(read(&path).unwrap(), rows);
        truncate(&path, 0).unwrap();
        assert_eq!(read(&path).unwrap(), rows[..1]);
        // An unconditional run's file has no such column: its rows read as None.
        let plain = tmp.path().join("plain.csv");
        append(&plain, &record(5)).unwrap();
        assert_eq!(read(&plain).unwrap(), vec![record(5)]);
    }

    #[test]
    fn a_damaged_eval_csv_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("eval.csv");
        std::fs::write(&path, "iteration,fid\nx,y\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("eval.csv"));
    }
}
