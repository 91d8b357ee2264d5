//! The judge: a small LeNet-5-style convolutional classifier trained by gantry itself (seeded,
//! deterministic) on the run's own data, whose penultimate layer is the feature space the sample
//! metrics are computed in: Inception features are the wrong yardstick for 28x28 digits, and
//! nothing is downloaded. It learns the data's classes where there are labels (MNIST's digits,
//! CIFAR-10's classes, a folder's class sub-folders) and which of four rotations an image was
//! shown at where there are none ([`super::reference`] says which images it learns from).
//!
//! A trained judge is cached per user (`$GANTRY_CACHE_DIR` or the OS cache folder, under
//! `gantry/judges/`), keyed by a hash of the training files and of the judge's own settings, so it
//! is trained once per data set and reused by every `gantry eval`.
//!
//! Network (images in [-1, 1], as G makes them), for MNIST's 28x28 grey images:
//! x [b, 784] -> [b, 1, 28, 28] -> conv 5x5 (pad 2) 1->C1 -> ReLU -> maxpool 2 -> [b, C1, 14, 14]
//! -> conv 5x5 C1->C2 -> ReLU -> maxpool 2 -> [b, C2, 5, 5] -> flatten -> dense 120 -> ReLU
//! -> dense 84 -> ReLU (the features) -> dense 10 (logits).
//! Other images: the first convolution takes their channels, the flattened size follows their
//! side (32: [C2, 6, 6]), sides above 64 are average-pooled 2x2 until they are not, and the last
//! layer has one logit per class (4 for the rotation task).

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, PaddingConfig2d};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::reference::JudgeData;
use crate::config::Dataset;
use crate::data::LabelledImages;
use crate::durable::{read_limited, sha256_hex, write_atomic};
use crate::error::{Error, IoContext, Result};
use crate::kernels::adam::FusedAdam;
use crate::kernels::pool::relu_max_pool2;

/// Width of the feature space (the penultimate layer).
pub const FEATURES: usize = 84;
/// The largest side the judge's convolutions see: larger images are average-pooled 2x2 first.
const MAX_CONV_SIDE: usize = 64;

/// What the judge learns to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeTask {
    /// The data's own classes.
    #[default]
    Classes,
    /// Which of four rotations (0, 90, 180, 270 degrees) an image was shown at: for unlabelled
    /// images. The class metrics (inception score, classes present) do not exist for it.
    Rotation,
}

impl JudgeTask {
    /// The task of a judge of `classes` logits, for people: "10 classes", "4 rotations (no labels)".
    pub fn describe(self, classes: usize) -> String {
        match self {
            JudgeTask::Classes => format!("{classes} classes"),
            JudgeTask::Rotation => "4 rotations (no labels)".into(),
        }
    }
}

/// The images a judge takes and the classes it tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeShape {
    pub side: usize,
    pub channels: usize,
    /// Logits of the last layer (4 for the rotation task).
    pub classes: usize,
    pub task: JudgeTask,
}

impl JudgeShape {
    /// MNIST's and Fashion-MNIST's: 28x28 grey, ten classes.
    pub const IDX: JudgeShape = JudgeShape { side: 28, channels: 1, classes: 10, task: JudgeTask::Classes };

    /// Values per image.
    pub fn dim(&self) -> usize {
        self.side * self.side * self.channels
    }

    /// What the judge tells apart, for people: "10 classes", "4 rotations (no labels)".
    pub fn describe(&self) -> String {
        self.task.describe(self.classes)
    }

    /// 2x2 average poolings before the first convolution, and the side after them.
    fn pooled(&self) -> (usize, usize) {
        let (mut side, mut pools) = (self.side, 0);
        while side > MAX_CONV_SIDE {
            side /= 2;
            pools += 1;
        }
        (pools, side)
    }

    /// Side of the second convolution's pooled output: (s/2 - 4)/2.
    fn flat_side(&self) -> usize {
        (self.pooled().1 / 2).saturating_sub(4) / 2
    }
}
/// Bumped whenever the network or its training changes, so stale cached judges are not reused.
const JUDGE_VERSION: u32 = 1;

