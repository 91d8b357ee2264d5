//! How the networks see a condition (`model.conditional`), the same for every kind of network:
//! G takes the one-hot id beside its noise ([`g_input`]); a `concat` D takes it beside the image
//! (a kind decides how: an mlp's input, a dcgan's constant feature maps); a `projection` D adds
//! `<embed(y), features(x)>` to its logit (Miyato & Koyama 2018), its embedding a bias-free Dense
//! layer on the one-hot; an `acgan` D (Odena et al. 2017) sees the image alone and has a second
//! head beside its logit, a Dense classifier of its last features into the ids. [`Heads`] is D's
//! top, shared by every kind: the logit and these two.
//!
//! The ids are the classes, or with `model.clusters_per_class` every class's clusters
//! (`crate::conditions` owns what an id means and how ids are drawn).

use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use super::layers::{dense_spectral, glorot_dense, glorot_dense_without_bias};
use crate::config::{Conditioning, Kernels, ModelConfig};
use crate::kernels::dense::{Activation, dense};
use crate::kernels::one_hot::one_hot_product;

/// The ids G and D are conditioned on (0 when unconditional): the width of their one-hot.
pub fn ids(m: &ModelConfig) -> usize {
    if m.is_conditional() { m.classes * m.clusters_per_class.max(1) } else { 0 }
}

/// Width of G's input: the noise, and the one-hot id of a conditional run.
pub fn g_input_width(m: &ModelConfig) -> usize {
    m.latent_dim + ids(m)
}

/// The one-hot width that D's input carries (`concat` only).
pub fn d_label_width(m: &ModelConfig) -> usize {
    if m.conditional == Conditioning::Concat { ids(m) } else { 0 }
}

/// Parameters of a projection D's class embedding on `features` features (0 otherwise).
pub fn embedding_size(m: &ModelConfig, features: usize) -> u64 {
    if m.conditional == Conditioning::Projection {
        (ids(m) as u64).saturating_mul(features as u64)
    } else {
        0
    }
}

/// Parameters of an acgan D's auxiliary classifier on `features` features (weights and biases; 0
/// otherwise).
pub fn aux_classifier_size(m: &ModelConfig, features: usize) -> u64 {
    if m.conditional == Conditioning::Acgan { (ids(m) as u64).saturating_mul(features as u64 + 1) } else { 0 }
}

/// Multiply-adds per image of D's heads beyond the logit on `features` features: a projection's
/// inner product (one per feature), an acgan classifier's product (features x ids).
pub(super) fn head_macs(m: &ModelConfig, features: usize) -> Vec<f64> {
    let mut macs = Vec::new();
    macs.extend((embedding_size(m, features) > 0).then_some(features as f64));
    macs.extend((aux_classifier_size(m, features) > 0).then_some((features * ids(m)) as f64));
    macs
}

/// G's input on `device` from the noise `z` ([n * latent] floats): [n, latent] for an
/// unconditional G (`ids` 0), else each noise row joined with the one-hot of its entry of
/// `labels` (n of them): [n, latent + ids].
pub fn g_input(z: &[f32], latent: usize, labels: &[u8], ids: usize, device: &Device) -> Tensor<2> {
    let n = z.len() / latent;
    if ids == 0 {
        return Tensor::<2>::from_data(TensorData::new(z.to_vec(), [n, latent]), device);
    }
    debug_assert_eq!(labels.len(), n, "one label per noise row");
    let mut rows = Vec::with_capacity(n * (latent + ids));
    for (row, &label) in z.chunks_exact(latent).zip(labels) {
        rows.extend_from_slice(row);
        rows.extend((0..ids).map(|c| if c == label as usize { 1.0 } else { 0.0 }));
    }
    Tensor::<2>::from_data(TensorData::new(rows, [n, latent + ids]), device)
}

