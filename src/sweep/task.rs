//! One run of a sweep, carried to its end wherever it stopped: the unit a local job, a Slurm array
//! task or a Kubernetes indexed pod executes (`gantry sweep run SPEC --task I`). Safe to repeat:
//! a finished run is left alone, an unfinished one resumes from its newest checkpoint, a missing
//! one starts, and a folder holding a run of another configuration is refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checkpoint;
use crate::config::{Config, Overrides};
use crate::error::{Error, Result};
use crate::lock::RunLock;
use crate::train::{self, Options, TrainOutcome};

use super::plan::{Plan, PlannedRun};

/// The state of a planned run's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// No run there yet (no folder, or one a run was killed in before its first file).
    Absent,
    /// A run that has not reached its last iteration (it resumes).
    Unfinished,
    /// Its final weights are written: nothing left to do.
    Finished,
}

/// What a task does about a run in `state` (the policy, apart from doing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Resume,
    Nothing,
}

pub fn action(state: RunState) -> Action {
    match state {
        RunState::Absent => Action::Start,
        RunState::Unfinished => Action::Resume,
        RunState::Finished => Action::Nothing,
    }
}

/// The folder of `run` in the sweep folder `sweep`.
pub fn run_folder(sweep: &Path, run: &PlannedRun) -> PathBuf {
    sweep.join(&run.name)
}

/// Read the state of `run`'s folder, checking that a run there is this run (its saved config is
/// the planned one, threads and data folder aside).
pub fn state(sweep: &Path, run: &PlannedRun) -> Result<RunState> {
    let folder = run_folder(sweep, run);
    let config_file = folder.join(crate::run_dir::CONFIG);
    if !config_file.is_file() {
        return Ok(RunState::Absent);
    }
    let saved = Config::from_file(&config_file)?;
    let differing = differing_keys(&saved, &run.config);
    if !differing.is_empty() {
        return Err(Error::Sweep {
            path: folder,
            problem: format!(
                "holds a run of another configuration than the spec plans for `{}` (differing: {}); \
                 the spec changed since it ran: use another --out, or move that folder away",
                run.name,
                differing.join(", ")
            ),
        });
    }
    let done =
        checkpoint::weights_manifest_iteration(&crate::run_dir::RunDir::from_path(&folder).weights_dir())
            == Some(saved.train.iterations);
    Ok(if done { RunState::Finished } else { RunState::Unfinished })
}

/// Keys whose values differ between two configs, ignoring what may differ between machines
/// (threads, where the data is).
pub fn differing_keys(a: &Config, b: &Config) -> Vec<String> {
    crate::config::differing_keys(&a.run_settings(), &b.run_settings())
}

/// How a task runs.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    /// Compute threads of a run that starts (a resumed run keeps its own).
    pub threads: Option<usize>,
    /// Folder of the training data (default: the run's own, then $GANTRY_DATA, then the cache).
    pub data: Option<PathBuf>,
    /// How long to wait for a run folder's lock held by another process (a job killed with
    /// its sweep still writing its last checkpoint).
    pub lock_wait: Duration,
}

/// What a task did.
#[derive(Debug)]
pub enum TaskOutcome {
    /// The run was already finished.
    AlreadyFinished,
    /// The run trained (to its end, or until a stop request).
    Trained(Box<TrainOutcome>),
}

/// Carry run `index` of `plan` to its end in the sweep folder `sweep`.
pub fn run(
    plan: &Plan,
    sweep: &Path,
    index: usize,
    options: &TaskOptions,
    train_options: &Options,
) -> Result<TaskOutcome> {
    let run = plan.task(index)?;
    let folder = run_folder(sweep, run);
    wait_for_lock(&folder, options.lock_wait)?;
    match action(state(sweep, run)?) {
        Action::Nothing => Ok(TaskOutcome::AlreadyFinished),
        Action::Start => {
            let mut config = run.config.clone();
            if let Some(t) = options.threads {
                config.train.threads = t;
            }
            if options.data.is_some() {
                config.data.dir = options.data.clone();
            }
            train::start(&config, &folder, crate::run_dir::Existing::Keep, train_options)
                .map(|o| TaskOutcome::Trained(Box::new(o)))
        }
        Action::Resume => {
            let overrides = match &options.data {
                Some(dir) => Overrides::default().with("data.dir", dir)?,
                None => Overrides::default(),
            };
            train::resume(&folder, None, &overrides, train_options).map(|o| TaskOutcome::Trained(Box::new(o)))
        }
    }
}

/// Wait (up to `limit`) while another process holds `folder`'s lock.
fn wait_for_lock(folder: &Path, limit: Duration) -> Result<()> {
    if !folder.join(crate::lock::LOCK_FILE).is_file() {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        match RunLock::acquire(folder) {
            Ok(lock) => {
                drop(lock);
                return Ok(());
            }
            Err(e @ Error::RunDir { .. }) if started.elapsed() >= limit => return Err(e),
            Err(Error::RunDir { .. }) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_action() {
        assert_eq!(action(RunState::Absent), Action::Start);
        assert_eq!(action(RunState::Unfinished), Action::Resume);
        assert_eq!(action(RunState::Finished), Action::Nothing);
    }

    #[test]
    fn threads_and_data_folder_do_not_make_another_run() {
        let a = Config::default();
        let mut b = a.clone();
        b.train.threads = 7;
        b.data.dir = Some("/elsewhere".into());
        assert!(differing_keys(&a, &b).is_empty());
        b.train.d_steps = 2;
        assert_eq!(differing_keys(&a, &b), ["train.d_steps"]);
    }

    #[test]
    fn a_folder_of_another_configuration_is_refused_naming_the_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = super::super::plan::plan("[axes]\n\"train.d_steps\" = [1]", "s", Path::new("."))
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        let run = &plan.runs[0];
        assert_eq!(state(tmp.path(), run).unwrap(), RunState::Absent);
        let folder = run_folder(tmp.path(), run);
        std::fs::create_dir_all(&folder).unwrap();
        let mut other = run.config.clone();
        other.train.iterations = 5;
        std::fs::write(folder.join("config.toml"), other.to_toml()).unwrap();
        let err = state(tmp.path(), run).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("train.iterations"), "{err}");
        std::fs::write(folder.join("config.toml"), run.config.to_toml()).unwrap();
        assert_eq!(state(tmp.path(), run).unwrap(), RunState::Unfinished);
    }
}
