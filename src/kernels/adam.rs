//! Adam, fused: the same update as burn's `Adam`, computed in one pass over each parameter instead
//! of a dozen whole-tensor operations that each allocate a new tensor. The pass is a burn backend
//! extension op ([`AdamOps`]), so on the CPU backend it updates parameter and moments in place in
//! their own buffers. Its state is burn's own `AdamState`, so checkpoints (optimizer records keyed
//! by parameter id) are unchanged.
//!
//! Every element goes through exactly the f32 operations burn's `Adam` applies, in the same order
//! (no fused multiply-add, no reassociation), so training is bit-identical to burn's optimizer; the
//! test below checks it.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{DType, Device, Tensor};

use super::dense::whole_buffer;
use rayon::prelude::*;

/// Parameters smaller than this are updated on one thread (spawning would cost more).
const PARALLEL_MIN: usize = 1 << 16;
/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// The per-element update, with its step's constants (all f32, as burn computes them).
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
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
    /// The update over equal-length slices: m, v, then `p - ((m * combined) / (sqrt(v) + eps)) * lr`
    /// for each element in one pass. On CPUs with AVX-512 the same loop is compiled for 16 lanes;
    /// IEEE sqrt and division are exact in every vector width, so the bits do not depend on it.
    fn apply(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { self.apply_avx512(p, m, v, g) };
        }
        self.apply_portable(p, m, v, g)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn apply_avx512(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        self.apply_portable(p, m, v, g)
    }

    /// Plain indexed loops, which the compiler vectorizes; no fused multiply-add (Rust does not
    /// contract), so each element sees exactly burn's operations in burn's order.
    #[inline(always)]
    fn apply_portable(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let n = p.len();
        let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
        if self.first {
            for i in 0..n {
                m[i] = g[i] * self.f1;
                v[i] = (g[i] * g[i]) * self.f2;
                p[i] -= ((m[i] * self.combined) / (v[i].sqrt() + self.eps)) * self.lr;
            }
        } else {
            for i in 0..n {
                m[i] = m[i] * self.b1 + g[i] * self.f1;
                v[i] = v[i] * self.b2 + (g[i] * g[i]) * self.f2;
                p[i] -= ((m[i] * self.combined) / (v[i].sqrt() + self.eps)) * self.lr;
            }
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
        let (time, m, v) = match state {
            Some(s) => (s.momentum.time + 1, s.momentum.moment_1, s.momentum.moment_2),
            // First step: burn sets the moments to g * (1 - beta) directly (not 0 * beta + ...,
            // which can differ in the sign of a zero); the kernel writes them without reading.
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let t = time as i32;
        let bias_correction2_sqrt = (1.0 - self.beta_2.powi(t)).sqrt();
        let kernel = Kernel {
            b1: self.beta_1,
            b2: self.beta_2,
            f1: 1.0 - self.beta_1,
            f2: 1.0 - self.beta_2,
            combined: bias_correction2_sqrt / (1.0 - self.beta_1.powi(t)),
            eps: self.epsilon * bias_correction2_sqrt,
            lr: lr as f32,
            first: time == 1,
        };
        let (param, m, v) = <Dispatch as AdamOps>::adam_update(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            kernel,
        );
        let (m, v) = (Tensor::from_dispatch(m), Tensor::from_dispatch(v));
        let state = AdamState::new(AdaptiveMomentumState::new(time, m, v));
        (Tensor::from_dispatch(param), Some(state))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// One Adam update of a parameter as a backend operation, so that on the CPU backend it runs in
/// place on the tensors' own buffers: no conversion to vectors and back, no new moment tensors.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"))]
pub trait AdamOps: Backend {
    /// Returns the updated (parameter, first moment, second moment). Default: burn primitives.
    fn adam_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        kernel: Kernel,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed_update::<Self>(param, grad, moment_1, moment_2, kernel)
    }
}

/// The update from whole-tensor operations, in the kernel's order.
fn composed_update<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    m: FloatTensor<B>,
    v: FloatTensor<B>,
    k: Kernel,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let g_f1 = B::float_mul_scalar(grad.clone(), k.f1.into());
    let g2_f2 = B::float_mul_scalar(B::float_mul(grad.clone(), grad), k.f2.into());
    let (m, v) = if k.first {
        (g_f1, g2_f2)
    } else {
        (
            B::float_add(B::float_mul_scalar(m, k.b1.into()), g_f1),
            B::float_add(B::float_mul_scalar(v, k.b2.into()), g2_f2),
        )
    };
    let denominator = B::float_add_scalar(B::float_sqrt(v.clone()), k.eps.into());
    let step = B::float_div(B::float_mul_scalar(m.clone(), k.combined.into()), denominator);
    let param = B::float_sub(param, B::float_mul_scalar(step, k.lr.into()));
    (param, m, v)
}

/// The wgpu backend (and any other CubeCL runtime) takes the composed default bodies.
#[cfg(feature = "gpu")]
impl AdamOps for burn::backend::Cube {}

impl AdamOps for Flex {
    fn adam_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        kernel: Kernel,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let tensors = [&param, &grad, &moment_1, &moment_2];
        let n = param.shape().num_elements();
        let uniform = tensors.iter().all(|t| t.dtype() == DType::F32 && t.shape().num_elements() == n);
        if !uniform {
            return composed_update::<Self>(param, grad, moment_1, moment_2, kernel);
        }
        // Updated in place when the buffers are ours alone (the usual case: the optimizer owns
        // parameter and moments); `storage_mut` copies otherwise.
        let (mut param, mut m, mut v) = (whole_buffer(param), whole_buffer(moment_1), whole_buffer(moment_2));
        let grad = grad.to_contiguous();
        let g = &grad.storage::<f32>()[..n];
        let (p, ms, vs) = (
            &mut param.storage_mut::<f32>()[..n],
            &mut m.storage_mut::<f32>()[..n],
            &mut v.storage_mut::<f32>()[..n],
        );
        if n >= PARALLEL_MIN {
            p.par_chunks_mut(CHUNK)
                .zip(ms.par_chunks_mut(CHUNK))
                .zip(vs.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| kernel.apply(p, m, v, g));
        } else {
            kernel.apply(p, ms, vs, g);
        }
        (param, m, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::AdamConfig;
    use burn::tensor::TensorData;

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec().expect("f32")
    }

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
