//! The two networks of the classic "simple GAN" (Keras-GAN's gan.py), built from the config so
//! the same code trains on any burn device.
//!
//! G: z [batch, latent] -> (Dense -> LeakyReLU -> BatchNorm)* -> Dense -> tanh -> [batch, pixels]
//! D: x [batch, pixels] -> (Dense -> LeakyReLU)* -> Dense -> logit [batch, 1]
//! D returns the logit; the sigmoid lives in the loss (binary cross-entropy from logits), which is
//! what Keras' TF backend computes for a sigmoid output and is numerically stable.
//!
//! With `model.kind = "dcgan"` the same two types hold convolutional networks (Radford et al.
//! 2016, in the form of TensorFlow's DCGAN tutorial; the dcgan fields are empty in an mlp, so its
//! records are what they always were):
//! G: z -> Dense (no bias) -> BatchNorm -> LeakyReLU -> [c0, s, s] (s = side / 4)
//!    -> (ConvT k×k, no bias -> BatchNorm -> LeakyReLU)* -> ConvT k×k -> tanh -> [batch, pixels];
//!    stride 1 but for the last two transposed convolutions, which double the side.
//! D: x -> [1, side, side] -> (Conv k×k stride 2 -> LeakyReLU -> dropout)* -> Dense -> logit.
//! Dropout's masks come from the caller (drawn from the run's own stream, see `train::gan`).
//!
//! Conditional networks (`model.conditional`, either kind) take the class as a one-hot vector:
//! G's input is [z, one-hot] (the caller joins them, [`g_input`]); a `concat` D takes the
//! one-hot beside the image (an mlp's input, or a dcgan's extra constant feature maps, one per
//! class); a `projection` D adds `<embed(y), features(x)>` to its logit (Miyato & Koyama 2018),
//! its embedding a bias-free Dense layer on the one-hot. An `acgan` D (Odena et al. 2017) sees
//! the image alone and has a second head beside its logit, a Dense classifier of its last
//! features into the classes ([`Discriminator::score_and_classes`]). [`Discriminator::score`]
//! takes the labels.
//!
//! Also here, as operations on the networks: D's spectral normalization (each layer's weight
//! divided by an estimate of its largest singular value, Miyato et al. 2018) and the moving
//! average of G's weights (`train.g_ema`).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::leaky_relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::config::{Kernels, ModelConfig, ModelKind};

use crate::kernels::batch_norm::batch_norm;
use crate::kernels::conv;
use crate::kernels::dense::{Activation, dense};
use crate::kernels::leaky_relu::leaky_relu as fused_leaky_relu;

/// The generator.
#[derive(Module, Debug)]
pub struct Generator {
    hidden: Vec<Linear>,
    norms: Vec<BatchNorm>,
    /// The mlp's output layer (None in a dcgan).
    output: Option<Linear>,
    /// dcgan: the transposed convolutions and the BatchNorms between them (empty in an mlp).
    deconvs: Vec<ConvTranspose2d>,
    deconv_norms: Vec<BatchNorm>,
    leaky_slope: f64,
    /// dcgan: side of the feature map the noise is projected to (0 in an mlp).
    map_side: usize,
}

/// The discriminator (returns logits).
#[derive(Module, Debug)]
pub struct Discriminator {
    hidden: Vec<Linear>,
    output: Linear,
    /// dcgan: the strided convolutions (empty in an mlp).
    convs: Vec<Conv2d>,
    /// dcgan with `model.d_batch_norm`: the BatchNorm after each convolution but the first.
    norms: Vec<BatchNorm>,
    leaky_slope: f64,
    /// dcgan: the images' side (0 in an mlp).
    side: usize,
    /// A projection D's class embedding (classes -> features, no bias; None otherwise).
    embed: Option<Linear>,
    /// An acgan D's auxiliary classifier (features -> class logits; None otherwise). Last: the
    /// fields before it keep the parameter ids and records they always had.
    aux: Option<Linear>,
}

/// BatchNorm with Keras' conventions (`bn_momentum` is the fraction of the old average kept).
fn batch_norm_layer(cfg: &ModelConfig, width: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(width)
        // Keras keeps `momentum` of the old average; burn weighs the new batch by it.
        .with_momentum(1.0 - cfg.bn_momentum)
        .with_epsilon(cfg.bn_epsilon)
        .init(device)
}

/// Glorot-uniform values for a layer with these fans, from `rng`.
fn glorot(n: usize, fan_in: usize, fan_out: usize, rng: &mut impl rand::Rng) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..n).map(|_| rng.random_range(-limit..limit)).collect()
}