/// How the judge is trained (part of its cache key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    pub conv1_channels: usize,
    pub conv2_channels: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// The learning rate is multiplied by this after every epoch.
    pub lr_decay: f64,
    pub seed: u64,
    /// An epoch is at least this many batches (whole passes over the data): a small folder's judge
    /// gets as many steps as it needs, MNIST's epochs stay single passes.
    pub min_epoch_steps: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            conv1_channels: 16,
            conv2_channels: 32,
            epochs: 5,
            batch_size: 64,
            learning_rate: 1e-3,
            lr_decay: 0.6,
            seed: 0,
            min_epoch_steps: 400,
        }
    }
}

impl JudgeConfig {
    /// The test accuracy a judge of `dataset` must reach to be trusted.
    pub fn required_accuracy(dataset: Dataset) -> f64 {
        match dataset {
            Dataset::Mnist => 0.99,
            Dataset::FashionMnist => 0.90,
            // A judge of other data is as good as the data allows: its accuracy is reported, and
            // the metrics' orderings (real before a trained GAN before an untrained one and noise) are
            // what it is tested on.
            Dataset::Cifar10 | Dataset::Folder => 0.0,
        }
    }
}

/// The classifier network.
#[derive(Module, Debug)]
pub struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    out: Linear,
    /// (side, channels, average poolings before conv1) of the images taken.
    #[module(skip)]
    input: (usize, usize, usize),
}

impl LeNet {
    fn new(cfg: &JudgeConfig, shape: &JudgeShape, rng: &mut ChaCha8Rng, device: &Device) -> Self {
        let (c1, c2) = (cfg.conv1_channels, cfg.conv2_channels);
        let flat = shape.flat_side();
        Self {
            conv1: conv(shape.channels, c1, PaddingConfig2d::Explicit(2, 2, 2, 2), rng, device),
            conv2: conv(c1, c2, PaddingConfig2d::Valid, rng, device),
            fc1: dense(c2 * flat * flat, 120, rng, device),
            fc2: dense(120, FEATURES, rng, device),
            out: dense(FEATURES, shape.classes, rng, device),
            input: (shape.side, shape.channels, shape.pooled().0),
        }
    }

    /// Images [b, channels * side * side] in [-1, 1] -> features [b, 84].
    pub fn features(&self, x: Tensor<2>) -> Tensor<2> {
        let b = x.dims()[0];
        let (side, channels, pools) = self.input;
        let mut x = x.reshape([b, channels, side, side]);
        for _ in 0..pools {
            x = burn::nn::pool::AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init().forward(x);
        }
        // ReLU then 2x2 max pooling as one operation: the values of burn's `MaxPool2d` after `relu`,
        // bit for bit (kernels::pool's tests check it), in fewer passes.
        let x = relu_max_pool2(self.conv1.forward(x)); // [b, C1, 14, 14] for 28x28
        let x = relu_max_pool2(self.conv2.forward(x)); // [b, C2, 5, 5]
        let x: Tensor<2> = x.flatten(1, 3); // [b, C2 * 25]
        relu(self.fc2.forward(relu(self.fc1.forward(x))))
    }

    /// Features [b, 84] -> class logits [b, classes].
    pub fn logits(&self, features: Tensor<2>) -> Tensor<2> {
        self.out.forward(features)
    }
}

/// He-uniform weights (for ReLU) from gantry's own seeded stream, zero biases.
fn he_uniform(n: usize, fan_in: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let limit = (6.0 / fan_in as f64).sqrt() as f32;
    (0..n).map(|_| rng.random_range(-limit..limit)).collect()
}

