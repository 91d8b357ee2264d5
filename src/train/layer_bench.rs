//! Where a step's time goes (`gantry bench --layers`): each layer of G and D with a product (Dense,
//! convolution, transposed convolution) timed alone at the step's batch size, through the kernels
//! the step uses (gantry's fused ones): its forward pass, its input gradient and its weight gradient,
//! with its FLOPs and achieved GFLOP/s. Weighted by how many times a step runs each pass
//! ([`passes`]), their sum is the layers' share of a step; the rest of the step (BatchNorm,
//! activations, losses, Adam, copies, allocation, the autodiff graph) is what `gantry bench`
//! measures beyond it.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use serde::Serialize;

use crate::config::{Config, UpdateOrder};
use crate::kernels::conv::{self, Algorithm, Window};
use crate::kernels::one_hot::one_hot_product;
use crate::model::LayerShape;

/// One layer's times, ms (medians), and how many of each pass a step runs.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTime {
    /// "G" or "D".
    pub net: &'static str,
    /// The layer's name in the records (`deconvs.1`, `hidden.0`, ...).
    pub name: String,
    /// Its shape in words (`convT 256->128 k5 7->7`).
    pub shape: String,
    pub forward_ms: f64,
    pub input_grad_ms: f64,
    pub weight_grad_ms: f64,
    /// FLOPs of one forward pass of the batch (one pass of either gradient costs as much).
    pub flop: f64,
    /// Forward passes, input gradients and weight gradients of this layer in one step.
    pub passes: [f64; 3],
}

impl LayerTime {
    /// This layer's time in one step: each pass's time times how often the step runs it.
    pub fn per_step_ms(&self) -> f64 {
        let [f, i, w] = self.passes;
        f * self.forward_ms + i * self.input_grad_ms + w * self.weight_grad_ms
    }
}

/// How many forward passes, input gradients and weight gradients of a layer of G (`generator`) or
/// D one step runs under `order` (`first`: the network's first layer, whose input gradient no step
/// needs). The accounting of [`super::bench::flops_per_iteration`]: D-first and G-first update D
/// on a real and a fake batch (forward, weight and input gradients each) and G through D (G's and
/// D's forward again, D's input gradients, G's gradients), after drawing the fake batch; the
/// simultaneous step runs G once and D on both batches, and takes every gradient from them.
pub fn passes(order: UpdateOrder, generator: bool, first: bool) -> [f64; 3] {
    let below = if first { 0.0 } else { 1.0 };
    match (order, generator) {
        (UpdateOrder::Simultaneous, true) => [1.0, below, 1.0],
        (UpdateOrder::Simultaneous, false) => [2.0, 1.0 + 2.0 * below, 2.0],
        (_, true) => [2.0, below, 1.0],
        (_, false) => [3.0, 1.0 + 2.0 * below, 2.0],
    }
}

/// Time every layer of `config`'s networks at `batch`, each pass `reps` times after one untimed
/// run, on the current rayon pool, on the CPU.
pub fn time_layers(config: &Config, pixels: usize, batch: usize, reps: usize) -> Vec<LayerTime> {
    let (g, d) = crate::model::layer_shapes(&config.model, pixels);
    let device = Device::flex().autodiff();
    let algorithm = config.train.kernels.conv_algorithm();
    let mut out = Vec::new();
    for (net, layers) in [("G", g), ("D", d)] {
        for (i, (name, shape)) in layers.into_iter().enumerate() {
            let [forward_ms, with_input, with_weight] = [Grad::None, Grad::Input, Grad::Weight].map(|grad| {
                let (x, w) = inputs(shape, batch, grad, &device);
                median_ms(reps, || run(shape, grad, (&x, &w), algorithm))
            });
            out.push(LayerTime {
                net,
                name,
                shape: describe(shape),
                forward_ms,
                input_grad_ms: (with_input - forward_ms).max(0.0),
                weight_grad_ms: (with_weight - forward_ms).max(0.0),
                flop: 2.0 * batch as f64 * shape.macs(),
                passes: passes(config.train.order, net == "G", i == 0),
            });
        }
    }
    out
}

/// Which gradient a timed pass also computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grad {
    None,
    Input,
    Weight,
}

/// The median of `reps` timings of `f` (after one untimed call), ms.
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ms: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// The layer's input and weight, random, made before the timing (only the gradient asked for
/// required): [1, 1, b, d_in] and [1, 1, d_in, d_out] for a Dense layer, images and kernels for
/// a convolution.
fn inputs(shape: LayerShape, b: usize, grad: Grad, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let leaf = |t: Tensor<4>, wanted: Grad| if grad == wanted { t.require_grad() } else { t };
    let random = |dims: [usize; 4]| Tensor::<4>::random(dims, Distribution::Default, device);
    let (x, w) = match shape {
        LayerShape::Dense { d_in, d_out, .. } => ([1, 1, b, d_in], [1, 1, d_in, d_out]),
        LayerShape::Conv { c_in, c_out, k, side_in, .. } => {
            ([b, c_in, side_in, side_in], [c_out, c_in, k, k])
        }
        LayerShape::ConvTranspose { c_in, c_out, k, side_in, .. } => {
            ([b, c_in, side_in, side_in], [c_in, c_out, k, k])
        }
    };
    let x = match shape {
        // A conditional G's input: random noise, then one-hot labels (row r picks r mod labels).
        LayerShape::Dense { d_in, labels, .. } if labels > 0 => {
            let one_hot: Vec<f32> = (0..b * labels)
                .map(|i| if i % labels == (i / labels) % labels { 1.0 } else { 0.0 })
                .collect();
            let one_hot = Tensor::<4>::from_data(TensorData::new(one_hot, [1, 1, b, labels]), device);
            Tensor::cat(vec![random([1, 1, b, d_in - labels]), one_hot], 3)
        }
        _ => random(x),
    };
    (leaf(x, Grad::Input), leaf(random(w), Grad::Weight))
}

