//! A product whose input ends in one-hot labels, `[x | y] · W`, as one backend operation.
//!
//! A conditional G takes its noise joined to a one-hot class (`[b, latent + ids]`), and a
//! projection D embeds the one-hot class with a bias-free Dense layer (`y · E`). As matrix
//! products, the label columns cost as much as a hundred noise columns while all but one of each
//! row's values are zero: on the `dcgan` preset (100 clusters) they were a sixth of the step. Here
//! the columns before the labels (the "head": the noise; none for an embedding) go through one
//! `gemm` call as before, and each label row then adds the weight rows its nonzero values pick.
//!
//! The bits are the product's. gemm sums each element as one chain of fused multiply-adds in `k`
//! order (one chain while `k` is at most 512, gemm's smallest block); a zero in the chain leaves
//! the sum as it is, so skipping it changes nothing, and a one-hot row's single term continues the
//! head's sum with one rounding, as gemm's chain does. The weight's gradient `[x | y]ᵀ · grad`
//! has, per label row, the sum of the gradient rows of the batch rows that picked it, in batch
//! order: gemm's chain again (the batch at most 512). The exceptions are a weight or gradient that
//! is infinite or NaN where a label is zero (the product has NaN there; this has the finite sum)
//! and a weight of exactly −0 picked alone (+0 in the product): neither occurs in training that
//! has not diverged. The tests check the bits against burn's product.
//!
//! Backends: Flex (with and without `Autodiff`), f32. The wgpu backend (`Cube`, feature `gpu`)
//! takes the composed default bodies: burn's own matrix products.

use super::dense::{all_f32, layer_output, layer_weight_grad};
use super::on_wide_lanes;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorData};

/// `x · weight`, x `[batch, d_in]` whose last `labels` columns are one-hot (or mostly zero),
/// weight `[d_in, d_out]` -> `[batch, d_out]`. Differentiable on an autodiff device.
pub fn one_hot_product(x: Tensor<2>, weight: Tensor<2>, labels: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as OneHotOps>::one_hot_product(
        x.into_dispatch(),
        weight.into_dispatch(),
        labels,
    ))
}

/// The backend operations behind [`one_hot_product`]. The default bodies are burn's dense layer
/// without a bias (any backend); Flex overrides them, and `Autodiff` adds the backward pass.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait OneHotOps: Backend {
    /// `x · weight`: x `[batch, d_in]` ending in `labels` label columns, weight `[d_in, d_out]`.
    fn one_hot_product(x: FloatTensor<Self>, weight: FloatTensor<Self>, labels: usize) -> FloatTensor<Self> {
        let _ = labels;
        Self::linear(x, weight, None)
    }

    /// The weight's gradient `xᵀ · grad`: x `[batch, d_in]` ending in `labels` label columns,
    /// grad `[batch, d_out]`.
    fn one_hot_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        labels: usize,
    ) -> FloatTensor<Self> {
        let _ = labels;
        Self::linear_weight_backward(x, grad)
    }
}

#[cfg(feature = "gpu")]
impl OneHotOps for burn::backend::Cube {}

/// `dst += v · src`, as gemm's chain adds a term: one rounding each (an exact `+` when v is 1).
fn add_scaled(dst: &mut [f32], v: f32, src: &[f32]) {
    on_wide_lanes(move || {
        if v == 1.0 {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        } else {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d = v.mul_add(*s, *d));
        }
    })
}

/// The shapes of a product: [batch, d_in, d_out], or None when the fast path does not apply
/// (another dtype, or more label columns than x has).
fn shapes(x: &FloatTensor<Flex>, other: &FloatTensor<Flex>, labels: usize) -> Option<[usize; 3]> {
    let (xs, os) = (x.shape(), other.shape());
    let fits = all_f32(&[x, other]) && xs.num_dims() == 2 && os.num_dims() == 2 && labels <= xs[1];
    fits.then(|| [xs[0], xs[1], os[1]])
}

impl OneHotOps for Flex {
    fn one_hot_product(x: FloatTensor<Self>, weight: FloatTensor<Self>, labels: usize) -> FloatTensor<Self> {
        let Some([batch, d_in, d_out]) =
            shapes(&x, &weight, labels).filter(|_| weight.shape()[0] == x.shape()[1])
        else {
            return Self::linear(x, weight, None);
        };
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let (xs, ws) = (&x.storage::<f32>()[..batch * d_in], &weight.storage::<f32>()[..d_in * d_out]);
        let head = d_in - labels;
        // [batch, d_out] = [batch, head] · [head, d_out], then each row's label terms.
        let mut out = if head > 0 && batch > 0 && d_out > 0 {
            layer_output(batch, d_out, head, xs, d_in, ws)
        } else {
            vec![0.0; batch * d_out]
        };
        for (row, x) in out.chunks_exact_mut(d_out.max(1)).zip(xs.chunks_exact(d_in.max(1))) {
            for (k, &v) in x[head..].iter().enumerate().filter(|(_, v)| **v != 0.0) {
                add_scaled(row, v, &ws[(head + k) * d_out..][..d_out]);
            }
        }
        FloatTensor::<Self>::from_data(TensorData::new(out, [batch, d_out]))
    }

