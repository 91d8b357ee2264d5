//! Convolutions and transposed convolutions as backend operations: a chunk of whole images at a
//! time through one large matrix product.
//!
//! burn-flex computes a convolution image by image, in tiles of output positions, each tile its own
//! small im2col buffer and `gemm` call; its backward passes are built from convolutions too, the
//! weight's gradient as a convolution whose "kernel" is the output gradient, a product whose result
//! has as many columns as the kernel has taps (25 for 5×5). On TensorFlow's DCGAN step (batch 256)
//! those products ran at a third of what this machine's `gemm` reaches on large ones, and the
//! convolutions are nearly all of the step's arithmetic.
//!
//! Here a convolution and its transpose share one geometry ([`Plan`]): a "big" side (a
//! convolution's input, a transposed convolution's output) `[cb, hb, wb]`, a "small" side (the
//! convolution's output, the transposed convolution's input) `[cs, hs, ws]`, and a k×k window with a
//! stride and a padding: small position (i, j) sees big positions (i·s − p + kh, j·s − p + kw). For
//! a chunk of images, [`Plan::gather`] lays each small position's window out as one row of a
//! `[positions, cb·k·k]` matrix (im2col) and [`Plan::scatter`] adds such rows back (col2im). The
//! weight, `[cs, cb, k, k]` for both ops as burn lays them out, is a `[cs, cb·k·k]` matrix `W`. Then
//! - big to small (a convolution; a transposed convolution's input gradient): `rows · Wᵀ`;
//! - small to big (a transposed convolution; a convolution's input gradient): `small · W`, scattered;
//! - the weight's gradient (both): `smallᵀ · rows`, summed over the chunks.
//!
//! Each product has a chunk of the batch's positions (thousands) as one of its sides. The chunk
//! holds as many whole images as fit [`CHUNK_FLOATS`] of im2col rows; it depends on the shapes only,
//! never on the thread count, and gemm does not split a sum across threads, so results are the same
//! bits with any number of threads. They are not burn's bits: the sums run in another order (within
//! float rounding; the tests below compare with burn's convolutions and their gradients).
//!
//! Where a window asks for [`Algorithm::Winograd`], the stride-1 5×5 and 3×3 windows that keep the
//! size take Winograd's minimal filtering instead ([`winograd`]): fewer multiplications, other
//! sums.
//!
//! Backends: Flex (with and without `Autodiff`), f32, square kernels, no dilation or groups;
//! anything else, and the wgpu backend (`Cube`, feature `gpu`), takes the composed default bodies:
//! burn's own convolutions.

use super::dense::{Order, Split, all_f32, product};
use super::on_wide_lanes;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Tensor, TensorData};
use channel_last::Columns;
use rayon::prelude::*;
use rows::Runs;
use std::mem::MaybeUninit;
use transpose::transpose;

mod channel_last;
mod rows;
mod transpose;
mod winograd;

/// A square window's stride and padding (both sides), a transposed convolution's extra rows and
/// columns at the far end of its output (`padding_out`; 0 for a convolution), and the algorithm
/// its products take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub stride: usize,
    pub padding: usize,
    pub padding_out: usize,
    pub algorithm: Algorithm,
}

/// How a convolution's sums are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// im2col rows, one product per chunk of images: every output the direct sum.
    #[default]
    Direct,
    /// Winograd's minimal filtering ([`winograd`]) for the windows of stride 1 that keep the size,
    /// 5×5 (F(4×4, 5×5): 4.8x fewer multiplications on 7×7 maps) and 3×3 (F(4×4, 3×3)), with 16
    /// channels or more on both sides: the sums reassociated (other bits). Other windows direct.
    Winograd,
}

impl Window {
    /// A convolution's window, computed directly.
    pub fn conv(stride: usize, padding: usize) -> Self {
        Self { stride, padding, padding_out: 0, algorithm: Algorithm::Direct }
    }

    /// A transposed convolution's window, computed directly.
    pub fn transpose(stride: usize, padding: usize, padding_out: usize) -> Self {
        Self { stride, padding, padding_out, algorithm: Algorithm::Direct }
    }

    /// The same window computed by `algorithm` where it applies.
    pub fn with(self, algorithm: Algorithm) -> Self {
        Self { algorithm, ..self }
    }
}

/// `conv2d(x, weight) + bias`: x `[batch, c_in, h, w]`, weight `[c_out, c_in, k, k]`, bias
/// `[c_out]`, the window's stride and padding on both axes (its `padding_out` is not used).
/// Differentiable on an autodiff device.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, window: Window) -> Tensor<4> {
    let window = Window { padding_out: 0, ..window };
    let y = Tensor::from_dispatch(<Dispatch as ConvOps>::gantry_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        window,
    ));
    with_bias(y, bias)
}

/// [`conv2d`] when its output (before the bias) is already known: `output`, computed by
/// [`conv2d`] from the same input values, weight and window, plus the bias, with the backward step
/// of [`conv2d`] on an autodiff device, so that a second pass over the same values skips the
/// product. An `output` of another shape than the convolution's is not taken: the convolution is
/// computed.
pub fn conv2d_known(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    window: Window,
    output: Tensor<4>,
) -> Tensor<4> {
    let window = Window { padding_out: 0, ..window };
    let ([b, _, h, w], [c, _, k, _]) = (x.dims(), weight.dims());
    let (stride, padding) = (window.stride, window.padding);
    let side = |n: usize| (n + 2 * padding).checked_sub(k).map(|n| n / stride.max(1) + 1);
    if Some(output.dims()) != side(h).zip(side(w)).map(|(oh, ow)| [b, c, oh, ow]) {
        return conv2d(x, weight, bias, window);
    }
    let y = Tensor::from_dispatch(<Dispatch as ConvOps>::gantry_conv2d_known(
        x.into_dispatch(),
        weight.into_dispatch(),
        output.into_dispatch(),
        window,
    ));
    with_bias(y, bias)
}

/// `y + bias` on y's channel axis (the bias [`conv2d`] adds).
pub fn with_bias(y: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    match bias {
        Some(bias) => {
            let c = bias.dims()[0];
            y + bias.reshape([1, c, 1, 1])
        }
        None => y,
    }
}

