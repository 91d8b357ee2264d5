//! The GAN being trained: the networks (values passed through each step), what trains them (the
//! optimizers, the recipe, spectral norm's vectors, G's moving average), one training step, and
//! the conversions to and from checkpoints.

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, RmsPropConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::augment;
use crate::checkpoint::{self, Snapshot, TrainingState};
use crate::conditions::Conditions;
use crate::config::{Config, DUpdate, Kernels, ModelKind, OptimizerKind, TrainConfig, UpdateOrder};
use crate::data::TrainingImages;
use crate::error::{Error, Result};
use crate::kernels::adam::FusedAdam;
use crate::metrics::IterationRecord;
use crate::model::{Discriminator, Generator, SpectralState};
use crate::objective::{Loss, Side};
use crate::rng::{self, Streams};
use crate::run_dir::RunDir;

/// The two networks, passed by value through every step (as burn's examples pass a model through
/// its optimizer).
pub(crate) struct Networks {
    pub(crate) g: Generator,
    pub(crate) d: Discriminator,
}

/// One pass of D over a batch, as the step leaves it on the device: the batch's loss term [1]
/// and D's scores [b, 1], without their graphs.
pub(crate) struct PassTerms {
    side: Side,
    loss: Tensor<1>,
    scores: Tensor<2>,
}

impl PassTerms {
    fn new(side: Side, loss: &Tensor<1>, scores: &Tensor<2>) -> Self {
        Self { side, loss: loss.clone().inner(), scores: scores.clone().inner() }
    }
}

/// An iteration's record as a step returns it. The fast path reads its numbers as it goes
/// (`Read`); the reference step leaves them on the training device (`OnDevice`), so that a GPU
/// never waits for the host within an iteration: [`Gan::read_records`] reads the records of many
/// iterations in one transfer (the training loop, once per flush interval).
// A read record is the smaller variant, and the one a GPU run keeps few of: not worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum StepRecord {
    Read(IterationRecord),
    OnDevice {
        iteration: usize,
        /// D's passes in order: each D step's real batch, then its fake batch.
        passes: Vec<PassTerms>,
        /// G's loss [1].
        g_loss: Tensor<1>,
    },
}

/// What trains the networks: their optimizers, the recipe, the stabilizers' state (spectral
/// norm's vectors, G's moving average) and the scratch buffers of one step.
pub(crate) struct Gan {
    opt_g: ModuleOptimizer,
    opt_d: ModuleOptimizer,
    lr_g: f64,
    lr_d: f64,
    /// The recipe the step follows, and whether it is the classic one (the fused parallel step).
    recipe: TrainConfig,
    classic: bool,
    batch: usize,
    latent: usize,
    /// The ids G and D are conditioned on (their one-hot's width, `classes`: 0 when
    /// unconditional), and how G's are drawn.
    conditions: Conditions,
    classes: usize,
    /// Images are [channels, rows, cols] (`shape`: rows and cols, which augmentation reads),
    /// flattened to `pixels` values.
    shape: (usize, usize),
    pixels: usize,
    /// Spectral norm's power-iteration vectors, one pair per D layer, when D has it.
    spectral: Option<Vec<SpectralState>>,
    /// The moving average of G (on the plain device), when the run keeps one.
    ema: Option<Generator>,
    /// D's dropout, when a dcgan has it: the rate and the [channels, side, side] its masks cover
    /// after each convolution.
    dropout: Option<(f32, Vec<[usize; 3]>)>,
    /// The autodiff device training runs on, and its plain counterpart for inference.
    train_device: Device,
    plain_device: Device,
    pub(crate) architecture_hash: String,
    indices: Vec<usize>,
}

