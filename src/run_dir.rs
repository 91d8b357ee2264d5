//! The run folder: one place that holds everything a run produces, laid out so numpy, TensorBoard
//! and a browser can read it directly.
//!
//! ```text
//! runs/<name>/
//!   config.toml          the resolved configuration
//!   metrics.csv          one row per iteration
//!   d_loss_real.npy  d_loss_fake.npy  g_loss.npy  d_output.npy
//!   samples/step_000000.png ...   fixed-noise grids (after N iterations)
//!   plots/curves_raw.{png,svg}  plots/curves_smoothed.{png,svg}
//!   weights/generator.bpk  weights/discriminator.bpk   (burn's burnpack format)
//!   weights/generator.safetensors                        (for Python and other tools)
//!   checkpoints/step_NNNNNN/                              (see `checkpoint`)
//!   run.json             facts about the run (data file, threads, wall time)
//!   alerts.json          training-failure alerts (empty list when healthy)
//!   timelapse.gif        the fixed-noise grids as an animation
//!   report.html          one self-contained page (`gantry report`)
//!   .lock                held by the process writing the run
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::lock::{LOCK_FILE, RunLock};

/// Paths inside one run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The paths of the run folder at `root`, which may not exist yet (nothing is checked).
    pub fn from_path(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// A view of an existing run folder (nothing is created; it must have a config.toml).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.join(CONFIG).is_file() {
            return Err(Error::RunDir {
                path: root,
                problem: "not a gantry run folder (no config.toml)".into(),
            });
        }
        Ok(Self { root })
    }

    /// Create a run folder for a new run and take its lock. An existing non-empty folder is
    /// refused unless `existing` is [`Existing::Replace`] (`--force`); then it must be a run
    /// [`is_run_folder`] proves gantry wrote, and not the current folder, one above it, or the home folder,
    /// and then only the files gantry writes in a run folder are removed (never while another
    /// process holds its lock). Returns the entries that were kept because gantry did not write
    /// them.
    pub fn create_locked(
        root: impl Into<PathBuf>,
        existing: Existing,
    ) -> Result<(Self, RunLock, Vec<PathBuf>)> {
        let root = root.into();
        if root.exists() && !root.is_dir() {
            return Err(Error::RunDir { path: root, problem: "exists and is not a folder".into() });
        }
        let non_empty = is_non_empty_dir(&root)?;
        if non_empty && existing == Existing::Keep {
            let problem = if is_run_folder(&root) {
                "already holds a gantry run; choose another --out, continue it with `gantry resume`, or \
                 pass --force to replace it (gantry's files only)"
            } else {
                "already exists, is not empty and is not a gantry run folder; choose another --out"
            };
            return Err(Error::RunDir { path: root, problem: problem.into() });
        }
        if non_empty {
            check_replaceable(&root)?;
        }
        fs::create_dir_all(&root).at("create", &root)?;
        let lock = RunLock::acquire(&root)?;
        let kept = if non_empty { remove_run_files(&root)? } else { Vec::new() };
        let dir = Self { root };
        dir.make_folders()?;
        Ok((dir, lock, kept))
    }

    /// Make the run's sub-folders (samples, plots, weights, checkpoints) where they are missing:
    /// at the start of a run, and when a resumed run's were removed.
    pub fn make_folders(&self) -> Result<()> {
        for sub in [self.samples_dir(), self.plots_dir(), self.weights_dir(), self.checkpoints_dir()] {
            fs::create_dir_all(&sub).at("create", &sub)?;
        }
        Ok(())
    }

    /// The run's facts file (run.json; see [`RunInfo`]).
    pub fn info_path(&self) -> PathBuf {
        self.root.join(RUN_INFO)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG)
    }
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    pub fn samples_dir(&self) -> PathBuf {
        self.root.join("samples")
    }
    pub fn plots_dir(&self) -> PathBuf {
        self.root.join("plots")
    }
    pub fn weights_dir(&self) -> PathBuf {
        self.root.join("weights")
    }
    /// Sample quality measured during training (one row per evaluation).
    pub fn eval_csv(&self) -> PathBuf {
        self.root.join("eval.csv")
    }
    pub fn alerts(&self) -> PathBuf {
        self.root.join("alerts.json")
    }
    pub fn timelapse(&self) -> PathBuf {
        self.root.join("timelapse.gif")
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.html")
    }
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join(CHECKPOINTS)
    }
    pub fn generator_safetensors(&self) -> PathBuf {
        self.weights_dir().join("generator.safetensors")
    }
    pub fn generator_weights(&self) -> PathBuf {
        self.weights_dir().join(crate::checkpoint::GENERATOR_FILE)
    }
    pub fn discriminator_weights(&self) -> PathBuf {
        self.weights_dir().join(crate::checkpoint::DISCRIMINATOR_FILE)
    }
    /// The sample grid after `step` iterations.
    pub fn sample_grid(&self, step: usize) -> PathBuf {
        self.samples_dir().join(format!("step_{step:06}.png"))
    }
}

