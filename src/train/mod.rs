//! The training loop of the classic GAN, top to bottom: data in, three updates per iteration,
//! a record per iteration out, grids and files around it. The policies (when to sample, when to
//! flush) live in [`schedule`]; the networks in [`crate::model`].

pub mod schedule;

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::checkpoint::{self, RngState, Snapshot, TrainingState, policy};
use crate::config::{Config, Overrides};
use crate::lock::RunLock;
use crate::data::{self, TrainingImages};
use crate::error::{Error, IoContext, Result};
use crate::export;
use crate::grid::{self, GridLayout};
use crate::metrics::{self, CsvLog, IterationRecord};
use crate::model::{Discriminator, Generator};
use crate::plot;
use crate::rng::{self, Streams};
use crate::run_dir::RunDir;

/// Facts about a run that are not configuration, saved as `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub gantry_version: String,
    /// Training images used.
    pub data_file: String,
    pub image_rows: usize,
    pub image_cols: usize,
    /// Compute threads actually used.
    pub threads: usize,
    /// Iterations completed.
    pub iterations_done: usize,
    /// Wall time of the training loop, seconds (checkpoint writes included).
    pub wall_seconds: f64,
    /// Checkpoints written by the last process, and the median time one took to write.
    pub checkpoints_written: usize,
    pub checkpoint_ms_median: f64,
}

impl RunInfo {
    pub fn read(run: &RunDir) -> Result<Self> {
        let path = run.root().join("run.json");
        let text = std::fs::read_to_string(&path).at("read", &path)?;
        serde_json::from_str(&text).map_err(|e| Error::bad_data(&path, e.to_string()))
    }

    fn write(&self, run: &RunDir) -> Result<()> {
        let path = run.root().join("run.json");
        let text = serde_json::to_string_pretty(self).expect("RunInfo serializes");
        std::fs::write(&path, text + "\n").at("write", &path)
    }
}

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
}

impl Options {
    fn stop_requested(&self, done: usize) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) || self.stop_after == Some(done)
    }
}

/// Train a GAN as `config` says into the run folder `out` (refused if it exists and is not empty,
/// unless `force`). `progress` shows a progress bar on the terminal.
pub fn train(config: &Config, out: &Path, force: bool, progress: bool) -> Result<TrainOutcome> {
    start(config, out, force, &Options { progress, ..Default::default() })
}

/// Start a new run in `out`.
pub fn start(config: &Config, out: &Path, force: bool, options: &Options) -> Result<TrainOutcome> {
    config.validate()?;
    // Read the data before creating anything, so a data error leaves no empty run folder.
    let images = data::load_training_images(config.data.dataset, config.data.dir.as_deref())?;
    let (run, lock) = RunDir::create_locked(out, force)?;
    write_config(&run, config)?;
    let mut streams = Streams::new(config.train.seed);
    let gan = Gan::new(config, images.dim(), &mut streams);
    let layout = grid_layout(config, &images);
    // The fixed noise of every sample grid, drawn once: [rows * cols, latent].
    let mut fixed_noise = Vec::new();
    rng::normal(&mut streams.fixed, layout.rows * layout.cols * config.model.latent_dim, &mut fixed_noise);
    let csv = CsvLog::create(&run.metrics_csv())?;
    grid::save_png(&run.sample_grid(0), &gan.generate(&fixed_noise), layout)?;
    let session = Session { gan, streams, fixed_noise, records: Vec::new(), csv, wall_before: 0.0, resumed_from: None, checkpoint_ms: Vec::new() };
    finish(config, &images, run, session, options, lock)
}

