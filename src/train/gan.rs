//! The GAN being trained: both networks, their optimizers, one training step, and the
//! conversions to and from checkpoints.

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, RmsPropConfig};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor, TensorData};

use super::objective::Loss;
use crate::checkpoint::{Snapshot, TrainingState};
use crate::config::{Config, DUpdate, Kernels, OptimizerKind, TrainConfig, UpdateOrder};
use crate::data::TrainingImages;
use crate::error::{Error, Result};
use crate::export;
use crate::kernels::adam::FusedAdam;
use crate::metrics::IterationRecord;
use crate::model::{Discriminator, Generator};
use crate::rng::{self, Streams};
use crate::run_dir::RunDir;

/// The two networks, their optimizers and the scratch buffers of one training step.
pub(crate) struct Gan {
    /// The networks; `None` only while an optimizer step holds them.
    g: Option<Generator>,
    d: Option<Discriminator>,
    opt_g: ModuleOptimizer,
    opt_d: ModuleOptimizer,
    lr_g: f64,
    lr_d: f64,
    /// The recipe the step follows, and whether it is the classic one (the fused parallel step).
    recipe: TrainConfig,
    classic: bool,
    batch: usize,
    latent: usize,
    pixels: usize,
    /// The autodiff device training runs on, and its plain counterpart for inference.
    train_device: Device,
    plain_device: Device,
    pub(crate) architecture_hash: String,
    indices: Vec<usize>,
}

impl Gan {
    pub(crate) fn new(config: &Config, pixels: usize, streams: &mut Streams) -> Self {
        let plain_device = Device::flex();
        let train_device = plain_device.clone().autodiff();
        let g = Generator::new(&config.model, pixels, &mut streams.init, &train_device);
        let d = Discriminator::new(&config.model, pixels, &mut streams.init, &train_device);
        let t = &config.train;
        Self {
            g: Some(g),
            d: Some(d),
            opt_g: optimizer(t.optimizer_g(), t),
            opt_d: optimizer(t.optimizer_d(), t),
            lr_g: t.lr_g(),
            lr_d: t.lr_d(),
            recipe: t.clone(),
            classic: t.is_classic_recipe(),
            batch: t.batch_size,
            latent: config.model.latent_dim,
            pixels,
            train_device,
            plain_device,
            architecture_hash: config.architecture_hash(),
            indices: Vec::new(),
        }
    }

    fn g(&self) -> &Generator {
        self.g.as_ref().expect("G is present between steps")
    }

    fn d(&self) -> &Discriminator {
        self.d.as_ref().expect("D is present between steps")
    }

