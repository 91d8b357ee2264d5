//! gantry: train generative adversarial networks, watch them learn, judge what they make, and
//! never lose a run.
//!
//! The pipeline, one module each: [`data`] (IDX files -> images) -> [`model`] (G and D) ->
//! [`train`] (the loop, writing [`metrics`], [`grid`]s and [`plot`]s into a [`run_dir`]) ->
//! [`checkpoint`] (all-or-nothing saves, exact resume; [`lock`] keeps one writer per run) ->
//! [`export`] (weights for other tools).
//! [`config`] holds every setting; [`cli`] is the command line on top.

pub mod alerts;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod grid;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run_dir;
pub mod timelapse;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