impl Gan {
    /// The trainer and freshly initialised networks for `rows x cols` images of `channels`, on
    /// `device` (without autodiff; see [`crate::device`]). G's and D's weights, then spectral
    /// norm's starting vectors, come from the init stream.
    pub(crate) fn new(
        config: &Config,
        (rows, cols, channels): (usize, usize, usize),
        streams: &mut Streams,
        device: &Device,
    ) -> (Self, Networks) {
        let pixels = rows * cols * channels;
        let plain_device = device.clone();
        let train_device = plain_device.clone().autodiff();
        let g = Generator::new(&config.model, pixels, &mut streams.init, &train_device);
        let d = Discriminator::new(&config.model, pixels, &mut streams.init, &train_device);
        let t = &config.train;
        let spectral = config.model.d_spectral_norm.then(|| d.spectral_start(&mut streams.init));
        let ema = (t.g_ema > 0.0).then(|| g.valid());
        let gan = Self {
            opt_g: optimizer(t.optimizer_g(), t),
            opt_d: optimizer(t.optimizer_d(), t),
            lr_g: t.lr_g(),
            lr_d: t.lr_d(),
            recipe: t.clone(),
            // The fused parallel schedule is the CPU's (Flex); any other device takes the
            // reference step.
            classic: t.is_classic_recipe()
                && crate::device::is_flex(device)
                && spectral.is_none()
                && config.model.kind == ModelKind::Mlp
                && !config.model.is_conditional(),
            batch: t.batch_size,
            latent: config.model.latent_dim,
            conditions: Conditions::of(config),
            classes: crate::model::conditioning::ids(&config.model),
            shape: (rows, cols),
            pixels,
            spectral,
            ema,
            dropout: (config.model.kind == ModelKind::Dcgan && config.model.d_dropout > 0.0).then(|| {
                (config.model.d_dropout as f32, crate::model::dcgan::dropout_shapes(&config.model, pixels))
            }),
            train_device,
            plain_device,
            architecture_hash: config.architecture_hash(),
            indices: Vec::new(),
        };
        (gan, Networks { g, d })
    }

    /// One iteration of the configured recipe: Keras-GAN's classic one on the fused parallel
    /// schedule ([`Gan::fast_step`]), any other on the sequential reference step; then, when the
    /// run keeps one, the moving average of G takes a step toward the new G.
    pub(crate) fn step(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        let (nets, record) = if self.classic {
            self.fast_step(nets, iteration, images, streams)
        } else {
            self.reference_step(nets, iteration, images, streams)
        };
        if let Some(ema) = self.ema.take() {
            self.ema = Some(ema.averaged_with(&nets.g.valid(), ema_decay(self.recipe.g_ema, iteration)));
        }
        (nets, record)
    }

