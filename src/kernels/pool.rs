//! ReLU followed by 2x2 max pooling (stride 2) as one backend operation: the judge's
//! `max_pool(relu(conv(x)))`, twice per image.
//!
//! burn computes it as two operations, each a pass over the conv's output with its own buffer: a
//! ReLU, then a pooling written for any window, stride, padding and dilation (bounds worked out per
//! output element) that also stores an `i64` index per output for the backward pass; backward, a
//! zero-filled scatter of the gradient by those indices and a masked ReLU gradient. Training the
//! judge spends a sizeable share of its time there. Here the forward pass is one pass over the
//! input and stores nothing but the input (already kept for the convolution's backward pass); the
//! backward pass finds each window's winner again from it and writes the whole input gradient once.
//!
//! Both passes compute what burn's do, value for value: the window's elements after ReLU, compared
//! in burn's order (row by row) with burn's rule (the first of equal maxima wins, a NaN always
//! wins); the winner's gradient is `0.0 + g` (the scatter adds into zeros) where its input is
//! positive or NaN (ReLU's gradient) and `0.0` elsewhere. The tests below check bit equality with
//! the composed operations, forward and backward. Pooling moves values and does no arithmetic, so
//! this changes no result: the judge trained with it has the same weights, byte for byte.
//!
//! Backends: Flex (with and without `Autodiff`), f32 tensors with even height and width; anything
//! else takes the composed default bodies, as a backend listed later would.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, IntDType, Tensor, TensorData};
use rayon::prelude::*;

/// `max_pool_2x2(relu(x))`, x `[batch, channels, height, width]` -> `[.., height / 2, width / 2]`
/// (an odd last row or column is dropped, as pooling without padding does). Differentiable on an
/// autodiff device.
pub fn relu_max_pool2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ReluPoolOps>::relu_max_pool2(x.into_dispatch()))
}

/// The same from burn's own operations: the reference the fused one must equal.
pub fn composed(x: Tensor<4>) -> Tensor<4> {
    burn::nn::pool::MaxPool2dConfig::new(WINDOW).init().forward(burn::tensor::activation::relu(x))
}

const WINDOW: [usize; 2] = [2, 2];
const NO_PADDING: [usize; 2] = [0, 0];
const NO_DILATION: [usize; 2] = [1, 1];

/// The backend operations behind [`relu_max_pool2`]. The default bodies compose burn's primitives
/// (any backend); Flex overrides them, and `Autodiff` adds the backward pass.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait ReluPoolOps: Backend {
    /// `max_pool_2x2(relu(x))`.
    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_forward::<Self>(x)
    }

    /// The input's gradient from the input and the output's gradient.
    fn relu_max_pool2_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_backward::<Self>(x, grad)
    }
}

/// Forward from burn primitives: ReLU, then max pooling.
fn composed_forward<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::max_pool2d(B::relu(x), WINDOW, WINDOW, NO_PADDING, NO_DILATION, false)
}

/// Backward from burn primitives, as burn's autodiff computes it: the pooling's scatter of the
/// gradient to each window's winner, then ReLU's gradient.
fn composed_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let pooled = B::max_pool2d_with_indices(
        B::relu(x.clone()),
        WINDOW,
        WINDOW,
        NO_PADDING,
        NO_DILATION,
        false,
        IntDType::I64,
    );
    let grad = B::max_pool2d_with_indices_backward(
        x.clone(),
        WINDOW,
        WINDOW,
        NO_PADDING,
        NO_DILATION,
        false,
        grad,
        pooled.indices,
    )
    .x_grad;
    B::relu_backward(x, grad)
}

/// Whether Flex's own kernels apply: f32, four dimensions, windows that fit.
fn fused_applies(x: &FloatTensor<Flex>) -> bool {
    let shape = x.shape();
    x.dtype() == DType::F32 && shape.num_dims() == 4 && shape[2] >= 2 && shape[3] >= 2
}

/// burn's ReLU of one value.
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v.is_nan() || v > 0.0 { v } else { 0.0 }
}

/// The window's winner after ReLU: its position (0..4, row by row) and value, by burn's rule.
#[inline(always)]
fn winner(window: [f32; 4]) -> (usize, f32) {
    let (mut at, mut best) = (0, relu(window[0]));
    for (i, &v) in window.iter().enumerate().skip(1) {
        let v = relu(v);
        if v > best || v.is_nan() {
            (at, best) = (i, v);
        }
    }
    (at, best)
}

/// Planes of at least this many input elements per task (below, one plane each).
const PLANES_PER_TASK_MIN_ELEMENTS: usize = 1 << 13;

/// The wgpu backend (and any other CubeCL runtime) takes the composed default bodies.
#[cfg(feature = "gpu")]
impl ReluPoolOps for burn::backend::Cube {}

