//! The dense layer with its activation as one backend operation: `act(x · W + b)`.
//!
//! burn composes a dense layer and its activation from separate operations: a matrix product into
//! a zero-filled buffer, a broadcast bias add, and for leaky ReLU a comparison, a scaled copy and a
//! masked select, each allocating a tensor, with as many again in the backward pass. On batch-32
//! MLPs those passes and allocations cost as much as the matrix products. This module adds the
//! layer as a burn backend extension ([`DenseOps`]): on the CPU backend (Flex) the product is one
//! `gemm` call and bias plus activation one pass over its output; the backward pass (on burn's
//! `Autodiff`) turns the output gradient into the pre-activation gradient in one pass, then computes
//! the input's and the weight's gradients side by side, each one `gemm` call on the saved tensors.
//!
//! The arithmetic is the same, operation for operation, as `activation(linear.forward(x))` and its
//! backward pass in burn, so results are bit-identical to the composed layer (the tests below check
//! it; tanh is [`super::tanh`]'s vectorized form of the C library's `tanhf`, the same bits on
//! glibc). The model code calls [`dense`] with its `burn::nn::Linear` modules; parameters, records
//! and checkpoints are unchanged.
//!
//! Backends: Flex (with and without `Autodiff`). The wgpu backend (`Cube`, feature `gpu`) gets the
//! composed default bodies by being listed in `#[backend_extension(..)]` with an empty `impl`.

use super::tanh::{self, tanh_in_place};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, get_or_init_device_settings,
};
use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// The activation applied after a dense layer's bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// No activation (a logit output).
    Identity,
    /// `x` for `x >= 0`, `slope * x` below.
    LeakyRelu(f64),
    /// `tanh(x)`.
    Tanh,
}

/// Apply a [`burn::nn::Linear`] and an activation as one operation: `act(x · W + b)`,
/// x `[batch, d_in]` -> `[batch, d_out]`. Differentiable on an autodiff device.
pub fn dense(x: Tensor<2>, linear: &Linear, activation: Activation) -> Tensor<2> {
    let Some(bias) = &linear.bias else {
        return composed(x, linear, activation);
    };
    let out = <Dispatch as DenseOps>::dense(
        x.into_dispatch(),
        linear.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
        activation,
    );
    Tensor::from_dispatch(out)
}

/// The same layer from burn's own operations: the reference the fused one must equal.
pub fn composed(x: Tensor<2>, linear: &Linear, activation: Activation) -> Tensor<2> {
    let y = linear.forward(x);
    match activation {
        Activation::Identity => y,
        Activation::LeakyRelu(slope) => burn::tensor::activation::leaky_relu(y, slope),
        Activation::Tanh => burn::tensor::activation::tanh(y),
    }
}

/// The backend operations behind [`dense`]. The default bodies compose burn's primitives (any
/// backend); Flex overrides them with the fused kernels, and `Autodiff` adds the backward pass.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait DenseOps: Backend {
    /// `act(x · weight + bias)`: x `[batch, d_in]`, weight `[d_in, d_out]`, bias `[d_out]`.
    fn dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        composed_forward::<Self>(x, weight, bias, activation)
    }

    /// The input's gradient `grad · weightᵀ`: grad `[batch, d_out]`, weight `[d_in, d_out]`.
    fn dense_input_grad(grad: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear_x_backward(weight, grad)
    }

    /// The weight's gradient `xᵀ · grad`: x `[batch, d_in]`, grad `[batch, d_out]`.
    fn dense_weight_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear_weight_backward(x, grad)
    }

    /// The gradient before the activation, from the gradient after it and the layer's output:
    /// `grad · act'(x)`, with `act'` read off the output (`[batch, d_out]` both).
    fn dense_activation_grad(
        grad: FloatTensor<Self>,
        output: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        composed_activation_grad::<Self>(grad, output, activation)
    }
}

/// Forward from burn primitives, in the order burn's `Linear` and activations apply them.
fn composed_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    activation: Activation,
) -> FloatTensor<B> {
    let y = B::linear(x, weight, Some(bias));
    match activation {
        Activation::Identity => y,
        Activation::LeakyRelu(slope) => B::leaky_relu(y, slope.into()),
        Activation::Tanh => B::float_tanh(y),
    }
}

