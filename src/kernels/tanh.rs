//! tanh over a slice, 16 (or 8) lanes at a time, giving the same bits as the C library's scalar
//! `tanhf` on glibc (the fdlibm algorithm of `s_tanhf.c` and `s_expm1f.c`, which glibc 2.36 ships
//! and Rust's `f32::tanh` calls there).
//!
//! Why: G's output layer takes the tanh of every pixel of every image, twice a step; at batch 256
//! that is 400,000 calls into libm, about 10% of the step's CPU time, because libm's `tanhf` is a
//! branchy scalar function. Here every branch of the algorithm is computed for all lanes and the
//! right one selected per lane, so the loop vectorizes; each lane still performs the algorithm's
//! own f32 operations in its order (IEEE add, multiply and divide are exact in every vector width,
//! and Rust never fuses a multiply-add on its own), so the result is the same bits. The test below
//! checks that against `f32::tanh` on a sample of every exponent; an ignored test checks all 2³²
//! inputs (`cargo test --release tanh_matches_libm_on_every_float -- --ignored`, about 30 s).
//!
//! The algorithm and its constants are fdlibm's:
//!
//! > Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
//! > Developed at SunPro, a Sun Microsystems, Inc. business. Permission to use, copy, modify, and
//! > distribute this software is freely granted, provided that this notice is preserved.
//!
//! (float versions by Ian Lance Taylor, Cygnus Support.)

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// ln 2 split in a high part whose products with small integers are exact, and the rest.
const LN2_HI: f32 = f32::from_bits(0x3f31_7180); // 6.9313812256e-01
const LN2_LO: f32 = f32::from_bits(0x3717_f7d1); // 9.0580006145e-06
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b); // 1.4426950216e+00
/// Scaled coefficients of expm1's rational approximation on [-0.5 ln 2, 0.5 ln 2].
const Q1: f32 = f32::from_bits(0xbd08_8889); // -3.3333335072e-02
const Q2: f32 = f32::from_bits(0x3ad0_0d01); // 1.5873016091e-03
const Q3: f32 = f32::from_bits(0xb8a6_70cd); // -7.9365076090e-05
const Q4: f32 = f32::from_bits(0x3686_7e54); // 4.0082177293e-06
const Q5: f32 = f32::from_bits(0xb457_edbb); // -2.0109921195e-07