    /// The records of `steps`, in order, read from the device in one transfer. D's numbers of
    /// each iteration are the means over its D steps of each pass's (loss, accuracy, mean output)
    /// ([`Loss::batch_stats`] of its scores), as the record defines them.
    pub(crate) fn read_records(&self, steps: Vec<StepRecord>) -> Vec<IterationRecord> {
        // Every number still on the device, flattened and joined, so that it is one read.
        let mut parts = Vec::new();
        for step in &steps {
            if let StepRecord::OnDevice { passes, g_loss, .. } = step {
                for pass in passes {
                    parts.push(pass.loss.clone());
                    parts.push(pass.scores.clone().reshape([pass.scores.dims()[0]]));
                }
                parts.push(g_loss.clone());
            }
        }
        let values: Vec<f32> = if parts.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(parts, 0).into_data().try_into_vec().expect("the model computes in f32")
        };
        let (loss, label) = (self.recipe.loss, self.recipe.real_label);
        let mut rest = values.as_slice();
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        };
        steps
            .into_iter()
            .map(|step| match step {
                StepRecord::Read(record) => record,
                StepRecord::OnDevice { iteration, passes, .. } => {
                    let (mut on_real, mut on_fake) = ([0f32; 3], [0f32; 3]);
                    for pass in &passes {
                        let term = take(1)[0];
                        let (acc, out) = loss.batch_stats(take(pass.scores.dims()[0]), pass.side, label);
                        let sums = if pass.side == Side::Real { &mut on_real } else { &mut on_fake };
                        for (sum, v) in sums.iter_mut().zip([term, acc, out]) {
                            *sum += v;
                        }
                    }
                    let g_loss = take(1)[0];
                    // Dividing by 1 is exact: a single D step records its own numbers.
                    let steps = (passes.len() / 2) as f32;
                    let mean = |sums: [f32; 3]| sums.map(|v| v / steps);
                    IterationRecord::from_terms(iteration, mean(on_real), mean(on_fake), g_loss)
                }
            })
            .collect()
    }

    /// The reference step, top to bottom, for every objective and recipe option. With the
    /// classic recipe it computes what [`Gan::fast_step`] computes, in the same order, drawing the
    /// same random numbers from the same streams.
    fn reference_step(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        if self.recipe.order == UpdateOrder::Simultaneous {
            return self.simultaneous_step(nets, iteration, images, streams);
        }
        let Networks { mut g, mut d } = nets;
        let (order, steps) = (self.recipe.order, self.recipe.d_steps);
        let mut g_loss = None;
        if order == UpdateOrder::GFirst {
            let loss;
            (g, loss) = self.g_update(g, &d, streams);
            g_loss = Some(loss);
        }
        // D's updates; the record carries the mean of their forward passes' (loss, accuracy,
        // mean output) on the real and on the fake batches.
        let mut passes = Vec::with_capacity(2 * steps);
        for _ in 0..steps {
            let real = self.real_batch(images, &mut streams.data); // [b, pixels], labels
            let (z, y) = self.noise(streams, &self.plain_device.clone()); // [b, latent (+ classes)]
            let fake = Batch { x: Tensor::from_inner(self.g_forward(&g.valid(), z)), y }; // no graph
            let terms;
            (d, terms) = self.d_step(d, real, fake, None, streams);
            passes.extend(terms);
        }
        if order == UpdateOrder::DFirst {
            let loss;
            (g, loss) = self.g_update(g, &d, streams);
            g_loss = Some(loss);
        }
        let g_loss = g_loss.expect("the order puts G's update before or after D's");
        (Networks { g, d }, StepRecord::OnDevice { iteration, passes, g_loss })
    }

    /// TensorFlow's DCGAN tutorial step (`train.order = "simultaneous"`): one batch of noise
    /// through G in training mode; D on the real batch and on those fakes; G's loss from D's
    /// scores of the fakes and D's from both batches, every gradient taken at the same weights;
    /// then both updates. burn's autodiff has no `retain_graph`, so D's forward pass on the fakes
    /// is computed twice, once for each gradient, with the same weights and the same dropout
    /// masks: the same values as one pass.
    fn simultaneous_step(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        let Networks { g, d } = nets;
        let real = self.real_batch(images, &mut streams.data); // [b, pixels], labels
        let (z, y) = self.noise(streams, &self.train_device.clone()); // [b, latent (+ classes)]
        let generated = Batch { x: self.g_forward(&g, z), y }; // [b, pixels], training mode, with its graph
        let fake = Batch { x: generated.x.clone().detach(), y: generated.y.clone() };
        let masks = self.dropout_masks(&mut streams.dropout);

        // G's gradient through D at its current weights (D's own gradient is not taken here).
        let asked = generated.y.clone();
        let (scores, classes) = self.d_forward(&d.clone().no_grad(), generated, &mut streams.augment, &masks);
        let loss = self.recipe.loss.g(scores);
        let g_loss = loss.clone().inner();
        let loss = with_class_term(loss, classes, asked.as_ref(), self.recipe.aux_weight);
        let g_grads = GradientsParams::from_grads(loss.backward(), &g);

        // D's update on the real batch and the same fakes (one update on the summed losses, as
        // the tutorial, with `d_update = "joint"`), then G's.
        let (d, passes) = self.d_step(d, real, fake, Some(masks), streams);
        let g = self.opt_g.step(self.lr_g, g, g_grads);
        (Networks { g, d }, StepRecord::OnDevice { iteration, passes, g_loss })
    }

    /// Dropout masks for one pass of D over a batch: per convolution [b, c, s, s] of 0 (dropped,
    /// with probability `model.d_dropout`) and 1 / (1 - rate), from the dropout stream. None
    /// (an empty list) without dropout.
    fn dropout_masks(&self, stream: &mut rand_chacha::ChaCha8Rng) -> Vec<Tensor<4>> {
        use rand::RngExt;
        let Some((rate, shapes)) = &self.dropout else {
            return Vec::new();
        };
        let (rate, b) = (*rate, self.batch);
        let keep = 1.0 / (1.0 - rate);
        shapes
            .iter()
            .map(|&[c, h, w]| {
                let values: Vec<f32> = (0..b * c * h * w)
                    .map(|_| if stream.random::<f32>() < rate { 0.0 } else { keep })
                    .collect();
                Tensor::<4>::from_data(TensorData::new(values, [b, c, h, w]), &self.train_device)
            })
            .collect()
    }

    /// A random batch of real images [b, pixels] (with replacement, from the data stream), with
    /// their one-hot labels in a conditional run.
    fn real_batch(&mut self, images: &TrainingImages, stream: &mut rand_chacha::ChaCha8Rng) -> Batch {
        let (b, pixels) = (self.batch, self.pixels);
        rng::indices(stream, b, images.count, &mut self.indices);
        let mut real = Vec::with_capacity(b * pixels);
        images.gather_into(&self.indices, &mut real);
        let x = Tensor::<2>::from_data(TensorData::new(real, [b, pixels]), &self.train_device);
        // Loaded only for a conditional run.
        let y = images.labels.as_ref().map(|labels| {
            let batch: Vec<u8> = self.indices.iter().map(|&i| labels[i]).collect();
            self.one_hot(&batch)
        });
        Batch { x, y }
    }

    /// G's input for one batch on `device`: noise [b, latent] from N(0, 1) (the noise stream);
    /// in a conditional run with one-hot classes drawn from the label stream joined to it
    /// ([b, latent + classes]), and those labels for D ([b, classes], on the training device).
    fn noise(&self, streams: &mut Streams, device: &Device) -> (Tensor<2>, Option<Tensor<2>>) {
        let (b, latent) = (self.batch, self.latent);
        let mut z = Vec::with_capacity(b * latent);
        rng::normal(&mut streams.noise, b * latent, &mut z);
        if self.classes == 0 {
            return (crate::model::g_input(&z, latent, &[], 0, device), None);
        }
        let mut labels = Vec::with_capacity(b);
        self.conditions.draw(&mut streams.labels, b, &mut labels);
        let input = crate::model::g_input(&z, latent, &labels, self.classes, device);
        (input, Some(self.one_hot(&labels)))
    }

    /// Draw G's ids in proportion to `sizes` (a clustered run's clusters) instead of uniformly.
    pub(crate) fn draw_classes_as(&mut self, sizes: &[usize]) {
        self.conditions = self.conditions.clone().with_sizes(Some(sizes.to_vec()));
    }

    /// One-hot rows [labels.len(), classes] on the training device.
    fn one_hot(&self, labels: &[u8]) -> Tensor<2> {
        let rows = crate::model::one_hot(labels, self.classes);
        Tensor::<2>::from_data(TensorData::new(rows, [labels.len(), self.classes]), &self.train_device)
    }

    fn g_forward(&self, g: &Generator, z: Tensor<2>) -> Tensor<2> {
        match self.recipe.kernels {
            Kernels::Fused => g.forward(z),
            Kernels::Reference => g.forward_reference(z),
        }
    }

    /// D's scores [b, 1] of a batch [b, pixels] (and its labels, in a conditional run) as D
    /// sees it: augmented when the recipe asks (drawing from the augmentation stream), through
    /// spectrally normalized layers when D has them; and an acgan D's class logits [b, classes].
    fn d_forward(
        &self,
        d: &Discriminator,
        batch: Batch,
        augment: &mut rand_chacha::ChaCha8Rng,
        dropout: &[Tensor<4>],
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let x = augment::apply(batch.x, &self.recipe.augment, self.shape, augment);
        d.score_and_classes(x, batch.y.as_ref(), Some(dropout), self.recipe.kernels, self.spectral.as_deref())
    }

    /// One D step on a real and a fake batch: one update on their summed losses
    /// (`d_update = "joint"`) or one on each, real first (`"split"`); returns D and both batches'
    /// terms, real first. The fake batch's dropout masks are `fake_masks` when given.
    fn d_step(
        &mut self,
        d: Discriminator,
        real: Batch,
        fake: Batch,
        fake_masks: Option<Vec<Tensor<4>>>,
        streams: &mut Streams,
    ) -> (Discriminator, Vec<PassTerms>) {
        match self.recipe.d_update {
            DUpdate::Joint => self.d_update(d, Some(real), Some(fake), fake_masks, streams),
            DUpdate::Split => {
                let (d, mut passes) = self.d_update(d, Some(real), None, None, streams);
                let (d, on_fake) = self.d_update(d, None, Some(fake), fake_masks, streams);
                passes.extend(on_fake);
                (d, passes)
            }
        }
    }

    /// One D update on the real batch, the fake batch, or both (their losses summed: one update);
    /// returns D and each batch's loss and scores from the forward pass before it, real first. With spectral norm, one power iteration on D's weights comes first. Each pass draws its
    /// dropout masks, but the fake batch's when they are given (`fake_masks`).
    fn d_update(
        &mut self,
        d: Discriminator,
        real: Option<Batch>,
        fake: Option<Batch>,
        mut fake_masks: Option<Vec<Tensor<4>>>,
        streams: &mut Streams,
    ) -> (Discriminator, Vec<PassTerms>) {
        let (loss, label) = (self.recipe.loss, self.recipe.real_label);
        if let Some(vectors) = &mut self.spectral {
            d.power_iteration(vectors);
        }
        let mut total: Option<Tensor<1>> = None;
        let mut passes = Vec::with_capacity(2);
        for (x, side) in [(real, Side::Real), (fake, Side::Fake)] {
            let Some(x) = x else { continue };
            let is_real = side == Side::Real;
            let given = if is_real { None } else { fake_masks.take() };
            let masks = given.unwrap_or_else(|| self.dropout_masks(&mut streams.dropout));
            let asked = x.y.clone();
            let (scores, classes) = self.d_forward(&d, x, &mut streams.augment, &masks); // [b, 1]
            let term = if is_real { loss.d_real(scores.clone(), label) } else { loss.d_fake(scores.clone()) };
            passes.push(PassTerms::new(side, &term, &scores));
            let term = with_class_term(term, classes, asked.as_ref(), self.recipe.aux_weight);
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
        (d, passes)
    }

    /// One G update on fresh noise through D with its weights untouched; returns G and its loss
    /// [1] (on the device).
    fn g_update(&mut self, g: Generator, d: &Discriminator, streams: &mut Streams) -> (Generator, Tensor<1>) {
        let (z, y) = self.noise(streams, &self.train_device.clone()); // [b, latent (+ classes)]
        let generated = Batch { x: self.g_forward(&g, z), y }; // [b, pixels], with its graph
        let masks = self.dropout_masks(&mut streams.dropout);
        let asked = generated.y.clone();
        let (scores, classes) = self.d_forward(&d.clone().no_grad(), generated, &mut streams.augment, &masks); // [b, 1]
        let loss = self.recipe.loss.g(scores);
        let value = loss.clone().inner();
        let loss = with_class_term(loss, classes, asked.as_ref(), self.recipe.aux_weight);
        let grads = GradientsParams::from_grads(loss.backward(), &g);
        (self.opt_g.step(self.lr_g, g, grads), value)
    }

    /// The fast path of the classic recipe: D on a real batch, D on a fake batch, G through a
    /// frozen D, with independent passes side by side on the rayon pool. Tested to give the same
    /// records as [`Gan::reference_step`] (`tests/recipes.rs`).
    fn fast_step(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        let (b, latent, pixels) = (self.batch, self.latent, self.pixels);
        let (dev, plain_dev) = (self.train_device.clone(), self.plain_device.clone());
        let Streams { data: data_stream, noise: noise_stream, .. } = streams;
        let Networks { g, d } = nets;
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
        let Self { opt_d, lr_d, .. } = self;
        let ((fake, z), (d, on_real)) = rayon::join(
            || {
                rayon::join(
                    // Fakes from G in inference mode (moving statistics), no graph: [b, pixels].
                    || Tensor::from_inner(g.valid().forward(z_fake)),
                    || draw_noise(noise_stream, &dev),
                )
            },
            || d_update(d, opt_d, *lr_d, real, true),
        );
        let (generated, (d, on_fake)) = rayon::join(
            || g.forward(z), // [b, pixels], with its graph, for the G update
            || d_update(d, opt_d, *lr_d, fake, false),
        );

        // G update through D with its weights untouched (label 1).
        let logits = d.clone().no_grad().forward(generated); // [b, 1]
        let loss = Loss::Ns.g(logits);
        let g_loss = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), &g);
        // The module moves into the step (no clone), so that the optimizer owns the only reference
        // to each parameter and can update it without copying.
        let g = self.opt_g.step(self.lr_g, g, grads);

        (
            Networks { g, d },
            StepRecord::Read(IterationRecord::from_terms(iteration, on_real, on_fake, g_loss)),
        )
    }

    /// Width of G's noise input.
    pub(crate) fn latent_dim(&self) -> usize {
        self.latent
    }

    /// The generator that samples: the moving average when the run keeps one, else G itself,
    /// in inference mode.
    fn sampler(&self, nets: &Networks) -> Generator {
        match &self.ema {
            Some(ema) => ema.clone(),
            None => nets.g.valid(),
        }
    }

    /// The sampling generator on the given noise ([n * latent] floats) and, in a conditional
    /// run, classes (n of them) -> images [n * pixels].
    pub(crate) fn generate(&self, nets: &Networks, noise: &[f32], labels: &[u8]) -> Vec<f32> {
        let z = crate::model::g_input(noise, self.latent, labels, self.classes, &self.plain_device);
        self.sampler(nets).forward(z).into_data().try_into_vec().expect("the model computes in f32")
    }

    /// Save the sampling generator (the moving average when the run keeps one) and D (inference
    /// snapshots, so BatchNorm statistics are current), and that generator as safetensors for use
    /// outside gantry.
    pub(crate) fn save_weights(&self, nets: &Networks, run: &RunDir) -> Result<()> {
        let sampler = self.sampler(nets);
        for (path, bytes) in [
            (run.generator_weights(), sampler.clone().record_bytes()),
            (run.discriminator_weights(), nets.d.valid().record_bytes()),
        ] {
            let bytes = bytes
                .map_err(|e| Error::Serialize { what: path.display().to_string(), problem: e.to_string() })?;
            crate::durable::write_synced(&path, &bytes)?;
        }
        crate::durable::write_synced(&run.generator_safetensors(), &sampler.safetensors())
    }

    /// The whole training state as a checkpoint: `state` with spectral norm's vectors added, and
    /// the records. Weights are taken from `valid()` snapshots: reading BatchNorm's running
    /// statistics right after a step would give values one update stale, and a resume from them
    /// would drift.
    pub(crate) fn snapshot(&self, nets: &Networks, mut state: TrainingState) -> Result<Snapshot> {
        let iteration = state.iteration;
        state.spectral_norm =
            self.spectral.as_ref().map(|s| s.iter().map(SpectralState::to_vectors).collect());
        let fail = |what: &str, e: burn::store::RecordError| Error::Training {
            iteration,
            problem: format!("cannot serialize the {what}: {e}"),
        };
        let generator_ema = match &self.ema {
            Some(ema) => {
                Some(ema.clone().record_bytes().map_err(|e| fail("moving average of the generator", e))?)
            }
            None => None,
        };
        Ok(Snapshot {
            generator: nets.g.valid().record_bytes().map_err(|e| fail("generator", e))?,
            discriminator: nets.d.valid().record_bytes().map_err(|e| fail("discriminator", e))?,
            optimizer_g: self.opt_g.into_bytes().map_err(|e| fail("generator's optimizer", e))?.to_vec(),
            optimizer_d: self.opt_d.into_bytes().map_err(|e| fail("discriminator's optimizer", e))?.to_vec(),
            generator_ema,
            state,
        })
    }

    /// Replace the networks' weights, the optimizer states, the moving average and spectral
    /// norm's vectors with a checkpoint's; each checked against what this recipe keeps.
    pub(crate) fn load(
        mut self,
        nets: Networks,
        snapshot: &Snapshot,
        path: &Path,
    ) -> Result<(Self, Networks)> {
        let bad = |file: &str, problem: String| Error::Checkpoint { path: path.join(file), problem };
        let loaded = |file: &str, e: burn::store::RecordError| bad(file, format!("cannot be loaded: {e}"));
        let bytes = |v: &Vec<u8>| burn::tensor::Bytes::from_bytes_vec(v.clone());
        let generator = |g: Generator, file: &str, data: &Vec<u8>| -> Result<Generator> {
            g.with_record(data.clone()).map_err(|e| loaded(file, e))
        };
        // `valid()` snapshots were saved; `train()` puts the modules back on the autodiff device.
        let g = generator(nets.g.valid(), checkpoint::GENERATOR_FILE, &snapshot.generator)?.train();
        let d = nets
            .d
            .valid()
            .with_record(snapshot.discriminator.clone())
            .map_err(|e| loaded(checkpoint::DISCRIMINATOR_FILE, e))?;
        let d = d.train();
        self.opt_g = self
            .opt_g
            .from_bytes(bytes(&snapshot.optimizer_g))
            .map_err(|e| loaded(checkpoint::OPTIMIZER_G_FILE, e))?;
        self.opt_d = self
            .opt_d
            .from_bytes(bytes(&snapshot.optimizer_d))
            .map_err(|e| loaded(checkpoint::OPTIMIZER_D_FILE, e))?;
        let ema_file = checkpoint::EMA_FILE;
        self.ema = match (self.ema.take(), &snapshot.generator_ema) {
            (Some(ema), Some(data)) => Some(generator(ema, ema_file, data)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(ema_file, "is missing: this run keeps a moving average of G".into()));
            }
            (None, Some(_)) => {
                return Err(bad(ema_file, "is there, but this run keeps no moving average".into()));
            }
        };
        self.spectral = match (self.spectral.take(), &snapshot.state.spectral_norm) {
            (None, None) => None,
            (Some(_), Some(saved)) => {
                let shapes = d.layer_shapes();
                let fits = saved.len() == shapes.len()
                    && saved.iter().zip(&shapes).all(|(sv, &(i, o))| sv.v.len() == i && sv.u.len() == o);
                if !fits {
                    return Err(bad(
                        "state.json",
                        format!("spectral norm's vectors do not fit D's layers {shapes:?}"),
                    ));
                }
                Some(saved.iter().map(|sv| SpectralState::from_vectors(sv, &self.plain_device)).collect())
            }
            (want, _) => {
                return Err(bad(
                    "state.json",
                    format!(
                        "spectral norm's vectors are {}",
                        if want.is_some() { "missing" } else { "there, but D has none" }
                    ),
                ));
            }
        };
        Ok((self, Networks { g, d }))
    }
}