impl ReluPoolOps for Flex {
    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !fused_applies(&x) {
            return composed_forward::<Self>(x);
        }
        let x = x.to_contiguous();
        let shape = x.shape();
        let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
        let (oh, ow) = (h / 2, w / 2);
        let xs = &x.storage::<f32>()[..planes * h * w];
        let mut out = vec![0f32; planes * oh * ow];
        let per_task = (PLANES_PER_TASK_MIN_ELEMENTS / (h * w)).max(1);
        out.par_chunks_mut(per_task * oh * ow).zip(xs.par_chunks(per_task * h * w)).for_each(|(out, xs)| {
            for (out, plane) in out.chunks_exact_mut(oh * ow).zip(xs.chunks_exact(h * w)) {
                for i in 0..oh {
                    let (top, bottom) = (&plane[2 * i * w..], &plane[(2 * i + 1) * w..]);
                    for j in 0..ow {
                        let window = [top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]];
                        out[i * ow + j] = winner(window).1;
                    }
                }
            }
        });
        FloatTensor::<Self>::from_data(TensorData::new(out, [shape[0], shape[1], oh, ow]))
    }

    fn relu_max_pool2_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !fused_applies(&x) || grad.dtype() != DType::F32 {
            return composed_backward::<Self>(x, grad);
        }
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let shape = x.shape();
        let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
        let (oh, ow) = (h / 2, w / 2);
        let xs = &x.storage::<f32>()[..planes * h * w];
        let gs = &grad.storage::<f32>()[..planes * oh * ow];
        // Every element is written: a window's winner gets the gradient, all else 0.0 (also the
        // odd last row or column, which no window covers).
        let mut out = vec![0f32; planes * h * w];
        let per_task = (PLANES_PER_TASK_MIN_ELEMENTS / (h * w)).max(1);
        out.par_chunks_mut(per_task * h * w)
            .zip(xs.par_chunks(per_task * h * w))
            .zip(gs.par_chunks(per_task * oh * ow))
            .for_each(|((out, xs), gs)| {
                let planes = out.chunks_exact_mut(h * w).zip(xs.chunks_exact(h * w));
                for ((out, plane), gs) in planes.zip(gs.chunks_exact(oh * ow)) {
                    for i in 0..oh {
                        for j in 0..ow {
                            let at = [2 * i * w + 2 * j, 2 * i * w + 2 * j + 1, (2 * i + 1) * w + 2 * j];
                            let at = [at[0], at[1], at[2], at[2] + 1];
                            let window = at.map(|k| plane[k]);
                            let (won, _) = winner(window);
                            let v = window[won];
                            // The scatter adds into zeros; ReLU's gradient keeps positive (and NaN)
                            // inputs' and zeroes the others.
                            if v.is_nan() || v > 0.0 {
                                out[at[won]] = 0.0 + gs[i * ow + j];
                            }
                        }
                    }
                }
            });
        FloatTensor::<Self>::from_data(TensorData::new(out, [shape[0], shape[1], h, w]))
    }
}

impl<B: Backend + ReluPoolOps, C: CheckpointStrategy> ReluPoolOps for Autodiff<B, C> {
    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The backward step; its state: the saved input.
        #[derive(Debug)]
        struct ReluPoolBackward;

        impl<B: Backend + ReluPoolOps> Backward<B, 1> for ReluPoolBackward {
            type State = NodeId;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = node_x {
                    let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(ops.state);
                    grads.register::<B>(node.id, B::relu_max_pool2_backward(x, grad));
                }
            }
        }

        match ReluPoolBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                let output = B::relu_max_pool2(x.into_primitive());
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::relu_max_pool2(x.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn bits(t: Tensor<4>) -> Vec<u32> {
        t.into_data().try_to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    /// Values with many exact ties (zeros after ReLU, repeated positives), negative zeros and
    /// negatives, in planes of odd and even sizes.
    fn input(shape: [usize; 4], device: &Device) -> Tensor<4> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| match (i * 7919) % 11 {
                0 => 0.0,
                1 => -0.0,
                2 => 0.5,
                3 => -1.5,
                k => (k as f32 - 6.0) * 0.25 + (i % 13) as f32 * 1e-3,
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    #[test]
    fn forward_is_bit_identical_to_relu_then_max_pool() {
        let device = Device::flex();
        for shape in [[3, 4, 28, 28], [2, 5, 10, 10], [1, 2, 7, 9], [2, 1, 2, 2]] {
            let x = input(shape, &device);
            assert_eq!(bits(relu_max_pool2(x.clone())), bits(composed(x)), "{shape:?}");
        }
    }

    #[test]
    fn gradients_are_bit_identical_to_relu_then_max_pool() {
        let device = Device::flex().autodiff();
        for shape in [[3, 4, 28, 28], [2, 5, 10, 10], [1, 2, 7, 9]] {
            let x = input(shape, &device).require_grad();
            let n: usize = shape.iter().product::<usize>() / 4;
            // An output gradient with signs, zeros and negative zeros.
            let weights: Vec<f32> =
                (0..n).map(|i| [1.0, -0.5, 0.0, -0.0, 2.25][i % 5] + i as f32 * 1e-4).collect();
            let out_shape = [shape[0], shape[1], shape[2] / 2, shape[3] / 2];
            let weights = Tensor::<4>::from_data(
                TensorData::new(weights[..out_shape.iter().product()].to_vec(), out_shape),
                &device,
            );
            let fused = (relu_max_pool2(x.clone()) * weights.clone()).sum().backward();
            let reference = (composed(x.clone()) * weights).sum().backward();
            let (a, b) = (x.grad(&fused).unwrap(), x.grad(&reference).unwrap());
            assert_eq!(bits(a), bits(b), "{shape:?}");
        }
    }
}
