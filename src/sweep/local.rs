//! The local scheduler: runs a sweep's tasks as child processes (`gantry sweep run ... --task I`),
//! as many at a time as asked, with the machine's threads divided among them, and keeps the
//! sweep's state in `sweep.json` (rewritten atomically at every change). A sweep stopped by a
//! signal stops its jobs the way a run stops (checkpoint, exit 130); a sweep killed outright
//! takes its jobs with it (they get SIGTERM from the kernel and checkpoint), and the next
//! `gantry sweep` skips finished runs and resumes the others.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;
use crate::error::{Error, IoContext, Result};
use crate::lock::{LOCK_FILE, RunLock};

use super::plan::Plan;
use super::task::{self, RunState};

/// The sweep's own record, `SWEEP/sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepState {
    pub name: String,
    /// The axis keys.
    pub axes: Vec<String>,
    pub runs: Vec<RunRecord>,
}

/// One run's line in `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub index: usize,
    pub name: String,
    pub seed: u64,
    /// Axis key -> value.
    pub values: BTreeMap<String, String>,
    pub status: Status,
    /// The exit code of its last job, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pending,
    Running,
    Stopped,
    Failed,
    Finished,
}

pub const STATE_FILE: &str = "sweep.json";
pub const SPEC_FILE: &str = "sweep.toml";
pub const LOGS: &str = "logs";

impl SweepState {
    fn of(plan: &Plan) -> Self {
        Self {
            name: plan.name.clone(),
            axes: plan.axes.clone(),
            runs: plan
                .runs
                .iter()
                .map(|r| RunRecord {
                    index: r.index,
                    name: r.name.clone(),
                    seed: r.seed,
                    values: r.values.iter().cloned().collect(),
                    status: Status::Pending,
                    exit_code: None,
                })
                .collect(),
        }
    }

    pub fn read(sweep: &Path) -> Result<Self> {
        let path = sweep.join(STATE_FILE);
        let bytes = crate::durable::read_limited(&path, 64 << 20)
            .map_err(|e| Error::bad_data(&path, e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::bad_data(&path, e.to_string()))
    }

    fn write(&self, sweep: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Serialize { what: "sweep state".into(), problem: e.to_string() })?;
        write_atomic(&sweep.join(STATE_FILE), &json)
    }
}

/// Make (or check) the sweep folder for `plan`: a new or empty folder gets `sweep.toml` (the
/// resolved spec) and `sweep.json`, whose states are read from the run folders (nothing else is
/// remembered between sweep commands); an existing sweep folder must have been made for the same
/// plan, run by run (a spec may add runs; it may not change one that exists). Nothing else in the
/// folder is touched. The sweep's lock (`SWEEP/.lock`) is taken before anything is written and
/// held by the caller while it runs the sweep: a second `gantry sweep` on the same folder is
/// refused (it would report the first one's healthy runs as failed and rewrite sweep.json).
pub fn prepare(plan: &Plan, sweep: &Path) -> Result<(SweepState, RunLock)> {
    let refuse = |problem: String| Error::Sweep { path: sweep.to_path_buf(), problem };
    if sweep.exists() && !sweep.is_dir() {
        return Err(refuse("exists and is not a folder".into()));
    }
    let spec_path = sweep.join(SPEC_FILE);
    let new_spec = plan.resolved_spec();
    let mut state = SweepState::of(plan);
    if spec_path.is_file() {
        let old = super::plan::Plan::from_file(&spec_path)?;
        if old.name != plan.name {
            return Err(refuse(format!(
                "holds the sweep `{}`, not `{}`; choose another --out",
                old.name, plan.name
            )));
        }
        for run in &old.runs {
            if let Some(new) = plan.runs.iter().find(|r| r.name == run.name) {
                let differing = task::differing_keys(&run.config, &new.config);
                if !differing.is_empty() {
                    return Err(refuse(format!(
                        "was made by another spec: its run `{}` differs in {}; use another --out",
                        run.name,
                        differing.join(", ")
                    )));
                }
            }
        }
    } else if sweep.is_dir() && has_entries_besides_the_lock(sweep)? {
        return Err(refuse(
            "exists, is not empty and is not a sweep folder (no sweep.toml); choose another --out".into(),
        ));
    }
    std::fs::create_dir_all(sweep).at("create", sweep)?;
    let lock = RunLock::acquire(sweep).map_err(|e| match e {
        Error::RunDir { problem, .. } => {
            refuse(problem.replace("another running gantry process", "another gantry sweep"))
        }
        other => other,
    })?;
    // Each run's state from its folder (a folder of another configuration refuses the sweep
    // before anything is written).
    for (record, run) in state.runs.iter_mut().zip(&plan.runs) {
        match task::state(sweep, run)? {
            RunState::Finished => record.status = Status::Finished,
            RunState::Unfinished => record.status = Status::Stopped,
            RunState::Absent => {}
        }
    }
    std::fs::create_dir_all(sweep.join(LOGS)).at("create", sweep.join(LOGS))?;
    write_atomic(&spec_path, new_spec.as_bytes())?;
    state.write(sweep)?;
    Ok((state, lock))
}

