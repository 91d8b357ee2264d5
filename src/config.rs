//! The one configuration of a run: defaults (the classic preset), then a TOML file, then command-line
//! overrides. Unknown keys are rejected, values are validated before anything is trained, and the
//! resolved config is saved in the run folder as `config.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::conv::Algorithm;
pub use crate::objective::Loss;

/// Which data set to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    /// Handwritten digits (LeCun et al.), 60,000 training images.
    Mnist,
    /// Zalando's clothing images in MNIST's format.
    FashionMnist,
    /// CIFAR-10's binary format (`data_batch_1.bin` ... `data_batch_5.bin`): 32x32 colour, 10 classes.
    Cifar10,
    /// A folder of PNG and JPEG files (`data.dir`), class sub-folders as labels (torchvision's
    /// ImageFolder convention), resized and centre-cropped to `data.image_size`.
    Folder,
}

impl Dataset {
    /// The name used in config files, folder names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Cifar10 => "cifar10",
            Dataset::Folder => "folder",
        }
    }

    /// Whether the data set is in MNIST's IDX format (28x28 grey, labels 0-9).
    pub fn is_idx(self) -> bool {
        matches!(self, Dataset::Mnist | Dataset::FashionMnist)
    }

    /// The images' side and channels when the config does not say: MNIST's 28x28 grey, CIFAR's
    /// 32x32 colour, and for a folder 32x32 colour.
    pub fn default_shape(self) -> (usize, usize) {
        match self {
            Dataset::Mnist | Dataset::FashionMnist => (28, 1),
            Dataset::Cifar10 | Dataset::Folder => (32, 3),
        }
    }
}

/// The whole configuration of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub output: OutputConfig,
    pub checkpoint: CheckpointConfig,
    pub eval: EvalConfig,
}

/// Sample quality measured during training by the judge (see `gantry eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Judge the generator every this many iterations and at the end; 0 turns it off (the first
    /// use on a machine trains the judge once, about two minutes).
    pub every: usize,
    /// Generated images per evaluation, compared with as many real test images.
    pub samples: usize,
    /// pytorch-fid's Inception weights file, for `gantry eval RUN --features inception` (before
    /// `$GANTRY_INCEPTION_WEIGHTS` and gantry's cache; `--inception-weights` comes first); a
    /// relative path is taken from the run folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inception_weights: Option<PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { every: 2_000, samples: 2_000, inception_weights: None }
    }
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Data set to train on.
    pub dataset: Dataset,
    /// Folder holding the four IDX files (searched before `$GANTRY_DATA` and the cache), CIFAR-10's
    /// batches, or the image files of `dataset = "folder"`.
    pub dir: Option<PathBuf>,
    /// Side of the square images trained on (default: the data set's, 28 for MNIST, 32 for
    /// CIFAR-10 and folders); a folder's images are resized and centre-cropped to it.
    pub image_size: Option<usize>,
    /// 1 (grey) or 3 (RGB) (default: the data set's); a folder's images are converted to it.
    pub channels: Option<usize>,
    /// Self-conditioning (Liu et al. 2020): group the training images into this many clusters by
    /// k-means on their pixels, and train the conditional GAN (`model.conditional`, with
    /// `model.classes` the same number) on the cluster ids in place of labels; no label is read.
    /// 0: off (a conditional run takes the data set's labels).
    #[serde(skip_serializing_if = "is_zero")]
    pub clusters: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { dataset: Dataset::Mnist, dir: None, image_size: None, channels: None, clusters: 0 }
    }
}

impl DataConfig {
    /// The images' (side, channels): as configured, else the data set's own.
    pub fn shape(&self) -> (usize, usize) {
        let (side, channels) = self.dataset.default_shape();
        (self.image_size.unwrap_or(side), self.channels.unwrap_or(channels))
    }
}

/// The architecture. Keras conventions: `bn_momentum` is the fraction of the old moving
/// average that is kept (Keras 0.8 is PyTorch/burn 0.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Size of the noise vector z ~ N(0, 1).
    pub latent_dim: usize,
    /// Widths of the generator's hidden Dense layers (each followed by LeakyReLU and BatchNorm).
    pub g_hidden: Vec<usize>,
    /// Widths of the discriminator's hidden Dense layers (each followed by LeakyReLU).
    pub d_hidden: Vec<usize>,
    /// Negative slope of every LeakyReLU.
    pub leaky_slope: f64,
    /// Keras-style BatchNorm momentum: the moving average keeps this fraction of its old value.
    pub bn_momentum: f64,
    /// BatchNorm epsilon (Keras default 1e-3).
    pub bn_epsilon: f64,
    /// Spectral normalization of every D layer (Miyato et al. 2018): each weight divided by its
    /// largest singular value, estimated by one power iteration per D update.
    pub d_spectral_norm: bool,
    /// The networks: `mlp` (the Dense networks above) or `dcgan` (convolutional, the keys below).
    pub kind: ModelKind,
    /// dcgan: G's channels, from the feature map the noise is projected to (a quarter of the
    /// image's side) to its last hidden layer: stride-1 transposed convolutions between the first
    /// ones, the last two layers (into the last width, and into the image) double the side.
    pub g_channels: Vec<usize>,
    /// dcgan: channels of D's strided (stride 2) convolutions, each followed by LeakyReLU.
    pub d_channels: Vec<usize>,
    /// dcgan: side of every convolution's square kernel (odd).
    pub kernel_size: usize,
    /// dcgan: dropout rate after each of D's convolutions (0 = none).
    pub d_dropout: f64,
    /// dcgan: BatchNorm after each of D's convolutions but the first (Radford et al. 2016), on
    /// the statistics of the batch D is shown (D is never run for inference).
    pub d_batch_norm: bool,
    /// Conditioning on the images' class: `none`; `concat` (a one-hot label joined to G's noise
    /// and to D's input: Mirza & Osindero 2014; a dcgan's D sees it as one constant feature map
    /// per class); `projection` (G as with concat; D's logit plus the inner product of a learned
    /// class embedding with D's last features: Miyato & Koyama 2018); `acgan` (G as with concat;
    /// D sees the image alone and also classifies it, an auxiliary head trained with cross-entropy
    /// on the real and the fake images' classes, G trained to make its images classified as
    /// asked: Odena et al. 2017).
    pub conditional: Conditioning,
    /// Classes of a conditional run's labels (MNIST and Fashion-MNIST: 10, labels 0-9); at
    /// most 100.
    pub classes: usize,
    /// Self-conditioning within the labels: split each class's training images into this many
    /// clusters by k-means on their pixels, and condition G and D on (class, cluster), `classes
    /// x clusters_per_class` ids, class c's clusters being ids c * clusters_per_class onwards.
    /// What speaks of classes still speaks of the labels: one grid row per class, `gantry sample
    /// --class 7` (its clusters drawn by size), the judge's class accuracy. 0: off (the labels alone).
    #[serde(skip_serializing_if = "is_zero")]
    pub clusters_per_class: usize,
}

/// How the networks see the class label (see [`ModelConfig::conditional`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Conditioning {
    /// Unconditional: G draws any class, D judges any image.
    None,
    /// One-hot labels joined to G's noise and to D's input.
    Concat,
    /// One-hot labels joined to G's noise; D's class embedding projected on its features.
    Projection,
    /// One-hot labels joined to G's noise; D classifies the image beside judging it (AC-GAN).
    Acgan,
}

/// Which networks a run trains (see [`ModelConfig::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Dense networks (the classic simple GAN).
    Mlp,
    /// A transposed-conv G and a strided-conv D (Radford et al. 2016).
    Dcgan,
}

impl ModelConfig {
    /// Whether G and D take the class label.
    pub fn is_conditional(&self) -> bool {
        self.conditional != Conditioning::None
    }
}

