//! The field's yardstick beside gantry's judge: FID, KID and Inception Score in the feature space
//! of pytorch-fid's InceptionV3 ([`net`]), from the weights file pytorch-fid and torch-fidelity
//! use (`pt_inception-2015-12-05-6726825d.pth`, read with burn-store's `PytorchStore`), so the
//! numbers can be set beside published ones.
//!
//! The weights are never shipped: a file the user names (`--inception-weights`, the run's
//! `eval.inception_weights`, `$GANTRY_INCEPTION_WEIGHTS`, in that order), else the copy in
//! gantry's cache, else (feature `download`) fetched from pytorch-fid's URL into the cache and
//! kept only when its SHA-256 is the published one. Nowhere and no download: an error saying how
//! to get it (exit 2), never another extractor in its place.

pub mod cache;
pub mod net;
pub mod report;

use std::path::{Path, PathBuf};

use crate::durable::{open_input, sha256_read};
use crate::error::{Error, Result};
use burn::store::{ModuleSnapshot, ModuleStore, PytorchStore};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use net::{FidInceptionV3, POOL_FEATURES};

/// The published weights file's name, SHA-256 and address (pytorch-fid's release).
pub const STANDARD_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";
pub const STANDARD_SHA256: &str = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2";
pub const STANDARD_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
/// The environment variable naming a weights file.
pub const WEIGHTS_ENV: &str = "GANTRY_INCEPTION_WEIGHTS";
/// The largest weights file read (the published one is 95 MB).
const MAX_WEIGHTS_BYTES: u64 = 400 << 20;
/// What the extractor computes (network, preprocessing), part of the reference cache's key: a
/// build that computes other features never reads an older build's.
pub const EXTRACTOR_VERSION: u32 = 1;
/// Images per forward pass (pytorch-fid's default batch).
const BATCH: usize = 50;

/// gantry's cache copy of the published weights.
pub fn cached_weights() -> Option<PathBuf> {
    crate::data::cache_root().map(|root| root.join("inception").join(STANDARD_FILE))
}

/// Find the weights file: the first of `flag`, `config` (the run's `eval.inception_weights`) and
/// `$GANTRY_INCEPTION_WEIGHTS` that is given (it must exist), else the cache's copy, else a
/// download into the cache.
pub fn locate_weights(flag: Option<&Path>, config: Option<&Path>) -> Result<PathBuf> {
    let env = std::env::var_os(WEIGHTS_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = flag.map(Path::to_path_buf).or(config.map(Path::to_path_buf)).or(env) {
        if !path.exists() {
            let how = how_to_get();
            return Err(Error::Weights { path, problem: format!("no such file; {how}") });
        }
        return Ok(path);
    }
    match cached_weights() {
        Some(path) if path.is_file() => Ok(path),
        cache => download(cache.as_deref()),
    }
}

#[cfg(feature = "download")]
fn download(cache: Option<&Path>) -> Result<PathBuf> {
    let Some(dest) = cache else {
        return Err(not_found(None, Some("no cache folder: set GANTRY_CACHE_DIR")));
    };
    eprintln!("gantry: the Inception weights are not on this machine; downloading {STANDARD_URL}");
    match crate::data::download::fetch_verified(STANDARD_URL, STANDARD_SHA256, dest, MAX_WEIGHTS_BYTES) {
        Ok(()) => Ok(dest.to_path_buf()),
        Err(e) => Err(not_found(Some(dest), Some(&e.to_string()))),
    }
}

#[cfg(not(feature = "download"))]
fn download(cache: Option<&Path>) -> Result<PathBuf> {
    Err(not_found(cache, Some("this build has no downloads (feature `download` off)")))
}

/// Where the weights come from and how to hand them to gantry.
fn how_to_get() -> String {
    format!(
        "the Inception weights are {STANDARD_FILE} (95 MB, SHA-256 {STANDARD_SHA256}): download them \
         from {STANDARD_URL} and give the file with --inception-weights FILE, the run's \
         eval.inception_weights or ${WEIGHTS_ENV}"
    )
}

/// The error when the weights are nowhere: how to get them.
fn not_found(cache: Option<&Path>, why: Option<&str>) -> Error {
    let mut msg = format!("no Inception weights were found; {}", how_to_get());
    if let Some(cache) = cache {
        msg.push_str(&format!(", or put it at {}", cache.display()));
    }
    if let Some(why) = why {
        msg.push_str(&format!(" (the download did not work: {why})"));
    }
    Error::DataNotFound(msg)
}

/// What identifies the extractor in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsIdentity {
    pub file: PathBuf,
    pub sha256: String,
    /// Whether these are the published weights (else the scores are not comparable with papers').
    pub standard: bool,
    /// 1 for the real network; the tests' reduced networks divide every width.
    pub width_divisor: usize,
}

