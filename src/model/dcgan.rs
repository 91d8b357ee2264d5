//! The convolutional networks, `model.kind = "dcgan"` (Radford et al. 2016, in the form of
//! TensorFlow's DCGAN tutorial):
//!
//! G: z -> Dense (no bias) -> BatchNorm -> LeakyReLU -> [c0, s, s] (s = side / 4)
//!    -> (ConvT k×k, no bias -> BatchNorm -> LeakyReLU)* -> ConvT k×k -> tanh -> [batch, pixels];
//!    stride 1 but for the last two transposed convolutions, which double the side.
//! D: x -> [c, side, side] -> (Conv k×k stride 2 -> [BatchNorm] -> LeakyReLU -> dropout)* -> heads.
//!
//! Dropout's masks come from the caller (drawn from the run's own stream, see `train::gan`). A
//! `concat` D sees the one-hot id as one constant feature map per id; D's heads are [`Heads`].
//!
//! Owned here: the layout ([`DcganLayout`]), the layers, their parameter count, activations and
//! multiply-adds, and the forward passes. The field names and their order are the record's: G's
//! projection is `hidden.0` and its BatchNorm `norms.0`, as every earlier build wrote them.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, Initializer, Linear, PaddingConfig2d};
use burn::tensor::activation::leaky_relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use super::conditioning::{self, Heads};
use super::layers::{self, DISCRIMINATOR_IDS, GENERATOR_IDS, batch_norm_layer, glorot, glorot_dense};
use crate::config::{Kernels, ModelConfig, square_shape};
use crate::kernels::batch_norm::batch_norm;
use crate::kernels::conv::{self, Window};
use crate::kernels::leaky_relu::leaky_relu as fused_leaky_relu;
use crate::kernels::one_hot::one_hot_product;
use crate::kernels::tanh::tanh_tensor;

/// What a pass of a dcgan D does with its convolutions' outputs (before the bias) on gantry's
/// kernels: compute them; compute them and keep them, in order; or take them from such a kept pass
/// over the same inputs at the same weights (the same values; the simultaneous step's two passes
/// over its fakes, see `train::gan`). burn's own modules (`train.kernels = "reference"`) always
/// compute them.
pub enum ConvPass<'a> {
    Compute,
    Keep(&'a mut Vec<Tensor<4>>),
    Replay(&'a [Tensor<4>]),
}

/// One convolution of a dcgan: channels in and out, and the feature map's side before and after
/// it (a transposed convolution of stride 2 doubles it, D's stride-2 convolutions halve it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvLayer {
    pub c_in: usize,
    pub c_out: usize,
    pub side_in: usize,
    pub side_out: usize,
}

impl ConvLayer {
    /// The output's values per image (channels x side²).
    pub fn outputs(&self) -> usize {
        self.c_out * self.side_out * self.side_out
    }
}

/// A dcgan's layers for square images of a given side: what the networks are built from, and
/// what the parameter count, the memory estimate, the FLOP count and the dropout masks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcganLayout {
    /// The images' side.
    pub side: usize,
    /// G's projection of the noise: a [g_channels[0], side / 4, side / 4] feature map.
    pub projected: usize,
    /// G's transposed convolutions, into the image last; all but the last are followed by a
    /// BatchNorm. Stride 1 but for the last two, which double the side.
    pub deconvs: Vec<ConvLayer>,
    /// D's stride-2 convolutions; the last one's outputs feed D's heads.
    pub convs: Vec<ConvLayer>,
}