/// Replace each element of `values` by its tanh.
pub fn tanh_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { tanh_avx512(values) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { tanh_avx2(values) };
        }
    }
    values.iter_mut().for_each(|v| *v = tanh(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tanh_avx512(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = tanh(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tanh_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = tanh(*v));
}

#[inline(always)]
fn select(condition: bool, if_true: f32, if_false: f32) -> f32 {
    if condition { if_true } else { if_false }
}

/// fdlibm's `tanhf`, branch-free. With t = expm1(2|x|):
/// |x| < 2⁻⁵⁵: x·(1 + x); |x| < 1: -t'/(t' + 2) with t' = expm1(-2|x|); |x| < 22: 1 - 2/(t + 2);
/// else ±1 (also for ±inf); NaN stays NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let bits = x.to_bits();
    let abs_bits = bits & 0x7fff_ffff;
    // Beyond 22 the result is ±1 whatever expm1 gives; capping keeps the lanes that are
    // discarded anyway (and NaN, which `min` turns into 22) inside expm1's reduced range.
    let abs = f32::from_bits(abs_bits).min(22.0);
    let from_one = abs_bits >= 0x3f80_0000;
    let t = expm1(select(from_one, 2.0 * abs, -2.0 * abs));
    // 1 - 2/(t + 2) and -t/(t + 2): one division, as the dividend is selected first.
    let quotient = select(from_one, 2.0, -t) / (t + 2.0);
    let magnitude = select(from_one, 1.0 - quotient, quotient);
    let magnitude = select(abs_bits < 0x41b0_0000, magnitude, 1.0);
    let signed = f32::from_bits(magnitude.to_bits() | (bits & 0x8000_0000));
    let result = select(abs_bits < 0x2400_0000, x * (1.0 + x), signed);
    select(abs_bits > 0x7f80_0000, x + x, result)
}

/// fdlibm's `expm1f` for `u` in (-2, 44], the range `tanh` asks of it, branch-free: the
/// overflow and -1 cut-offs of the full function lie outside that range.
#[inline(always)]
fn expm1(u: f32) -> f32 {
    let abs_bits = u.to_bits() & 0x7fff_ffff;
    let negative = u.to_bits() >> 31 != 0;

    // Argument reduction: u = k·ln2 + x (+ c, the rounding error of x), |x| <= 0.5 ln2.
    let reduce = abs_bits > 0x3eb1_7218; // |u| > 0.5 ln2
    let within_1_5_ln2 = abs_bits < 0x3f85_1592;
    // SAFETY: `tanh` caps |x| at 22, so |u| <= 44 and the value is finite and far inside i32's
    // range. (`to_int_unchecked` truncates toward zero, as C's conversion does.)
    let k_general: i32 = unsafe { (INV_LN2 * u + select(negative, -0.5, 0.5)).to_int_unchecked() };
    let k_float = k_general as f32;
    let (hi, lo, k_reduced) = if within_1_5_ln2 {
        if negative { (u + LN2_HI, -LN2_LO, -1) } else { (u - LN2_HI, LN2_LO, 1) }
    } else {
        (u - k_float * LN2_HI, k_float * LN2_LO, k_general)
    };
    let x_reduced = hi - lo;
    let c_reduced = (hi - x_reduced) - lo;
    let x = select(reduce, x_reduced, u);
    let c = select(reduce, c_reduced, 0.0);
    let k = if reduce { k_reduced } else { 0 };

    // expm1 on the primary range.
    let hfx = 0.5 * x;
    let hxs = x * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let e_primary = hxs * ((r1 - t) / (6.0 - x * t));
    let k_zero = x - (x * e_primary - hxs);

    // Scaling back by 2^k, case by case as fdlibm does.
    let e = (x * (e_primary - c) - c) - hxs;
    let k_minus_one = 0.5 * (x - e) - 0.5;
    let k_one = select(x < -0.25, -2.0 * (e - (x + 0.5)), 1.0 + 2.0 * (x - e));
    let add_to_exponent =
        |y: f32| f32::from_bits((y.to_bits() as i32).wrapping_add(k.wrapping_shl(23)) as u32);
    let k_far = add_to_exponent(1.0 - (e - x)) - 1.0;
    let one_minus_2_to_minus_k = f32::from_bits(0x3f80_0000 - (0x0100_0000u32 >> k.clamp(0, 31)));
    let k_below_23 = add_to_exponent(one_minus_2_to_minus_k - (e - x));
    let two_to_minus_k = f32::from_bits(((0x7f - k) as u32).wrapping_shl(23));
    let k_from_23 = add_to_exponent((x - (e + two_to_minus_k)) + 1.0);
    let scaled = if k == 0 {
        k_zero
    } else if k == -1 {
        k_minus_one
    } else if k == 1 {
        k_one
    } else if k <= -2 || k > 56 {
        k_far
    } else if k < 23 {
        k_below_23
    } else {
        k_from_23
    };
    // |u| < 2^-25: expm1(u) is u.
    select(!reduce && abs_bits < 0x3300_0000, u, scaled)
}

/// tanh as a backend operation: the forward pass through [`tanh_in_place`], on several threads for
/// large tensors, and a backward pass from the saved output, `g · (−(y·y) + 1)`: what burn's own
/// tanh gives, value for value (its backward pass computes the tanh of the input again, squares
/// it, negates, adds 1 and multiplies by the gradient, in that order). The convolutional G's
/// output layer, where burn's tanh calls the C library once per pixel, twice a step.
/// Differentiable on an autodiff device.
pub fn tanh_tensor<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as TanhOps>::fused_tanh(x.into_dispatch()))
}

