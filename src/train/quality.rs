//! Sample quality during training: every `eval.every` iterations the judge scores a fixed set of
//! generated images against as many real test images, and the numbers go to `eval.csv` (one row
//! per evaluation), TensorBoard and the dashboard.
//!
//! The evaluation draws its noise from its own stream (seeded from the run's seed), never from the
//! training streams, so turning it on or off leaves training bit-identical.

use crate::conditions::Conditions;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::eval::judge::{Judge, JudgeConfig, Judgement};
use crate::eval::reference::JudgeData;
use crate::eval::{self, EvalReport, EvalSettings};
use crate::metrics::quality::QualityRecord;
use crate::rng;

/// Salt of the evaluation's noise stream (any constant apart from the training streams' seeds).
const NOISE_SALT: u64 = 0x6a75_6467_655f_7a00;

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
        let data = JudgeData::open(&config.data, None, crate::data::Progress::Quiet)?;
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
        let conditions = Conditions::of(config).with_sizes(cluster_sizes.map(<[usize]>::to_vec));
        let labels = conditions.spread(n);
        let asked = conditions.judged(&labels);
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