impl DcganLayout {
    /// The dcgan layers of `m` for square images of `pixels` values (see [`square_shape`]).
    pub fn of(m: &ModelConfig, pixels: usize) -> Self {
        let (side, image_channels) = square_shape(pixels);
        let widths: Vec<usize> = m.g_channels.iter().copied().chain([image_channels]).collect();
        let count = widths.len() - 1;
        let mut s = side / 4;
        let projected = widths[0] * s * s;
        let deconvs = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let side_in = s;
                if i + 2 >= count {
                    s *= 2;
                }
                ConvLayer { c_in: w[0], c_out: w[1], side_in, side_out: s }
            })
            .collect();
        // D's input: the image, and one constant map per id under `concat`.
        let (mut c_in, mut s) = (image_channels + conditioning::d_label_width(m), side);
        let convs = m
            .d_channels
            .iter()
            .map(|&c_out| {
                let layer = ConvLayer { c_in, c_out, side_in: s, side_out: s.div_ceil(2) };
                (c_in, s) = (c_out, layer.side_out);
                layer
            })
            .collect();
        Self { side, projected, deconvs, convs }
    }

    /// The features D's heads read: the last convolution's outputs.
    pub fn features(&self, pixels: usize) -> usize {
        self.convs.last().map_or(pixels, |l| l.outputs())
    }
}

/// Parameters of G and D: G's projection (no bias) and transposed convolutions (no bias), 4 values
/// per BatchNorm channel; D's convolutions and logit with biases, its BatchNorms, its heads.
/// Saturating.
pub fn parameter_count(m: &ModelConfig, pixels: usize) -> u64 {
    let layout = DcganLayout::of(m, pixels);
    let k2 = (m.kernel_size * m.kernel_size) as u64;
    let weights = |l: &ConvLayer| (l.c_in as u64).saturating_mul(l.c_out as u64).saturating_mul(k2);
    let projected = layout.projected as u64;
    let mut g =
        (conditioning::g_input_width(m) as u64).saturating_mul(projected).saturating_add(4 * projected);
    for (i, l) in layout.deconvs.iter().enumerate() {
        // A BatchNorm after every transposed convolution but the last.
        let norm = if i + 1 < layout.deconvs.len() { 4 * l.c_out as u64 } else { 0 };
        g = g.saturating_add(weights(l)).saturating_add(norm);
    }
    let d_norms: u64 =
        if m.d_batch_norm { layout.convs.iter().skip(1).map(|l| 4 * l.c_out as u64).sum() } else { 0 };
    let d =
        layout.convs.iter().fold(d_norms, |d, l| d.saturating_add(weights(l)).saturating_add(l.c_out as u64));
    let features = layout.features(pixels);
    g.saturating_add(d)
        .saturating_add(features as u64 + 1)
        .saturating_add(conditioning::embedding_size(m, features))
        .saturating_add(conditioning::aux_classifier_size(m, features))
}

/// Values per image of every hidden output: G's projection and hidden feature maps (not the
/// image), D's feature maps.
pub fn activation_widths(m: &ModelConfig, pixels: usize) -> u64 {
    let layout = DcganLayout::of(m, pixels);
    let g_hidden = layout.deconvs.split_last().map_or(&[][..], |(_image, hidden)| hidden);
    let maps = g_hidden.iter().chain(&layout.convs).map(|l| l.outputs() as u64).sum::<u64>();
    maps.saturating_add(layout.projected as u64)
}

/// G's projection and transposed convolutions, D's convolutions and logit (see
/// [`super::layer_shapes`]).
pub fn layer_shapes(m: &ModelConfig, pixels: usize) -> (super::Layers, super::Layers) {
    use super::LayerShape::{Conv, ConvTranspose, Dense};
    let layout = DcganLayout::of(m, pixels);
    let k = m.kernel_size;
    let projection =
        Dense { d_in: conditioning::g_input_width(m), d_out: layout.projected, labels: conditioning::ids(m) };
    let g = std::iter::once(("hidden.0".to_string(), projection))
        .chain(layout.deconvs.iter().enumerate().map(|(i, l)| {
            let shape =
                ConvTranspose { c_in: l.c_in, c_out: l.c_out, k, side_in: l.side_in, side_out: l.side_out };
            (format!("deconvs.{i}"), shape)
        }))
        .collect();
    let logit = Dense { d_in: layout.features(pixels), d_out: 1, labels: 0 };
    let d = layout
        .convs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let shape = Conv { c_in: l.c_in, c_out: l.c_out, k, side_in: l.side_in, side_out: l.side_out };
            (format!("convs.{i}"), shape)
        })
        .chain([("output".to_string(), logit)])
        .collect();
    (g, d)
}