/// The (side, channels) of square images of `values` values each: grey (1 channel) when `values`
/// is a perfect square, else RGB (3 channels). The two cannot be confused: 3·s² is never a perfect
/// square. (The networks are built from the values per image alone.)
pub fn square_shape(values: usize) -> (usize, usize) {
    let side = |v: usize| (v as f64).sqrt().round() as usize;
    let grey = side(values);
    if grey * grey == values { (grey, 1) } else { (side(values / 3), 3) }
}

/// The presets `--preset NAME` chooses: the files in the source tree's `presets/` folder, built in
/// (copy one to start a config of your own).
pub const PRESETS: [(&str, &str); 4] = [
    ("classic", include_str!("../presets/classic.toml")),
    ("cdcgan", include_str!("../presets/cdcgan.toml")),
    ("dcgan", include_str!("../presets/dcgan.toml")),
    ("dcgan-tf", include_str!("../presets/dcgan-tf.toml")),
];

/// The model keys that only a dcgan reads.
const DCGAN_KEYS: [&str; 5] =
    ["model.g_channels", "model.d_channels", "model.kernel_size", "model.d_dropout", "model.d_batch_norm"];

/// Switches that enter the architecture only when on, so that the hash of an architecture
/// without them is the one gantry wrote before they existed.
const OFF_UNLESS_SET: [&str; 2] = ["model.d_spectral_norm", "model.d_batch_norm"];

/// The model keys of conditioning, in the architecture only of a conditional run.
const CONDITIONAL_KEYS: [&str; 3] = ["model.conditional", "model.classes", "model.clusters_per_class"];

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            latent_dim: 100,
            g_hidden: vec![256, 512, 1024],
            d_hidden: vec![512, 256],
            leaky_slope: 0.2,
            bn_momentum: 0.8,
            bn_epsilon: 1e-3,
            d_spectral_norm: false,
            kind: ModelKind::Mlp,
            g_channels: vec![256, 128, 64],
            d_channels: vec![64, 128],
            kernel_size: 5,
            d_dropout: 0.0,
            d_batch_norm: false,
            conditional: Conditioning::None,
            classes: 10,
            clusters_per_class: 0,
        }
    }
}

/// The optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Number of iterations (one D update on real, one on fake, one G update each).
    pub iterations: usize,
    /// Images per batch (real and fake batches are each this size).
    pub batch_size: usize,
    /// The objective (see [`crate::train::objective`]): ns, minimax, lsgan, hinge or wgan.
    pub loss: Loss,
    /// D updates per G update, each on a fresh real batch and fresh fakes.
    pub d_steps: usize,
    /// Whether an iteration updates D first (Keras-GAN) or G first (PyTorch-GAN's gan.py).
    pub order: UpdateOrder,
    /// D's target on real images for ns, minimax and lsgan: 1, or less for one-sided label
    /// smoothing (0.9 is the usual choice).
    pub real_label: f32,
    /// How D sees a real and a fake batch: two updates (Keras-GAN), or one update on the sum of
    /// both losses (the PyTorch examples, WGAN).
    pub d_update: DUpdate,
    /// WGAN: D's weights are clipped to [-clip, clip] after each of its updates.
    pub clip: f64,
    /// The optimizer of each network: adam or rmsprop. Default adam, except rmsprop for wgan.
    pub optimizer_d: Option<OptimizerKind>,
    pub optimizer_g: Option<OptimizerKind>,
    /// Learning rates. Default 0.0002, except 0.00005 for wgan's default RMSprop.
    pub lr_d: Option<f64>,
    pub lr_g: Option<f64>,
    /// RMSprop's smoothing constant and epsilon (both networks).
    pub rmsprop_alpha: f32,
    pub rmsprop_epsilon: f32,
    /// Decay of an exponential moving average of G's weights (e.g. 0.999), 0 for none. When on,
    /// grids, evaluation, `gantry sample` and the exported weights use the averaged G.
    pub g_ema: f64,
    /// Weight of an acgan D's auxiliary class term (its cross-entropy, in D's and in G's loss)
    /// against the adversarial term: 1 (Odena et al. 2017) by default, less to let G trade
    /// class certainty for variety. Not written to config.toml at 1, so that the runs before
    /// the key keep their bytes.
    #[serde(skip_serializing_if = "is_one")]
    pub aux_weight: f64,
    /// Differentiable augmentation (DiffAugment, Zhao et al. 2020) of every batch D sees, real
    /// and fake, in D's and G's updates: `translation` (shifts of up to 1/8 of the image, zero
    /// padded) and/or `cutout` (a zeroed square of half the image's side).
    pub augment: Vec<Augment>,
    /// Which implementation computes the step: gantry's fused kernels on its parallel schedule
    /// where they apply, or the sequential reference step on burn's own `Linear`, `BatchNorm`,
    /// `Adam` and `RmsProp`.
    pub kernels: Kernels,
    /// Adam beta1 (both optimizers).
    pub beta1: f32,
    /// Adam beta2 (both optimizers).
    pub beta2: f32,
    /// Adam epsilon (Keras default 1e-7; burn's own default is 1e-5).
    pub adam_epsilon: f32,
    /// Seed of every random stream (weights, data order, noise, fixed sample noise).
    pub seed: u64,
    /// Compute threads; 0 means one per available core.
    pub threads: usize,
    /// Where the tensors live: `cpu`, or a wgpu adapter in a build with the `gpu` feature
    /// (`wgpu`, `wgpu:discrete:0`, `wgpu:cpu`, ...; see [`crate::device`]).
    pub device: crate::device::DeviceChoice,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            iterations: 30_000,
            batch_size: 32,
            loss: Loss::Ns,
            d_steps: 1,
            order: UpdateOrder::DFirst,
            real_label: 1.0,
            d_update: DUpdate::Split,
            clip: 0.01,
            g_ema: 0.0,
            aux_weight: 1.0,
            augment: Vec::new(),
            optimizer_d: None,
            optimizer_g: None,
            lr_d: None,
            lr_g: None,
            rmsprop_alpha: 0.99,
            rmsprop_epsilon: 1e-8,
            kernels: Kernels::Fused,
            beta1: 0.5,
            beta2: 0.999,
            adam_epsilon: 1e-7,
            seed: 0,
            threads: 0,
            device: crate::device::DeviceChoice::Cpu,
        }
    }
}

/// Which network an iteration updates first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    DFirst,
    GFirst,
    /// Both updates from one forward pass of G and D, computed from the same weights
    /// (TensorFlow's DCGAN tutorial): G's fakes (training mode) are D's fake batch and G's loss.
    Simultaneous,
}

/// How D takes a real and a fake batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DUpdate {
    /// Two updates: on the real batch, then on the fakes.
    Split,
    /// One update on the sum of both losses.
    Joint,
}

/// An optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Adam,
    Rmsprop,
}

/// A differentiable augmentation (see [`TrainConfig::augment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    Translation,
    Cutout,
}

/// Which implementation computes the training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kernels {
    Fused,
    Reference,
    /// The fused kernels, with the stride-1 convolutions that keep the size (5×5 padded by 2, as
    /// `dcgan-tf`'s G's first transposed convolution, or 3×3 padded by 1; 16 channels or more) by
    /// Winograd's minimal filtering: 2.1x fewer multiplications on 7×7 maps, the sums
    /// reassociated (other bits than `fused`).
    Winograd,
}

impl Kernels {
    /// Whether gantry's fused kernels compute the step (`fused` or `winograd`).
    pub fn is_fused(self) -> bool {
        self != Kernels::Reference
    }

    /// The algorithm of the fused convolutions.
    pub fn conv_algorithm(self) -> Algorithm {
        match self {
            Kernels::Winograd => Algorithm::Winograd,
            Kernels::Fused | Kernels::Reference => Algorithm::Direct,
        }
    }
}