/// Facts about a run that are not configuration, saved as `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub gantry_version: String,
    /// Training images used.
    pub data_file: String,
    pub image_rows: usize,
    pub image_cols: usize,
    /// 1 (grey) or 3 (RGB); absent (1) in runs of older versions.
    #[serde(default = "one_channel")]
    pub image_channels: usize,
    /// Compute threads actually used.
    pub threads: usize,
    /// Iterations completed.
    pub iterations_done: usize,
    /// Wall time of the training loop, seconds (checkpoint writes included).
    pub wall_seconds: f64,
    /// Checkpoints written by the last process, and the median time one took to write.
    pub checkpoints_written: usize,
    pub checkpoint_ms_median: f64,
    /// SHA-256 of `data_file`, so later commands on the run find and verify the same data
    /// (absent in runs of older versions).
    #[serde(default)]
    pub data_sha256: Option<String>,
    /// A self-conditioned run's cluster sizes (`data.clusters`), or the sizes of the (class,
    /// cluster) ids of one with `model.clusters_per_class`: what G's ids are drawn in proportion
    /// to, by the judge and `gantry sample` as in training, and what a resume's clustering must
    /// reproduce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_sizes: Option<Vec<usize>>,
    /// The run folder's format ([`RUN_FORMAT`]; 0, absent, in runs of older versions): from 1 on,
    /// the final weights are never without `weights/manifest.json`, so a missing one is damage,
    /// not age.
    #[serde(default)]
    pub format: u32,
}

/// The format new runs are written in (see [`RunInfo::format`]).
pub const RUN_FORMAT: u32 = 1;

fn one_channel() -> usize {
    1
}

impl RunInfo {
    /// The facts known when a run starts (or resumes): no iterations, no wall time yet.
    pub fn started(data: &DataFacts, images: &crate::data::TrainingImages, threads: usize) -> Self {
        Self {
            gantry_version: env!("CARGO_PKG_VERSION").to_string(),
            data_file: data.file.display().to_string(),
            image_rows: images.rows,
            image_cols: images.cols,
            image_channels: images.channels,
            threads,
            iterations_done: 0,
            wall_seconds: 0.0,
            checkpoints_written: 0,
            checkpoint_ms_median: 0.0,
            data_sha256: Some(data.sha256.clone()),
            cluster_sizes: data.cluster_sizes.clone(),
            format: RUN_FORMAT,
        }
    }

    pub fn read(run: &RunDir) -> Result<Self> {
        let path = run.info_path();
        let text = crate::durable::read_text_limited(&path, 1 << 20, "run facts")?;
        serde_json::from_str(&text).map_err(|e| Error::bad_data(&path, e.to_string()))
    }

    pub fn write(&self, run: &RunDir) -> Result<()> {
        let path = run.info_path();
        let text = serde_json::to_string_pretty(self).expect("RunInfo serializes");
        crate::durable::write_atomic(&path, (text + "\n").as_bytes())
    }
}

/// What a run records about its training data (run.json), so that later commands on the run
/// find the same data without being told and can tell other data.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFacts {
    /// The training-images file.
    pub file: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// The sizes of its k-means clusters, in a self-conditioned run (`data.clusters`) or one with
    /// `model.clusters_per_class` (there, id c * clusters_per_class + j: class c's cluster j).
    pub cluster_sizes: Option<Vec<usize>>,
}

