//! The GAN being trained: both networks, their optimizers, one training step, and the
//! conversions to and from checkpoints.

use std::path::Path;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::{Snapshot, TrainingState};
use crate::config::Config;
use crate::data::TrainingImages;
use crate::error::{Error, Result};
use crate::export;
use crate::metrics::IterationRecord;
use crate::model::{Discriminator, Generator};
use crate::optim::FusedAdam;
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
        let adam = FusedAdam { beta_1: t.beta1, beta_2: t.beta2, epsilon: t.adam_epsilon };
        Self {
            g: Some(g),
            d: Some(d),
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
        }
    }

    fn g(&self) -> &Generator {
        self.g.as_ref().expect("G is present between steps")
    }

    fn d(&self) -> &Discriminator {
        self.d.as_ref().expect("D is present between steps")
    }

    /// One iteration: D on a real batch, D on a fake batch, G through a frozen D.
    pub(crate) fn step(
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
        let ((fake, z), (d_loss_real, acc_real, d_out_real)) = rayon::join(
            || {
                rayon::join(
                    // Fakes from G in inference mode (moving statistics), no graph: [b, pixels].
                    || Tensor::from_inner(g.valid().forward(z_fake)),
                    || draw_noise(noise_stream, &dev),
                )
            },
            || d_update(d, opt_d, *lr_d, real, true),
        );
        let (generated, (d_loss_fake, acc_fake, d_out_fake)) = rayon::join(
            || g.forward(z), // [b, pixels], with its graph, for the G update
            || d_update(d, opt_d, *lr_d, fake, false),
        );

        // G update through D with its weights untouched (label 1).
        let logits = self.d().clone().no_grad().forward(generated); // [b, 1]
        let loss = bce_with_logits(logits, true);
        let g_loss = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), self.g());
        // Move the module into the step (no clone), so that the optimizer owns the only reference
        // to each parameter and can update it without copying.
        let g = self.g.take().expect("G is present between steps");
        self.g = Some(self.opt_g.step(self.lr_g, g, grads));

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

/// One D update on a batch with a constant label; returns (loss, accuracy, mean output) of the
/// forward pass before the update.
fn d_update(
    slot: &mut Option<Discriminator>,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    x: Tensor<2>,
    label_real: bool,
) -> (f32, f32, f32) {
    let d = slot.take().expect("D is present between steps");
    let logits = d.forward(x); // [b, 1]
    let values: Vec<f32> = logits.to_data().try_into_vec().expect("the model computes in f32");
    let loss = bce_with_logits(logits, label_real);
    let loss_value = scalar(&loss);
    let grads = GradientsParams::from_grads(loss.backward(), &d);
    *slot = Some(optimizer.step(lr, d, grads));

    let n = values.len() as f32;
    let correct = values.iter().filter(|&&l| (l > 0.0) == label_real).count() as f32;
    let mean_out = values.iter().map(|&l| sigmoid(l)).sum::<f32>() / n;
    (loss_value, correct / n, mean_out)
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