/// Continue the run in `path` (a run folder, or one of its checkpoint folders) from its newest
/// valid checkpoint (or the one named). `file` and `overrides` may extend the run; changing the
/// architecture is refused.
pub fn resume(path: &Path, file: Option<&Path>, overrides: &Overrides, options: &Options) -> Result<TrainOutcome> {
    let (root, explicit) = match path.parent() {
        Some(parent) if parent.file_name().is_some_and(|n| n == "checkpoints") => {
            (parent.parent().unwrap_or(Path::new(".")).to_path_buf(), Some(path.to_path_buf()))
        }
        _ => (path.to_path_buf(), None),
    };
    let run = RunDir::open(&root)?;
    let lock = RunLock::acquire(run.root())?;
    if let Some(pid) = lock.took_over_from {
        eprintln!("gantry: taking over the lock of process {pid}, which is no longer running");
    }
    let saved = Config::from_file(&run.config())?;
    let mut config = match file {
        Some(f) => Config::from_file(f)?,
        None => saved.clone(),
    };
    config.apply(overrides);
    config.validate()?;
    let diff = saved.architecture_diff(&config);
    if !diff.is_empty() {
        return Err(Error::config(
            "model",
            format!("a resumed run cannot change its architecture; differing keys:\n  {}", diff.join("\n  ")),
        ));
    }
    let images = data::load_training_images(config.data.dataset, config.data.dir.as_deref())?;

    for leftover in checkpoint::clean_leftovers(&run.checkpoints_dir())? {
        eprintln!("gantry: removed an unfinished checkpoint save: {}", leftover.display());
    }
    let found = match &explicit {
        Some(p) => Some((p.clone(), checkpoint::load(p)?)),
        None => {
            let (found, warnings) = checkpoint::newest_valid(&run.checkpoints_dir())?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            found
        }
    };
    let Some((ckpt_path, snapshot)) = found else {
        if !checkpoint::list(&run.checkpoints_dir())?.is_empty() {
            // Never wipe a run whose checkpoints are all damaged: a person should look first.
            return Err(Error::Checkpoint {
                path: run.checkpoints_dir(),
                problem: "no checkpoint verifies (see the warnings above); nothing was changed".into(),
            });
        }
        eprintln!("warning: {} has no checkpoint yet; starting the run over", run.root().display());
        drop(lock);
        return start(&config, run.root(), true, options);
    };
    let state = &snapshot.state;
    if state.architecture_hash != config.architecture_hash() {
        return Err(Error::Checkpoint { path: ckpt_path, problem: "was written by a different architecture".into() });
    }
    if state.iteration > config.train.iterations {
        return Err(Error::config(
            "train.iterations",
            format!("the checkpoint is at iteration {}, beyond the {} asked for", state.iteration, config.train.iterations),
        ));
    }
    write_config(&run, &config)?;
    let streams = state.streams(&ckpt_path)?;
    let gan = Gan::new(&config, images.dim(), &mut Streams::new(config.train.seed)).load(&snapshot, &ckpt_path)?;
    // Rows after the checkpoint are redone: drop them (no duplicates, no gaps).
    let records = metrics::truncate_csv(&run.metrics_csv(), state.iteration)?;
    let csv = CsvLog::open_append(&run.metrics_csv())?;
    eprintln!("gantry: resuming {} from iteration {}", run.root().display(), state.iteration);
    let session = Session {
        gan,
        streams,
        fixed_noise: state.fixed_noise.clone(),
        records,
        csv,
        wall_before: state.wall_seconds,
        resumed_from: Some(state.iteration),
        checkpoint_ms: Vec::new(),
    };
    finish(&config, &images, run, session, options, lock)
}

/// The mutable state of a run in progress.
struct Session {
    gan: Gan,
    streams: Streams,
    fixed_noise: Vec<f32>,
    records: Vec<IterationRecord>,
    csv: CsvLog,
    /// Training-loop wall time of earlier processes (resumed runs).
    wall_before: f64,
    resumed_from: Option<usize>,
    /// How long each checkpoint of this process took to write, ms.
    checkpoint_ms: Vec<f64>,
}

/// Run the loop on the configured threads, then write the end-of-run files.
fn finish(
    config: &Config,
    images: &TrainingImages,
    run: RunDir,
    mut session: Session,
    options: &Options,
    _lock: RunLock,
) -> Result<TrainOutcome> {
    let threads = config.effective_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::config("train.threads", format!("cannot start {threads} threads: {e}")))?;
    let stopped_at = pool.install(|| training_loop(config, images, &run, &mut session, options))?;

    let records = std::mem::take(&mut session.records);
    let info = RunInfo {
        gantry_version: env!("CARGO_PKG_VERSION").to_string(),
        data_file: images.source.display().to_string(),
        image_rows: images.rows,
        image_cols: images.cols,
        threads,
        iterations_done: records.len(),
        wall_seconds: session.wall_before,
        checkpoints_written: session.checkpoint_ms.len(),
        checkpoint_ms_median: median(&mut session.checkpoint_ms),
    };
    info.write(&run)?;
    if stopped_at.is_none() {
        session.gan.save_weights(&run)?;
        metrics::write_npy_files(run.root(), &records)?;
        plot::write_curves(&run.plots_dir(), &records, config.output.smoothing_window)?;
    }
    Ok(TrainOutcome { run, records, info, stopped_at, resumed_from: session.resumed_from })
}