    fn one_hot_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        labels: usize,
    ) -> FloatTensor<Self> {
        let Some([batch, d_in, d_out]) =
            shapes(&x, &grad, labels).filter(|_| grad.shape()[0] == x.shape()[0])
        else {
            return Self::linear_weight_backward(x, grad);
        };
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let (xs, gs) = (&x.storage::<f32>()[..batch * d_in], &grad.storage::<f32>()[..batch * d_out]);
        let head = d_in - labels;
        // [head, d_out] = [head, batch] · [batch, d_out], x read transposed in place; then the
        // label rows, each the sum of the gradient rows that picked it, in batch order.
        let mut out = if head > 0 && batch > 0 && d_out > 0 {
            layer_weight_grad(head, d_out, batch, xs, d_in, gs)
        } else {
            Vec::new()
        };
        out.resize(d_in * d_out, 0.0);
        let tail = &mut out[head * d_out..];
        for (x, g) in xs.chunks_exact(d_in.max(1)).zip(gs.chunks_exact(d_out.max(1))) {
            for (k, &v) in x[head..].iter().enumerate().filter(|(_, v)| **v != 0.0) {
                add_scaled(&mut tail[k * d_out..][..d_out], v, g);
            }
        }
        FloatTensor::<Self>::from_data(TensorData::new(out, [d_in, d_out]))
    }
}

/// The backward step; its state: the saved x (for the weight's gradient), the saved weight (for
/// x's), the label count.
#[derive(Debug)]
struct OneHotBackward;

impl<B: Backend + OneHotOps> Backward<B, 2> for OneHotBackward {
    type State = (Option<NodeId>, Option<NodeId>, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let (x_state, weight_state, labels) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        if let (Some(node), Some(state)) = (node_x, weight_state) {
            let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(state);
            grads.register::<B>(node.id, B::linear_x_backward(weight, grad.clone()));
        }
        if let (Some(node), Some(state)) = (node_weight, x_state) {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(state);
            grads.register::<B>(node.id, B::one_hot_weight_grad(x, grad, labels));
        }
    }
}

impl<B: Backend + OneHotOps, C: CheckpointStrategy> OneHotOps for Autodiff<B, C> {
    fn one_hot_product(x: FloatTensor<Self>, weight: FloatTensor<Self>, labels: usize) -> FloatTensor<Self> {
        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        match OneHotBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                // x is only needed for the weight's gradient, and the weight only for x's.
                let x_state = weight_tracked.then(|| prep.checkpoint(&x));
                let weight_state = x_tracked.then(|| prep.checkpoint(&weight));
                let output = B::one_hot_product(x.into_primitive(), weight.into_primitive(), labels);
                prep.finish((x_state, weight_state, labels), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::one_hot_product(x.into_primitive(), weight.into_primitive(), labels))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn bits(t: Tensor<2>) -> Vec<u32> {
        t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    fn filled(shape: [usize; 2], seed: usize, device: &Device) -> Tensor<2> {
        let v: Vec<f32> =
            (0..shape[0] * shape[1]).map(|i| (((i + seed) * 7919) % 1009) as f32 / 1009.0 - 0.5).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// `[noise | one-hot]` rows as G's input: `head` noise columns, then `ids` one-hot columns
    /// (row r picks class r·7 mod ids).
    fn joined(batch: usize, head: usize, ids: usize, device: &Device) -> Tensor<2> {
        let noise = filled([batch, head.max(1)], 3, device).into_data().try_to_vec::<f32>().unwrap();
        let rows: Vec<f32> = (0..batch)
            .flat_map(|r| {
                let z = noise[r * head.max(1)..][..head].to_vec();
                z.into_iter().chain((0..ids).map(move |c| if c == r * 7 % ids { 1.0 } else { 0.0 }))
            })
            .collect();
        Tensor::from_data(TensorData::new(rows, [batch, head + ids]), device)
    }

    /// G's input layer (noise then labels) and a projection's embedding (labels only): the
    /// output and the weight's gradient are burn's product's bits.
    #[test]
    fn one_hot_products_and_weight_gradients_are_the_products_bits() {
        let device = Device::flex().autodiff();
        for (batch, head, ids, d_out) in
            [(64, 100, 100, 3136), (5, 3, 4, 7), (64, 0, 100, 3136), (9, 0, 3, 5)]
        {
            let x = joined(batch, head, ids, &device);
            let w = filled([head + ids, d_out], 1, &device).require_grad();
            let ours = one_hot_product(x.clone(), w.clone(), ids);
            let burns = x.matmul(w.clone());
            let upstream = filled([batch, d_out], 2, &device);
            let ga = (ours.clone() * upstream.clone()).sum().backward();
            let gb = (burns.clone() * upstream).sum().backward();
            let what = format!("batch {batch}, {head} + {ids} -> {d_out}");
            assert_eq!(bits(ours), bits(burns), "{what}: output");
            assert_eq!(bits(w.grad(&ga).unwrap()), bits(w.grad(&gb).unwrap()), "{what}: weight gradient");
        }
    }

    /// Soft labels (several nonzero values in a row) are summed too, within rounding, and a
    /// tracked x gets burn's input gradient.
    #[test]
    fn soft_labels_and_a_tracked_input_get_the_product() {
        let device = Device::flex().autodiff();
        let x = filled([6, 9], 4, &device).require_grad();
        let w = filled([9, 5], 5, &device).require_grad();
        let ours = one_hot_product(x.clone(), w.clone(), 4);
        let burns = x.clone().matmul(w.clone());
        let close = |a: Tensor<2>, b: Tensor<2>| {
            let (a, b) =
                (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
            a.iter().zip(&b).all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs()))
        };
        assert!(close(ours.clone(), burns.clone()), "output");
        let (ga, gb) = (ours.sum().backward(), burns.sum().backward());
        assert_eq!(bits(x.grad(&ga).unwrap()), bits(x.grad(&gb).unwrap()), "input gradient");
        assert!(close(w.grad(&ga).unwrap(), w.grad(&gb).unwrap()), "weight gradient");
    }
}