/// A transposed convolution c_in -> c_out, k×k, stride 1 or 2 ("same" padding: the side is kept
/// or doubled), no bias, Glorot-uniform weights ([c_in, c_out, k, k]) from `rng`.
fn deconv(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    rng: &mut impl rand::Rng,
    device: &Device,
) -> ConvTranspose2d {
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

/// A convolution c_in -> c_out, k×k, stride 2, padding k / 2 (the side halves, rounding up),
/// Glorot-uniform weights ([c_out, c_in, k, k]) from `rng`, zero bias.
fn strided_conv(c_in: usize, c_out: usize, k: usize, rng: &mut impl rand::Rng, device: &Device) -> Conv2d {
    let p = strided_padding(k);
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
    /// Build G with Glorot-uniform weights and zero biases drawn from `rng`.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        if cfg.kind == ModelKind::Dcgan {
            return Self::dcgan(cfg, pixels, rng, device);
        }
        let mut width = cfg.g_input();
        let mut hidden = Vec::new();
        let mut norms = Vec::new();
        for &w in &cfg.g_hidden {
            hidden.push(glorot_dense(width, w, rng, device));
            norms.push(batch_norm_layer(cfg, w, device));
            width = w;
        }
        let output = Some(glorot_dense(width, pixels, rng, device));
        let g = Self {
            hidden,
            norms,
            output,
            deconvs: Vec::new(),
            deconv_norms: Vec::new(),
            leaky_slope: cfg.leaky_slope,
            map_side: 0,
        };
        g.with_stable_ids(GENERATOR_IDS)
    }

    /// The dcgan G (see the module's doc and [`ModelConfig::dcgan_layout`]): weights drawn in
    /// layer order.
    fn dcgan(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let layout = cfg.dcgan_layout(pixels);
        let (k, projected, input) = (cfg.kernel_size, layout.projected, cfg.g_input());
        let kernel = glorot(input * projected, input, projected, rng);
        let mut projection = LinearConfig::new(input, projected).with_bias(false).init(device);
        projection.weight = Param::from_data(TensorData::new(kernel, [input, projected]), device);
        let mut deconvs = Vec::new();
        let mut deconv_norms = Vec::new();
        for (i, l) in layout.deconvs.iter().enumerate() {
            deconvs.push(deconv(l.c_in, l.c_out, k, l.side_out / l.side_in, rng, device));
            if i + 1 < layout.deconvs.len() {
                deconv_norms.push(batch_norm_layer(cfg, l.c_out, device));
            }
        }
        let map_side = layout.deconvs.first().map_or(0, |l| l.side_in);
        let g = Self {
            hidden: vec![projection],
            norms: vec![batch_norm_layer(cfg, projected, device)],
            output: None,
            deconvs,
            deconv_norms,
            leaky_slope: cfg.leaky_slope,
            map_side,
        };
        g.with_stable_ids(GENERATOR_IDS)
    }

    /// Give every parameter and BatchNorm statistic a fixed id (instead of a random one), so that
    /// saved weights depend only on their values and a resumed run writes the same bytes.
    fn with_stable_ids(self, base: u64) -> Self {
        let mut mapper = StableIds { next: base };
        let mut g = self.map(&mut mapper);
        stable_statistics_ids(g.norms.iter_mut().chain(&mut g.deconv_norms), &mut mapper.next);
        g
    }

    /// `z` [batch, latent] -> images [batch, pixels] in [-1, 1]; a conditional G takes
    /// [batch, latent + classes], the one-hot labels after the noise ([`g_input`]).
    /// BatchNorm uses batch statistics on an autodiff device in training mode, moving statistics
    /// otherwise (`g.valid()`).
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        let Some(output) = &self.output else {
            return self.forward_dcgan(z, true);
        };
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = batch_norm(dense(x, linear, Activation::LeakyRelu(self.leaky_slope)), norm);
        }
        dense(x, output, Activation::Tanh)
    }

    /// The dcgan G from burn's modules; `fused`: with gantry's batch norm (on the projection)
    /// and leaky ReLU kernels, which compute the same values in fewer passes, and its transposed
    /// convolutions (the same function, summed in another order).
    fn forward_dcgan(&self, z: Tensor<2>, fused: bool) -> Tensor<2> {
        let b = z.dims()[0];
        let slope = self.leaky_slope;
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = if fused {
                fused_leaky_relu(batch_norm(linear.forward(x), norm), slope)
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
                // gantry's kernel: the same function, its sums in another order.
                let (s, p, out) = (layer.stride[0], layer.padding[0], layer.padding_out[0]);
                conv::conv_transpose2d(x, layer.weight.val(), s, p, out)
            } else {
                layer.forward(x)
            };
            x = match self.deconv_norms.get(i) {
                Some(norm) if fused => fused_leaky_relu(norm.forward(x), slope),
                Some(norm) => leaky_relu(norm.forward(x), slope),
                None => x.tanh(),
            };
        }
        x.flatten(1, 3)
    }

    /// Whether this G is convolutional.
    pub fn is_dcgan(&self) -> bool {
        self.output.is_none()
    }

    /// [`Generator::forward`] with burn's own modules and activations only (the reference path:
    /// `Linear::forward`, `leaky_relu`, `BatchNorm::forward`, `tanh`), none of gantry's kernels.
    pub fn forward_reference(&self, z: Tensor<2>) -> Tensor<2> {
        let Some(output) = &self.output else {
            return self.forward_dcgan(z, false);
        };
        let mut x = z;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = norm.forward(leaky_relu(linear.forward(x), self.leaky_slope));
        }
        output.forward(x).tanh()
    }

    /// One step of the moving average: each parameter `p` of `self` (the average) becomes
    /// `decay * p + (1 - decay) * q` with `q` the same parameter of `live`, BatchNorm's moving
    /// statistics included (burn visits them with the weights). Both on one device; ids kept.
    pub fn averaged_with(self, live: &Generator, decay: f64) -> Self {
        let mut values = Collect::default();
        live.visit(&mut values);
        self.map(&mut Average { live: values.0.into_iter(), decay })
    }
}

/// The float parameters of a module in visiting order, flattened.
#[derive(Default)]
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().flatten::<1>(0, D - 1));
    }
}

/// Moves each parameter toward the next of `live` (same visiting order, same shapes).
struct Average {
    live: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Average {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let live = self.live.next().expect("the average and the live G have the same parameters");
        let live = live.reshape(value.dims());
        let averaged = value * self.decay + live * (1.0 - self.decay);
        Param::from_mapped_value(id, averaged, mapper)
    }
}

/// One D layer's power-iteration vectors for spectral norm: `u` [d_out] and `v` [d_in], of unit
/// length (so that `vᵀ W u` estimates W's largest singular value). The form a checkpoint keeps;
/// training holds them on the device ([`SpectralState`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectralVectors {
    pub u: Vec<f32>,
    pub v: Vec<f32>,
}

/// One layer's power-iteration vectors as training holds them: on the device, without autodiff,
/// so that a power iteration reads nothing back to the host. `u` [d_out, 1], `v` [1, d_in].
#[derive(Debug, Clone)]
pub struct SpectralState {
    u: Tensor<2>,
    v: Tensor<2>,
}