/// The loop itself, from the session's iteration to the configured total. Returns the iteration
/// it stopped at when a stop was requested.
fn training_loop(
    config: &Config,
    images: &TrainingImages,
    run: &RunDir,
    s: &mut Session,
    options: &Options,
) -> Result<Option<usize>> {
    let total = config.train.iterations;
    let interval = config.output.sample_interval;
    let layout = grid_layout(config, images);
    let first = s.records.len();
    let bar = progress_bar(total, options.progress);
    bar.set_position(first as u64);

    let mut last_checkpoint = Instant::now();
    let mut loop_start = Instant::now();
    for iteration in first..total {
        let record = s.gan.step(iteration, images, &mut s.streams);
        s.csv.append(&record)?;
        s.records.push(record);

        let done = iteration + 1;
        if schedule::is_flush_step(done, total, interval) {
            s.csv.flush()?;
        }
        if schedule::is_sample_step(done, total, interval) {
            grid::save_png(&run.sample_grid(done), &s.gan.generate(&s.fixed_noise), layout)?;
        }
        let stop = options.stop_requested(done);
        let cp = &config.checkpoint;
        if stop || policy::is_checkpoint_step(done, total, config.checkpoint_every(), last_checkpoint.elapsed(), cp.every_minutes) {
            s.wall_before += loop_start.elapsed().as_secs_f64();
            save_checkpoint(run, s, done, cp.keep)?;
            last_checkpoint = Instant::now();
            loop_start = Instant::now();
        }
        if stop {
            bar.finish_and_clear();
            return Ok(Some(done));
        }
        if schedule::is_display_step(done, total) {
            bar.set_message(format!(
                "D loss {:.3} acc {:.2} | G loss {:.3}",
                record.d_loss, record.acc, record.g_loss
            ));
        }
        bar.inc(1);
    }
    s.wall_before += loop_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    s.csv.flush()?;
    Ok(None)
}