fn conv(
    c_in: usize,
    c_out: usize,
    padding: PaddingConfig2d,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Conv2d {
    let mut conv = Conv2dConfig::new([c_in, c_out], [5, 5])
        .with_padding(padding)
        .with_initializer(Initializer::Zeros)
        .init(device);
    let w = he_uniform(c_out * c_in * 25, c_in * 25, rng);
    conv.weight = Param::from_data(TensorData::new(w, [c_out, c_in, 5, 5]), device);
    conv
}

fn dense(d_in: usize, d_out: usize, rng: &mut ChaCha8Rng, device: &Device) -> Linear {
    crate::model::layers::linear_with_kernel(he_uniform(d_in * d_out, d_in, rng), d_in, d_out, device)
}

/// What a judge makes of a set of images.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub count: usize,
    /// [count, FEATURES] row-major.
    pub features: Vec<f32>,
    /// Class probabilities, [count, classes] row-major.
    pub probabilities: Vec<f32>,
}

impl Judgement {
    /// No images yet; [`Judgement::append`] adds slices.
    pub fn empty() -> Self {
        Self { count: 0, features: Vec::new(), probabilities: Vec::new() }
    }

    /// Add the judgement of more images after these.
    pub fn append(&mut self, mut more: Judgement) {
        self.count += more.count;
        self.features.append(&mut more.features);
        self.probabilities.append(&mut more.probabilities);
    }
}

/// A trained judge, ready to use.
#[derive(Debug)]
pub struct Judge {
    model: LeNet,
    device: Device,
    pub dataset: Dataset,
    /// The images it takes and what it tells apart.
    pub shape: JudgeShape,
    /// Accuracy on the held-out images (for the rotation task: of the rotations).
    pub test_accuracy: f64,
    /// Where it is cached (None when the cache could not be written).
    pub cached_at: Option<PathBuf>,
    /// Whether this call trained it (false: loaded from the cache).
    pub trained_now: bool,
}

/// Facts saved beside the cached weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JudgeCard {
    dataset: String,
    key: String,
    config: JudgeConfig,
    #[serde(default)]
    shape: Option<JudgeShape>,
    test_accuracy: f64,
    train_seconds: f64,
    /// SHA-256 of the weights file: a damaged cache entry is noticed, not used.
    weights_sha256: String,
}

/// The largest judge weights file read from the cache (the default judge is ~1.3 MB).
const MAX_JUDGE_BYTES: u64 = 64 << 20;

impl Judge {
    /// Load the cached judge of `data`'s images, or train and cache it. `cache` overrides the
    /// cache root. `progress` gets one line per epoch.
    pub fn load_or_train(
        data: &JudgeData,
        cache: Option<&Path>,
        config: &JudgeConfig,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        let dataset = data.dataset;
        let shape = data.shape;
        let key = cache_key(data, config);
        let root = cache.map(Path::to_path_buf).or_else(crate::data::cache_root);
        let device = Device::flex();
        let stem = format!("{}-{}", dataset.name(), &key[..16]);
        if let Some(root) = &root {
            let weights = root.join("judges").join(format!("{stem}.bpk"));
            let card_path = weights.with_extension("json");
            if weights.is_file() && card_path.is_file() {
                match load_cached(config, &shape, &weights, &card_path, &device) {
                    Ok((model, card)) => {
                        return Ok(Self {
                            model,
                            device,
                            dataset,
                            shape,
                            test_accuracy: card.test_accuracy,
                            cached_at: Some(weights),
                            trained_now: false,
                        });
                    }
                    // A damaged cache entry is only a lost cache: say so and train a new one.
                    Err(e) => progress(&format!("ignoring the cached judge ({e}); training a new one")),
                }
            }
        }

        let (train, test) = data.judge_sets(config.seed)?;
        let started = std::time::Instant::now();
        let model = train_lenet(&train, config, &shape, &device, progress);
        let mut judge =
            Self { model, device, dataset, shape, test_accuracy: 0.0, cached_at: None, trained_now: true };
        judge.test_accuracy = judge.accuracy(&test)?;
        progress(&format!(
            "judge held-out accuracy {:.2}% ({})",
            100.0 * judge.test_accuracy,
            shape.describe()
        ));
        if let Some(root) = root {
            let folder = root.join("judges");
            std::fs::create_dir_all(&folder).at("create", &folder)?;
            let weights = folder.join(format!("{stem}.bpk"));
            // Weights first, card last: a card means a complete judge, and it holds the
            // weights' checksum.
            let bytes = judge
                .model
                .clone()
                .into_record()
                .into_bytes()
                .map_err(|e| Error::Serialize { what: "judge".into(), problem: e.to_string() })?;
            let card = JudgeCard {
                dataset: dataset.name().into(),
                key,
                config: config.clone(),
                shape: Some(shape),
                test_accuracy: judge.test_accuracy,
                train_seconds: started.elapsed().as_secs_f64(),
                weights_sha256: sha256_hex(&bytes),
            };
            write_atomic(&weights, &bytes)?;
            let text = serde_json::to_string_pretty(&card).expect("card serializes");
            write_atomic(&weights.with_extension("json"), text.as_bytes())?;
            judge.cached_at = Some(weights);
        }
        Ok(judge)
    }