/// The transposed convolution (no bias): x `[batch, c_in, h, w]`, weight `[c_in, c_out, k, k]`
/// -> `[batch, c_out, (h − 1)·stride − 2·padding + k + padding_out, ...]`. Differentiable on an
/// autodiff device.
pub fn conv_transpose2d(x: Tensor<4>, weight: Tensor<4>, window: Window) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvOps>::gantry_conv_transpose2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        window,
    ))
}

fn conv_options(w: Window) -> ConvOptions<2> {
    ConvOptions::new([w.stride; 2], [w.padding; 2], [1, 1], 1)
}

fn transpose_options(w: Window) -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new([w.stride; 2], [w.padding; 2], [w.padding_out; 2], [1, 1], 1)
}

/// The backend operations behind [`conv2d`] and [`conv_transpose2d`]. The default bodies are
/// burn's own convolutions and their gradients (any backend); Flex overrides them, and `Autodiff`
/// adds the backward passes.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait ConvOps: Backend {
    /// The convolution: x `[n, c_in, h, w]`, weight `[c_out, c_in, k, k]`.
    fn gantry_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, conv_options(window))
    }

    /// The convolution whose output is known (`output`, from the same input values and weight):
    /// that output; on an autodiff backend with the convolution's backward step.
    fn gantry_conv2d_known(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        let _ = (x, weight, window);
        output
    }

    /// The convolution's input gradient from its output gradient `grad`.
    fn gantry_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, conv_options(window))
    }

    /// The convolution's weight gradient from its output gradient `grad`.
    fn gantry_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, conv_options(window))
    }

    /// The transposed convolution: x `[n, c_in, h, w]`, weight `[c_in, c_out, k, k]`.
    fn gantry_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d(x, weight, None, transpose_options(window))
    }

    /// The transposed convolution's input gradient from its output gradient `grad`.
    fn gantry_conv_transpose2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        let _ = x;
        Self::conv_transpose2d_x_backward(weight, grad, transpose_options(window))
    }

    /// The transposed convolution's weight gradient from its output gradient `grad`.
    fn gantry_conv_transpose2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d_weight_backward(x, weight, grad, transpose_options(window))
    }

    /// The transposed convolution's input and weight gradients (in that order) when both are
    /// wanted: the values of the two operations above, which read the same rows of `grad`.
    fn gantry_conv_transpose2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        transpose_grads_apart::<Self>(x, weight, grad, window)
    }
}

/// A transposed convolution's input and weight gradients, each from its own operation.
fn transpose_grads_apart<B: ConvOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    window: Window,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let gx = B::gantry_conv_transpose2d_x_backward(x.clone(), weight.clone(), grad.clone(), window);
    (gx, B::gantry_conv_transpose2d_weight_backward(x, weight, grad, window))
}

/// im2col rows per chunk of images, at most, in floats (4 MB, about a core's L2 cache): TensorFlow's
/// DCGAN G at batch 256 puts 6 images of 7×7 positions, each 128·5·5 wide, in a chunk, 294 rows for
/// each product.
const CHUNK_FLOATS: usize = 1 << 20;

/// A batch is cut into at least this many chunks (when it has as many images), so that the
/// threads have chunks to share.
const MIN_CHUNKS: usize = 8;

/// The weight's gradient is summed in this many groups of consecutive chunks (each group on one
/// thread, its chunks in order), then the groups in order.
const WEIGHT_GRAD_GROUPS: usize = 8;

/// A batch of `images` cut into chunks of `size` images (the last may have fewer), and the chunks
/// into the groups a weight's gradient is summed in: all of it from the shapes, never the threads.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Chunks {
    images: usize,
    size: usize,
}

impl Chunks {
    /// As many chunks as `floats_per_image` of each image's rows need to stay within
    /// [`CHUNK_FLOATS`], and [`MIN_CHUNKS`] at least, of nearly equal sizes.
    fn new(images: usize, floats_per_image: usize) -> Self {
        let images_fit = (CHUNK_FLOATS / floats_per_image.max(1)).max(1);
        let chunks = images.div_ceil(images_fit).max(MIN_CHUNKS.min(images)).max(1);
        Self { images, size: images.div_ceil(chunks).max(1) }
    }

    fn count(&self) -> usize {
        self.images.div_ceil(self.size)
    }

    /// Chunk `n`'s first image and image count.
    fn images_of(&self, n: usize) -> (usize, usize) {
        (n * self.size, self.size.min(self.images - n * self.size))
    }

    /// The groups the weight's gradient is summed in: [`WEIGHT_GRAD_GROUPS`], or one per chunk.
    fn groups(&self) -> usize {
        WEIGHT_GRAD_GROUPS.min(self.count()).max(1)
    }

    /// The chunks of group `g`, consecutive.
    fn group(&self, g: usize) -> std::ops::Range<usize> {
        let (chunks, groups) = (self.count(), self.groups());
        chunks * g / groups..chunks * (g + 1) / groups
    }

    /// Each group with its block of `out` (`per_image` values an image, its chunks' images), or
    /// with none when there is no `out`.
    fn group_blocks<'a>(
        &self,
        out: Option<&'a mut [f32]>,
        per_image: usize,
    ) -> Vec<(usize, Option<&'a mut [f32]>)> {
        let (mut rest, mut blocks) = (out, Vec::with_capacity(self.groups()));
        for g in 0..self.groups() {
            let images: usize = self.group(g).map(|n| self.images_of(n).1).sum();
            let (block, tail) = rest.take().map(|r| r.split_at_mut(images * per_image)).unzip();
            blocks.push((g, block));
            rest = tail;
        }
        blocks
    }
}

/// The geometry of a convolution seen from both sides (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Plan {
    images: usize,
    /// The big side: a convolution's input, a transposed convolution's output.
    cb: usize,
    hb: usize,
    wb: usize,
    /// The small side: a convolution's output, a transposed convolution's input.
    cs: usize,
    hs: usize,
    ws: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// Images per chunk (the last chunk may have fewer).
    chunk: usize,
}

