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
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Paths inside one run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A view of an existing run folder (nothing is created or checked).
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

    /// Create a run folder for a new run. An existing non-empty folder is refused unless `force`,
    /// in which case its previous contents are removed first.
    pub fn create(root: impl Into<PathBuf>, force: bool) -> Result<Self> {
        let root = root.into();
        if is_non_empty_dir(&root)? {
            if !force {
                return Err(Error::RunDir {
                    path: root,
                    problem: "already exists and is not empty; choose another --out, or pass --force to \
                              replace it"
                        .into(),
                });
            }
            fs::remove_dir_all(&root).at("remove old run folder", &root)?;
        } else if root.exists() && !root.is_dir() {
            return Err(Error::RunDir { path: root, problem: "exists and is not a folder".into() });
        }
        let dir = Self { root };
        for sub in [dir.root.clone(), dir.samples_dir(), dir.plots_dir(), dir.weights_dir()] {
            fs::create_dir_all(&sub).at("create", &sub)?;
        }
        Ok(dir)
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

/// A fresh run name under `parent`: `<dataset>-<UTC time>`, with a suffix if that exists.
pub fn generated_path(parent: &Path, dataset: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-");
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
        let err = RunDir::create(&root, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read_to_string(root.join("precious.txt")).unwrap(), "keep me");
        RunDir::create(&root, true).unwrap();
        assert!(!root.join("precious.txt").exists());
        assert!(root.join("samples").is_dir());
    }

    #[test]
    fn empty_folder_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path(), false).unwrap();
        assert!(run.weights_dir().is_dir());
        assert_eq!(run.sample_grid(200).file_name().unwrap(), "step_000200.png");
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