/// Whether the folder holds anything but a sweep lock left by a sweep killed before it wrote its
/// spec.
fn has_entries_besides_the_lock(folder: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(folder).at("list", folder)? {
        if entry.at("list", folder)?.file_name() != LOCK_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Start the job of run `index` (named `name`): `gantry sweep run SPEC --task I`, its output
/// appended to its log, dying with this process.
fn spawn_task(
    sweep: &Path,
    name: &str,
    index: usize,
    exe: &Path,
    (threads, data): (usize, Option<&Path>),
) -> Result<Child> {
    let log_path = sweep.join(LOGS).join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).at("open", &log_path)?;
    let err = log.try_clone().at("open", &log_path)?;
    let mut cmd = Command::new(exe);
    cmd.args(["sweep", "run"])
        .arg(sweep.join(SPEC_FILE))
        .arg("--out")
        .arg(sweep)
        .args(["--task", &index.to_string(), "--threads", &threads.to_string()])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    if let Some(d) = data {
        cmd.arg("--data").arg(d);
    }
    die_with_parent(&mut cmd);
    cmd.spawn().map_err(|e| Error::io("start", exe, e))
}

/// Collect the jobs that ended and record what each ending means ([`after_exit`]); whether any
/// record changed.
fn reap(
    jobs: &mut Vec<Job>,
    state: &mut SweepState,
    restarts: &mut BTreeMap<usize, usize>,
    (stopping, sweep, reporter): (bool, &Path, &Reporter),
) -> Result<bool> {
    let mut changed = false;
    let mut i = 0;
    while i < jobs.len() {
        let status = jobs[i].child.try_wait().map_err(|e| Error::io("wait for", "a sweep job", e))?;
        let Some(status) = status else {
            i += 1;
            continue;
        };
        let job = jobs.swap_remove(i);
        let record = &mut state.runs[job.index];
        let name = record.name.clone();
        let restarts = restarts.entry(job.index).or_insert(0);
        let phase = if stopping { Phase::Stopping } else { Phase::Running };
        let next = after_exit(status.code(), phase, *restarts);
        match next {
            Status::Finished => reporter.line(&format!("finished {name}")),
            Status::Stopped if !stopping => {
                *restarts += 1;
                reporter.line(&format!("the job of {name} was stopped from outside; resuming it"));
            }
            Status::Failed => {
                let log = sweep.join(LOGS).join(format!("{name}.log"));
                eprintln!(
                    "gantry: sweep run {name} failed (exit {}); its output: {}",
                    status.code().map_or("by signal".into(), |c| c.to_string()),
                    log.display()
                );
            }
            _ => {}
        }
        record.status = next;
        record.exit_code = if next == Status::Failed { status.code() } else { None };
        changed = true;
    }
    Ok(changed)
}

/// Threads each of `jobs` simultaneous runs gets on a machine with `cores`.
pub fn threads_per_job(cores: usize, jobs: usize) -> usize {
    (cores / jobs.max(1)).max(1)
}

/// The runs to start now: those not finished, not running and not failed (a failed run is tried
/// again only by a new `gantry sweep`, which clears `failed`), lowest index first, up to `free`.
pub fn to_start(runs: &[RunRecord], free: usize) -> Vec<usize> {
    runs.iter()
        .filter(|r| matches!(r.status, Status::Pending | Status::Stopped))
        .map(|r| r.index)
        .take(free)
        .collect()
}

/// How the local scheduler runs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Runs at a time.
    pub jobs: usize,
    /// Threads of each run (default: the cores divided among the jobs).
    pub threads: Option<usize>,
    pub data: Option<PathBuf>,
    pub progress: bool,
    /// Raised by a signal: stop the jobs (they checkpoint) and return.
    pub stop: Option<Arc<AtomicBool>>,
}

