//! The two networks of the classic "simple GAN" (Keras-GAN's gan.py), built from the config so
//! the same code trains on any burn device.
//!
//! G: z [batch, latent] -> (Dense -> LeakyReLU -> BatchNorm)* -> Dense -> tanh -> [batch, pixels]
//! D: x [batch, pixels] -> (Dense -> LeakyReLU)* -> Dense -> logit [batch, 1]
//! D returns the logit; the sigmoid lives in the loss (binary cross-entropy from logits), which is
//! what Keras' TF backend computes for a sigmoid output and is numerically stable.

use burn::module::{Module, ModuleMapper, Param, ParamId, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;

use crate::config::ModelConfig;

use crate::kernels::batch_norm::batch_norm;
use crate::kernels::dense::{Activation, dense};

/// The generator.
#[derive(Module, Debug)]
pub struct Generator {
    hidden: Vec<Linear>,
    norms: Vec<BatchNorm>,
    output: Linear,
    leaky_slope: f64,
}

/// The discriminator (returns logits).
#[derive(Module, Debug)]
pub struct Discriminator {
    hidden: Vec<Linear>,
    output: Linear,
    leaky_slope: f64,
}

impl Generator {
    /// Build G with Glorot-uniform weights and zero biases drawn from `rng`.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let mut width = cfg.latent_dim;
        let mut hidden = Vec::new();
        let mut norms = Vec::new();
        for &w in &cfg.g_hidden {
            hidden.push(glorot_dense(width, w, rng, device));
            norms.push(
                BatchNormConfig::new(w)
                    // Keras keeps `momentum` of the old average; burn weighs the new batch by it.
                    .with_momentum(1.0 - cfg.bn_momentum)
                    .with_epsilon(cfg.bn_epsilon)
                    .init(device),
            );
            width = w;
        }
        let output = glorot_dense(width, pixels, rng, device);
        let g = Self { hidden, norms, output, leaky_slope: cfg.leaky_slope };
        g.with_stable_ids(GENERATOR_IDS)
    }

    /// Give every parameter and BatchNorm statistic a fixed id (instead of a random one), so that
    /// saved weights depend only on their values and a resumed run writes the same bytes.
    fn with_stable_ids(self, base: u64) -> Self {
        let mut mapper = StableIds { next: base };
        let mut g = self.map(&mut mapper);
        for norm in &mut g.norms {
            for state in [&mut norm.running_mean, &mut norm.running_var] {
                *state = RunningState::with_id(ParamId::from(mapper.next), state.value_sync());
                mapper.next += 1;
            }
        }
        g
    }

    /// `z` [batch, latent] -> images [batch, pixels] in [-1, 1].
    /// BatchNorm uses batch statistics on an autodiff device in training mode, moving statistics
    /// otherwise (`g.valid()`).
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = batch_norm(dense(x, linear, Activation::LeakyRelu(self.leaky_slope)), norm);
        }
        dense(x, &self.output, Activation::Tanh)
    }

    /// [`Generator::forward`] with burn's own modules and activations only (the reference path:
    /// `Linear::forward`, `leaky_relu`, `BatchNorm::forward`, `tanh`), none of gantry's kernels.
    pub fn forward_reference(&self, z: Tensor<2>) -> Tensor<2> {
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = norm.forward(leaky_relu(linear.forward(x), self.leaky_slope));
        }
        self.output.forward(x).tanh()
    }
}

impl Discriminator {
    /// Build D with Glorot-uniform weights and zero biases drawn from `rng`.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let mut width = pixels;
        let mut hidden = Vec::new();
        for &w in &cfg.d_hidden {
            hidden.push(glorot_dense(width, w, rng, device));
            width = w;
        }
        let output = glorot_dense(width, 1, rng, device);
        Self { hidden, output, leaky_slope: cfg.leaky_slope }.map(&mut StableIds { next: DISCRIMINATOR_IDS })
    }

    /// Images [batch, pixels] -> logits [batch, 1].
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = x;
        for linear in &self.hidden {
            x = dense(x, linear, Activation::LeakyRelu(self.leaky_slope));
        }
        dense(x, &self.output, Activation::Identity)
    }

    /// [`Discriminator::forward`] with burn's own modules and activations only.
    pub fn forward_reference(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = x;
        for linear in &self.hidden {
            x = leaky_relu(linear.forward(x), self.leaky_slope);
        }
        self.output.forward(x)
    }

    /// Clip every weight and bias to [-c, c] (WGAN's critic), keeping parameter ids.
    pub fn clipped(self, c: f64) -> Self {
        self.map(&mut Clip { c })
    }
}

/// Clamps every parameter into [-c, c]; the clamped value is a fresh leaf (no graph behind it).
struct Clip {
    c: f64,
}

impl ModuleMapper for Clip {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let (grad, device, shape) = (value.is_require_grad(), value.device(), value.shape());
        let c = self.c as f32;
        let values: Vec<f32> = value.into_data().iter::<f32>().map(|v| v.clamp(-c, c)).collect();
        let clamped = Tensor::<D>::from_data(TensorData::new(values, shape), &device);
        Param::from_mapped_value(id, if grad { clamped.require_grad() } else { clamped }, mapper)
    }
}

/// First parameter id of each network (see [`Generator::with_stable_ids`]).
const GENERATOR_IDS: u64 = 1_000;
const DISCRIMINATOR_IDS: u64 = 2_000;

/// Renumbers parameters in visiting order (the modules' field order).
struct StableIds {
    next: u64,
}

impl ModuleMapper for StableIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        let id = ParamId::from(self.next);
        self.next += 1;
        Param::from_mapped_value(id, value, mapper)
    }
}

/// A Dense layer as Keras initialises it: Glorot-uniform kernel, zero bias. The kernel comes from
/// gantry's own seeded stream, so initial weights do not depend on the backend's RNG.
fn glorot_dense(d_in: usize, d_out: usize, rng: &mut impl rand::Rng, device: &Device) -> Linear {
    let limit = (6.0 / (d_in + d_out) as f64).sqrt() as f32;
    let kernel: Vec<f32> = (0..d_in * d_out).map(|_| rng.random_range(-limit..limit)).collect();
    linear_with_kernel(kernel, d_in, d_out, device)
}

/// A dense layer with the given kernel (row layout `[d_in, d_out]`, like Keras') and zero biases:
/// weights come from gantry's own seeded streams, not burn's global RNG.
pub(crate) fn linear_with_kernel(kernel: Vec<f32>, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out).with_initializer(Initializer::Zeros).init(device);
    linear.weight = Param::from_data(TensorData::new(kernel, [d_in, d_out]), device);
    linear
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
        let w: Vec<f32> = clipped.hidden[0].weight.val().into_data().try_into_vec().unwrap();
        assert!(w.iter().all(|v| v.abs() <= 0.01) && w.iter().any(|v| v.abs() == 0.01));
    }

    #[test]
    fn glorot_limits_and_zero_bias() {
        let device = Device::flex();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let l = glorot_dense(100, 256, &mut rng, &device);
        let w: Vec<f32> = l.weight.val().into_data().try_into_vec().unwrap();
        let limit = (6.0f32 / 356.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit));
        assert!(w.iter().map(|v| v.abs()).fold(0.0, f32::max) > 0.9 * limit);
        let b: Vec<f32> = l.bias.unwrap().val().into_data().try_into_vec().unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
    }
}