impl SpectralState {
    /// Vectors from a checkpoint, on `device`.
    pub fn from_vectors(sv: &SpectralVectors, device: &Device) -> Self {
        let (d_out, d_in) = (sv.u.len(), sv.v.len());
        Self {
            u: Tensor::from_data(TensorData::new(sv.u.clone(), [d_out, 1]), device),
            v: Tensor::from_data(TensorData::new(sv.v.clone(), [1, d_in]), device),
        }
    }

    /// The vectors as a checkpoint keeps them (read from the device).
    pub fn to_vectors(&self) -> SpectralVectors {
        let read = |t: &Tensor<2>| -> Vec<f32> {
            t.clone().into_data().try_into_vec().expect("the model computes in f32")
        };
        SpectralVectors { u: read(&self.u), v: read(&self.v) }
    }
}

impl Discriminator {
    /// Build D with Glorot-uniform weights and zero biases drawn from `rng`.
    pub fn new(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        if cfg.kind == ModelKind::Dcgan {
            return Self::dcgan(cfg, pixels, rng, device);
        }
        let mut width = pixels + cfg.d_label_input();
        let mut hidden = Vec::new();
        for &w in &cfg.d_hidden {
            hidden.push(glorot_dense(width, w, rng, device));
            width = w;
        }
        let output = glorot_dense(width, 1, rng, device);
        let embed = class_embedding(cfg, width, rng, device);
        let aux = aux_classifier(cfg, width, rng, device);
        let (convs, norms, side) = (Vec::new(), Vec::new(), 0);
        Self { hidden, output, convs, norms, leaky_slope: cfg.leaky_slope, side, embed, aux }
            .with_stable_ids(DISCRIMINATOR_IDS)
    }

    /// The dcgan D (see the module's doc and [`ModelConfig::dcgan_layout`]): weights drawn in
    /// layer order.
    fn dcgan(cfg: &ModelConfig, pixels: usize, rng: &mut impl rand::Rng, device: &Device) -> Self {
        let layout = cfg.dcgan_layout(pixels);
        let convs: Vec<Conv2d> = layout
            .convs
            .iter()
            .map(|l| strided_conv(l.c_in, l.c_out, cfg.kernel_size, rng, device))
            .collect();
        let features = layout.convs.last().map_or(pixels, |l| l.outputs());
        let output = glorot_dense(features, 1, rng, device);
        let embed = class_embedding(cfg, features, rng, device);
        let aux = aux_classifier(cfg, features, rng, device);
        let side = layout.side;
        let norms = if cfg.d_batch_norm {
            layout.convs.iter().skip(1).map(|l| batch_norm_layer(cfg, l.c_out, device)).collect()
        } else {
            Vec::new()
        };
        Self { hidden: Vec::new(), output, convs, norms, leaky_slope: cfg.leaky_slope, side, embed, aux }
            .with_stable_ids(DISCRIMINATOR_IDS)
    }

    /// [`Generator::with_stable_ids`] for D.
    fn with_stable_ids(self, base: u64) -> Self {
        let mut mapper = StableIds { next: base };
        let mut d = self.map(&mut mapper);
        stable_statistics_ids(d.norms.iter_mut(), &mut mapper.next);
        d
    }

    /// Whether this D is convolutional.
    pub fn is_dcgan(&self) -> bool {
        !self.convs.is_empty()
    }

    /// D's scores of images [batch, pixels] with their one-hot class labels [batch, classes]
    /// (given exactly when D is conditional) -> logits [batch, 1]. `dropout`: a dcgan's masks
    /// (see `dcgan_features`); `kernels`: gantry's fused ones, or burn's own
    /// modules and activations only (the same values).
    pub fn score(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
    ) -> Tensor<2> {
        self.score_and_classes(x, labels, dropout, kernels, None).0
    }

    /// [`Discriminator::score`] (spectrally normalized with `spectral`'s vectors when given) and,
    /// for an acgan D, its auxiliary classifier's class logits [batch, classes] of the same
    /// forward pass (None for any other D).
    pub fn score_and_classes(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
        spectral: Option<&[SpectralState]>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let sigmas = spectral.map(|states| self.sigmas(states));
        self.score_with(x, labels, dropout, kernels, sigmas.as_deref())
    }

    /// [`Discriminator::score`] with every layer spectrally normalized (`model.d_spectral_norm`):
    /// each weight W divided by `σ = vᵀ M u`, M the layer's matrix (see
    /// [`Discriminator::layer_shapes`]); the gradient flows through σ with `u` and `v` held
    /// constant, as in Miyato et al. 2018.
    pub fn score_spectral(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
        states: &[SpectralState],
    ) -> Tensor<2> {
        self.score_and_classes(x, labels, dropout, kernels, Some(states)).0
    }

    /// Each layer's σ = vᵀ M u from its spectral state, with M's graph (u and v carry no
    /// autodiff: constants in the graph).
    fn sigmas(&self, states: &[SpectralState]) -> Vec<Tensor<2>> {
        self.spectral_matrices()
            .into_iter()
            .zip(states)
            .map(|(m, s)| s.v.clone().matmul(m).matmul(s.u.clone())) // [1, 1]
            .collect()
    }