impl Plan {
    fn new(images: usize, [cb, hb, wb]: [usize; 3], [cs, hs, ws]: [usize; 3], k: usize, w: Window) -> Self {
        let chunk = Chunks::new(images, hs * ws * cb * k * k).size;
        Self { images, cb, hb, wb, cs, hs, ws, k, stride: w.stride, pad: w.padding, chunk }
    }

    /// A convolution of `x` `[n, c, h, w]` by `weight` `[o, c, k, k]`.
    fn conv(x: &[usize], weight: &[usize], w: Window) -> Self {
        let (k, s, p) = (weight[2], w.stride, w.padding);
        let side = |b: usize| (b + 2 * p).saturating_sub(k) / s + 1;
        Self::new(x[0], [x[1], x[2], x[3]], [weight[0], side(x[2]), side(x[3])], k, w)
    }

    /// A transposed convolution of `x` `[n, c, h, w]` by `weight` `[c, o, k, k]`.
    fn transpose(x: &[usize], weight: &[usize], w: Window) -> Self {
        let (k, s, p) = (weight[2], w.stride, w.padding);
        let side = |b: usize| ((b - 1) * s + k + w.padding_out).saturating_sub(2 * p);
        Self::new(x[0], [weight[1], side(x[2]), side(x[3])], [x[1], x[2], x[3]], k, w)
    }

    fn big_len(&self) -> usize {
        self.cb * self.hb * self.wb
    }

    fn positions(&self) -> usize {
        self.hs * self.ws
    }

    fn small_len(&self) -> usize {
        self.cs * self.positions()
    }

    /// The width of an im2col row: cb·k·k.
    fn width(&self) -> usize {
        self.cb * self.k * self.k
    }

    fn big_shape(&self) -> [usize; 4] {
        [self.images, self.cb, self.hb, self.wb]
    }

    fn small_shape(&self) -> [usize; 4] {
        [self.images, self.cs, self.hs, self.ws]
    }

    fn chunks(&self) -> Chunks {
        Chunks { images: self.images, size: self.chunk }
    }

    /// The window positions kw with 0 <= j·s − p + kw < wb: (first, end), and the first one's
    /// big column.
    fn columns(&self, j: usize) -> (usize, usize, usize) {
        let start = (j * self.stride) as isize - self.pad as isize;
        let lo = (-start).max(0) as usize;
        let hi = (self.wb as isize - start).clamp(0, self.k as isize) as usize;
        (lo, hi.max(lo), (start + lo as isize).max(0) as usize)
    }

    /// The big row c, i·s − p + kh, if inside the image.
    fn big_row(&self, i: usize, kh: usize) -> Option<usize> {
        let bi = (i * self.stride + kh) as isize - self.pad as isize;
        (0..self.hb as isize).contains(&bi).then_some(bi as usize)
    }

