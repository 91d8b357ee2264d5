//! Spectral normalization of D (`model.d_spectral_norm`, Miyato et al. 2018): each layer's weight
//! divided by an estimate of its largest singular value σ = vᵀ M u, with one power iteration per
//! D update. Works on the list of D's layer matrices M [d_in, d_out] that each kind gives, in its
//! order.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

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
    pub fn from_vectors(sv: &SpectralVectors, device: &burn::tensor::Device) -> Self {
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

/// Each layer's σ = vᵀ M u [1, 1] from its state, with M's graph (u and v carry no autodiff:
/// constants in the graph).
pub(super) fn sigmas(matrices: Vec<Tensor<2>>, states: &[SpectralState]) -> Vec<Tensor<2>> {
    matrices.into_iter().zip(states).map(|(m, s)| s.v.clone().matmul(m).matmul(s.u.clone())).collect()
}

/// Starting vectors: `u` from N(0, 1) (drawn from `rng`), normalized, as PyTorch's
/// `spectral_norm` starts, and `v = W u / |W u|`, so that σ is defined before the first power
/// iteration (a g-first step uses D before any D update).
pub(super) fn start(matrices: Vec<Tensor<2>>, rng: &mut impl rand::Rng) -> Vec<SpectralState> {
    use rand::RngExt;
    matrices
        .into_iter()
        .map(|m| {
            let w = m.inner(); // [d_in, d_out]
            let d_out = w.dims()[1];
            let u: Vec<f32> = (0..d_out).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
            let u = unit(Tensor::from_data(TensorData::new(u, [d_out, 1]), &w.device()));
            let v = unit(w.matmul(u.clone()).transpose());
            SpectralState { u, v }
        })
        .collect()
}

/// One power iteration per layer on the current weights W [d_in, d_out], on the device:
/// `v = W u / |W u|`, then `u = Wᵀ v / |Wᵀ v|`.
pub(super) fn power_iteration(matrices: Vec<Tensor<2>>, states: &mut [SpectralState]) {
    for (m, s) in matrices.into_iter().zip(states) {
        let w = m.inner(); // [d_in, d_out], no graph
        s.v = unit(w.clone().matmul(s.u.clone()).transpose()); // [1, d_in]
        s.u = unit(s.v.clone().matmul(w).transpose()); // [d_out, 1]
    }
}

/// `x` scaled to unit length (left as it is when it is zero, with PyTorch's epsilon 1e-12), on
/// its device.
fn unit(x: Tensor<2>) -> Tensor<2> {
    let norm = (x.clone() * x.clone()).sum().sqrt().clamp_min(1e-12); // [1]
    x / norm.unsqueeze::<2>()
}
