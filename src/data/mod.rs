//! Training images: where to find them, how to read them, and how to turn them into the
//! `[-1, 1]` floats the GAN trains on. MNIST's IDX files ([`idx`]), CIFAR-10's binary batches
//! ([`cifar`]), or a folder of the user's PNG and JPEG files ([`folder`]).
//!
//! Search order for a data set's folder: `--data DIR` (config `data.dir`; when given, it must hold
//! the files), then `$GANTRY_DATA`, then the system folder of Debian's `dataset-fashion-mnist`
//! (Fashion-MNIST only), then the per-user cache. MNIST missing everywhere is downloaded into the
//! cache (feature `download`).

pub mod cifar;
pub mod clusters;
#[cfg(feature = "download")]
pub mod download;
pub mod folder;
pub mod idx;

use std::path::{Path, PathBuf};

use crate::config::{DataConfig, Dataset};
use crate::error::{Error, Result};

pub use idx::{IdxImages, read_images, read_labels};

/// The four standard file stems of an MNIST-format data set.
pub const FILE_STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Where Debian's `dataset-fashion-mnist` package installs its files.
pub const DEBIAN_FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Environment variable naming a data folder.
pub const DATA_ENV: &str = "GANTRY_DATA";

/// Training images, `[count, channels, rows, cols]` row-major, kept as the 8-bit values read (a
/// quarter of the memory of floats: this set is most of a run's memory) and converted to `[-1, 1]`
/// floats as they are used.
#[derive(Debug, Clone)]
pub struct TrainingImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub bytes: Vec<u8>,
    /// The file they were read from.
    pub source: PathBuf,
    /// Each image's class, when the run is conditional (read from the labels file beside them).
    pub labels: Option<Vec<u8>>,
}

impl TrainingImages {
    /// Values per image (pixels times channels).
    pub fn dim(&self) -> usize {
        self.rows * self.cols * self.channels
    }

    pub fn from_idx(images: IdxImages, source: PathBuf) -> Self {
        Self {
            count: images.count,
            rows: images.rows,
            cols: images.cols,
            channels: 1,
            bytes: images.pixels,
            source,
            labels: None,
        }
    }

    /// Copy the images at `indices` into `out` as `[-1, 1]` floats (`[indices.len(), dim]`).
    pub fn gather_into(&self, indices: &[usize], out: &mut Vec<f32>) {
        let d = self.dim();
        out.clear();
        for &i in indices {
            out.extend(self.bytes[i * d..(i + 1) * d].iter().map(|&p| to_unit(p)));
        }
    }

    /// Images `range` as `[-1, 1]` floats (`[range.len(), dim]`).
    pub fn floats(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let d = self.dim();
        self.bytes[range.start * d..range.end * d].iter().map(|&p| to_unit(p)).collect()
    }

    /// All images as `[-1, 1]` floats.
    pub fn all_floats(&self) -> Vec<f32> {
        self.floats(0..self.count)
    }
}

/// An 8-bit pixel in `[-1, 1]`, as the reference scales it: `x / 127.5 - 1`.
#[inline]
pub fn to_unit(p: u8) -> f32 {
    p as f32 / 127.5 - 1.0
}

/// Pixels of one MNIST-format image (28 x 28).
pub const PIXELS_28: usize = 28 * 28;

/// The path of `stem` in `dir`, compressed or raw, if present.
pub fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|name| dir.join(name)).find(|p| p.is_file())
}

/// Per-user cache folder for a data set (`~/.cache/gantry/<dataset>` on Linux).
pub fn cache_dir(dataset: Dataset) -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("gantry").join(dataset.name()))
}

/// The folders searched for `dataset`, in order, given an explicit `--data` folder if any.
pub fn candidate_dirs(dataset: Dataset, explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Some(env) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        let env = PathBuf::from(env);
        // $GANTRY_DATA may be the files' own folder or a root with one folder per data set.
        dirs.push(env.join(dataset.name()));
        if dataset == Dataset::Mnist {
            dirs.push(env);
        }
    }
    if dataset == Dataset::FashionMnist {
        dirs.push(PathBuf::from(DEBIAN_FASHION_DIR));
    }
    dirs.extend(cache_dir(dataset));
    dirs
}