/// How a local sweep ended.
#[derive(Debug)]
pub struct LocalOutcome {
    pub state: SweepState,
    /// A stop request ended it before every run finished.
    pub stopped: bool,
}

struct Job {
    index: usize,
    child: Child,
    total: usize,
}

/// Run every unfinished run of `plan` in `sweep` (prepared by [`prepare`]).
pub fn run(plan: &Plan, sweep: &Path, mut state: SweepState, options: &LocalOptions) -> Result<LocalOutcome> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "the gantry executable", e))?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = options.threads.unwrap_or_else(|| threads_per_job(cores, options.jobs));
    let total_runs = state.runs.len();
    let mut jobs: Vec<Job> = Vec::new();
    let mut stopping = false;
    let mut last_line = Instant::now();
    let mut last_poll = Instant::now();
    let plain = options.progress && !std::io::stderr().is_terminal();
    let reporter = Reporter { bars: (options.progress && !plain).then(|| Bars::new(total_runs)), plain };
    let mut restarts: BTreeMap<usize, usize> = BTreeMap::new();
    loop {
        if !stopping && options.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            stopping = true;
            for job in &jobs {
                terminate(&job.child);
            }
        }
        if !stopping {
            let starting = to_start(&state.runs, options.jobs.saturating_sub(jobs.len()));
            for &index in &starting {
                let run = &plan.runs[index];
                let child = spawn_task(sweep, &run.name, index, &exe, (threads, options.data.as_deref()))?;
                state.runs[index].status = Status::Running;
                state.runs[index].exit_code = None;
                reporter.line(&format!("started {}", run.name));
                jobs.push(Job { index, child, total: run.config.train.iterations });
            }
            if !starting.is_empty() {
                state.write(sweep)?;
            }
        }
        if jobs.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        let changed = reap(&mut jobs, &mut state, &mut restarts, (stopping, sweep, &reporter))?;
        if changed {
            state.write(sweep)?;
        }
        if last_poll.elapsed() < POLL_PROGRESS_EVERY {
            continue;
        }
        last_poll = Instant::now();
        let progress: Vec<(String, usize, usize)> = jobs
            .iter()
            .map(|j| {
                let run = crate::run_dir::RunDir::from_path(sweep.join(&plan.runs[j.index].name));
                let rows = lines_written(&run.metrics_csv());
                (plan.runs[j.index].name.clone(), rows, j.total)
            })
            .collect();
        let finished = state.runs.iter().filter(|r| r.status == Status::Finished).count();
        if let Some(b) = &reporter.bars {
            b.update(finished, &progress);
        } else if plain && last_line.elapsed() >= crate::train::schedule::PROGRESS_LINE_EVERY {
            let running: Vec<String> = progress.iter().map(|(n, d, t)| format!("{n} {d}/{t}")).collect();
            eprintln!(
                "gantry: sweep {}: {finished}/{total_runs} finished; running: {}",
                plan.name,
                running.join(", ")
            );
            last_line = Instant::now();
        }
    }
    if let Some(b) = &reporter.bars {
        b.finish();
    }
    state.write(sweep)?;
    Ok(LocalOutcome { state, stopped: stopping })
}

/// How often the running runs' progress is read from their metrics files.
const POLL_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Rows a running run has written so far (its metrics file's complete lines but the header): a
/// count of newlines, cheap enough to read every second.
fn lines_written(metrics_csv: &Path) -> usize {
    std::fs::read(metrics_csv)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count().saturating_sub(1))
        .unwrap_or(0)
}

/// Most times one sweep command restarts a run whose job was killed from outside.
pub const MAX_RESTARTS: usize = 3;

/// Whether the sweep itself is stopping (it got a signal and sent its jobs one) as a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Stopping,
}

/// A run's status after its job exited with `code` (None: killed by a signal). A job stopped
/// by a signal the sweep did not send is resumed, at most [`MAX_RESTARTS`] times; other
/// failures wait for the next `gantry sweep`.
pub fn after_exit(code: Option<i32>, phase: Phase, restarts: usize) -> Status {
    let stopping = phase == Phase::Stopping;
    let signalled =
        matches!(code, None | Some(crate::error::EXIT_STOPPED) | Some(crate::error::EXIT_ABORTED));
    match code {
        Some(0) => Status::Finished,
        _ if signalled && (stopping || restarts < MAX_RESTARTS) => Status::Stopped,
        _ => Status::Failed,
    }
}

