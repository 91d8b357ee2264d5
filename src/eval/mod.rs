//! Judging samples: are these digits any good? The [`judge`] (a classifier gantry trains on the
//! data set, from the images [`reference`] picks) turns images into features and class
//! probabilities; [`stats`] turns those into FID,
//! KID, precision/recall, an Inception-Score analogue, class coverage and a linear separability
//! probe; this module ties them together for `gantry eval` (a run's generator, or samples from any
//! tool) and for the evaluation during training.

pub mod command;
pub mod inception;
pub mod judge;
pub mod reference;
pub mod samples;
pub mod stats;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use judge::{FEATURES, Judge, JudgeTask, Judgement};
use stats::Features;

/// How an evaluation is computed.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSettings {
    /// Random subsets for KID, and their size (capped at the sample counts).
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    /// Neighbourhood size of precision/recall (Kynkaanniemi et al. use 3).
    pub k: usize,
    /// Seed of KID's subsets.
    pub seed: u64,
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self { kid_subsets: 100, kid_subset_size: 1000, k: 3, seed: 0 }
    }
}

/// Everything `gantry eval` reports about one set of samples, against the real test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// What was judged (a run folder, a checkpoint, a samples file).
    pub source: String,
    pub dataset: String,
    /// What the judge tells apart (its classes, or rotations for unlabelled images) and how many.
    #[serde(default)]
    pub judge_task: JudgeTask,
    #[serde(default = "ten")]
    pub judge_classes: usize,
    pub judge_test_accuracy: f64,
    pub generated: usize,
    pub real: usize,
    /// Fréchet distance in the judge's 84-dimensional feature space (0 = same Gaussian statistics).
    pub fid: f64,
    /// Unbiased KID (polynomial kernel) mean and standard deviation over subsets.
    pub kid: f64,
    pub kid_std: f64,
    /// Fraction of samples inside the real data's k-NN manifold (quality), and of real images
    /// inside the samples' manifold (variety).
    pub precision: f64,
    pub recall: f64,
    /// Naeem et al.'s density (about 1 for real-like spread; robust to real outliers, which can
    /// make precision high even for noise) and coverage (share of real neighbourhoods reached).
    pub density: f64,
    pub coverage: f64,
    /// exp(E KL(p(y|x) || p(y))): the class count at best (confident and balanced), 1 at worst.
    /// The class metrics are NaN (null in JSON) and the histogram empty for a rotation judge,
    /// which has no classes.
    #[serde(deserialize_with = "nan_if_null")]
    pub inception_score: f64,
    /// The same score of the real test set, for scale.
    #[serde(deserialize_with = "nan_if_null")]
    pub real_inception_score: f64,
    /// Samples per predicted class; classes holding at least 1% of the samples; KL to uniform.
    pub class_histogram: Vec<usize>,
    pub classes_present: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub class_kl_from_uniform: f64,
    /// Held-out accuracy of a linear classifier telling real from generated judge features
    /// (0.5: indistinguishable), the answer to "what would a fair D reach?".
    pub separability: f64,
    /// A conditional generator's: the share of samples asked for class c that the judge
    /// classifies as c, and each class's FID (its samples against the real test images of that
    /// class). Absent for unconditional samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_class_fid: Option<Vec<f64>>,
}

fn ten() -> usize {
    10
}

/// A number that JSON holds as null when it is not finite (serde_json writes NaN so).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Add a conditional generator's class accuracy and per-class FID to `report`: `asked` the class
/// each sample of `fake` was drawn for, `real_labels` the real images' classes (without them,
/// only the class accuracy). A class with fewer than two samples on either side has no FID (NaN).
pub fn add_class_scores(
    report: &mut EvalReport,
    fake: &Judgement,
    asked: &[u8],
    real: &Judgement,
    real_labels: Option<&[u8]>,
) -> Result<()> {
    report.class_accuracy = Some(stats::class_accuracy(&fake.probabilities, report.judge_classes, asked)?);
    let Some(real_labels) = real_labels else { return Ok(()) };
    let classes = asked.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
    let of_class = |j: &Judgement, labels: &[u8], c: usize| -> Vec<f32> {
        j.features
            .chunks_exact(FEATURES)
            .zip(labels)
            .filter(|(_, l)| **l as usize == c)
            .flat_map(|(row, _)| row.iter().copied())
            .collect()
    };
    let mut fids = Vec::with_capacity(classes);
    for c in 0..classes {
        let (f, r) = (of_class(fake, asked, c), of_class(real, real_labels, c));
        let (nf, nr) = (f.len() / FEATURES, r.len() / FEATURES);
        fids.push(if nf < 2 || nr < 2 {
            f64::NAN
        } else {
            stats::frechet_distance_features(
                Features::new(&r, nr, FEATURES)?,
                Features::new(&f, nf, FEATURES)?,
            )?
        });
    }
    report.per_class_fid = Some(fids);
    Ok(())
}

/// Judge `generated` ([n, pixels] in [-1, 1]) against the judged real images.
pub fn evaluate(
    judge: &Judge,
    source: &str,
    generated: &[f32],
    real: &Judgement,
    settings: &EvalSettings,
) -> Result<EvalReport> {
    let fake = judge.judge(generated)?;
    compare(judge, source, &fake, real, settings)
}

