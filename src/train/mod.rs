//! The training loop, top to bottom: data in, one step of the recipe per iteration (the networks
//! passed through it by value), a record per iteration out, grids and files around it. The
//! policies (when to sample, when to flush) live in [`schedule`], checkpoint policy in
//! [`crate::checkpoint::policy`]; the networks, what trains them and one step in `gan`, the
//! objectives in [`objective`], DiffAugment in `augment`.

mod augment;
pub mod bench;
mod gan;
pub mod quality;
pub mod schedule;

pub use crate::sample::{sample_from_run, sample_generator};

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::alerts::{self, Alert, Monitor, Rules};
use crate::checkpoint::{self, RngState, TrainingState, policy};
use crate::conditions::Conditions;
use crate::config::{Config, Overrides};
use crate::data::{self, TrainingImages};
use crate::error::{Error, IoContext, Result};
use crate::grid::{self, GridLayout};
use crate::lock::RunLock;
use crate::metrics::quality::{self as eval_csv, QualityRecord};
use crate::metrics::{self, CsvLog, IterationRecord};
use crate::plot;
use crate::rng::{self, Streams};
use crate::run_dir::{self, DataFacts, Existing, RunDir, RunInfo, remembered_data_dir};
use crate::tensorboard::EventWriter;
use crate::timelapse;
use quality::QualityProbe;

use gan::{Gan, Networks};

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

/// Start a new run in `out`; an existing run folder there is replaced (gantry's files only) when
/// `existing` says [`Existing::Replace`] (`--force`).
pub fn start(config: &Config, out: &Path, existing: Existing, options: &Options) -> Result<TrainOutcome> {
    config.validate()?;
    // The device opens (or is refused) before anything is read or made.
    let device = crate::device::resolve(config.train.device)?;
    // Read the data and check the model fits before creating anything, so an error leaves no
    // half-made run folder.
    let (images, data) = training_data(config, config.data.dir.as_deref(), options.progress)?;
    crate::model::check_memory(config, images.dim())?;
    // The judge too (it may have to be trained, or its data be missing) before anything is made.
    let quality = QualityProbe::new(config, data.cluster_sizes.as_deref(), options.progress)?;
    let (run, lock, kept) = RunDir::create_locked(out, existing)?;
    report_kept(&kept);
    begin(config, (images, data), quality, (run, lock), &device, options)
}

fn report_kept(kept: &[std::path::PathBuf]) {
    if !kept.is_empty() {
        let names: Vec<String> = kept.iter().map(|p| p.display().to_string()).collect();
        eprintln!("gantry: kept {} entries gantry did not write: {}", kept.len(), names.join(", "));
    }
}

/// Train from iteration 0 into the run folder `run`, whose lock is held and which holds none of
/// gantry's files yet (a new folder, or one whose gantry files were just removed).
fn begin(
    config: &Config,
    (images, data): (TrainingImages, DataFacts),
    quality: Option<QualityProbe>,
    (run, lock): (RunDir, RunLock),
    device: &burn::tensor::Device,
    options: &Options,
) -> Result<TrainOutcome> {
    write_config(&run, config)?;
    // The data facts first, so that even a run killed before its end remembers its data.
    RunInfo::started(&data, &images, config.effective_threads()).write(&run)?;
    let mut streams = Streams::new(config.train.seed);
    let (mut gan, nets) = Gan::new(config, (images.rows, images.cols, images.channels), &mut streams, device);
    if let Some(sizes) = &data.cluster_sizes {
        gan.draw_classes_as(sizes);
    }
    let layout = grid_layout(config, &images);
    let fixed_noise = fixed_noise(config, &layout, &mut streams.fixed);
    let csv = CsvLog::create(&run.metrics_csv())?;
    let first_grid =
        gan.generate(&nets, &fixed_noise, &Conditions::of(config).grid(layout.rows, layout.cols));
    let first_png = grid::save_png(&run.sample_grid(0), &first_grid, layout)?;
    let mut monitor =
        Monitor::new(Rules::for_loss(config.train.loss), &reference_images(&images, &layout), images.dim());
    monitor.observe_grid(0, &first_grid, images.dim());
    let mut events = EventWriter::create(run.root())?;
    log_grid(&mut events, 0, &first_png, &layout)?;
    let session = Session {
        events,
        gan,
        streams,
        fixed_noise,
        records: Vec::new(),
        csv,
        monitor,
        quality,
        wall_before: 0.0,
        resumed_from: None,
        checkpoint_ms: Vec::new(),
        last_quality: None,
        data,
        recipe_hash: config.train.recipe_hash(),
    };
    finish(config, &images, run, session, nets, options, lock)
}

