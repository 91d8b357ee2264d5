//! Winograd's minimal filtering (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for windows of stride 1 that keep the input's size: F(4×4, 5×5) for 5×5
//! windows padded by 2 (TensorFlow's DCGAN G's first transposed convolution, 256 -> 128 channels on
//! 7×7 maps, half of `dcgan-tf`'s arithmetic) and F(4×4, 3×3) for 3×3 windows padded by 1. Taken
//! where `train.kernels = "winograd"` asks for it, with 16 channels or more on both sides
//! ([`Layer::new`]); every other window stays on the direct products.
//!
//! Every such layer is a correlation `y[n, o] = Σ_c x[n, c] ⋆ g[o, c]` ([`correlate`]): the
//! convolution with its weight, its input gradient with the weight turned 180° and its channels
//! swapped ([`turned`]), and a transposed convolution the other way round ([`Layer`]). The output
//! is cut into 4×4 tiles; each reads an α×α tile of the input (α = 8 for 5×5, 6 for 3×3), and in
//! the transformed domain a tile's outputs are α² products where the direct sum takes 400 (5×5) or
//! 144 (3×3): `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`. For a chunk of images the sum over channels
//! is, for each of the α² points, one matrix product `[tiles, c_in] · [c_in, c_out]`: for
//! F(4×4, 5×5) 4.8x fewer multiplications than the direct products on 7×7 maps (padded to 8×8 by
//! the tiles), plus the transforms, which are additions and multiplications by small constants on
//! 16 channels at a time ([`Lanes`]). The weight's gradient ([`weight_grad`]) is the same
//! algorithm's: `dg = Gᵀ [Σ_tiles (Bᵀ d B) ⊙ (A dY Aᵀ)] G`, again α² products, summed over the
//! chunks.
//!
//! The points are 0, ±1, ±2, ±1/2 and ∞ for F(4×4, 5×5), and 0, ±1, ±2 and ∞ for F(4×4, 3×3).
//! The results are the convolution's within float rounding, not its direct sum's bits: the
//! transforms reassociate the sums (the tests below bound the error against an f64 sum). They do
//! not depend on the thread count (the chunks depend on the shapes only) or on the vector width
//! (no fused multiply-adds).

use super::super::dense::{Order, Split, product, product_add};
use super::transpose::transpose;
use super::{Chunks, Window, sum_in_order};
use rayon::prelude::*;

/// The channels one transform handles at once.
const LANES: usize = 16;

/// `N` values of [`LANES`] channels side by side (one by default; a tile's row for the
/// matrices applied to whole rows), with value-by-value arithmetic: each operation one loop over
/// contiguous floats, which under [`wide!`] the compiler turns into whole AVX-512 vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lanes<const N: usize = 1>([[f32; LANES]; N]);

impl<const N: usize> Lanes<N> {
    const ZERO: Self = Lanes([[0.0; LANES]; N]);

    /// `f` value by value with `other`'s values. The one-operand operations go through it too
    /// (with zeros): written as their own one-operand loops, the compiler vectorized the
    /// transforms around them with gathers again (seen in the disassembly).
    #[inline(always)]
    fn each(mut self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let values = self.0.as_flattened_mut().iter_mut();
        values.zip(other.0.as_flattened()).for_each(|(a, b)| *a = f(*a, *b));
        self
    }
}

impl<const N: usize> std::ops::Add for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.each(other, |a, b| a + b)
    }
}

impl<const N: usize> std::ops::Sub for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        self.each(other, |a, b| a - b)
    }
}

impl<const N: usize> std::ops::Neg for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        self.each(Self::ZERO, |a, _| -a)
    }
}

impl<const N: usize> std::ops::Mul<f32> for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, k: f32) -> Self {
        self.each(Self::ZERO, |a, _| a * k)
    }
}

impl<const N: usize> std::ops::Div<f32> for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn div(self, k: f32) -> Self {
        self.each(Self::ZERO, |a, _| a / k)
    }
}

