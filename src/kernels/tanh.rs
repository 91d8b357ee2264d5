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
}