/// Continue the run in `path` (a run folder, or one of its checkpoint folders) from its newest
/// valid checkpoint (or the one named). `file` and `overrides` may extend the run; changing the
/// architecture is refused. Everything is read and checked before anything is written: a resume
/// that fails changes nothing, and a resume of a complete run is a no-op that says so.
pub fn resume(
    path: &Path,
    file: Option<&Path>,
    overrides: &Overrides,
    options: &Options,
) -> Result<TrainOutcome> {
    let (root, explicit) = run_dir::run_root(path);
    let run = RunDir::open(&root)?;
    let lock = RunLock::acquire(run.root())?;
    if let Some(pid) = lock.took_over_from {
        eprintln!("gantry: taking over the lock of process {pid}, which stopped without releasing it");
    }
    let saved = Config::from_file(&run.config())?;
    let config = resumed_config(&saved, file, overrides)?;
    // The device opens (or is refused) before anything is changed.
    let device = crate::device::resolve(config.train.device)?;
    let info = RunInfo::read(&run).ok();
    let data_dir = overrides.data_dir().or_else(|| remembered_data_dir(&run, &config));
    let (images, data) = training_data(&config, data_dir.as_deref(), options.progress)?;
    crate::model::check_memory(&config, images.dim())?;
    // The judge finds its data where the training images were found (not saved in config.toml).
    let mut with_data = config.clone();
    with_data.data.dir = data_dir.clone();
    let shown = user_data_path(&config, data_dir.as_deref(), &images);
    check_same_data(info.as_ref(), &data, &images, &shown)?;
    for stray in checkpoint::strays(&run.checkpoints_dir()) {
        eprintln!("warning: skipping {}: not a checkpoint folder", stray.display());
    }
    let found = find_checkpoint(&run, explicit.as_deref())?;
    let Some((ckpt_path, snapshot)) = found else {
        let no_checkpoints = checkpoint::list(&run.checkpoints_dir())?.is_empty();
        if no_checkpoints && stopped_before_first_checkpoint(&run, &saved) {
            // Killed before its first checkpoint: nothing to lose but those first rows. Start
            // over in place, under the lock already held; only gantry's own files are replaced.
            let quality = QualityProbe::new(&with_data, data.cluster_sizes.as_deref(), options.progress)?;
            eprintln!(
                "gantry: {} stopped before its first checkpoint; starting it again",
                run.root().display()
            );
            report_kept(&run_dir::replace_run_files(&run)?);
            return begin(&config, (images, data), quality, (run, lock), &device, options);
        }
        let problem = no_checkpoint_problem(&run, no_checkpoints);
        return Err(Error::Checkpoint { path: run.checkpoints_dir(), problem });
    };
    let state = &snapshot.state;
    check_checkpoint(state, &config, &ckpt_path, &run)?;
    let streams = state.streams(&ckpt_path)?;
    let (gan, nets) = loaded_gan(&config, (&images, &data), (&snapshot, &ckpt_path), &device)?;
    // The rows up to the checkpoint must all be there; rows after it are redone.
    let (records, kept_rows) = metrics::read_prefix(&run.metrics_csv(), state.iteration)?;
    let quality_rows = eval_csv::read(&run.eval_csv())?;
    let alerts_saved = if run.alerts().is_file() { Some(alerts::load(&run.alerts())?) } else { None };

    if state.iteration == config.train.iterations
        && checkpoint::weights_manifest_iteration(&run.weights_dir()) == Some(state.iteration)
    {
        // Complete: the end-of-run files were written after this very checkpoint.
        let info = info.unwrap_or_else(|| RunInfo::started(&data, &images, config.effective_threads()));
        let quality = quality_rows.last().copied();
        return Ok(TrainOutcome::complete(&config, run, (info, records), (state.iteration, quality)));
    }

    // The judge last (it may have to be trained): a failure here still changes nothing.
    let quality = QualityProbe::new(&with_data, data.cluster_sizes.as_deref(), options.progress)?;

    // Everything checked: from here on the run folder is written.
    let (monitor, csv) =
        rewind_run_folder(&run, &config, (&data, &images), state, (&records, &kept_rows), alerts_saved)?;
    eprintln!("gantry: resuming {} from iteration {}", run.root().display(), state.iteration);
    let session = Session {
        // A new event file; TensorBoard reads all of a run folder's files together.
        events: EventWriter::create(run.root())?,
        gan,
        streams,
        fixed_noise: state.fixed_noise.clone(),
        records,
        csv,
        monitor,
        quality,
        wall_before: state.wall_seconds,
        resumed_from: Some(state.iteration),
        checkpoint_ms: Vec::new(),
        last_quality: quality_rows.iter().rev().find(|q| q.iteration <= state.iteration).copied(),
        data,
        recipe_hash: config.train.recipe_hash(),
    };
    finish(&config, &images, run, session, nets, options, lock)
}

