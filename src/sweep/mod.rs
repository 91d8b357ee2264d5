//! Sweeps: many runs of one base configuration, over axes of values for any config keys and a
//! list of seeds. [`plan`] turns a spec into numbered runs (a pure function: every check happens
//! there, before anything runs); [`task`] carries one run to its end wherever it stopped (the
//! unit of work of every scheduler); [`local`] runs the tasks on this machine, several at a time;
//! [`emit`] writes job definitions for Slurm and Kubernetes, whose array tasks are the same.
//!
//! A sweep folder holds `sweep.toml` (the spec, resolved into one self-contained file: what every
//! task plans from), `sweep.json` (the runs and, for local sweeps, their state), `logs/NAME.log`
//! (each run's output) and one run folder per planned run, named from its values
//! (`order=g-first_seed=3`): `gantry serve SWEEP` shows them all, `gantry compare SWEEP` compares
//! them.

pub mod emit;
pub mod local;
pub mod plan;
pub mod task;

pub use plan::{Combine, Plan, PlannedRun};

use std::path::{Path, PathBuf};

use crate::error::Result;

/// The default sweep folder of a plan: `sweeps/NAME`.
pub fn default_folder(plan: &Plan) -> PathBuf {
    Path::new("sweeps").join(&plan.name)
}

/// The `--dry-run` listing: one line per planned run with its index, folder name and state.
pub fn listing(plan: &Plan, sweep: &Path) -> Result<String> {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let combinations = plan.runs.len() / plan.seeds.len().max(1);
    let mut out = format!(
        "sweep `{}`: {} ({} x {}) in {}\n",
        plan.name,
        plural(plan.runs.len(), "run"),
        plural(combinations, "combination"),
        plural(plan.seeds.len(), "seed"),
        sweep.display()
    );
    let width = plan.runs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for run in &plan.runs {
        let state = match task::state(sweep, run)? {
            task::RunState::Absent => "to start".to_string(),
            task::RunState::Unfinished => "to resume".to_string(),
            task::RunState::Finished => "finished".to_string(),
        };
        out.push_str(&format!(
            "  {:>4}  {:width$}  {:>9} iterations  {state}\n",
            run.index, run.name, run.config.train.iterations
        ));
    }
    Ok(out)
}