impl TrainConfig {
    /// D's optimizer: as set, else adam (rmsprop for wgan).
    pub fn optimizer_d(&self) -> OptimizerKind {
        self.optimizer_d.unwrap_or(self.default_optimizer())
    }

    /// G's optimizer: as set, else adam (rmsprop for wgan).
    pub fn optimizer_g(&self) -> OptimizerKind {
        self.optimizer_g.unwrap_or(self.default_optimizer())
    }

    fn default_optimizer(&self) -> OptimizerKind {
        if self.loss == Loss::Wgan { OptimizerKind::Rmsprop } else { OptimizerKind::Adam }
    }

    /// D's learning rate: as set, else 0.0002 (0.00005 for wgan with RMSprop, as in the paper).
    pub fn lr_d(&self) -> f64 {
        self.lr_d.unwrap_or(self.default_lr(self.optimizer_d()))
    }

    /// G's learning rate: as set, else 0.0002 (0.00005 for wgan with RMSprop, as in the paper).
    pub fn lr_g(&self) -> f64 {
        self.lr_g.unwrap_or(self.default_lr(self.optimizer_g()))
    }

    fn default_lr(&self, optimizer: OptimizerKind) -> f64 {
        if self.loss == Loss::Wgan && optimizer == OptimizerKind::Rmsprop { 0.000_05 } else { 0.0002 }
    }

    /// Fill every choice left to its default with the value it takes, so the saved config says
    /// what the run used.
    pub fn resolve_defaults(&mut self) {
        let (lr_d, lr_g) = (self.lr_d(), self.lr_g());
        self.optimizer_d = Some(self.optimizer_d());
        self.optimizer_g = Some(self.optimizer_g());
        self.lr_d = Some(lr_d);
        self.lr_g = Some(lr_g);
    }

    /// Whether this is Keras-GAN's recipe, the one the fused parallel step implements: ns, one
    /// D step before G as two updates, no smoothing, no augmentation, Adam for both, fused
    /// kernels. (An EMA of G is kept beside either step; spectral norm, a model key, is checked
    /// by the step's owner.)
    pub fn is_classic_recipe(&self) -> bool {
        self.augment.is_empty()
            && self.loss == Loss::Ns
            && self.d_steps == 1
            && self.order == UpdateOrder::DFirst
            && self.real_label == 1.0
            && self.d_update == DUpdate::Split
            && self.optimizer_d() == OptimizerKind::Adam
            && self.optimizer_g() == OptimizerKind::Adam
            && self.kernels.is_fused()
    }

    /// SHA-256 of [`Self::recipe`], stored in checkpoints. None for the classic recipe, whose
    /// checkpoints (of every version) carry none.
    pub fn recipe_hash(&self) -> Option<String> {
        if self.is_classic_recipe_ignoring_kernels() && self.g_ema == 0.0 {
            return None;
        }
        let text: String = self.recipe().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        Some(crate::durable::sha256_hex(text.as_bytes()))
    }

    /// [`Self::is_classic_recipe`] on either kernels (the reference kernels keep the same
    /// optimizer state layout: burn's Adam state, as the fused op's).
    fn is_classic_recipe_ignoring_kernels(&self) -> bool {
        let mut t = self.clone();
        t.kernels = Kernels::Fused;
        t.is_classic_recipe()
    }

    /// The recipe keys as `key = value` lines: what a resumed run may not change. Keys added
    /// after the first recipes (EMA, augmentation) are listed only when set, so that the hash of
    /// a recipe without them is the one its older checkpoints carry.
    pub fn recipe(&self) -> Vec<(String, String)> {
        let mut t = self.clone();
        t.resolve_defaults();
        let mut keys = vec![
            ("train.loss".into(), t.loss.name().into()),
            ("train.d_steps".into(), t.d_steps.to_string()),
            ("train.order".into(), format!("{:?}", t.order)),
            ("train.real_label".into(), t.real_label.to_string()),
            ("train.d_update".into(), format!("{:?}", t.d_update)),
            // The clip matters to wgan alone.
            ("train.clip".into(), if t.loss == Loss::Wgan { t.clip.to_string() } else { "-".into() }),
            ("train.optimizer_d".into(), format!("{:?}", t.optimizer_d())),
            ("train.optimizer_g".into(), format!("{:?}", t.optimizer_g())),
        ];
        if t.g_ema != 0.0 {
            keys.push(("train.g_ema".into(), t.g_ema.to_string()));
        }
        if !t.augment.is_empty() {
            keys.push(("train.augment".into(), format!("{:?}", t.augment)));
        }
        if t.aux_weight != 1.0 {
            keys.push(("train.aux_weight".into(), t.aux_weight.to_string()));
        }
        keys
    }
}

/// What is written while training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Write a sample grid at iteration 0 and every this many iterations (and at the last one).
    pub sample_interval: usize,
    /// Rows of the sample grid (a conditional run's grid has one row per class instead).
    pub grid_rows: usize,
    /// Columns of the sample grid.
    pub grid_cols: usize,
    /// Window of the moving average in the smoothed plot.
    pub smoothing_window: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { sample_interval: 200, grid_rows: 5, grid_cols: 5, smoothing_window: 100 }
    }
}

/// When checkpoints are written and how many are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Checkpoint every this many iterations; 0 means every `output.sample_interval`.
    pub every: usize,
    /// Also checkpoint when this many minutes of wall time have passed since the last one (0: off).
    pub every_minutes: f64,
    /// Number of checkpoints kept (the newest; the one a run resumed from is never deleted).
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { every: 0, every_minutes: 10.0, keep: 3 }
    }
}

/// Values given on the command line, applied after the file (or preset), in order: the named
/// flags lowered to their config keys (`crate::flags` defines each flag once, with its key), then
/// `--set KEY=VALUE`. The one path by which anything but a file changes a config.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Named flags as (config key, value), in order.
    pub named: Vec<(&'static str, toml::Value)>,
    /// `--set KEY=VALUE`: any config key, applied last, in order.
    pub settings: Vec<String>,
}

impl Overrides {
    /// These overrides and `key` set to `value` (a library's or a test's named flag). A value TOML
    /// cannot hold (a path that is not UTF-8, an integer beyond i64) is refused naming the key.
    pub fn with(mut self, key: &'static str, value: impl Serialize) -> Result<Self> {
        let value = toml::Value::try_from(value)
            .map_err(|e| Error::config(key, format!("cannot be written in a config file: {e}")))?;
        self.named.push((key, value));
        Ok(self)
    }

    /// The data folder given (`--data`, key `data.dir`), the last one when several.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.named
            .iter()
            .rev()
            .find(|(k, _)| *k == "data.dir")
            .and_then(|(_, v)| v.as_str())
            .map(PathBuf::from)
    }
}