    /// The runs of the im2col row of small position (i, j) (see [`rows`]), their window rows'
    /// offsets written into `starts`.
    fn runs<'a>(&self, i: usize, j: usize, starts: &'a mut Vec<Option<usize>>) -> Runs<'a> {
        let (lo, hi, first) = self.columns(j);
        starts.clear();
        starts.extend((0..self.k).map(|kh| self.big_row(i, kh).map(|bi| bi * self.wb + first)));
        let channel_len = self.hb * self.wb;
        Runs { k: self.k, lo, hi, starts, channels: self.cb, channel_len }
    }

    /// One image's im2col rows, every value written: `cols[(i·ws + j)·width + (c·k + kh)·k + kw]`
    /// = big[c, i·s − p + kh, j·s − p + kw], 0 outside the image.
    fn gather(&self, big: &[f32], cols: &mut [MaybeUninit<f32>]) {
        let (width, mut starts) = (self.width(), Vec::with_capacity(self.k));
        for i in 0..self.hs {
            for j in 0..self.ws {
                let row = &mut cols[(i * self.ws + j) * width..][..width];
                self.runs(i, j, &mut starts).gather(big, row);
            }
        }
    }

    /// Add one image's im2col rows back where [`Plan::gather`] took them from (col2im), row after
    /// row in order.
    fn scatter(&self, cols: &[f32], big: &mut [f32]) {
        let (width, mut starts) = (self.width(), Vec::with_capacity(self.k));
        for i in 0..self.hs {
            for j in 0..self.ws {
                let row = &cols[(i * self.ws + j) * width..][..width];
                self.runs(i, j, &mut starts).scatter(row, big);
            }
        }
    }

    /// The im2col rows of `images` images from `first` on (of `big`, all images) into `cols`,
    /// their columns in the order `columns`, written without being zeroed first.
    fn gather_chunk(
        &self,
        big: &[f32],
        (first, images): (usize, usize),
        columns: Columns,
        cols: &mut Vec<f32>,
    ) {
        let per_image = self.positions() * self.width();
        assert!(big.len() >= (first + images) * self.big_len(), "a chunk past the batch");
        cols.clear();
        cols.reserve(images * per_image);
        let spare = &mut cols.spare_capacity_mut()[..images * per_image];
        let bigs = big[first * self.big_len()..].chunks_exact(self.big_len());
        let mut scratch = Vec::new();
        for (image_cols, big) in spare.chunks_exact_mut(per_image).zip(bigs) {
            match columns {
                Columns::ChannelFirst => self.gather(big, image_cols),
                Columns::ChannelLast => self.gather_channel_last(big, &mut scratch, image_cols),
            }
        }
        // SAFETY: `gather` wrote every value of each image's rows, images·per_image in all.
        unsafe { cols.set_len(images * per_image) };
    }

    /// The small side of `images` images from `first` on, regrouped by channel: `[cs, images·p]`,
    /// whose column img·p + pos is image img's position pos (the rows of the products below, read
    /// transposed in place).
    fn small_by_channel(&self, small: &[f32], first: usize, images: usize, grouped: &mut Vec<f32>) {
        let len = images * self.small_len();
        grouped.resize(len, 0.0);
        let start = first * self.small_len();
        regroup(&small[start..start + len], images, self.cs, self.positions(), grouped);
    }

    /// Big to small: `small = rows(big) · Wᵀ` for every image, W `[cs, width]`; the chunks side by
    /// side.
    fn small_from_big(&self, big: &[f32], weight: &[f32]) -> Vec<f32> {
        let mut small = vec![0.0f32; self.images * self.small_len()];
        small.par_chunks_mut(self.chunk * self.small_len()).enumerate().for_each_init(
            Vec::new,
            |cols, (n, dst)| {
                let images = dst.len() / self.small_len();
                self.gather_chunk(big, (n * self.chunk, images), Columns::ChannelFirst, cols);
                self.small_of_chunk(cols, weight, dst);
            },
        );
        small
    }

    /// One chunk's small side `dst` (its images') from its im2col rows `cols`: `rows · Wᵀ`.
    fn small_of_chunk(&self, cols: &[f32], weight: &[f32], dst: &mut [f32]) {
        let (p, cs, width) = (self.positions(), self.cs, self.width());
        let images = dst.len() / self.small_len();
        // [images·p, cs] = [images·p, width] · [width, cs], W read transposed in place.
        let out = product(
            images * p,
            cs,
            width,
            cols,
            (width as isize, 1),
            weight,
            (1, width as isize),
            Order::RowMajor,
            Split::Single,
        );
        for (small, rows) in dst.chunks_exact_mut(self.small_len()).zip(out.chunks_exact(p * cs)) {
            transpose(rows, p, cs, small);
        }
    }

    /// Small to big: each image's `rows(small) · W` scattered into a zeroed big side; the chunks
    /// side by side, the rows in the order [`Plan::free_columns`] picks.
    fn big_from_small(&self, small: &[f32], weight: &[f32]) -> Vec<f32> {
        self.big_from_small_in(small, weight, self.free_columns())
    }

    /// [`Plan::big_from_small`] with the rows in the order `columns` (the same bits either way).
    fn big_from_small_in(&self, small: &[f32], weight: &[f32], columns: Columns) -> Vec<f32> {
        let (p, cs, width) = (self.positions(), self.cs, self.width());
        let permuted = (columns == Columns::ChannelLast).then(|| self.weight_in(weight, columns));
        let weight = permuted.as_deref().unwrap_or(weight);
        let mut big = vec![0.0f32; self.images * self.big_len()];
        big.par_chunks_mut(self.chunk * self.big_len()).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(grouped, scratch), (n, dst)| {
                let images = dst.len() / self.big_len();
                self.small_by_channel(small, n * self.chunk, images, grouped);
                // [images·p, width] = [images·p, cs] · [cs, width], the small side's rows read
                // from its channel blocks.
                let cols = product(
                    images * p,
                    width,
                    cs,
                    grouped,
                    (1, (images * p) as isize),
                    weight,
                    (width as isize, 1),
                    Order::RowMajor,
                    Split::Single,
                );
                for (big, cols) in dst.chunks_exact_mut(self.big_len()).zip(cols.chunks_exact(p * width)) {
                    match columns {
                        Columns::ChannelFirst => self.scatter(cols, big),
                        Columns::ChannelLast => self.scatter_channel_last(cols, scratch, big),
                    }
                }
            },
        );
        big
    }

    /// The weight's gradient `[cs, width]`: `Σ rows(small)ᵀ · rows(big)`, summed chunk after chunk
    /// within [`WEIGHT_GRAD_GROUPS`] groups side by side, then group after group.
    fn weight_grad(&self, big: &[f32], small: &[f32]) -> Vec<f32> {
        self.weight_grad_and(big, small, None, self.free_columns())
    }

    /// A transposed convolution's input gradient (`small_from_big` of the output gradient `big`)
    /// and weight gradient (`weight_grad(big, small)`), each chunk's rows gathered once for both:
    /// the same bits as the two apart.
    fn small_and_weight_grad(&self, big: &[f32], small: &[f32], weight: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut out = vec![0.0f32; self.images * self.small_len()];
        let grad = self.weight_grad_and(big, small, Some((&mut out, weight)), Columns::ChannelFirst);
        (out, grad)
    }

    /// The weight's gradient from rows in the order `columns` (the same bits either way), the
    /// groups of chunks side by side; with `input` (the input gradient's buffer and the weight)
    /// also `small_from_big(big)` from the same rows, which then keep [`Plan::gather`]'s order (the
    /// input gradient's product sums over their columns).
    fn weight_grad_and(
        &self,
        big: &[f32],
        small: &[f32],
        input: Option<(&mut [f32], &[f32])>,
        columns: Columns,
    ) -> Vec<f32> {
        let columns = if input.is_some() { Columns::ChannelFirst } else { columns };
        let (out, weight) = input.unzip();
        let chunks = self.chunks();
        let sums: Vec<Vec<f32>> = chunks
            .group_blocks(out, self.small_len())
            .into_par_iter()
            .map(|(g, block)| {
                let (mut cols, mut grouped) = (Vec::new(), Vec::new());
                let mut sum = vec![0.0f32; self.cs * self.width()];
                let mut dsts = block.map(|b| b.chunks_mut(self.chunk * self.small_len()));
                for n in chunks.group(g) {
                    let (first, images) = chunks.images_of(n);
                    self.gather_chunk(big, (first, images), columns, &mut cols);
                    if let (Some(dsts), Some(weight)) = (dsts.as_mut(), weight) {
                        let dst = dsts.next().expect("one block of the output per chunk");
                        self.small_of_chunk(&cols, weight, dst);
                    }
                    self.add_weight_part(small, first, images, &cols, &mut grouped, &mut sum);
                }
                sum
            })
            .collect();
        let sum = sum_in_order(sums, self.cs * self.width());
        match columns {
            Columns::ChannelFirst => sum,
            Columns::ChannelLast => self.weight_in(&sum, Columns::ChannelFirst),
        }
    }

    /// `sum += rows(small)ᵀ · cols` for the chunk of `images` images from `first` on, `cols` its
    /// rows of the big side (`grouped`: scratch for its small side by channel).
    fn add_weight_part(
        &self,
        small: &[f32],
        first: usize,
        images: usize,
        cols: &[f32],
        grouped: &mut Vec<f32>,
        sum: &mut [f32],
    ) {
        let (p, cs, width) = (self.positions(), self.cs, self.width());
        self.small_by_channel(small, first, images, grouped);
        // [cs, width] = [cs, images·p] · [images·p, width].
        let part = product(
            cs,
            width,
            images * p,
            grouped,
            ((images * p) as isize, 1),
            cols,
            (width as isize, 1),
            Order::RowMajor,
            Split::Single,
        );
        sum.iter_mut().zip(&part).for_each(|(s, v)| *s += v);
    }
}

