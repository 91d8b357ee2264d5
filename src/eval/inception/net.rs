//! pytorch-fid's InceptionV3 (`pytorch_fid/inception.py`, `fid_inception_v3`), block for block:
//! the network whose 2048-d pool features every published FID is computed in. Its names are
//! pytorch-fid's state-dict keys (`Mixed_5b.branch1x1.conv.weight`), so a `.pth` file loads
//! without renaming. What the FID variant changes from torchvision's InceptionV3 is kept: the
//! `FIDInceptionA`/`C`/`E_1` average poolings leave padding out of the average, `FIDInceptionE_2`
//! max-pools its last branch.
//!
//! Widths divide by `div` (1 is the real network): the tests run a 1/16-width variant with the same
//! keys, made by `scripts/inception_vs_pytorch_fid.py`.

// The fields carry pytorch-fid's key names (`Mixed_5b`), and burn's derive makes variables of them.
#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, interpolate, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};

/// The side pytorch-fid resizes every image to.
pub const INPUT_SIDE: usize = 299;
/// Width of the pool features at full width.
pub const POOL_FEATURES: usize = 2048;
/// Logits of the weights' classifier (the 2015 TensorFlow graph's 1008 classes).
pub const LOGITS: usize = 1008;

/// A convolution (no bias), BatchNorm (eps 0.001) and ReLU: torchvision's `BasicConv2d`.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    conv: Conv2d,
    bn: BatchNorm,
}

/// Kernel `[kh, kw]`, stride, padding `[ph, pw]`.
#[derive(Clone, Copy)]
struct Shape {
    kernel: [usize; 2],
    stride: usize,
    pad: [usize; 2],
}

const fn k(kh: usize, kw: usize, ph: usize, pw: usize) -> Shape {
    Shape { kernel: [kh, kw], stride: 1, pad: [ph, pw] }
}
const ONE: Shape = k(1, 1, 0, 0);
const THREE: Shape = k(3, 3, 0, 0);
const THREE_SAME: Shape = k(3, 3, 1, 1);
const THREE_DOWN: Shape = Shape { kernel: [3, 3], stride: 2, pad: [0, 0] };