impl DataFacts {
    /// The facts of the training images just read.
    pub fn of(images: &crate::data::TrainingImages) -> Result<Self> {
        Ok(Self {
            file: images.source.clone(),
            sha256: crate::durable::sha256_file(&images.source)?,
            cluster_sizes: None,
        })
    }
}

/// The data folder a command on an existing run should read, when none is given explicitly:
/// the run's config's `data.dir`, else the folder recorded in run.json when its training file
/// still has the recorded SHA-256, else None (the usual search: $GANTRY_DATA, the cache).
pub fn remembered_data_dir(run: &RunDir, config: &crate::Config) -> Option<PathBuf> {
    if let Some(dir) = &config.data.dir {
        return Some(dir.clone());
    }
    let info = RunInfo::read(run).ok()?;
    let file = PathBuf::from(info.data_file);
    let sha = info.data_sha256?;
    (file.is_file() && crate::durable::sha256_file(&file).ok()? == sha)
        .then(|| file.parent().map(Path::to_path_buf))?
}

/// A fresh run name under `parent`: `<dataset>-<UTC time>`, with a suffix if that exists.
pub fn generated_path(parent: &Path, dataset: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
    let base = format!("{dataset}-{stamp}");
    let mut path = parent.join(&base);
    let mut k = 2;
    while path.exists() {
        path = parent.join(format!("{base}-{k}"));
        k += 1;
    }
    path
}

/// The run folder a path given to `resume` names, and the checkpoint it names when it is one of
/// the run's checkpoint folders (`RUN/checkpoints/step_N`): the one way a run's root is found.
pub fn run_root(path: &Path) -> (PathBuf, Option<PathBuf>) {
    match path.parent() {
        Some(parent) if parent.file_name().is_some_and(|n| n == CHECKPOINTS) => {
            (parent.parent().unwrap_or(Path::new(".")).to_path_buf(), Some(path.to_path_buf()))
        }
        _ => (path.to_path_buf(), None),
    }
}

/// Name of a run's checkpoint folder.
const CHECKPOINTS: &str = "checkpoints";

/// Name of the facts gantry writes right after a run's config.
const RUN_INFO: &str = "run.json";

/// Whether `path` holds a gantry run, one gantry can prove it wrote: a `config.toml` that parses
/// as gantry's configuration and, beside it, the `run.json` gantry writes right after the config
/// (it must parse as one), or the run lock gantry takes before it writes anything (a run killed
/// in between). A folder with only a config.toml that parses, even an empty one, is not a run.
/// The one test of "a run folder" for replacing one (`--force`) and for refusing to write over
/// one's files.
pub fn is_run_folder(path: &Path) -> bool {
    let config = path.join(CONFIG);
    if !config.is_file() || crate::config::Config::from_file(&config).is_err() {
        return false;
    }
    path.join(LOCK_FILE).is_file() || RunInfo::read(&RunDir::from_path(path)).is_ok()
}

/// What a command writes into a run folder as its own file (by default, or where the user names
/// that file): the only gantry names in a run folder it may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnOutput {
    /// `gantry sample`'s grids, `sample-seedS.png`.
    SampleGrid,
    /// `gantry eval`'s reports in one feature space ([`eval_report_name`]).
    EvalReport(FeatureSpace),
    /// `gantry report`'s `report.html`.
    Report,
    /// `gantry export`'s default file, [`EXPORTED_ONNX`].
    Export,
    /// A file that is never a run's (`bench --json`).
    Nothing,
}

/// The file `gantry export RUN` writes by default, in the run folder.
pub const EXPORTED_ONNX: &str = "generator.onnx";

impl OwnOutput {
    fn allows(self, name: &str) -> bool {
        match self {
            OwnOutput::SampleGrid => is_sample_grid(name),
            OwnOutput::EvalReport(space) => is_eval_report(name, space),
            OwnOutput::Report => name == "report.html",
            OwnOutput::Export => name == EXPORTED_ONNX,
            OwnOutput::Nothing => false,
        }
    }
}

