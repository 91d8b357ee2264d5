//! The networks, one file per kind behind two enums: [`Generator`] and [`Discriminator`] hold an
//! [`mlp`] (the classic "simple GAN"'s Dense networks) or a [`dcgan`] (convolutional) network,
//! chosen by `model.kind`. Each kind's file owns its layers, layout, parameter count, activations,
//! multiply-adds and forward passes; [`conditioning`] is how both kinds see a class; [`layers`]
//! their building blocks. Built from the config with weights drawn from gantry's own seeded
//! stream, so the same code trains on any burn device.
//!
//! Adding a kind: its file (the two networks and the plan functions: parameter count, activation
//! widths, multiply-adds), a variant in [`Generator`], [`Discriminator`] and `config::ModelKind`,
//! one arm in each `match` on the kind in this file (and in `kind!`), its config keys and a preset.
//!
//! Saved weights: a network's record is its kind's own (`hidden.0.weight`, `convs.1.bias`, ...),
//! never prefixed with the kind's name, so the weights every earlier build wrote load unchanged
//! ([`Generator::record_bytes`], [`Generator::with_record`]); the config names the kind.
//!
//! Also here, as operations on the networks whatever their kind: D's spectral normalization
//! ([`spectral`]), the moving average of G (`train.g_ema`) and WGAN's weight clipping.

pub mod conditioning;
pub mod dcgan;
pub(crate) mod layers;
pub mod mlp;
pub mod onnx;
pub mod spectral;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::store::{ModuleRecord, RecordError};
use burn::tensor::{Bytes, Device, Tensor};

pub use conditioning::{g_input, one_hot};
pub use dcgan::ConvPass;
pub use spectral::{SpectralState, SpectralVectors};

use crate::config::{Config, Kernels, ModelConfig, ModelKind};
use crate::error::{Error, Result};

/// The generator, of any kind.
#[derive(Module, Debug)]
pub enum Generator {
    Mlp(mlp::Generator),
    Dcgan(dcgan::Generator),
}

/// The discriminator, of any kind (returns logits).
#[derive(Module, Debug)]
pub enum Discriminator {
    Mlp(mlp::Discriminator),
    Dcgan(dcgan::Discriminator),
}

/// `kind!(net, n => expr)`: `expr` with `n` bound to the network inside `net`, whatever its kind
/// (for what every kind does alike: records, safetensors).
macro_rules! kind {
    ($net:expr, $n:ident => $e:expr) => {
        match $net {
            Self::Mlp($n) => $e,
            Self::Dcgan($n) => $e,
        }
    };
}

/// A network's record as burnpack bytes, the kind's own paths.
fn bytes_of<M: Module>(module: M) -> std::result::Result<Vec<u8>, RecordError> {
    Ok(module.into_record().into_bytes()?.to_vec())
}

/// `module` with the weights of a record (burnpack bytes) written by the same kind.
fn load_into<M: Module>(module: M, bytes: Vec<u8>) -> std::result::Result<M, RecordError> {
    module.try_load_record(ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))?)
}

impl Generator {
    /// G of `cfg`'s kind with Glorot-uniform weights and zero biases drawn from `rng`.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        match cfg.kind {
            ModelKind::Mlp => Self::Mlp(mlp::Generator::new(cfg, pixels, rng, device)),
            ModelKind::Dcgan => Self::Dcgan(dcgan::Generator::new(cfg, pixels, rng, device)),
        }
    }

    /// `z` [batch, latent] -> images [batch, pixels] in [-1, 1]; a conditional G takes
    /// [batch, latent + ids], the one-hot id after the noise ([`g_input`]). BatchNorm uses batch
    /// statistics on an autodiff device in training mode, moving statistics otherwise
    /// (`g.valid()`). With gantry's fused kernels.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        self.forward_with(z, Kernels::Fused)
    }

    /// [`Generator::forward`] with burn's own modules and activations only (the reference path),
    /// none of gantry's kernels.
    pub fn forward_reference(&self, z: Tensor<2>) -> Tensor<2> {
        self.forward_with(z, Kernels::Reference)
    }

    /// The forward pass on `kernels`.
    pub fn forward_with(&self, z: Tensor<2>, kernels: Kernels) -> Tensor<2> {
        match (self, kernels) {
            (Self::Mlp(g), Kernels::Reference) => g.forward_reference(z),
            (Self::Mlp(g), Kernels::Fused | Kernels::Winograd) => g.forward(z),
            (Self::Dcgan(g), k) => g.forward(z, k),
        }
    }

    /// One step of the moving average: each parameter `p` of `self` (the average) becomes
    /// `decay * p + (1 - decay) * q` with `q` the same parameter of `live`, BatchNorm's moving
    /// statistics included (burn visits them with the weights). Both on one device; ids kept.
    pub fn averaged_with(self, live: &Generator, decay: f64) -> Self {
        let mut values = Collect::default();
        live.visit(&mut values);
        self.map(&mut Average { live: values.0.into_iter(), decay })
    }

    /// The weights as burnpack bytes (what checkpoints and `weights/` hold).
    pub fn record_bytes(self) -> std::result::Result<Vec<u8>, RecordError> {
        kind!(self, g => bytes_of(g))
    }

    /// This G with the weights of `bytes` (a record of the same architecture).
    pub fn with_record(self, bytes: Vec<u8>) -> std::result::Result<Self, RecordError> {
        Ok(match self {
            Self::Mlp(g) => Self::Mlp(load_into(g, bytes)?),
            Self::Dcgan(g) => Self::Dcgan(load_into(g, bytes)?),
        })
    }

    /// This G (its weights and moving statistics, in inference) as an ONNX model: inputs `z`
    /// [N, latent] and, with `ids` > 0, `class` [N] (int64); output `image` [N, c, h, w] in
    /// [-1, 1] for `shape` (c, h, w). `metadata` is kept in the file.
    pub fn onnx(
        &self,
        latent: usize,
        ids: usize,
        shape: (usize, usize, usize),
        metadata: Vec<(String, String)>,
    ) -> Vec<u8> {
        onnx::Graph::model(latent, ids, shape, metadata, |graph, x| match self {
            Self::Mlp(g) => g.onnx(graph, x),
            Self::Dcgan(g) => g.onnx(graph, x),
        })
    }

    /// The weights and BatchNorm statistics as safetensors bytes, `architecture` (the run's
    /// `[model]` section as JSON) in the metadata (see [`crate::export`]).
    pub fn safetensors(&self, architecture: &str) -> Vec<u8> {
        kind!(self, g => crate::export::to_safetensors(g, architecture))
    }
}