/// Bring the run folder back to the checkpoint at `state` (everything checked before): leftover
/// checkpoint saves removed, config and run.json rewritten, metrics.csv cut to the kept rows and
/// eval.csv to the checkpoint's iteration; returns the alert monitor (having seen the kept records
/// again, so stretches in progress carry on) and the metrics log to append to.
fn rewind_run_folder(
    run: &RunDir,
    config: &Config,
    (data, images): (&DataFacts, &TrainingImages),
    state: &checkpoint::TrainingState,
    (records, kept_rows): (&[IterationRecord], &str),
    alerts_saved: Option<Vec<crate::alerts::Alert>>,
) -> Result<(Monitor, CsvLog)> {
    let (removed, warnings) = checkpoint::clean_leftovers(&run.checkpoints_dir())?;
    for leftover in removed {
        eprintln!("gantry: removed an unfinished checkpoint save: {}", leftover.display());
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    // The user may have removed samples/, plots/ or weights/ of a stopped run.
    run.make_folders()?;
    write_config(run, config)?;
    let mut started = RunInfo::started(data, images, config.effective_threads());
    started.iterations_done = state.iteration;
    started.wall_seconds = state.wall_seconds;
    started.write(run)?;
    metrics::write_prefix(&run.metrics_csv(), kept_rows)?;
    // The alert monitor sees the kept records again, so stretches in progress carry on.
    let layout = grid_layout(config, images);
    let mut monitor =
        Monitor::new(Rules::for_loss(config.train.loss), &reference_images(images, &layout), images.dim());
    if let Some(saved) = alerts_saved {
        monitor.restore(saved, state.iteration);
    }
    for r in records {
        monitor.observe(r);
    }
    let csv = CsvLog::open_append(&run.metrics_csv())?;
    eval_csv::truncate(&run.eval_csv(), state.iteration)?;
    Ok((monitor, csv))
}

/// G and D built for `config` and loaded from the checkpoint `snapshot` (at `path`), drawing
/// classes as the run's clusters say.
fn loaded_gan(
    config: &Config,
    (images, data): (&TrainingImages, &DataFacts),
    (snapshot, path): (&checkpoint::Snapshot, &Path),
    device: &burn::tensor::Device,
) -> Result<(Gan, Networks)> {
    let shape = (images.rows, images.cols, images.channels);
    let (gan, nets) = Gan::new(config, shape, &mut Streams::new(config.train.seed), device);
    let (mut gan, nets) = gan.load(nets, snapshot, path)?;
    if let Some(sizes) = &data.cluster_sizes {
        gan.draw_classes_as(sizes);
    }
    Ok((gan, nets))
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

/// The configuration a resume continues with: the run's own (or `file`), with the overrides,
/// validated; refused when it would change the architecture or the recipe.
fn resumed_config(saved: &Config, file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
    let config = match file {
        Some(f) => Config::from_file(f)?,
        None => saved.clone(),
    };
    let config = config.with_overrides(overrides)?;
    config.validate()?;
    let diff = saved.architecture_diff(&config);
    if !diff.is_empty() {
        return Err(Error::config(
            "model",
            format!("a resumed run cannot change its architecture; differing keys:\n  {}", diff.join("\n  ")),
        ));
    }
    let recipe_diff: Vec<String> = saved
        .train
        .recipe()
        .into_iter()
        .zip(config.train.recipe())
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| format!("{}: {} -> {}", a.0, a.1, b.1))
        .collect();
    if !recipe_diff.is_empty() {
        return Err(Error::config(
            "train",
            format!(
                "a resumed run cannot change its recipe; differing keys:\n  {}",
                recipe_diff.join("\n  ")
            ),
        ));
    }
    Ok(config)
}

/// The data a resume read must be the run's: the same bytes (SHA-256 of its images) and, for a
/// clustered run, the same clusters; refused naming the user's data (`shown`).
fn check_same_data(
    info: Option<&RunInfo>,
    data: &DataFacts,
    images: &TrainingImages,
    shown: &Path,
) -> Result<()> {
    if let Some(recorded) = info.and_then(|i| i.data_sha256.clone())
        && recorded != data.sha256
    {
        let changed = if shown != images.source { " (its files changed since the run began)" } else { "" };
        return Err(Error::bad_data(
            shown,
            format!(
                "is not the data this run was trained on{changed} (SHA-256 {}, the run recorded {recorded} for {}); \
                 pass --data with the original files; nothing was changed",
                data.sha256,
                info.map(|i| i.data_file.as_str()).unwrap_or("?")
            ),
        ));
    }

    if let Some(recorded) = info.and_then(|i| i.cluster_sizes.as_ref())
        && data.cluster_sizes.as_ref() != Some(recorded)
    {
        return Err(Error::bad_data(
            shown,
            format!(
                "grouped into clusters of sizes {:?}, but the run was trained on clusters of sizes \
                 {recorded:?} (data.clusters, model.clusters_per_class): its G would be asked for other classes; nothing was changed",
                data.cluster_sizes.as_deref().unwrap_or(&[])
            ),
        ));
    }
    Ok(())
}

/// The checkpoint to resume from: the one named, else the newest that verifies (warnings said).
fn find_checkpoint(
    run: &RunDir,
    explicit: Option<&Path>,
) -> Result<Option<(std::path::PathBuf, checkpoint::Snapshot)>> {
    let found = match &explicit {
        Some(p) => Some((p.to_path_buf(), checkpoint::load(p)?)),
        None => {
            let (found, warnings) = checkpoint::newest_valid(&run.checkpoints_dir())?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            found
        }
    };
    Ok(found)
}

/// Why a run without a usable checkpoint is not started again in place.
fn no_checkpoint_problem(run: &RunDir, no_checkpoints: bool) -> String {
    if no_checkpoints {
        format!(
            "holds no checkpoint to resume from, but the run has results (metrics past its first \
                 checkpoint, final weights or a report), which a restart would overwrite; nothing was \
                 changed. To train it again from the start: `gantry train --out {} --force` (replaces \
                 gantry's files there and keeps yours), or train into a new folder",
            run.root().display()
        )
    } else {
        // Never wipe a run whose checkpoints are all damaged: a person should look first.
        "no checkpoint verifies (see the warnings above); nothing was changed".into()
    }
}

/// A checkpoint must be this configuration's: its seed, architecture and recipe, and no further
/// than the iterations asked for.
fn check_checkpoint(
    state: &checkpoint::TrainingState,
    config: &Config,
    ckpt_path: &Path,
    run: &RunDir,
) -> Result<()> {
    if !state.written_with_seed(config.train.seed) {
        let was = (0..=u64::from(u16::MAX))
            .find(|&s| state.written_with_seed(s))
            .map(|s| format!(" (it was written with train.seed = {s})"))
            .unwrap_or_default();
        return Err(Error::Checkpoint {
            path: ckpt_path.to_path_buf(),
            problem: format!(
                "was not written with train.seed = {}{was}: a resumed run keeps the seed its records were \
                 made with; put the run's seed back in {}; nothing was changed",
                config.train.seed,
                run.config().display()
            ),
        });
    }
    if state.architecture_hash != config.architecture_hash() {
        return Err(Error::Checkpoint {
            path: ckpt_path.to_path_buf(),
            problem: "was written by a different architecture".into(),
        });
    }
    if state.recipe_hash != config.train.recipe_hash() {
        return Err(Error::Checkpoint {
            path: ckpt_path.to_path_buf(),
            problem: "was written by a different recipe (objective, D steps, order, optimizers)".into(),
        });
    }
    if state.iteration > config.train.iterations {
        return Err(Error::config(
            "train.iterations",
            format!(
                "the checkpoint is at iteration {}, beyond the {} asked for",
                state.iteration, config.train.iterations
            ),
        ));
    }
    Ok(())
}

/// Whether a run without checkpoints is one that was stopped before its first checkpoint was
/// written (no more metrics rows than the step it was due at, no final weights, no report): one
/// that can start over without losing anything. The rows of that step are flushed before its
/// checkpoint is written, so a kill between the two leaves exactly `first_due` rows; a missing
/// or header-only metrics file is a kill before any row. A run with more rows lost its
/// checkpoints some other way, and its records are kept (the resume is refused).
/// `saved` is the run's own configuration (not one a resume passes), and a metrics file that
/// cannot be read counts as results.
fn stopped_before_first_checkpoint(run: &RunDir, saved: &Config) -> bool {
    let first_due = saved.checkpoint_every().min(saved.train.iterations);
    let Ok(rows) = metrics::rows_on_disk(&run.metrics_csv()) else { return false };
    rows <= first_due
        && checkpoint::weights_manifest_iteration(&run.weights_dir()).is_none()
        && !run.report().exists()
        && !run.eval_csv().exists()
}

/// The mutable state of a run in progress.
struct Session {
    gan: Gan,
    streams: Streams,
    fixed_noise: Vec<f32>,
    records: Vec<IterationRecord>,
    csv: CsvLog,
    /// Watches for training failures.
    monitor: Monitor,
    /// TensorBoard's view of the run.
    events: EventWriter,
    /// The sample-quality judge (None when `eval.every` is 0).
    quality: Option<QualityProbe>,
    /// Training-loop wall time of earlier processes (resumed runs).
    wall_before: f64,
    resumed_from: Option<usize>,
    /// How long each checkpoint of this process took to write, ms.
    checkpoint_ms: Vec<f64>,
    /// The newest sample-quality row (for progress lines and the summary).
    last_quality: Option<QualityRecord>,
    /// The training data's identity, recorded in run.json.
    data: DataFacts,
    /// The recipe's hash, recorded in checkpoints.
    recipe_hash: Option<String>,
}

/// Run the loop on the configured threads, then write the end-of-run files.
fn finish(
    config: &Config,
    images: &TrainingImages,
    run: RunDir,
    mut session: Session,
    nets: Networks,
    options: &Options,
    _lock: RunLock,
) -> Result<TrainOutcome> {
    let threads = config.effective_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::config("train.threads", format!("cannot start {threads} threads: {e}")))?;
    let (nets, stopped_at) =
        pool.install(|| training_loop(config, images, &run, &mut session, nets, options))?;

    let records = std::mem::take(&mut session.records);
    let mut info = RunInfo::started(&session.data, images, threads);
    info.iterations_done = records.len();
    info.wall_seconds = session.wall_before;
    info.checkpoints_written = session.checkpoint_ms.len();
    info.checkpoint_ms_median = median(&mut session.checkpoint_ms);
    info.write(&run)?;
    alerts::save(&run.alerts(), session.monitor.alerts())?;
    if stopped_at.is_none() {
        // The old manifest goes first: until the new one is written the weights are unverified,
        // never "corrupted".
        let manifest = run.weights_dir().join("manifest.json");
        if manifest.is_file() {
            std::fs::remove_file(&manifest).at("remove", &manifest)?;
        }
        session.gan.save_weights(&nets, &run)?;
        metrics::write_npy_files(run.root(), &records)?;
        plot::write_curves(&run.plots_dir(), &records, config.output.smoothing_window, config.train.loss)?;
        let quality_rows = eval_csv::read(&run.eval_csv())?;
        if !quality_rows.is_empty() {
            plot::write_quality(&run.plots_dir(), &quality_rows)?;
        }
        timelapse::write_gif(&run)?;
        // Last: the manifest of the final weights marks the run complete.
        checkpoint::write_weights_manifest(&run.weights_dir(), records.len())?;
    }
    Ok(TrainOutcome {
        run,
        records,
        info,
        stopped_at,
        resumed_from: session.resumed_from,
        already_complete: false,
        quality: session.last_quality,
        loss: config.train.loss,
        g_ema: config.train.g_ema,
    })
}