/// The backend operations behind [`tanh_tensor`]: burn's tanh and its gradient by default (any
/// backend); Flex overrides them, and `Autodiff` adds the backward pass.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait TanhOps: Backend {
    /// tanh of `x`.
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_tanh(x)
    }

    /// The input's gradient from the output `y` and the output's gradient.
    fn fused_tanh_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_gradient::<Self>(y, grad)
    }
}

/// burn's tanh gradient from its output: `grad · (−(y·y) + 1)`, in burn's operations.
pub(crate) fn composed_gradient<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let square = B::float_mul(y.clone(), y);
    B::float_mul(grad, B::float_add_scalar(B::float_neg(square), 1f32.into()))
}

/// The same gradient in place, value by value: `g ← g · (−(y·y) + 1)`, the same bits.
pub(crate) fn gradient_in_place(gs: &mut [f32], ys: &[f32]) {
    for (g, &y) in gs.iter_mut().zip(ys) {
        *g *= -(y * y) + 1.0;
    }
}

/// The wgpu backend (and any other CubeCL runtime) takes the default bodies.
#[cfg(feature = "gpu")]
impl TanhOps for burn::backend::Cube {}

/// burn's own tanh (any backend).
fn tanh_composed<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_tanh(x)
}

/// Elements per parallel task.
const OP_CHUNK: usize = 1 << 14;

impl TanhOps for Flex {
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 {
            return tanh_composed::<Self>(x);
        }
        let x = x.to_contiguous();
        let shape = x.shape();
        let mut out = x.storage::<f32>()[..shape.num_elements()].to_vec();
        out.par_chunks_mut(OP_CHUNK).for_each(tanh_in_place);
        FloatTensor::<Self>::from_data(TensorData::new(out, shape))
    }

    fn fused_tanh_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if y.dtype() != DType::F32 || grad.dtype() != DType::F32 || y.shape() != grad.shape() {
            return composed_gradient::<Self>(y, grad);
        }
        let (y, grad) = (y.to_contiguous(), grad.to_contiguous());
        let shape = y.shape();
        let n = shape.num_elements();
        let ys = &y.storage::<f32>()[..n];
        let mut out = grad.storage::<f32>()[..n].to_vec();
        out.par_chunks_mut(OP_CHUNK)
            .zip(ys.par_chunks(OP_CHUNK))
            .for_each(|(gs, ys)| gradient_in_place(gs, ys));
        FloatTensor::<Self>::from_data(TensorData::new(out, shape))
    }
}

impl<B: Backend + TanhOps, C: CheckpointStrategy> TanhOps for Autodiff<B, C> {
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The backward step; its state: the output.
        #[derive(Debug)]
        struct TanhBackward;