/// One pass of the layer, read back to its end: the forward pass alone, or with the gradient of
/// the input or of the weight (the one `inputs` required). Dense layers are burn's product
/// (`x W`, as the dcgan's projection and logit and every `Linear::forward` run it; the mlp's fused
/// kernel runs the same gemm), or with one-hot labels gantry's product over them (a conditional
/// dcgan G's projection); convolutions gantry's kernels, by `algorithm` where it applies.
fn run(shape: LayerShape, grad: Grad, (x, w): (&Tensor<4>, &Tensor<4>), algorithm: Algorithm) {
    let y = match shape {
        LayerShape::Dense { d_in, d_out, labels } => {
            let b = x.dims()[2];
            let (x, w) = (x.clone().reshape([b, d_in]), w.clone().reshape([d_in, d_out]));
            match labels {
                0 => x.matmul(w).sum(),
                labels => one_hot_product(x, w, labels).sum(),
            }
        }
        LayerShape::Conv { k, .. } => {
            conv::conv2d(x.clone(), w.clone(), None, Window::conv(2, k / 2).with(algorithm)).sum()
        }
        LayerShape::ConvTranspose { k, side_in, side_out, .. } => {
            let stride = side_out / side_in;
            conv::conv_transpose2d(
                x.clone(),
                w.clone(),
                Window::transpose(stride, k / 2, stride - 1).with(algorithm),
            )
            .sum()
        }
    };
    let read = |t: Tensor<4>| t.sum().into_scalar::<f32>();
    match grad {
        Grad::None => {
            y.into_scalar::<f32>();
        }
        Grad::Input => {
            read(x.grad(&y.backward()).expect("the input's gradient"));
        }
        Grad::Weight => {
            read(w.grad(&y.backward()).expect("the weight's gradient"));
        }
    }
}

/// A layer's shape in words.
fn describe(shape: LayerShape) -> String {
    match shape {
        LayerShape::Dense { d_in, d_out, labels: 0 } => format!("dense {d_in}->{d_out}"),
        LayerShape::Dense { d_in, d_out, labels } => {
            format!("dense {}+{labels} one-hot->{d_out}", d_in - labels)
        }
        LayerShape::Conv { c_in, c_out, k, side_in, side_out } => {
            format!("conv {c_in}->{c_out} k{k} {side_in}->{side_out}")
        }
        LayerShape::ConvTranspose { c_in, c_out, k, side_in, side_out } => {
            format!("convT {c_in}->{c_out} k{k} {side_in}->{side_out}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pass counts are the FLOP model's: weighted by them, the layers' multiply-adds are
    /// `flops_per_iteration`'s (heads beyond the logit aside), for every order and both kinds.
    #[test]
    fn the_pass_counts_are_the_flop_counts() {
        for preset in ["classic", "dcgan-tf"] {
            for order in [UpdateOrder::DFirst, UpdateOrder::GFirst, UpdateOrder::Simultaneous] {
                let mut c = Config::preset(preset).unwrap();
                c.model.conditional = crate::config::Conditioning::None;
                c.data.clusters = 0;
                c.train.order = order;
                let (g, d) = crate::model::layer_shapes(&c.model, 784);
                let weighted = |layers: &[(String, LayerShape)], generator: bool| -> f64 {
                    layers
                        .iter()
                        .enumerate()
                        .map(|(i, (_, s))| passes(order, generator, i == 0).iter().sum::<f64>() * s.macs())
                        .sum()
                };
                let ours = 2.0 * 32.0 * (weighted(&g, true) + weighted(&d, false));
                let model = super::super::bench::flops_per_iteration(&c.model, 784, 32, order);
                assert!((ours - model).abs() <= 1e-9 * model, "{preset} {order:?}: {ours} vs {model}");
            }
        }
    }

    #[test]
    fn every_layer_is_timed_with_its_flops() {
        let mut c = Config::default();
        c.model.g_hidden = vec![16];
        c.model.d_hidden = vec![16];
        let times = time_layers(&c, 784, 8, 2);
        let names: Vec<String> = times.iter().map(|t| format!("{}:{}", t.net, t.name)).collect();
        assert_eq!(names, ["G:hidden.0", "G:output", "D:hidden.0", "D:output"]);
        assert!(
            times.iter().all(|t| t.forward_ms > 0.0 && t.flop > 0.0 && t.per_step_ms() > 0.0),
            "{times:?}"
        );
        assert_eq!(times[0].flop, 2.0 * 8.0 * 100.0 * 16.0);
    }

    /// A conditional dcgan G's projection is timed through the product over its one-hot labels,
    /// and its FLOPs count the noise's columns only (the labels pick rows).
    #[test]
    fn a_conditional_projection_counts_the_noise_columns() {
        let mut c = Config::preset("dcgan").unwrap();
        (c.model.g_channels, c.model.d_channels, c.model.latent_dim, c.model.classes) =
            (vec![4, 2], vec![2, 4], 6, 5);
        c.data.clusters = 5;
        let times = time_layers(&c, 784, 3, 1);
        assert_eq!(times[0].shape, "dense 6+5 one-hot->196");
        assert_eq!(times[0].flop, 2.0 * 3.0 * 6.0 * 196.0);
        assert!(times[0].forward_ms > 0.0 && times[0].weight_grad_ms >= 0.0, "{:?}", times[0]);
    }
}