/// The loop itself, from the session's iteration to the configured total. Returns the iteration
/// it stopped at when a stop was requested.
fn training_loop(
    config: &Config,
    images: &TrainingImages,
    run: &RunDir,
    s: &mut Session,
    mut nets: Networks,
    options: &Options,
) -> Result<(Networks, Option<usize>)> {
    let total = config.train.iterations;
    let interval = config.output.sample_interval;
    let layout = grid_layout(config, images);
    let labels = Conditions::of(config).grid(layout.rows, layout.cols);
    let first = s.records.len();
    let bar = progress_bar(total, options.progress);
    bar.set_position(first as u64);
    // Without a terminal (a log file, a notebook cell, CI) the bar draws nothing: plain lines.
    let plain_lines = options.progress && !std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut line_from = (first, Instant::now());

    let mut last_checkpoint = Instant::now();
    let mut loop_start = Instant::now();
    // Records not yet read from the training device: read together at every flush, before a
    // checkpoint and for a progress line, so that a GPU is not made to wait for the host each
    // iteration. Each is then written, watched and logged as it would have been at once.
    let mut unread = Vec::new();
    let _listening = Listening::raise(options.listening.as_ref());
    for iteration in first..total {
        let record;
        (nets, record) = s.gan.step(nets, iteration, images, &mut s.streams);
        unread.push(record);

        let done = iteration + 1;
        if schedule::is_flush_step(done, total, interval) {
            take_records(s, &mut unread, &bar, options, run)?;
            s.csv.flush()?;
            s.events.flush()?;
        }
        if schedule::is_sample_step(done, total, interval) {
            sample_grid(s, &nets, (done, &labels, layout, images.dim()), run, (&bar, options))?;
        }
        if let Some(probe) = &s.quality
            && schedule::is_eval_step(done, total, config.eval.every)
        {
            s.last_quality = Some(judge_samples(run, probe, &s.gan, &nets, &mut s.events, done)?);
        }
        let stop = options.stop_requested(done);
        let cp = &config.checkpoint;
        let due = policy::is_checkpoint_step(
            done,
            total,
            config.checkpoint_every(),
            last_checkpoint.elapsed(),
            cp.every_minutes,
        );
        if stop || due {
            // The time spent writing counts in the next stretch of wall time.
            s.wall_before += loop_start.elapsed().as_secs_f64();
            loop_start = Instant::now();
            take_records(s, &mut unread, &bar, options, run)?;
            s.events.flush()?;
            save_checkpoint(run, s, &nets, done, cp.keep)?;
            last_checkpoint = Instant::now();
        }
        if stop {
            bar.finish_and_clear();
            return Ok((nets, Some(done)));
        }
        if plain_lines && schedule::is_progress_line_step(done, total, last_line.elapsed()) {
            take_records(s, &mut unread, &bar, options, run)?;
            print_progress_line(s, (done, total), line_from);
            last_line = Instant::now();
            line_from = (done, Instant::now());
        }
        // Display steps are flush steps: the newest record has been read.
        if schedule::is_display_step(done, total) {
            show_on_bar(&bar, s.records.last());
        }
        bar.inc(1);
    }
    s.wall_before += loop_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    take_records(s, &mut unread, &bar, options, run)?;
    s.csv.flush()?;
    s.events.flush()?;
    Ok((nets, None))
}