    /// The forward pass: the logits and an acgan D's class logits; `sigmas`: each layer's σ in
    /// [`Discriminator::spectral_matrices`]' order (convolutions, dense layers, the logit layer,
    /// the class embedding, the auxiliary classifier) when D is spectrally normalized. A normalized
    /// dense layer computes `x (W / σ)` as `(x W) / σ` (the same function and gradients, and a
    /// [b, d_out] division instead of one of the whole weight).
    fn score_with(
        &self,
        x: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
        sigmas: Option<&[Tensor<2>]>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let fused = kernels == Kernels::Fused;
        let sigma = |k: usize| sigmas.map(|s| s[k].clone());
        let dense_sn = |x: Tensor<2>, linear: &Linear, sigma: Tensor<2>| {
            let y = x.matmul(linear.weight.val()) / sigma;
            match &linear.bias {
                Some(bias) => y + bias.val().unsqueeze::<2>(),
                None => y,
            }
        };
        // The labels enter a concat D's input; a projection D's embedding; an acgan D not at all.
        let concat = labels.filter(|_| self.embed.is_none() && self.aux.is_none());
        let convs = self.convs.len();
        let features = if self.is_dcgan() {
            self.dcgan_features(x, concat, dropout, kernels, sigmas.map(|s| &s[..convs]))
        } else {
            let mut x = match concat {
                Some(y) => Tensor::cat(vec![x, y.clone()], 1),
                None => x,
            };
            for (k, linear) in self.hidden.iter().enumerate() {
                x = match sigma(convs + k) {
                    Some(s) => leaky_relu(dense_sn(x, linear, s), self.leaky_slope),
                    None if fused => dense(x, linear, Activation::LeakyRelu(self.leaky_slope)),
                    None => leaky_relu(linear.forward(x), self.leaky_slope),
                };
            }
            x
        };
        let at_output = convs + self.hidden.len();
        let projection = match (&self.embed, labels) {
            // Miyato & Koyama's projection: <embed(y), features(x)> added to the logit.
            (Some(embed), Some(y)) => {
                let e = match sigma(at_output + 1) {
                    Some(s) => dense_sn(y.clone(), embed, s),
                    None => embed.forward(y.clone()),
                };
                Some((e * features.clone()).sum_dim(1))
            }
            _ => None,
        };
        // An acgan D's classifier reads the same features as its logit.
        let classes =
            self.aux.as_ref().map(|aux| match sigma(at_output + 1 + self.embed.is_some() as usize) {
                Some(s) => dense_sn(features.clone(), aux, s),
                None => aux.forward(features.clone()),
            });
        let logits = match sigma(at_output) {
            Some(s) => dense_sn(features, &self.output, s),
            None if fused && !self.is_dcgan() => dense(features, &self.output, Activation::Identity),
            None => self.output.forward(features),
        };
        let logits = match projection {
            Some(p) => logits + p,
            None => logits,
        };
        (logits, classes)
    }

    /// A dcgan D's features (the input of its logit layer, flattened); `concat`: one-hot labels
    /// [batch, classes] joined to the image as one constant feature map per class. After each
    /// convolution's LeakyReLU the output is multiplied by the matching mask of `dropout`
    /// ([batch, c, s, s], values 0 and 1 / (1 - rate)), when given; with `model.d_batch_norm`
    /// every convolution but the first is followed by its BatchNorm, before the LeakyReLU.
    /// `kernels` = fused: leaky ReLU from gantry's kernel (the same values in fewer passes) and gantry's
    /// convolutions (the same function, summed in another order). `sigmas`: each convolution's σ
    /// when D is spectrally normalized (its weight is divided by it).
    fn dcgan_features(
        &self,
        x: Tensor<2>,
        concat: Option<&Tensor<2>>,
        dropout: Option<&[Tensor<4>]>,
        kernels: Kernels,
        sigmas: Option<&[Tensor<2>]>,
    ) -> Tensor<2> {
        let fused = kernels == Kernels::Fused;
        let (b, s) = (x.dims()[0], self.side);
        // Grey or RGB: the values per image say which.
        let channels = x.dims()[1] / (s * s);
        let mut x: Tensor<4> = x.reshape([b, channels, s, s]);
        if let Some(y) = concat {
            let classes = y.dims()[1];
            let maps = y.clone().reshape([b, classes, 1, 1]).expand([b, classes, s, s]);
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
                // gantry's kernel: the same function, its sums in another order.
                conv::conv2d(x, w, bias, layer.stride[0], p)
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

    /// An unconditional D: images [batch, pixels] -> logits [batch, 1].
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.score(x, None, None, Kernels::Fused)
    }

    /// [`Discriminator::forward`] with burn's own modules and activations only.
    pub fn forward_reference(&self, x: Tensor<2>) -> Tensor<2> {
        self.score(x, None, None, Kernels::Reference)
    }

    /// The (d_in, d_out) of each layer's matrix, as spectral norm sees them (see
    /// [`Discriminator::spectral_matrices`]).
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        self.spectral_matrices().iter().map(|m| (m.dims()[0], m.dims()[1])).collect()
    }

    /// Each layer's weight as the matrix M [d_in, d_out] whose largest singular value spectral
    /// norm divides by, with its graph, in the order convolutions, dense layers, the logit layer,
    /// the class embedding (a projection D's), the auxiliary classifier (an acgan D's). A dense
    /// layer's M is its weight; a convolution's [c_out, c_in, k, k] is seen as [c_in·k·k, c_out]
    /// (Miyato et al.'s reshaping).
    fn spectral_matrices(&self) -> Vec<Tensor<2>> {
        let convs = self.convs.iter().map(|c| {
            let [o, i, kh, kw] = c.weight.dims();
            c.weight.val().reshape([o, i * kh * kw]).transpose()
        });
        let dense =
            self.hidden.iter().chain([&self.output]).chain(self.embed.as_ref()).chain(self.aux.as_ref());
        convs.chain(dense.map(|l| l.weight.val())).collect()
    }

    /// Spectral norm's starting vectors: `u` from N(0, 1) (drawn from `rng`), normalized, as
    /// PyTorch's `spectral_norm` starts, and `v = W u / |W u|`, so that σ is defined before the
    /// first power iteration (a g-first step uses D before any D update).
    pub fn spectral_start(&self, rng: &mut impl rand::Rng) -> Vec<SpectralState> {
        self.spectral_matrices()
            .into_iter()
            .map(|m| {
                let w = m.inner(); // [d_in, d_out]
                let d_out = w.dims()[1];
                let u: Vec<f32> =
                    (0..d_out).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
                let u = unit(Tensor::from_data(TensorData::new(u, [d_out, 1]), &w.device()));
                let v = unit(w.matmul(u.clone()).transpose());
                SpectralState { u, v }
            })
            .collect()
    }