impl BasicConv2d {
    fn new(c_in: usize, c_out: usize, s: Shape, device: &Device) -> Self {
        let [ph, pw] = s.pad;
        let conv = Conv2dConfig::new([c_in, c_out], s.kernel)
            .with_stride([s.stride, s.stride])
            .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
            .with_bias(false)
            .init(device);
        Self { conv, bn: BatchNormConfig::new(c_out).with_epsilon(1e-3).init(device) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

fn avg_pool_3x3_same(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(
        x,
        AvgPoolOptions::new([3, 3]).with_stride([1, 1]).with_padding([1, 1]).with_count_include_pad(false),
    )
}

fn max_pool_3x3(x: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([stride, stride]).with_padding([pad, pad]))
}

/// `FIDInceptionA`: 1x1, 5x5, double 3x3 and pooled branches.
#[derive(Module, Debug)]
pub struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(c_in: usize, pool: usize, d: usize, device: &Device) -> Self {
        let c = |n: usize| n / d;
        Self {
            branch1x1: BasicConv2d::new(c_in, c(64), ONE, device),
            branch5x5_1: BasicConv2d::new(c_in, c(48), ONE, device),
            branch5x5_2: BasicConv2d::new(c(48), c(64), k(5, 5, 2, 2), device),
            branch3x3dbl_1: BasicConv2d::new(c_in, c(64), ONE, device),
            branch3x3dbl_2: BasicConv2d::new(c(64), c(96), THREE_SAME, device),
            branch3x3dbl_3: BasicConv2d::new(c(96), c(96), THREE_SAME, device),
            branch_pool: BasicConv2d::new(c_in, c(pool), ONE, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self.branch5x5_2.forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_1.forward(x.clone());
        let b3 = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(b3));
        let pool = self.branch_pool.forward(avg_pool_3x3_same(x));
        Tensor::cat(vec![b1, b5, b3, pool], 1)
    }
}

/// `InceptionB`: the grid reduction 35 -> 17.
#[derive(Module, Debug)]
pub struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    fn new(c_in: usize, d: usize, device: &Device) -> Self {
        let c = |n: usize| n / d;
        Self {
            branch3x3: BasicConv2d::new(c_in, c(384), THREE_DOWN, device),
            branch3x3dbl_1: BasicConv2d::new(c_in, c(64), ONE, device),
            branch3x3dbl_2: BasicConv2d::new(c(64), c(96), THREE_SAME, device),
            branch3x3dbl_3: BasicConv2d::new(c(96), c(96), THREE_DOWN, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3.forward(x.clone());
        let dbl = self.branch3x3dbl_1.forward(x.clone());
        let dbl = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(dbl));
        Tensor::cat(vec![b3, dbl, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// `FIDInceptionC`: factorised 7x7 branches of `c7` channels.
#[derive(Module, Debug)]
pub struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7_1: BasicConv2d,
    branch7x7_2: BasicConv2d,
    branch7x7_3: BasicConv2d,
    branch7x7dbl_1: BasicConv2d,
    branch7x7dbl_2: BasicConv2d,
    branch7x7dbl_3: BasicConv2d,
    branch7x7dbl_4: BasicConv2d,
    branch7x7dbl_5: BasicConv2d,
    branch_pool: BasicConv2d,
}

const ROW7: Shape = k(1, 7, 0, 3);
const COL7: Shape = k(7, 1, 3, 0);

impl InceptionC {
    fn new(c_in: usize, c7: usize, d: usize, device: &Device) -> Self {
        let (c, c7) = (|n: usize| n / d, c7 / d);
        Self {
            branch1x1: BasicConv2d::new(c_in, c(192), ONE, device),
            branch7x7_1: BasicConv2d::new(c_in, c7, ONE, device),
            branch7x7_2: BasicConv2d::new(c7, c7, ROW7, device),
            branch7x7_3: BasicConv2d::new(c7, c(192), COL7, device),
            branch7x7dbl_1: BasicConv2d::new(c_in, c7, ONE, device),
            branch7x7dbl_2: BasicConv2d::new(c7, c7, COL7, device),
            branch7x7dbl_3: BasicConv2d::new(c7, c7, ROW7, device),
            branch7x7dbl_4: BasicConv2d::new(c7, c7, COL7, device),
            branch7x7dbl_5: BasicConv2d::new(c7, c(192), ROW7, device),
            branch_pool: BasicConv2d::new(c_in, c(192), ONE, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = self.branch7x7_1.forward(x.clone());
        let b7 = self.branch7x7_3.forward(self.branch7x7_2.forward(b7));
        let mut dbl = self.branch7x7dbl_1.forward(x.clone());
        for conv in [&self.branch7x7dbl_2, &self.branch7x7dbl_3, &self.branch7x7dbl_4, &self.branch7x7dbl_5] {
            dbl = conv.forward(dbl);
        }
        let pool = self.branch_pool.forward(avg_pool_3x3_same(x));
        Tensor::cat(vec![b1, b7, dbl, pool], 1)
    }
}

/// `InceptionD`: the grid reduction 17 -> 8.
#[derive(Module, Debug)]
pub struct InceptionD {
    branch3x3_1: BasicConv2d,
    branch3x3_2: BasicConv2d,
    branch7x7x3_1: BasicConv2d,
    branch7x7x3_2: BasicConv2d,
    branch7x7x3_3: BasicConv2d,
    branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    fn new(c_in: usize, d: usize, device: &Device) -> Self {
        let c = |n: usize| n / d;
        Self {
            branch3x3_1: BasicConv2d::new(c_in, c(192), ONE, device),
            branch3x3_2: BasicConv2d::new(c(192), c(320), THREE_DOWN, device),
            branch7x7x3_1: BasicConv2d::new(c_in, c(192), ONE, device),
            branch7x7x3_2: BasicConv2d::new(c(192), c(192), ROW7, device),
            branch7x7x3_3: BasicConv2d::new(c(192), c(192), COL7, device),
            branch7x7x3_4: BasicConv2d::new(c(192), c(192), THREE_DOWN, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3_2.forward(self.branch3x3_1.forward(x.clone()));
        let mut b7 = self.branch7x7x3_1.forward(x.clone());
        for conv in [&self.branch7x7x3_2, &self.branch7x7x3_3, &self.branch7x7x3_4] {
            b7 = conv.forward(b7);
        }
        Tensor::cat(vec![b3, b7, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// How an `InceptionE` block pools its last branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EPool {
    /// `FIDInceptionE_1` (Mixed_7b): average, padding left out of the average.
    Average,
    /// `FIDInceptionE_2` (Mixed_7c): max (a bug of the 2015 TensorFlow graph, kept by every FID).
    Max,
}

/// `FIDInceptionE_1` / `_2`: the expanded 8x8 blocks.
#[derive(Module, Debug)]
pub struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    #[module(skip)]
    pool: EPool,
}

const ROW3: Shape = k(1, 3, 0, 1);
const COL3: Shape = k(3, 1, 1, 0);

impl InceptionE {
    fn new(c_in: usize, pool: EPool, d: usize, device: &Device) -> Self {
        let c = |n: usize| n / d;
        Self {
            branch1x1: BasicConv2d::new(c_in, c(320), ONE, device),
            branch3x3_1: BasicConv2d::new(c_in, c(384), ONE, device),
            branch3x3_2a: BasicConv2d::new(c(384), c(384), ROW3, device),
            branch3x3_2b: BasicConv2d::new(c(384), c(384), COL3, device),
            branch3x3dbl_1: BasicConv2d::new(c_in, c(448), ONE, device),
            branch3x3dbl_2: BasicConv2d::new(c(448), c(384), THREE_SAME, device),
            branch3x3dbl_3a: BasicConv2d::new(c(384), c(384), ROW3, device),
            branch3x3dbl_3b: BasicConv2d::new(c(384), c(384), COL3, device),
            branch_pool: BasicConv2d::new(c_in, c(192), ONE, device),
            pool,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(vec![self.branch3x3_2a.forward(b3.clone()), self.branch3x3_2b.forward(b3)], 1);
        let dbl = self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone()));
        let dbl = Tensor::cat(
            vec![self.branch3x3dbl_3a.forward(dbl.clone()), self.branch3x3dbl_3b.forward(dbl)],
            1,
        );
        let pooled = match self.pool {
            EPool::Average => avg_pool_3x3_same(x),
            EPool::Max => max_pool_3x3(x, 1, 1),
        };
        Tensor::cat(vec![b1, b3, dbl, self.branch_pool.forward(pooled)], 1)
    }
}

/// The whole network, named as pytorch-fid's state dict names it.
#[derive(Module, Debug)]
pub struct FidInceptionV3 {
    Conv2d_1a_3x3: BasicConv2d,
    Conv2d_2a_3x3: BasicConv2d,
    Conv2d_2b_3x3: BasicConv2d,
    Conv2d_3b_1x1: BasicConv2d,
    Conv2d_4a_3x3: BasicConv2d,
    Mixed_5b: InceptionA,
    Mixed_5c: InceptionA,
    Mixed_5d: InceptionA,
    Mixed_6a: InceptionB,
    Mixed_6b: InceptionC,
    Mixed_6c: InceptionC,
    Mixed_6d: InceptionC,
    Mixed_6e: InceptionC,
    Mixed_7a: InceptionD,
    Mixed_7b: InceptionE,
    Mixed_7c: InceptionE,
    fc: Linear,
}

impl FidInceptionV3 {
    /// The network at `1/div` of every width (the input's 3 channels and the 1008 logits stay),
    /// weights zero until loaded. `div` must divide every width (1, 2, 4, 8 or 16).
    pub fn new(div: usize, device: &Device) -> Self {
        let c = |n: usize| n / div;
        Self {
            Conv2d_1a_3x3: BasicConv2d::new(3, c(32), THREE_DOWN, device),
            Conv2d_2a_3x3: BasicConv2d::new(c(32), c(32), THREE, device),
            Conv2d_2b_3x3: BasicConv2d::new(c(32), c(64), THREE_SAME, device),
            Conv2d_3b_1x1: BasicConv2d::new(c(64), c(80), ONE, device),
            Conv2d_4a_3x3: BasicConv2d::new(c(80), c(192), THREE, device),
            Mixed_5b: InceptionA::new(c(192), 32, div, device),
            Mixed_5c: InceptionA::new(c(256), 64, div, device),
            Mixed_5d: InceptionA::new(c(288), 64, div, device),
            Mixed_6a: InceptionB::new(c(288), div, device),
            Mixed_6b: InceptionC::new(c(768), 128, div, device),
            Mixed_6c: InceptionC::new(c(768), 160, div, device),
            Mixed_6d: InceptionC::new(c(768), 160, div, device),
            Mixed_6e: InceptionC::new(c(768), 192, div, device),
            Mixed_7a: InceptionD::new(c(768), div, device),
            Mixed_7b: InceptionE::new(c(1280), EPool::Average, div, device),
            Mixed_7c: InceptionE::new(c(2048), EPool::Max, div, device),
            fc: LinearConfig::new(c(POOL_FEATURES), LOGITS).init(device),
        }
    }

    /// Images [b, 3, h, w] in [0, 1] -> pool features [b, 2048 / div], as pytorch-fid's
    /// `InceptionV3([3], resize_input=True, normalize_input=True)`: bilinear resize to 299x299
    /// (`align_corners=False`, no antialiasing), scaled to [-1, 1], the blocks, global average.
    pub fn pool_features(&self, images: Tensor<4>) -> Tensor<2> {
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([INPUT_SIDE, INPUT_SIDE]);
        let x = interpolate(images, options) * 2.0 - 1.0;
        let x = self.Conv2d_2b_3x3.forward(self.Conv2d_2a_3x3.forward(self.Conv2d_1a_3x3.forward(x)));
        let x = max_pool_3x3(x, 2, 0);
        let x = self.Conv2d_4a_3x3.forward(self.Conv2d_3b_1x1.forward(x));
        let x = max_pool_3x3(x, 2, 0);
        let x = self.Mixed_5d.forward(self.Mixed_5c.forward(self.Mixed_5b.forward(x)));
        let x = self.Mixed_6a.forward(x);
        let x = self.Mixed_6e.forward(self.Mixed_6d.forward(self.Mixed_6c.forward(self.Mixed_6b.forward(x))));
        let x = self.Mixed_7c.forward(self.Mixed_7b.forward(self.Mixed_7a.forward(x)));
        let [b, c, h, w] = x.dims();
        x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c])
    }

    /// Pool features -> the classifier's logits without its bias: torch-fidelity's
    /// `logits_unbiased`, which its Inception Score takes (as the original TensorFlow code did).
    pub fn logits_unbiased(&self, features: Tensor<2>) -> Tensor<2> {
        features.matmul(self.fc.weight.val())
    }
}
