//! What `gantry eval --features inception` reports: FID, KID and Inception Score in Inception's
//! feature space, each report carrying its protocol (extractor, weights, reference set, sample
//! count, resize), so a number is never read without what it was measured with.

use serde::{Deserialize, Serialize};

use super::net::LOGITS;
use super::{Extracted, WeightsIdentity};
use crate::error::Result;
use crate::eval::EvalSettings;
use crate::eval::stats::{self, Features};

/// The Inception Score's splits (torch-fidelity's and the original code's 10).
pub const IS_SPLITS: usize = 10;
/// The seed of the order the rows are split in (torch-fidelity's, though it draws the order with
/// numpy's generator and gantry with ChaCha8, so the splits differ).
pub const IS_SHUFFLE_SEED: u64 = 2020;

/// The Inception Score (mean, std) of `probabilities` ([n, 1008]): the rows in a seeded random
/// order, so that images listed class by class (a folder read in name order) do not make splits of
/// one class each, then [`IS_SPLITS`] splits.
pub fn inception_score(probabilities: &[f32]) -> Result<(f64, f64)> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<&[f32]> = probabilities.chunks(LOGITS).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(IS_SHUFFLE_SEED));
    let shuffled: Vec<f32> = order.concat();
    stats::inception_score_splits(&shuffled, LOGITS, IS_SPLITS)
}

/// How the numbers of an [`InceptionReport`] were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    pub extractor: String,
    pub weights_file: String,
    pub weights_sha256: String,
    /// Whether the weights are pytorch-fid's published file (only then are the scores comparable
    /// with other tools' and papers').
    pub standard_weights: bool,
    pub feature_width: usize,
    pub resize: String,
    /// The real images compared with, and how many.
    pub reference: String,
    pub reference_count: usize,
    pub kid: String,
    pub inception_score: String,
}

impl Protocol {
    pub fn new(
        weights: &WeightsIdentity,
        reference: String,
        reference_count: usize,
        settings: &EvalSettings,
    ) -> Self {
        Self {
            extractor: "pytorch-fid's InceptionV3 (FIDInception blocks), pool features".into(),
            weights_file: weights.file.display().to_string(),
            weights_sha256: weights.sha256.clone(),
            standard_weights: weights.standard,
            feature_width: weights.width(),
            resize: "pixels rounded to 8 bits, grey repeated to RGB, bilinear resize to 299x299 \
                     (align_corners=False, no antialiasing), scaled to [-1, 1] (pytorch-fid)"
                .into(),
            reference,
            reference_count,
            kid: format!(
                "unbiased MMD², kernel (x·y/d + 1)³, {} subsets of min({}, real, generated), seed {}",
                settings.kid_subsets, settings.kid_subset_size, settings.seed
            ),
            inception_score: format!(
                "softmax of the logits without their bias (torch-fidelity's), rows shuffled (ChaCha8, seed \
                 {IS_SHUFFLE_SEED}), {IS_SPLITS} splits, mean ± std"
            ),
        }
    }
}

/// One set of samples scored in Inception's feature space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InceptionReport {
    pub source: String,
    pub protocol: Protocol,
    pub generated: usize,
    pub fid: f64,
    pub kid: f64,
    pub kid_std: f64,
    pub inception_score: f64,
    pub inception_score_std: f64,
    /// The reference images' own score, for scale.
    pub real_inception_score: f64,
}

/// The real images' features and score, extracted once for every set compared with them.
#[derive(Debug, Clone)]
pub struct RealSet {
    pub description: String,
    pub count: usize,
    pub features: Vec<f32>,
    pub inception_score: f64,
}

impl RealSet {
    pub fn new(description: String, extracted: Extracted) -> Result<Self> {
        let (inception_score, _) = inception_score(&extracted.probabilities)?;
        Ok(Self { description, count: extracted.count, features: extracted.features, inception_score })
    }
}

/// Score `fake` against `real`.
pub fn score(
    source: &str,
    fake: &Extracted,
    real: &RealSet,
    protocol: &Protocol,
    settings: &EvalSettings,
) -> Result<InceptionReport> {
    let width = protocol.feature_width;
    let f = Features::new(&fake.features, fake.count, width)?;
    let r = Features::new(&real.features, real.count, width)?;
    let (kid, kid_std) = stats::kid(r, f, settings.kid_subsets, settings.kid_subset_size, settings.seed)?;
    let (inception_score, inception_score_std) = inception_score(&fake.probabilities)?;
    Ok(InceptionReport {
        source: source.to_string(),
        protocol: protocol.clone(),
        generated: fake.count,
        fid: stats::frechet_distance_features(r, f)?,
        kid,
        kid_std,
        inception_score,
        inception_score_std,
        real_inception_score: real.inception_score,
    })
}

/// The reports side by side, then the protocol they share.
pub fn format_table(reports: &[InceptionReport]) -> String {
    let rows: [crate::eval::Row<InceptionReport>; 5] = [
        ("samples", |r| r.generated.to_string()),
        ("FID (Inception)", |r| format!("{:.3}", r.fid)),
        ("KID (Inception)", |r| format!("{:.3e} ± {:.1e}", r.kid, r.kid_std)),
        ("inception score", |r| format!("{:.2} ± {:.2}", r.inception_score, r.inception_score_std)),
        ("real inception score", |r| format!("{:.2}", r.real_inception_score)),
    ];
    let mut out = crate::eval::side_by_side(reports, |r| r.source.clone(), &rows);
    if let Some(p) = reports.first().map(|r| &r.protocol) {
        let weights = if p.standard_weights {
            "pytorch-fid's published weights"
        } else {
            "not the published weights: not comparable with other tools"
        };
        out.push_str(&format!("extractor: {}, {}-d\n", p.extractor, p.feature_width));
        out.push_str(&format!("weights: {} (SHA-256 {}; {weights})\n", p.weights_file, p.weights_sha256));
        out.push_str(&format!("reference: {} ({} images)\n", p.reference, p.reference_count));
        out.push_str(&format!("images: {}\n", p.resize));
        out.push_str(&format!("KID: {}\ninception score: {}\n", p.kid, p.inception_score));
    }
    out
}
