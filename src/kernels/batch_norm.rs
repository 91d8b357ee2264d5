//! Training-mode batch normalization of `[batch, features]` activations as one backend operation.
//!
//! burn differentiates `batch_norm_train` as one operation already, but computes it, on the CPU
//! backend, from general tensor operations: the statistics are taken per channel after swapping
//! the axes so that channels come first (a transposed copy of the activations, forward, and two
//! more of the gradients, backward), and each element-wise step allocates a new tensor. For a
//! dense layer's output the channels are the columns, so here the statistics are accumulated row by
//! row, in place, and the normalization and its gradient are one pass each ([`BatchNormOps`]).
//! Outside training (G generating D's fakes) the normalization with the running statistics is one
//! pass as well, bit-identical to burn's.
//!
//! Same formulas, same element-wise operations in the same order as burn's `batch_norm_train` and
//! `batch_norm_train_backward`; only the per-channel sums add the batch in a different order (row
//! after row rather than burn's vectorized reduction), so results agree with burn's to float
//! reassociation (the tests below check them to 1e-6 relative).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::{Tensor, TensorData};

use super::dense::all_f32;

/// `norm` applied to `x` `[batch, features]`, as `BatchNorm::forward` applies it: in training (on
/// an autodiff device, layer not frozen) with the batch's statistics, which also move the layer's
/// running statistics; otherwise with the running statistics (one pass, the same bits as burn's).
pub fn batch_norm(x: Tensor<2>, norm: &BatchNorm) -> Tensor<2> {
    if !(x.device().is_autodiff() && norm.training.is_enabled()) {
        let device = x.device();
        let output = <Dispatch as BatchNormOps>::batch_norm_inference_2d(
            x.into_dispatch(),
            norm.gamma.val().into_dispatch(),
            norm.beta.val().into_dispatch(),
            norm.running_mean.value().to_device(&device).into_dispatch(),
            norm.running_var.value().to_device(&device).into_dispatch(),
            norm.epsilon,
        );
        return Tensor::from_dispatch(output);
    }
    let (output, mean, variance) = <Dispatch as BatchNormOps>::batch_norm_train_2d(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        norm.beta.val().into_dispatch(),
        norm.epsilon,
    );
    let (mean, variance): (Tensor<1>, Tensor<1>) =
        (Tensor::from_dispatch(mean), Tensor::from_dispatch(variance));

    // As burn's BatchNorm::forward_train: running = running · (1 - momentum) + batch · momentum.
    let device = mean.device();
    let running_mean = norm.running_mean.value_sync().to_device(&device);
    let running_var = norm.running_var.value_sync().to_device(&device);
    let running_mean =
        running_mean.mul_scalar(1.0 - norm.momentum).add(mean.detach().mul_scalar(norm.momentum));
    let running_var =
        running_var.mul_scalar(1.0 - norm.momentum).add(variance.detach().mul_scalar(norm.momentum));
    norm.running_mean.update(running_mean.detach());
    norm.running_var.update(running_var.detach());

    Tensor::from_dispatch(output)
}

/// The backend operations behind [`batch_norm`]. The default bodies are burn's own (any backend);
/// Flex overrides them, and `Autodiff` differentiates the forward through the backward op.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait BatchNormOps: Backend {
    /// x `[batch, features]`, gamma and beta `[features]` -> (output `[batch, features]`, the
    /// batch's mean and biased variance `[features]`).
    fn batch_norm_train_2d(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let result = Self::batch_norm_train(x, gamma, beta, epsilon);
        (result.output, result.mean, result.variance)
    }

    /// Batch norm with given (running) statistics: `((x - mean) / sqrt(var + eps)) · gamma + beta`,
    /// x `[batch, features]`, the others `[features]`.
    fn batch_norm_inference_2d(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::batch_norm(x, gamma, beta, mean, variance, epsilon)
    }

    /// Gradients of x, gamma and beta from the output's gradient and the forward's statistics.
    fn batch_norm_train_2d_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let result = Self::batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
        (result.x_grad, result.gamma_grad, result.beta_grad)
    }
}

