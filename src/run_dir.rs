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
        if !root.join("config.toml").is_file() {
            return Err(Error::RunDir {
                path: root,
                problem: "not a gantry run folder (no config.toml)".into(),
            });
        }
        Ok(Self { root })
    }

    /// Create a run folder for a new run and take its lock. An existing non-empty folder is
    /// refused unless `force`, in which case its previous contents are removed first (never while
    /// another process holds its lock).
    pub fn create_locked(root: impl Into<PathBuf>, force: bool) -> Result<(Self, RunLock)> {
        let root = root.into();
        if root.exists() && !root.is_dir() {
            return Err(Error::RunDir { path: root, problem: "exists and is not a folder".into() });
        }
        let non_empty = is_non_empty_dir(&root)?;
        if non_empty && !force {
            return Err(Error::RunDir {
                path: root,
                problem:
                    "already exists and is not empty; choose another --out, resume it with --resume, or \
                          pass --force to replace it"
                        .into(),
            });
        }
        fs::create_dir_all(&root).at("create", &root)?;
        let lock = RunLock::acquire(&root)?;
        if non_empty {
            for entry in fs::read_dir(&root).at("list", &root)? {
                let path = entry.at("list", &root)?.path();
                if path.file_name().is_some_and(|n| n == LOCK_FILE) {
                    continue;
                }
                if path.is_dir() {
                    fs::remove_dir_all(&path).at("remove", &path)?;
                } else {
                    fs::remove_file(&path).at("remove", &path)?;
                }
            }
        }
        let dir = Self { root };
        for sub in [dir.samples_dir(), dir.plots_dir(), dir.weights_dir(), dir.checkpoints_dir()] {
            fs::create_dir_all(&sub).at("create", &sub)?;
        }
        Ok((dir, lock))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
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
        self.root.join("checkpoints")
    }
    pub fn generator_safetensors(&self) -> PathBuf {
        self.weights_dir().join("generator.safetensors")
    }
    pub fn generator_weights(&self) -> PathBuf {
        self.weights_dir().join("generator.bpk")
    }
    pub fn discriminator_weights(&self) -> PathBuf {
        self.weights_dir().join("discriminator.bpk")
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
    /// Compute threads actually used.
    pub threads: usize,
    /// Iterations completed.
    pub iterations_done: usize,
    /// Wall time of the training loop, seconds (checkpoint writes included).
    pub wall_seconds: f64,
    /// Checkpoints written by the last process, and the median time one took to write.
    pub checkpoints_written: usize,
    pub checkpoint_ms_median: f64,
}

impl RunInfo {
    pub fn read(run: &RunDir) -> Result<Self> {
        let path = run.root().join("run.json");
        let text = std::fs::read_to_string(&path).at("read", &path)?;
        serde_json::from_str(&text).map_err(|e| Error::bad_data(&path, e.to_string()))
    }

    pub fn write(&self, run: &RunDir) -> Result<()> {
        let path = run.root().join("run.json");
        let text = serde_json::to_string_pretty(self).expect("RunInfo serializes");
        std::fs::write(&path, text + "\n").at("write", &path)
    }
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

fn is_non_empty_dir(path: &Path) -> Result<bool> {
    if !path.is_dir() {
        return Ok(false);
    }
    Ok(fs::read_dir(path).at("list", path)?.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_non_empty_folder_is_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("precious.txt"), "keep me").unwrap();
        let err = RunDir::create_locked(&root, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read_to_string(root.join("precious.txt")).unwrap(), "keep me");
        RunDir::create_locked(&root, true).unwrap();
        assert!(!root.join("precious.txt").exists());
        assert!(root.join("samples").is_dir());
    }

    #[test]
    fn empty_folder_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, _lock) = RunDir::create_locked(tmp.path(), false).unwrap();
        assert!(run.weights_dir().is_dir());
        assert_eq!(run.sample_grid(200).file_name().unwrap(), "step_000200.png");
    }

    #[test]
    fn a_running_runs_folder_cannot_be_forced_away() {
        let tmp = tempfile::tempdir().unwrap();
        let (_run, _held) = RunDir::create_locked(tmp.path(), false).unwrap();
        fs::write(tmp.path().join("metrics.csv"), "x").unwrap();
        let err = RunDir::create_locked(tmp.path(), true).unwrap_err().to_string();
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