/// What to do with a file that exists where a command writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse (the user named a file that is there already).
    #[default]
    Keep,
    /// Replace it (`--force`, or the command's own default file).
    Replace,
}

/// Whether a command may write its file at `path` (checked before any work, nothing written):
/// never over a file that a run folder's training owns (its config, metrics, weights,
/// checkpoints, grids, lock...), whatever the flags say, and never over an existing file unless
/// `existing` is [`Existing::Replace`], and never over a folder. `flag` names the option in the
/// error.
pub fn check_output(path: &Path, own: OwnOutput, existing: Existing, flag: &'static str) -> Result<()> {
    let refuse = |problem: String| Err(Error::usage(flag, problem));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() || name == "." || name == ".." {
        return refuse(format!("{} is not a file name", path.display()));
    }
    if path.is_dir() {
        return refuse(format!("{} is a folder; give the file to write", path.display()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Some(parent) = resolve(&parent)
        && let Some(root) = parent.ancestors().find(|a| is_run_folder(a))
    {
        let inside = parent.strip_prefix(root).unwrap_or(Path::new("")).join(&name);
        if owned_by_the_run(&inside) && !(inside.components().count() == 1 && own.allows(&name)) {
            return refuse(format!(
                "{} is a file of the run in {}; gantry never writes over it: give another file",
                path.display(),
                root.display()
            ));
        }
    }
    if path.symlink_metadata().is_ok() && existing == Existing::Keep {
        return refuse(format!("{} exists; pass --force to replace it", path.display()));
    }
    Ok(())
}

/// `path` with its links resolved as far as it exists, the rest (`..` and `.` included) applied
/// to that; None when no part of it resolves.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    let mut base = loop {
        if let Ok(real) = existing.canonicalize() {
            break real;
        }
        rest.push(existing.file_name()?.to_os_string());
        existing = existing.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    };
    for part in rest.iter().rev() {
        match part.to_str() {
            Some("..") => {
                base.pop();
            }
            Some(".") => {}
            _ => base.push(part),
        }
    }
    Some(base)
}

/// Whether the path `inside` a run folder names what its training writes: a top file of gantry's,
/// the lock, anything under weights/ or checkpoints/, a grid or a plot.
fn owned_by_the_run(inside: &Path) -> bool {
    let parts: Vec<String> =
        inside.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [name] => name == LOCK_FILE || is_own_top_file(name),
        [sub, ..] if sub == "weights" || sub == CHECKPOINTS => true,
        [sub, name] => is_own_child(sub, name, inside, false),
        _ => false,
    }
}

/// Refuse to `--force` anything but a gantry run folder, and never the current folder, a folder
/// above it, or the home folder.
fn check_replaceable(root: &Path) -> Result<()> {
    let refuse = |problem: String| Err(Error::RunDir { path: root.to_path_buf(), problem });
    let canonical = root.canonicalize().at("resolve", root)?;
    if let Ok(cwd) = std::env::current_dir().and_then(|d| d.canonicalize())
        && cwd.starts_with(&canonical)
    {
        return refuse("is the current folder or one above it; --force never replaces it".into());
    }
    if dirs::home_dir().and_then(|h| h.canonicalize().ok()).is_some_and(|h| h == canonical) {
        return refuse("is the home folder; --force never replaces it".into());
    }
    if !is_run_folder(root) {
        return refuse(
            "is not a gantry run folder (no config.toml with gantry's run.json or lock beside it), so --force does not replace it; \
             choose another --out"
                .into(),
        );
    }
    Ok(())
}

/// The sub-folders of a run folder, made when it is created.
const RUN_SUBFOLDERS: [&str; 4] = ["samples", "plots", "weights", "checkpoints"];

/// Files gantry writes at the top of a run folder (besides the ones matched by pattern in
/// [`is_own_top_file`]).
const TOP_FILES: [&str; 13] = [
    CONFIG,
    "metrics.csv",
    "d_loss_real.npy",
    "d_loss_fake.npy",
    "g_loss.npy",
    "d_output.npy",
    "eval.csv",
    "run.json",
    "alerts.json",
    "timelapse.gif",
    "report.html",
    "eval.json",
    EXPORTED_ONNX,
];

