//! The building blocks both kinds of network are made of: Keras' initialisation drawn from
//! gantry's own seeded stream, BatchNorm with Keras' conventions, the layers spectral norm
//! divides, and the fixed parameter ids that make saved weights depend on their values alone.

use burn::module::{Module, ModuleMapper, Param, ParamId, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;

use crate::config::ModelConfig;

/// BatchNorm with Keras' conventions (`bn_momentum` is the fraction of the old average kept).
pub(super) fn batch_norm_layer(cfg: &ModelConfig, width: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(width)
        // Keras keeps `momentum` of the old average; burn weighs the new batch by it.
        .with_momentum(1.0 - cfg.bn_momentum)
        .with_epsilon(cfg.bn_epsilon)
        .init(device)
}

/// Glorot-uniform values for a layer with these fans, from `rng`.
pub(super) fn glorot(n: usize, fan_in: usize, fan_out: usize, rng: &mut impl rand::Rng) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..n).map(|_| rng.random_range(-limit..limit)).collect()
}

/// A Dense layer as Keras initialises it: Glorot-uniform kernel, zero bias. The kernel comes from
/// gantry's own seeded stream, so initial weights do not depend on the backend's RNG.
pub(super) fn glorot_dense(d_in: usize, d_out: usize, rng: &mut impl rand::Rng, device: &Device) -> Linear {
    linear_with_kernel(glorot(d_in * d_out, d_in, d_out, rng), d_in, d_out, device)
}

/// A Dense layer without bias, Glorot-uniform weights `[d_in, d_out]` from `rng`.
pub(super) fn glorot_dense_without_bias(
    d_in: usize,
    d_out: usize,
    rng: &mut impl rand::Rng,
    device: &Device,
) -> Linear {
    let kernel = glorot(d_in * d_out, d_in, d_out, rng);
    let mut linear = LinearConfig::new(d_in, d_out).with_bias(false).init(device);
    linear.weight = Param::from_data(TensorData::new(kernel, [d_in, d_out]), device);
    linear
}

/// A dense layer with the given kernel (row layout `[d_in, d_out]`, like Keras') and zero biases:
/// weights come from gantry's own seeded streams, not burn's global RNG.
pub(crate) fn linear_with_kernel(kernel: Vec<f32>, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out).with_initializer(Initializer::Zeros).init(device);
    linear.weight = Param::from_data(TensorData::new(kernel, [d_in, d_out]), device);
    linear
}

/// A spectrally normalized dense layer: `x (W / σ)` computed as `(x W) / σ` (the same function
/// and gradients, and a [b, d_out] division instead of one of the whole weight), plus the bias.
pub(super) fn dense_spectral(x: Tensor<2>, linear: &Linear, sigma: Tensor<2>) -> Tensor<2> {
    let y = x.matmul(linear.weight.val()) / sigma;
    match &linear.bias {
        Some(bias) => y + bias.val().unsqueeze::<2>(),
        None => y,
    }
}

/// First parameter id of each network (see [`stable_ids`]).
pub(super) const GENERATOR_IDS: u64 = 1_000;
pub(super) const DISCRIMINATOR_IDS: u64 = 2_000;

/// Give every parameter of `module` a fixed id in visiting order (the modules' field order) from
/// `base`, and each of `norms`' moving statistics the next ones (instead of random ids), so that
/// saved weights depend only on their values and a resumed run writes the same bytes. Returns the
/// module and the norms' owner after `renumber_norms` has been applied.
pub(super) fn stable_ids<M: Module>(
    module: M,
    base: u64,
    norms: impl FnOnce(&mut M) -> Vec<&mut BatchNorm>,
) -> M {
    let mut mapper = StableIds { next: base };
    let mut module = module.map(&mut mapper);
    for norm in norms(&mut module) {
        for state in [&mut norm.running_mean, &mut norm.running_var] {
            *state = RunningState::with_id(ParamId::from(mapper.next), state.value_sync());
            mapper.next += 1;
        }
    }
    module
}

/// Renumbers parameters in visiting order.
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
