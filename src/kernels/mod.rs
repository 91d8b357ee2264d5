//! gantry's fused kernels: burn backend extension ops (`#[backend_extension(Flex, Autodiff)]`)
//! that compute exactly what burn's composed operations compute, in fewer passes over memory, and
//! the gemm wrapper they share. The networks in [`crate::model`] call them on the fast path; the
//! reference path (`train.kernels = "reference"`) uses burn's own modules and none of these. Each
//! op also lists burn's `Cube` backend (wgpu, feature `gpu`), where it takes its composed default
//! body: burn's own operations, the same values.
//!
//! - [`dense`]: a dense layer and its activation as one op (forward one gemm call and one pass,
//!   backward the pre-activation gradient in one pass and gemm on the saved tensors), and the
//!   product helper ([`dense::product`]) that splits large products by result columns;
//! - [`batch_norm`]: batch norm in training mode (statistics row by row, normalization and its
//!   gradient one pass each) and with running statistics;
//! - [`conv`]: convolutions and transposed convolutions, a chunk of whole images per matrix
//!   product, forward and backward (not burn's bits: sums in another order), their im2col and
//!   col2im rows in `conv/rows.rs` (AVX-512 masked copies where the CPU has them);
//! - [`leaky_relu`]: leaky ReLU in one pass each way (the convolutional networks');
//! - [`one_hot`]: a product whose input ends in one-hot labels (a conditional G's input layer, a
//!   projection D's embedding), the label columns as the weight rows they pick;
//! - [`pool`]: ReLU and 2x2 max pooling (the judge's) as one pass each way;
//! - [`tanh`]: libm's `tanhf`, vectorized with the same bits, and as an op with its gradient (the
//!   convolutional G's output layer);
//! - [`adam`]: Adam updating parameter and both moments in place, bit-identical to burn's `Adam`;
//! - [`average`]: a step of the moving average of G's weights in one pass, the same bits.

pub mod adam;
pub mod average;
pub mod batch_norm;
pub mod conv;
pub mod dense;
pub mod leaky_relu;
pub mod one_hot;
pub mod pool;
pub mod tanh;

/// `f()`, compiled for AVX-512 where the CPU has it (checked at run time), else as built: the
/// element-wise loops inside `f` are vectorized for 16 lanes. For loops whose every lane performs
/// the same IEEE operations (copies, selects, exact arithmetic), so the bits do not depend on it.
#[inline(always)]
pub(crate) fn on_wide_lanes<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { avx512(f) };
    }
    f()
}