/// A batch D scores: images [b, pixels] and, in a conditional run, their one-hot labels
/// [b, classes] (the real images' own, or the classes G was asked for).
struct Batch {
    x: Tensor<2>,
    y: Option<Tensor<2>>,
}

/// `term`, plus an acgan D's auxiliary term when `classes` (its class logits [b, classes]) are
/// given: the cross-entropy of the classes against `asked` (the one-hot labels [b, classes] of
/// the real images, or the classes G was asked for), a mean over the batch, times `weight`
/// (`train.aux_weight`; 1 weighs it as the adversarial term, as Odena et al. 2017 do). D
/// minimizes it on the real and the fake batches, G on its fakes. The metric columns keep the
/// adversarial term alone.
fn with_class_term(
    term: Tensor<1>,
    classes: Option<Tensor<2>>,
    asked: Option<&Tensor<2>>,
    weight: f64,
) -> Tensor<1> {
    match (classes, asked) {
        (Some(logits), Some(y)) => {
            let cross_entropy = (y.clone() * log_softmax(logits, 1)).sum_dim(1).mean().neg();
            // No product at weight 1: the graph, and so the bytes, of the runs before the key.
            if weight == 1.0 { term + cross_entropy } else { term + cross_entropy.mul_scalar(weight) }
        }
        _ => term,
    }
}