/// Where progress goes: bars on a terminal, plain lines in a log, nothing when quiet.
struct Reporter {
    bars: Option<Bars>,
    plain: bool,
}

impl Reporter {
    fn line(&self, line: &str) {
        if let Some(b) = &self.bars {
            b.multi.suspend(|| eprintln!("gantry: {line}"));
        } else if self.plain {
            eprintln!("gantry: {line}");
        }
    }
}

/// One bar for the sweep and one per running run.
struct Bars {
    multi: indicatif::MultiProgress,
    sweep: indicatif::ProgressBar,
    runs: std::cell::RefCell<Vec<indicatif::ProgressBar>>,
}

impl Bars {
    fn new(total: usize) -> Self {
        let multi = indicatif::MultiProgress::new();
        let sweep = multi.add(indicatif::ProgressBar::new(total as u64));
        sweep.set_style(
            indicatif::ProgressStyle::with_template("sweep {bar:30} {pos}/{len} runs finished")
                .expect("template"),
        );
        Self { multi, sweep, runs: std::cell::RefCell::new(Vec::new()) }
    }

    fn update(&self, finished: usize, running: &[(String, usize, usize)]) {
        self.sweep.set_position(finished as u64);
        let mut bars = self.runs.borrow_mut();
        while bars.len() < running.len() {
            let bar = self.multi.add(indicatif::ProgressBar::new(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template("  {msg:40} {bar:30} {pos}/{len}").expect("template"),
            );
            bars.push(bar);
        }
        while bars.len() > running.len() {
            if let Some(b) = bars.pop() {
                b.finish_and_clear();
                self.multi.remove(&b);
            }
        }
        for (bar, (name, done, total)) in bars.iter().zip(running) {
            bar.set_length(*total as u64);
            bar.set_position(*done as u64);
            bar.set_message(name.clone());
        }
    }

    fn finish(&self) {
        for b in self.runs.borrow_mut().drain(..) {
            b.finish_and_clear();
        }
        self.sweep.finish();
    }
}

/// Ask a job to stop as a run stops on SIGTERM: checkpoint and exit 130.
fn terminate(child: &Child) {
    #[cfg(unix)]
    {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// On Linux, a job gets SIGTERM (and so checkpoints) when the sweep process dies, however it dies.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: the closure calls only async-signal-safe functions (prctl, getppid, kill).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // The parent may have died before prctl: then nobody would send it.
                if libc::getppid() as u32 != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: usize, status: Status) -> RunRecord {
        RunRecord {
            index,
            name: format!("r{index}"),
            seed: 0,
            values: BTreeMap::new(),
            status,
            exit_code: None,
        }
    }

    #[test]
    fn a_job_killed_from_outside_is_resumed_a_few_times_then_left_failed() {
        assert_eq!(after_exit(Some(0), Phase::Running, 0), Status::Finished);
        assert_eq!(after_exit(None, Phase::Running, 0), Status::Stopped);
        assert_eq!(after_exit(Some(130), Phase::Running, MAX_RESTARTS - 1), Status::Stopped);
        assert_eq!(after_exit(None, Phase::Running, MAX_RESTARTS), Status::Failed);
        assert_eq!(after_exit(Some(130), Phase::Stopping, 99), Status::Stopped, "the sweep's own stop");
        assert_eq!(after_exit(Some(2), Phase::Running, 0), Status::Failed);
        assert_eq!(after_exit(Some(1), Phase::Stopping, 0), Status::Failed);
    }

    #[test]
    fn threads_are_divided_among_the_jobs() {
        assert_eq!(threads_per_job(2, 1), 2);
        assert_eq!(threads_per_job(2, 2), 1);
        assert_eq!(threads_per_job(2, 5), 1);
        assert_eq!(threads_per_job(16, 3), 5);
        assert_eq!(threads_per_job(4, 0), 4);
    }

    #[test]
    fn unfinished_runs_start_lowest_index_first_never_twice() {
        let runs = [
            rec(0, Status::Finished),
            rec(1, Status::Running),
            rec(2, Status::Stopped),
            rec(3, Status::Failed),
            rec(4, Status::Pending),
            rec(5, Status::Pending),
        ];
        assert_eq!(to_start(&runs, 2), [2, 4]);
        assert_eq!(to_start(&runs, 0), Vec::<usize>::new());
        assert_eq!(to_start(&runs, 9), [2, 4, 5]);
    }
}