/// The groups' sums added in order into one of `len` values.
fn sum_in_order(sums: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0.0f32; len];
    for sum in sums {
        total.iter_mut().zip(&sum).for_each(|(t, v)| *t += v);
    }
    total
}

/// `[a, b, run]` to `[b, a, run]`: runs of `run` values regrouped, e.g. a chunk's images of
/// channels into channels of images and back. Copies of whole runs (a feature map's positions),
/// where the products' own layouts would need a transpose value by value.
fn regroup(src: &[f32], a: usize, b: usize, run: usize, dst: &mut [f32]) {
    let (src, dst) = (&src[..a * b * run], &mut dst[..a * b * run]);
    for (i, block) in src.chunks_exact(b * run).enumerate() {
        for (j, values) in block.chunks_exact(run).enumerate() {
            dst[(j * a + i) * run..][..run].copy_from_slice(values);
        }
    }
}

/// The wgpu backend (and any other CubeCL runtime) takes the composed default bodies.
#[cfg(feature = "gpu")]
impl ConvOps for burn::backend::Cube {}

/// Whether the fast path applies: f32, 4-d tensors, a square kernel whose channels match x's
/// (`x_channels_at`: 1 for a convolution's weight `[o, c, k, k]`, 0 for a transposed one's), and
/// a window that fits the input.
fn fits(x: &FloatTensor<Flex>, weight: &FloatTensor<Flex>, x_channels_at: usize, window: Window) -> bool {
    let (xs, ws) = (x.shape(), weight.shape());
    all_f32(&[x, weight])
        && xs.num_dims() == 4
        && ws.num_dims() == 4
        && ws[2] == ws[3]
        && ws[x_channels_at] == xs[1]
        && xs.num_elements() > 0
        && ws.num_elements() > 0
        && window.stride > 0
        && xs[2] + 2 * window.padding >= ws[2]
        && xs[3] + 2 * window.padding >= ws[2]
        && (x_channels_at == 1
            || (xs[2] - 1) * window.stride + ws[2] + window.padding_out > 2 * window.padding)
}

/// Whether a convolution's output gradient is f32 and has the output's shape.
fn conv_grad_fits(
    x: &FloatTensor<Flex>,
    weight: &FloatTensor<Flex>,
    grad: &FloatTensor<Flex>,
    w: Window,
) -> bool {
    all_f32(&[grad]) && grad.shape().dims::<4>() == Plan::conv(&x.shape(), &weight.shape(), w).small_shape()
}

/// Whether a transposed convolution's output gradient is f32 and has the output's shape.
fn transpose_grad_fits(
    x: &FloatTensor<Flex>,
    weight: &FloatTensor<Flex>,
    grad: &FloatTensor<Flex>,
    w: Window,
) -> bool {
    all_f32(&[grad])
        && grad.shape().dims::<4>() == Plan::transpose(&x.shape(), &weight.shape(), w).big_shape()
}

/// A tensor's values as one contiguous f32 slice, handed to `f`.
fn with_values<R>(t: FloatTensor<Flex>, f: impl FnOnce(&[f32]) -> R) -> R {
    let t = t.to_contiguous();
    let n = t.shape().num_elements();
    f(&t.storage::<f32>()[..n])
}

fn tensor(values: Vec<f32>, shape: [usize; 4]) -> FloatTensor<Flex> {
    FloatTensor::<Flex>::from_data(TensorData::new(values, shape))
}

/// How a layer's sums are computed: the direct plan, or Winograd's where the window asks for it
/// and the algorithm applies ([`winograd::Layer::new`]).
enum Route {
    Direct(Plan),
    Winograd(winograd::Layer),
}

impl Route {
    fn new(plan: Plan, window: Window) -> Self {
        let layer = (window.algorithm == Algorithm::Winograd)
            .then(|| winograd::Layer::new(plan.big_shape(), plan.small_shape(), plan.k, window))
            .flatten();
        layer.map_or(Route::Direct(plan), Route::Winograd)
    }

    fn small_from_big(&self, big: &[f32], weight: &[f32]) -> Vec<f32> {
        match self {
            Route::Direct(plan) => plan.small_from_big(big, weight),
            Route::Winograd(layer) => layer.small_from_big(big, weight),
        }
    }

    fn big_from_small(&self, small: &[f32], weight: &[f32]) -> Vec<f32> {
        match self {
            Route::Direct(plan) => plan.big_from_small(small, weight),
            Route::Winograd(layer) => layer.big_from_small(small, weight),
        }
    }

    fn weight_grad(&self, big: &[f32], small: &[f32]) -> Vec<f32> {
        match self {
            Route::Direct(plan) => plan.weight_grad(big, small),
            Route::Winograd(layer) => layer.weight_grad(big, small),
        }
    }

    fn small_and_weight_grad(&self, big: &[f32], small: &[f32], weight: &[f32]) -> (Vec<f32>, Vec<f32>) {
        match self {
            Route::Direct(plan) => plan.small_and_weight_grad(big, small, weight),
            Route::Winograd(layer) => layer.small_and_weight_grad(big, small, weight),
        }
    }
}