/// Activation gradient from burn primitives (as burn's autodiff computes it for each activation).
fn composed_activation_grad<B: Backend>(
    grad: FloatTensor<B>,
    output: FloatTensor<B>,
    activation: Activation,
) -> FloatTensor<B> {
    match activation {
        Activation::Identity => grad,
        Activation::LeakyRelu(slope) => {
            let bool_dtype = get_or_init_device_settings::<B>(&output.device()).bool_dtype;
            let negative = B::float_lower_elem(output, 0f32.into(), bool_dtype);
            let scaled = B::float_mul_scalar(grad.clone(), slope.into());
            B::float_mask_where(grad, negative, scaled)
        }
        Activation::Tanh => tanh::composed_gradient::<B>(output, grad),
    }
}

/// Batches below this size get the input gradient column by column (see `dense_input_grad`).
const COLUMN_ORDER_MAX_BATCH: usize = 128;

/// Layer outputs from this many elements finish their tanh on several threads.
const PARALLEL_MIN_TANH: usize = 1 << 14;

/// Matrix products below this many multiply-adds run on one thread. burn-flex splits from 192³;
/// here the layer's independent products already run side by side (see the backward pass, and
/// the training step), and splitting a batch-32 product as well cost more in thread wake-ups than
/// it saved (`gantry bench`: 8.4-9.2 -> 7.5-7.7 ms at batch 32; no change at 256). gemm's result
/// does not depend on the split.
const PARALLEL_MIN_MACS: usize = 1 << 25;

/// The wgpu backend (and any other CubeCL runtime) takes the composed default bodies.
#[cfg(feature = "gpu")]
impl DenseOps for burn::backend::Cube {}

impl DenseOps for Flex {
    fn dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&x, &weight, &bias]) {
            return composed_forward::<Self>(x, weight, bias, activation);
        }
        let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
        let (batch, d_in, d_out) = (x.shape()[0], x.shape()[1], weight.shape()[1]);
        assert_eq!(weight.shape()[0], d_in, "dense: input width and weight rows differ");
        assert_eq!(bias.shape().num_elements(), d_out, "dense: bias and weight columns differ");
        let (xs, ws, bs) = (x.storage::<f32>(), weight.storage::<f32>(), bias.storage::<f32>());
        let (xs, ws, bs) = (&xs[..batch * d_in], &ws[..d_in * d_out], &bs[..d_out]);

        // [batch, d_out] = [batch, d_in] · [d_in, d_out]
        let mut out = layer_output(batch, d_out, d_in, xs, d_in, ws);

        // Bias and activation in one pass over each row: [d_out] + [d_out].
        let finish_rows = |rows: &mut [f32]| {
            for row in rows.chunks_exact_mut(d_out) {
                match activation {
                    Activation::Identity => row.iter_mut().zip(bs).for_each(|(v, b)| *v += b),
                    Activation::LeakyRelu(slope) => {
                        let slope = slope as f32;
                        for (v, b) in row.iter_mut().zip(bs) {
                            let pre = *v + b;
                            *v = if pre < 0.0 { pre * slope } else { pre };
                        }
                    }
                    Activation::Tanh => {
                        row.iter_mut().zip(bs).for_each(|(v, b)| *v += b);
                        tanh_in_place(row);
                    }
                }
            }
        };
        // tanh still takes ~3 ns an element (G's output at batch 256: 200,000 of them), so it is
        // offered to the pool in blocks of rows; the element-wise work is the same.
        if activation == Activation::Tanh && out.len() >= PARALLEL_MIN_TANH {
            let rows_per_task = (PARALLEL_MIN_TANH / d_out).max(1);
            out.par_chunks_mut(rows_per_task * d_out).for_each(finish_rows);
        } else {
            finish_rows(&mut out);
        }
        FloatTensor::<Self>::from_data(TensorData::new(out, [batch, d_out]))
    }

    fn dense_input_grad(grad: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&[&grad, &weight]) {
            return <Self as ModuleOps<Self>>::linear_x_backward(weight, grad);
        }
        let (grad, weight) = (grad.to_contiguous(), weight.to_contiguous());
        let (batch, d_in, d_out) = (grad.shape()[0], weight.shape()[0], weight.shape()[1]);
        let (gs, ws) = (&grad.storage::<f32>()[..batch * d_out], &weight.storage::<f32>()[..d_in * d_out]);
        // [batch, d_in] = [batch, d_out] · [d_out, d_in], the weight read transposed in place.
        // Asked for row by row, gemm first repacks the whole weight (its rows are not contiguous
        // in the order gemm wants them). For small batches that costs as much as the product, and
        // column by column gemm reads the weight as it lies; turning the small [batch, d_in]
        // result around is then cheaper (batch 32: 6.9 -> 6.2 ms a step). Large batches amortize
        // the packing. Either way each element is the same sum.
        let order = if batch < COLUMN_ORDER_MAX_BATCH { Order::ColumnMajor } else { Order::RowMajor };
        let product = product(
            batch,
            d_in,
            d_out,
            gs,
            (d_out as isize, 1),
            ws,
            (1, d_out as isize),
            order,
            Split::Columns,
        );
        let out = match order {
            Order::RowMajor => product,
            Order::ColumnMajor => {
                let mut out = vec![0.0f32; batch * d_in];
                for (j, column) in product.chunks_exact(batch).enumerate() {
                    for (i, &v) in column.iter().enumerate() {
                        out[i * d_in + j] = v;
                    }
                }
                out
            }
        };
        FloatTensor::<Self>::from_data(TensorData::new(out, [batch, d_in]))
    }

    fn dense_weight_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&[&grad, &x]) {
            return <Self as ModuleOps<Self>>::linear_weight_backward(x, grad);
        }
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let (batch, d_in, d_out) = (x.shape()[0], x.shape()[1], grad.shape()[1]);
        let (xs, gs) = (&x.storage::<f32>()[..batch * d_in], &grad.storage::<f32>()[..batch * d_out]);
        // [d_in, d_out] = [d_in, batch] · [batch, d_out], x read transposed in place.
        let out = layer_weight_grad(d_in, d_out, batch, xs, d_in, gs);
        FloatTensor::<Self>::from_data(TensorData::new(out, [d_in, d_out]))
    }

    fn dense_activation_grad(
        grad: FloatTensor<Self>,
        output: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        if activation == Activation::Identity {
            return grad;
        }
        let same_layout = grad.shape() == output.shape();
        if !same_layout || !all_f32(&[&grad, &output]) {
            return composed_activation_grad::<Self>(grad, output, activation);
        }
        let shape = grad.shape();
        let n = shape.num_elements();
        let output = output.to_contiguous();
        let ys = &output.storage::<f32>()[..n];
        let mut grad = whole_buffer(grad);
        let gs = &mut grad.storage_mut::<f32>()[..n];
        match activation {
            Activation::Identity => {}
            Activation::LeakyRelu(slope) => {
                // burn's leaky ReLU is a masked select between x and x·slope; its gradient is the
                // sum of both branches' gradients, one of them zero: hence the `0.0 +`, which
                // also gives zeros the sign burn gives them.
                let slope = slope as f32;
                for (g, &y) in gs.iter_mut().zip(ys) {
                    *g = if y < 0.0 { 0.0 + *g * slope } else { *g + 0.0 };
                }
            }
            Activation::Tanh => tanh::gradient_in_place(gs, ys),
        }
        grad
    }
}