/// Write the fixed-noise grid after `done` iterations (and log it to TensorBoard), and show it to
/// the alert monitor.
fn sample_grid(
    s: &mut Session,
    nets: &Networks,
    (done, labels, layout, dim): (usize, &[u8], GridLayout, usize),
    run: &RunDir,
    (bar, options): (&ProgressBar, &Options),
) -> Result<()> {
    let samples = s.gan.generate(nets, &s.fixed_noise, labels);
    let png = grid::save_png(&run.sample_grid(done), &samples, layout)?;
    log_grid(&mut s.events, done, &png, &layout)?;
    if let Some(alert) = s.monitor.observe_grid(done, &samples, dim) {
        announce(bar, options, run, &s.monitor, &alert)?;
    }
    Ok(())
}

/// One plain progress line (no terminal): the newest record, and the speed since `from`.
fn print_progress_line(s: &Session, (done, total): (usize, usize), (from_it, from_t): (usize, Instant)) {
    let ms = 1e3 * from_t.elapsed().as_secs_f64() / (done - from_it).max(1) as f64;
    if let Some(record) = s.records.last() {
        eprintln!("gantry: {}", progress_line(done, total, ms, record, s.last_quality.as_ref()));
    }
}

/// The newest record's losses beside the progress bar.
fn show_on_bar(bar: &ProgressBar, record: Option<&IterationRecord>) {
    if let Some(record) = record {
        bar.set_message(format!(
            "D loss {:.3} acc {:.2} | G loss {:.3}",
            record.d_loss, record.acc, record.g_loss
        ));
    }
}