impl ConvOps for Flex {
    fn gantry_conv_transpose2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !fits(&x, &weight, 0, window) || !transpose_grad_fits(&x, &weight, &grad, window) {
            return transpose_grads_apart::<Self>(x, weight, grad, window);
        }
        let plan = Plan::transpose(&x.shape(), &weight.shape(), window);
        let route = Route::new(plan, window);
        let shape = weight.shape().dims::<4>();
        let (gx, gw) = with_values(grad, |gs| {
            with_values(x, |xs| with_values(weight, |ws| route.small_and_weight_grad(gs, xs, ws)))
        });
        (tensor(gx, plan.small_shape()), tensor(gw, shape))
    }

    fn gantry_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        if !fits(&x, &weight, 1, window) || window.padding_out != 0 {
            return Self::conv2d(x, weight, None, conv_options(window));
        }
        let plan = Plan::conv(&x.shape(), &weight.shape(), window);
        let route = Route::new(plan, window);
        let out = with_values(x, |xs| with_values(weight, |ws| route.small_from_big(xs, ws)));
        tensor(out, plan.small_shape())
    }

    fn gantry_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        if !fits(&x, &weight, 1, window) || !conv_grad_fits(&x, &weight, &grad, window) {
            return Self::conv2d_x_backward(x, weight, grad, conv_options(window));
        }
        let plan = Plan::conv(&x.shape(), &weight.shape(), window);
        let route = Route::new(plan, window);
        let out = with_values(grad, |gs| with_values(weight, |ws| route.big_from_small(gs, ws)));
        tensor(out, plan.big_shape())
    }

    fn gantry_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        if !fits(&x, &weight, 1, window) || !conv_grad_fits(&x, &weight, &grad, window) {
            return Self::conv2d_weight_backward(x, weight, grad, conv_options(window));
        }
        let plan = Plan::conv(&x.shape(), &weight.shape(), window);
        let route = Route::new(plan, window);
        let shape = weight.shape().dims::<4>();
        let out = with_values(x, |xs| with_values(grad, |gs| route.weight_grad(xs, gs)));
        tensor(out, shape)
    }

    fn gantry_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        if !fits(&x, &weight, 0, window) {
            return Self::conv_transpose2d(x, weight, None, transpose_options(window));
        }
        let plan = Plan::transpose(&x.shape(), &weight.shape(), window);
        let route = Route::new(plan, window);
        let out = with_values(x, |xs| with_values(weight, |ws| route.big_from_small(xs, ws)));
        tensor(out, plan.big_shape())
    }

    fn gantry_conv_transpose2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        if !fits(&x, &weight, 0, window) || !transpose_grad_fits(&x, &weight, &grad, window) {
            return Self::conv_transpose2d_x_backward(weight, grad, transpose_options(window));
        }
        let plan = Plan::transpose(&x.shape(), &weight.shape(), window);
        let route = Route::new(plan, window);
        let out = with_values(grad, |gs| with_values(weight, |ws| route.small_from_big(gs, ws)));
        tensor(out, plan.small_shape())
    }

    fn gantry_conv_transpose2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        if !fits(&x, &weight, 0, window) || !transpose_grad_fits(&x, &weight, &grad, window) {
            return Self::conv_transpose2d_weight_backward(x, weight, grad, transpose_options(window));
        }
        let plan = Plan::transpose(&x.shape(), &weight.shape(), window);
        let route = Route::new(plan, window);
        let shape = weight.shape().dims::<4>();
        let out = with_values(grad, |gs| with_values(x, |xs| route.weight_grad(gs, xs)));
        tensor(out, shape)
    }
}

/// Which of the two operations a backward step belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Conv,
    Transpose,
}

/// The backward step of either operation; its state: the saved input and weight, the window.
#[derive(Debug)]
struct ConvBackward(Kind);

impl<B: Backend + ConvOps> Backward<B, 2> for ConvBackward {
    type State = (NodeId, NodeId, Window);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let (x_state, weight_state, window) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        if let (Kind::Transpose, Some(node_x), Some(node_weight)) = (self.0, &node_x, &node_weight) {
            let (gx, gw) = B::gantry_conv_transpose2d_backward(x, weight, grad, window);
            grads.register::<B>(node_x.id, gx);
            grads.register::<B>(node_weight.id, gw);
            return;
        }
        if let Some(node) = node_x {
            let gx = match self.0 {
                Kind::Conv => B::gantry_conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), window),
                Kind::Transpose => {
                    B::gantry_conv_transpose2d_x_backward(x.clone(), weight.clone(), grad.clone(), window)
                }
            };
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = node_weight {
            let gw = match self.0 {
                Kind::Conv => B::gantry_conv2d_weight_backward(x, weight, grad, window),
                Kind::Transpose => B::gantry_conv_transpose2d_weight_backward(x, weight, grad, window),
            };
            grads.register::<B>(node.id, gw);
        }
    }
}

/// Either operation on an autodiff backend, with its backward step when x or the weight is tracked;
/// its output `known` (a convolution's, from the same values) when given, else computed.
fn tracked_conv<B: Backend + ConvOps, C: CheckpointStrategy>(
    kind: Kind,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    window: Window,
    known: Option<FloatTensor<B>>,
) -> FloatTensor<Autodiff<B, C>> {
    let forward = |x, weight| match (known, kind) {
        (Some(output), _) => B::gantry_conv2d_known(x, weight, output, window),
        (None, Kind::Conv) => B::gantry_conv2d(x, weight, window),
        (None, Kind::Transpose) => B::gantry_conv_transpose2d(x, weight, window),
    };
    match ConvBackward(kind).prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let output = forward(x.into_primitive(), weight.into_primitive());
            prep.finish((x_state, weight_state, window), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive(), weight.into_primitive())),
    }
}