/// `fn name(args) -> R { body }` whose body runs compiled for AVX-512 where the CPU has it
/// (checked at run time), else as built: the transforms' loops over [`LANES`] channels then run on
/// whole 16-lane vectors. Their arithmetic is the same IEEE operations either way (no fused
/// multiply-adds), so the bits do not depend on it.
macro_rules! wide {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                // SAFETY: the CPU supports AVX-512F, checked just above.
                return unsafe { avx512($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

/// The filters: F(4×4, 5×5) reads 8×8 input tiles, F(4×4, 3×3) 6×6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    F4x5,
    F4x3,
}

/// The output tile's side, for both filters.
const M: usize = 4;

impl Filter {
    /// The window's side.
    fn r(self) -> usize {
        match self {
            Filter::F4x5 => 5,
            Filter::F4x3 => 3,
        }
    }

    /// The input tile's side: M + r − 1.
    fn alpha(self) -> usize {
        M + self.r() - 1
    }

    /// The points of the transformed domain: one per value of an input tile.
    fn points(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// The padding on every side that keeps the input's size: (r − 1) / 2.
    fn pad(self) -> usize {
        (self.r() - 1) / 2
    }

    fn taps(self) -> usize {
        self.r() * self.r()
    }
}

/// The shapes of a correlation: `x` `[images, ci, h, w]`, `g` `[co, ci, r, r]`, `y`
/// `[images, co, h, w]`, by `filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Same {
    images: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    filter: Filter,
}

impl Same {
    fn tiles_y(&self) -> usize {
        self.h.div_ceil(M)
    }

    fn tiles_x(&self) -> usize {
        self.w.div_ceil(M)
    }

    fn tiles(&self) -> usize {
        self.tiles_y() * self.tiles_x()
    }

    fn plane(&self) -> usize {
        self.h * self.w
    }

    /// The batch's chunks: the widest side's transformed tiles of a chunk within the convolutions'
    /// budget ([`Chunks::new`]).
    fn chunks(&self) -> Chunks {
        Chunks::new(self.images, self.filter.points() * self.tiles() * self.ci.max(self.co))
    }

    /// Output tile t's first output row or column.
    fn first_out(&self, t: usize) -> usize {
        t * M
    }
}

/// The filter that computes a k×k window with this stride and padding as a correlation that
/// keeps the input's size: 5×5 padded by 2 or 3×3 padded by 1, stride 1.
fn filter_for(k: usize, window: Window) -> Option<Filter> {
    match (k, window.stride, window.padding, window.padding_out) {
        (5, 1, 2, 0) => Some(Filter::F4x5),
        (3, 1, 1, 0) => Some(Filter::F4x3),
        _ => None,
    }
}

/// The fewest channels on either side for which the transforms pay (a layer with one channel
/// stays direct).
const MIN_CHANNELS: usize = 16;

/// A convolution or transposed convolution as Winograd computes it, in [`super::Plan`]'s terms: a
/// big side `[n, cb, h, w]`, a small side `[n, cs, h, w]` of the same size, the weight
/// `[cs, cb, r, r]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layer {
    /// The correlation from the big side to the small side.
    s: Same,
}

impl Layer {
    /// The layer, if the algorithm computes it: a 5×5 or 3×3 window of stride 1 that keeps the
    /// size ([`filter_for`]), with at least [`MIN_CHANNELS`] channels on both sides.
    pub fn new(big: [usize; 4], small: [usize; 4], k: usize, window: Window) -> Option<Self> {
        let ([n, cb, hb, wb], [_, cs, hs, ws]) = (big, small);
        let filter = filter_for(k, window)?;
        let s = Same { images: n, ci: cb, co: cs, h: hb, w: wb, filter };
        (cb.min(cs) >= MIN_CHANNELS && hb == hs && wb == ws).then_some(Self { s })
    }

    /// Big to small (a convolution; a transposed convolution's input gradient).
    pub fn small_from_big(&self, big: &[f32], weight: &[f32]) -> Vec<f32> {
        correlate(big, self.s, weight)
    }

    /// Small to big (a transposed convolution; a convolution's input gradient): the correlation
    /// the other way, with the weight turned.
    pub fn big_from_small(&self, small: &[f32], weight: &[f32]) -> Vec<f32> {
        let back = Same { ci: self.s.co, co: self.s.ci, ..self.s };
        correlate(small, back, &turned(weight, self.s.co, self.s.ci, self.s.filter.r()))
    }

    /// The weight's gradient `[cs, cb, r, r]`.
    pub fn weight_grad(&self, big: &[f32], small: &[f32]) -> Vec<f32> {
        weight_grad(big, self.s, small)
    }

    /// A transposed convolution's input gradient (`small_from_big(big)`) and weight gradient
    /// (`weight_grad(big, small)`), the big side transformed once for both.
    pub fn small_and_weight_grad(&self, big: &[f32], small: &[f32], weight: &[f32]) -> (Vec<f32>, Vec<f32>) {
        correlate_and_weight_grad(big, self.s, weight, small)
    }
}

/// `y[n, o] = Σ_c x[n, c] ⋆ g[o, c]` with (r − 1) / 2 zeros of padding: x `[images, ci, h, w]`,
/// g `[co, ci, r, r]`, y `[images, co, h, w]`.
fn correlate(x: &[f32], s: Same, g: &[f32]) -> Vec<f32> {
    let u = transform_weights(g, s);
    let (chunk, out_len, in_len) = (s.chunks().size, s.co * s.plane(), s.ci * s.plane());
    let mut y = vec![0.0f32; s.images * out_len];
    y.par_chunks_mut(chunk * out_len).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(v, scratch), (n, dst)| {
            let images = dst.len() / out_len;
            transform_input(&x[n * chunk * in_len..][..images * in_len], s, v, scratch);
            output_of_chunk(v, &u, s, dst, scratch);
        },
    );
    y
}

/// One chunk's output `dst` from its transformed input `v` and the transformed weight `u`: one
/// product per point, `[tiles, co] = [tiles, ci] · [ci, co]`, then back from the points.
fn output_of_chunk(v: &[f32], u: &[f32], s: Same, dst: &mut [f32], scratch: &mut Vec<f32>) {
    let tiles = dst.len() / (s.co * s.plane()) * s.tiles();
    let (ci, co) = (s.ci as isize, s.co as isize);
    let parts: Vec<Vec<f32>> = (0..s.filter.points())
        .map(|p| {
            let (vp, up) = (&v[p * point_stride(tiles, s.ci)..], &u[p * s.ci * s.co..]);
            product(tiles, s.co, s.ci, vp, (ci, 1), up, (co, 1), Order::RowMajor, Split::Single)
        })
        .collect();
    transform_output(&parts, s, dst, scratch);
}

