//! The GAN being trained: the networks (values passed through each step), what trains them (the
//! optimizers, the recipe, spectral norm's vectors, G's moving average), one training step, and
//! the conversions to and from checkpoints.

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, RmsPropConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

mod fast;
mod state;
mod step;

use super::augment;
use crate::checkpoint::{self, Snapshot, TrainingState};
use crate::conditions::Conditions;
use crate::config::{
    Config, DUpdate, Kernels, ModelConfig, ModelKind, OptimizerKind, TrainConfig, UpdateOrder,
};
use crate::data::TrainingImages;
use crate::error::{Error, Result};
use crate::kernels::adam::FusedAdam;
use crate::metrics::IterationRecord;
use crate::model::{ConvPass, Discriminator, Generator, SpectralState};
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
    /// Whether the simultaneous step computes D's convolutions over the fakes once
    /// ([`step::replays_fakes`]).
    replay_fakes: bool,
    batch: usize,
    latent: usize,
    /// The ids G and D are conditioned on (their one-hot's width: `conditions.ids()`, 0 when
    /// unconditional), and how G's are drawn.
    conditions: Conditions,
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
    /// The `[model]` section as JSON (the safetensors file's metadata).
    architecture: String,
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
            replay_fakes: step::replays_fakes(&config.model, t),
            batch: t.batch_size,
            latent: config.model.latent_dim,
            conditions: Conditions::of(config),
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
            architecture: serde_json::to_string(&config.model).unwrap_or_default(),
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

    /// Draw G's ids in proportion to `sizes` (a clustered run's clusters) instead of uniformly.
    pub(crate) fn draw_classes_as(&mut self, sizes: &[usize]) {
        self.conditions = self.conditions.clone().with_sizes(Some(sizes.to_vec()));
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
        let z = crate::model::g_input(noise, self.latent, labels, self.conditions.ids(), &self.plain_device);
        self.sampler(nets).forward(z).into_data().try_into_vec().expect("the model computes in f32")
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
        (OptimizerKind::Adam, Kernels::Fused | Kernels::Winograd) => {
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

#[cfg(test)]
mod tests {
    use super::fast::scalar;
    use super::step::with_class_term;
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

    /// The simultaneous step that computes D's convolutions over the fakes once gives the
    /// reference step's records, G and random draws, bit for bit, iteration after iteration: on
    /// dcgan-tf's recipe (an unconditional D with dropout), cdcgan's (a projection D on labels)
    /// and cdcgan's with BatchNorm in D (whose running statistics both passes move), with small
    /// networks.
    #[test]
    fn replaying_ds_convolutions_over_the_fakes_gives_the_reference_steps_bits() {
        let cases = [
            ("dcgan-tf", vec![16, 8, 8], 0, false),
            ("cdcgan", vec![16, 8], 10, false),
            ("cdcgan", vec![16, 8], 10, true),
        ];
        for (preset, g_channels, classes, d_batch_norm) in cases {
            let mut config = Config::preset(preset).expect("a built-in preset");
            (config.model.g_channels, config.model.d_channels) = (g_channels, vec![8, 16]);
            config.model.d_batch_norm = d_batch_norm;
            config.model.clusters_per_class = 1;
            config.train.batch_size = 8;
            let images = super::super::bench::random_images(3, classes);
            let device = Device::flex();
            let run = |replay: bool| {
                let mut streams = Streams::new(7);
                let (mut gan, mut nets) = Gan::new(&config, (28, 28, 1), &mut streams, &device);
                assert!(gan.replay_fakes, "{preset}: the recipe replays D's convolutions");
                gan.replay_fakes = replay;
                let mut records = Vec::new();
                for i in 0..4 {
                    let record;
                    (nets, record) = gan.step(nets, i, &images, &mut streams);
                    records.extend(gan.read_records(vec![record]));
                }
                let noise: Vec<f32> = (0..4 * 100).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                let labels: Vec<u8> = (0..4).map(|i| (i * 3 % classes.max(1)) as u8).collect();
                let labels = if classes > 0 { &labels[..] } else { &[] };
                let samples: Vec<u32> =
                    gan.generate(&nets, &noise, labels).iter().map(|v| v.to_bits()).collect();
                let bits = |r: &IterationRecord| crate::metrics::METRICS.map(|(_, get)| get(r).to_bits());
                (records.iter().map(bits).collect::<Vec<_>>(), samples, streams)
            };
            let (replayed, reference) = (run(true), run(false));
            assert_eq!(replayed.0, reference.0, "{preset}: the records");
            assert!(replayed.1 == reference.1, "{preset}: G's samples after 4 iterations");
            assert_eq!(replayed.2, reference.2, "{preset}: the same random numbers drawn");
        }
    }

    /// `train.kernels = "winograd"` reaches the step's convolutions: on dcgan-tf's recipe (with a
    /// 32 -> 16 channel stride-1 layer in G, which Winograd's F(4×4, 5×5) computes) its records
    /// differ from the fused kernels' in the last bits and agree with them within float rounding.
    #[test]
    fn the_winograd_kernels_train_what_the_fused_kernels_train_within_rounding() {
        let mut config = Config::preset("dcgan-tf").expect("a built-in preset");
        (config.model.g_channels, config.model.d_channels) = (vec![32, 16, 8], vec![8, 16]);
        config.train.batch_size = 8;
        let images = super::super::bench::random_images(3, 0);
        let run = |kernels: Kernels| {
            let mut config = config.clone();
            config.train.kernels = kernels;
            let mut streams = Streams::new(7);
            let (mut gan, mut nets) = Gan::new(&config, (28, 28, 1), &mut streams, &Device::flex());
            let mut records = Vec::new();
            for i in 0..3 {
                let record;
                (nets, record) = gan.step(nets, i, &images, &mut streams);
                records.extend(gan.read_records(vec![record]));
            }
            records.iter().flat_map(|r| crate::metrics::METRICS.map(|(_, get)| get(r))).collect::<Vec<f32>>()
        };
        let (winograd, fused) = (run(Kernels::Winograd), run(Kernels::Fused));
        assert_ne!(winograd, fused, "Winograd's sums are not the direct sums' bits");
        for (w, f) in winograd.iter().zip(&fused) {
            assert!((w - f).abs() <= 1e-4 * f.abs().max(1.0), "{w} against {f}");
        }
    }

    /// Which recipes replay D's convolutions over the fakes: the simultaneous joint step of a
    /// dcgan D on the fused kernels, and none where D's two passes could differ.
    #[test]
    fn only_a_simultaneous_joint_step_of_a_plain_dcgan_d_replays_its_convolutions() {
        let config = Config::preset("dcgan").expect("a built-in preset");
        let (m, t) = (&config.model, &config.train);
        assert!(step::replays_fakes(m, t));
        let with = |edit: &dyn Fn(&mut Config)| {
            let mut c = config.clone();
            edit(&mut c);
            step::replays_fakes(&c.model, &c.train)
        };
        assert!(!with(&|c| c.train.order = UpdateOrder::DFirst));
        assert!(!with(&|c| c.train.d_update = DUpdate::Split));
        assert!(!with(&|c| c.train.kernels = Kernels::Reference));
        assert!(with(&|c| c.train.kernels = Kernels::Winograd), "both passes sum alike");
        assert!(!with(&|c| c.model.kind = ModelKind::Mlp));
        assert!(!with(&|c| c.train.augment = vec![crate::config::Augment::Translation]));
        assert!(!with(&|c| c.model.d_spectral_norm = true));
        assert!(with(&|c| c.model.d_batch_norm = true), "both passes move D's statistics, in order");
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