    /// Classes of the last layer (4 for the rotation task).
    pub fn classes(&self) -> usize {
        self.shape.classes
    }

    /// Features and class probabilities of `images` ([count, channels * side * side] in [-1, 1]).
    pub fn judge(&self, images: &[f32]) -> Result<Judgement> {
        let pixels = self.shape.dim();
        if !images.len().is_multiple_of(pixels) || images.is_empty() {
            let JudgeShape { side, channels, .. } = self.shape;
            return Err(Error::usage(
                "samples",
                format!(
                    "{} values are not a whole number of {side}x{side} images of {channels} channel(s)",
                    images.len()
                ),
            ));
        }
        let count = images.len() / pixels;
        let mut features = Vec::with_capacity(count * FEATURES);
        let mut probabilities = Vec::with_capacity(count * self.classes());
        // Small chunks: the conv activations of a chunk are its memory peak ([chunk, C1, 28, 28]).
        for chunk in images.chunks(128 * pixels) {
            let b = chunk.len() / pixels;
            let x = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [b, pixels]), &self.device);
            let f = self.model.features(x); // [b, 84]
            let p = softmax(self.model.logits(f.clone()), 1); // [b, classes]
            features.extend(f.into_data().try_into_vec::<f32>().expect("f32 features"));
            probabilities.extend(p.into_data().try_into_vec::<f32>().expect("f32 probabilities"));
        }
        Ok(Judgement { count, features, probabilities })
    }

    /// Fraction of `set` classified correctly.
    pub fn accuracy(&self, set: &LabelledImages) -> Result<f64> {
        let j = self.judge(&set.images.all_floats())?;
        let correct = j
            .probabilities
            .chunks(self.classes())
            .zip(&set.labels)
            .filter(|(p, label)| super::stats::argmax(p) == **label as usize)
            .count();
        Ok(correct as f64 / set.labels.len() as f64)
    }
}

/// Read a cached judge: its card (test accuracy) and its weights.
fn load_cached(
    config: &JudgeConfig,
    shape: &JudgeShape,
    weights: &Path,
    card_path: &Path,
    device: &Device,
) -> Result<(LeNet, JudgeCard)> {
    let text = read_limited(card_path, 1 << 20).map_err(|e| Error::bad_data(card_path, e.to_string()))?;
    let card: JudgeCard =
        serde_json::from_slice(&text).map_err(|e| Error::bad_data(card_path, e.to_string()))?;
    let bad_weights = |problem: String| Error::Weights { path: weights.to_path_buf(), problem };
    let bytes = read_limited(weights, MAX_JUDGE_BYTES).map_err(|e| bad_weights(e.to_string()))?;
    if sha256_hex(&bytes) != card.weights_sha256 {
        return Err(bad_weights(format!("checksum does not match {} (damaged)", card_path.display())));
    }
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| bad_weights(e.to_string()))?;
    if card.shape.is_some_and(|s| s != *shape) {
        return Err(Error::bad_data(card_path, format!("is a judge of {:?}, not of {shape:?}", card.shape)));
    }
    let blank = LeNet::new(config, shape, &mut ChaCha8Rng::seed_from_u64(config.seed), device);
    let model = blank.try_load_record(record).map_err(|e| bad_weights(e.to_string()))?;
    Ok((model, card))
}