    /// One iteration of the configured recipe: Keras-GAN's classic one on the fused parallel
    /// schedule ([`Gan::fast_step`]), any other on the sequential reference step.
    pub(crate) fn step(
        &mut self,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> IterationRecord {
        if self.classic {
            self.fast_step(iteration, images, streams)
        } else {
            self.reference_step(iteration, images, streams)
        }
    }

    /// The reference step, top to bottom, for every objective and recipe option. With the
    /// classic recipe it computes what [`Gan::fast_step`] computes, in the same order, drawing the
    /// same random numbers from the same streams.
    fn reference_step(
        &mut self,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> IterationRecord {
        let (order, steps) = (self.recipe.order, self.recipe.d_steps);
        let mut g_loss = 0.0;
        if order == UpdateOrder::GFirst {
            g_loss = self.g_update(&mut streams.noise);
        }
        // D's updates; the record carries the mean of their forward passes' (loss, accuracy,
        // mean output) on the real and on the fake batches.
        let (mut on_real, mut on_fake) = ([0f32; 3], [0f32; 3]);
        for _ in 0..steps {
            let real = self.real_batch(images, &mut streams.data); // [b, pixels]
            let z = self.noise(&mut streams.noise, &self.plain_device.clone()); // [b, latent]
            let fake = Tensor::from_inner(self.g_forward(&self.g().valid(), z)); // [b, pixels], no graph
            let (r, f) = match self.recipe.d_update {
                DUpdate::Split => (self.d_update(Some(real), None).0, self.d_update(None, Some(fake)).1),
                DUpdate::Joint => self.d_update(Some(real), Some(fake)),
            };
            for (sum, v) in on_real.iter_mut().chain(&mut on_fake).zip(r.into_iter().chain(f)) {
                *sum += v;
            }
        }
        // Dividing by 1 is exact: a single D step records its own numbers.
        let mean = |sums: [f32; 3]| sums.map(|v| v / steps as f32);
        if order == UpdateOrder::DFirst {
            g_loss = self.g_update(&mut streams.noise);
        }
        IterationRecord::from_terms(iteration, mean(on_real), mean(on_fake), g_loss)
    }

    /// A random batch of real images [b, pixels] (with replacement, from the data stream).
    fn real_batch(&mut self, images: &TrainingImages, stream: &mut rand_chacha::ChaCha8Rng) -> Tensor<2> {
        let (b, pixels) = (self.batch, self.pixels);
        rng::indices(stream, b, images.count, &mut self.indices);
        let mut real = Vec::with_capacity(b * pixels);
        images.gather_into(&self.indices, &mut real);
        Tensor::<2>::from_data(TensorData::new(real, [b, pixels]), &self.train_device)
    }

    /// Noise [b, latent] from N(0, 1) on `device`.
    fn noise(&self, stream: &mut rand_chacha::ChaCha8Rng, device: &Device) -> Tensor<2> {
        let (b, latent) = (self.batch, self.latent);
        let mut z = Vec::with_capacity(b * latent);
        rng::normal(stream, b * latent, &mut z);
        Tensor::<2>::from_data(TensorData::new(z, [b, latent]), device)
    }

    fn g_forward(&self, g: &Generator, z: Tensor<2>) -> Tensor<2> {
        match self.recipe.kernels {
            Kernels::Fused => g.forward(z),
            Kernels::Reference => g.forward_reference(z),
        }
    }

    fn d_forward(&self, d: &Discriminator, x: Tensor<2>) -> Tensor<2> {
        match self.recipe.kernels {
            Kernels::Fused => d.forward(x),
            Kernels::Reference => d.forward_reference(x),
        }
    }

    /// One D update on the real batch, the fake batch, or both (their losses summed: one update);
    /// returns (loss, accuracy, mean output) of each batch from the forward pass before it.
    fn d_update(&mut self, real: Option<Tensor<2>>, fake: Option<Tensor<2>>) -> ([f32; 3], [f32; 3]) {
        let (loss, label) = (self.recipe.loss, self.recipe.real_label);
        let d = self.d.take().expect("D is present between steps");
        let mut total: Option<Tensor<1>> = None;
        let mut stats = ([0f32; 3], [0f32; 3]);
        for (x, is_real) in [(real, true), (fake, false)] {
            let Some(x) = x else { continue };
            let scores = self.d_forward(&d, x); // [b, 1]
            let values: Vec<f32> = scores.to_data().try_into_vec().expect("the model computes in f32");
            let term = if is_real { loss.d_real(scores, label) } else { loss.d_fake(scores) };
            let (acc, out) = loss.batch_stats(&values, is_real, label);
            let v = [scalar(&term), acc, out];
            if is_real {
                stats.0 = v
            } else {
                stats.1 = v
            }
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        let total = total.expect("a D update has at least one batch");
        let grads = GradientsParams::from_grads(total.backward(), &d);
        let mut d = self.opt_d.step(self.lr_d, d, grads);
        if loss == Loss::Wgan {
            d = d.clipped(self.recipe.clip);
        }
        self.d = Some(d);
        stats
    }

    /// One G update on fresh noise through D with its weights untouched; returns G's loss.
    fn g_update(&mut self, stream: &mut rand_chacha::ChaCha8Rng) -> f32 {
        let z = self.noise(stream, &self.train_device.clone()); // [b, latent]
        let generated = self.g_forward(self.g(), z); // [b, pixels], with its graph
        let scores = self.d_forward(&self.d().clone().no_grad(), generated); // [b, 1]
        let loss = self.recipe.loss.g(scores);
        let value = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), self.g());
        let g = self.g.take().expect("G is present between steps");
        self.g = Some(self.opt_g.step(self.lr_g, g, grads));
        value
    }

    /// The fast path of the classic recipe: D on a real batch, D on a fake batch, G through a
    /// frozen D, with independent passes side by side on the rayon pool. Tested to give the same
    /// records as [`Gan::reference_step`] (`tests/recipes.rs`).
    fn fast_step(
        &mut self,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> IterationRecord {
        let (b, latent, pixels) = (self.batch, self.latent, self.pixels);
        let (dev, plain_dev) = (self.train_device.clone(), self.plain_device.clone());
        let Streams { data: data_stream, noise: noise_stream, .. } = streams;
        // [b, latent] from N(0, 1).
        let draw_noise = |stream: &mut rand_chacha::ChaCha8Rng, device: &Device| {
            let mut z = Vec::with_capacity(b * latent);
            rng::normal(stream, b * latent, &mut z);
            Tensor::<2>::from_data(TensorData::new(z, [b, latent]), device)
        };

        // A random batch of real images [b, pixels], and noise for the fakes D sees: each from its
        // own stream, so side by side.
        let indices = &mut self.indices;
        let (real, z_fake) = rayon::join(
            || {
                rng::indices(data_stream, b, images.count, indices);
                let mut real = Vec::with_capacity(b * pixels);
                images.gather_into(indices, &mut real);
                Tensor::<2>::from_data(TensorData::new(real, [b, pixels]), &dev)
            },
            || draw_noise(noise_stream, &plain_dev),
        );

        // D update on the real batch (label 1), then on the fake batch (label 0). The G passes
        // need only G, which the D updates leave alone, so each runs beside one of them: on a
        // batch of 32 the products are too small to split well across two cores, whole passes
        // side by side are not. (Order within G is kept: the fakes read BatchNorm's moving
        // statistics before the training pass updates them.) The G update's fresh noise is drawn
        // beside the fakes, after theirs in the same stream.
        let Self { g, d, opt_d, lr_d, .. } = self;
        let g = g.as_ref().expect("G is present between steps");
        let ((fake, z), on_real) = rayon::join(
            || {
                rayon::join(
                    // Fakes from G in inference mode (moving statistics), no graph: [b, pixels].
                    || Tensor::from_inner(g.valid().forward(z_fake)),
                    || draw_noise(noise_stream, &dev),
                )
            },
            || d_update(d, opt_d, *lr_d, real, true),
        );
        let (generated, on_fake) = rayon::join(
            || g.forward(z), // [b, pixels], with its graph, for the G update
            || d_update(d, opt_d, *lr_d, fake, false),
        );

        // G update through D with its weights untouched (label 1).
        let logits = self.d().clone().no_grad().forward(generated); // [b, 1]
        let loss = Loss::Ns.g(logits);
        let g_loss = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), self.g());
        // Move the module into the step (no clone), so that the optimizer owns the only reference
        // to each parameter and can update it without copying.
        let g = self.g.take().expect("G is present between steps");
        self.g = Some(self.opt_g.step(self.lr_g, g, grads));

        IterationRecord::from_terms(iteration, on_real, on_fake, g_loss)
    }