/// Find the folder holding `dataset`'s training images, downloading MNIST into the cache when it
/// is nowhere (and the `download` feature is on).
pub fn locate(dataset: Dataset, explicit: Option<&Path>) -> Result<PathBuf> {
    let candidates = candidate_dirs(dataset, explicit);
    if let Some(dir) = candidates.iter().find(|d| find_file(d, FILE_STEMS[0]).is_some()) {
        return Ok(dir.clone());
    }
    if let Some(dir) = explicit {
        return Err(Error::DataNotFound(format!(
            "no {} training images in {} (expected {}.gz or {}; the other files: {})",
            dataset.name(),
            dir.display(),
            FILE_STEMS[0],
            FILE_STEMS[0],
            FILE_STEMS[1..].join(", ")
        )));
    }
    #[cfg(feature = "download")]
    if dataset == Dataset::Mnist
        && let Some(cache) = cache_dir(dataset)
    {
        match download::fetch_mnist(&cache) {
            Ok(()) => return Ok(cache),
            Err(e) => return Err(not_found(dataset, &candidates, Some(&e))),
        }
    }
    Err(not_found(dataset, &candidates, None))
}

fn not_found(dataset: Dataset, searched: &[PathBuf], download_error: Option<&Error>) -> Error {
    let list: Vec<String> = searched.iter().map(|d| format!("  {}", d.display())).collect();
    let mut msg = format!(
        "{} not found. Searched:\n{}\n",
        dataset.name(),
        if list.is_empty() { "  (nothing)".to_string() } else { list.join("\n") }
    );
    if let Some(e) = download_error {
        msg.push_str(&format!("Download failed (offline?): {e}\n"));
    }
    msg.push_str(&format!(
        "Put the four files {} (each .gz or raw) into one folder and pass it with --data DIR, \
         or set {DATA_ENV}=DIR",
        FILE_STEMS.join(", ")
    ));
    if let Some(cache) = cache_dir(dataset) {
        msg.push_str(&format!(", or copy them into {}", cache.display()));
    }
    if dataset == Dataset::FashionMnist {
        msg.push_str(&format!(
            ". On Debian and Ubuntu, `apt-get install dataset-fashion-mnist` puts them in {DEBIAN_FASHION_DIR}"
        ));
    }
    msg.push('.');
    Error::DataNotFound(msg)
}

/// Locate and read the training images `data` names, from the folder `explicit` when given; with
/// `classes`, their labels too, each checked to be below it (a conditional run). `progress`: say
/// what a folder's decoding skipped and resized, with a progress bar on a terminal.
pub fn load_training_images(
    data: &DataConfig,
    explicit: Option<&Path>,
    classes: Option<usize>,
    progress: Progress,
) -> Result<TrainingImages> {
    let dataset = data.dataset;
    let mut images = match dataset {
        Dataset::Mnist | Dataset::FashionMnist => return load_idx_training(dataset, explicit, classes),
        Dataset::Cifar10 => cifar::load_train(required_dir(dataset, explicit)?)?,
        Dataset::Folder => {
            let dir = required_dir(dataset, explicit)?;
            let (images, report) = load_folder(data, dir, progress)?;
            let side = images.rows;
            for line in report.lines(side) {
                eprintln!("gantry: {}: {line}", dir.display());
            }
            if progress == Progress::Shown && !report.cached {
                eprintln!(
                    "gantry: decoded {} images of {} into {}",
                    images.count,
                    dir.display(),
                    images.source.display()
                );
            }
            match (classes, &images.labels) {
                (Some(_), None) => {
                    return Err(Error::bad_data(
                        dir,
                        "has no class sub-folders: a conditional run needs one folder of images per class",
                    ));
                }
                (Some(classes), Some(labels)) => {
                    check_class_folders(&report.classes, classes, dir)?;
                    check_labels(labels, classes, dir)?;
                }
                (None, _) => {}
            }
            images
        }
    };
    if let (Some(classes), Some(labels), Dataset::Cifar10) = (classes, &images.labels, dataset) {
        check_labels(labels, classes, &images.source)?;
    }
    if classes.is_none() {
        images.labels = None;
    }
    Ok(images)
}