impl Discriminator {
    /// D of `cfg`'s kind with Glorot-uniform weights and zero biases drawn from `rng`.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        match cfg.kind {
            ModelKind::Mlp => Self::Mlp(mlp::Discriminator::new(cfg, pixels, rng, device)),
            ModelKind::Dcgan => Self::Dcgan(dcgan::Discriminator::new(cfg, pixels, rng, device)),
        }
    }

    /// D's scores of images [batch, pixels] with their one-hot labels [batch, ids] (given exactly
    /// when D is conditional) -> logits [batch, 1]. `dropout`: a dcgan's masks (see
    /// [`dcgan::dropout_shapes`]); `kernels`: gantry's fused ones, or burn's own modules and
    /// activations only (the same values).
    pub fn score(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
    ) -> Tensor<2> {
        self.score_and_classes(x, labels, dropout, kernels, None).0
    }

    /// [`Discriminator::score`] (spectrally normalized with `spectral`'s vectors when given) and,
    /// for an acgan D, its auxiliary classifier's class logits [batch, ids] of the same forward
    /// pass (None for any other D). Spectral norm divides each weight W by `σ = vᵀ M u`, M the
    /// layer's matrix; the gradient flows through σ with `u` and `v` held constant (Miyato et al.
    /// 2018).
    pub fn score_and_classes(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
        spectral: Option<&[SpectralState]>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        self.score_and_classes_in(x, labels, dropout, kernels, spectral, ConvPass::Compute)
    }

    /// [`Discriminator::score_and_classes`] where a dcgan D's convolutions on gantry's kernels
    /// are computed, kept or replayed as `pass` says (an MLP D has none).
    pub fn score_and_classes_in(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
        spectral: Option<&[SpectralState]>,
        pass: ConvPass<'_>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let sigmas = spectral.map(|states| spectral::sigmas(self.spectral_matrices(), states));
        let sigmas = sigmas.as_deref();
        match self {
            Self::Mlp(d) => d.score(x, labels, kernels, sigmas),
            Self::Dcgan(d) => d.score(x, labels, dropout, kernels, sigmas, pass),
        }
    }

    /// An unconditional D: images [batch, pixels] -> logits [batch, 1].
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.score(x, None, None, Kernels::Fused)
    }

    /// [`Discriminator::forward`] with burn's own modules and activations only.
    pub fn forward_reference(&self, x: Tensor<2>) -> Tensor<2> {
        self.score(x, None, None, Kernels::Reference)
    }

    /// Each layer's weight as the matrix M [d_in, d_out] whose largest singular value spectral
    /// norm divides by, with its graph: the kind's feature layers in order, then the heads (the
    /// logit layer, a projection's embedding, an acgan's classifier).
    fn spectral_matrices(&self) -> Vec<Tensor<2>> {
        match self {
            Self::Mlp(d) => d.spectral_matrices(),
            Self::Dcgan(d) => d.spectral_matrices(),
        }
    }

    /// The (d_in, d_out) of each layer's matrix, as spectral norm sees them.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        self.spectral_matrices().iter().map(|m| (m.dims()[0], m.dims()[1])).collect()
    }

    /// Spectral norm's starting vectors (see [`spectral::start`]), from `rng`.
    pub fn spectral_start(&self, rng: &mut impl rand::Rng) -> Vec<SpectralState> {
        spectral::start(self.spectral_matrices(), rng)
    }

    /// One power iteration per layer on the current weights (see [`spectral::power_iteration`]).
    pub fn power_iteration(&self, states: &mut [SpectralState]) {
        spectral::power_iteration(self.spectral_matrices(), states);
    }

    /// Clip every weight and bias to [-c, c] (WGAN's critic), keeping parameter ids.
    pub fn clipped(self, c: f64) -> Self {
        self.map(&mut Clip { c })
    }

    /// The weights as burnpack bytes (what checkpoints and `weights/` hold).
    pub fn record_bytes(self) -> std::result::Result<Vec<u8>, RecordError> {
        kind!(self, d => bytes_of(d))
    }

    /// This D with the weights of `bytes` (a record of the same architecture).
    pub fn with_record(self, bytes: Vec<u8>) -> std::result::Result<Self, RecordError> {
        Ok(match self {
            Self::Mlp(d) => Self::Mlp(load_into(d, bytes)?),
            Self::Dcgan(d) => Self::Dcgan(load_into(d, bytes)?),
        })
    }
}

