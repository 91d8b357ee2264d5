//! Leaky ReLU as one backend operation each way.
//!
//! On an autodiff backend burn composes leaky ReLU from three operations (a comparison, a scaled
//! copy and a masked select), each a pass over the tensor with its own buffer, and its backward
//! pass from as many again. The convolutional networks apply it to every hidden feature map (a
//! DCGAN step at batch 256: tens of millions of values, several times over), where those passes
//! took about a tenth of the step. Here the forward pass is one pass and keeps the input; the
//! backward pass is one pass over the input and the gradient.
//!
//! Both compute what burn's composition does, value for value: `x` where `x >= 0` (and NaN), else
//! `slope * x`; the gradient `g + 0.0` where `x >= 0`, else `0.0 + g * slope` (the masked
//! select's two branches, one of them zero, summed; the zero gives -0.0 the sign burn gives it).
//! The tests below check bit equality with burn's `leaky_relu`, forward and backward.
//!
//! Backends: Flex (with and without `Autodiff`), f32; anything else takes the composed default
//! bodies.

use super::on_wide_lanes;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, get_or_init_device_settings,
};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `x` where `x >= 0`, else `slope * x`, element-wise. Differentiable on an autodiff device.
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as LeakyReluOps>::fused_leaky_relu(x.into_dispatch(), slope))
}

/// The backend operations behind [`leaky_relu`]. The default bodies compose burn's primitives (any
/// backend); Flex overrides them, and `Autodiff` adds the backward pass.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait LeakyReluOps: Backend {
    /// Leaky ReLU of `x`.
    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        composed_forward::<Self>(x, slope)
    }

    /// The input's gradient from the input and the output's gradient.
    fn fused_leaky_relu_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        slope: f64,
    ) -> FloatTensor<Self> {
        composed_backward::<Self>(x, grad, slope)
    }
}

/// Forward from burn primitives.
fn composed_forward<B: Backend>(x: FloatTensor<B>, slope: f64) -> FloatTensor<B> {
    B::leaky_relu(x, slope.into())
}

/// The gradient from burn primitives, as burn's autodiff computes it for the composition.
fn composed_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>, slope: f64) -> FloatTensor<B> {
    let bool_dtype = get_or_init_device_settings::<B>(&x.device()).bool_dtype;
    let negative = B::float_lower_elem(x, 0f32.into(), bool_dtype);
    let scaled = B::float_mul_scalar(grad.clone(), slope.into());
    B::float_mask_where(grad, negative, scaled)
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

fn f32_tensor(t: &FloatTensor<Flex>) -> bool {
    t.dtype() == DType::F32
}

/// The wgpu backend (and any other CubeCL runtime) takes the composed default bodies.
#[cfg(feature = "gpu")]
impl LeakyReluOps for burn::backend::Cube {}

impl LeakyReluOps for Flex {
    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        if !f32_tensor(&x) {
            return composed_forward::<Self>(x, slope);
        }
        let x = x.to_contiguous();
        let shape = x.shape();
        let n = shape.num_elements();
        let slope = slope as f32;
        let xs = &x.storage::<f32>()[..n];
        let out = map_chunks(n, |first, out| forward(&xs[first..][..out.len()], out, slope));
        FloatTensor::<Self>::from_data(TensorData::new(out, shape))
    }

    fn fused_leaky_relu_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        slope: f64,
    ) -> FloatTensor<Self> {
        if !f32_tensor(&x) || !f32_tensor(&grad) || x.shape() != grad.shape() {
            return composed_backward::<Self>(x, grad, slope);
        }
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let shape = x.shape();
        let n = shape.num_elements();
        let slope = slope as f32;
        let (xs, gs) = (&x.storage::<f32>()[..n], &grad.storage::<f32>()[..n]);
        let out = map_chunks(n, |first, out| {
            let len = out.len();
            backward(&xs[first..][..len], &gs[first..][..len], out, slope)
        });
        FloatTensor::<Self>::from_data(TensorData::new(out, shape))
    }
}

/// A new vector of `n` values, [`CHUNK`] at a time across the threads: `fill(first, out)` writes
/// every element of `out`, the values from `first` on.
fn map_chunks(n: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| fill(c * CHUNK, chunk));
    // SAFETY: `fill` wrote each of the n elements (forward and backward write all of `out`).
    unsafe { out.set_len(n) };
    out
}

/// burn's masked select, without a branch: the scaled value where x < 0, x itself elsewhere
/// (NaN and both zeros included), on AVX-512's 16 lanes where the CPU has them.
fn forward(xs: &[f32], out: &mut [MaybeUninit<f32>], slope: f32) {
    on_wide_lanes(move || {
        for (o, &x) in out.iter_mut().zip(xs) {
            o.write(if x < 0.0 { x * slope } else { x });
        }
    })
}

/// The gradient through the masked select: `0.0 + g * slope` where x < 0, else `g + 0.0`.
fn backward(xs: &[f32], gs: &[f32], out: &mut [MaybeUninit<f32>], slope: f32) {
    on_wide_lanes(move || {
        for ((o, &x), &g) in out.iter_mut().zip(xs).zip(gs) {
            o.write(if x < 0.0 { 0.0 + g * slope } else { g + 0.0 });
        }
    })
}

impl<B: Backend + LeakyReluOps, C: CheckpointStrategy> LeakyReluOps for Autodiff<B, C> {
    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        /// The backward step; its state: the saved input and the slope.
        #[derive(Debug)]
        struct LeakyReluBackward;

        impl<B: Backend + LeakyReluOps> Backward<B, 1> for LeakyReluBackward {
            type State = (NodeId, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = node_x {
                    let (state, slope) = ops.state;
                    let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(state);
                    grads.register::<B>(node.id, B::fused_leaky_relu_backward(x, grad, slope));
                }
            }
        }

        match LeakyReluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                let output = B::fused_leaky_relu(x.into_primitive(), slope);
                prep.finish((state, slope), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_leaky_relu(x.into_primitive(), slope)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
        t.into_data().try_to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    /// Negatives, positives, both zeros and NaN, more than one parallel chunk of them.
    fn input(device: &Device) -> Tensor<4> {
        let specials = [0.0, -0.0, 1.5, -2.25, f32::NAN, 1e-30, -1e-30];
        let values: Vec<f32> = (0..2 * 3 * 100 * 70)
            .map(|i| if i % 97 < 7 { specials[i % 97] } else { (i as f32 * 0.37).sin() })
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 3, 100, 70]), device)
    }

    #[test]
    fn forward_and_gradients_are_bit_identical_to_burns_leaky_relu() {
        let device = Device::flex().autodiff();
        for slope in [0.3, 0.2, 0.0] {
            let x = input(&device).require_grad();
            let weights = input(&device).cos(); // a non-uniform output gradient, signs mixed
            let (fused, reference) =
                (leaky_relu(x.clone(), slope), burn::tensor::activation::leaky_relu(x.clone(), slope));
            assert_eq!(bits(fused.clone()), bits(reference.clone()), "forward, slope {slope}");
            let (a, b) = ((fused * weights.clone()).sum().backward(), (reference * weights).sum().backward());
            assert_eq!(bits(x.grad(&a).unwrap()), bits(x.grad(&b).unwrap()), "gradient, slope {slope}");
        }
    }
}