/// A labelled folder must hold exactly the classes the run asks for (`model.classes`): a class
/// with no folder would be asked of G with no image to learn it from.
fn check_class_folders(found: &[String], classes: usize, dir: &Path) -> Result<()> {
    if found.len() == classes {
        return Ok(());
    }
    Err(Error::bad_data(
        dir,
        format!(
            "has {} class folder(s) ({}), but model.classes = {classes}: set model.classes = {} or add \
             the missing class folders",
            found.len(),
            found.join(", "),
            found.len()
        ),
    ))
}

/// What a `--data` folder holds, judged from its names alone (nothing is read): which data set it
/// is, for a `gantry train --data DIR` that does not say (`--dataset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// MNIST's (or Fashion-MNIST's) IDX training images.
    Idx,
    /// CIFAR-10's binary batches (in the folder or its `cifar-10-batches-bin/`).
    Cifar10,
    /// PNG or JPEG files: this many at the top, and this many class sub-folders holding some.
    Images { top: usize, class_folders: usize },
    /// None of these.
    Nothing,
}

/// Look at the folder `dir` as [`Found`] says (its listing and its sub-folders' listings, at most
/// a few thousand names each; nothing is opened).
pub fn look_at(dir: &Path) -> Found {
    if find_file(dir, FILE_STEMS[0]).is_some() {
        return Found::Idx;
    }
    if cifar::locate(dir).is_ok() {
        return Found::Cifar10;
    }
    let names = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).take(100_000).collect())
            .unwrap_or_default()
    };
    let is_image = |p: &Path| folder::has_image_extension(p) && p.is_file();
    let listing = names(dir);
    let top = listing.iter().filter(|p| is_image(p)).count();
    let class_folders = listing
        .iter()
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .filter(|p| names(p).iter().any(|q| is_image(q)))
        .count();
    if top == 0 && class_folders == 0 { Found::Nothing } else { Found::Images { top, class_folders } }
}

/// Whether a long read (decoding a folder) shows a bar and says what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    #[default]
    Quiet,
    Shown,
}

/// The per-user cache root: `$GANTRY_CACHE_DIR`, else the OS cache folder's `gantry/` (decoded
/// image folders, the judges).
pub fn cache_root() -> Option<PathBuf> {
    std::env::var_os("GANTRY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("gantry")))
}

/// The folder a data set that is not found by searching (CIFAR-10, an image folder) needs.
pub fn required_dir(dataset: Dataset, explicit: Option<&Path>) -> Result<&Path> {
    explicit.ok_or_else(|| {
        Error::DataNotFound(format!("dataset = \"{}\" needs its folder: --data DIR", dataset.name()))
    })
}

/// The image folder `dir` decoded as `data` asks (its side and channels), through the per-user
/// cache of decoded folders.
pub fn load_folder(
    data: &DataConfig,
    dir: &Path,
    progress: Progress,
) -> Result<(TrainingImages, folder::FolderReport)> {
    let (side, channels) = data.shape();
    let root = cache_root().ok_or_else(|| {
        Error::DataNotFound("no cache folder for the decoded images: set GANTRY_CACHE_DIR".into())
    })?;
    folder::load(dir, side, channels, &root, progress)
}

/// A progress bar for decoding `n` images of `dir` (drawn on a terminal only).
pub(crate) fn decode_bar(n: u64, progress: Progress, dir: &Path) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let visible = progress == Progress::Shown && std::io::stderr().is_terminal();
    let target = if visible {
        indicatif::ProgressDrawTarget::stderr_with_hz(4)
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(n), target);
    if let Ok(style) = indicatif::ProgressStyle::with_template("decoding {msg} {bar:30} {pos}/{len} [{eta}]")
    {
        bar.set_style(style);
    }
    bar.set_message(dir.display().to_string());
    bar
}