    /// One power iteration per layer on the current weights W [d_in, d_out], on the device:
    /// `v = W u / |W u|`, then `u = Wᵀ v / |Wᵀ v|`.
    pub fn power_iteration(&self, states: &mut [SpectralState]) {
        for (m, s) in self.spectral_matrices().into_iter().zip(states) {
            let w = m.inner(); // [d_in, d_out], no graph
            s.v = unit(w.clone().matmul(s.u.clone()).transpose()); // [1, d_in]
            s.u = unit(s.v.clone().matmul(w).transpose()); // [d_out, 1]
        }
    }

    /// Clip every weight and bias to [-c, c] (WGAN's critic), keeping parameter ids.
    pub fn clipped(self, c: f64) -> Self {
        self.map(&mut Clip { c })
    }
}

/// Clamps every parameter into [-c, c]; the clamped value is a fresh leaf (no graph behind it).
struct Clip {
    c: f64,
}

impl ModuleMapper for Clip {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let (grad, autodiff) = (value.is_require_grad(), value.is_autodiff());
        // Clamped on the device, without the graph (exact: each value is itself or a bound).
        let c = self.c as f32;
        let clamped = value.inner().clamp(-c, c);
        let clamped = if autodiff { clamped.autodiff() } else { clamped };
        Param::from_mapped_value(id, if grad { clamped.require_grad() } else { clamped }, mapper)
    }
}

/// A projection D's class embedding (classes -> `features`, Glorot-uniform, no bias) from `rng`;
/// None for any other conditioning.
fn class_embedding(
    cfg: &ModelConfig,
    features: usize,
    rng: &mut impl rand::Rng,
    device: &Device,
) -> Option<Linear> {
    if cfg.embedding_size(features) == 0 {
        return None;
    }
    let c = cfg.conditions();
    let mut embed = LinearConfig::new(c, features).with_bias(false).init(device);
    embed.weight =
        Param::from_data(TensorData::new(glorot(c * features, c, features, rng), [c, features]), device);
    Some(embed)
}

/// An acgan D's auxiliary classifier (`features` -> the classes, Glorot-uniform weights, zero
/// biases) from `rng`; None for any other conditioning (nothing drawn).
fn aux_classifier(
    cfg: &ModelConfig,
    features: usize,
    rng: &mut impl rand::Rng,
    device: &Device,
) -> Option<Linear> {
    (cfg.aux_classifier_size(features) > 0).then(|| glorot_dense(features, cfg.conditions(), rng, device))
}

/// G's input on `device` from the noise `z` ([n * latent] floats): [n, latent] for an
/// unconditional G (`classes` 0), else each noise row joined with the one-hot of its entry of
/// `labels` (n of them): [n, latent + classes].
pub fn g_input(z: &[f32], latent: usize, labels: &[u8], classes: usize, device: &Device) -> Tensor<2> {
    let n = z.len() / latent;
    if classes == 0 {
        return Tensor::<2>::from_data(TensorData::new(z.to_vec(), [n, latent]), device);
    }
    debug_assert_eq!(labels.len(), n, "one label per noise row");
    let mut rows = Vec::with_capacity(n * (latent + classes));
    for (row, &label) in z.chunks_exact(latent).zip(labels) {
        rows.extend_from_slice(row);
        rows.extend((0..classes).map(|c| if c == label as usize { 1.0 } else { 0.0 }));
    }
    Tensor::<2>::from_data(TensorData::new(rows, [n, latent + classes]), device)
}

/// One-hot rows [labels.len() * classes] of `labels`.
pub fn one_hot(labels: &[u8], classes: usize) -> Vec<f32> {
    labels.iter().flat_map(|&l| (0..classes).map(move |c| if c == l as usize { 1.0 } else { 0.0 })).collect()
}

/// `x` scaled to unit length (left as it is when it is zero, with PyTorch's epsilon 1e-12), on
/// its device.
fn unit(x: Tensor<2>) -> Tensor<2> {
    let norm = (x.clone() * x.clone()).sum().sqrt().clamp_min(1e-12); // [1]
    x / norm.unsqueeze::<2>()
}

/// First parameter id of each network (see [`Generator::with_stable_ids`]).
const GENERATOR_IDS: u64 = 1_000;
const DISCRIMINATOR_IDS: u64 = 2_000;

/// Renumbers parameters in visiting order (the modules' field order).
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

/// The padding of D's k×k stride-2 convolutions on each side (`k / 2`: "same" for odd k).
fn strided_padding(k: usize) -> usize {
    k / 2
}

/// Give each BatchNorm's moving statistics the next fixed ids from `next` (they are not
/// parameters, so [`StableIds`] does not reach them).
fn stable_statistics_ids<'a>(norms: impl Iterator<Item = &'a mut BatchNorm>, next: &mut u64) {
    for norm in norms {
        for state in [&mut norm.running_mean, &mut norm.running_var] {
            *state = RunningState::with_id(ParamId::from(*next), state.value_sync());
            *next += 1;
        }
    }
}

/// A Dense layer as Keras initialises it: Glorot-uniform kernel, zero bias. The kernel comes from
/// gantry's own seeded stream, so initial weights do not depend on the backend's RNG.
fn glorot_dense(d_in: usize, d_out: usize, rng: &mut impl rand::Rng, device: &Device) -> Linear {
    linear_with_kernel(glorot(d_in * d_out, d_in, d_out, rng), d_in, d_out, device)
}