/// Write the checkpoint after `done` iterations, then delete the ones beyond `keep`.
fn save_checkpoint(run: &RunDir, s: &mut Session, done: usize, keep: usize) -> Result<()> {
    let started = Instant::now();
    // The metrics rows the checkpoint counts on must be on disk before it is.
    s.csv.sync()?;
    let snapshot = s.gan.snapshot(TrainingState {
        format_version: checkpoint::FORMAT_VERSION,
        iteration: done,
        architecture_hash: s.gan.architecture_hash.clone(),
        rng_init: RngState::capture(&s.streams.init),
        rng_data: RngState::capture(&s.streams.data),
        rng_noise: RngState::capture(&s.streams.noise),
        rng_fixed: RngState::capture(&s.streams.fixed),
        fixed_noise: s.fixed_noise.clone(),
        wall_seconds: s.wall_before,
    })?;
    let dir = run.checkpoints_dir();
    checkpoint::write(&dir, &snapshot)?;
    let existing: Vec<usize> = checkpoint::list(&dir)?.into_iter().map(|(it, _)| it).collect();
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

fn write_config(run: &RunDir, config: &Config) -> Result<()> {
    let tmp = run.root().join("config.toml.tmp");
    checkpoint::write_synced(&tmp, config.to_toml().as_bytes())?;
    std::fs::rename(&tmp, run.config()).at("rename into place", run.config())
}

fn grid_layout(config: &Config, images: &TrainingImages) -> GridLayout {
    GridLayout { rows: config.output.grid_rows, cols: config.output.grid_cols, tile_h: images.rows, tile_w: images.cols }
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

/// The two networks, their optimizers and the scratch buffers of one training step.
struct Gan {
    g: Generator,
    d: Discriminator,
    opt_g: ModuleOptimizer,
    opt_d: ModuleOptimizer,
    lr_g: f64,
    lr_d: f64,
    batch: usize,
    latent: usize,
    pixels: usize,
    /// The autodiff device training runs on, and its plain counterpart for inference.
    train_device: Device,
    plain_device: Device,
    architecture_hash: String,
    indices: Vec<usize>,
    real: Vec<f32>,
    noise: Vec<f32>,
}

impl Gan {
    fn new(config: &Config, pixels: usize, streams: &mut Streams) -> Self {
        let plain_device = Device::flex();
        let train_device = plain_device.clone().autodiff();
        let g = Generator::new(&config.model, pixels, &mut streams.init, &train_device);
        let d = Discriminator::new(&config.model, pixels, &mut streams.init, &train_device);
        let t = &config.train;
        let adam = AdamConfig::new().with_beta_1(t.beta1).with_beta_2(t.beta2).with_epsilon(t.adam_epsilon);
        Self {
            g,
            d,
            opt_g: adam.init(),
            opt_d: adam.init(),
            lr_g: t.lr_g,
            lr_d: t.lr_d,
            batch: t.batch_size,
            latent: config.model.latent_dim,
            pixels,
            train_device,
            plain_device,
            architecture_hash: config.architecture_hash(),
            indices: Vec::new(),
            real: Vec::new(),
            noise: Vec::new(),
        }
    }

    /// One iteration: D on a real batch, D on a fake batch, G through a frozen D.
    fn step(&mut self, iteration: usize, images: &TrainingImages, streams: &mut Streams) -> IterationRecord {
        let (b, dev) = (self.batch, self.train_device.clone());

        // A random batch of real images: [b, pixels].
        rng::indices(&mut streams.data, b, images.count, &mut self.indices);
        images.gather_into(&self.indices, &mut self.real);
        let real = Tensor::<2>::from_data(TensorData::new(self.real.clone(), [b, self.pixels]), &dev);

        // Fakes from G in inference mode (BatchNorm's moving statistics), no graph: [b, pixels].
        rng::normal(&mut streams.noise, b * self.latent, &mut self.noise);
        let fake = Tensor::from_inner(self.g.valid().forward(self.noise_tensor(&self.plain_device)));

        // D update on the real batch (label 1), then on the fake batch (label 0).
        let (d_loss_real, acc_real, d_out_real) = self.d_update(real, true);
        let (d_loss_fake, acc_fake, d_out_fake) = self.d_update(fake, false);

        // G update on fresh noise, through D with its weights untouched (label 1).
        rng::normal(&mut streams.noise, b * self.latent, &mut self.noise);
        let z = self.noise_tensor(&dev); // [b, latent]
        let logits = self.d.clone().no_grad().forward(self.g.forward(z)); // [b, 1]
        let loss = bce_with_logits(logits, true);
        let g_loss = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), &self.g);
        self.g = self.opt_g.step(self.lr_g, self.g.clone(), grads);

        IterationRecord {
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

    /// One D update on a batch with a constant label; returns (loss, accuracy, mean output) of the
    /// forward pass before the update.
    fn d_update(&mut self, x: Tensor<2>, label_real: bool) -> (f32, f32, f32) {
        let logits = self.d.forward(x); // [b, 1]
        let values: Vec<f32> = logits.to_data().try_into_vec().expect("the model computes in f32");
        let loss = bce_with_logits(logits, label_real);
        let loss_value = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), &self.d);
        self.d = self.opt_d.step(self.lr_d, self.d.clone(), grads);

        let n = values.len() as f32;
        let correct = values.iter().filter(|&&l| (l > 0.0) == label_real).count() as f32;
        let mean_out = values.iter().map(|&l| sigmoid(l)).sum::<f32>() / n;
        (loss_value, correct / n, mean_out)
    }

    fn noise_tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(self.noise.clone(), [self.noise.len() / self.latent, self.latent]), device)
    }

    /// G in inference mode on the given noise ([n * latent] floats) -> images [n * pixels].
    fn generate(&self, noise: &[f32]) -> Vec<f32> {
        let n = noise.len() / self.latent;
        let z = Tensor::<2>::from_data(TensorData::new(noise.to_vec(), [n, self.latent]), &self.plain_device);
        self.g.valid().forward(z).into_data().try_into_vec().expect("the model computes in f32")
    }

    /// Save both networks (inference snapshots, so BatchNorm statistics are current), and the
    /// generator as safetensors for use outside gantry.
    fn save_weights(&self, run: &RunDir) -> Result<()> {
        for (path, record) in [
            (run.generator_weights(), self.g.valid().into_record()),
            (run.discriminator_weights(), self.d.valid().into_record()),
        ] {
            let bytes = record.into_bytes().map_err(|e| Error::Weights { path: path.clone(), problem: e.to_string() })?;
            checkpoint::write_synced(&path, &bytes)?;
        }
        export::save_safetensors(&self.g.valid(), &run.generator_safetensors())
    }

    /// The whole training state as a checkpoint. Weights are taken from `valid()` snapshots:
    /// reading BatchNorm's running statistics right after a step would give values one update
    /// stale, and a resume from them would drift.
    fn snapshot(&self, state: TrainingState) -> Result<Snapshot> {
        let fail = |what: &str, e: burn::store::RecordError| Error::Training {
            iteration: state.iteration,
            problem: format!("cannot serialize the {what}: {e}"),
        };
        Ok(Snapshot {
            generator: self.g.valid().into_record().into_bytes().map_err(|e| fail("generator", e))?.to_vec(),
            discriminator: self.d.valid().into_record().into_bytes().map_err(|e| fail("discriminator", e))?.to_vec(),
            optimizer_g: self.opt_g.into_bytes().map_err(|e| fail("generator's optimizer", e))?.to_vec(),
            optimizer_d: self.opt_d.into_bytes().map_err(|e| fail("discriminator's optimizer", e))?.to_vec(),
            state,
        })
    }

    /// Replace weights and optimizer states with a checkpoint's.
    fn load(mut self, snapshot: &Snapshot, path: &Path) -> Result<Self> {
        let bad = |file: &str, e: burn::store::RecordError| Error::Checkpoint {
            path: path.join(file),
            problem: format!("cannot be loaded: {e}"),
        };
        let bytes = |v: &Vec<u8>| burn::tensor::Bytes::from_bytes_vec(v.clone());
        let record = ModuleRecord::from_bytes(bytes(&snapshot.generator)).map_err(|e| bad("generator.bpk", e))?;
        // `valid()` snapshots were saved; `train()` puts the modules back on the autodiff device.
        self.g = self.g.valid().try_load_record(record).map_err(|e| bad("generator.bpk", e))?.train();
        let record = ModuleRecord::from_bytes(bytes(&snapshot.discriminator)).map_err(|e| bad("discriminator.bpk", e))?;
        self.d = self.d.valid().try_load_record(record).map_err(|e| bad("discriminator.bpk", e))?.train();
        self.opt_g = self.opt_g.from_bytes(bytes(&snapshot.optimizer_g)).map_err(|e| bad("optimizer_g.bpk", e))?;
        self.opt_d = self.opt_d.from_bytes(bytes(&snapshot.optimizer_d)).map_err(|e| bad("optimizer_d.bpk", e))?;
        Ok(self)
    }
}