/// SHA-256 over the judge's version and settings and the training images' checksums (MNIST's
/// and Fashion-MNIST's: of their training files; other data adds the judge's shape).
fn cache_key(data: &JudgeData, config: &JudgeConfig) -> String {
    let mut text = format!(
        "judge v{JUDGE_VERSION} {} {}\n",
        data.dataset.name(),
        serde_json::to_string(config).expect("config")
    );
    if !data.dataset.is_idx() {
        text.push_str(&serde_json::to_string(&data.shape).expect("shape"));
        text.push('\n');
    }
    text.push_str(&data.identity);
    sha256_hex(text.as_bytes())
}

/// Train the classifier: Adam, cross-entropy, shuffled mini-batches from a seeded stream; each
/// epoch a whole number of passes over the data, at least `cfg.min_epoch_steps` batches.
fn train_lenet(
    set: &LabelledImages,
    cfg: &JudgeConfig,
    shape: &JudgeShape,
    plain: &Device,
    progress: &mut dyn FnMut(&str),
) -> LeNet {
    let device = plain.clone().autodiff();
    let classes = shape.classes;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut model = LeNet::new(cfg, shape, &mut rng, &device);
    let mut optimizer: ModuleOptimizer = FusedAdam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8 }.init();
    let n = set.labels.len();
    let pixels = set.images.dim();
    let mut order: Vec<usize> = (0..n).collect();
    let mut batch = Vec::new();
    let mut lr = cfg.learning_rate;
    let passes = passes_per_epoch(n, cfg.batch_size, cfg.min_epoch_steps);
    for epoch in 0..cfg.epochs {
        let started = std::time::Instant::now();
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for _ in 0..passes {
            // Fisher-Yates with the seeded stream.
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for idx in order.chunks(cfg.batch_size) {
                let b = idx.len();
                set.images.gather_into(idx, &mut batch);
                let mut onehot = vec![0f32; b * classes];
                for (row, &i) in idx.iter().enumerate() {
                    onehot[row * classes + set.labels[i] as usize] = 1.0;
                }
                let x = Tensor::<2>::from_data(TensorData::new(batch.clone(), [b, pixels]), &device);
                let y = Tensor::<2>::from_data(TensorData::new(onehot, [b, classes]), &device);
                let logits = model.logits(model.features(x)); // [b, classes]
                // Cross-entropy: -mean over the batch of log p(true class).
                let loss = (log_softmax(logits, 1) * y).sum().neg() / (b as f32);
                loss_sum += loss.clone().into_scalar::<f32>() as f64;
                batches += 1;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optimizer.step(lr, model, grads);
            }
        }
        lr *= cfg.lr_decay;
        progress(&format!(
            "judge epoch {}/{}: loss {:.4} ({:.0} s)",
            epoch + 1,
            cfg.epochs,
            loss_sum / batches as f64,
            started.elapsed().as_secs_f64()
        ));
    }
    model.valid()
}