/// Parameters of G and D for images of `pixels` values (weights, biases, BatchNorm's scale,
/// shift and running statistics), by the kind's file. Saturating.
pub fn parameter_count(m: &ModelConfig, pixels: usize) -> u64 {
    match m.kind {
        ModelKind::Mlp => mlp::parameter_count(m, pixels),
        ModelKind::Dcgan => dcgan::parameter_count(m, pixels),
    }
}

/// Values per image of every hidden layer's output, G's and D's (the widths of an mlp, the
/// feature maps of a dcgan).
pub fn activation_widths(m: &ModelConfig, pixels: usize) -> u64 {
    match m.kind {
        ModelKind::Mlp => mlp::activation_widths(m),
        ModelKind::Dcgan => dcgan::activation_widths(m, pixels),
    }
}

/// Multiply-adds per image of each layer of G and of D, input to output, D's heads beyond the
/// logit last (what the benchmark's FLOP count reads): the kind's [`layer_shapes`], then
/// [`conditioning::head_macs`] on the features the logit reads.
pub fn layer_macs(m: &ModelConfig, pixels: usize) -> (Vec<f64>, Vec<f64>) {
    let (g, d) = layer_shapes(m, pixels);
    let features = match d.last() {
        Some((_, LayerShape::Dense { d_in, .. })) => *d_in,
        _ => pixels,
    };
    let macs = |layers: &Layers| layers.iter().map(|(_, s)| s.macs()).collect::<Vec<f64>>();
    let mut d_macs = macs(&d);
    d_macs.extend(conditioning::head_macs(m, features));
    (macs(&g), d_macs)
}

/// One layer's shape, as the layer benchmark (`gantry bench --layers`) builds it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerShape {
    /// A Dense layer [b, d_in] -> [b, d_out] whose last `labels` inputs are one-hot labels, the
    /// weight rows they pick added without a product (a conditional dcgan G's input layer).
    Dense { d_in: usize, d_out: usize, labels: usize },
    /// A k×k convolution of stride 2 (D's), [b, c_in, side_in²] -> [b, c_out, side_out²].
    Conv { c_in: usize, c_out: usize, k: usize, side_in: usize, side_out: usize },
    /// A k×k transposed convolution of stride `side_out / side_in` (G's).
    ConvTranspose { c_in: usize, c_out: usize, k: usize, side_in: usize, side_out: usize },
}

impl LayerShape {
    /// Multiply-adds per image of its forward pass.
    pub fn macs(&self) -> f64 {
        match *self {
            Self::Dense { d_in, d_out, labels } => (d_in.saturating_sub(labels) * d_out) as f64,
            Self::Conv { c_in, c_out, k, side_out, .. } => {
                (side_out * side_out * c_in * c_out * k * k) as f64
            }
            Self::ConvTranspose { c_in, c_out, k, side_in, .. } => {
                (side_in * side_in * c_in * c_out * k * k) as f64
            }
        }
    }
}

/// A network's layers with products, input to output, each with its name in the records.
pub type Layers = Vec<(String, LayerShape)>;

/// G's and D's layers with products (the heads beyond the logit left out), input to output, each
/// named as the kind names it.
pub fn layer_shapes(m: &ModelConfig, pixels: usize) -> (Layers, Layers) {
    match m.kind {
        ModelKind::Mlp => mlp::layer_shapes(m, pixels),
        ModelKind::Dcgan => dcgan::layer_shapes(m, pixels),
    }
}

