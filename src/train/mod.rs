//! Training, room by room along a run's life:
//! - `open`: opening a run, new (`start`: data, memory, judge and device checked before the
//!   folder is made) or stopped (`resume`: pure checks of the config, the data and the checkpoint
//!   that write nothing, then the folder rewound); both end in one `Session`;
//! - `session`: running it: the loop, a step per iteration, records, grids, progress,
//!   TensorBoard, sample quality and checkpoints on their [`schedule`] (checkpoint policy in
//!   [`crate::checkpoint::policy`]), and the end-of-run files;
//! - `gan`: what is trained and how: the networks and their optimizers, the reference step
//!   (`gan/step.rs`, top to bottom like the algorithm), the classic recipe's fast schedule
//!   (`gan/fast.rs`, tested bit for bit against the step), and the state in and out of checkpoints
//!   (`gan/state.rs`);
//! - [`quality`]: the judge during training; [`bench`]: timing steps; `augment`: DiffAugment.
//!
//! The objectives live in [`crate::objective`], the networks in [`crate::model`].

mod augment;
pub mod bench;
mod gan;
pub mod layer_bench;
mod open;
pub mod quality;
pub mod schedule;
mod session;

pub use open::{resume, start};

pub use crate::sample::{sample_from_run, sample_generator};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;
use crate::error::Result;
use crate::metrics::IterationRecord;
use crate::metrics::quality::QualityRecord;
use crate::run_dir::{Existing, RunDir, RunInfo};

/// What a run leaves behind, for the caller's summary.
#[derive(Debug)]
pub struct TrainOutcome {
    pub run: RunDir,
    /// Every iteration's record, from iteration 0 (resumed runs include the earlier rows).
    pub records: Vec<IterationRecord>,
    pub info: RunInfo,
    /// Set when a stop request ended the run early: the iteration its checkpoint holds.
    pub stopped_at: Option<usize>,
    /// The checkpoint iteration a resumed run continued from.
    pub resumed_from: Option<usize>,
    /// A resume found the run already complete and changed nothing.
    pub already_complete: bool,
    /// The last sample-quality row of the run (eval.csv), if it was judged.
    pub quality: Option<QualityRecord>,
    /// The objective the run trained (what its metric columns mean).
    pub loss: crate::objective::Loss,
    /// The decay of G's moving average, 0 when the run keeps none (then the grids, judge and
    /// saved weights are of G itself).
    pub g_ema: f64,
}

/// How a run is driven, beyond its config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Raised by a signal handler: finish the current iteration, checkpoint, stop.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop as a signal would once this many iterations are done (for tests and scripted pauses).
    pub stop_after: Option<usize>,
    /// Raised while the loop runs, where a stop request ends in a checkpoint; lowered when it
    /// leaves (however it leaves). A signal handler that finds it down cannot wait for a
    /// checkpoint and ends the process at once: reading data, decoding a folder or training the
    /// judge never holds a stop back.
    pub listening: Option<Arc<AtomicBool>>,
}

/// Holds [`Options::listening`] raised for the life of the loop.
struct Listening<'a>(Option<&'a AtomicBool>);

impl<'a> Listening<'a> {
    fn raise(flag: Option<&'a Arc<AtomicBool>>) -> Self {
        let flag = flag.map(|f| f.as_ref());
        if let Some(f) = flag {
            f.store(true, Ordering::SeqCst);
        }
        Self(flag)
    }
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0 {
            f.store(false, Ordering::SeqCst);
        }
    }
}

impl Options {
    fn stop_requested(&self, done: usize) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) || self.stop_after == Some(done)
    }
}

/// Train a GAN as `config` says into the new run folder `out` (refused if it exists and is not
/// empty), quietly: [`start`] with the defaults.
pub fn train(config: &Config, out: &Path) -> Result<TrainOutcome> {
    start(config, out, Existing::Keep, &Options::default())
}

impl TrainOutcome {
    /// The outcome of a resume of a run that is complete already: nothing trained, nothing changed.
    fn complete(
        config: &Config,
        run: RunDir,
        (info, records): (RunInfo, Vec<IterationRecord>),
        (iteration, quality): (usize, Option<QualityRecord>),
    ) -> Self {
        let resumed_from = Some(iteration);
        Self {
            info,
            run,
            records,
            stopped_at: None,
            resumed_from,
            already_complete: true,
            quality,
            loss: config.train.loss,
            g_ema: config.train.g_ema,
        }
    }
}