impl Config {
    /// Parse a TOML document; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: origin.to_path_buf(),
            message: cut_long_lines(e.to_string().trim_end()),
        })?;
        Ok(config)
    }

    /// Read and parse a TOML config file. Anything but a regular file of at most
    /// [`MAX_CONFIG_BYTES`] (a folder, a FIFO, `/dev/zero`, a missing or unreadable file) is
    /// refused as bad input, before it is read.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = crate::durable::read_limited(path, MAX_CONFIG_BYTES).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            message: match e {
                crate::durable::ReadRefused::TooLarge(n) => {
                    format!("is {n} bytes; a config file is at most {MAX_CONFIG_BYTES}")
                }
                other => format!("cannot be read: {other}"),
            },
        })?;
        let text = String::from_utf8(bytes).map_err(|_| Error::ConfigParse {
            path: path.to_path_buf(),
            message: "is not UTF-8 text".into(),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Defaults, then the file (if any), then the overrides; validated.
    pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        Self::resolve_from(None, file, overrides)
    }

    /// The preset (see [`PRESETS`]), else the file, else the defaults; then the overrides;
    /// validated. (The command line refuses a preset and a file together.)
    pub fn resolve_from(preset: Option<&str>, file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let config = match (preset, file) {
            (Some(name), _) => Self::preset(name)?,
            (None, Some(path)) => Self::from_file(path)?,
            (None, None) => Self::default(),
        };
        let mut config = config.with_overrides(overrides)?;
        config.validate()?;
        config.train.resolve_defaults();
        Ok(config)
    }

    /// The preset `name` as its file says (unvalidated, defaults unresolved).
    pub fn preset(name: &str) -> Result<Self> {
        let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(Error::usage(
                "--preset",
                format!("no preset `{name}` (there are {})", names.join(", ")),
            ));
        };
        Self::from_toml_str(text, &Path::new("presets").join(format!("{name}.toml")))
    }

    /// Apply command-line overrides: the named flags' values, then the `--set` settings.
    pub fn with_overrides(self, o: &Overrides) -> Result<Self> {
        let named = o.named.iter().map(|&(key, ref value)| Setting {
            key,
            value: value.clone(),
            text: None,
            named: Some(key),
        });
        let config = self.with_values(named.collect())?;
        config.with_settings(&o.settings)
    }

    /// Apply `KEY=VALUE` settings (`train.g_ema=0.999`, `model.d_hidden=[256, 128]`): each value
    /// read as TOML, else as a string (`train.loss=hinge`). An unknown key or a value of the wrong
    /// type is refused naming the key.
    pub fn with_settings(self, settings: &[String]) -> Result<Self> {
        let mut values = Vec::new();
        for setting in settings {
            let Some((key, text)) = setting.split_once('=') else {
                return Err(Error::usage(
                    "--set",
                    format!("`{setting}` is not KEY=VALUE (such as train.g_ema=0.999)"),
                ));
            };
            let text = text.trim();
            let value = toml::from_str::<toml::Table>(&format!("v = {text}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(text.to_string()));
            values.push(Setting { key: key.trim(), value, text: Some(text), named: None });
        }
        self.with_values(values)
    }

    /// Set each key to its value, in order; a setting typed from text that does not fit its key
    /// is tried as the text itself (`data.dir=2024` reads as a number; a key that takes a string
    /// gets the text). Errors name a named flag's key, else `--set`.
    fn with_values(self, values: Vec<Setting<'_>>) -> Result<Self> {
        let Some(last) = values.last().map(|s| s.named) else { return Ok(self) };
        let refused = |named: Option<&'static str>, problem: String| match named {
            Some(key) => Error::config(key, problem),
            None => Error::usage("--set", problem),
        };
        let mut table = self.to_table().ok_or_else(|| {
            refused(last, "the configuration cannot be written as TOML (a path that is not UTF-8?)".into())
        })?;
        let fits = |table: &toml::Table| toml::Value::Table(table.clone()).try_into::<Config>();
        for Setting { key, value, text, named } in values {
            set_dotted(&mut table, key, value).map_err(|problem| refused(named, problem))?;
            if let Err(e) = fits(&table) {
                let problem = format!("`{key}`: {}", cut_long_lines(e.to_string().trim_end()));
                let Some(text) = text else { return Err(refused(named, problem)) };
                let mut retry = table.clone();
                set_dotted(&mut retry, key, toml::Value::String(text.to_string()))
                    .map_err(|problem| refused(named, problem))?;
                if fits(&retry).is_err() {
                    return Err(refused(named, problem));
                }
                table = retry;
            }
        }
        toml::Value::Table(table)
            .try_into::<Config>()
            .map_err(|e| refused(last, cut_long_lines(e.to_string().trim_end())))
    }

    /// The data's shape against what the data set has and the model can take.
    fn validate_data(&self) -> Result<()> {
        let d = &self.data;
        let (side, channels) = d.shape();
        let fixed = |what: &str, want: (usize, usize)| -> Result<()> {
            for (key, given, own) in
                [("data.image_size", d.image_size, want.0), ("data.channels", d.channels, want.1)]
            {
                if given.is_some_and(|v| v != own) {
                    return Err(Error::config(
                        key,
                        format!(
                            "{what} images are {}x{} with {} channel(s): found {key} = {}",
                            want.0,
                            want.0,
                            want.1,
                            given.unwrap_or(0)
                        ),
                    ));
                }
            }
            Ok(())
        };
        match d.dataset {
            Dataset::Mnist | Dataset::FashionMnist => fixed(d.dataset.name(), (28, 1))?,
            Dataset::Cifar10 => fixed("CIFAR-10", (32, 3))?,
            Dataset::Folder => {
                if d.dir.is_none() {
                    return Err(Error::config(
                        "data.dir",
                        "dataset = \"folder\" needs the folder of images (--data DIR)",
                    ));
                }
                if !(8..=256).contains(&side) {
                    return Err(Error::config("data.image_size", format!("must be 8 to 256, found {side}")));
                }
                if !matches!(channels, 1 | 3) {
                    return Err(Error::config(
                        "data.channels",
                        format!("must be 1 (grey) or 3 (RGB), found {channels}"),
                    ));
                }
            }
        }
        if self.model.kind == ModelKind::Dcgan && !side.is_multiple_of(4) {
            return Err(Error::config(
                "data.image_size",
                format!(
                    "a dcgan's G doubles a feature map of a quarter of the side twice: the side must be a multiple of 4, found {side}"
                ),
            ));
        }
        Ok(())
    }

    /// Check every value against its allowed range, so that nothing downstream can panic on it.
    pub fn validate(&self) -> Result<()> {
        // The resolved config is saved as TOML text (config.toml) and hashed from it.
        if let Some(dir) = self.data.dir.as_deref().filter(|d| d.to_str().is_none()) {
            return Err(Error::config(
                "data.dir",
                format!(
                    "the folder {} is not a UTF-8 path, which config.toml cannot hold: rename it or \
                     link to it from a UTF-8 path",
                    dir.display()
                ),
            ));
        }
        self.validate_data()?;
        self.validate_networks()?;
        self.validate_conditioning()?;
        self.validate_recipe()?;
        self.validate_output()
    }

    /// The networks' sizes: latent, widths, depth, a dcgan's channels and kernel.
    fn validate_networks(&self) -> Result<()> {
        let m = &self.model;
        positive("model.latent_dim", m.latent_dim, 65_536)?;
        if m.g_hidden.is_empty() {
            return Err(Error::config("model.g_hidden", "needs at least one layer"));
        }
        if m.d_hidden.is_empty() {
            return Err(Error::config("model.d_hidden", "needs at least one layer"));
        }
        for (key, depth) in [
            ("model.g_hidden", m.g_hidden.len()),
            ("model.d_hidden", m.d_hidden.len()),
            ("model.g_channels", m.g_channels.len()),
            ("model.d_channels", m.d_channels.len()),
        ] {
            if depth > MAX_LAYERS {
                return Err(Error::config(key, format!("{depth} layers, at most {MAX_LAYERS}")));
            }
        }
        for &w in &m.g_hidden {
            positive("model.g_hidden", w, 65_536)?;
        }
        for &w in &m.d_hidden {
            positive("model.d_hidden", w, 65_536)?;
        }
        if m.kind == ModelKind::Mlp && m.d_batch_norm {
            return Err(Error::config(
                "model.d_batch_norm",
                "is a dcgan's (kind = \"dcgan\"): an mlp D has none",
            ));
        }
        if m.kind == ModelKind::Dcgan {
            if m.g_channels.len() < 2 {
                return Err(Error::config(
                    "model.g_channels",
                    "needs at least two widths (the projected feature map and a hidden layer)",
                ));
            }
            if m.d_channels.is_empty() {
                return Err(Error::config("model.d_channels", "needs at least one layer"));
            }
            for &c in &m.g_channels {
                positive("model.g_channels", c, 4096)?;
            }
            for &c in &m.d_channels {
                positive("model.d_channels", c, 4096)?;
            }
            if !(3..=9).contains(&m.kernel_size) || m.kernel_size.is_multiple_of(2) {
                return Err(Error::config(
                    "model.kernel_size",
                    format!("must be odd, 3 to 9, found {}", m.kernel_size),
                ));
            }
            finite_in("model.d_dropout", m.d_dropout, 0.0, 0.95)?;
        }
        Ok(())
    }

    /// Classes and clusters: a conditional run's, self-conditioning's, clusters within classes.
    fn validate_conditioning(&self) -> Result<()> {
        let m = &self.model;
        if m.is_conditional() && !(2..=100).contains(&m.classes) {
            return Err(Error::config(
                "model.classes",
                format!("must be 2 to 100 for a conditional run, found {}", m.classes),
            ));
        }
        let per_class = m.clusters_per_class;
        if per_class > 0 {
            if !m.is_conditional() {
                return Err(Error::config(
                    "model.clusters_per_class",
                    format!(
                        "splits each class into {per_class} clusters of a conditional run: set model.conditional \
                         (\"projection\", \"concat\" or \"acgan\"), or model.clusters_per_class = 0"
                    ),
                ));
            }
            if self.data.clusters > 0 {
                return Err(Error::config(
                    "model.clusters_per_class",
                    "splits the labels' classes, but data.clusters reads no label: set one of them, not both",
                ));
            }
            if !(2..=100).contains(&per_class) || m.classes.saturating_mul(per_class) > 256 {
                return Err(Error::config(
                    "model.clusters_per_class",
                    format!(
                        "must be 2 to 100, with model.classes x model.clusters_per_class at most 256, found \
                         {per_class} (x {} classes = {})",
                        m.classes,
                        m.classes.saturating_mul(per_class)
                    ),
                ));
            }
        }
        let clusters = self.data.clusters;
        if clusters > 0 {
            if !m.is_conditional() {
                return Err(Error::config(
                    "data.clusters",
                    format!(
                        "trains G and D on {clusters} cluster ids: set model.conditional (\"projection\" or \"concat\") \
                         and model.classes = {clusters}, or data.clusters = 0"
                    ),
                ));
            }
            if m.classes != clusters {
                return Err(Error::config(
                    "model.classes",
                    format!(
                        "must equal data.clusters ({clusters}) in a self-conditioned run, found {}",
                        m.classes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The activations' and the training recipe's numbers: objective, D steps, labels, EMA, augmentation, optimizers, threads.
    fn validate_recipe(&self) -> Result<()> {
        let m = &self.model;
        let t = &self.train;
        finite_in("model.leaky_slope", m.leaky_slope, 0.0, 1.0)?;
        finite_in("model.bn_momentum", m.bn_momentum, 0.0, 1.0)?;
        if !(m.bn_epsilon.is_finite() && m.bn_epsilon > 0.0) {
            return Err(Error::config("model.bn_epsilon", format!("must be > 0, found {}", m.bn_epsilon)));
        }
        positive("train.iterations", t.iterations, 1_000_000_000)?;
        positive("train.batch_size", t.batch_size, 65_536)?;
        if let Some(reason) = t.loss.unsupported() {
            return Err(Error::config("train.loss", format!("`{}` {reason}", t.loss.name())));
        }
        positive("train.d_steps", t.d_steps, 100)?;
        if t.order == UpdateOrder::Simultaneous && t.d_steps != 1 {
            return Err(Error::config(
                "train.d_steps",
                format!("must be 1 with order = \"simultaneous\" (one forward pass), found {}", t.d_steps),
            ));
        }
        if !(t.real_label.is_finite() && t.real_label > 0.0 && t.real_label <= 1.0) {
            return Err(Error::config(
                "train.real_label",
                format!("must be within (0, 1], found {}", t.real_label),
            ));
        }
        if t.real_label != 1.0 && !t.loss.takes_real_label() {
            return Err(Error::config(
                "train.real_label",
                format!("label smoothing applies to ns, minimax and lsgan, not to {}", t.loss.name()),
            ));
        }
        if !(t.g_ema.is_finite() && (0.0..1.0).contains(&t.g_ema)) {
            return Err(Error::config(
                "train.g_ema",
                format!("an EMA decay must be within [0, 1) (0 = off), found {}", t.g_ema),
            ));
        }
        finite_in("train.aux_weight", t.aux_weight, 0.0, 100.0)?;
        if t.aux_weight != 1.0 && m.conditional != Conditioning::Acgan {
            return Err(Error::config(
                "train.aux_weight",
                "weighs an acgan D's class term, which this run's D has not: set model.conditional = \"acgan\", \
                 or leave train.aux_weight at 1",
            ));
        }
        let mut augment = t.augment.clone();
        augment.sort();
        augment.dedup();
        if augment.len() != t.augment.len() {
            return Err(Error::config("train.augment", "names an augmentation twice"));
        }
        if !(t.clip.is_finite() && t.clip > 0.0) {
            return Err(Error::config("train.clip", format!("must be > 0, found {}", t.clip)));
        }
        finite_in("train.rmsprop_alpha", t.rmsprop_alpha as f64, 0.0, 0.999_999)?;
        if !(t.rmsprop_epsilon.is_finite() && t.rmsprop_epsilon > 0.0) {
            return Err(Error::config(
                "train.rmsprop_epsilon",
                format!("must be > 0, found {}", t.rmsprop_epsilon),
            ));
        }
        for (key, lr) in [("train.lr_d", t.lr_d()), ("train.lr_g", t.lr_g())] {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Error::config(key, format!("must be a positive number, found {lr}")));
            }
        }
        finite_in("train.beta1", t.beta1 as f64, 0.0, 0.999_999)?;
        finite_in("train.beta2", t.beta2 as f64, 0.0, 0.999_999_9)?;
        if !(t.adam_epsilon.is_finite() && t.adam_epsilon > 0.0) {
            return Err(Error::config(
                "train.adam_epsilon",
                format!("must be > 0, found {}", t.adam_epsilon),
            ));
        }
        if t.threads > 1024 {
            return Err(Error::config("train.threads", format!("at most 1024, found {}", t.threads)));
        }
        Ok(())
    }

    /// What is written and judged: grids, smoothing, checkpoints, evaluation samples.
    fn validate_output(&self) -> Result<()> {
        let o = &self.output;
        positive("output.sample_interval", o.sample_interval, usize::MAX)?;
        positive("output.grid_rows", o.grid_rows, 64)?;
        positive("output.grid_cols", o.grid_cols, 64)?;
        positive("output.smoothing_window", o.smoothing_window, 1_000_000)?;
        let c = &self.checkpoint;
        if !(c.every_minutes.is_finite() && c.every_minutes >= 0.0) {
            return Err(Error::config(
                "checkpoint.every_minutes",
                format!("must be >= 0, found {}", c.every_minutes),
            ));
        }
        positive("checkpoint.keep", c.keep, 1_000_000)?;
        // At least k + 1 = 4 for precision/recall; at most the 10,000 test images.
        if !(10..=10_000).contains(&self.eval.samples) {
            return Err(Error::config(
                "eval.samples",
                format!("must be within 10..=10000 (the test set's size), found {}", self.eval.samples),
            ));
        }
        Ok(())
    }

    /// Rows of the sample grids: one per class in a conditional run, else (and in a
    /// self-conditioned run, whose clusters may be many) `output.grid_rows`.
    pub fn grid_rows(&self) -> usize {
        if self.model.is_conditional() && self.data.clusters == 0 {
            self.model.classes
        } else {
            self.output.grid_rows
        }
    }

    /// The resolved config as TOML, as saved in the run folder.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("a Config always serializes to TOML");
        format!("# gantry run configuration (resolved: defaults, then file, then command line)\n\n{body}")
    }

    /// Checkpoint interval in iterations (`checkpoint.every`, or the sample interval when 0).
    pub fn checkpoint_every(&self) -> usize {
        match self.checkpoint.every {
            0 => self.output.sample_interval,
            n => n,
        }
    }

    /// The architecture part of the config as `key = value` lines: what a checkpoint's weights
    /// depend on.
    /// Spectral norm is listed only when on, so that the hash of an architecture without it is
    /// the one its older checkpoints carry.
    /// The model kind and the keys of the other kind likewise: an mlp's hash is the one it had
    /// before convolutional models existed.
    /// Conditioning's keys too: an unconditional run's hash is the one it had before them.
    pub fn architecture(&self) -> Vec<(String, String)> {
        let mlp = self.model.kind == ModelKind::Mlp;
        let conditional = self.model.is_conditional();
        let read = |k: &str| {
            if CONDITIONAL_KEYS.contains(&k) {
                conditional
            } else if DCGAN_KEYS.contains(&k) || k == "model.kind" {
                !mlp
            } else {
                mlp || !matches!(k, "model.g_hidden" | "model.d_hidden")
            }
        };
        self.settings()
            .into_iter()
            .filter(|(k, v)| {
                k.starts_with("model.") && !(OFF_UNLESS_SET.contains(&k.as_str()) && v == "false") && read(k)
            })
            .collect()
    }

    /// Every setting as `section.key -> value` (the value as TOML writes it), in key order.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (section, table) in &self.to_table().expect("a Config serializes") {
            for (k, v) in table.as_table().expect("each section is a table") {
                out.insert(format!("{section}.{k}"), v.to_string());
            }
        }
        out
    }

    /// The settings that decide what a run computes: all of them, the recipe's defaults
    /// resolved, but those that only say where the data is and what runs it (`data.dir`,
    /// `train.threads`, `train.device`).
    pub fn run_settings(&self) -> BTreeMap<String, String> {
        let mut c = self.clone();
        c.train.threads = 0;
        c.train.device = crate::device::DeviceChoice::Cpu;
        c.data.dir = None;
        c.train.resolve_defaults();
        c.settings()
    }

    /// The config as a TOML table (what `--set` and a sweep's axes are written into); None
    /// only for a `data.dir` that is not UTF-8, which TOML cannot hold.
    pub fn to_table(&self) -> Option<toml::Table> {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => Some(t),
            _ => None,
        }
    }

    /// [`Self::run_settings`] without the choices that follow from others: an optimizer or a
    /// learning rate equal to the objective's default is left out (what names a group of runs:
    /// `loss=wgan`, not `loss=wgan,lr_d=0.00005,...,optimizer_g=rmsprop`).
    pub fn chosen_settings(&self) -> BTreeMap<String, String> {
        let mut s = self.run_settings();
        let t = &self.train;
        for (key, implied) in [
            ("train.optimizer_d", t.optimizer_d() == t.default_optimizer()),
            ("train.optimizer_g", t.optimizer_g() == t.default_optimizer()),
            ("train.lr_d", t.lr_d() == t.default_lr(t.optimizer_d())),
            ("train.lr_g", t.lr_g() == t.default_lr(t.optimizer_g())),
        ] {
            if implied {
                s.remove(key);
            }
        }
        s
    }

    /// SHA-256 of [`Self::architecture`], stored in checkpoints.
    pub fn architecture_hash(&self) -> String {
        let text: String = self.architecture().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        crate::durable::sha256_hex(text.as_bytes())
    }

    /// Architecture keys whose values differ between `self` and `other`, as `key: a -> b`.
    pub fn architecture_diff(&self, other: &Config) -> Vec<String> {
        let (a, b) = (self.settings(), other.settings());
        let model = |k: &String| k.starts_with("model.");
        differing_keys(&a, &b)
            .into_iter()
            .filter(model)
            .map(|k| {
                let value =
                    |m: &BTreeMap<String, String>| m.get(&k).map_or("(unset)", String::as_str).to_owned();
                format!("{k}: {} -> {}", value(&a), value(&b))
            })
            .collect()
    }

    /// Compute threads to use: the configured number, or one per available core.
    pub fn effective_threads(&self) -> usize {
        match self.train.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }
}