/// Read the `unread` records from the training device (one transfer), then append each to the
/// metrics and TensorBoard logs, keep it, and show it to the alert monitor, in order.
fn take_records(
    s: &mut Session,
    unread: &mut Vec<gan::StepRecord>,
    bar: &ProgressBar,
    options: &Options,
    run: &RunDir,
) -> Result<()> {
    if unread.is_empty() {
        return Ok(());
    }
    for record in s.gan.read_records(std::mem::take(unread)) {
        s.csv.append(&record)?;
        s.records.push(record);
        if let Some(alert) = s.monitor.observe(&record) {
            announce(bar, options, run, &s.monitor, &alert)?;
        }
        log_scalars(&mut s.events, &record)?;
    }
    Ok(())
}

/// One plain progress line: where the run is, its pace, and the latest numbers.
fn progress_line(
    done: usize,
    total: usize,
    ms: f64,
    r: &IterationRecord,
    q: Option<&QualityRecord>,
) -> String {
    let eta = std::time::Duration::from_secs((ms * (total - done) as f64 / 1e3).round() as u64);
    let mut line = format!(
        "iteration {done}/{total} ({:.0}%), {ms:.2} ms/iteration, ETA {} | D loss {:.3} acc {:.2} | G loss {:.3}",
        100.0 * done as f64 / total as f64,
        humantime::format_duration(eta),
        r.d_loss,
        r.acc,
        r.g_loss
    );
    if let Some(q) = q {
        line.push_str(&format!(" | FID {:.2} (iteration {})", q.fid, q.iteration));
        if let Some(a) = q.class_accuracy {
            line.push_str(&format!(", class accuracy {:.1}%", 100.0 * a));
        }
    }
    line
}

