//! The Dense networks of the classic "simple GAN" (Keras-GAN's gan.py), `model.kind = "mlp"`:
//!
//! G: z [batch, latent] -> (Dense -> LeakyReLU -> BatchNorm)* -> Dense -> tanh -> [batch, pixels]
//! D: x [batch, pixels] -> (Dense -> LeakyReLU)* -> Dense -> logit [batch, 1]
//!
//! D returns the logit; the sigmoid lives in the loss (binary cross-entropy from logits), which is
//! what Keras' TF backend computes for a sigmoid output and is numerically stable. A `concat` D
//! takes the one-hot id beside the image in its input; D's heads are [`Heads`].
//!
//! Owned here: the layers, their parameter count, activations and multiply-adds, and the forward
//! passes (gantry's fused kernels, and burn's own modules as the reference). The field names and
//! their order are the record's: they name each tensor in the saved weights and number the ids.

use burn::module::Module;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};

use super::conditioning::{self, Heads};
use super::layers::{self, DISCRIMINATOR_IDS, GENERATOR_IDS, batch_norm_layer, glorot_dense};
use crate::config::{Kernels, ModelConfig};
use crate::kernels::batch_norm::batch_norm;
use crate::kernels::dense::{Activation, dense};

/// An mlp G.
#[derive(Module, Debug)]
pub struct Generator {
    pub(super) hidden: Vec<Linear>,
    pub(super) norms: Vec<BatchNorm>,
    pub(super) output: Linear,
    pub(super) leaky_slope: f64,
}

/// An mlp D (returns logits).
#[derive(Module, Debug)]
pub struct Discriminator {
    pub(super) hidden: Vec<Linear>,
    pub(super) output: Linear,
    /// A projection D's class embedding (ids -> features, no bias).
    pub(super) embed: Option<Linear>,
    /// An acgan D's auxiliary classifier (features -> id logits).
    pub(super) aux: Option<Linear>,
    pub(super) leaky_slope: f64,
}

/// G's layer widths, input to output.
fn g_widths(m: &ModelConfig, pixels: usize) -> Vec<usize> {
    std::iter::once(conditioning::g_input_width(m))
        .chain(m.g_hidden.iter().copied())
        .chain([pixels])
        .collect()
}

/// D's layer widths, input to the logit.
fn d_widths(m: &ModelConfig, pixels: usize) -> Vec<usize> {
    std::iter::once(pixels + conditioning::d_label_width(m))
        .chain(m.d_hidden.iter().copied())
        .chain([1])
        .collect()
}

/// The features D's heads read: its last hidden layer's width.
fn features(m: &ModelConfig, pixels: usize) -> usize {
    m.d_hidden.last().copied().unwrap_or(pixels)
}

/// Parameters of G and D (weights, biases, BatchNorm's scale, shift and running statistics).
/// Saturating: absurd widths give a huge count, not an overflow.
pub fn parameter_count(m: &ModelConfig, pixels: usize) -> u64 {
    let dense = |a: u64, b: u64| a.saturating_mul(b).saturating_add(b);
    let chain = |widths: Vec<usize>| -> u64 {
        widths.windows(2).fold(0u64, |acc, w| acc.saturating_add(dense(w[0] as u64, w[1] as u64)))
    };
    let bn: u64 = m.g_hidden.iter().fold(0u64, |acc, &w| acc.saturating_add(4 * w as u64));
    let f = features(m, pixels);
    chain(g_widths(m, pixels))
        .saturating_add(bn)
        .saturating_add(chain(d_widths(m, pixels)))
        .saturating_add(conditioning::embedding_size(m, f))
        .saturating_add(conditioning::aux_classifier_size(m, f))
}

/// Values per image of every hidden layer's output, G's and D's.
pub fn activation_widths(m: &ModelConfig) -> u64 {
    m.g_hidden.iter().chain(&m.d_hidden).map(|&w| w as u64).sum()
}

/// G's and D's Dense layers (see [`super::layer_shapes`]).
pub fn layer_shapes(m: &ModelConfig, pixels: usize) -> (super::Layers, super::Layers) {
    let dense = |widths: Vec<usize>, last: &str| -> super::Layers {
        let n = widths.len() - 1;
        widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let name = if i + 1 == n { last.to_string() } else { format!("hidden.{i}") };
                (name, super::LayerShape::Dense { d_in: w[0], d_out: w[1], labels: 0 })
            })
            .collect()
    };
    (dense(g_widths(m, pixels), "output"), dense(d_widths(m, pixels), "output"))
}