/// A contiguous f32 `[len]` copy of a 1-d tensor's values.
fn values(t: &FloatTensor<Flex>, len: usize) -> Vec<f32> {
    let t = t.to_contiguous();
    t.storage::<f32>()[..len].to_vec()
}

fn new_tensor(values: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FloatTensor<Flex> {
    FloatTensor::<Flex>::from_data(TensorData::new(values, shape))
}

/// burn's batch_norm, one pass: `((x - mean) / sqrt(var + eps)) · gamma + beta` for each row of
/// `xs` (`features` wide), the square root taken once per feature as burn takes it.
fn normalize(
    xs: &[f32],
    features: usize,
    mean: &[f32],
    variance: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> Vec<f32> {
    let std: Vec<f32> = variance.iter().map(|v| (v + epsilon as f32).sqrt()).collect();
    let mut out = xs.to_vec();
    for row in out.chunks_exact_mut(features) {
        for ((((v, m), s), g), b) in row.iter_mut().zip(mean).zip(&std).zip(gamma).zip(beta) {
            *v = ((*v - m) / s) * g + b;
        }
    }
    out
}

/// The wgpu backend (and any other CubeCL runtime) takes the composed default bodies.
#[cfg(feature = "gpu")]
impl BatchNormOps for burn::backend::Cube {}

impl BatchNormOps for Flex {
    fn batch_norm_train_2d(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x, &gamma, &beta]) || x.shape().num_dims() != 2 {
            let result = <Self as ModuleOps<Self>>::batch_norm_train(x, gamma, beta, epsilon);
            return (result.output, result.mean, result.variance);
        }
        let x = x.to_contiguous();
        let (batch, features) = (x.shape()[0], x.shape()[1]);
        let xs = &x.storage::<f32>()[..batch * features];
        let (gamma, beta) = (values(&gamma, features), values(&beta, features));
        let count = batch as f32;

        // Per-feature mean, then biased variance of the centred values: [features] each.
        let mut mean = vec![0.0f32; features];
        for row in xs.chunks_exact(features) {
            mean.iter_mut().zip(row).for_each(|(sum, v)| *sum += v);
        }
        mean.iter_mut().for_each(|sum| *sum /= count);
        let mut variance = vec![0.0f32; features];
        for row in xs.chunks_exact(features) {
            for ((sum, v), m) in variance.iter_mut().zip(row).zip(&mean) {
                let centred = v - m;
                *sum += centred * centred;
            }
        }
        variance.iter_mut().for_each(|sum| *sum /= count);

        let out = normalize(xs, features, &mean, &variance, &gamma, &beta, epsilon);
        (new_tensor(out, [batch, features]), new_tensor(mean, [features]), new_tensor(variance, [features]))
    }

    fn batch_norm_inference_2d(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&x, &gamma, &beta, &mean, &variance]) || x.shape().num_dims() != 2 {
            return <Self as ModuleOps<Self>>::batch_norm(x, gamma, beta, mean, variance, epsilon);
        }
        let x = x.to_contiguous();
        let (batch, features) = (x.shape()[0], x.shape()[1]);
        let xs = &x.storage::<f32>()[..batch * features];
        let [gamma, beta, mean, variance] = [&gamma, &beta, &mean, &variance].map(|t| values(t, features));
        let out = normalize(xs, features, &mean, &variance, &gamma, &beta, epsilon);
        new_tensor(out, [batch, features])
    }

    fn batch_norm_train_2d_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x, &gamma, &mean, &variance, &grad])
            || x.shape().num_dims() != 2
            || grad.shape() != x.shape()
        {
            let result =
                <Self as ModuleOps<Self>>::batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
            return (result.x_grad, result.gamma_grad, result.beta_grad);
        }
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let (batch, features) = (x.shape()[0], x.shape()[1]);
        let xs = &x.storage::<f32>()[..batch * features];
        let gs = &grad.storage::<f32>()[..batch * features];
        let (gamma, mean, variance) =
            (values(&gamma, features), values(&mean, features), values(&variance, features));
        let count = batch as f32;

        // As burn's batch_norm_train_backward, with normalized = (x - mean) · inv_std:
        // beta' = Σ g, gamma' = Σ g·normalized,
        // x' = (gamma · inv_std) · ((g - mean(g)) - normalized · mean(g·normalized)).
        let inv_std: Vec<f32> = variance.iter().map(|v| 1.0 / (v + epsilon as f32).sqrt()).collect();
        let mut beta_grad = vec![0.0f32; features];
        let mut gamma_grad = vec![0.0f32; features];
        for (x_row, g_row) in xs.chunks_exact(features).zip(gs.chunks_exact(features)) {
            let sums = beta_grad.iter_mut().zip(gamma_grad.iter_mut());
            for ((((beta_sum, gamma_sum), x), g), (m, s)) in
                sums.zip(x_row).zip(g_row).zip(mean.iter().zip(&inv_std))
            {
                let normalized = (x - m) * s;
                *beta_sum += g;
                *gamma_sum += g * normalized;
            }
        }
        let mean_grad: Vec<f32> = beta_grad.iter().map(|s| s / count).collect();
        let mean_normalized_grad: Vec<f32> = gamma_grad.iter().map(|s| s / count).collect();
        let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
        let mut x_grad = gs.to_vec();
        for (x_row, g_row) in xs.chunks_exact(features).zip(x_grad.chunks_exact_mut(features)) {
            let per_feature =
                mean.iter().zip(&inv_std).zip(mean_grad.iter().zip(&mean_normalized_grad)).zip(&scale);
            for ((g, x), (((m, s), (mg, mng)), sc)) in g_row.iter_mut().zip(x_row).zip(per_feature) {
                let normalized = (x - m) * s;
                let centred_grad = *g - mg;
                let projected = normalized * mng;
                *g = sc * (centred_grad - projected);
            }
        }
        (
            new_tensor(x_grad, [batch, features]),
            new_tensor(gamma_grad, [features]),
            new_tensor(beta_grad, [features]),
        )
    }
}