/// Write the checkpoint after `done` iterations, then delete the ones beyond `keep`.
fn save_checkpoint(run: &RunDir, s: &mut Session, nets: &Networks, done: usize, keep: usize) -> Result<()> {
    let started = Instant::now();
    // The metrics rows the checkpoint counts on must be on disk before it is.
    s.csv.sync()?;
    let snapshot = s.gan.snapshot(
        nets,
        TrainingState {
            format_version: checkpoint::FORMAT_VERSION,
            iteration: done,
            architecture_hash: s.gan.architecture_hash.clone(),
            rng_init: RngState::capture(&s.streams.init),
            rng_data: RngState::capture(&s.streams.data),
            rng_noise: RngState::capture(&s.streams.noise),
            rng_fixed: RngState::capture(&s.streams.fixed),
            fixed_noise: s.fixed_noise.clone(),
            wall_seconds: s.wall_before,
            recipe_hash: s.recipe_hash.clone(),
            rng_augment: Some(RngState::capture(&s.streams.augment)),
            rng_dropout: Some(RngState::capture(&s.streams.dropout)),
            rng_labels: Some(RngState::capture(&s.streams.labels)),
            // Filled in by the trainer, which holds them.
            spectral_norm: None,
        },
    )?;
    let dir = run.checkpoints_dir();
    checkpoint::write(&dir, &snapshot)?;
    // Only folders that hold nothing but checkpoint files are counted and deleted: a folder of
    // that name with anything else in it (someone's notebook) is never touched.
    let existing: Vec<usize> = checkpoint::list(&dir)?
        .into_iter()
        .filter(|(_, path)| checkpoint::is_own_folder(path))
        .map(|(it, _)| it)
        .collect();
    for it in policy::to_delete(&existing, keep, s.resumed_from) {
        let path = dir.join(checkpoint::folder_name(it));
        std::fs::remove_dir_all(&path).at("remove old checkpoint", &path)?;
    }
    s.checkpoint_ms.push(started.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Score the generator after `done` iterations on the probe's fixed noise; log the row to
/// eval.csv and TensorBoard.
fn judge_samples(
    run: &RunDir,
    probe: &QualityProbe,
    gan: &Gan,
    nets: &Networks,
    events: &mut EventWriter,
    done: usize,
) -> Result<QualityRecord> {
    // Generated in slices, to keep the run's memory peak at the training set's.
    const SLICE: usize = 256;
    let (latent, labels) = (gan.latent_dim(), probe.labels());
    let samples: Vec<f32> = probe
        .noise()
        .chunks(SLICE * latent)
        .enumerate()
        .flat_map(|(i, z)| {
            let rows = i * SLICE..i * SLICE + z.len() / latent;
            gan.generate(nets, z, labels.get(rows).unwrap_or(&[]))
        })
        .collect();
    let q = probe.measure(done, &samples)?;
    eval_csv::append(&run.eval_csv(), &q)?;
    log_quality(events, &q)?;
    Ok(q)
}

fn log_quality(events: &mut EventWriter, q: &QualityRecord) -> Result<()> {
    let mut scalars = vec![
        ("quality/fid", q.fid as f32),
        ("quality/kid", q.kid as f32),
        ("quality/precision", q.precision as f32),
        ("quality/recall", q.recall as f32),
        ("quality/separability", q.separability as f32),
    ];
    // A rotation judge (unlabelled images) has no classes: no class scalars then.
    if q.inception_score.is_finite() {
        scalars.push(("quality/inception_score", q.inception_score as f32));
        scalars.push(("quality/classes_present", q.classes_present as f32));
    }
    events.scalars(q.iteration, &scalars)?;
    match q.class_accuracy {
        Some(a) => events.scalars(q.iteration, &[("quality/class_accuracy", a as f32)]),
        None => Ok(()),
    }
}

/// Every metric of one iteration, as TensorBoard scalars (step = iterations done before it).
fn log_scalars(events: &mut EventWriter, r: &IterationRecord) -> Result<()> {
    events.scalars(
        r.iteration,
        &[
            ("loss/d", r.d_loss),
            ("loss/d_real", r.d_loss_real),
            ("loss/d_fake", r.d_loss_fake),
            ("loss/g", r.g_loss),
            ("accuracy/d", r.acc),
            ("accuracy/d_real", r.acc_real),
            ("accuracy/d_fake", r.acc_fake),
            ("d_output/real", r.d_out_real),
            ("d_output/fake", r.d_out_fake),
        ],
    )
}

/// The grid drawn after `step` iterations (its PNG bytes), as a TensorBoard image.
fn log_grid(events: &mut EventWriter, step: usize, png: &[u8], layout: &GridLayout) -> Result<()> {
    events.image(step, "samples", png, layout.size(), layout.channels)
}

/// Show an alert on the console and save every alert so far to `alerts.json`.
fn announce(
    bar: &ProgressBar,
    options: &Options,
    run: &RunDir,
    monitor: &Monitor,
    alert: &Alert,
) -> Result<()> {
    let line = format!("alert at iteration {}: {}", alert.raised_at, alert.message);
    if options.progress {
        bar.println(line);
    } else {
        eprintln!("gantry: {line}");
    }
    alerts::save(&run.alerts(), monitor.alerts())
}

/// Save the run's configuration, every default choice filled with the value the run takes.
fn write_config(run: &RunDir, config: &Config) -> Result<()> {
    let mut resolved = config.clone();
    resolved.train.resolve_defaults();
    crate::durable::write_atomic(&run.config(), resolved.to_toml().as_bytes())
}

/// A grid's worth of training images (the first ones), the diversity a healthy grid approaches.
fn reference_images(images: &TrainingImages, layout: &GridLayout) -> Vec<f32> {
    let n = (layout.rows * layout.cols).min(images.count);
    images.floats(0..n)
}

/// The fixed noise of every sample grid, drawn once: [rows * cols, latent]. In a conditional run
/// each column has one noise vector, the same down its rows (one class per row), so that a
/// column shows one style in every class.
fn fixed_noise(config: &Config, layout: &GridLayout, stream: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
    let latent = config.model.latent_dim;
    let mut noise = Vec::new();
    if !config.model.is_conditional() {
        rng::normal(stream, layout.rows * layout.cols * latent, &mut noise);
        return noise;
    }
    rng::normal(stream, layout.cols * latent, &mut noise);
    noise.repeat(layout.rows)
}

/// The training images `config` names, read from `dir`, and their facts. In a self-conditioned
/// run (`data.clusters`) no label is read: each image's label is its k-means cluster, and the
/// facts carry the clusters' sizes; with `model.clusters_per_class` each label becomes its
/// (class, cluster) id, the facts carrying those ids' sizes.
fn training_data(config: &Config, dir: Option<&Path>, progress: bool) -> Result<(TrainingImages, DataFacts)> {
    let clusters = config.data.clusters;
    let classes = (config.model.is_conditional() && clusters == 0).then_some(config.model.classes);
    let said = if progress { data::Progress::Shown } else { data::Progress::Quiet };
    let mut images = data::load_training_images(&config.data, dir, classes, said)?;
    let mut facts = DataFacts::of(&images)?;
    let shown = user_data_path(config, dir, &images);
    let in_user_terms = |e| about_user_data(e, &images, &shown);
    // Self-conditioning (data.clusters) or clusters within classes: never both (validate).
    let per_class = config.model.clusters_per_class;
    let started = Instant::now();
    let clustered = if clusters > 0 {
        let ids = data::clusters::cluster(&images, clusters, config.train.seed).map_err(in_user_terms)?;
        Some((
            ids,
            format!("grouped the {} training images into {clusters} clusters", images.count),
            "the cluster as a class",
        ))
    } else if per_class > 0 && config.model.is_conditional() {
        let classes = config.model.classes;
        let ids = data::clusters::cluster_within_classes(&images, classes, per_class, config.train.seed)
            .map_err(in_user_terms)?;
        Some((
            ids,
            format!("split each of the {classes} classes into {per_class} clusters"),
            "(class, cluster)",
        ))
    } else {
        None
    };
    if let Some(((ids, sizes), what, takes)) = clustered {
        if progress {
            eprintln!(
                "gantry: {what} by k-means on their pixels ({:.1} s; {} to {} images each): G and D take {takes}",
                started.elapsed().as_secs_f64(),
                sizes.iter().min().unwrap_or(&0),
                sizes.iter().max().unwrap_or(&0),
            );
        }
        images.labels = Some(ids);
        facts.cluster_sizes = Some(sizes);
    }
    Ok((images, facts))
}

/// The data as the user knows it: an image folder's own path (its decoded images live in
/// gantry's cache, a file the user never named), else the file the images were read from.
fn user_data_path(config: &Config, dir: Option<&Path>, images: &TrainingImages) -> std::path::PathBuf {
    match (config.data.dataset, dir) {
        (crate::config::Dataset::Folder, Some(dir)) => dir.to_path_buf(),
        _ => images.source.clone(),
    }
}

/// An error about the images' file, told of `shown` (the user's folder) instead of gantry's cache.
fn about_user_data(e: Error, images: &TrainingImages, shown: &Path) -> Error {
    match e {
        Error::BadDataFile { path, problem } if path == images.source => {
            Error::BadDataFile { path: shown.to_path_buf(), problem }
        }
        other => other,
    }
}

fn grid_layout(config: &Config, images: &TrainingImages) -> GridLayout {
    GridLayout {
        rows: config.grid_rows(),
        cols: config.output.grid_cols,
        tile_h: images.rows,
        tile_w: images.cols,
        channels: images.channels,
    }
}

fn progress_bar(total: usize, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if visible { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta_precise}, {per_sec}] {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