impl<B: Backend + ConvOps, C: CheckpointStrategy> ConvOps for Autodiff<B, C> {
    fn gantry_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        tracked_conv::<B, C>(Kind::Conv, x, weight, window, None)
    }

    fn gantry_conv2d_known(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        tracked_conv::<B, C>(Kind::Conv, x, weight, window, Some(output.into_primitive()))
    }

    fn gantry_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        window: Window,
    ) -> FloatTensor<Self> {
        tracked_conv::<B, C>(Kind::Transpose, x, weight, window, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use burn::tensor::module;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn filled<const D: usize>(shape: [usize; D], seed: usize, device: &Device) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (((i + seed) * 7919) % 1009) as f32 / 1009.0 - 0.5).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// The largest difference relative to the largest magnitude.
    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst / scale < 1e-5, "{what}: largest difference {worst:e} at scale {scale:e}");
    }

    /// (x shape, weight's k and other channel count, stride, padding, padding_out): the shapes the
    /// networks use (5×5 stride 2 down and up, 5×5 stride 1, 4×4) and odd ones (an odd side, a
    /// window overhanging both edges, 3×3, 1×1).
    /// The last three have 16 channels or more: Winograd's algorithm takes the 5×5 and 3×3 windows
    /// of stride 1.
    const CASES: [([usize; 4], usize, usize, usize, usize, usize); 10] = [
        ([3, 4, 14, 14], 5, 6, 2, 2, 1),
        ([2, 5, 7, 7], 5, 3, 1, 2, 0),
        ([2, 3, 9, 9], 5, 4, 2, 2, 1),
        ([2, 2, 8, 8], 4, 3, 2, 1, 0),
        ([1, 3, 5, 6], 3, 2, 1, 1, 0),
        ([2, 2, 3, 3], 5, 2, 1, 2, 0),
        ([2, 3, 4, 4], 1, 5, 1, 0, 0),
        ([2, 16, 14, 10], 5, 17, 2, 2, 1),
        ([3, 17, 7, 7], 5, 16, 1, 2, 0),
        ([2, 16, 6, 5], 3, 18, 1, 1, 0),
    ];

    /// Forward and both gradients (of a loss with a non-uniform gradient) against burn's, on
    /// either algorithm (Winograd's takes the 5×5 stride-1 cases padded by 2).
    #[test]
    fn convolutions_and_their_gradients_match_burns() {
        for algorithm in [Algorithm::Direct, Algorithm::Winograd] {
            for case in CASES {
                conv_matches_burns(case, algorithm);
            }
        }
    }

    fn conv_matches_burns(
        (shape, k, other, stride, padding, padding_out): ([usize; 4], usize, usize, usize, usize, usize),
        algorithm: Algorithm,
    ) {
        let device = Device::flex().autodiff();
        let c = shape[1];
        // A convolution c -> other.
        let x = filled(shape, 1, &device).require_grad();
        let w = filled([other, c, k, k], 2, &device).require_grad();
        let b = filled([other], 3, &device).require_grad();
        let ours =
            conv2d(x.clone(), w.clone(), Some(b.clone()), Window::conv(stride, padding).with(algorithm));
        let opts = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
        let burns = module::conv2d(x.clone(), w.clone(), Some(b.clone()), opts);
        let what = format!("{algorithm:?} conv {shape:?} k{k} s{stride} p{padding}");
        assert_eq!(ours.dims(), burns.dims(), "{what}");
        let weights = filled(ours.dims(), 4, &device);
        let ga = (ours.clone() * weights.clone()).sum().backward();
        let gb = (burns.clone() * weights).sum().backward();
        close(&values(ours), &values(burns), &format!("{what}: output"));
        for (name, [a, b]) in [("x", [x.grad(&ga), x.grad(&gb)]), ("weight", [w.grad(&ga), w.grad(&gb)])] {
            close(&values(a.unwrap()), &values(b.unwrap()), &format!("{what}: {name} gradient"));
        }
        close(&values(b.grad(&ga).unwrap()), &values(b.grad(&gb).unwrap()), &format!("{what}: bias"));

        // A transposed convolution c -> other.
        let w = filled([c, other, k, k], 5, &device).require_grad();
        let window = Window::transpose(stride, padding, padding_out).with(algorithm);
        let ours = conv_transpose2d(x.clone(), w.clone(), window);
        let opts = ConvTransposeOptions::new([stride; 2], [padding; 2], [padding_out; 2], [1, 1], 1);
        let burns = module::conv_transpose2d(x.clone(), w.clone(), None, opts);
        let what = format!("{algorithm:?} transposed {shape:?} k{k} s{stride} p{padding} out+{padding_out}");
        assert_eq!(ours.dims(), burns.dims(), "{what}");
        let weights = filled(ours.dims(), 6, &device);
        let ga = (ours.clone() * weights.clone()).sum().backward();
        let gb = (burns.clone() * weights).sum().backward();
        close(&values(ours), &values(burns), &format!("{what}: output"));
        for (name, [a, b]) in [("x", [x.grad(&ga), x.grad(&gb)]), ("weight", [w.grad(&ga), w.grad(&gb)])] {
            close(&values(a.unwrap()), &values(b.unwrap()), &format!("{what}: {name} gradient"));
        }
    }

    /// The Winograd algorithm is taken where it applies: on a 5×5 window of stride 1 with 16
    /// channels or more its output differs from the direct sums' in the last bits (the sums
    /// reassociated); with fewer channels, or another window, it is the direct path's to the bit.
    #[test]
    fn winograd_runs_only_where_it_applies() {
        let device = Device::flex();
        let bits = |t: Tensor<4>| values(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let run = |c_out: usize, k: usize, window: Window| {
            let (x, w) = (filled([2, 24, 7, 7], 1, &device), filled([24, c_out, k, k], 2, &device));
            let direct = conv_transpose2d(x.clone(), w.clone(), window);
            bits(direct) == bits(conv_transpose2d(x, w, window.with(Algorithm::Winograd)))
        };
        assert!(!run(16, 5, Window::transpose(1, 2, 0)), "stride 1: Winograd's sums");
        assert!(run(15, 5, Window::transpose(1, 2, 0)), "15 channels: the direct sums");
        assert!(run(16, 5, Window::transpose(2, 2, 1)), "stride 2: the direct sums");
        assert!(run(16, 4, Window::transpose(2, 1, 0)), "4×4: the direct sums");
    }

    /// A batch cut into chunks gives the same outputs and input gradients, bit for bit, as one
    /// chunk (each image is computed alone), and weight gradients within rounding (their sums are
    /// grouped by chunk); and any thread count gives the same bits.
    #[test]
    fn chunks_and_threads_do_not_change_the_results() {
        let window = Window::transpose(2, 2, 1);
        let planned = Plan::transpose(&[7, 6, 7, 7], &[6, 4, 5, 5], window);
        assert_eq!(planned.chunk, 1, "7 images, MIN_CHUNKS chunks at most one image each");
        let whole = Plan { chunk: 7, ..planned };
        let x: Vec<f32> = (0..7 * 6 * 49).map(|i| ((i * 31) % 113) as f32 / 40.0 - 1.4).collect();
        let w: Vec<f32> = (0..6 * 4 * 25).map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5).collect();
        let run = |plan: Plan| {
            let big = plan.big_from_small(&x, &w);
            (plan.small_from_big(&big, &w), plan.weight_grad(&big, &x), big)
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (small, grad, big) = run(whole);
        for chunk in [1, 3, 5] {
            let (s, g, b) = run(Plan { chunk, ..whole });
            assert_eq!(bits(&b), bits(&big), "big side, chunks of {chunk}");
            assert_eq!(bits(&s), bits(&small), "small side, chunks of {chunk}");
            close(&g, &grad, &format!("weight gradient, chunks of {chunk}"));
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (s, g, b) = pool.install(|| run(whole));
            assert_eq!(
                (bits(&s), bits(&g), bits(&b)),
                (bits(&small), bits(&grad), bits(&big)),
                "{threads} threads"
            );
        }
    }

    /// A transposed convolution's two gradients computed together are the bits of each computed
    /// alone, with one chunk, several, and groups of several chunks each.
    #[test]
    fn both_gradients_together_are_each_ones_bits() {
        let window = Window::transpose(2, 2, 1);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for images in [1, 5, 19] {
            let plan = Plan::transpose(&[images, 6, 7, 7], &[6, 4, 5, 5], window);
            let x: Vec<f32> = (0..images * 6 * 49).map(|i| ((i * 31) % 113) as f32 / 40.0 - 1.4).collect();
            let w: Vec<f32> = (0..6 * 4 * 25).map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5).collect();
            let grad: Vec<f32> =
                (0..images * 4 * 196).map(|i| ((i * 13) % 101) as f32 / 50.0 - 1.0).collect();
            for chunk in [1, 2, images] {
                let plan = Plan { chunk, ..plan };
                let (gx, gw) = plan.small_and_weight_grad(&grad, &x, &w);
                let what = format!("{images} images, chunks of {chunk}");
                assert_eq!(bits(&gx), bits(&plan.small_from_big(&grad, &w)), "{what}: input gradient");
                assert_eq!(bits(&gw), bits(&plan.weight_grad(&grad, &x)), "{what}: weight gradient");
            }
        }
    }

    /// Frozen weights (the G step through D) get no gradient; the input still does.
    #[test]
    fn frozen_weights_pass_gradients_to_the_input_only() {
        let device = Device::flex().autodiff();
        let x = filled([2, 3, 8, 8], 1, &device).require_grad();
        let w = filled([4, 3, 5, 5], 2, &device);
        let grads = conv2d(x.clone(), w.clone(), None, Window::conv(2, 2)).sum().backward();
        assert!(x.grad(&grads).is_some());
        assert!(w.grad(&grads).is_none());
    }

    /// A convolution given its known output gives what computing it gives: the output (plus the
    /// bias) and every gradient, bit for bit; an output of the wrong shape is not taken.
    #[test]
    fn a_known_output_gives_the_convolutions_values_and_gradients() {
        let device = Device::flex().autodiff();
        let bits = |t: Tensor<4>| values(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let x = filled([3, 2, 9, 9], 1, &device).require_grad();
        let w = filled([5, 2, 5, 5], 2, &device).require_grad();
        let b = filled([5], 3, &device).require_grad();
        let computed = conv2d(x.clone(), w.clone(), Some(b.clone()), Window::conv(2, 2));
        let plain = conv2d(x.clone().detach(), w.clone().detach(), None, Window::conv(2, 2)).detach();
        let known = conv2d_known(x.clone(), w.clone(), Some(b.clone()), Window::conv(2, 2), plain.clone());
        assert_eq!(bits(known.clone()), bits(computed.clone()), "the output");
        let upstream = filled([3, 5, 5, 5], 4, &device);
        let grads_of = |y: Tensor<4>| {
            let g = (y * upstream.clone()).sum().backward();
            [x.grad(&g).unwrap(), w.grad(&g).unwrap()].map(|t| bits(Tensor::from_inner(t)))
        };
        assert_eq!(grads_of(known), grads_of(computed.clone()), "the input and weight gradients");
        let wrong = plain.narrow(0, 0, 2);
        let taken = conv2d_known(x.clone(), w.clone(), Some(b), Window::conv(2, 2), wrong);
        assert_eq!(bits(taken), bits(computed), "a wrong-shaped output is computed instead");
    }

    /// Rows in channel-last order give col2im and the weight's gradient the bits of rows in
    /// burn's order, on convolutions and transposed convolutions with and without padding.
    #[test]
    fn channel_last_rows_give_the_bits_of_channel_first_rows() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let conv =
            |x: [usize; 4], w: [usize; 4], stride, padding| Plan::conv(&x, &w, Window::conv(stride, padding));
        let plans = [
            conv([3, 4, 14, 14], [6, 4, 5, 5], 2, 2),
            conv([2, 3, 9, 8], [5, 3, 3, 3], 1, 1),
            conv([5, 2, 7, 7], [3, 2, 5, 5], 1, 0),
            Plan::transpose(&[3, 6, 7, 7], &[6, 4, 5, 5], Window::transpose(2, 2, 1)),
            Plan::transpose(&[2, 5, 7, 7], &[5, 3, 5, 5], Window::transpose(1, 2, 0)),
        ];
        for plan in plans {
            assert_eq!(plan.free_columns(), Columns::ChannelLast, "{plan:?}");
            let fill = |n: usize, seed: usize| -> Vec<f32> {
                (0..n).map(|i| ((i * 7919 + seed * 31) % 997) as f32 / 331.0 - 1.5).collect()
            };
            let (big, small) =
                (fill(plan.images * plan.big_len(), 1), fill(plan.images * plan.small_len(), 2));
            let weight = fill(plan.cs * plan.width(), 3);
            for chunk in [1, 2, plan.images] {
                let plan = Plan { chunk, ..plan };
                let [first, last] = [Columns::ChannelFirst, Columns::ChannelLast].map(|c| {
                    (plan.big_from_small_in(&small, &weight, c), plan.weight_grad_and(&big, &small, None, c))
                });
                assert_eq!(bits(&first.0), bits(&last.0), "{plan:?}: col2im");
                assert_eq!(bits(&first.1), bits(&last.1), "{plan:?}: the weight's gradient");
            }
        }
    }
}