/// Whether every tensor holds f32 (what the fused kernels compute in; other dtypes take burn's
/// composed operations).
pub(crate) fn all_f32(tensors: &[&FloatTensor<Flex>]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// The tensor as a contiguous buffer starting at its first element: itself when it already is one
/// (so that `storage_mut` then updates it in place, if no one else holds it), else a copy.
pub(crate) fn whole_buffer(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    if t.is_contiguous() && t.layout().start_offset() == 0 { t } else { t.to_contiguous() }
}

/// gemm copies a panel of its left operand (for a row-major layer output, which gemm turns around,
/// the weight) into its kernel's order only when the panel is reused for more than 8 (one thread)
/// or 16 (several) times the kernel's width of columns; for a batch of 32 it reads the weight in
/// place instead, strided. Packing from 2 widths on measured faster (`gantry bench`, batch 32:
/// 6.25-6.4 -> 5.9-6.1 ms; no change at 64 and 256). Packing moves values, not sums: results are
/// unchanged. The setting is process-wide; set once, on first use.
static PACK_WEIGHT_PANELS: std::sync::Once = std::sync::Once::new();

/// How a product's `[m, n]` result is laid out.
#[derive(Clone, Copy)]
pub(crate) enum Order {
    /// Element (i, j) at `i * n + j`.
    RowMajor,
    /// Element (i, j) at `j * m + i`.
    ColumnMajor,
}

/// How a product large enough to split (from [`PARALLEL_MIN_MACS`]) uses the pool's threads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Split {
    /// gemm divides the work itself.
    Gemm,
    /// One single-threaded gemm call per thread, each computing its own block of the result's
    /// columns from the matching columns of `rhs`. For the input gradient (`[batch, d_in]` = grad
    /// · weightᵀ) gemm's own split has every thread repack the whole transposed weight; split by
    /// columns, each packs only its part. Measured at batch 256, 2 threads (GFLOP/s, median of
    /// 40): input gradients 177-203 -> 238-277, layer outputs unchanged or up to +9%; weight
    /// gradients keep gemm's split (no better). Each element is the same sum either way.
    Columns,
    /// One gemm call on this thread, whatever the size: for callers that run several products
    /// side by side themselves (the convolutions' chunks of a batch).
    Single,
}

