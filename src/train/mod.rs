//! The training loop of the classic GAN, top to bottom: data in, three updates per iteration,
//! a record per iteration out, grids and files around it. The policies (when to sample, when to
//! flush) live in [`schedule`]; the networks in [`crate::model`].

pub mod schedule;

use std::path::Path;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::data::{self, TrainingImages};
use crate::error::{Error, IoContext, Result};
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
    /// Wall time of the training loop, seconds.
    pub wall_seconds: f64,
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

/// What a finished run leaves behind, for the caller's summary.
#[derive(Debug)]
pub struct TrainOutcome {
    pub run: RunDir,
    pub records: Vec<IterationRecord>,
    pub info: RunInfo,
}

/// Train a GAN as `config` says into the run folder `out` (refused if it exists and is not empty,
/// unless `force`). `progress` shows a progress bar on the terminal.
pub fn train(config: &Config, out: &Path, force: bool, progress: bool) -> Result<TrainOutcome> {
    config.validate()?;
    // Read the data before creating anything, so a data error leaves no empty run folder.
    let images = data::load_training_images(config.data.dataset, config.data.dir.as_deref())?;
    let run = RunDir::create(out, force)?;
    std::fs::write(run.config(), config.to_toml()).at("write", run.config())?;

    let threads = config.effective_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::config("train.threads", format!("cannot start {threads} threads: {e}")))?;
    let (records, wall) = pool.install(|| training_loop(config, &images, &run, progress))?;

    let info = RunInfo {
        gantry_version: env!("CARGO_PKG_VERSION").to_string(),
        data_file: images.source.display().to_string(),
        image_rows: images.rows,
        image_cols: images.cols,
        threads,
        iterations_done: records.len(),
        wall_seconds: wall.as_secs_f64(),
    };
    info.write(&run)?;
    metrics::write_npy_files(run.root(), &records)?;
    plot::write_curves(&run.plots_dir(), &records, config.output.smoothing_window)?;
    Ok(TrainOutcome { run, records, info })
}

/// The loop itself; returns every iteration's record and the loop's wall time.
fn training_loop(
    config: &Config,
    images: &TrainingImages,
    run: &RunDir,
    progress: bool,
) -> Result<(Vec<IterationRecord>, Duration)> {
    let total = config.train.iterations;
    let interval = config.output.sample_interval;
    let mut streams = Streams::new(config.train.seed);
    let mut gan = Gan::new(config, images.dim(), &mut streams);

    // The fixed noise of every sample grid, drawn once: [rows * cols, latent].
    let layout = GridLayout {
        rows: config.output.grid_rows,
        cols: config.output.grid_cols,
        tile_h: images.rows,
        tile_w: images.cols,
    };
    let mut fixed_noise = Vec::new();
    rng::normal(&mut streams.fixed, layout.rows * layout.cols * config.model.latent_dim, &mut fixed_noise);

    let mut csv = CsvLog::create(&run.metrics_csv())?;
    let mut records = Vec::with_capacity(total);
    let bar = progress_bar(total, progress);
    grid::save_png(&run.sample_grid(0), &gan.generate(&fixed_noise), layout)?;

    let start = Instant::now();
    for iteration in 0..total {
        let record = gan.step(iteration, images, &mut streams);
        csv.append(&record)?;
        records.push(record);

        let done = iteration + 1;
        if schedule::is_flush_step(done, total, interval) {
            csv.flush()?;
        }
        if schedule::is_sample_step(done, total, interval) {
            grid::save_png(&run.sample_grid(done), &gan.generate(&fixed_noise), layout)?;
        }
        if schedule::is_display_step(done, total) {
            bar.set_message(format!(
                "D loss {:.3} acc {:.2} | G loss {:.3}",
                record.d_loss, record.acc, record.g_loss
            ));
        }
        bar.inc(1);
    }
    let wall = start.elapsed();
    bar.finish_and_clear();
    csv.flush()?;

    gan.save_weights(run)?;
    Ok((records, wall))
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

    /// Save both networks (inference snapshots, so BatchNorm statistics are current).
    fn save_weights(&self, run: &RunDir) -> Result<()> {
        for (path, record) in [
            (run.generator_weights(), self.g.valid().into_record()),
            (run.discriminator_weights(), self.d.valid().into_record()),
        ] {
            record.save(&path).map_err(|e| Error::Weights { path: path.clone(), problem: e.to_string() })?;
        }
        Ok(())
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