/// Binary cross-entropy of logits against a constant label: `-mean(log σ(±x))`. Shape [1].
fn bce_with_logits(logits: Tensor<2>, label_real: bool) -> Tensor<1> {
    let signed = if label_real { logits } else { logits.neg() };
    log_sigmoid(signed).mean().neg()
}

fn scalar(t: &Tensor<1>) -> f32 {
    t.clone().into_scalar::<f32>()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Load a trained run's generator (on the plain CPU device) and draw `n` images from noise seeded
/// by `seed`. Returns images [n * pixels] in [-1, 1] and the image size.
pub fn sample_from_run(run: &RunDir, n: usize, seed: u64) -> Result<(Vec<f32>, usize, usize)> {
    let config = Config::from_file(&run.config())?;
    let info = RunInfo::read(run)?;
    let device = Device::flex();
    let mut init = Streams::new(0).init;
    let pixels = info.image_rows * info.image_cols;
    let path = run.generator_weights();
    if !path.is_file() {
        return Err(Error::Weights { path, problem: "missing (did the run finish?)".into() });
    }
    let g = Generator::new(&config.model, pixels, &mut init, &device)
        .try_load_file(&path)
        .map_err(|e| Error::Weights { path: path.clone(), problem: e.to_string() })?
        .valid();
    let mut streams = Streams::new(seed);
    let mut noise = Vec::new();
    rng::normal(&mut streams.fixed, n * config.model.latent_dim, &mut noise);
    let z = Tensor::<2>::from_data(TensorData::new(noise, [n, config.model.latent_dim]), &device);
    let images = g.forward(z).into_data().try_into_vec().expect("the model computes in f32");
    Ok((images, info.image_rows, info.image_cols))
}