/// Passes over `n` images in one epoch of batches of `batch`: enough for `min_steps` batches.
fn passes_per_epoch(n: usize, batch: usize, min_steps: usize) -> usize {
    let per_pass = n.div_ceil(batch.max(1)).max(1);
    min_steps.div_ceil(per_pass).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_cached_judge_is_an_error_naming_the_file_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let (weights, card) = (tmp.path().join("j.bpk"), tmp.path().join("j.json"));
        std::fs::write(&weights, b"not burnpack").unwrap();
        std::fs::write(&card, b"{").unwrap();
        let device = Device::flex();
        let err = load_cached(&JudgeConfig::default(), &JudgeShape::IDX, &weights, &card, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("j.json"), "{err}");
        let text = serde_json::to_string(&JudgeCard {
            dataset: "mnist".into(),
            key: "k".into(),
            config: JudgeConfig::default(),
            shape: None,
            test_accuracy: 0.99,
            train_seconds: 1.0,
            weights_sha256: sha256_hex(b"not burnpack"),
        })
        .unwrap();
        std::fs::write(&card, text).unwrap();
        let err = load_cached(&JudgeConfig::default(), &JudgeShape::IDX, &weights, &card, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("j.bpk"), "{err}");
    }

    #[test]
    fn a_judge_cache_with_flipped_weight_bytes_is_refused_naming_the_file() {
        // The bug: corrupted judge weights changed FID from 875.6 to 699.0 while the table still
        // printed the judge's accuracy. The card holds the weights' checksum now.
        let tmp = tempfile::tempdir().unwrap();
        let cfg = JudgeConfig::default();
        let device = Device::flex();
        let model = LeNet::new(&cfg, &JudgeShape::IDX, &mut ChaCha8Rng::seed_from_u64(0), &device);
        let mut bytes = model.into_record().into_bytes().unwrap().to_vec();
        let (weights, card) = (tmp.path().join("j.bpk"), tmp.path().join("j.json"));
        let card_text = |bytes: &[u8]| {
            serde_json::to_string(&JudgeCard {
                dataset: "mnist".into(),
                key: "k".into(),
                config: cfg.clone(),
                shape: None,
                test_accuracy: 0.99,
                train_seconds: 1.0,
                weights_sha256: sha256_hex(bytes),
            })
            .unwrap()
        };
        std::fs::write(&card, card_text(&bytes)).unwrap();
        std::fs::write(&weights, &bytes).unwrap();
        load_cached(&cfg, &JudgeShape::IDX, &weights, &card, &device).expect("an intact cache entry loads");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&weights, &bytes).unwrap();
        let err = load_cached(&cfg, &JudgeShape::IDX, &weights, &card, &device).unwrap_err().to_string();
        assert!(err.contains("j.bpk") && err.contains("checksum"), "{err}");
    }

    #[test]
    fn features_and_probabilities_have_the_documented_shapes() {
        let cfg = JudgeConfig::default();
        let device = Device::flex();
        let model = LeNet::new(&cfg, &JudgeShape::IDX, &mut ChaCha8Rng::seed_from_u64(0), &device);
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.1f32; 3 * 784], [3, 784]), &device);
        let f = model.features(x);
        assert_eq!(f.dims(), [3, FEATURES]);
        assert_eq!(model.logits(f).dims(), [3, 10]);
    }

    #[test]
    fn the_network_is_shaped_from_the_images_and_the_classes() {
        let cfg = JudgeConfig::default();
        let device = Device::flex();
        for (side, channels, classes, flat) in
            [(32, 3, 4, 6), (16, 1, 3, 2), (12, 3, 2, 1), (100, 3, 5, 10), (256, 1, 2, 14)]
        {
            let shape = JudgeShape { side, channels, classes, task: JudgeTask::Classes };
            assert_eq!(shape.flat_side(), flat, "{shape:?}");
            let model = LeNet::new(&cfg, &shape, &mut ChaCha8Rng::seed_from_u64(0), &device);
            let x = Tensor::<2>::from_data(
                TensorData::new(vec![0.1f32; 2 * shape.dim()], [2, shape.dim()]),
                &device,
            );
            let f = model.features(x);
            assert_eq!(f.dims(), [2, FEATURES]);
            assert_eq!(model.logits(f).dims(), [2, classes]);
        }
    }

    #[test]
    fn an_epoch_is_whole_passes_of_at_least_the_minimum_steps() {
        // MNIST: 938 batches of 64 a pass, one pass an epoch (the judge as it always was).
        assert_eq!(passes_per_epoch(60_000, 64, 400), 1);
        assert_eq!(passes_per_epoch(60, 64, 400), 400);
        assert_eq!(passes_per_epoch(640, 64, 400), 40);
        assert_eq!(passes_per_epoch(0, 64, 0), 1);
    }
}