/// The shapes [c, side, side] of D's dropout masks, one per convolution.
pub fn dropout_shapes(m: &ModelConfig, pixels: usize) -> Vec<[usize; 3]> {
    DcganLayout::of(m, pixels).convs.iter().map(|l| [l.c_out, l.side_out, l.side_out]).collect()
}

/// A dcgan G.
#[derive(Module, Debug)]
pub struct Generator {
    /// The projection of the noise (one Dense layer without bias; `hidden.0` in the records).
    pub(super) hidden: Vec<Linear>,
    /// The projection's BatchNorm (`norms.0`).
    pub(super) norms: Vec<BatchNorm>,
    /// The transposed convolutions and the BatchNorms between them.
    pub(super) deconvs: Vec<ConvTranspose2d>,
    pub(super) deconv_norms: Vec<BatchNorm>,
    pub(super) leaky_slope: f64,
    /// Side of the feature map the noise is projected to.
    pub(super) map_side: usize,
    /// The one-hot label columns at the end of G's input (0 for an unconditional G).
    pub(super) labels: usize,
}

/// A dcgan D (returns logits).
#[derive(Module, Debug)]
pub struct Discriminator {
    pub(super) output: Linear,
    /// The strided convolutions.
    pub(super) convs: Vec<Conv2d>,
    /// With `model.d_batch_norm`: the BatchNorm after each convolution but the first.
    pub(super) norms: Vec<BatchNorm>,
    pub(super) leaky_slope: f64,
    /// The images' side.
    pub(super) side: usize,
    /// A projection D's class embedding (ids -> features, no bias).
    pub(super) embed: Option<Linear>,
    /// An acgan D's auxiliary classifier (features -> id logits).
    pub(super) aux: Option<Linear>,
}

/// A transposed convolution c_in -> c_out, k×k, stride 1 or 2 ("same" padding: the side is kept
/// or doubled), no bias, Glorot-uniform weights ([c_in, c_out, k, k]) from `rng`.
fn deconv(l: &ConvLayer, k: usize, rng: &mut impl rand::Rng, device: &Device) -> ConvTranspose2d {
    let (c_in, c_out, stride) = (l.c_in, l.c_out, l.side_out / l.side_in);
    let mut layer = ConvTranspose2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding([k / 2, k / 2])
        .with_padding_out([stride - 1, stride - 1])
        .with_bias(false)
        .with_initializer(Initializer::Zeros)
        .init(device);
    let w = glorot(c_in * c_out * k * k, c_out * k * k, c_in * k * k, rng);
    layer.weight = Param::from_data(TensorData::new(w, [c_in, c_out, k, k]), device);
    layer
}