/// A layer's output `[batch, d_out] = x · W`: x's first `k` columns (its rows `x_row` apart), W
/// `[k, d_out]` row-major; split across threads by the result's columns.
pub(crate) fn layer_output(
    batch: usize,
    d_out: usize,
    k: usize,
    xs: &[f32],
    x_row: usize,
    ws: &[f32],
) -> Vec<f32> {
    product(
        batch,
        d_out,
        k,
        xs,
        (x_row as isize, 1),
        ws,
        (d_out as isize, 1),
        Order::RowMajor,
        Split::Columns,
    )
}

/// A layer's weight gradient `[k, d_out] = xᵀ · grad`: x's first `k` columns (its rows `x_row`
/// apart) read transposed in place, grad `[batch, d_out]`; gemm's own split.
pub(crate) fn layer_weight_grad(
    k: usize,
    d_out: usize,
    batch: usize,
    xs: &[f32],
    x_row: usize,
    gs: &[f32],
) -> Vec<f32> {
    product(k, d_out, batch, xs, (1, x_row as isize), gs, (d_out as isize, 1), Order::RowMajor, Split::Gemm)
}

/// `lhs [m, k] · rhs [k, n]` into a new `[m, n]` buffer, the operands read through their (row,
/// column) strides, as burn-flex's matmul calls `gemm` for 2-d operands: each element is the same
/// sum, so results are the same bits. Unlike it, the output is not zero-filled first (gemm does not
/// read it) nor copied to realign it.
#[allow(clippy::too_many_arguments)] // m, n, k, two strided operands, the order and the split
pub(crate) fn product(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (isize, isize),
    order: Order,
    split: Split,
) -> Vec<f32> {
    let extent = |rows: usize, cols: usize, rs: isize, cs: isize| {
        (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
    };
    assert!(m > 0 && n > 0 && k > 0, "empty dense layer");
    assert!(lhs_rs >= 0 && lhs_cs >= 0 && rhs_rs >= 0 && rhs_cs >= 0, "negative strides");
    assert!(lhs.len() >= extent(m, k, lhs_rs, lhs_cs) && rhs.len() >= extent(k, n, rhs_rs, rhs_cs));
    PACK_WEIGHT_PANELS.call_once(|| {
        gemm::set_lhs_packing_threshold_single_thread(2);
        gemm::set_lhs_packing_threshold_multi_thread(2);
    });
    // Column and row strides of the destination.
    let (dst_cs, dst_rs) = match order {
        Order::RowMajor => (1, n as isize),
        Order::ColumnMajor => (m as isize, 1),
    };
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // Pointers as addresses, so that the column blocks below can be handed to other threads.
    let (dst, lhs, rhs) = (out.as_mut_ptr() as usize, lhs.as_ptr() as usize, rhs.as_ptr() as usize);
    // [m, cols] of the result from column `first` on, with gemm's threads or on this one.
    let columns = |first: usize, cols: usize, parallelism: gemm::Parallelism| {
        // SAFETY: the asserts above keep every operand read inside its slice (columns first..
        // first + cols of rhs lie within rhs's extent); `out` has room for [m, n] in either order,
        // and with `read_dst = false` gemm writes each element of its block without reading it.
        // Blocks of distinct columns do not overlap.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                (dst as *mut f32).offset(first as isize * dst_cs),
                dst_cs,
                dst_rs,
                false,
                lhs as *const f32,
                lhs_cs,
                lhs_rs,
                (rhs as *const f32).offset(first as isize * rhs_cs),
                rhs_cs,
                rhs_rs,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            )
        }
    };
    let threads = rayon::current_num_threads();
    if split == Split::Single || m * n * k < PARALLEL_MIN_MACS || threads == 1 {
        columns(0, n, gemm::Parallelism::None);
    } else if split == Split::Gemm || n < threads {
        columns(0, n, gemm::Parallelism::Rayon(threads));
    } else {
        (0..threads).into_par_iter().for_each(|part| {
            let (first, end) = (n * part / threads, n * (part + 1) / threads);
            columns(first, end - first, gemm::Parallelism::None);
        });
    }
    // SAFETY: every element of [m, n] was written above.
    unsafe { out.set_len(m * n) };
    out
}