/// The floats from one point's block of a chunk's transformed tiles to the next (`v` of
/// [`transform_input`], `z` of [`transform_grad`]): `tiles` rows of `width`, and one vector more,
/// so that the blocks do not start a multiple of 4 KiB apart, where they would share cache sets.
fn point_stride(tiles: usize, width: usize) -> usize {
    tiles * width + LANES
}

/// The weight's gradient of [`correlate`]: `dg[o, c, kh, kw] = Σ dy[n, o, i, j] · x[n, c,
/// i − pad + kh, j − pad + kw]`, x `[images, ci, h, w]`, dy `[images, co, h, w]`, dg
/// `[co, ci, r, r]`.
fn weight_grad(x: &[f32], s: Same, dy: &[f32]) -> Vec<f32> {
    weight_grad_and(x, s, dy, None)
}

/// [`correlate`]`(x, s, g)` and [`weight_grad`]`(x, s, dy)` together, each chunk of `x`
/// transformed once for both: a transposed convolution's input and weight gradients (`x` its
/// output's gradient, `dy` its input).
fn correlate_and_weight_grad(x: &[f32], s: Same, g: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0f32; s.images * s.co * s.plane()];
    let grad = weight_grad_and(x, s, dy, Some((&mut y, &transform_weights(g, s))));
    (y, grad)
}