impl<B: Backend + BatchNormOps, C: CheckpointStrategy> BatchNormOps for Autodiff<B, C> {
    fn batch_norm_train_2d(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        /// The backward step; its state: the saved input and gamma, the batch's statistics, epsilon.
        #[derive(Debug)]
        struct BatchNormBackward;

        impl<B: Backend + BatchNormOps> Backward<B, 3> for BatchNormBackward {
            type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, gamma_state, mean, variance, epsilon) = ops.state;
                let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
                let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_state);
                let (x_grad, gamma_grad, beta_grad) =
                    B::batch_norm_train_2d_backward(x, gamma, mean, variance, epsilon, grad);
                for (node, grad) in [(node_x, x_grad), (node_gamma, gamma_grad), (node_beta, beta_grad)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let (output, mean, variance) = B::batch_norm_train_2d(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let output =
                    prep.finish((x_state, gamma_state, mean.clone(), variance.clone(), epsilon), output);
                (output, Self::from_inner(mean), Self::from_inner(variance))
            }
            OpsKind::UnTracked(prep) => {
                let (output, mean, variance) = B::batch_norm_train_2d(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (prep.finish(output), Self::from_inner(mean), Self::from_inner(variance))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::RunningState;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Device;

    fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Equal to 1e-6 of the larger magnitude (plus 1e-6 absolute, for values near zero): the sums
    /// over the batch are added in a different order than burn's.
    fn assert_close(what: &str, ours: &[f32], burns: &[f32]) {
        assert_eq!(ours.len(), burns.len(), "{what}: lengths");
        for (i, (a, b)) in ours.iter().zip(burns).enumerate() {
            let tolerance = 1e-6 * a.abs().max(b.abs()) + 1e-6;
            assert!((a - b).abs() <= tolerance, "{what}[{i}]: {a} vs burn's {b}");
        }
    }

    /// A norm with non-trivial gamma and beta, and a skewed input (mean and scale differ by column).
    fn setup(device: &Device, batch: usize, features: usize) -> (BatchNorm, Vec<f32>) {
        let mut norm = BatchNormConfig::new(features).with_momentum(0.8).init(device);
        let gamma: Vec<f32> = (0..features).map(|c| 0.5 + c as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..features).map(|c| c as f32 * 0.05 - 0.2).collect();
        norm.gamma = burn::module::Param::from_tensor(Tensor::from_floats(gamma.as_slice(), device));
        norm.beta = burn::module::Param::from_tensor(Tensor::from_floats(beta.as_slice(), device));
        let x = (0..batch * features)
            .map(|i| {
                ((i * 7919 % 1000) as f32 / 100.0 - 4.0) * (1.0 + (i % features) as f32)
                    + (i % features) as f32
            })
            .collect();
        (norm, x)
    }

    #[test]
    fn output_gradients_and_running_statistics_match_burns_batch_norm() {
        let device = Device::flex().autodiff();
        let (batch, features) = (37, 5);
        let upstream: Vec<f32> = (0..batch * features).map(|i| ((i * 31 % 17) as f32 - 8.0) / 4.0).collect();

        let run = |fused: bool| {
            // A fresh layer each time: clones of a BatchNorm share its running statistics.
            let (norm, x) = setup(&device, batch, features);
            let x =
                Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, features]), &device).require_grad();
            let y = if fused { batch_norm(x.clone(), &norm) } else { norm.forward(x.clone()) };
            let weights =
                Tensor::<2>::from_data(TensorData::new(upstream.clone(), [batch, features]), &device);
            let grads = (y.clone() * weights).sum().backward();
            let x_grad = x.grad(&grads).unwrap();
            let gamma_grad = norm.gamma.grad(&grads).unwrap();
            let beta_grad = norm.beta.grad(&grads).unwrap();
            (
                floats(y),
                floats(x_grad),
                floats(gamma_grad),
                floats(beta_grad),
                floats(norm.running_mean.value_sync()),
                floats(norm.running_var.value_sync()),
            )
        };
        let (ours, burns) = (run(true), run(false));
        assert_close("output", &ours.0, &burns.0);
        assert_close("x gradient", &ours.1, &burns.1);
        assert_close("gamma gradient", &ours.2, &burns.2);
        assert_close("beta gradient", &ours.3, &burns.3);
        assert_close("running mean", &ours.4, &burns.4);
        assert_close("running variance", &ours.5, &burns.5);
        // The check can fail: the running statistics moved away from their initial 0 and 1.
        assert!(ours.4.iter().any(|m| m.abs() > 0.1) && ours.5.iter().any(|v| (v - 1.0).abs() > 0.1));
    }

    #[test]
    fn outside_training_it_is_burns_inference_batch_norm_bit_for_bit() {
        let device = Device::flex();
        let (norm, x) = setup(&device, 4, 3);
        let x = Tensor::<2>::from_data(TensorData::new(x, [4, 3]), &device);
        // Running statistics away from 0 and 1, so that they take part.
        let norm = BatchNorm {
            running_mean: RunningState::new(Tensor::from_floats([0.5, -1.0, 2.0], &device)),
            running_var: RunningState::new(Tensor::from_floats([0.25, 3.0, 1.5], &device)),
            ..norm
        };
        let bits = |t: Tensor<2>| floats(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(batch_norm(x.clone(), &norm)), bits(norm.forward(x)));
    }
}