/// One setting on its way into a config: the key, its value, and the text it was read from
/// (`--set`'s, tried as a string when the typed value does not fit); `named`: the key of a named
/// flag (its errors name the key; `--set`'s name `--set`).
struct Setting<'a> {
    key: &'a str,
    value: toml::Value,
    text: Option<&'a str>,
    named: Option<&'static str>,
}

/// Set `key` (dotted, `train.loss`) in a config's TOML `table`. A key must name a section and a
/// setting, not a section alone. The problem, if any, names the key.
pub fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` is not a config key (write section.key, such as train.loss)"));
    }
    let (last, sections) = parts.split_last().expect("two parts or more");
    let mut at = table;
    for section in sections {
        let entry = at.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => at = t,
            _ => return Err(format!("`{key}`: `{section}` is a setting, not a section")),
        }
    }
    if let Some(toml::Value::Table(_)) = at.get(*last) {
        return Err(format!("`{key}` is a section; give one of its keys"));
    }
    at.insert(last.to_string(), value);
    Ok(())
}

/// The keys whose values differ between two sets of [`Config::settings`], in key order.
pub fn differing_keys(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> =
        a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The largest config file read (a real one is about 1 KB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Lines of a message longer than 200 characters are cut (a parse error quotes the offending line,
/// which in a garbage file can be megabytes long).
/// Most layers a network's list of widths may give (`model.g_hidden`, `model.d_hidden`,
/// `model.g_channels`, `model.d_channels`): deeper plain stacks do not train (100,000 layers of
/// width 8 passed validation, took 1.43 GB and gave NaN).
pub const MAX_LAYERS: usize = 32;

pub(crate) fn cut_long_lines(message: &str) -> String {
    const MAX: usize = 200;
    message
        .lines()
        .map(|line| match line.char_indices().nth(MAX) {
            Some((at, _)) => format!("{} ... ({} characters cut)", &line[..at], line[at..].chars().count()),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn positive(key: &'static str, value: usize, max: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(key, "must be at least 1, found 0"));
    }
    if value > max {
        return Err(Error::config(key, format!("must be at most {max}, found {value}")));
    }
    Ok(())
}

/// Whether `value` is 1 (serde's `skip_serializing_if` of a weight at its default).
fn is_one(value: &f64) -> bool {
    *value == 1.0
}

fn finite_in(key: &'static str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if !(value.is_finite() && value >= lo && value <= hi) {
        return Err(Error::config(key, format!("must be within [{lo}, {hi}], found {value}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_classic_preset_file_is_the_default_and_every_preset_is_valid() {
        assert_eq!(Config::preset("classic").unwrap(), Config::default());
        for (name, _) in PRESETS {
            Config::resolve_from(Some(name), None, &Overrides::default()).unwrap();
        }
        let err = Config::preset("dcgan-pt").unwrap_err().to_string();
        assert!(err.contains("dcgan-pt") && err.contains("dcgan-tf"), "{err}");
    }

    #[test]
    fn the_dcgan_tf_preset_is_the_tutorials_model_and_step() {
        let c = Config::resolve_from(Some("dcgan-tf"), None, &Overrides::default()).unwrap();
        let (m, t) = (&c.model, &c.train);
        assert_eq!(
            (m.kind, &m.g_channels, &m.d_channels, m.kernel_size),
            (ModelKind::Dcgan, &vec![256, 128, 64], &vec![64, 128], 5)
        );
        assert_eq!((m.leaky_slope, m.d_dropout, m.bn_momentum, m.bn_epsilon), (0.3, 0.3, 0.99, 1e-3));
        assert_eq!(
            (t.batch_size, t.order, t.d_update, t.lr_d(), t.lr_g()),
            (256, UpdateOrder::Simultaneous, DUpdate::Joint, 1e-4, 1e-4)
        );
        assert_eq!((t.beta1, t.beta2, t.adam_epsilon, t.iterations), (0.9, 0.999, 1e-7, 50 * 235));
        // The mlp keys do not enter a dcgan's architecture, nor the dcgan keys an mlp's.
        let keys: Vec<String> = c.architecture().into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.contains(&"model.g_channels".to_string()) && !keys.contains(&"model.g_hidden".to_string())
        );
        let keys: Vec<String> = Config::default().architecture().into_iter().map(|(k, _)| k).collect();
        assert!(!keys.iter().any(|k| DCGAN_KEYS.contains(&k.as_str()) || k == "model.kind"), "{keys:?}");
    }

    /// The bug: a `--data` folder whose name is not UTF-8 reached `Config::settings`, which
    /// serializes the config to TOML, and panicked on its `expect`.
    #[cfg(unix)]
    #[test]
    fn a_data_dir_that_is_not_utf8_is_refused_not_a_panic() {
        use std::os::unix::ffi::OsStrExt;
        let mut c = Config::default();
        c.data.dir = Some(PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/mnist-\xff")));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("data.dir") && err.contains("UTF-8"), "{err}");
        c.data.dir = Some(PathBuf::from("/tmp/mnist-ü"));
        c.validate().unwrap();
    }

    #[test]
    fn dcgan_settings_out_of_range_are_refused_naming_the_key() {
        let bad = |key: &str, value: &str| {
            let c = Config::preset("dcgan-tf").unwrap().with_settings(&[format!("{key}={value}")]).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
        };
        bad("model.kernel_size", "4");
        bad("model.g_channels", "[64]");
        bad("model.d_channels", "[]");
        bad("model.d_dropout", "1.0");
        bad("train.d_steps", "2");
        // An mlp has no convolutions to follow with a BatchNorm.
        let mlp = Config::default().with_settings(&["model.d_batch_norm=true".to_string()]).unwrap();
        assert!(mlp.validate().unwrap_err().to_string().contains("model.d_batch_norm"));
    }

    #[test]
    fn conditional_settings_are_checked_and_enter_the_architecture_only_when_on() {
        let c = Config::preset("cdcgan").unwrap();
        assert_eq!((c.model.conditional, c.model.classes, c.grid_rows()), (Conditioning::Projection, 10, 10));
        let bad = |settings: &[&str], key: &str| {
            let s: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
            let err = Config::default().with_settings(&s).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(key), "{settings:?}: {err}");
        };
        bad(&["model.conditional=\"concat\"", "model.classes=1"], "model.classes");
        bad(&["model.conditional=\"concat\"", "model.classes=101"], "model.classes");
        // Self-conditioning needs a conditional model with a class per cluster.
        bad(&["data.clusters=20"], "data.clusters");
        bad(&["data.clusters=20", "model.conditional=\"projection\""], "model.classes");
        let selfcond = Config::default()
            .with_settings(
                &["data.clusters=20", "model.conditional=\"projection\"", "model.classes=20"]
                    .map(String::from),
            )
            .unwrap();
        selfcond.validate().unwrap();
        // Its grids keep output.grid_rows (twenty rows would be many); the config file says it.
        assert_eq!(selfcond.grid_rows(), 5);
        assert!(selfcond.to_toml().contains("clusters = 20"));
        assert!(
            !Config::default().to_toml().contains("clusters"),
            "a run without it writes the same config.toml"
        );
        // Clusters within classes: a conditional model, not beside data.clusters, at most 256 ids.
        bad(&["model.clusters_per_class=5"], "model.clusters_per_class");
        let projection = "model.conditional=\"projection\"";
        bad(&[projection, "model.clusters_per_class=1"], "model.clusters_per_class");
        bad(&[projection, "model.clusters_per_class=26"], "model.clusters_per_class");
        bad(
            &[projection, "model.clusters_per_class=5", "data.clusters=50", "model.classes=50"],
            "model.clusters_per_class",
        );
        let within = Config::default()
            .with_settings(&[projection, "model.clusters_per_class=25"].map(String::from))
            .unwrap();
        within.validate().unwrap();
        // G and D see 250 ids; the grids keep one row per class.
        assert_eq!(within.grid_rows(), 10);
        assert!(within.architecture().iter().any(|(k, v)| k == "model.clusters_per_class" && v == "25"));
        assert!(!Config::default().to_toml().contains("clusters_per_class"));
        bad(&[projection, "model.classes=2", "model.clusters_per_class=101"], "model.clusters_per_class");
        // A key one side leaves out (0 is not written) is listed, not looked up blindly.
        let mut plain = within.clone();
        plain.model.clusters_per_class = 0;
        assert_eq!(within.architecture_diff(&plain), vec!["model.clusters_per_class: 25 -> (unset)"]);
        // Unconditional, the class count is not read (nor hashed).
        let mut classes = Config::default();
        classes.model.classes = 1;
        classes.validate().unwrap();
        assert_eq!(classes.architecture_hash(), Config::default().architecture_hash());
        let mut concat = Config::default();
        concat.model.conditional = Conditioning::Concat;
        assert_eq!(
            concat.architecture_diff(&Config::default()),
            vec!["model.conditional: \"concat\" -> \"none\""]
        );
        assert!(concat.architecture().iter().any(|(k, _)| k == "model.classes"));
        assert_eq!(concat.grid_rows(), 10);
    }
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::from_toml_str(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_are_the_classic_preset() {
        let c = Config::default();
        assert_eq!(c.model.latent_dim, 100);
        assert_eq!(c.model.g_hidden, vec![256, 512, 1024]);
        assert_eq!(c.model.d_hidden, vec![512, 256]);
        assert_eq!(c.train.iterations, 30_000);
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.output.sample_interval, 200);
        assert_eq!(c.model.bn_momentum, 0.8);
        assert_eq!(c.train.adam_epsilon, 1e-7);
        c.validate().unwrap();
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = parse("[train]\niterations = 500\n").unwrap();
        assert_eq!(c.train.iterations, 500);
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.model, ModelConfig::default());
    }

    #[test]
    fn unknown_key_is_rejected_and_named() {
        let err = parse("[train]\niteratons = 500\n").unwrap_err().to_string();
        assert!(err.contains("iteratons"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
        let err = parse("[trian]\n").unwrap_err().to_string();
        assert!(err.contains("trian"), "{err}");
    }

    #[test]
    fn wrong_type_is_rejected() {
        let err = parse("[train]\nbatch_size = \"big\"\n").unwrap_err().to_string();
        assert!(err.contains("batch_size") || err.contains("big"), "{err}");
    }

    #[test]
    fn a_hundred_thousand_hidden_layers_are_refused() {
        // The bug: 100,000 layers of width 8 (a 200 KB config) passed validation.
        let deep = format!("[model]\nd_hidden = [{}]\n", vec!["8"; 100_000].join(", "));
        let err = parse(&deep).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("model.d_hidden") && err.contains("100000 layers"), "{err}");
        let ok = format!("[model]\ng_hidden = [{}]\n", vec!["8"; MAX_LAYERS].join(", "));
        parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_are_named() {
        for (text, key) in [
            ("[train]\nbatch_size = 0\n", "train.batch_size"),
            ("[model]\nbn_momentum = 1.5\n", "model.bn_momentum"),
            ("[model]\ng_hidden = []\n", "model.g_hidden"),
            ("[output]\nsample_interval = 0\n", "output.sample_interval"),
            ("[model]\nleaky_slope = nan\n", "model.leaky_slope"),
            ("[train]\nloss = \"wgan-gp\"\n", "train.loss"),
            ("[train]\nloss = \"r1\"\n", "train.loss"),
            ("[train]\nd_steps = 0\n", "train.d_steps"),
            ("[train]\nreal_label = 1.5\n", "train.real_label"),
            ("[train]\nreal_label = 0.0\n", "train.real_label"),
            ("[train]\nloss = \"hinge\"\nreal_label = 0.9\n", "train.real_label"),
            ("[train]\nclip = 0.0\n", "train.clip"),
            ("[train]\nlr_d = -1.0\n", "train.lr_d"),
            ("[train]\ng_ema = 1.0\n", "train.g_ema"),
            ("[train]\ng_ema = -0.1\n", "train.g_ema"),
            ("[train]\naugment = [\"cutout\", \"cutout\"]\n", "train.augment"),
            // A class term's weight where there is no class term, and a negative one.
            ("[model]\nconditional = \"projection\"\n[train]\naux_weight = 0.5\n", "train.aux_weight"),
            ("[model]\nconditional = \"acgan\"\n[train]\naux_weight = -0.5\n", "train.aux_weight"),
        ] {
            let err = parse(text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn config_reads_refuse_folders_fifos_and_huge_files_as_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Config::from_file(tmp.path()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let err = Config::from_file(&tmp.path().join("missing.toml")).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("missing.toml"), "{err}");
        let big = tmp.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let err = Config::from_file(&big).unwrap_err().to_string();
        assert!(err.contains("big.toml") && err.contains("at most"), "{err}");
        // A garbage line of 100,000 characters is quoted cut, not whole.
        let garbage = tmp.path().join("garbage.toml");
        std::fs::write(&garbage, "x".repeat(100_000)).unwrap();
        let err = Config::from_file(&garbage).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().len() < 2_000, "{}", err.to_string().len());
    }

    #[test]
    fn wgan_takes_rmsprop_at_5e_5_unless_the_optimizer_is_set() {
        let c = parse("[train]\nloss = \"wgan\"\n").unwrap();
        assert_eq!((c.train.optimizer_d(), c.train.lr_d()), (OptimizerKind::Rmsprop, 0.000_05));
        let c = parse("[train]\nloss = \"wgan\"\noptimizer_g = \"rmsprop\"\n").unwrap();
        assert_eq!(c.train.lr_g(), 0.000_05, "rmsprop written out keeps the paper's rate");
        let c = parse("[train]\nloss = \"wgan\"\noptimizer_d = \"adam\"\n").unwrap();
        assert_eq!((c.train.optimizer_d(), c.train.lr_d()), (OptimizerKind::Adam, 0.0002));
        assert_eq!(c.train.optimizer_g(), OptimizerKind::Rmsprop);
        assert!(Config::default().train.is_classic_recipe());
        assert!(!c.train.is_classic_recipe());
        // The saved config says what was used, and reads back as the same recipe.
        let resolved = Config::resolve(None, &Overrides::default()).unwrap();
        assert_eq!(resolved.train.lr_d, Some(0.0002));
        assert!(resolved.train.is_classic_recipe());
    }

    #[test]
    fn overrides_win_over_file() {
        let mut c = parse("[train]\niterations = 500\nseed = 3\n").unwrap();
        c = c.with_overrides(&Overrides::default().with("train.iterations", 7).unwrap()).unwrap();
        assert_eq!(c.train.iterations, 7);
        assert_eq!(c.train.seed, 3);
    }

    #[test]
    fn architecture_changes_are_listed_key_by_key() {
        let a = Config::default();
        let mut b = a.clone();
        b.train.iterations = 60_000;
        assert!(a.architecture_diff(&b).is_empty());
        assert_eq!(a.architecture_hash(), b.architecture_hash());
        b.model.latent_dim = 64;
        b.model.g_hidden = vec![128, 256];
        let diff = a.architecture_diff(&b);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(
            diff[0].contains("model.g_hidden") && diff[1].contains("model.latent_dim: 100 -> 64"),
            "{diff:?}"
        );
        assert_ne!(a.architecture_hash(), b.architecture_hash());
    }

    /// Golden values: the hashes gantry wrote into checkpoints before spectral norm, EMA and
    /// augmentation were keys (state.json of `gantry train` at cdb900f, the classic preset and
    /// `loss = "hinge"`). Exact: a different hash refuses every older checkpoint.
    #[test]
    fn the_new_keys_at_their_defaults_keep_the_hashes_older_checkpoints_carry() {
        let classic = Config::default();
        let arch = "5a7ee4fdf7ea211a0eec942853f70676db4ae8a2c476d59f7e2b7fa138da8a0f";
        assert_eq!(classic.architecture_hash(), arch);
        assert_eq!(classic.train.recipe_hash(), None);
        let mut hinge = Config::default();
        hinge.train.loss = Loss::Hinge;
        let recipe = "8e62066c62c1e07184c98dcf7e5442101eb79a6c235a9d1c5bd0a3eb7ee3ee4b";
        assert_eq!(hinge.train.recipe_hash().as_deref(), Some(recipe));
        // Set, each is part of what a checkpoint belongs to.
        let mut sn = classic.clone();
        sn.model.d_spectral_norm = true;
        assert_ne!(sn.architecture_hash(), arch);
        assert_eq!(classic.architecture_diff(&sn), vec!["model.d_spectral_norm: false -> true"]);
        let mut ema = classic.clone();
        ema.train.g_ema = 0.999;
        assert!(ema.train.recipe_hash().is_some());
        assert!(ema.train.is_classic_recipe(), "the EMA is kept beside the fast path");
        let mut augmented = hinge.clone();
        augmented.train.augment = vec![Augment::Cutout];
        assert_ne!(augmented.train.recipe_hash().as_deref(), Some(recipe));
        // An acgan class term's weight: in the recipe when set, in config.toml only when set.
        let mut weighed = hinge.clone();
        weighed.train.aux_weight = 0.5;
        assert_ne!(weighed.train.recipe_hash().as_deref(), Some(recipe));
        assert!(!toml::to_string(&hinge).unwrap().contains("aux_weight"));
        assert!(toml::to_string(&weighed).unwrap().contains("aux_weight = 0.5"));
    }

    #[test]
    fn settings_set_any_key_and_refuse_unknown_ones_naming_them() {
        let set = |items: &[&str]| {
            let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
            Config::default().with_settings(&items)
        };
        let c = set(&["train.g_ema=0.999", "model.d_spectral_norm = true", "train.loss=hinge"]).unwrap();
        assert_eq!((c.train.g_ema, c.model.d_spectral_norm, c.train.loss), (0.999, true, Loss::Hinge));
        let c = set(&["train.augment=[\"translation\", \"cutout\"]", "model.d_hidden=[64, 32]"]).unwrap();
        assert_eq!(c.train.augment, vec![Augment::Translation, Augment::Cutout]);
        assert_eq!(c.model.d_hidden, vec![64, 32]);
        for (bad, named) in [
            (&["train.no_such_key=1"][..], "no_such_key"),
            (&["train.d_steps=two"], "train.d_steps"),
            (&["train"], "KEY=VALUE"),
            (&["train=1"], "section"),
        ] {
            let err = set(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(named), "{bad:?}: {err}");
        }
    }

    #[test]
    fn chosen_settings_leave_out_what_the_objective_implies() {
        let mut wgan = Config::default();
        wgan.train.loss = Loss::Wgan;
        wgan.train.resolve_defaults();
        let chosen = wgan.chosen_settings();
        assert!(
            !chosen.contains_key("train.lr_d") && !chosen.contains_key("train.optimizer_g"),
            "{chosen:?}"
        );
        wgan.train.lr_g = Some(1e-4);
        assert_eq!(wgan.chosen_settings().get("train.lr_g").map(String::as_str), Some("0.0001"));
    }

    #[test]
    fn saved_config_round_trips() {
        let mut c = Config::default();
        c.data.dataset = Dataset::FashionMnist;
        c.train.seed = 42;
        let back = parse(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }
}