/// One-hot rows [labels.len() * ids] of `labels`.
pub fn one_hot(labels: &[u8], ids: usize) -> Vec<f32> {
    labels.iter().flat_map(|&l| (0..ids).map(move |c| if c == l as usize { 1.0 } else { 0.0 })).collect()
}

/// A projection D's class embedding (ids -> `features`, Glorot-uniform, no bias) from `rng`;
/// None for any other conditioning (nothing drawn).
pub(super) fn class_embedding(
    cfg: &ModelConfig,
    features: usize,
    rng: &mut impl rand::Rng,
    device: &Device,
) -> Option<Linear> {
    (embedding_size(cfg, features) > 0).then(|| glorot_dense_without_bias(ids(cfg), features, rng, device))
}

/// An acgan D's auxiliary classifier (`features` -> the ids, Glorot-uniform weights, zero biases)
/// from `rng`; None for any other conditioning (nothing drawn).
pub(super) fn aux_classifier(
    cfg: &ModelConfig,
    features: usize,
    rng: &mut impl rand::Rng,
    device: &Device,
) -> Option<Linear> {
    (aux_classifier_size(cfg, features) > 0).then(|| glorot_dense(features, ids(cfg), rng, device))
}

/// The labels a D joins to its input: given, under `concat` (D has neither an embedding nor a
/// classifier); a projection D takes them in its heads, an acgan D not at all.
pub(super) fn input_labels<'a>(labels: Option<&'a Tensor<2>>, heads: &Heads<'_>) -> Option<&'a Tensor<2>> {
    labels.filter(|_| heads.embed.is_none() && heads.aux.is_none())
}

/// The top of every D: the logit layer and, when D has them, a projection's class embedding and
/// an acgan's classifier, in that order (also spectral norm's order).
pub(super) struct Heads<'a> {
    pub output: &'a Linear,
    pub embed: Option<&'a Linear>,
    pub aux: Option<&'a Linear>,
}

impl Heads<'_> {
    /// The heads' weights as matrices [d_in, d_out], in order.
    pub fn weights(&self) -> impl Iterator<Item = Tensor<2>> + '_ {
        [self.output].into_iter().chain(self.embed).chain(self.aux).map(|l| l.weight.val())
    }

    /// The logits [batch, 1] of D's last `features` and an acgan D's class logits [batch, ids];
    /// `labels` (one-hot) enter a projection. `sigmas`: each head's σ in [`Heads::weights`]' order
    /// when D is spectrally normalized. `kernels` = fused: the embedding as the rows the labels
    /// pick (the product's bits); `fused_logit`: the logit layer through gantry's dense kernel
    /// (the same values).
    pub fn apply(
        &self,
        features: Tensor<2>,
        labels: Option<&Tensor<2>>,
        sigmas: Option<&[Tensor<2>]>,
        kernels: Kernels,
        fused_logit: bool,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let sigma = |k: usize| sigmas.map(|s| s[k].clone());
        let projection = match (self.embed, labels) {
            // Miyato & Koyama's projection: <embed(y), features(x)> added to the logit.
            (Some(embed), Some(y)) => {
                let e = match sigma(1) {
                    Some(s) => dense_spectral(y.clone(), embed, s),
                    None if kernels.is_fused() => one_hot_product(y.clone(), embed.weight.val(), y.dims()[1]),
                    None => embed.forward(y.clone()),
                };
                Some((e * features.clone()).sum_dim(1))
            }
            _ => None,
        };
        // An acgan D's classifier reads the same features as its logit.
        let classes = self.aux.map(|aux| match sigma(1 + self.embed.is_some() as usize) {
            Some(s) => dense_spectral(features.clone(), aux, s),
            None => aux.forward(features.clone()),
        });
        let logits = match sigma(0) {
            Some(s) => dense_spectral(features, self.output, s),
            None if fused_logit => dense(features, self.output, Activation::Identity),
            None => self.output.forward(features),
        };
        let logits = match projection {
            Some(p) => logits + p,
            None => logits,
        };
        (logits, classes)
    }
}