/// Name of the run folder's resolved configuration.
pub const CONFIG: &str = "config.toml";

/// Whether gantry writes a file of this name at the top of a run folder (its temporary
/// `.partial`/`.tmp` forms included).
fn is_own_top_file(name: &str) -> bool {
    let name = name.strip_suffix(".partial").or_else(|| name.strip_suffix(".tmp")).unwrap_or(name);
    TOP_FILES.contains(&name)
        || (name.starts_with("events.out.tfevents.") && name.ends_with(".gantry"))
        || is_eval_report(name, FeatureSpace::Judge)
        || is_eval_report(name, FeatureSpace::Inception)
        || is_sample_grid(name)
}

/// The feature space `gantry eval` scores in (`--features`), which its report's file name says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FeatureSpace {
    /// gantry's judge: a classifier of the data's own classes (or rotations).
    #[default]
    Judge,
    /// pytorch-fid's InceptionV3: numbers comparable with other tools and papers.
    Inception,
}

/// The file `gantry eval RUN` writes by default: `eval.json` (the judge's scores) or
/// `eval-inception.json` (`--features inception`), `-step_NNNNNN` before `.json` for a checkpoint.
pub fn eval_report_name(space: FeatureSpace, checkpoint: Option<usize>) -> String {
    let stem = match space {
        FeatureSpace::Judge => "eval",
        FeatureSpace::Inception => "eval-inception",
    };
    match checkpoint {
        Some(step) => format!("{stem}-{}.json", crate::checkpoint::folder_name(step)),
        None => format!("{stem}.json"),
    }
}