/// D's `i`-th convolution on gantry's kernels, its output (before the bias) computed, kept or
/// replayed as `pass` says (an output the replayed pass lacks is computed).
fn fused_conv(
    x: Tensor<4>,
    w: Tensor<4>,
    bias: Option<Tensor<1>>,
    window: Window,
    (pass, i): (&mut ConvPass<'_>, usize),
) -> Tensor<4> {
    let y = match pass {
        ConvPass::Replay(outputs) if i < outputs.len() => {
            return conv::conv2d_known(x, w, bias, window, outputs[i].clone());
        }
        _ => conv::conv2d(x, w, None, window),
    };
    if let ConvPass::Keep(outputs) = pass {
        outputs.push(y.clone().detach());
    }
    conv::with_bias(y, bias)
}

/// The padding of D's k×k stride-2 convolutions on each side (`k / 2`: "same" for odd k).
fn strided_padding(k: usize) -> usize {
    k / 2
}

/// A convolution c_in -> c_out, k×k, stride 2, padding k / 2 (the side halves, rounding up),
/// Glorot-uniform weights ([c_out, c_in, k, k]) from `rng`, zero bias.
fn strided_conv(l: &ConvLayer, k: usize, rng: &mut impl rand::Rng, device: &Device) -> Conv2d {
    let (c_in, c_out, p) = (l.c_in, l.c_out, strided_padding(k));
    let mut layer = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_initializer(Initializer::Zeros)
        .init(device);
    let w = glorot(c_out * c_in * k * k, c_in * k * k, c_out * k * k, rng);
    layer.weight = Param::from_data(TensorData::new(w, [c_out, c_in, k, k]), device);
    layer
}

impl Generator {
    /// G with Glorot-uniform weights drawn from `rng` in layer order.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let layout = DcganLayout::of(cfg, pixels);
        let input = conditioning::g_input_width(cfg);
        let projection = layers::glorot_dense_without_bias(input, layout.projected, rng, device);
        let mut deconvs = Vec::new();
        let mut deconv_norms = Vec::new();
        for (i, l) in layout.deconvs.iter().enumerate() {
            deconvs.push(deconv(l, cfg.kernel_size, rng, device));
            if i + 1 < layout.deconvs.len() {
                deconv_norms.push(batch_norm_layer(cfg, l.c_out, device));
            }
        }
        let g = Self {
            hidden: vec![projection],
            norms: vec![batch_norm_layer(cfg, layout.projected, device)],
            deconvs,
            deconv_norms,
            leaky_slope: cfg.leaky_slope,
            map_side: layout.deconvs.first().map_or(0, |l| l.side_in),
            labels: conditioning::ids(cfg),
        };
        layers::stable_ids(g, GENERATOR_IDS, |g| g.norms.iter_mut().chain(&mut g.deconv_norms).collect())
    }

    /// `z` [batch, g input] -> images [batch, pixels] in [-1, 1]. `kernels` = fused: gantry's
    /// batch norm (on the projection) and leaky ReLU kernels, which compute the same values in
    /// fewer passes, and its transposed convolutions (the same function, summed in another order);
    /// reference: burn's own modules.
    pub fn forward(&self, z: Tensor<2>, kernels: Kernels) -> Tensor<2> {
        let fused = kernels.is_fused();
        let b = z.dims()[0];
        let slope = self.leaky_slope;
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = if fused {
                // The label columns as the weight rows they pick: the product's bits.
                let projected = match self.labels {
                    0 => linear.forward(x),
                    labels => one_hot_product(x, linear.weight.val(), labels),
                };
                fused_leaky_relu(batch_norm(projected, norm), slope)
            } else {
                leaky_relu(norm.forward(linear.forward(x)), slope)
            };
        }
        let s = self.map_side;
        let channels = x.dims()[1] / (s * s);
        let mut x: Tensor<4> = x.reshape([b, channels, s, s]);
        // Every transposed convolution but the last is followed by a BatchNorm.
        for (i, layer) in self.deconvs.iter().enumerate() {
            x = if fused {
                let (s, p, out) = (layer.stride[0], layer.padding[0], layer.padding_out[0]);
                let window = Window::transpose(s, p, out).with(kernels.conv_algorithm());
                conv::conv_transpose2d(x, layer.weight.val(), window)
            } else {
                layer.forward(x)
            };
            x = match self.deconv_norms.get(i) {
                Some(norm) if fused => fused_leaky_relu(norm.forward(x), slope),
                Some(norm) => leaky_relu(norm.forward(x), slope),
                None if fused => tanh_tensor(x),
                None => x.tanh(),
            };
        }
        x.flatten(1, 3)
    }
}