/// A generous estimate of the bytes one training process needs: every parameter held about
/// eight times in f32 (weights, gradients, two Adam moments, inference and checkpoint copies),
/// the activations of a step (each layer's output and its gradient, a few times over, for the
/// real, fake and G batches), the training images, the fixed noise of grids and evaluations, and
/// 256 MiB for the rest (the classic preset's measured peak is 190 MB).
pub fn memory_estimate(config: &Config, pixels: usize) -> u64 {
    let params = parameter_count(&config.model, pixels).saturating_mul(8 * 4);
    let widths = activation_widths(&config.model, pixels).saturating_add(3 * pixels as u64);
    let activations = widths.saturating_mul(config.train.batch_size as u64).saturating_mul(3 * 6 * 4);
    // The training images as bytes, and the judge's test images as floats.
    let images = 60_000u64 * pixels as u64 + 10_000 * pixels as u64 * 4;
    // The fixed noise of the grids and of the in-training evaluation, and its images.
    let noise_rows = (config.grid_rows() * config.output.grid_cols + config.eval.samples) as u64;
    let g_input = conditioning::g_input_width(&config.model);
    let noise = noise_rows.saturating_mul((g_input + pixels) as u64).saturating_mul(4);
    params.saturating_add(activations).saturating_add(images).saturating_add(noise).saturating_add(256 << 20)
}

/// Refuse a model that cannot fit in this machine's available memory (by [`memory_estimate`]),
/// before anything is made.
pub fn check_memory(config: &Config, pixels: usize) -> Result<()> {
    let needed = memory_estimate(config, pixels);
    let Some(available) = crate::allocator::available_memory() else { return Ok(()) };
    if needed > available {
        return Err(Error::TooLarge {
            what: format!(
                "the model ({} parameters in G and D, batch {})",
                parameter_count(&config.model, pixels),
                config.train.batch_size
            ),
            needed: crate::allocator::gib(needed),
            available: crate::allocator::gib(available),
            advice: "make model.g_hidden / model.d_hidden or train.batch_size smaller".into(),
        });
    }
    Ok(())
}

/// The float parameters of a module in visiting order, flattened.
#[derive(Default)]
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().flatten::<1>(0, D - 1));
    }
}

/// Moves each parameter toward the next of `live` (same visiting order, same shapes).
struct Average {
    live: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Average {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let live = self.live.next().expect("the average and the live G have the same parameters");
        let live = live.reshape(value.dims());
        // `value * decay + live * (1 - decay)` in one pass, the same bits.
        let averaged = crate::kernels::average::moving_average(value, live, self.decay);
        Param::from_mapped_value(id, averaged, mapper)
    }
}

/// Clamps every parameter into [-c, c]; the clamped value is a fresh leaf (no graph behind it).
struct Clip {
    c: f64,
}