/// Whether `name` is one of [`eval_report_name`]'s names for `space`.
fn is_eval_report(name: &str, space: FeatureSpace) -> bool {
    let rest = match space {
        FeatureSpace::Judge if name.starts_with("eval-inception") => None,
        FeatureSpace::Judge => name.strip_prefix("eval"),
        FeatureSpace::Inception => name.strip_prefix("eval-inception"),
    };
    rest.and_then(|r| r.strip_suffix(".json")).is_some_and(|r| {
        r.is_empty() || (r.starts_with("-step_") && r[6..].bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether `name` is a grid `gantry sample` writes by default (`sample-seedS.png`).
fn is_sample_grid(name: &str) -> bool {
    name.strip_prefix(SAMPLE_PREFIX)
        .and_then(|r| r.strip_suffix(".png"))
        .is_some_and(|seed| !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()))
}

/// Prefix of the grids `gantry sample` writes into a run folder by default.
pub const SAMPLE_PREFIX: &str = "sample-seed";

/// Whether gantry writes an entry of this name in its sub-folder `sub` of a run folder.
fn is_own_child(sub: &str, name: &str, path: &Path, is_dir: bool) -> bool {
    let plain = name.strip_suffix(".partial").unwrap_or(name);
    match sub {
        "samples" => !is_dir && grid_step(plain).is_some(),
        "plots" => {
            !is_dir
                && ["curves_raw", "curves_smoothed", "quality"]
                    .iter()
                    .any(|stem| plain == format!("{stem}.png") || plain == format!("{stem}.svg"))
        }
        "weights" => !is_dir && crate::checkpoint::WEIGHT_FILES.contains(&plain),
        "checkpoints" => is_dir && crate::checkpoint::is_own_folder(path),
        _ => false,
    }
}

/// Remove gantry's own files from the run folder `run` (whose lock the caller holds) so a run can
/// start over in it, and recreate its sub-folders; returns the entries kept.
pub fn replace_run_files(run: &RunDir) -> Result<Vec<PathBuf>> {
    let kept = remove_run_files(run.root())?;
    run.make_folders()?;
    Ok(kept)
}

/// The iteration of a sample grid's file name ([`RunDir::sample_grid`]: `step_NNNNNN.png`, six or
/// more digits); None for any other name. The one reader of that name.
pub fn grid_step(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("step_")?.strip_suffix(".png")?;
    (digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// Remove what gantry writes in the run folder `root` and keep everything else (a user's notes,
/// files they put in `samples/`, ...); returns what was kept.
fn remove_run_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut kept = Vec::new();
    for entry in fs::read_dir(root).at("list", root)? {
        let entry = entry.at("list", root)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // The type of the entry itself: a link is never followed out of the folder.
        let kind = entry.file_type().at("inspect", &path)?;
        // The lock is held by the caller; config.toml is replaced atomically by the run that
        // starts next, so the folder is never without one (a kill in between leaves a folder
        // that still resumes).
        if name == LOCK_FILE || name == CONFIG {
            continue;
        }
        if kind.is_dir() && RUN_SUBFOLDERS.contains(&name.as_str()) {
            for child in fs::read_dir(&path).at("list", &path)? {
                let child = child.at("list", &path)?;
                let child_path = child.path();
                let child_kind = child.file_type().at("inspect", &child_path)?;
                let child_name = child.file_name().to_string_lossy().into_owned();
                if is_own_child(&name, &child_name, &child_path, child_kind.is_dir()) {
                    if child_kind.is_dir() {
                        fs::remove_dir_all(&child_path).at("remove", &child_path)?;
                    } else {
                        fs::remove_file(&child_path).at("remove", &child_path)?;
                    }
                } else {
                    kept.push(child_path);
                }
            }
            // Only an emptied folder goes.
            let _ = fs::remove_dir(&path);
        } else if kind.is_file() && is_own_top_file(&name) {
            fs::remove_file(&path).at("remove", &path)?;
        } else {
            kept.push(path);
        }
    }
    kept.sort();
    Ok(kept)
}

/// Whether `path` is a folder holding anything but what [`RunDir::create_locked`] makes before a
/// run writes its first file (the lock file and the empty sub-folders): a run killed in that
/// moment leaves a folder that a new `train --out` may use as it would an empty one.
fn is_non_empty_dir(path: &Path) -> Result<bool> {
    if !path.is_dir() {
        return Ok(false);
    }
    for entry in fs::read_dir(path).at("list", path)? {
        let entry = entry.at("list", path)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_dir = entry.file_type().at("inspect", entry.path())?.is_dir();
        let left_by_create = name == LOCK_FILE
            || (is_dir
                && RUN_SUBFOLDERS.contains(&name.as_ref())
                && fs::read_dir(entry.path()).at("list", entry.path())?.next().is_none());
        if !left_by_create {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder that looks like a finished run to [`is_run_folder`]: a config and run.json.
    fn fake_run(root: &Path) {
        fs::create_dir_all(root.join("weights")).unwrap();
        fs::write(root.join(CONFIG), "").unwrap();
        let info = RunInfo {
            gantry_version: "0".into(),
            data_file: "d".into(),
            image_rows: 28,
            image_cols: 28,
            image_channels: 1,
            threads: 1,
            iterations_done: 0,
            wall_seconds: 0.0,
            checkpoints_written: 0,
            checkpoint_ms_median: 0.0,
            data_sha256: None,
            cluster_sizes: None,
            format: RUN_FORMAT,
        };
        info.write(&RunDir::from_path(root)).unwrap();
    }

    #[test]
    fn eval_report_names_are_the_commands_own() {
        assert_eq!(eval_report_name(FeatureSpace::Judge, None), "eval.json");
        assert_eq!(eval_report_name(FeatureSpace::Inception, Some(400)), "eval-inception-step_000400.json");
        for own in ["eval.json", "eval-step_000400.json"] {
            assert!(
                is_eval_report(own, FeatureSpace::Judge) && !is_eval_report(own, FeatureSpace::Inception),
                "{own}"
            );
        }
        for own in ["eval-inception.json", "eval-inception-step_000020.json"] {
            assert!(
                is_eval_report(own, FeatureSpace::Inception) && !is_eval_report(own, FeatureSpace::Judge),
                "{own}"
            );
        }
        for other in [
            "eval.csv",
            "eval-x.json",
            "evaluation.json",
            "eval-inception-step_.json.tmp",
            "eval-step_1a.json",
        ] {
            assert!(
                !is_eval_report(other, FeatureSpace::Judge)
                    && !is_eval_report(other, FeatureSpace::Inception),
                "{other}"
            );
        }
    }

    #[test]
    fn force_never_takes_a_folder_with_only_a_parsing_config_for_a_run() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mine");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join(CONFIG), "").unwrap();
        fs::write(root.join("metrics.csv"), "my numbers").unwrap();
        fs::write(root.join("run.json"), "{\"mine\": true}").unwrap();
        assert!(!is_run_folder(&root), "an empty config.toml and someone else's run.json");
        let err = RunDir::create_locked(&root, Existing::Replace).unwrap_err().to_string();
        assert!(err.contains("not a gantry run folder"), "{err}");
        assert_eq!(fs::read_to_string(root.join("metrics.csv")).unwrap(), "my numbers");
        fake_run(&root);
        assert!(is_run_folder(&root));
    }

    #[test]
    fn outputs_never_land_on_a_runs_own_files_or_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("R");
        fake_run(&run);
        for own in [
            "config.toml",
            "metrics.csv",
            "run.json",
            ".lock",
            "weights/generator.bpk",
            "samples/step_000050.png",
        ] {
            let e =
                check_output(&run.join(own), OwnOutput::SampleGrid, Existing::Replace, "--out").unwrap_err();
            assert!(e.to_string().contains("never writes over it") && e.exit_code() == 2, "{own}: {e}");
        }
        let weights_dotdot = run.join("weights/../config.toml");
        assert!(check_output(&weights_dotdot, OwnOutput::SampleGrid, Existing::Replace, "--out").is_err());
        // The command's own names, and files of the user's, are fine.
        check_output(&run.join("sample-seed3.png"), OwnOutput::SampleGrid, Existing::Keep, "--out").unwrap();
        check_output(
            &run.join("eval.json"),
            OwnOutput::EvalReport(FeatureSpace::Judge),
            Existing::Keep,
            "--json",
        )
        .unwrap();
        assert!(
            check_output(&run.join("eval.json"), OwnOutput::SampleGrid, Existing::Keep, "--out").is_err()
        );
        check_output(&run.join("mine.png"), OwnOutput::SampleGrid, Existing::Keep, "--out").unwrap();
        let folder = run.join("weights");
        let e = check_output(&folder, OwnOutput::Nothing, Existing::Replace, "--out").unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
        // An existing file anywhere needs Replace.
        let notes = tmp.path().join("notes.png");
        fs::write(&notes, "x").unwrap();
        let e = check_output(&notes, OwnOutput::SampleGrid, Existing::Keep, "--out").unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        check_output(&notes, OwnOutput::SampleGrid, Existing::Replace, "--out").unwrap();
    }

    #[test]
    fn existing_non_empty_folder_is_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("precious.txt"), "keep me").unwrap();
        let err = RunDir::create_locked(&root, Existing::Keep).unwrap_err();
        assert!(err.to_string().contains("not a gantry run folder"), "{err}");
        assert!(!err.to_string().contains("--force"), "--force would not help here: {err}");
        assert_eq!(fs::read_to_string(root.join("precious.txt")).unwrap(), "keep me");
    }

    #[test]
    fn force_empties_only_a_gantry_run_folder() {
        // The bug: `--force` emptied any folder (a thesis, its sub-folders).
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("D");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("thesis.tex"), "x").unwrap();
        let err = RunDir::create_locked(&root, Existing::Replace).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not a gantry run folder"), "{err}");
        assert!(root.join("thesis.tex").is_file() && root.join("sub").is_dir());
        // A garbage config.toml does not make a run folder either.
        fs::write(root.join(CONFIG), "not = [toml").unwrap();
        assert!(RunDir::create_locked(&root, Existing::Replace).is_err());
        assert!(root.join("thesis.tex").is_file());
    }

    #[test]
    fn force_replaces_gantry_files_and_keeps_the_users() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let (run, lock, _) = RunDir::create_locked(&root, Existing::Keep).unwrap();
        fs::write(run.config(), crate::Config::default().to_toml()).unwrap();
        fs::write(run.metrics_csv(), "old").unwrap();
        fs::write(run.sample_grid(200), "png").unwrap();
        fs::write(root.join("events.out.tfevents.1.gantry"), "e").unwrap();
        fs::write(root.join("NOTES.txt"), "mine").unwrap();
        fs::write(run.samples_dir().join("favourite.png"), "mine too").unwrap();
        fs::write(run.samples_dir().join("step_final.png"), "mine three").unwrap();
        fs::write(root.join("sample-seed-best.png"), "mine four").unwrap();
        fs::write(root.join("sample-seed7.png"), "gantry's").unwrap();
        let ckpt = run.checkpoints_dir().join("step_000200");
        fs::create_dir_all(&ckpt).unwrap();
        fs::write(ckpt.join("manifest.json"), "{}").unwrap();
        let foreign = run.checkpoints_dir().join("step_000400");
        fs::create_dir_all(&foreign).unwrap();
        fs::write(foreign.join("my-analysis.ipynb"), "{}").unwrap();
        drop(lock);
        let (_, _lock, kept) = RunDir::create_locked(&root, Existing::Replace).unwrap();
        assert!(!run.metrics_csv().exists() && !run.sample_grid(200).exists());
        assert!(run.config().exists(), "config.toml stays until the new run replaces it atomically");
        assert!(!root.join("events.out.tfevents.1.gantry").exists() && !ckpt.exists());
        assert_eq!(fs::read_to_string(root.join("NOTES.txt")).unwrap(), "mine");
        assert!(run.samples_dir().join("favourite.png").is_file());
        assert!(foreign.join("my-analysis.ipynb").is_file(), "a folder holding a user's file stays");
        assert!(
            run.samples_dir().join("step_final.png").is_file() && root.join("sample-seed-best.png").is_file()
        );
        assert!(!root.join("sample-seed7.png").exists());
        assert_eq!(kept.len(), 5, "{kept:?}");
    }

    #[test]
    fn force_never_replaces_the_current_folder_or_above() {
        let cwd = std::env::current_dir().unwrap();
        for path in [cwd.clone(), cwd.parent().unwrap().to_path_buf()] {
            let err = check_replaceable(&path).unwrap_err().to_string();
            assert!(err.contains("current folder"), "{err}");
        }
    }

    #[test]
    fn empty_folder_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, _lock, _) = RunDir::create_locked(tmp.path(), Existing::Keep).unwrap();
        assert!(run.weights_dir().is_dir());
        assert_eq!(run.sample_grid(200).file_name().unwrap(), "step_000200.png");
    }

    /// A run killed between creating its folder and writing config.toml left a folder that
    /// neither `resume` (no config.toml) nor `train --out` (not empty, not a run) would take.
    #[test]
    fn a_folder_killed_before_its_first_file_is_used_again_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let (_, lock, _) = RunDir::create_locked(&root, Existing::Keep).unwrap();
        drop(lock);
        fs::write(root.join(LOCK_FILE), "999999\n").unwrap();
        assert!(!is_non_empty_dir(&root).unwrap());
        let (run, lock, kept) = RunDir::create_locked(&root, Existing::Keep).unwrap();
        assert!(kept.is_empty());
        drop(lock);
        // Anything more is a folder gantry will not take without --force.
        fs::write(run.samples_dir().join("mine.png"), "x").unwrap();
        assert!(RunDir::create_locked(&root, Existing::Keep).is_err());
    }

    #[test]
    fn a_running_runs_folder_cannot_be_forced_away() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, _held, _) = RunDir::create_locked(tmp.path(), Existing::Keep).unwrap();
        fs::write(run.config(), crate::Config::default().to_toml()).unwrap();
        fs::write(tmp.path().join("metrics.csv"), "x").unwrap();
        let err = RunDir::create_locked(tmp.path(), Existing::Replace).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        assert!(tmp.path().join("metrics.csv").exists());
    }

    #[test]
    fn generated_names_do_not_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let a = generated_path(tmp.path(), "mnist");
        fs::create_dir_all(&a).unwrap();
        let b = generated_path(tmp.path(), "mnist");
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("mnist-"));
    }
}