impl WeightsIdentity {
    /// Width of the pool features (2048 for the real network).
    pub fn width(&self) -> usize {
        POOL_FEATURES / self.width_divisor
    }
}

/// pytorch-fid's InceptionV3 with its weights, on the CPU.
#[derive(Debug)]
pub struct Inception {
    net: FidInceptionV3,
    device: Device,
    pub weights: WeightsIdentity,
}

/// Features and class probabilities of a set of images.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub count: usize,
    /// [count, width] pool features, row-major.
    pub features: Vec<f32>,
    /// [count, 1008] softmax of the unbiased logits (torch-fidelity's Inception Score input).
    pub probabilities: Vec<f32>,
}

impl Extracted {
    /// Add more images' results after these.
    pub fn append(&mut self, mut more: Extracted) {
        self.count += more.count;
        self.features.append(&mut more.features);
        self.probabilities.append(&mut more.probabilities);
    }
}

impl Inception {
    /// Read a PyTorch weights file of pytorch-fid's network (or a narrower one with the same
    /// keys); anything else is refused naming the file and what did not fit.
    pub fn load(path: &Path) -> Result<Self> {
        // Hashed through the handle that was checked (a regular file, at most the limit).
        let (mut file, _) = open_input(path, MAX_WEIGHTS_BYTES, "Inception weights file")?;
        let sha256 = sha256_read(&mut file, path)?;
        let bad = |problem: String| Error::Weights { path: path.to_path_buf(), problem };
        let mut store = PytorchStore::from_file(path).allow_partial(true).validate(false);
        let first =
            guarded(|| store.get_tensor("Conv2d_1a_3x3.conv.weight").map(|t| t.map(|t| t.shape.to_vec())))
                .map_err(|e| bad(format!("not a PyTorch weights file pytorch-fid's network reads: {e}")))?
                .ok_or_else(|| {
                    bad("no tensor Conv2d_1a_3x3.conv.weight: not pytorch-fid's InceptionV3".into())
                })?;
        let width_divisor = width_divisor(&first).map_err(bad)?;
        let device = Device::flex();
        let mut net = FidInceptionV3::new(width_divisor, &device);
        let result =
            guarded(|| net.load_from(&mut store)).map_err(|e| bad(format!("cannot be read: {e}")))?;
        if !result.missing.is_empty() || !result.errors.is_empty() {
            let missing: Vec<&str> = result.missing.iter().take(3).map(|(k, _)| k.as_str()).collect();
            let errors: Vec<String> = result.errors.iter().take(3).map(|e| e.to_string()).collect();
            return Err(bad(format!(
                "does not fit pytorch-fid's InceptionV3: {} tensors missing ({}), {} that do not fit ({})",
                result.missing.len(),
                missing.join(", "),
                result.errors.len(),
                errors.join("; ")
            )));
        }
        let standard = sha256 == STANDARD_SHA256;
        let weights = WeightsIdentity { file: path.to_path_buf(), sha256, standard, width_divisor };
        Ok(Self { net, device, weights })
    }