        impl<B: Backend + TanhOps> Backward<B, 1> for TanhBackward {
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, B::fused_tanh_backward(ops.state, grad));
                }
            }
        }

        match TanhBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::fused_tanh(x.into_primitive());
                prep.finish(output.clone(), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_tanh(x.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal as bits, or both NaN.
    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// Whether `f32::tanh` here is fdlibm's `tanhf`, as in glibc 2.36 (other C libraries, and
    /// newer glibc, compute it their own way). Told by an input where fdlibm's result is one unit
    /// in the last place above the correctly rounded 0x3dfeacc9.
    /// (`black_box`: the compiler would otherwise fold the constant with its own, correctly
    /// rounded, tanh.)
    fn libm_is_fdlibm() -> bool {
        std::hint::black_box(0.125f32).tanh().to_bits() == 0x3dfe_acca
    }

    /// Every 257th bit pattern (all exponents, both signs, every mantissa region), through
    /// the vectorized path in long and ragged slices, against the C library.
    #[test]
    fn tanh_matches_libm_on_a_sample_of_every_exponent() {
        let mut inputs: Vec<f32> = (0..=u32::MAX).step_by(257).map(f32::from_bits).collect();
        inputs.extend([0.0, -0.0, 1.0, -1.0, 22.0, -22.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        inputs.extend([f32::MIN_POSITIVE, f32::MAX, f32::MIN, 1e-30, 19.3, 43.9]);
        // Either side of each cut-off between branches (of tanh, and of expm1 at half its argument).
        for edge in
            [0x2400_0000u32, 0x3f80_0000, 0x41b0_0000, 0x3eb1_7218 - 0x0080_0000, 0x3f85_1592 - 0x0080_0000]
        {
            inputs.extend((edge - 2..=edge + 2).flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)]));
        }
        let mut outputs = inputs.clone();
        for chunk in outputs.chunks_mut(1000 + 7) {
            tanh_in_place(chunk);
        }
        for (&x, &y) in inputs.iter().zip(&outputs) {
            assert!(same(y, tanh(x)), "tanh({x:e}): vector path {y:e}, scalar path {:e}", tanh(x));
            if libm_is_fdlibm() {
                assert!(same(y, x.tanh()), "tanh({x:e}) = {y:e}, libm says {:e}", x.tanh());
            }
        }
        let mut special = [-0.0, 22.0, -22.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.125];
        tanh_in_place(&mut special);
        assert_eq!(
            special[..5].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [
                (-0.0f32).to_bits(),
                1.0f32.to_bits(),
                (-1.0f32).to_bits(),
                1.0f32.to_bits(),
                (-1.0f32).to_bits()
            ]
        );
        assert!(special[5].is_nan());
        assert_eq!(special[6].to_bits(), 0x3dfe_acca, "fdlibm's tanh(0.125)");
    }

    #[test]
    #[ignore = "all 2^32 inputs: about 30 s in release mode"]
    fn tanh_matches_libm_on_every_float() {
        assert!(libm_is_fdlibm(), "the C library's tanhf is not fdlibm's here");
        use rayon::prelude::*;
        let mismatches: u64 = (0..=u16::MAX as u32)
            .into_par_iter()
            .map(|high| {
                let inputs: Vec<f32> =
                    (0..=u16::MAX as u32).map(|low| f32::from_bits(high << 16 | low)).collect();
                let mut outputs = inputs.clone();
                tanh_in_place(&mut outputs);
                inputs.iter().zip(&outputs).filter(|(x, y)| !same(**y, x.tanh())).count() as u64
            })
            .sum();
        assert_eq!(mismatches, 0);
    }

    /// The op against burn's tanh on an autodiff device: forward and gradient bits, over more
    /// than one parallel chunk, with zeros, infinities, NaN and saturated values among them (where
    /// the C library is not fdlibm's, against the vector path and the gradient's formula).
    #[test]
    fn the_tanh_op_and_its_gradient_are_burns_bit_for_bit() {
        use burn::tensor::Device;
        let bits = |t: Tensor<4>| -> Vec<u32> {
            t.into_data().try_to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
        };
        let device = Device::flex().autodiff();
        let specials = [0.0, -0.0, 30.0, -30.0, f32::INFINITY, f32::NAN, 1e-30, 0.125];
        let values: Vec<f32> = (0..2 * 3 * 90 * 70)
            .map(|i| if i % 89 < 8 { specials[i % 89] } else { (i as f32 * 0.37).sin() * 4.0 })
            .collect();
        let tensor = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [2, 3, 90, 70]), &device);
        let x = tensor(values.clone()).require_grad();
        let weights: Vec<f32> = values.iter().map(|v| (v * 1.7).cos()).collect();
        let (fused, reference) = (tanh_tensor(x.clone()), x.clone().tanh());
        let mut expected = values.clone();
        tanh_in_place(&mut expected);
        let expected_grad: Vec<f32> =
            expected.iter().zip(&weights).map(|(y, g)| g * (-(y * y) + 1.0)).collect();
        let a = (fused.clone() * tensor(weights.clone())).sum().backward();
        let grad = bits(x.grad(&a).unwrap());
        assert_eq!(bits(fused), expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "forward");
        assert_eq!(grad, expected_grad.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "gradient");
        if libm_is_fdlibm() {
            let b = (reference.clone() * tensor(weights)).sum().backward();
            assert_eq!(
                bits(reference),
                expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "burn's forward"
            );
            assert_eq!(grad, bits(x.grad(&b).unwrap()), "burn's gradient");
        }
    }
}