    /// Width of G's noise input.
    pub(crate) fn latent_dim(&self) -> usize {
        self.latent
    }

    /// G in inference mode on the given noise ([n * latent] floats) -> images [n * pixels].
    pub(crate) fn generate(&self, noise: &[f32]) -> Vec<f32> {
        let n = noise.len() / self.latent;
        let z = Tensor::<2>::from_data(TensorData::new(noise.to_vec(), [n, self.latent]), &self.plain_device);
        self.g().valid().forward(z).into_data().try_into_vec().expect("the model computes in f32")
    }

    /// Save both networks (inference snapshots, so BatchNorm statistics are current), and the
    /// generator as safetensors for use outside gantry.
    pub(crate) fn save_weights(&self, run: &RunDir) -> Result<()> {
        for (path, record) in [
            (run.generator_weights(), self.g().valid().into_record()),
            (run.discriminator_weights(), self.d().valid().into_record()),
        ] {
            let bytes = record
                .into_bytes()
                .map_err(|e| Error::Serialize { what: path.display().to_string(), problem: e.to_string() })?;
            crate::durable::write_synced(&path, &bytes)?;
        }
        export::save_safetensors(&self.g().valid(), &run.generator_safetensors())
    }

    /// The whole training state as a checkpoint. Weights are taken from `valid()` snapshots:
    /// reading BatchNorm's running statistics right after a step would give values one update
    /// stale, and a resume from them would drift.
    pub(crate) fn snapshot(&self, state: TrainingState) -> Result<Snapshot> {
        let fail = |what: &str, e: burn::store::RecordError| Error::Training {
            iteration: state.iteration,
            problem: format!("cannot serialize the {what}: {e}"),
        };
        Ok(Snapshot {
            generator: self
                .g()
                .valid()
                .into_record()
                .into_bytes()
                .map_err(|e| fail("generator", e))?
                .to_vec(),
            discriminator: self
                .d
                .valid()
                .into_record()
                .into_bytes()
                .map_err(|e| fail("discriminator", e))?
                .to_vec(),
            optimizer_g: self.opt_g.into_bytes().map_err(|e| fail("generator's optimizer", e))?.to_vec(),
            optimizer_d: self.opt_d.into_bytes().map_err(|e| fail("discriminator's optimizer", e))?.to_vec(),
            state,
        })
    }