    /// Features and probabilities of `images` ([n, channels * side * side] in [-1, 1], 1 or 3
    /// channels), in batches of 50. Each pixel is first rounded to 8 bits, as a PNG holds it
    /// (the same numbers pytorch-fid gets from the images saved), grey repeated into RGB.
    pub fn extract(&self, images: &[f32], side: usize, channels: usize) -> Result<Extracted> {
        let dim = channels * side * side;
        if !matches!(channels, 1 | 3) || dim == 0 || !images.len().is_multiple_of(dim) {
            return Err(Error::usage(
                "eval",
                format!(
                    "the Inception network takes grey or RGB images, got {channels} channels of {side}x{side}"
                ),
            ));
        }
        let mut out = Extracted::default();
        for chunk in images.chunks(BATCH * dim) {
            let b = chunk.len() / dim;
            let unit: Vec<f32> = chunk.iter().map(|&v| quantized_unit(v)).collect();
            let x = Tensor::<4>::from_data(TensorData::new(unit, [b, channels, side, side]), &self.device);
            let x = if channels == 1 { x.repeat_dim(1, 3) } else { x };
            let pool = self.net.pool_features(x);
            let probs = softmax(self.net.logits_unbiased(pool.clone()), 1);
            out.append(Extracted { count: b, features: floats(pool)?, probabilities: floats(probs)? });
        }
        Ok(out)
    }

    /// [`Inception::extract`] with a progress bar naming `what` (a thousand images take minutes).
    pub fn extract_shown(
        &self,
        images: &[f32],
        side: usize,
        channels: usize,
        what: &str,
    ) -> Result<Extracted> {
        let dim = (channels * side * side).max(1);
        let bar = progress(images.len() / dim, what);
        let mut out = Extracted::default();
        for slice in images.chunks(10 * BATCH * dim) {
            out.append(self.extract(slice, side, channels)?);
            bar.set_position(out.count as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

/// A bar counting `n` images through the Inception network.
pub fn progress(n: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images, {eta} left")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("Inception features of {what}"));
    bar
}

/// A value in [-1, 1] as the 8-bit pixel a PNG would hold, back in [0, 1].
fn quantized_unit(v: f32) -> f32 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 255.0
}

fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Serialize { what: "Inception features".into(), problem: format!("{e:?}") })
}

/// The width divisor a file's first convolution [32 / d, 3, 3, 3] says.
fn width_divisor(first_conv: &[usize]) -> std::result::Result<usize, String> {
    match first_conv {
        [out @ (2 | 4 | 8 | 16 | 32), 3, 3, 3] => Ok(32 / out),
        other => Err(format!(
            "Conv2d_1a_3x3.conv.weight has shape {other:?}, expected [32, 3, 3, 3] (pytorch-fid's InceptionV3)"
        )),
    }
}

/// Run `f`, turning a panic inside the PyTorch reader on a damaged file into an error.
fn guarded<T, E: std::fmt::Display>(
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the PyTorch reader failed on it (damaged file?)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_width_divisor_comes_from_the_first_convolution() {
        assert_eq!(width_divisor(&[32, 3, 3, 3]), Ok(1));
        assert_eq!(width_divisor(&[2, 3, 3, 3]), Ok(16));
        assert!(width_divisor(&[3, 3, 3, 3]).is_err());
        assert!(width_divisor(&[32, 1, 3, 3]).is_err());
        assert!(width_divisor(&[1, 3, 3, 3]).is_err());
    }

    #[test]
    fn weights_found_nowhere_say_where_to_get_them_and_are_bad_input() {
        let err = not_found(Some(Path::new("/cache/inception/x.pth")), Some("offline"));
        let msg = err.to_string();
        for part in [
            STANDARD_URL,
            STANDARD_SHA256,
            "--inception-weights",
            WEIGHTS_ENV,
            "eval.inception_weights",
            "/cache/inception/x.pth",
            "offline",
        ] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn pixels_are_rounded_to_what_a_png_holds() {
        assert_eq!(quantized_unit(-1.0), 0.0);
        assert_eq!(quantized_unit(1.0), 1.0);
        assert_eq!(quantized_unit(2.0), 1.0);
        assert_eq!(quantized_unit(0.0), 128.0 / 255.0);
    }
}
