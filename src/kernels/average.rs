//! One step of a moving average of weights (`train.g_ema`), fused: `average · decay + live ·
//! (1 − decay)` for each parameter in one pass over its buffer, where burn's tensor operations make
//! three passes and three new tensors (a G of the `dcgan` preset has 700,000 parameters, averaged
//! after every step).
//!
//! Each element goes through exactly the f32 operations of the composed form, in its order (two
//! products, then their sum; no fused multiply-add): the same bits (the test below checks it).
//!
//! Backends: Flex, f32. The wgpu backend (`Cube`, feature `gpu`) takes the composed default body.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};

use super::dense::whole_buffer;
use super::on_wide_lanes;

/// `average · decay + live · (1 − decay)`, element by element (same shapes).
pub fn moving_average<const D: usize>(average: Tensor<D>, live: Tensor<D>, decay: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as AverageOps>::moving_average(
        average.into_dispatch(),
        live.into_dispatch(),
        decay,
    ))
}

/// The backend operation behind [`moving_average`]. The default body composes burn's primitives,
/// as `average * decay + live * (1.0 - decay)` on tensors does; Flex overrides it.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"))]
pub trait AverageOps: Backend {
    /// `average · decay + live · (1 − decay)`.
    fn moving_average(average: FloatTensor<Self>, live: FloatTensor<Self>, decay: f64) -> FloatTensor<Self> {
        composed::<Self>(average, live, decay)
    }
}

fn composed<B: Backend>(average: FloatTensor<B>, live: FloatTensor<B>, decay: f64) -> FloatTensor<B> {
    let kept = B::float_mul_scalar(average, decay.into());
    B::float_add(kept, B::float_mul_scalar(live, (1.0 - decay).into()))
}

#[cfg(feature = "gpu")]
impl AverageOps for burn::backend::Cube {}

impl AverageOps for Flex {
    fn moving_average(average: FloatTensor<Self>, live: FloatTensor<Self>, decay: f64) -> FloatTensor<Self> {
        let n = average.shape().num_elements();
        let uniform =
            [&average, &live].iter().all(|t| t.dtype() == DType::F32 && t.shape().num_elements() == n);
        if !uniform || average.shape() != live.shape() {
            return composed::<Self>(average, live, decay);
        }
        // The scalars as burn's scalar operations apply them to f32 tensors.
        let (kept, taken) = (decay as f32, (1.0 - decay) as f32);
        // In place when the buffer is the average's alone (`storage_mut` copies otherwise).
        let mut average = whole_buffer(average);
        let live = live.to_contiguous();
        let ls = &live.storage::<f32>()[..n];
        let avg = &mut average.storage_mut::<f32>()[..n];
        on_wide_lanes(move || avg.iter_mut().zip(ls).for_each(|(a, l)| *a = *a * kept + *l * taken));
        average
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn bits(t: Tensor<2>) -> Vec<u32> {
        t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// The fused step gives the bits of the tensor expression the model used, for the decays
    /// the warm-up takes and the configured one.
    #[test]
    fn the_fused_average_is_the_tensor_expressions_bits() {
        let device = Device::flex();
        let values = |seed: usize| -> Vec<f32> {
            (0..3 * 1001).map(|i| (((i + seed) * 7919) % 1009) as f32 / 97.0 - 5.0).collect()
        };
        for decay in [0.1, 0.5, 0.9, 0.999, 0.9999] {
            let average = Tensor::<2>::from_data(TensorData::new(values(1), [3, 1001]), &device);
            let live = Tensor::<2>::from_data(TensorData::new(values(2), [3, 1001]), &device);
            let expected = average.clone() * decay + live.clone() * (1.0 - decay);
            assert_eq!(bits(moving_average(average, live, decay)), bits(expected), "decay {decay}");
        }
    }
}