impl ModuleMapper for Clip {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let (grad, autodiff) = (value.is_require_grad(), value.is_autodiff());
        // Clamped on the device, without the graph (exact: each value is itself or a bound).
        let c = self.c as f32;
        let clamped = value.inner().clamp(-c, c);
        let clamped = if autodiff { clamped.autodiff() } else { clamped };
        Param::from_mapped_value(id, if grad { clamped.require_grad() } else { clamped }, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::RunningState;
    use burn::tensor::TensorData;
    use burn::tensor::activation::leaky_relu;
    use layers::linear_with_kernel;
    use rand::SeedableRng;

    fn mlp_g(g: &Generator) -> &mlp::Generator {
        match g {
            Generator::Mlp(g) => g,
            Generator::Dcgan(_) => panic!("an mlp G"),
        }
    }

    fn mlp_g_mut(g: &mut Generator) -> &mut mlp::Generator {
        match g {
            Generator::Mlp(g) => g,
            Generator::Dcgan(_) => panic!("an mlp G"),
        }
    }

    fn mlp_d(d: &Discriminator) -> &mlp::Discriminator {
        match d {
            Discriminator::Mlp(d) => d,
            Discriminator::Dcgan(_) => panic!("an mlp D"),
        }
    }

    fn dcgan_d(d: &Discriminator) -> &dcgan::Discriminator {
        match d {
            Discriminator::Dcgan(d) => d,
            Discriminator::Mlp(_) => panic!("a dcgan D"),
        }
    }

    #[test]
    fn shapes_and_ranges() {
        let device = Device::flex();
        let cfg =
            ModelConfig { g_hidden: vec![8, 16], d_hidden: vec![16], latent_dim: 4, ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        let z = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; 3 * 4], [3, 4]), &device);
        let x = g.forward(z);
        assert_eq!(x.dims(), [3, 12]);
        let v: Vec<f32> = x.clone().into_data().try_into_vec().unwrap();
        assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)));
        assert_eq!(d.forward(x).dims(), [3, 1]);
    }

    #[test]
    fn reference_forward_passes_match_the_fused_ones() {
        let device = Device::flex();
        let cfg =
            ModelConfig { g_hidden: vec![8, 16], d_hidden: vec![16], latent_dim: 4, ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        let z: Vec<f32> = (0..5 * 4).map(|i| (i as f32 * 0.37).sin()).collect();
        let z = Tensor::<2>::from_data(TensorData::new(z, [5, 4]), &device);
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        // Inference batch norm and the dense layers are bit-identical to burn's.
        let (fused, reference) = (values(g.forward(z.clone())), values(g.forward_reference(z)));
        assert_eq!(fused, reference);
        let x = Tensor::<2>::from_data(TensorData::new(fused, [5, 12]), &device);
        assert_eq!(values(d.forward(x.clone())), values(d.forward_reference(x)));
        let clipped = d.clipped(0.01);
        let w: Vec<f32> = mlp_d(&clipped).hidden[0].weight.val().into_data().try_into_vec().unwrap();
        assert!(w.iter().all(|v| v.abs() <= 0.01) && w.iter().any(|v| v.abs() == 0.01));
    }

    /// Multiplies every weight (the parameters of two or more dimensions) by `c`, biases kept.
    struct ScaleWeights(f32);

    impl ModuleMapper for ScaleWeights {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, value, mapper) = param.consume();
            let value = if D >= 2 { value * self.0 } else { value };
            Param::from_mapped_value(id, value, mapper)
        }
    }

    /// A spectrally normalized D divides each layer's weight by its σ, so scaling a weight by c
    /// (σ scales with it, u and v held) leaves every score as it was: for a conditional
    /// convolutional D with a projection that takes all of its layers (convolutions, the logit
    /// layer, the class embedding); a layer left out of the normalization would change it.
    #[test]
    fn a_spectrally_normalized_dcgan_d_does_not_change_when_its_weights_are_scaled() {
        let device = Device::flex();
        let cfg = ModelConfig {
            kind: ModelKind::Dcgan,
            d_channels: vec![4, 8],
            conditional: crate::config::Conditioning::Projection,
            classes: 3,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let d = Discriminator::new(&cfg, 16 * 16, &mut rng, &device);
        // Two convolutions, the logit layer, the embedding: [c_in·k·k, c_out] and [d_in, d_out].
        let k2 = cfg.kernel_size * cfg.kernel_size;
        assert_eq!(d.layer_shapes(), vec![(k2, 4), (4 * k2, 8), (8 * 4 * 4, 1), (3, 8 * 4 * 4)]);
        let mut states = d.spectral_start(&mut rng);
        for _ in 0..3 {
            d.power_iteration(&mut states);
        }
        let x: Vec<f32> = (0..2 * 256).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [2, 256]), &device);
        let y =
            Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 1.0, 0.0, 0.0, 0.0, 1.0], [2, 3]), &device);
        let scores = |d: &Discriminator| -> Vec<f32> {
            d.score_and_classes(x.clone(), Some(&y), None, Kernels::Fused, Some(&states))
                .0
                .into_data()
                .try_into_vec()
                .unwrap()
        };
        let before = scores(&d);
        let after = scores(&d.clone().map(&mut ScaleWeights(3.0)));
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "{before:?} vs {after:?}");
        }
        // Without the normalization the same scaling does change them.
        let plain = |d: &Discriminator| -> Vec<f32> {
            d.score(x.clone(), Some(&y), None, Kernels::Fused).into_data().try_into_vec().unwrap()
        };
        let scaled = plain(&d.clone().map(&mut ScaleWeights(3.0)));
        assert!(plain(&d).iter().zip(&scaled).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    /// A known largest singular value: W = diag(3, 2, 1) padded; power iterations converge on 3,
    /// and the normalized layer computes x·W/σ.
    #[test]
    fn spectral_norm_divides_each_weight_by_its_largest_singular_value() {
        let device = Device::flex();
        let cfg = ModelConfig { d_hidden: vec![3], ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let Discriminator::Mlp(mut d) = Discriminator::new(&cfg, 3, &mut rng, &device) else { panic!() };
        d.hidden[0] = linear_with_kernel(vec![3.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0], 3, 3, &device);
        d.output = linear_with_kernel(vec![0.0, 4.0, 0.0], 3, 1, &device);
        let d = Discriminator::Mlp(d);
        assert_eq!(d.layer_shapes(), vec![(3, 3), (3, 1)]);
        let mut states = d.spectral_start(&mut rng);
        for _ in 0..60 {
            d.power_iteration(&mut states);
        }
        let sv: Vec<SpectralVectors> = states.iter().map(SpectralState::to_vectors).collect();
        let sigma = |k: usize, w: &[f32], (di, do_): (usize, usize)| -> f32 {
            (0..di).map(|i| (0..do_).map(|j| sv[k].v[i] * w[i * do_ + j] * sv[k].u[j]).sum::<f32>()).sum()
        };
        let w0 = [3.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0];
        assert!((sigma(0, &w0, (3, 3)) - 3.0).abs() < 1e-4, "{}", sigma(0, &w0, (3, 3)));
        assert!((sigma(1, &[0.0, 4.0, 0.0], (3, 1)) - 4.0).abs() < 1e-5);
        // x = (1, 1, 1): hidden = leaky(x W / 3) = (1, 2/3, 1/3); out = hidden · (0, 4, 0) / 4.
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 3], [1, 3]), &device);
        let out: Vec<f32> = d
            .score_and_classes(x, None, None, Kernels::Reference, Some(&states))
            .0
            .into_data()
            .try_into_vec()
            .unwrap();
        assert!((out[0] - 2.0 / 3.0).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn the_moving_average_moves_each_weight_and_statistic_by_its_decay() {
        let device = Device::flex();
        let cfg = ModelConfig { g_hidden: vec![4], latent_dim: 2, ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let ema = Generator::new(&cfg, 3, &mut rng, &device);
        let mut live = Generator::new(&cfg, 3, &mut rng, &device);
        mlp_g_mut(&mut live).norms[0].running_mean =
            RunningState::new(Tensor::from_data(TensorData::new(vec![0.5f32; 4], [4]), &device));
        let w = |g: &Generator| -> Vec<f32> {
            mlp_g(g).hidden[0].weight.val().into_data().try_into_vec().unwrap()
        };
        let (before, target) = (w(&ema), w(&live));
        let after = ema.averaged_with(&live, 0.75);
        for ((a, b), t) in w(&after).iter().zip(&before).zip(&target) {
            assert!((a - (0.75 * b + 0.25 * t)).abs() < 1e-6);
        }
        let mean: Vec<f32> =
            mlp_g(&after).norms[0].running_mean.value_sync().into_data().try_into_vec().unwrap();
        // The average's moving mean starts at 0: 0.75 * 0 + 0.25 * 0.5.
        assert_eq!(mean, vec![0.125; 4]);
    }

    /// TensorFlow's DCGAN tutorial prints its models' summaries: G 2,330,944 parameters (2,305,472
    /// trainable and BatchNorm's 25,472 moving statistics, which burn counts too), D 212,865.
    #[test]
    fn the_dcgan_tf_networks_have_the_tutorials_shapes_and_parameter_counts() {
        let device = Device::flex();
        let cfg = crate::config::Config::preset("dcgan-tf").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let g = Generator::new(&cfg.model, 784, &mut rng, &device);
        let d = Discriminator::new(&cfg.model, 784, &mut rng, &device);
        assert_eq!((g.num_params(), d.num_params()), (2_330_944, 212_865));
        assert_eq!(parameter_count(&cfg.model, 784), 2_305_472 + 25_472 + 212_865);
        assert!(matches!((&g, &d), (Generator::Dcgan(_), Discriminator::Dcgan(_))));
        assert_eq!(dcgan::dropout_shapes(&cfg.model, 784), vec![[64, 14, 14], [128, 7, 7]]);
        let z: Vec<f32> = (0..3 * 100).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = g.forward(Tensor::<2>::from_data(TensorData::new(z, [3, 100]), &device));
        assert_eq!(x.dims(), [3, 784]);
        let v: Vec<f32> = x.clone().into_data().try_into_vec().unwrap();
        assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)) && v.iter().any(|&p| p != v[0]));
        // Dropout masks multiply after each convolution: all-zero masks leave only D's bias.
        let zeros = [[3, 64, 14, 14], [3, 128, 7, 7]].map(|s| Tensor::<4>::zeros(s, &device));
        let dropped: Vec<f32> =
            d.score(x.clone(), None, Some(&zeros), Kernels::Fused).into_data().try_into_vec().unwrap();
        // The fused kernels compute burn's function: the same values but for rounding (gantry's
        // convolutions sum in another order than burn's).
        let z: Vec<f32> = (0..3 * 100).map(|i| (i as f32 * 0.11).cos()).collect();
        let z = Tensor::<2>::from_data(TensorData::new(z, [3, 100]), &device);
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(a.len() == b.len() && worst <= 1e-5 * scale, "{what}: {worst:e} at scale {scale:e}");
        };
        close(values(g.forward(z.clone())), values(g.forward_reference(z)), "G");
        close(values(d.forward(x.clone())), values(d.forward_reference(x.clone())), "D");
        assert_eq!(dropped, vec![0.0; 3], "the output layer's bias starts at zero");
        let scores: Vec<f32> = d.forward(x).into_data().try_into_vec().unwrap();
        assert!(scores.iter().all(|s| s.is_finite() && *s != 0.0), "{scores:?}");
    }

    /// Miyato & Koyama's projection: D's logit is its unconditional logit plus the inner product
    /// of the class's embedding row with D's last features; a conditional G's images depend on
    /// the class asked.
    #[test]
    fn conditional_networks_take_the_class() {
        use crate::config::Conditioning;
        let device = Device::flex();
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        let cfg = ModelConfig {
            g_hidden: vec![8],
            d_hidden: vec![6, 5],
            latent_dim: 4,
            conditional: Conditioning::Projection,
            classes: 3,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        assert_eq!(mlp_g(&g).hidden[0].weight.dims(), [4 + 3, 8]);
        assert_eq!(mlp_d(&d).hidden[0].weight.dims(), [12, 6], "a projection D's input is the image alone");
        let embed = mlp_d(&d).embed.as_ref().expect("a projection D has an embedding");
        assert_eq!(embed.weight.dims(), [3, 5]);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&cfg, 12));

        let z: Vec<f32> = (0..2 * 4).map(|i| (i as f32 * 0.7).sin()).collect();
        let (labels, other) = ([2u8, 0], [1u8, 1]);
        let input = |l: &[u8]| g_input(&z, 4, l, 3, &device);
        assert_eq!(input(&labels).dims(), [2, 7]);
        let x = g.forward(input(&labels));
        assert_ne!(values(x.clone()), values(g.forward(input(&other))), "G ignores the class");
        let y = Tensor::<2>::from_data(TensorData::new(one_hot(&labels, 3), [2, 3]), &device);
        let mut features = x.clone();
        for linear in &mlp_d(&d).hidden {
            features = leaky_relu(linear.forward(features), mlp_d(&d).leaky_slope);
        }
        let phi = values(features);
        let e: Vec<f32> = embed.weight.val().into_data().try_into_vec().unwrap();
        let unconditional = values(d.score(x.clone(), None, None, Kernels::Reference));
        let scored = values(d.score(x.clone(), Some(&y), None, Kernels::Reference));
        for (i, &label) in labels.iter().enumerate() {
            let row = &e[label as usize * 5..(label as usize + 1) * 5];
            let inner: f32 = phi[i * 5..(i + 1) * 5].iter().zip(row).map(|(a, b)| a * b).sum();
            assert!(
                (scored[i] - unconditional[i] - inner).abs() < 1e-5,
                "{scored:?} {unconditional:?} {inner}"
            );
        }
        assert_eq!(values(d.score(x.clone(), Some(&y), None, Kernels::Fused)), scored, "fused == reference");

        // concat: D's input is the image and the one-hot label; a dcgan's, one map per class.
        let concat = ModelConfig { conditional: Conditioning::Concat, ..cfg.clone() };
        let d = Discriminator::new(&concat, 12, &mut rng, &device);
        assert_eq!(mlp_d(&d).hidden[0].weight.dims(), [12 + 3, 6]);
        assert!(mlp_d(&d).embed.is_none());
        assert_eq!(
            d.num_params() + Generator::new(&concat, 12, &mut rng, &device).num_params(),
            cfg_count(&concat, 12)
        );
        let conv = ModelConfig {
            kind: ModelKind::Dcgan,
            g_channels: vec![4, 2],
            d_channels: vec![3, 2],
            conditional: Conditioning::Concat,
            ..cfg.clone()
        };
        let d = Discriminator::new(&conv, 784, &mut rng, &device);
        assert_eq!(dcgan_d(&d).convs[0].weight.dims(), [3, 1 + 3, 5, 5]);
        let g = Generator::new(&conv, 784, &mut rng, &device);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&conv, 784));
        let images = Tensor::<2>::zeros([2, 784], &device);
        let a = values(d.score(images.clone(), Some(&y), None, Kernels::Fused));
        let y2 = Tensor::<2>::from_data(TensorData::new(one_hot(&other, 3), [2, 3]), &device);
        assert_ne!(a, values(d.score(images, Some(&y2), None, Kernels::Fused)), "D ignores the class maps");
    }

    /// Odena et al.'s AC-GAN: D sees the image alone (its logit ignores the labels) and its
    /// auxiliary head classifies D's last features into the classes, of the same forward pass;
    /// spectral norm takes the head too. Both kinds of network; the config counts its parameters.
    #[test]
    fn an_acgan_discriminator_classifies_what_it_judges() {
        use crate::config::Conditioning;
        let device = Device::flex();
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        let cfg = ModelConfig {
            g_hidden: vec![8],
            d_hidden: vec![6, 5],
            latent_dim: 4,
            conditional: Conditioning::Acgan,
            classes: 3,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        assert_eq!(mlp_g(&g).hidden[0].weight.dims(), [4 + 3, 8], "G takes the class as with concat");
        assert_eq!(mlp_d(&d).hidden[0].weight.dims(), [12, 6], "an acgan D's input is the image alone");
        assert!(mlp_d(&d).embed.is_none());
        let aux = mlp_d(&d).aux.as_ref().expect("an acgan D has a classifier");
        assert_eq!(aux.weight.dims(), [5, 3]);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&cfg, 12));

        let x: Vec<f32> = (0..2 * 12).map(|i| (i as f32 * 0.3).sin()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [2, 12]), &device);
        let y = Tensor::<2>::from_data(TensorData::new(one_hot(&[2, 0], 3), [2, 3]), &device);
        let (logits, classes) = d.score_and_classes(x.clone(), Some(&y), None, Kernels::Reference, None);
        assert_eq!(
            values(logits.clone()),
            values(d.score(x.clone(), None, None, Kernels::Reference)),
            "the labels are not read"
        );
        let mut features = x.clone();
        for linear in &mlp_d(&d).hidden {
            features = leaky_relu(linear.forward(features), mlp_d(&d).leaky_slope);
        }
        let classes = classes.expect("an acgan D's class logits");
        assert_eq!(classes.dims(), [2, 3]);
        assert_eq!(values(classes.clone()), values(aux.forward(features)));
        let (_, fused) = d.score_and_classes(x.clone(), Some(&y), None, Kernels::Fused, None);
        let close = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).all(|(u, v)| (u - v).abs() <= 1e-5);
        assert!(close(values(fused.unwrap()), values(classes.clone())), "fused == reference");
        // Spectral norm normalizes the head too: one more matrix, [features, classes].
        let states = d.spectral_start(&mut rng);
        assert_eq!(d.layer_shapes().last(), Some(&(5, 3)));
        let (_, normalized) = d.score_and_classes(x, Some(&y), None, Kernels::Reference, Some(&states));
        assert!(!close(values(normalized.unwrap()), values(classes)), "σ divides the head's weight");
        // A projection D has no head.
        let projection = ModelConfig { conditional: Conditioning::Projection, ..cfg.clone() };
        let d = Discriminator::new(&projection, 12, &mut rng, &device);
        let x = Tensor::<2>::zeros([2, 12], &device);
        assert!(
            mlp_d(&d).aux.is_none()
                && d.score_and_classes(x, Some(&y), None, Kernels::Reference, None).1.is_none()
        );
        // A dcgan D: the head on the last convolution's features.
        let conv =
            ModelConfig { kind: ModelKind::Dcgan, g_channels: vec![4, 2], d_channels: vec![3, 2], ..cfg };
        let d = Discriminator::new(&conv, 784, &mut rng, &device);
        assert_eq!(dcgan_d(&d).convs[0].weight.dims(), [3, 1, 5, 5], "no class maps");
        assert_eq!(dcgan_d(&d).aux.as_ref().unwrap().weight.dims(), [2 * 7 * 7, 3]);
        let g = Generator::new(&conv, 784, &mut rng, &device);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&conv, 784));
    }

    /// The config's parameter count of a model (what the memory check reads).
    fn cfg_count(m: &ModelConfig, pixels: usize) -> usize {
        parameter_count(m, pixels) as usize
    }

    /// dcgan-tf at batch 256 measured 230 MB peak (gantry bench): the estimate is generous, and
    /// counts its feature maps (an mlp's widths would give far less).
    #[test]
    fn the_memory_estimate_of_a_dcgan_counts_its_feature_maps() {
        let c = crate::config::Config::preset("dcgan-tf").unwrap();
        let estimate = memory_estimate(&c, 784);
        assert!((230 << 20..2 << 30).contains(&estimate), "{estimate}");
        // Per image: G 12,544 + 6,272 (128 x 7²) + 12,544 (64 x 14²); D 12,544 + 6,272.
        assert_eq!(activation_widths(&c.model, 784), 12_544 + 6_272 + 12_544 + 12_544 + 6_272);
    }

    #[test]
    fn model_size_is_estimated_before_anything_is_allocated() {
        // The bug: `g_hidden = [65536, 65536]` passed validation and aborted on a 16 GiB allocation.
        let classic = Config::default();
        // Keras-GAN's simple GAN as Keras' summary counts it: G 1,493,520 (BatchNorm's four
        // vectors included), D 533,505.
        assert_eq!(parameter_count(&classic.model, 784), 1_493_520 + 533_505);
        assert!(memory_estimate(&classic, 784) < 1 << 30, "{}", memory_estimate(&classic, 784));
        let mut huge = Config::default();
        huge.model.g_hidden = vec![65_536, 65_536];
        huge.validate().unwrap();
        assert!(memory_estimate(&huge, 784) > 64 << 30, "{}", memory_estimate(&huge, 784));
    }

    /// G takes the one-hot id beside its noise, a concat D beside the image; with clusters within
    /// classes the ids are classes x clusters.
    #[test]
    fn conditioning_widens_the_inputs_by_the_ids() {
        let mut concat = Config::default();
        concat.model.conditional = crate::config::Conditioning::Concat;
        let m = &concat.model;
        assert_eq!((conditioning::g_input_width(m), conditioning::d_label_width(m)), (110, 10));
        let plain = parameter_count(&Config::default().model, 784);
        assert_eq!(parameter_count(m, 784), plain + 10 * 256 + 10 * 512);
        let mut within = concat.model.clone();
        within.clusters_per_class = 25;
        assert_eq!(conditioning::ids(&within), 250);
    }
}