/// A dense layer with the given kernel (row layout `[d_in, d_out]`, like Keras') and zero biases:
/// weights come from gantry's own seeded streams, not burn's global RNG.
pub(crate) fn linear_with_kernel(kernel: Vec<f32>, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out).with_initializer(Initializer::Zeros).init(device);
    linear.weight = Param::from_data(TensorData::new(kernel, [d_in, d_out]), device);
    linear
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shapes_and_ranges() {
        let device = Device::flex();
        let cfg =
            ModelConfig { g_hidden: vec![8, 16], d_hidden: vec![16], latent_dim: 4, ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        let z = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; 3 * 4], [3, 4]), &device);
        let x = g.forward(z);
        assert_eq!(x.dims(), [3, 12]);
        let v: Vec<f32> = x.clone().into_data().try_into_vec().unwrap();
        assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)));
        assert_eq!(d.forward(x).dims(), [3, 1]);
    }

    #[test]
    fn reference_forward_passes_match_the_fused_ones() {
        let device = Device::flex();
        let cfg =
            ModelConfig { g_hidden: vec![8, 16], d_hidden: vec![16], latent_dim: 4, ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        let z: Vec<f32> = (0..5 * 4).map(|i| (i as f32 * 0.37).sin()).collect();
        let z = Tensor::<2>::from_data(TensorData::new(z, [5, 4]), &device);
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        // Inference batch norm and the dense layers are bit-identical to burn's.
        let (fused, reference) = (values(g.forward(z.clone())), values(g.forward_reference(z)));
        assert_eq!(fused, reference);
        let x = Tensor::<2>::from_data(TensorData::new(fused, [5, 12]), &device);
        assert_eq!(values(d.forward(x.clone())), values(d.forward_reference(x)));
        let clipped = d.clipped(0.01);
        let w: Vec<f32> = clipped.hidden[0].weight.val().into_data().try_into_vec().unwrap();
        assert!(w.iter().all(|v| v.abs() <= 0.01) && w.iter().any(|v| v.abs() == 0.01));
    }

    /// Multiplies every weight (the parameters of two or more dimensions) by `c`, biases kept.
    struct ScaleWeights(f32);

    impl ModuleMapper for ScaleWeights {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, value, mapper) = param.consume();
            let value = if D >= 2 { value * self.0 } else { value };
            Param::from_mapped_value(id, value, mapper)
        }
    }

    /// A spectrally normalized D divides each layer's weight by its σ, so scaling a weight by c
    /// (σ scales with it, u and v held) leaves every score as it was: for a conditional
    /// convolutional D with a projection that takes all of its layers (convolutions, the logit
    /// layer, the class embedding); a layer left out of the normalization would change it.
    #[test]
    fn a_spectrally_normalized_dcgan_d_does_not_change_when_its_weights_are_scaled() {
        let device = Device::flex();
        let cfg = ModelConfig {
            kind: ModelKind::Dcgan,
            d_channels: vec![4, 8],
            conditional: crate::config::Conditioning::Projection,
            classes: 3,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let d = Discriminator::new(&cfg, 16 * 16, &mut rng, &device);
        // Two convolutions, the logit layer, the embedding: [c_in·k·k, c_out] and [d_in, d_out].
        let k2 = cfg.kernel_size * cfg.kernel_size;
        assert_eq!(d.layer_shapes(), vec![(k2, 4), (4 * k2, 8), (8 * 4 * 4, 1), (3, 8 * 4 * 4)]);
        let mut states = d.spectral_start(&mut rng);
        for _ in 0..3 {
            d.power_iteration(&mut states);
        }
        let x: Vec<f32> = (0..2 * 256).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [2, 256]), &device);
        let y =
            Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 1.0, 0.0, 0.0, 0.0, 1.0], [2, 3]), &device);
        let scores = |d: &Discriminator| -> Vec<f32> {
            d.score_spectral(x.clone(), Some(&y), None, Kernels::Fused, &states)
                .into_data()
                .try_into_vec()
                .unwrap()
        };
        let before = scores(&d);
        let after = scores(&d.clone().map(&mut ScaleWeights(3.0)));
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "{before:?} vs {after:?}");
        }
        // Without the normalization the same scaling does change them.
        let plain = |d: &Discriminator| -> Vec<f32> {
            d.score(x.clone(), Some(&y), None, Kernels::Fused).into_data().try_into_vec().unwrap()
        };
        let scaled = plain(&d.clone().map(&mut ScaleWeights(3.0)));
        assert!(plain(&d).iter().zip(&scaled).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    /// A known largest singular value: W = diag(3, 2, 1) padded; power iterations converge on 3,
    /// and the normalized layer computes x·W/σ.
    #[test]
    fn spectral_norm_divides_each_weight_by_its_largest_singular_value() {
        let device = Device::flex();
        let cfg = ModelConfig { d_hidden: vec![3], ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut d = Discriminator::new(&cfg, 3, &mut rng, &device);
        d.hidden[0] = linear_with_kernel(vec![3.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0], 3, 3, &device);
        d.output = linear_with_kernel(vec![0.0, 4.0, 0.0], 3, 1, &device);
        assert_eq!(d.layer_shapes(), vec![(3, 3), (3, 1)]);
        let mut states = d.spectral_start(&mut rng);
        for _ in 0..60 {
            d.power_iteration(&mut states);
        }
        let sv: Vec<SpectralVectors> = states.iter().map(SpectralState::to_vectors).collect();
        let sigma = |k: usize, w: &[f32], (di, do_): (usize, usize)| -> f32 {
            (0..di).map(|i| (0..do_).map(|j| sv[k].v[i] * w[i * do_ + j] * sv[k].u[j]).sum::<f32>()).sum()
        };
        let w0 = [3.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0];
        assert!((sigma(0, &w0, (3, 3)) - 3.0).abs() < 1e-4, "{}", sigma(0, &w0, (3, 3)));
        assert!((sigma(1, &[0.0, 4.0, 0.0], (3, 1)) - 4.0).abs() < 1e-5);
        // x = (1, 1, 1): hidden = leaky(x W / 3) = (1, 2/3, 1/3); out = hidden · (0, 4, 0) / 4.
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 3], [1, 3]), &device);
        let out: Vec<f32> =
            d.score_spectral(x, None, None, Kernels::Reference, &states).into_data().try_into_vec().unwrap();
        assert!((out[0] - 2.0 / 3.0).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn the_moving_average_moves_each_weight_and_statistic_by_its_decay() {
        let device = Device::flex();
        let cfg = ModelConfig { g_hidden: vec![4], latent_dim: 2, ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let ema = Generator::new(&cfg, 3, &mut rng, &device);
        let mut live = Generator::new(&cfg, 3, &mut rng, &device);
        live.norms[0].running_mean =
            RunningState::new(Tensor::from_data(TensorData::new(vec![0.5f32; 4], [4]), &device));
        let w = |g: &Generator| -> Vec<f32> { g.hidden[0].weight.val().into_data().try_into_vec().unwrap() };
        let (before, target) = (w(&ema), w(&live));
        let after = ema.averaged_with(&live, 0.75);
        for ((a, b), t) in w(&after).iter().zip(&before).zip(&target) {
            assert!((a - (0.75 * b + 0.25 * t)).abs() < 1e-6);
        }
        let mean: Vec<f32> = after.norms[0].running_mean.value_sync().into_data().try_into_vec().unwrap();
        // The average's moving mean starts at 0: 0.75 * 0 + 0.25 * 0.5.
        assert_eq!(mean, vec![0.125; 4]);
    }

    /// TensorFlow's DCGAN tutorial prints its models' summaries: G 2,330,944 parameters (2,305,472
    /// trainable and BatchNorm's 25,472 moving statistics, which burn counts too), D 212,865.
    #[test]
    fn the_dcgan_tf_networks_have_the_tutorials_shapes_and_parameter_counts() {
        let device = Device::flex();
        let cfg = crate::config::Config::preset("dcgan-tf").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let g = Generator::new(&cfg.model, 784, &mut rng, &device);
        let d = Discriminator::new(&cfg.model, 784, &mut rng, &device);
        assert_eq!((g.num_params(), d.num_params()), (2_330_944, 212_865));
        assert_eq!(cfg.parameter_count(784), 2_305_472 + 25_472 + 212_865);
        assert!(g.is_dcgan() && d.is_dcgan());
        let mask_shapes: Vec<[usize; 3]> =
            cfg.model.dcgan_layout(784).convs.iter().map(|l| [l.c_out, l.side_out, l.side_out]).collect();
        assert_eq!(mask_shapes, vec![[64, 14, 14], [128, 7, 7]]);
        let z: Vec<f32> = (0..3 * 100).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = g.forward(Tensor::<2>::from_data(TensorData::new(z, [3, 100]), &device));
        assert_eq!(x.dims(), [3, 784]);
        let v: Vec<f32> = x.clone().into_data().try_into_vec().unwrap();
        assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)) && v.iter().any(|&p| p != v[0]));
        // Dropout masks multiply after each convolution: all-zero masks leave only D's bias.
        let zeros = [[3, 64, 14, 14], [3, 128, 7, 7]].map(|s| Tensor::<4>::zeros(s, &device));
        let dropped: Vec<f32> =
            d.score(x.clone(), None, Some(&zeros), Kernels::Fused).into_data().try_into_vec().unwrap();
        // The fused kernels compute burn's function: the same values but for rounding (gantry's
        // convolutions sum in another order than burn's).
        let z: Vec<f32> = (0..3 * 100).map(|i| (i as f32 * 0.11).cos()).collect();
        let z = Tensor::<2>::from_data(TensorData::new(z, [3, 100]), &device);
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(a.len() == b.len() && worst <= 1e-5 * scale, "{what}: {worst:e} at scale {scale:e}");
        };
        close(values(g.forward(z.clone())), values(g.forward_reference(z)), "G");
        close(values(d.forward(x.clone())), values(d.forward_reference(x.clone())), "D");
        assert_eq!(dropped, vec![0.0; 3], "the output layer's bias starts at zero");
        let scores: Vec<f32> = d.forward(x).into_data().try_into_vec().unwrap();
        assert!(scores.iter().all(|s| s.is_finite() && *s != 0.0), "{scores:?}");
    }

    /// Miyato & Koyama's projection: D's logit is its unconditional logit plus the inner product
    /// of the class's embedding row with D's last features; a conditional G's images depend on
    /// the class asked.
    #[test]
    fn conditional_networks_take_the_class() {
        use crate::config::Conditioning;
        let device = Device::flex();
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        let cfg = ModelConfig {
            g_hidden: vec![8],
            d_hidden: vec![6, 5],
            latent_dim: 4,
            conditional: Conditioning::Projection,
            classes: 3,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        assert_eq!(g.hidden[0].weight.dims(), [4 + 3, 8]);
        assert_eq!(d.hidden[0].weight.dims(), [12, 6], "a projection D's input is the image alone");
        let embed = d.embed.as_ref().expect("a projection D has an embedding");
        assert_eq!(embed.weight.dims(), [3, 5]);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&cfg, 12));

        let z: Vec<f32> = (0..2 * 4).map(|i| (i as f32 * 0.7).sin()).collect();
        let (labels, other) = ([2u8, 0], [1u8, 1]);
        let input = |l: &[u8]| g_input(&z, 4, l, 3, &device);
        assert_eq!(input(&labels).dims(), [2, 7]);
        let x = g.forward(input(&labels));
        assert_ne!(values(x.clone()), values(g.forward(input(&other))), "G ignores the class");
        let y = Tensor::<2>::from_data(TensorData::new(one_hot(&labels, 3), [2, 3]), &device);
        let mut features = x.clone();
        for linear in &d.hidden {
            features = leaky_relu(linear.forward(features), d.leaky_slope);
        }
        let phi = values(features);
        let e: Vec<f32> = embed.weight.val().into_data().try_into_vec().unwrap();
        let unconditional = values(d.score(x.clone(), None, None, Kernels::Reference));
        let scored = values(d.score(x.clone(), Some(&y), None, Kernels::Reference));
        for (i, &label) in labels.iter().enumerate() {
            let row = &e[label as usize * 5..(label as usize + 1) * 5];
            let inner: f32 = phi[i * 5..(i + 1) * 5].iter().zip(row).map(|(a, b)| a * b).sum();
            assert!(
                (scored[i] - unconditional[i] - inner).abs() < 1e-5,
                "{scored:?} {unconditional:?} {inner}"
            );
        }
        assert_eq!(values(d.score(x.clone(), Some(&y), None, Kernels::Fused)), scored, "fused == reference");

        // concat: D's input is the image and the one-hot label; a dcgan's, one map per class.
        let concat = ModelConfig { conditional: Conditioning::Concat, ..cfg.clone() };
        let d = Discriminator::new(&concat, 12, &mut rng, &device);
        assert_eq!(d.hidden[0].weight.dims(), [12 + 3, 6]);
        assert!(d.embed.is_none());
        assert_eq!(
            d.num_params() + Generator::new(&concat, 12, &mut rng, &device).num_params(),
            cfg_count(&concat, 12)
        );
        let conv = ModelConfig {
            kind: ModelKind::Dcgan,
            g_channels: vec![4, 2],
            d_channels: vec![3, 2],
            conditional: Conditioning::Concat,
            ..cfg.clone()
        };
        let d = Discriminator::new(&conv, 784, &mut rng, &device);
        assert_eq!(d.convs[0].weight.dims(), [3, 1 + 3, 5, 5]);
        let g = Generator::new(&conv, 784, &mut rng, &device);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&conv, 784));
        let images = Tensor::<2>::zeros([2, 784], &device);
        let a = values(d.score(images.clone(), Some(&y), None, Kernels::Fused));
        let y2 = Tensor::<2>::from_data(TensorData::new(one_hot(&other, 3), [2, 3]), &device);
        assert_ne!(a, values(d.score(images, Some(&y2), None, Kernels::Fused)), "D ignores the class maps");
    }

    /// Odena et al.'s AC-GAN: D sees the image alone (its logit ignores the labels) and its
    /// auxiliary head classifies D's last features into the classes, of the same forward pass;
    /// spectral norm takes the head too. Both kinds of network; the config counts its parameters.
    #[test]
    fn an_acgan_discriminator_classifies_what_it_judges() {
        use crate::config::Conditioning;
        let device = Device::flex();
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        let cfg = ModelConfig {
            g_hidden: vec![8],
            d_hidden: vec![6, 5],
            latent_dim: 4,
            conditional: Conditioning::Acgan,
            classes: 3,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let g = Generator::new(&cfg, 12, &mut rng, &device);
        let d = Discriminator::new(&cfg, 12, &mut rng, &device);
        assert_eq!(g.hidden[0].weight.dims(), [4 + 3, 8], "G takes the class as with concat");
        assert_eq!(d.hidden[0].weight.dims(), [12, 6], "an acgan D's input is the image alone");
        assert!(d.embed.is_none());
        let aux = d.aux.as_ref().expect("an acgan D has a classifier");
        assert_eq!(aux.weight.dims(), [5, 3]);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&cfg, 12));

        let x: Vec<f32> = (0..2 * 12).map(|i| (i as f32 * 0.3).sin()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [2, 12]), &device);
        let y = Tensor::<2>::from_data(TensorData::new(one_hot(&[2, 0], 3), [2, 3]), &device);
        let (logits, classes) = d.score_and_classes(x.clone(), Some(&y), None, Kernels::Reference, None);
        assert_eq!(
            values(logits.clone()),
            values(d.score(x.clone(), None, None, Kernels::Reference)),
            "the labels are not read"
        );
        let mut features = x.clone();
        for linear in &d.hidden {
            features = leaky_relu(linear.forward(features), d.leaky_slope);
        }
        let classes = classes.expect("an acgan D's class logits");
        assert_eq!(classes.dims(), [2, 3]);
        assert_eq!(values(classes.clone()), values(aux.forward(features)));
        let (_, fused) = d.score_and_classes(x.clone(), Some(&y), None, Kernels::Fused, None);
        let close = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).all(|(u, v)| (u - v).abs() <= 1e-5);
        assert!(close(values(fused.unwrap()), values(classes.clone())), "fused == reference");
        // Spectral norm normalizes the head too: one more matrix, [features, classes].
        let states = d.spectral_start(&mut rng);
        assert_eq!(d.layer_shapes().last(), Some(&(5, 3)));
        let (_, normalized) = d.score_and_classes(x, Some(&y), None, Kernels::Reference, Some(&states));
        assert!(!close(values(normalized.unwrap()), values(classes)), "σ divides the head's weight");
        // A projection D has no head.
        let projection = ModelConfig { conditional: Conditioning::Projection, ..cfg.clone() };
        let d = Discriminator::new(&projection, 12, &mut rng, &device);
        let x = Tensor::<2>::zeros([2, 12], &device);
        assert!(
            d.aux.is_none() && d.score_and_classes(x, Some(&y), None, Kernels::Reference, None).1.is_none()
        );
        // A dcgan D: the head on the last convolution's features.
        let conv =
            ModelConfig { kind: ModelKind::Dcgan, g_channels: vec![4, 2], d_channels: vec![3, 2], ..cfg };
        let d = Discriminator::new(&conv, 784, &mut rng, &device);
        assert_eq!(d.convs[0].weight.dims(), [3, 1, 5, 5], "no class maps");
        assert_eq!(d.aux.as_ref().unwrap().weight.dims(), [2 * 7 * 7, 3]);
        let g = Generator::new(&conv, 784, &mut rng, &device);
        assert_eq!(g.num_params() + d.num_params(), cfg_count(&conv, 784));
    }

    /// The config's parameter count of a model (what the memory check reads).
    fn cfg_count(m: &ModelConfig, pixels: usize) -> usize {
        crate::config::Config { model: m.clone(), ..Default::default() }.parameter_count(pixels) as usize
    }

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