/// The weight's gradient, summed chunk after chunk within [`WEIGHT_GRAD_GROUPS`] groups side by
/// side, then group after group; with `output` (the correlation's buffer and transformed weight)
/// also the correlation's chunks from the same transformed input.
fn weight_grad_and(x: &[f32], s: Same, dy: &[f32], output: Option<(&mut [f32], &[f32])>) -> Vec<f32> {
    let (chunks, out_len, in_len) = (s.chunks(), s.co * s.plane(), s.ci * s.plane());
    let (out, u) = output.unzip();
    let sums: Vec<Vec<f32>> = chunks
        .group_blocks(out, out_len)
        .into_par_iter()
        .map(|(g, block)| {
            let (mut v, mut z, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
            let mut sum = vec![0.0f32; s.filter.points() * s.ci * s.co];
            let mut dsts = block.map(|b| b.chunks_mut(chunks.size * out_len));
            for n in chunks.group(g) {
                let (first, images) = chunks.images_of(n);
                transform_input(&x[first * in_len..][..images * in_len], s, &mut v, &mut scratch);
                if let (Some(dsts), Some(u)) = (dsts.as_mut(), u) {
                    let dst = dsts.next().expect("one block of the output per chunk");
                    output_of_chunk(&v, u, s, dst, &mut scratch);
                }
                transform_grad(&dy[first * out_len..][..images * out_len], s, &mut z, &mut scratch);
                add_weight_part(&v, &z, s, images * s.tiles(), &mut sum);
            }
            sum
        })
        .collect();
    weights_back(&sum_in_order(sums, s.filter.points() * s.ci * s.co), s)
}

/// `sum[p] += v[p]ᵀ · z[p]` for each point p: `[ci, co] += [ci, tiles] · [tiles, co]`, the
/// input's transformed tiles read transposed in place.
fn add_weight_part(v: &[f32], z: &[f32], s: Same, tiles: usize, sum: &mut [f32]) {
    let (ci, co) = (s.ci as isize, s.co as isize);
    for p in 0..s.filter.points() {
        let (vp, zp) = (&v[p * point_stride(tiles, s.ci)..], &z[p * point_stride(tiles, s.co)..]);
        let dst = &mut sum[p * s.ci * s.co..][..s.ci * s.co];
        product_add((s.ci, s.co, tiles), (vp, (1, ci)), (zp, (co, 1)), dst);
    }
}

/// A weight `[a, b, r, r]` turned 180° with its two channel axes swapped: `[b, a, r, r]`, the
/// weight whose correlation is the other direction's (a convolution's input gradient, a
/// transposed convolution's output).
fn turned(g: &[f32], a: usize, b: usize, r: usize) -> Vec<f32> {
    let taps = r * r;
    let mut out = vec![0.0f32; a * b * taps];
    for i in 0..a {
        for j in 0..b {
            let (src, dst) = (&g[(i * b + j) * taps..][..taps], &mut out[(j * a + i) * taps..][..taps]);
            src.iter().rev().zip(dst).for_each(|(v, d)| *d = *v);
        }
    }
    out
}

wide! {
/// The chunk's input tiles transformed, `v` `[points, tiles, ci]`: `Bᵀ d B` for each tile's α×α
/// values d (zero outside the image) of each channel; `padded` holds one image channel-last inside
/// a border of zeros as wide as the tiles reach past it.
fn transform_input(x: &[f32], s: Same, v: &mut Vec<f32>, padded: &mut Vec<f32>) {
    let (channels, plane, pad, alpha) = (s.ci, s.plane(), s.filter.pad(), s.filter.alpha());
    let images = x.len() / (channels * plane);
    let (rows, cols) = (M * (s.tiles_y() - 1) + alpha, M * (s.tiles_x() - 1) + alpha);
    let tiles = images * s.tiles();
    v.resize(s.filter.points() * point_stride(tiles, channels), 0.0);
    padded.clear();
    padded.resize(rows * cols * channels, 0.0);
    let mut image = vec![0.0f32; plane * channels];
    for (img, x) in x.chunks_exact(channels * plane).enumerate() {
        transpose(x, channels, plane, &mut image);
        for (i, row) in image.chunks_exact(s.w * channels).enumerate() {
            padded[((i + pad) * cols + pad) * channels..][..row.len()].copy_from_slice(row);
        }
        for t in 0..s.tiles() {
            let (ty, tx) = (t / s.tiles_x(), t % s.tiles_x());
            let (tile, first) = (img * s.tiles() + t, (M * ty * cols + M * tx) * channels);
            match s.filter {
                Filter::F4x3 => input_tile::<6>(padded, (first, cols), s, (tile, tiles), v, Bt6),
                Filter::F4x5 => input_tile::<8>(padded, (first, cols), s, (tile, tiles), v, Bt8),
            }
        }
    }
}
}

/// One input tile, its first value at `padded[first]` in rows of `cols` positions, into `v` as
/// tile `tile` of `tiles` (see [`transform_input`]).
#[inline(always)]
fn input_tile<const A: usize>(
    padded: &[f32],
    (first, cols): (usize, usize),
    s: Same,
    (tile, tiles): (usize, usize),
    v: &mut [f32],
    bt: impl Matrix<A, A>,
) {
    let channels = s.ci;
    for c0 in (0..channels).step_by(LANES) {
        let lanes = LANES.min(channels - c0);
        let mut d = [[Lanes::ZERO; A]; A];
        for (u, row) in d.iter_mut().enumerate() {
            for (q, value) in row.iter_mut().enumerate() {
                *value = load(&padded[first + (u * cols + q) * channels + c0..], lanes);
            }
        }
        let out = separable(&d, bt);
        for (p, values) in out.iter().flatten().enumerate() {
            store(&mut v[p * point_stride(tiles, channels) + tile * channels + c0..], values, lanes);
        }
    }
}

wide! {
/// The output gradient's tiles transformed, `z` `[points, tiles, co]`: `A dY Aᵀ` for each tile's M×M
/// values (zero outside the image).
fn transform_grad(dy: &[f32], s: Same, z: &mut Vec<f32>, scratch: &mut Vec<f32>) {
    let (plane, co) = (s.plane(), s.co);
    let tiles = dy.len() / (co * plane) * s.tiles();
    z.resize(s.filter.points() * point_stride(tiles, co), 0.0);
    scratch.resize(plane * co, 0.0);
    for (img, dy) in dy.chunks_exact(co * plane).enumerate() {
        transpose(dy, co, plane, scratch);
        for t in 0..s.tiles() {
            let tile = img * s.tiles() + t;
            match s.filter {
                Filter::F4x5 => grad_tile::<8>(scratch, s, (t, tile, tiles), z, A4x8),
                Filter::F4x3 => grad_tile::<6>(scratch, s, (t, tile, tiles), z, A4),
            }
        }
    }
}
}

/// One output tile's gradient, from one image channel-last, into `z` (see [`transform_grad`]).
#[inline(always)]
fn grad_tile<const A: usize>(
    image: &[f32],
    s: Same,
    (t, tile, tiles): (usize, usize, usize),
    z: &mut [f32],
    a: impl Matrix<M, A>,
) {
    let (ty, tx, co) = (t / s.tiles_x(), t % s.tiles_x(), s.co);
    for o0 in (0..co).step_by(LANES) {
        let lanes = LANES.min(co - o0);
        let mut d = [[Lanes::ZERO; M]; M];
        for (ia, row) in d.iter_mut().enumerate() {
            let Some(i) = inside((s.first_out(ty) + ia) as isize, s.h) else { continue };
            for (ib, value) in row.iter_mut().enumerate() {
                let Some(j) = inside((s.first_out(tx) + ib) as isize, s.w) else { continue };
                *value = load(&image[(i * s.w + j) * co + o0..], lanes);
            }
        }
        let out = separable(&d, a);
        for (p, values) in out.iter().flatten().enumerate() {
            store(&mut z[p * point_stride(tiles, co) + tile * co + o0..], values, lanes);
        }
    }
}

wide! {
/// The chunk's output `dst` `[images, co, h, w]` from the points' products `parts` (each
/// `[tiles, co]`): `Aᵀ M A` for each tile, the positions inside the image kept.
fn transform_output(parts: &[Vec<f32>], s: Same, dst: &mut [f32], scratch: &mut Vec<f32>) {
    let (plane, co) = (s.plane(), s.co);
    scratch.resize(plane * co, 0.0);
    for (img, dst) in dst.chunks_exact_mut(co * plane).enumerate() {
        for t in 0..s.tiles() {
            let tile = img * s.tiles() + t;
            match s.filter {
                Filter::F4x5 => output_tile::<8>(parts, s, (t, tile), scratch, At4x8),
                Filter::F4x3 => output_tile::<6>(parts, s, (t, tile), scratch, At4),
            }
        }
        transpose(scratch, plane, co, dst);
    }
}
}

/// One output tile into one image channel-last (see [`transform_output`]).
#[inline(always)]
fn output_tile<const A: usize>(
    parts: &[Vec<f32>],
    s: Same,
    (t, tile): (usize, usize),
    image: &mut [f32],
    at: impl Matrix<A, M>,
) {
    let (ty, tx, co) = (t / s.tiles_x(), t % s.tiles_x(), s.co);
    for o0 in (0..co).step_by(LANES) {
        let lanes = LANES.min(co - o0);
        let mut m = [[Lanes::ZERO; A]; A];
        for (p, value) in m.iter_mut().flatten().enumerate() {
            *value = load(&parts[p][tile * co + o0..], lanes);
        }
        let y = separable(&m, at);
        for (ia, row) in y.iter().enumerate() {
            let Some(i) = inside((s.first_out(ty) + ia) as isize, s.h) else { continue };
            for (ib, value) in row.iter().enumerate() {
                let Some(j) = inside((s.first_out(tx) + ib) as isize, s.w) else { continue };
                store(&mut image[(i * s.w + j) * co + o0..], value, lanes);
            }
        }
    }
}

wide! {
/// The weight `g` `[co, ci, r, r]` transformed, `[points, ci, co]`: `G g Gᵀ` for each pair of
/// channels.
fn transform_weights(g: &[f32], s: Same) -> Vec<f32> {
    let (ci, co, taps) = (s.ci, s.co, s.filter.taps());
    let mut by_tap = vec![0.0f32; ci * taps * co];
    transpose(g, co, ci * taps, &mut by_tap);
    let mut u = vec![0.0f32; s.filter.points() * ci * co];
    for c in 0..ci {
        let (src, dst) = ((&by_tap[..], |tap| c * taps + tap), (&mut u[..], |p| p * ci + c));
        match s.filter {
            Filter::F4x5 => channel_tiles::<5, 8>(src, dst, co, G5x8),
            Filter::F4x3 => channel_tiles::<3, 6>(src, dst, co, G3),
        }
    }
    u
}
}

/// One input channel's block of `src` (I×I values for each output channel) through `f` into
/// `dst` (O×O values), 16 output channels at a time: the block's value i of output channel o at
/// `src[from(i)·co + o]`, the result's value p at `dst[to(p)·co + o]`. A weight's transform and
/// its gradient's way back.
#[inline(always)]
fn channel_tiles<const I: usize, const O: usize>(
    (src, from): (&[f32], impl Fn(usize) -> usize),
    (dst, to): (&mut [f32], impl Fn(usize) -> usize),
    co: usize,
    f: impl Matrix<I, O>,
) {
    for o0 in (0..co).step_by(LANES) {
        let lanes = LANES.min(co - o0);
        let mut block = [[Lanes::ZERO; I]; I];
        for (i, value) in block.iter_mut().flatten().enumerate() {
            *value = load(&src[from(i) * co + o0..], lanes);
        }
        let out = separable(&block, f);
        for (p, values) in out.iter().flatten().enumerate() {
            store(&mut dst[to(p) * co + o0..], values, lanes);
        }
    }
}

wide! {
/// The weight's gradient `[co, ci, r, r]` from its transform `du` `[points, ci, co]`: `Gᵀ du G`.
fn weights_back(du: &[f32], s: Same) -> Vec<f32> {
    let (ci, co, taps) = (s.ci, s.co, s.filter.taps());
    let mut by_tap = vec![0.0f32; ci * taps * co];
    for c in 0..ci {
        let (src, dst) = ((du, |p| p * ci + c), (&mut by_tap[..], |tap| c * taps + tap));
        match s.filter {
            Filter::F4x5 => channel_tiles::<8, 5>(src, dst, co, Gt5x8),
            Filter::F4x3 => channel_tiles::<6, 3>(src, dst, co, Gt3),
        }
    }
    let mut g = vec![0.0f32; co * ci * taps];
    transpose(&by_tap, ci * taps, co, &mut g);
    g
}
}

/// The first `lanes` values of `src` (the rest 0): one vector's load when `lanes` is [`LANES`]
/// (an array's move, which the compiler cannot fold into the other case's `memcpy` call).
#[inline(always)]
fn load(src: &[f32], lanes: usize) -> Lanes {
    if let Ok(whole) = <[f32; LANES]>::try_from(&src[..lanes]) {
        return Lanes([whole]);
    }
    let mut v = Lanes::ZERO;
    v.0[0][..lanes].copy_from_slice(&src[..lanes]);
    v
}

/// The first `lanes` values of `v` into `dst`: one vector's store when `lanes` is [`LANES`].
#[inline(always)]
fn store(dst: &mut [f32], v: &Lanes, lanes: usize) {
    match <&mut [f32; LANES]>::try_from(&mut dst[..lanes]) {
        Ok(whole) => *whole = v.0[0],
        Err(_) => dst[..lanes].copy_from_slice(&v.0[0][..lanes]),
    }
}

/// `i` if it is a row or column of a side of `n`.
fn inside(i: isize, n: usize) -> Option<usize> {
    (0..n as isize).contains(&i).then_some(i as usize)
}

/// `F X Fᵀ` for a square `X` of lane vectors, `f` applying the matrix `F`: to the rows as whole
/// vectors (`F X`), then to each row of the result. Every lane takes the same operations in the
/// same order as `F` applied to each column and then to each row.
#[inline(always)]
fn separable<const I: usize, const O: usize>(x: &[[Lanes; I]; I], f: impl Matrix<I, O>) -> [[Lanes; O]; O] {
    let mut rows = [Lanes::<I>::ZERO; I];
    for (row, x) in rows.iter_mut().zip(x) {
        for (r, x) in row.0.iter_mut().zip(x) {
            *r = x.0[0];
        }
    }
    let mut out = [[Lanes::ZERO; O]; O];
    for (out, half) in out.iter_mut().zip(f.apply(rows)) {
        *out = f.apply(half.0.map(|v| Lanes([v])));
    }
    out
}

/// A matrix applied to a column of lane vectors (or of whole rows of them): the filters'
/// transforms below.
trait Matrix<const I: usize, const O: usize>: Copy {
    fn apply<const N: usize>(self, x: [Lanes<N>; I]) -> [Lanes<N>; O];
}

/// `Bᵀ d` for F(4×4, 3×3), the points 0, ±1, ±2 and ∞: Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0;
/// 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1].
#[derive(Clone, Copy)]
struct Bt6;

impl Matrix<6, 6> for Bt6 {
    #[inline(always)]
    fn apply<const N: usize>(self, [d0, d1, d2, d3, d4, d5]: [Lanes<N>; 6]) -> [Lanes<N>; 6] {
        [
            d0 * 4.0 - d2 * 5.0 + d4,
            (d3 + d4) - (d1 + d2) * 4.0,
            (d4 - d3) + (d1 - d2) * 4.0,
            (d4 - d2) + (d3 - d1) * 2.0,
            (d4 - d2) - (d3 - d1) * 2.0,
            d1 * 4.0 - d3 * 5.0 + d5,
        ]
    }
}

/// `G g` for F(4×4, 3×3): G = [1/4 0 0; −1/6 −1/6 −1/6; −1/6 1/6 −1/6; 1/24 1/12 1/6;
/// 1/24 −1/12 1/6; 0 0 1].
#[derive(Clone, Copy)]
struct G3;

impl Matrix<3, 6> for G3 {
    #[inline(always)]
    fn apply<const N: usize>(self, [g0, g1, g2]: [Lanes<N>; 3]) -> [Lanes<N>; 6] {
        let (even, even4) = (g0 + g2, g0 + g2 * 4.0);
        [
            g0 / 4.0,
            -(even + g1) / 6.0,
            -(even - g1) / 6.0,
            (even4 + g1 * 2.0) / 24.0,
            (even4 - g1 * 2.0) / 24.0,
            g2,
        ]
    }
}

/// `Aᵀ m` for F(4×4, 3×3): Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].
#[derive(Clone, Copy)]
struct At4;

impl Matrix<6, 4> for At4 {
    #[inline(always)]
    fn apply<const N: usize>(self, [m0, m1, m2, m3, m4, m5]: [Lanes<N>; 6]) -> [Lanes<N>; 4] {
        let (s1, d1, s2, d2) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        [m0 + s1 + s2, d1 + d2 * 2.0, s1 + s2 * 4.0, d1 + d2 * 8.0 + m5]
    }
}

/// `A y` for F(4×4, 3×3) (6×4).
#[derive(Clone, Copy)]
struct A4;

impl Matrix<4, 6> for A4 {
    #[inline(always)]
    fn apply<const N: usize>(self, [y0, y1, y2, y3]: [Lanes<N>; 4]) -> [Lanes<N>; 6] {
        let (even, odd, even4, odd8) = (y0 + y2, y1 + y3, y0 + y2 * 4.0, y1 * 2.0 + y3 * 8.0);
        [y0, even + odd, even - odd, even4 + odd8, even4 - odd8, y3]
    }
}

/// `Gᵀ u` for F(4×4, 3×3) (3×6).
#[derive(Clone, Copy)]
struct Gt3;

impl Matrix<6, 3> for Gt3 {
    #[inline(always)]
    fn apply<const N: usize>(self, [u0, u1, u2, u3, u4, u5]: [Lanes<N>; 6]) -> [Lanes<N>; 3] {
        let (s, d, t, e) = (u1 + u2, u1 - u2, u3 + u4, u3 - u4);
        [u0 / 4.0 - s / 6.0 + t / 24.0, e / 12.0 - d / 6.0, (t - s) / 6.0 + u5]
    }
}

/// `Bᵀ d` for F(4×4, 5×5), the points 0, ±1, ±2, ±1/2 and ∞: Bᵀ = [1 0 −21/4 0 21/4 0 −1 0;
/// 0 1 1 −17/4 −17/4 1 1 0; 0 −1 1 17/4 −17/4 −1 1 0; 0 1/2 1/4 −5/2 −5/4 2 1 0;
/// 0 −1/2 1/4 5/2 −5/4 −2 1 0; 0 2 4 −5/2 −5 1/2 1 0; 0 −2 4 5/2 −5 −1/2 1 0;
/// 0 −1 0 21/4 0 −21/4 0 1].
#[derive(Clone, Copy)]
struct Bt8;

impl Matrix<8, 8> for Bt8 {
    #[inline(always)]
    fn apply<const N: usize>(self, [d0, d1, d2, d3, d4, d5, d6, d7]: [Lanes<N>; 8]) -> [Lanes<N>; 8] {
        let (e1, o1) = ((d2 + d6) - d4 * 4.25, (d1 + d5) - d3 * 4.25);
        let (e2, o2) = ((d2 * 0.25 + d6) - d4 * 1.25, (d1 * 0.5 + d5 * 2.0) - d3 * 2.5);
        let (e3, o3) = ((d2 * 4.0 + d6) - d4 * 5.0, (d1 * 2.0 + d5 * 0.5) - d3 * 2.5);
        [
            (d0 - d6) + (d4 - d2) * 5.25,
            e1 + o1,
            e1 - o1,
            e2 + o2,
            e2 - o2,
            e3 + o3,
            e3 - o3,
            (d7 - d1) + (d3 - d5) * 5.25,
        ]
    }
}

/// `G g` for F(4×4, 5×5): G = [1 0 0 0 0; −2/9 ×5; −2/9 (−1)ᵏ; (1 2 4 8 16)/90;
/// (1 −2 4 −8 16)/90; (32 16 8 4 2)/45; (32 −16 8 −4 2)/45; 0 0 0 0 1].
#[derive(Clone, Copy)]
struct G5x8;

impl Matrix<5, 8> for G5x8 {
    #[inline(always)]
    fn apply<const N: usize>(self, [g0, g1, g2, g3, g4]: [Lanes<N>; 5]) -> [Lanes<N>; 8] {
        let (even, odd) = (g0 + g2 + g4, g1 + g3);
        let (even2, odd2) = (g0 + g2 * 4.0 + g4 * 16.0, g1 * 2.0 + g3 * 8.0);
        let (even_half, odd_half) = (g0 * 32.0 + g2 * 8.0 + g4 * 2.0, g1 * 16.0 + g3 * 4.0);
        [
            g0,
            (even + odd) * -2.0 / 9.0,
            (even - odd) * -2.0 / 9.0,
            (even2 + odd2) / 90.0,
            (even2 - odd2) / 90.0,
            (even_half + odd_half) / 45.0,
            (even_half - odd_half) / 45.0,
            g4,
        ]
    }
}

/// `Aᵀ m` for F(4×4, 5×5): Aᵀ = [1 1 1 1 1 1 1 0; 0 1 −1 2 −2 1/2 −1/2 0; 0 1 1 4 4 1/4 1/4 0;
/// 0 1 −1 8 −8 1/8 −1/8 1].
#[derive(Clone, Copy)]
struct At4x8;

impl Matrix<8, 4> for At4x8 {
    #[inline(always)]
    fn apply<const N: usize>(self, [m0, m1, m2, m3, m4, m5, m6, m7]: [Lanes<N>; 8]) -> [Lanes<N>; 4] {
        let (s1, d1, s2, d2, s3, d3) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4, m5 + m6, m5 - m6);
        [
            m0 + s1 + s2 + s3,
            d1 + d2 * 2.0 + d3 * 0.5,
            s1 + s2 * 4.0 + s3 * 0.25,
            d1 + d2 * 8.0 + d3 * 0.125 + m7,
        ]
    }
}