/// MNIST-format training images (see [`load_training_images`]).
fn load_idx_training(
    dataset: Dataset,
    explicit: Option<&Path>,
    classes: Option<usize>,
) -> Result<TrainingImages> {
    let dir = locate(dataset, explicit)?;
    if let Some(classes) = classes {
        let mut set = load_labelled(dataset, &dir, Split::Train)?;
        let label_path = find_file(&dir, FILE_STEMS[1]).unwrap_or_else(|| dir.join(FILE_STEMS[1]));
        check_labels(&set.labels, classes, &label_path)?;
        set.images.labels = Some(set.labels);
        return Ok(set.images);
    }
    let path = find_file(&dir, FILE_STEMS[0]).ok_or_else(|| {
        Error::DataNotFound(format!("{}: training images vanished while reading", dir.display()))
    })?;
    let images = read_images(&path)?;
    if images.count == 0 {
        return Err(Error::bad_data(&path, "holds no images"));
    }
    Ok(TrainingImages::from_idx(images, path))
}

/// A conditional run's labels: each below `classes`, and more than one class among them.
pub fn check_labels(labels: &[u8], classes: usize, path: &Path) -> Result<()> {
    if labels.is_empty() {
        return Err(Error::bad_data(path, "holds no labels"));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::bad_data(
            path,
            format!("label {bad} is not one of the model's {classes} classes (model.classes)"),
        ));
    }
    if labels.iter().all(|&l| l == labels[0]) {
        return Err(Error::bad_data(
            path,
            format!("every image is of class {}: a conditional run needs two classes or more", labels[0]),
        ));
    }
    Ok(())
}

/// Which half of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Images with their class labels.
#[derive(Debug, Clone)]
pub struct LabelledImages {
    pub images: TrainingImages,
    pub labels: Vec<u8>,
}

/// Read one split's images (as `[-1, 1]` floats) and labels from `dir`, checking they agree.
pub fn load_labelled(dataset: Dataset, dir: &Path, split: Split) -> Result<LabelledImages> {
    let (image_stem, label_stem) = match split {
        Split::Train => (FILE_STEMS[0], FILE_STEMS[1]),
        Split::Test => (FILE_STEMS[2], FILE_STEMS[3]),
    };
    let missing = |stem: &str| {
        Error::DataNotFound(format!("{} data in {}: {stem}(.gz) is missing", dataset.name(), dir.display()))
    };
    let image_path = find_file(dir, image_stem).ok_or_else(|| missing(image_stem))?;
    let label_path = find_file(dir, label_stem).ok_or_else(|| missing(label_stem))?;
    let images = read_images(&image_path)?;
    let labels = idx::read_labels(&label_path)?;
    if labels.len() != images.count {
        return Err(Error::bad_data(
            &label_path,
            format!("{} labels for the {} images of {}", labels.len(), images.count, image_path.display()),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= 10) {
        return Err(Error::bad_data(&label_path, format!("label {bad} is not a class 0-9")));
    }
    Ok(LabelledImages { images: TrainingImages::from_idx(images, image_path), labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_folder_without_files_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(Dataset::Mnist, Some(dir.path())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn explicit_folder_is_the_only_candidate() {
        let d = PathBuf::from("some/dir");
        assert_eq!(candidate_dirs(Dataset::FashionMnist, Some(&d)), vec![d]);
    }

    #[test]
    fn fashion_looks_in_debians_folder() {
        let c = candidate_dirs(Dataset::FashionMnist, None);
        assert!(c.contains(&PathBuf::from(DEBIAN_FASHION_DIR)));
    }

    #[test]
    fn a_conditional_runs_labels_must_fit_its_classes_and_be_more_than_one() {
        let p = Path::new("labels-file");
        assert!(check_labels(&[0, 1, 2], 3, p).is_ok());
        let e = check_labels(&[0, 3], 3, p).unwrap_err();
        assert!(e.to_string().contains("label 3") && e.to_string().contains("labels-file"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = check_labels(&[4, 4, 4], 10, p).unwrap_err().to_string();
        assert!(e.contains("every image is of class 4"), "{e}");
        assert!(check_labels(&[], 10, p).is_err());
    }

    #[test]
    fn scaling_matches_the_reference() {
        let imgs = IdxImages { count: 1, rows: 1, cols: 3, pixels: vec![0, 255, 128] };
        let t = TrainingImages::from_idx(imgs, PathBuf::new());
        let f = t.all_floats();
        assert_eq!(f[0], -1.0);
        assert_eq!(f[1], 1.0);
        assert!((f[2] - 0.003_921_6).abs() < 1e-6);
    }
}
