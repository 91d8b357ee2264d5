//! Sample quality during training: every `eval.every` iterations the judge scores a fixed set of
//! generated images against as many real test images, and the numbers go to `eval.csv` (one row
//! per evaluation), TensorBoard and the dashboard.
//!
//! The evaluation draws its noise from its own stream (seeded from the run's seed), never from the
//! training streams, so turning it on or off leaves training bit-identical.

use std::io::Write;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::eval::judge::{Judge, JudgeConfig, Judgement};
use crate::eval::reference::JudgeData;
use crate::eval::{self, EvalReport, EvalSettings};
use crate::rng;

/// Header of `eval.csv`; a conditional run's has [`CLASS_ACCURACY`] after these.
pub const EVAL_COLUMNS: [&str; 8] =
    ["iteration", "fid", "kid", "precision", "recall", "inception_score", "classes_present", "separability"];

/// The column of a conditional run's class accuracy in `eval.csv`.
pub const CLASS_ACCURACY: &str = "class_accuracy";

/// Salt of the evaluation's noise stream (any constant apart from the training streams' seeds).
const NOISE_SALT: u64 = 0x6a75_6467_655f_7a00;

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

impl QualityRecord {
    fn from_report(iteration: usize, r: &EvalReport) -> Self {
        Self {
            iteration,
            fid: r.fid,
            kid: r.kid,
            precision: r.precision,
            recall: r.recall,
            inception_score: r.inception_score,
            classes_present: r.classes_present,
            separability: r.separability,
            class_accuracy: r.class_accuracy,
        }
    }
}

/// The judge, the judged real images and the evaluation's fixed noise.
pub(crate) struct QualityProbe {
    judge: Judge,
    real: Judgement,
    /// [samples, latent]: the same noise at every evaluation, so changes are the generator's.
    noise: Vec<f32>,
    /// The class asked for each sample in a conditional run (every class in turn; in a
    /// self-conditioned run, or one with `model.clusters_per_class`, the clusters in proportion
    /// to their sizes; else empty).
    labels: Vec<u8>,
    /// The judge's class of each sample of `labels` in a conditional run on labels (a cluster
    /// id's class with `model.clusters_per_class`): then the class accuracy is scored. None in a
    /// self-conditioned run: its cluster ids are not the judge's classes.
    asked: Option<Vec<u8>>,
}

impl QualityProbe {
    /// Load (or train, once per machine) the judge of the run's data set; None when evaluation is
    /// off or no judge can be trained for these images (said on stderr). `cluster_sizes`: a
    /// self-conditioned run's clusters (or the (class, cluster) ids of one with
    /// `model.clusters_per_class`), which its samples are drawn in proportion to.
    pub(crate) fn new(
        config: &Config,
        cluster_sizes: Option<&[usize]>,
        progress: bool,
    ) -> Result<Option<Self>> {
        if config.eval.every == 0 {
            return Ok(None);
        }
        let dataset = config.data.dataset;
        let data = JudgeData::open(&config.data, None, false)?;
        if let Some(why) = data.unsupported() {
            if progress {
                eprintln!("gantry: no sample-quality judge: {why}; training without one");
            }
            return Ok(None);
        }
        let mut announced = false;
        let judge = Judge::load_or_train(&data, None, &JudgeConfig::default(), &mut |line| {
            if !progress {
                return;
            }
            if !announced {
                eprintln!(
                    "gantry: training the sample-quality judge for {} (once per machine and data set, \
                     a few minutes; --eval-every 0 skips it)",
                    dataset.name()
                );
                announced = true;
            }
            eprintln!("gantry: {line}");
        })?;
        // The real images compared with: the first eval.samples of them (all, when fewer).
        let n = config.eval.samples;
        let reference = data.reference(JudgeConfig::default().seed)?;
        if reference.dim() != judge.shape.dim() {
            return Err(Error::bad_data(&reference.source, "does not hold images of the judge's size"));
        }
        let real = judge.judge(&reference.floats(0..n.min(reference.count)))?;
        let mut noise = Vec::new();
        rng::normal(
            &mut ChaCha8Rng::seed_from_u64(config.train.seed ^ NOISE_SALT),
            n * config.model.latent_dim,
            &mut noise,
        );
        let classes = config.model.label_width();
        let labels = match cluster_sizes {
            Some(sizes) => crate::data::clusters::proportional(sizes, n),
            None => (0..n).filter(|_| classes > 0).map(|i| (i % classes) as u8).collect(),
        };
        let per_class = config.model.clusters_per_class;
        let asked = (classes > 0 && config.data.clusters == 0)
            .then(|| labels.iter().map(|&l| crate::data::clusters::class_of(l, per_class)).collect());
        Ok(Some(Self { judge, real, noise, labels, asked }))
    }

    /// The evaluation's noise, [samples, latent].
    pub(crate) fn noise(&self) -> &[f32] {
        &self.noise
    }

    /// The class asked of each sample (a conditional run; else empty).
    pub(crate) fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Score `generated` ([samples, pixels] in [-1, 1], drawn for [`QualityProbe::labels`]) as
    /// iteration `iteration`.
    pub(crate) fn measure(&self, iteration: usize, generated: &[f32]) -> Result<QualityRecord> {
        // Few KID subsets: this runs inside training; `gantry eval` uses 100.
        let settings = EvalSettings { kid_subsets: 10, ..Default::default() };
        let fail =
            |e: Error| Error::Training { iteration, problem: format!("sample-quality evaluation: {e}") };
        let fake = self.judge.judge(generated).map_err(fail)?;
        let mut report =
            eval::compare(&self.judge, "training", &fake, &self.real, &settings).map_err(fail)?;
        if let Some(asked) = &self.asked {
            eval::add_class_scores(&mut report, &fake, asked, &self.real, None).map_err(fail)?;
        }
        Ok(QualityRecord::from_report(iteration, &report))
    }
}

/// Append one row to `eval.csv` (created with its header when missing).
pub fn append(path: &Path, r: &QualityRecord) -> Result<()> {
    let exists = path.is_file();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).at("open", path)?;
    let mut text = String::new();
    if !exists {
        text.push_str(&EVAL_COLUMNS.join(","));
        if r.class_accuracy.is_some() {
            text.push_str(&format!(",{CLASS_ACCURACY}"));
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "{},{},{},{},{},{},{},{}",
        r.iteration,
        short(r.fid),
        short(r.kid),
        short(r.precision),
        short(r.recall),
        short(r.inception_score),
        r.classes_present,
        short(r.separability)
    ));
    if let Some(a) = r.class_accuracy {
        text.push_str(&format!(",{}", short(a)));
    }
    text.push('\n');
    file.write_all(text.as_bytes()).at("write", path)
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

/// Keep only the rows up to `iteration` (a resume redoes what came after), rewriting the file.
pub fn truncate(path: &Path, iteration: usize) -> Result<()> {
    let rows = read(path)?;
    if rows.iter().all(|r| r.iteration <= iteration) {
        return Ok(());
    }
    let partial = path.with_extension("csv.partial");
    let _ = std::fs::remove_file(&partial);
    for r in rows.iter().filter(|r| r.iteration <= iteration) {
        append(&partial, r)?;
    }
    if !partial.exists() {
        return std::fs::remove_file(path).at("remove", path);
    }
    std::fs::rename(&partial, path).at("rename", &partial)
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