/// The moving average's decay at the update after `iteration` iterations: `decay`, lowered at
/// the start as TensorFlow's `ExponentialMovingAverage` does with `num_updates`
/// (`min(decay, (1 + t) / (10 + t))`), so that the average forgets the random initial weights
/// in tens of iterations rather than thousands.
fn ema_decay(decay: f64, iteration: usize) -> f64 {
    let t = iteration as f64;
    decay.min((1.0 + t) / (10.0 + t))
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
/// label 1); returns D and the (loss, accuracy, mean output) of the forward pass before the update.
fn d_update(
    d: Discriminator,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    x: Tensor<2>,
    real: bool,
) -> (Discriminator, [f32; 3]) {
    let logits = d.forward(x); // [b, 1]
    let values: Vec<f32> = logits.to_data().try_into_vec().expect("the model computes in f32");
    let loss = if real { Loss::Ns.d_real(logits, 1.0) } else { Loss::Ns.d_fake(logits) };
    let loss_value = scalar(&loss);
    let grads = GradientsParams::from_grads(loss.backward(), &d);
    let d = optimizer.step(lr, d, grads);
    let side = if real { Side::Real } else { Side::Fake };
    let (accuracy, mean_out) = Loss::Ns.batch_stats(&values, side, 1.0);
    (d, [loss_value, accuracy, mean_out])
}

fn scalar(t: &Tensor<1>) -> f32 {
    t.clone().into_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loss as LossKind;

    /// The acgan class term is the cross-entropy of D's class logits against the asked classes,
    /// a mean over the batch, times train.aux_weight, added to the adversarial term; other Ds
    /// add nothing.
    #[test]
    fn the_class_term_is_the_mean_cross_entropy_of_the_asked_classes() {
        let device = Device::flex();
        let t = |v: Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v, shape), &device);
        let term = Tensor::<1>::from_data(TensorData::new(vec![0.5f32], [1]), &device);
        // Row 0: equal logits, -ln(1/3); row 1: logits (ln 1, ln 3, -1000: e^-1000 is 0 in
        // f32), asked 1: -ln(3/4).
        let logits = t(vec![0.0, 0.0, 0.0, 0.0, 3f32.ln(), -1000.0], [2, 3]);
        let asked = t(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [2, 3]);
        let total = scalar(&with_class_term(term.clone(), Some(logits.clone()), Some(&asked), 1.0));
        let cross_entropy = (3f32.ln() - 0.75f32.ln()) / 2.0;
        assert!((total - (0.5 + cross_entropy)).abs() < 1e-6, "{total} against {}", 0.5 + cross_entropy);
        // train.aux_weight scales the class term alone.
        let weighed = scalar(&with_class_term(term.clone(), Some(logits), Some(&asked), 0.25));
        assert!((weighed - (0.5 + 0.25 * cross_entropy)).abs() < 1e-6, "{weighed}");
        assert_eq!(scalar(&with_class_term(term, None, Some(&asked), 0.25)), 0.5);
    }

    /// The fast parallel schedule ([`Gan::fast_step`]) and the sequential reference step, both on
    /// the fused kernels, compute the classic recipe in the same order: the same records and the
    /// same weights, bit for bit, iteration after iteration.
    #[test]
    fn the_fast_schedule_and_the_sequential_step_agree_bit_for_bit_on_the_same_kernels() {
        let mut config = Config::default();
        config.model.g_hidden = vec![64, 32];
        config.model.d_hidden = vec![32, 16];
        config.train.batch_size = 16;
        assert!(config.train.is_classic_recipe() && config.train.kernels == Kernels::Fused);
        let images = super::super::bench::random_images(2, 0);
        let device = Device::flex();
        let run = |fast: bool| {
            let mut streams = Streams::new(5);
            let (mut gan, mut nets) = Gan::new(&config, (28, 28, 1), &mut streams, &device);
            assert!(gan.classic, "the classic recipe on the CPU takes the fast schedule");
            gan.classic = fast;
            let mut records = Vec::new();
            for i in 0..8 {
                let record;
                (nets, record) = gan.step(nets, i, &images, &mut streams);
                records.extend(gan.read_records(vec![record]));
            }
            let noise: Vec<f32> = (0..4 * 100).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let samples: Vec<u32> = gan.generate(&nets, &noise, &[]).iter().map(|v| v.to_bits()).collect();
            (records, samples, streams)
        };
        let (fast, fast_g, fast_streams) = run(true);
        let (sequential, sequential_g, sequential_streams) = run(false);
        let bits = |r: &IterationRecord| crate::metrics::METRICS.map(|(_, get)| get(r).to_bits());
        for (a, b) in fast.iter().zip(&sequential) {
            assert_eq!(bits(a), bits(b), "iteration {}", a.iteration);
        }
        assert!(fast_g == sequential_g, "G's samples after 8 iterations");
        assert_eq!(fast_streams, sequential_streams, "the same random numbers drawn");
    }

    /// The records of many iterations read in one transfer are those read one at a time, bit for
    /// bit, on a recipe that takes every branch of the reading (two split D steps, spectral norm).
    #[test]
    fn records_read_together_equal_records_read_one_at_a_time() {
        let mut config = Config::default();
        config.model.g_hidden = vec![32];
        config.model.d_hidden = vec![32];
        config.model.d_spectral_norm = true;
        config.train.loss = LossKind::Lsgan;
        config.train.d_steps = 2;
        config.train.d_update = DUpdate::Split;
        config.train.batch_size = 16;
        let images = super::super::bench::random_images(1, 0);
        let device = Device::flex();
        let start = || {
            let mut streams = Streams::new(3);
            let (gan, nets) = Gan::new(&config, (28, 28, 1), &mut streams, &device);
            (gan, nets, streams)
        };
        let (mut gan, mut nets, mut streams) = start();
        let mut one_by_one = Vec::new();
        for i in 0..6 {
            let record;
            (nets, record) = gan.step(nets, i, &images, &mut streams);
            one_by_one.extend(gan.read_records(vec![record]));
        }
        let (mut gan, mut nets, mut streams) = start();
        let mut unread = Vec::new();
        for i in 0..6 {
            let record;
            (nets, record) = gan.step(nets, i, &images, &mut streams);
            unread.push(record);
        }
        let together = gan.read_records(unread);
        let bits = |r: &IterationRecord| crate::metrics::METRICS.map(|(_, get)| get(r).to_bits());
        assert_eq!(together.len(), 6);
        for (a, b) in one_by_one.iter().zip(&together) {
            assert_eq!(a.iteration, b.iteration);
            assert_eq!(bits(a), bits(b), "iteration {}", a.iteration);
        }
    }
}