    /// Replace weights and optimizer states with a checkpoint's.
    pub(crate) fn load(mut self, snapshot: &Snapshot, path: &Path) -> Result<Self> {
        let bad = |file: &str, e: burn::store::RecordError| Error::Checkpoint {
            path: path.join(file),
            problem: format!("cannot be loaded: {e}"),
        };
        let bytes = |v: &Vec<u8>| burn::tensor::Bytes::from_bytes_vec(v.clone());
        let record =
            ModuleRecord::from_bytes(bytes(&snapshot.generator)).map_err(|e| bad("generator.bpk", e))?;
        // `valid()` snapshots were saved; `train()` puts the modules back on the autodiff device.
        self.g = Some(self.g().valid().try_load_record(record).map_err(|e| bad("generator.bpk", e))?.train());
        let record = ModuleRecord::from_bytes(bytes(&snapshot.discriminator))
            .map_err(|e| bad("discriminator.bpk", e))?;
        self.d =
            Some(self.d().valid().try_load_record(record).map_err(|e| bad("discriminator.bpk", e))?.train());
        self.opt_g =
            self.opt_g.from_bytes(bytes(&snapshot.optimizer_g)).map_err(|e| bad("optimizer_g.bpk", e))?;
        self.opt_d =
            self.opt_d.from_bytes(bytes(&snapshot.optimizer_d)).map_err(|e| bad("optimizer_d.bpk", e))?;
        Ok(self)
    }
}

/// The optimizer `kind` with `t`'s hyper-parameters. Adam is gantry's fused op on the fused
/// kernels (bit-identical to burn's) and burn's own `Adam` on the reference kernels; RMSprop is
/// burn's (without momentum, as in the WGAN paper).
fn optimizer(kind: OptimizerKind, t: &TrainConfig) -> ModuleOptimizer {
    match (kind, t.kernels) {
        (OptimizerKind::Adam, Kernels::Fused) => {
            FusedAdam { beta_1: t.beta1, beta_2: t.beta2, epsilon: t.adam_epsilon }.init()
        }
        (OptimizerKind::Adam, Kernels::Reference) => {
            AdamConfig::new().with_beta_1(t.beta1).with_beta_2(t.beta2).with_epsilon(t.adam_epsilon).init()
        }
        (OptimizerKind::Rmsprop, _) => RmsPropConfig::new()
            .with_alpha(t.rmsprop_alpha)
            .with_momentum(0.0)
            .with_epsilon(t.rmsprop_epsilon)
            .init(),
    }
}

/// The fast path's D update on one batch, real or fake, under the classic objective (`ns`, real
/// label 1); returns (loss, accuracy, mean output) of the forward pass before the update.
fn d_update(
    slot: &mut Option<Discriminator>,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    x: Tensor<2>,
    real: bool,
) -> [f32; 3] {
    let d = slot.take().expect("D is present between steps");
    let logits = d.forward(x); // [b, 1]
    let values: Vec<f32> = logits.to_data().try_into_vec().expect("the model computes in f32");
    let loss = if real { Loss::Ns.d_real(logits, 1.0) } else { Loss::Ns.d_fake(logits) };
    let loss_value = scalar(&loss);
    let grads = GradientsParams::from_grads(loss.backward(), &d);
    *slot = Some(optimizer.step(lr, d, grads));
    let (accuracy, mean_out) = Loss::Ns.batch_stats(&values, real, 1.0);
    [loss_value, accuracy, mean_out]
}

fn scalar(t: &Tensor<1>) -> f32 {
    t.clone().into_scalar::<f32>()
}