/// The metrics of already-judged samples against already-judged real images.
pub fn compare(
    judge: &Judge,
    source: &str,
    fake: &Judgement,
    real: &Judgement,
    settings: &EvalSettings,
) -> Result<EvalReport> {
    let f = Features::new(&fake.features, fake.count, FEATURES)?;
    let r = Features::new(&real.features, real.count, FEATURES)?;
    let (kid, kid_std) = stats::kid(r, f, settings.kid_subsets, settings.kid_subset_size, settings.seed)?;
    let manifold = stats::manifold_scores(r, f, settings.k)?;
    let classes = judge.classes();
    // A rotation judge's outputs are rotations, not classes: no class metrics then.
    let (inception, real_inception, coverage) = match judge.shape.task {
        JudgeTask::Classes => (
            stats::inception_score(&fake.probabilities, classes)?,
            stats::inception_score(&real.probabilities, classes)?,
            stats::class_coverage(&fake.probabilities, classes)?,
        ),
        JudgeTask::Rotation => (
            f64::NAN,
            f64::NAN,
            stats::Coverage { histogram: Vec::new(), present: 0, kl_from_uniform: f64::NAN },
        ),
    };
    Ok(EvalReport {
        source: source.to_string(),
        dataset: judge.dataset.name().to_string(),
        judge_task: judge.shape.task,
        judge_classes: classes,
        judge_test_accuracy: judge.test_accuracy,
        generated: fake.count,
        real: real.count,
        fid: stats::frechet_distance_features(r, f)?,
        kid,
        kid_std,
        precision: manifold.precision,
        recall: manifold.recall,
        density: manifold.density,
        coverage: manifold.coverage,
        inception_score: inception,
        real_inception_score: real_inception,
        class_histogram: coverage.histogram,
        classes_present: coverage.present,
        class_kl_from_uniform: coverage.kl_from_uniform,
        separability: stats::separability_accuracy(r, f)?,
        class_accuracy: None,
        per_class_fid: None,
    })
}

/// The reports side by side, one column each: the table `gantry eval` prints.
pub fn format_table(reports: &[EvalReport]) -> String {
    type Cell = fn(&EvalReport) -> String;
    let mut rows: Vec<(&str, Cell)> = vec![
        ("samples", |r| r.generated.to_string()),
        ("FID (judge features)", |r| format!("{:.3}", r.fid)),
        ("KID", |r| format!("{:.3e} ± {:.1e}", r.kid, r.kid_std)),
        ("precision (k=3)", |r| format!("{:.3}", r.precision)),
        ("recall (k=3)", |r| format!("{:.3}", r.recall)),
        ("density (k=3)", |r| format!("{:.3}", r.density)),
        ("coverage (k=3)", |r| format!("{:.3}", r.coverage)),
    ];
    // A rotation judge (unlabelled images) has no classes: no class rows.
    let classes = reports.iter().any(|r| r.judge_task == JudgeTask::Classes);
    if classes {
        rows.extend([
            (
                "inception score",
                (|r| format!("{:.2} (real {:.2})", r.inception_score, r.real_inception_score)) as Cell,
            ),
            ("classes present", |r| format!("{}/{}", r.classes_present, r.judge_classes)),
            ("class KL vs uniform", |r| format!("{:.3}", r.class_kl_from_uniform)),
        ]);
    }
    rows.push(("real/fake separability", |r| format!("{:.3}", r.separability)));
    rows.push(("judge", |r| r.judge_task.describe(r.judge_classes)));
    rows.push(("judge test accuracy", |r| format!("{:.2}%", 100.0 * r.judge_test_accuracy)));
    if classes {
        rows.push(("predicted classes", |r| {
            r.class_histogram.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
        }));
    }
    if reports.iter().any(|r| r.class_accuracy.is_some()) {
        rows.push(("class accuracy", |r| match r.class_accuracy {
            Some(a) => format!("{:.2}%", 100.0 * a),
            None => "-".into(),
        }));
        rows.push(("FID per class", |r| match &r.per_class_fid {
            Some(f) => f.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" "),
            None => "-".into(),
        }));
    }
    side_by_side(reports, |r| r.source.clone(), &rows)
}

/// A labelled row of [`side_by_side`]: how each item's cell is written.
pub type Row<'a, T> = (&'a str, fn(&T) -> String);

/// A table of `items` side by side, one column each headed by `header`, one row per labelled cell
/// function (every column as wide as the widest cell).
pub fn side_by_side<T>(items: &[T], header: impl Fn(&T) -> String, rows: &[Row<T>]) -> String {
    let header: Vec<String> = items.iter().map(header).collect();
    let cells: Vec<Vec<String>> = rows.iter().map(|(_, cell)| items.iter().map(cell).collect()).collect();
    let width = header.iter().chain(cells.iter().flatten()).map(|c| c.chars().count()).max().unwrap_or(0);
    let mut out = format!("{:<22}", "metric");
    for name in &header {
        out.push_str(&format!("  {name:>width$}"));
    }
    out.push('\n');
    for ((label, _), row) in rows.iter().zip(&cells) {
        out.push_str(&format!("{label:<22}"));
        for cell in row {
            out.push_str(&format!("  {cell:>width$}"));
        }
        out.push('\n');
    }
    out
}