impl Generator {
    /// This G's layers as ONNX nodes on `x` [N, g input] (the reference forward pass: the
    /// projection, its BatchNorm and LeakyReLU, the feature map, then each transposed convolution
    /// with its BatchNorm and LeakyReLU, tanh after the last); returns [N, c, side, side].
    pub(super) fn onnx(&self, graph: &mut super::onnx::Graph, x: String) -> String {
        use super::onnx::Attr;
        let mut x = x;
        for (i, (linear, norm)) in self.hidden.iter().zip(&self.norms).enumerate() {
            x = graph.dense(&x, linear, &format!("hidden.{i}"));
            x = graph.batch_norm(&x, norm, &format!("norms.{i}"));
            x = graph.leaky_relu(&x, self.leaky_slope);
        }
        let s = self.map_side;
        let channels = self.deconvs.first().map_or(0, |l| l.weight.dims()[0]);
        x = graph.reshape(&x, &[channels, s, s]);
        for (i, layer) in self.deconvs.iter().enumerate() {
            let w = graph.weight(&format!("deconvs.{i}.weight"), &layer.weight.val());
            let (k, p) = (layer.kernel_size[0] as i64, layer.padding[0] as i64);
            let attributes = vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(layer.stride.iter().map(|&v| v as i64).collect())),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("output_padding", Attr::Ints(layer.padding_out.iter().map(|&v| v as i64).collect())),
            ];
            x = graph.node("ConvTranspose", &[&x, &w], attributes);
            x = match self.deconv_norms.get(i) {
                Some(norm) => {
                    let y = graph.batch_norm(&x, norm, &format!("deconv_norms.{i}"));
                    graph.leaky_relu(&y, self.leaky_slope)
                }
                None => graph.node("Tanh", &[&x], vec![]),
            };
        }
        x
    }
}