/// `A y` for F(4×4, 5×5) (8×4).
#[derive(Clone, Copy)]
struct A4x8;

impl Matrix<4, 8> for A4x8 {
    #[inline(always)]
    fn apply<const N: usize>(self, [y0, y1, y2, y3]: [Lanes<N>; 4]) -> [Lanes<N>; 8] {
        let (even, odd) = (y0 + y2, y1 + y3);
        let (even2, odd2) = (y0 + y2 * 4.0, y1 * 2.0 + y3 * 8.0);
        let (even_half, odd_half) = (y0 + y2 * 0.25, y1 * 0.5 + y3 * 0.125);
        [
            y0,
            even + odd,
            even - odd,
            even2 + odd2,
            even2 - odd2,
            even_half + odd_half,
            even_half - odd_half,
            y3,
        ]
    }
}

/// `Gᵀ u` for F(4×4, 5×5) (5×8).
#[derive(Clone, Copy)]
struct Gt5x8;

impl Matrix<8, 5> for Gt5x8 {
    #[inline(always)]
    fn apply<const N: usize>(self, [u0, u1, u2, u3, u4, u5, u6, u7]: [Lanes<N>; 8]) -> [Lanes<N>; 5] {
        let (s, d, t, e, p, q) = (u1 + u2, u1 - u2, u3 + u4, u3 - u4, u5 + u6, u5 - u6);
        let s = s * -2.0 / 9.0;
        let d = d * -2.0 / 9.0;
        [
            u0 + s + t / 90.0 + p * 32.0 / 45.0,
            d + e / 45.0 + q * 16.0 / 45.0,
            s + t * 2.0 / 45.0 + p * 8.0 / 45.0,
            d + e * 4.0 / 45.0 + q * 4.0 / 45.0,
            s + t * 8.0 / 45.0 + p * 2.0 / 45.0 + u7,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values in [−1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The direct correlation, summed in f64.
    fn direct(x: &[f32], s: Same, g: &[f32]) -> Vec<f64> {
        let (r, pad) = (s.filter.r(), s.filter.pad() as isize);
        let mut y = vec![0.0f64; s.images * s.co * s.plane()];
        for (k, y) in y.iter_mut().enumerate() {
            let (n, o, i, j) = (k / (s.co * s.plane()), k / s.plane() % s.co, k / s.w % s.h, k % s.w);
            for c in 0..s.ci {
                for (kh, kw) in (0..r).flat_map(|kh| (0..r).map(move |kw| (kh, kw))) {
                    let (a, b) = (i as isize + kh as isize - pad, j as isize + kw as isize - pad);
                    let (Some(a), Some(b)) = (inside(a, s.h), inside(b, s.w)) else { continue };
                    let xv = x[((n * s.ci + c) * s.h + a) * s.w + b] as f64;
                    *y += xv * g[((o * s.ci + c) * r + kh) * r + kw] as f64;
                }
            }
        }
        y
    }

    /// The weight's gradient of [`direct`]: dg[o, c, kh, kw] = Σ dy[n, o, i, j] x[n, c, i − pad
    /// + kh, j − pad + kw], summed in f64.
    fn direct_weight_grad(x: &[f32], s: Same, dy: &[f32]) -> Vec<f64> {
        let (r, pad) = (s.filter.r(), s.filter.pad() as isize);
        let mut exact = vec![0.0f64; s.co * s.ci * r * r];
        for (k, e) in exact.iter_mut().enumerate() {
            let (o, c, kh, kw) = (k / (s.ci * r * r), k / (r * r) % s.ci, k / r % r, k % r);
            for (n, i, j) in (0..s.images).flat_map(|n| (0..s.plane()).map(move |p| (n, p / s.w, p % s.w))) {
                let (a, b) = (i as isize + kh as isize - pad, j as isize + kw as isize - pad);
                let (Some(a), Some(b)) = (inside(a, s.h), inside(b, s.w)) else { continue };
                let d = dy[((n * s.co + o) * s.h + i) * s.w + j] as f64;
                *e += d * x[((n * s.ci + c) * s.h + a) * s.w + b] as f64;
            }
        }
        exact
    }

    /// The bound on [`relative_error`]: measured (2026-12-08) 5e-8 to 1.3e-5 over these shapes,
    /// the largest for F(4×4, 5×5)'s correlation at 256 -> 128 channels (F(4×4, 3×3) at most
    /// 6.6e-6; the F(2×2, 5×5) it replaced, 8.4e-6): the transforms multiply f32 rounding by their
    /// constants.
    const TOLERANCE: f64 = 3e-5;

    /// The largest difference from the f64 sum, relative to the largest value of the sum.
    fn relative_error(found: &[f32], exact: &[f64]) -> f64 {
        assert_eq!(found.len(), exact.len());
        let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = found.iter().zip(exact).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        diff / scale
    }

    /// Odd sides (tiles past the image's edge), channels that are not a multiple of the lanes,
    /// more images than a chunk, one image alone, and `dcgan-tf`'s layer; both filters.
    fn shapes() -> Vec<Same> {
        let f = Filter::F4x5;
        let mut shapes = vec![
            Same { images: 3, ci: 5, co: 18, h: 7, w: 7, filter: f },
            Same { images: 9, ci: 17, co: 3, h: 6, w: 9, filter: f },
            Same { images: 1, ci: 2, co: 2, h: 1, w: 3, filter: f },
            Same { images: 2, ci: 32, co: 16, h: 8, w: 8, filter: f },
            Same { images: 2, ci: 256, co: 128, h: 7, w: 7, filter: f },
        ];
        let f4 = shapes.iter().map(|s| Same { filter: Filter::F4x3, ..*s }).collect::<Vec<_>>();
        shapes.extend(f4);
        shapes
    }

    #[test]
    fn correlate_matches_the_direct_sum() {
        for (n, s) in shapes().into_iter().enumerate() {
            let x = values(s.images * s.ci * s.plane(), n as u64);
            let g = values(s.co * s.ci * s.filter.taps(), 100 + n as u64);
            let error = relative_error(&correlate(&x, s, &g), &direct(&x, s, &g));
            assert!(error < TOLERANCE, "{s:?}: relative error {error}");
        }
    }

    #[test]
    fn weight_grad_matches_the_direct_sum() {
        for (n, s) in shapes().into_iter().enumerate() {
            let x = values(s.images * s.ci * s.plane(), n as u64);
            let dy = values(s.images * s.co * s.plane(), 200 + n as u64);
            let error = relative_error(&weight_grad(&x, s, &dy), &direct_weight_grad(&x, s, &dy));
            assert!(error < TOLERANCE, "{s:?}: relative error {error}");
        }
    }

    #[test]
    fn turned_weights_correlate_the_other_way() {
        // <correlate(x, g), y> = <x, correlate(y, turned(g))>: the input gradient's identity.
        for filter in [Filter::F4x5, Filter::F4x3] {
            let s = Same { images: 2, ci: 3, co: 4, h: 5, w: 7, filter };
            let x = values(s.images * s.ci * s.plane(), 1);
            let y = values(s.images * s.co * s.plane(), 2);
            let g = values(s.co * s.ci * filter.taps(), 3);
            let back = Same { ci: s.co, co: s.ci, ..s };
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
            let forward = dot(&correlate(&x, s, &g), &y);
            let adjoint = dot(&x, &correlate(&y, back, &turned(&g, s.co, s.ci, filter.r())));
            assert!(
                (forward - adjoint).abs() < 1e-4 * forward.abs().max(1.0),
                "{filter:?}: {forward} vs {adjoint}"
            );
        }
    }

    #[test]
    fn both_together_are_each_ones_bits() {
        for images in [1, 5, 19] {
            let s = Same { images, ci: 20, co: 9, h: 7, w: 7, filter: Filter::F4x5 };
            let (x, g) = (values(s.images * s.ci * s.plane(), 7), values(s.co * s.ci * 25, 8));
            let dy = values(s.images * s.co * s.plane(), 9);
            let (y, grad) = correlate_and_weight_grad(&x, s, &g, &dy);
            assert_eq!(y, correlate(&x, s, &g), "{images} images: the correlation");
            assert_eq!(grad, weight_grad(&x, s, &dy), "{images} images: the weight's gradient");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let s = Same { images: 11, ci: 20, co: 9, h: 14, w: 14, filter: Filter::F4x3 };
        let (x, g) = (values(s.images * s.ci * s.plane(), 4), values(s.co * s.ci * 9, 5));
        let dy = values(s.images * s.co * s.plane(), 6);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| (correlate(&x, s, &g), weight_grad(&x, s, &dy)))
        };
        assert_eq!(run(1), run(3));
    }
}