impl Generator {
    /// G with Glorot-uniform weights and zero biases drawn from `rng`, in layer order.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let widths = g_widths(cfg, pixels);
        let (mut hidden, mut norms) = (Vec::new(), Vec::new());
        for w in widths[..widths.len() - 1].windows(2) {
            hidden.push(glorot_dense(w[0], w[1], rng, device));
            norms.push(batch_norm_layer(cfg, w[1], device));
        }
        let last = widths[widths.len() - 2];
        let output = glorot_dense(last, pixels, rng, device);
        let g = Self { hidden, norms, output, leaky_slope: cfg.leaky_slope };
        layers::stable_ids(g, GENERATOR_IDS, |g| g.norms.iter_mut().collect())
    }

    /// `z` [batch, g input] -> images [batch, pixels] in [-1, 1], with gantry's fused kernels.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = batch_norm(dense(x, linear, Activation::LeakyRelu(self.leaky_slope)), norm);
        }
        dense(x, &self.output, Activation::Tanh)
    }

    /// [`Generator::forward`] with burn's own modules and activations only (`Linear::forward`,
    /// `leaky_relu`, `BatchNorm::forward`, `tanh`).
    pub fn forward_reference(&self, z: Tensor<2>) -> Tensor<2> {
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = norm.forward(leaky_relu(linear.forward(x), self.leaky_slope));
        }
        self.output.forward(x).tanh()
    }
}

impl Generator {
    /// This G's layers as ONNX nodes on `x` [N, g input] (the reference forward pass: Dense,
    /// LeakyReLU, BatchNorm with moving statistics, ..., Dense, tanh); returns [N, pixels].
    pub(super) fn onnx(&self, graph: &mut super::onnx::Graph, x: String) -> String {
        let mut x = x;
        for (i, (linear, norm)) in self.hidden.iter().zip(&self.norms).enumerate() {
            x = graph.dense(&x, linear, &format!("hidden.{i}"));
            x = graph.leaky_relu(&x, self.leaky_slope);
            x = graph.batch_norm(&x, norm, &format!("norms.{i}"));
        }
        let y = graph.dense(&x, &self.output, "output");
        graph.node("Tanh", &[&y], vec![])
    }
}

impl Discriminator {
    /// D with Glorot-uniform weights and zero biases drawn from `rng`, in layer order, then the
    /// heads.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let widths = d_widths(cfg, pixels);
        let hidden =
            widths[..widths.len() - 1].windows(2).map(|w| glorot_dense(w[0], w[1], rng, device)).collect();
        let f = widths[widths.len() - 2];
        let output = glorot_dense(f, 1, rng, device);
        let embed = conditioning::class_embedding(cfg, f, rng, device);
        let aux = conditioning::aux_classifier(cfg, f, rng, device);
        let d = Self { hidden, output, embed, aux, leaky_slope: cfg.leaky_slope };
        layers::stable_ids(d, DISCRIMINATOR_IDS, |_| Vec::new())
    }

    pub(super) fn heads(&self) -> Heads<'_> {
        Heads { output: &self.output, embed: self.embed.as_ref(), aux: self.aux.as_ref() }
    }

    /// The logits and an acgan D's class logits of images `x` [batch, pixels] (see
    /// `super::Discriminator::score_and_classes`); `sigmas`: every layer's σ in
    /// [`Discriminator::spectral_matrices`]' order when D is spectrally normalized.
    pub(super) fn score(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        kernels: Kernels,
        sigmas: Option<&[Tensor<2>]>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let fused = kernels.is_fused();
        let heads = self.heads();
        let mut x = match conditioning::input_labels(labels, &heads) {
            Some(y) => Tensor::cat(vec![x, y.clone()], 1),
            None => x,
        };
        for (k, linear) in self.hidden.iter().enumerate() {
            x = match sigmas.map(|s| s[k].clone()) {
                Some(s) => leaky_relu(layers::dense_spectral(x, linear, s), self.leaky_slope),
                None if fused => dense(x, linear, Activation::LeakyRelu(self.leaky_slope)),
                None => leaky_relu(linear.forward(x), self.leaky_slope),
            };
        }
        heads.apply(x, labels, sigmas.map(|s| &s[self.hidden.len()..]), kernels, fused)
    }

    /// Each layer's weight as the matrix [d_in, d_out] spectral norm divides: the hidden layers,
    /// then the heads.
    pub(super) fn spectral_matrices(&self) -> Vec<Tensor<2>> {
        let heads = self.heads();
        self.hidden.iter().map(|l| l.weight.val()).chain(heads.weights()).collect()
    }
}