impl Discriminator {
    /// D with Glorot-uniform weights and zero biases drawn from `rng`: the convolutions in order,
    /// the logit, then the heads.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let layout = DcganLayout::of(cfg, pixels);
        let convs: Vec<Conv2d> =
            layout.convs.iter().map(|l| strided_conv(l, cfg.kernel_size, rng, device)).collect();
        let features = layout.features(pixels);
        let output = glorot_dense(features, 1, rng, device);
        let embed = conditioning::class_embedding(cfg, features, rng, device);
        let aux = conditioning::aux_classifier(cfg, features, rng, device);
        let norms = if cfg.d_batch_norm {
            layout.convs.iter().skip(1).map(|l| batch_norm_layer(cfg, l.c_out, device)).collect()
        } else {
            Vec::new()
        };
        let d = Self { output, convs, norms, leaky_slope: cfg.leaky_slope, side: layout.side, embed, aux };
        layers::stable_ids(d, DISCRIMINATOR_IDS, |d| d.norms.iter_mut().collect())
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
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
        sigmas: Option<&[Tensor<2>]>,
        pass: ConvPass<'_>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let heads = self.heads();
        let concat = conditioning::input_labels(labels, &heads);
        let convs = self.convs.len();
        let sigmas_of_convs = sigmas.map(|s| &s[..convs]);
        let features = self.features(x, concat, dropout, (kernels, pass), sigmas_of_convs);
        heads.apply(features, labels, sigmas.map(|s| &s[convs..]), kernels, false)
    }

    /// D's features (the input of its heads, flattened); `concat`: one-hot labels [batch, ids]
    /// joined to the image as one constant feature map per id. After each convolution's LeakyReLU
    /// the output is multiplied by the matching mask of `dropout` ([batch, c, s, s], values 0 and
    /// 1 / (1 - rate)), when given; with `model.d_batch_norm` every convolution but the first is
    /// followed by its BatchNorm, before the LeakyReLU. `kernels` = fused: leaky ReLU from
    /// gantry's kernel (the same values in fewer passes) and gantry's convolutions (the same
    /// function, summed in another order). `sigmas`: each convolution's σ when D is spectrally
    /// normalized (its weight is divided by it).
    fn features(
        &self,
        x: Tensor<2>,
        concat: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        (kernels, mut pass): (Kernels, ConvPass<'_>),
        sigmas: Option<&[Tensor<2>]>,
    ) -> Tensor<2> {
        let fused = kernels.is_fused();
        let (b, s) = (x.dims()[0], self.side);
        // Grey or RGB: the values per image say which.
        let channels = x.dims()[1] / (s * s);
        let mut x: Tensor<4> = x.reshape([b, channels, s, s]);
        if let Some(y) = concat {
            let ids = y.dims()[1];
            let maps = y.clone().reshape([b, ids, 1, 1]).expand([b, ids, s, s]);
            x = Tensor::cat(vec![x, maps], 1);
        }
        for (i, layer) in self.convs.iter().enumerate() {
            // conv(x, W / σ) when spectrally normalized, padded as `strided_conv` pads.
            let w = match sigmas {
                Some(s) => layer.weight.val() / s[i].clone().unsqueeze::<4>(),
                None => layer.weight.val(),
            };
            let (p, bias) = (strided_padding(layer.kernel_size[0]), layer.bias.as_ref().map(|b| b.val()));
            let y = if fused {
                let window = Window::conv(layer.stride[0], p).with(kernels.conv_algorithm());
                fused_conv(x, w, bias, window, (&mut pass, i))
            } else if sigmas.is_some() {
                let options = ConvOptions::new(layer.stride, [p, p], layer.dilation, layer.groups);
                conv2d(x, w, bias, options)
            } else {
                layer.forward(x)
            };
            let y = match i.checked_sub(1).and_then(|k| self.norms.get(k)) {
                Some(norm) => norm.forward(y),
                None => y,
            };
            x = if fused { fused_leaky_relu(y, self.leaky_slope) } else { leaky_relu(y, self.leaky_slope) };
            if let Some(mask) = dropout.and_then(|m| m.get(i)) {
                x = x * mask.clone();
            }
        }
        x.flatten(1, 3)
    }

    /// Each layer's weight as the matrix [d_in, d_out] spectral norm divides: a convolution's
    /// [c_out, c_in, k, k] seen as [c_in·k·k, c_out] (Miyato et al.'s reshaping), then the heads.
    pub(super) fn spectral_matrices(&self) -> Vec<Tensor<2>> {
        let convs = self.convs.iter().map(|c| {
            let [o, i, kh, kw] = c.weight.dims();
            c.weight.val().reshape([o, i * kh * kw]).transpose()
        });
        convs.chain(self.heads().weights()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_dcgan_layout_keeps_the_side_until_the_last_two_deconvolutions_and_halves_it_in_d() {
        let c = Config::preset("dcgan-tf").unwrap();
        let l = DcganLayout::of(&c.model, 784);
        let layer = |c_in, c_out, side_in, side_out| ConvLayer { c_in, c_out, side_in, side_out };
        assert_eq!((l.side, l.projected), (28, 256 * 7 * 7));
        assert_eq!(l.deconvs, vec![layer(256, 128, 7, 7), layer(128, 64, 7, 14), layer(64, 1, 14, 28)]);
        assert_eq!(l.convs, vec![layer(1, 64, 28, 14), layer(64, 128, 14, 7)]);
        let small = DcganLayout::of(&Config::preset("dcgan").unwrap().model, 784);
        assert_eq!(small.deconvs, vec![layer(64, 32, 7, 14), layer(32, 1, 14, 28)]);
    }

    /// The count the memory check reads is the networks' own, D's BatchNorms included.
    #[test]
    fn the_parameter_count_is_the_networks_with_batch_norm_in_d() {
        use rand::SeedableRng;
        let mut c = Config::preset("dcgan").unwrap().model;
        c.d_batch_norm = true;
        c.d_channels = vec![8, 16, 32];
        let device = Device::flex();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let g = Generator::new(&c, 784, &mut rng, &device);
        let d = Discriminator::new(&c, 784, &mut rng, &device);
        assert_eq!(d.norms.len(), 2);
        assert_eq!((g.num_params() + d.num_params()) as u64, parameter_count(&c, 784));
    }
}
