//! Adam, fused: the same update as burn's `Adam`, computed in one pass over each parameter instead
//! of a dozen whole-tensor operations that each allocate a new tensor. Its state is burn's own
//! `AdamState`, so checkpoints (optimizer records keyed by parameter id) are unchanged.
//!
//! Every element goes through exactly the f32 operations burn's `Adam` applies, in the same order
//! (no fused multiply-add, no reassociation), so training is bit-identical to burn's optimizer; the
//! test below checks it.

use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// Parameters smaller than this are updated on one thread (spawning would cost more).
const PARALLEL_MIN: usize = 1 << 16;
/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// The per-element update, with its step's constants (all f32, as burn computes them).
struct Kernel {
    b1: f32,
    b2: f32,
    f1: f32,
    f2: f32,
    combined: f32,
    eps: f32,
    lr: f32,
    first: bool,
}

impl Kernel {
    /// Plain indexed loops over equal-length slices, which the compiler vectorizes (IEEE sqrt and
    /// division are exact in vector form too). In burn's order: m, v, then
    /// `p - ((m * combined) / (sqrt(v) + eps)) * lr`.
    fn apply(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let n = p.len();
        let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
        if self.first {
            for i in 0..n {
                m[i] = g[i] * self.f1;
                v[i] = (g[i] * g[i]) * self.f2;
            }
        } else {
            for i in 0..n {
                m[i] = m[i] * self.b1 + g[i] * self.f1;
                v[i] = v[i] * self.b2 + (g[i] * g[i]) * self.f2;
            }
        }
        for i in 0..n {
            p[i] -= ((m[i] * self.combined) / (v[i].sqrt() + self.eps)) * self.lr;
        }
    }
}

/// Adam without weight decay or AMSGrad (the classic GAN's optimizer).
#[derive(Debug, Clone, Copy)]
pub struct FusedAdam {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

impl FusedAdam {
    /// A whole-module optimizer.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let device = tensor.device();
        let shape = tensor.shape();
        let mut param = to_vec(tensor);
        let grad = to_vec(grad);
        let (time, mut m, mut v) = match state {
            Some(s) => (s.momentum.time + 1, to_vec(s.momentum.moment_1), to_vec(s.momentum.moment_2)),
            // First step: burn sets the moments to g * (1 - beta) directly (not 0 * beta + ...,
            // which can differ in the sign of a zero), and so does the update below.
            None => (1, Vec::new(), Vec::new()),
        };
        let first = m.is_empty();
        if first {
            m = vec![0.0; grad.len()];
            v = vec![0.0; grad.len()];
        }

        let t = time as i32;
        let bias_correction2_sqrt = (1.0 - self.beta_2.powi(t)).sqrt();
        let k = Kernel {
            b1: self.beta_1,
            b2: self.beta_2,
            f1: 1.0 - self.beta_1,
            f2: 1.0 - self.beta_2,
            combined: bias_correction2_sqrt / (1.0 - self.beta_1.powi(t)),
            eps: self.epsilon * bias_correction2_sqrt,
            lr: lr as f32,
            first,
        };
        if param.len() >= PARALLEL_MIN {
            param
                .par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(grad.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| k.apply(p, m, v, g));
        } else {
            k.apply(&mut param, &mut m, &mut v, &grad);
        }

        let tensor =
            |values: Vec<f32>| Tensor::<D>::from_data(TensorData::new(values, shape.clone()), &device);
        let state = AdamState::new(AdaptiveMomentumState::new(time, tensor(m), tensor(v)));
        (tensor(param), Some(state))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec().expect("the model computes in f32")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::AdamConfig;

    /// Three steps of burn's Adam and of the fused one on the same parameter and gradients.
    #[test]
    fn bit_identical_to_burns_adam() {
        let device = Device::flex();
        let n = PARALLEL_MIN + 7; // exercise the parallel path too
        let param: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let reference = AdamConfig::new().with_beta_1(0.5).with_beta_2(0.999).with_epsilon(1e-7).build();
        let fused = FusedAdam { beta_1: 0.5, beta_2: 0.999, epsilon: 1e-7 };
        let t = |v: &Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [n]), &device);
        let (mut a, mut b) = (t(&param), t(&param));
        let (mut sa, mut sb) = (None, None);
        for step in 0..3 {
            let grad: Vec<f32> = (0..n).map(|i| ((i * 31 + step * 17) % 97) as f32 / 48.0 - 1.0).collect();
            (a, sa) = reference.step(2e-4, a, t(&grad), sa);
            (b, sb) = fused.step(2e-4, b, t(&grad), sb);
            let (va, vb) = (to_vec(a.clone()), to_vec(b.clone()));
            let same = va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "step {step}: fused Adam differs from burn's");
        }
        let (ma, mb) = (sa.unwrap().momentum, sb.unwrap().momentum);
        assert_eq!(ma.time, mb.time);
        assert_eq!(
            to_vec(ma.moment_2).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            to_vec(mb.moment_2).iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
