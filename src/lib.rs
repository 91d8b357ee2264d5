//! gantry: train generative adversarial networks, watch them learn, judge what they make, and
//! never lose a run.
//!
//! The pipeline, one module each: [`data`] (IDX files -> images) -> [`model`] (G and D) ->
//! [`train`] (the loop, writing [`metrics`], [`grid`]s and [`plot`]s into a [`run_dir`]) ->
//! [`checkpoint`] (all-or-nothing saves, exact resume; [`lock`] keeps one writer per run) ->
//! [`export`] (weights for other tools) -> [`eval`] (a classifier judge: FID, KID, precision/recall,
//! coverage) -> [`report`] (one HTML file) / [`serve`] (the live dashboard) / [`tensorboard`].
//! Many runs: [`sweep`] (plan, run here or on a cluster, continue) -> [`compare`] (tables with
//! confidence intervals, overlaid curves). [`config`] holds every setting; [`cli`] is the command
//! line on top. Speed lives in
//! [`kernels`] (fused burn backend operations) and [`allocator`]; [`device`] says where the tensors
//! live (the CPU, or a GPU through wgpu).
//!
//! A run from code, as `gantry train` does it:
//!
//! ```no_run
//! use gantry::{Config, run_dir::Existing, train};
//!
//! let mut config = Config::default(); // the classic preset: 30,000 iterations of batch 32
//! config.train.iterations = 1_000;
//! let options = train::Options { progress: true, ..Default::default() };
//! let outcome = train::start(&config, "runs/example".as_ref(), Existing::Keep, &options)?;
//! println!("{} iterations, final G loss {}", outcome.records.len(), outcome.records[999].g_loss);
//! # Ok::<(), gantry::Error>(())
//! ```
//!
//! Every setting is validated before anything runs:
//!
//! ```
//! let mut config = gantry::Config::default();
//! assert_eq!(config.model.g_hidden, vec![256, 512, 1024]);
//! config.train.batch_size = 0;
//! let err = config.validate().unwrap_err();
//! assert!(err.to_string().contains("train.batch_size"));
//! ```

// Functions short enough to read at once: at most 80 lines of code (clippy.toml), checked by
// `cargo clippy -- -D warnings` in .ci/run.
#![warn(clippy::too_many_lines)]

pub mod alerts;
pub mod allocator;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod conditions;
pub mod config;
pub mod data;
pub mod device;
pub mod durable;
pub mod error;
pub mod eval;
pub mod export;
pub mod flags;
pub mod grid;
pub mod kernels;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod objective;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run_dir;
pub mod sample;
pub mod serve;
pub mod sweep;
pub mod tensorboard;
pub mod timelapse;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