/// `dst [m, n] += lhs [m, k] · rhs [k, n]`, dst row-major, the operands read through their (row,
/// column) strides, on this thread (gemm reads dst and adds its product to it): a sum of products
/// accumulated in place.
pub(crate) fn product_add(
    (m, n, k): (usize, usize, usize),
    (lhs, (lhs_rs, lhs_cs)): (&[f32], (isize, isize)),
    (rhs, (rhs_rs, rhs_cs)): (&[f32], (isize, isize)),
    dst: &mut [f32],
) {
    let extent = |rows: usize, cols: usize, rs: isize, cs: isize| {
        (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
    };
    assert!(m > 0 && n > 0 && k > 0, "empty product");
    assert!(lhs_rs >= 0 && lhs_cs >= 0 && rhs_rs >= 0 && rhs_cs >= 0, "negative strides");
    assert!(lhs.len() >= extent(m, k, lhs_rs, lhs_cs) && rhs.len() >= extent(k, n, rhs_rs, rhs_cs));
    assert!(dst.len() >= m * n, "the destination's length");
    // SAFETY: the asserts above keep every operand read inside its slice and every element of
    // dst written or read inside it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

impl<B: Backend + DenseOps, C: CheckpointStrategy> DenseOps for Autodiff<B, C> {
    fn dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        /// The backward step; its state: the saved input (for the weight gradient), the saved
        /// weight (for the input gradient), the layer's output and the activation.
        #[derive(Debug)]
        struct DenseBackward;

        impl<B: Backend + DenseOps> Backward<B, 3> for DenseBackward {
            type State = (Option<NodeId>, Option<NodeId>, FloatTensor<B>, Activation);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let (x_state, weight_state, output, activation) = ops.state;
                let grad = grads.consume::<B>(&ops.node); // [batch, d_out], after the activation
                let grad = B::dense_activation_grad(grad, output, activation); // before it

                // From here the products of burn's linear backward. The input's and the weight's
                // gradients are independent: on a batch of 32 each is too small to split well across
                // cores, so they run side by side instead.
                let weight = node_x.as_ref().map(|_| {
                    checkpointer.retrieve_node_output::<FloatTensor<B>>(
                        weight_state.expect("the weight is saved when x needs a gradient"),
                    )
                });
                let x = node_weight.as_ref().map(|_| {
                    checkpointer.retrieve_node_output::<FloatTensor<B>>(
                        x_state.expect("x is saved when the weight needs a gradient"),
                    )
                });
                let (grad_x, grad_weight) = rayon::join(
                    || weight.map(|weight| B::dense_input_grad(grad.clone(), weight)),
                    || x.map(|x| B::dense_weight_grad(x, grad.clone())),
                );
                if let (Some(node), Some(grad_x)) = (node_x, grad_x) {
                    grads.register::<B>(node.id, grad_x);
                }
                if let (Some(node), Some(grad_weight)) = (node_weight, grad_weight) {
                    grads.register::<B>(node.id, grad_weight);
                }
                if let Some(node) = node_bias {
                    grads.register::<B>(node.id, B::linear_bias_backward(grad));
                }
            }
        }

        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        match DenseBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                // x is only needed for the weight's gradient, and the weight only for x's.
                let x_state = weight_tracked.then(|| prep.checkpoint(&x));
                let weight_state = x_tracked.then(|| prep.checkpoint(&weight));
                let output =
                    B::dense(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), activation);
                prep.finish((x_state, weight_state, output.clone(), activation), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dense(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                activation,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::linear_with_kernel;
    use burn::module::Module;
    use burn::tensor::Device;

    fn values(t: Tensor<2>) -> Vec<u32> {
        t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    fn layer(d_in: usize, d_out: usize, device: &Device) -> Linear {
        let kernel = (0..d_in * d_out).map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5).collect();
        let mut linear = linear_with_kernel(kernel, d_in, d_out, device);
        let bias: Vec<f32> = (0..d_out).map(|i| (i % 7) as f32 * 0.03 - 0.1).collect();
        linear.bias = Some(burn::module::Param::from_data(TensorData::new(bias, [d_out]), device));
        linear
    }

    fn input(batch: usize, d_in: usize, device: &Device) -> Tensor<2> {
        let x: Vec<f32> = (0..batch * d_in).map(|i| ((i * 31) % 113) as f32 / 40.0 - 1.4).collect();
        Tensor::from_data(TensorData::new(x, [batch, d_in]), device)
    }

    const ACTIVATIONS: [Activation; 3] = [Activation::Identity, Activation::LeakyRelu(0.2), Activation::Tanh];

    /// Forward outputs equal burn's composed layer bit for bit: a small product, one split across
    /// threads (over 2²⁵ multiply-adds), and outputs large enough to finish tanh in parallel.
    #[test]
    fn forward_is_bit_identical_to_burns_layer() {
        let device = Device::flex();
        for (batch, d_in, d_out) in [(3, 5, 4), (128, 512, 600), (200, 64, 784)] {
            let linear = layer(d_in, d_out, &device);
            for act in ACTIVATIONS {
                let x = input(batch, d_in, &device);
                assert_eq!(
                    values(dense(x.clone(), &linear, act)),
                    values(composed(x, &linear, act)),
                    "{act:?}"
                );
            }
        }
    }

    /// A product split by columns across threads (2, and 3 for uneven blocks) gives the same bits as
    /// gemm's own split, for an input gradient's shape (weight read transposed) above the threshold.
    #[test]
    fn column_split_products_equal_gemms_own_split() {
        let (batch, d_in, d_out) = (160, 520, 410); // 34 million multiply-adds > 2^25
        assert!(batch * d_in * d_out >= PARALLEL_MIN_MACS);
        let grad: Vec<f32> = (0..batch * d_out).map(|i| ((i * 31) % 113) as f32 / 40.0 - 1.4).collect();
        let weight: Vec<f32> = (0..d_in * d_out).map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5).collect();
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let [gemms, columns] = [Split::Gemm, Split::Columns].map(|split| {
                pool.install(|| {
                    let (g, w) = (&grad, &weight);
                    product(
                        batch,
                        d_in,
                        d_out,
                        g,
                        (d_out as isize, 1),
                        w,
                        (1, d_out as isize),
                        Order::RowMajor,
                        split,
                    )
                })
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&columns), bits(&gemms), "{threads} threads");
        }
    }

    /// Gradients of input, weight and bias equal burn's, bit for bit, through two layers.
    #[test]
    fn gradients_are_bit_identical_to_burns_layer() {
        let device = Device::flex().autodiff();
        let (first, second) = (layer(40, 24, &device), layer(24, 12, &device));
        // Both ways of computing the input gradient: column by column below
        // COLUMN_ORDER_MAX_BATCH, row by row from it.
        for (batch, act) in
            [6, COLUMN_ORDER_MAX_BATCH + 2].into_iter().flat_map(|b| ACTIVATIONS.map(|a| (b, a)))
        {
            let run = |f: fn(Tensor<2>, &Linear, Activation) -> Tensor<2>| {
                let x = input(batch, 40, &device).require_grad();
                let h = f(x.clone(), &first, Activation::LeakyRelu(0.2));
                let y = f(h, &second, act);
                // A loss whose gradient is not uniform: sum(y * y).
                let grads = (y.clone() * y).sum().backward();
                let grad = |t: Tensor<2>| values(t.grad(&grads).unwrap());
                let grad1 = |t: Tensor<1>| t.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
                (
                    grad(x),
                    grad(first.weight.val()),
                    grad(second.weight.val()),
                    grad1(second.bias.as_ref().unwrap().val()),
                )
            };
            assert_eq!(run(dense), run(composed), "batch {batch}, {act:?}");
        }
    }

    /// Frozen weights (the G step through D) get no gradient; the input still does.
    #[test]
    fn frozen_weights_pass_gradients_to_the_input_only() {
        let device = Device::flex().autodiff();
        let frozen = layer(8, 3, &device).no_grad();
        let x = input(4, 8, &device).require_grad();
        let grads = dense(x.clone(), &frozen, Activation::Identity).sum().backward();
        assert!(x.grad(&grads).is_some());
        assert!(frozen.weight.val().grad(&grads).is_none());
        assert_eq!(frozen.valid().weight.val().dims(), [8, 3]);
    }
}
