//! The command line: argument definitions and what each command does. `main` only parses, calls
//! [`run`] and maps the error to an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Dataset};
use crate::error::{Error, Result};
use crate::eval;
use crate::flags::{DeviceFlag, NewRunSettings, RunSettings};
use crate::grid::{self, GridLayout};
use crate::metrics;
use crate::plot;
use crate::report;
use crate::run_dir::{self, RunDir};
use crate::serve::{self, Dashboard};
use crate::train::{self, Options, TrainOutcome, bench};

/// Train GANs, watch them learn, judge what they make, never lose a run.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a GAN (by default the classic MNIST "simple GAN": 30,000 iterations of batch 32).
    Train(TrainArgs),
    /// Continue a stopped run exactly where its newest valid checkpoint left it
    /// (same as `gantry train --resume RUN_DIR`).
    Resume(ResumeArgs),
    /// Draw a grid of samples from a trained run's generator.
    Sample(SampleArgs),
    /// Export a run's generator (its moving average where the run keeps one) for other tools: ONNX
    /// (inputs `z` and, conditional, `class`; output `image`; a dynamic batch axis; opset 17).
    Export(ExportArgs),
    /// (Re)draw a run's loss and accuracy charts from its metrics.csv.
    Plot(PlotArgs),
    /// Write one self-contained HTML report of a run (charts, grids, timelapse, summary, alerts,
    /// config) that opens offline in any browser.
    Report(ReportArgs),
    /// Judge samples against the real test set with a classifier trained on the data set (FID and
    /// KID in its feature space, precision/recall, Inception-Score analogue, class coverage): a
    /// run's generator, or images from any tool.
    Eval(eval::command::EvalRequest),
    /// Serve the live dashboard of one or more runs (a run folder, or a folder of runs such as
    /// `runs/`) on http://127.0.0.1:6150/.
    Serve(ServeArgs),
    /// List the devices this build can compute on (`--device`): the CPU, and with the `gpu`
    /// feature every wgpu adapter.
    Devices,
    /// Time the training step (classic preset, or `--preset` / `--config`; random images) at
    /// several batch sizes and thread counts: median ms/iteration, images/s, achieved GFLOP/s.
    Bench(BenchArgs),
    /// Run a sweep: a base config, axes of values for any config keys (crossed or zipped) and
    /// seeds, one run folder each, several at a time; continues where it stopped. `gantry sweep
    /// run SPEC --task I` carries run I alone to its end (what cluster array tasks run).
    Sweep(SweepArgs),
    /// Compare runs and sweeps: curves overlaid, a table by configuration with mean ± std and 95%
    /// confidence intervals over seeds, differences between configurations (Welch), as text, CSV,
    /// JSON, PNG/SVG and one HTML report.
    Compare(CompareArgs),
}

/// Cluster job definitions `gantry sweep --emit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// SWEEP/sweep.sbatch: a Slurm job array (`sbatch` it).
    Slurm,
    /// SWEEP/sweep-k8s.yaml: a Kubernetes Indexed Job (`kubectl apply -f` it).
    K8s,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The sweep's spec file (TOML: base, axes, seeds; see the README). `run SPEC --task I` runs
    /// one task of it.
    #[arg(value_name = "SPEC", num_args = 1..=2, required = true)]
    pub spec: Vec<PathBuf>,
    /// Sweep folder. Default: sweeps/<name>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Runs at a time on this machine.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Compute threads of each run. Default: the cores divided among the jobs (with --emit: 1).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The data's folder, as `gantry train --data` takes it (default: $GANTRY_DATA, then the
    /// cache).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// List the runs the spec plans and their state; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write a cluster scheduler's job definition into the sweep folder instead of running.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// Carry this one run (0-based, as `--dry-run` numbers them) to its end.
    #[arg(long, value_name = "I")]
    pub task: Option<usize>,
    /// Container image of the Kubernetes job (--emit k8s).
    #[arg(long, default_value = "gantry")]
    pub image: String,
    /// No progress bars or lines.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run folders, sweep folders, or folders of runs.
    #[arg(required = true, value_name = "RUN_OR_SWEEP")]
    pub paths: Vec<PathBuf>,
    /// Folder for compare.{csv,json,html} and the plots. Default, for one sweep: SWEEP/compare.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The plateau: the last this fraction of each run's iterations, averaged.
    #[arg(long, default_value_t = 0.2, value_name = "FRACTION")]
    pub tail: f64,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub new: NewRunSettings,
    /// Run folder to write. Default: runs/<dataset>-<UTC time>.
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Replace an existing gantry run folder: the files gantry wrote there are deleted, any
    /// others are kept. Folders that are not gantry runs are never replaced.
    #[arg(long)]
    pub force: bool,
    /// Continue the run in RUN_DIR (or from the checkpoint folder given) instead of starting one
    /// (the same as `gantry resume RUN_DIR`).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Start from a built-in preset instead of the defaults: classic (the default), dcgan (a
    /// convolutional GAN sized for a 2-core CPU), cdcgan (its conditional form) or dcgan-tf
    /// (TensorFlow's DCGAN tutorial).
    /// Presets are plain config files (presets/ in the source).
    #[arg(long, value_name = "NAME", conflicts_with = "config")]
    pub preset: Option<String>,
    /// Set any config key, after the file and the other flags (repeatable): `--set
    /// train.g_ema=0.999 --set model.d_spectral_norm=true --set train.augment='["cutout"]'`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub run: RunFlags,
}

/// The flags `train` and `resume` share: what a continued run may change.
#[derive(Debug, Args, Clone)]
pub struct RunFlags {
    /// TOML config file; command-line flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: RunSettings,
    /// No progress bar or progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Serve the live dashboard of this run while it trains (and after, until Ctrl-C).
    #[arg(long)]
    pub serve: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// Where the dashboard listens.
#[derive(Debug, Args, Clone, Copy)]
pub struct ListenArgs {
    /// Port of the dashboard (0 = any free port).
    #[arg(long, default_value_t = serve::DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on. Default 127.0.0.1 (this machine only); give another address, such as
    /// 0.0.0.0, only to let other machines read the runs.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<std::net::IpAddr>,
}

/// The formats `gantry export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// ONNX (opset 17), for onnxruntime, TensorRT, OpenVINO, web runtimes.
    Onnx,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder.
    pub run: PathBuf,
    /// The format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
    pub format: ExportFormat,
    /// The generator of the checkpoint after this many iterations instead of the final one.
    #[arg(long, value_name = "ITERATION")]
    pub checkpoint: Option<usize>,
    /// The file to write. Default: RUN/generator.onnx.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace the --out file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Run folders, or folders of run folders.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    #[command(flatten)]
    pub listen: ListenArgs,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run folder (or one of its checkpoints/step_NNNNNN folders).
    pub run: PathBuf,
    #[command(flatten)]
    pub flags: RunFlags,
}

/// What `gantry sample` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SampleFormat {
    /// One PNG grid of the images (--n at most 4096).
    #[default]
    Grid,
    /// One PNG file per image in the folder --out (000000.png, ...), as torch-fidelity and
    /// clean-fid read them.
    Png,
    /// One .npy file (--out): uint8 of shape [N, H, W, C].
    Npy,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The run folder.
    pub run: PathBuf,
    /// The PNG grid to write (default: RUN/sample-seedS.png); with --format png the folder, with
    /// --format npy the file (then required). Never a file of a run's own (its config, metrics,
    /// weights, grids...).
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub out: Option<PathBuf>,
    /// What to write: a grid, single PNG files, or one .npy (images drawn and written in
    /// slices: memory stays bounded for any --n up to 1,000,000).
    #[arg(long, value_enum, default_value_t = SampleFormat::Grid)]
    pub format: SampleFormat,
    /// The truncation trick: draw the noise from N(0, 1) truncated to [-PSI, PSI], each value
    /// beyond it drawn again (BigGAN's resampling; not clipping). Smaller PSI: more typical, less
    /// varied images.
    #[arg(long, value_name = "PSI")]
    pub truncation: Option<f32>,
    /// A latent walk instead of random samples: the latents of these seeds in turn, spherically
    /// interpolated (--steps frames from each to the next, one row each), as one PNG (--out).
    #[arg(long, value_delimiter = ',', value_name = "SEEDS")]
    pub walk: Vec<u64>,
    /// Frames from one seed to the next in a --walk.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub steps: usize,
    /// A conditional run's classes in turn, the noise of --seed fixed, as one PNG row (--out).
    #[arg(long)]
    pub walk_classes: bool,
    /// Replace the --out file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Number of images (laid out as a near-square grid).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw only this class (a conditional run; without it, every class in turn, or a run with
    /// clusters, `data.clusters` or `model.clusters_per_class`, its clusters by their sizes).
    #[arg(long, value_name = "C")]
    pub class: Option<usize>,
    #[command(flatten)]
    pub device: DeviceFlag,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64, 256])]
    pub batch: Vec<usize>,
    /// Thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    pub threads: Vec<usize>,
    /// Untimed iterations before measuring.
    #[arg(long, default_value_t = 30)]
    pub warmup: usize,
    /// Timed iterations per configuration.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// TOML config whose model and optimizer to time (default: the classic preset).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A built-in preset to time instead (classic, dcgan, cdcgan, dcgan-tf; see `gantry train
    /// --preset`).
    #[arg(long, value_name = "NAME", conflicts_with = "config")]
    pub preset: Option<String>,
    #[command(flatten)]
    pub device: DeviceFlag,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Replace the --json file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also time each layer of G and D alone (forward pass, input gradient, weight gradient) at
    /// each batch size and thread count, and say how much of the step they take.
    #[arg(long)]
    pub layers: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder.
    pub run: PathBuf,
    /// HTML file to write (default: RUN/report.html). Never a file of a run's own.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace the --out file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run folder.
    pub run: PathBuf,
}

pub use crate::error::{EXIT_ABORTED, EXIT_STOPPED};

/// Largest thread count a command accepts (as `train.threads`).
pub const MAX_THREADS: usize = 1024;

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Train(args) => train_command(args),
        Command::Resume(args) => resume_command(&args.run, &args.flags),
        Command::Eval(request) => eval::command::run(&request).map(|_| 0),
        Command::Serve(args) => {
            let dashboard = Arc::new(Dashboard::from_paths(&args.runs)?);
            let addr = serve::bind_address(args.listen.host, args.listen.port);
            serve::serve_blocking(dashboard.clone(), addr, None, |bound| {
                announce_dashboard(bound, &dashboard.run_names().join(", "))
            })?;
            Ok(0)
        }
        Command::Sample(args) => sample_command(args).map(|()| 0),
        Command::Export(args) => export_command(args).map(|()| 0),
        Command::Plot(args) => plot_command(args).map(|()| 0),
        Command::Bench(args) => bench_command(args).map(|()| 0),
        Command::Devices => {
            for d in crate::device::list() {
                println!("{:<22}  {}", d.choice, d.description);
            }
            if !crate::device::GPU_BUILT {
                eprintln!(
                    "gantry: this build has no GPU backend; `cargo build --release --features gpu` adds wgpu's"
                );
            }
            Ok(0)
        }
        Command::Sweep(args) => sweep_command(args),
        Command::Compare(args) => {
            let written = crate::compare::run(&args.paths, args.out.as_deref(), args.tail)?;
            print!("{}", written.table);
            for f in &written.files {
                eprintln!("gantry: wrote {}", f.display());
            }
            Ok(0)
        }
        Command::Report(args) => {
            let run = RunDir::open(&args.run)?;
            if let Some(out) = &args.out {
                let existing = replace_if(args.force);
                run_dir::check_output(out, run_dir::OwnOutput::Report, existing, "--out")?;
            }
            let path = report::write(&run, args.out.as_deref())?;
            eprintln!("gantry: wrote {}", path.display());
            Ok(0)
        }
    }
}

/// `gantry sweep`: plan, then list, emit, run one task, or run them all here.
fn sweep_command(args: SweepArgs) -> Result<i32> {
    use crate::sweep::{self, local};
    let (spec, one_task) = match args.spec.as_slice() {
        [spec] => (spec, false),
        [word, spec] if word.as_os_str() == "run" => (spec, true),
        _ => return Err(Error::usage("SPEC", "give one spec file, or `run SPEC --task I`")),
    };
    if one_task && args.task.is_none() {
        return Err(Error::usage("--task", "`gantry sweep run SPEC` carries one run: give --task I"));
    }
    if !(1..=256).contains(&args.jobs) {
        return Err(Error::usage("--jobs", format!("1 to 256, found {}", args.jobs)));
    }
    if let Some(t) = args.threads
        && !(1..=MAX_THREADS).contains(&t)
    {
        return Err(Error::usage("--threads", format!("1 to {MAX_THREADS}, found {t}")));
    }
    let plan = sweep::Plan::from_file(spec)?;
    let out = args.out.clone().unwrap_or_else(|| sweep::default_folder(&plan));
    if args.dry_run {
        print!("{}", sweep::listing(&plan, &out)?);
        return Ok(0);
    }
    if let Some(index) = args.task {
        return task_command(&args, &plan, &out, index);
    }
    let (state, _sweep_lock) = local::prepare(&plan, &out)?;
    if let Some(kind) = args.emit {
        return emit_command(&args, &plan, &out, kind);
    }
    let todo = state.runs.iter().filter(|r| r.status != local::Status::Finished).count();
    eprintln!(
        "gantry: sweep `{}`: {} runs ({} finished already), {} at a time -> {}",
        plan.name,
        plan.runs.len(),
        plan.runs.len() - todo,
        args.jobs,
        out.display()
    );
    let stop = install_stop_handler();
    // The scheduler polls the stop flag from here on: a signal stops its jobs, which checkpoint.
    stop.listening.store(true, Ordering::SeqCst);
    let options = local::LocalOptions {
        jobs: args.jobs,
        threads: args.threads,
        data: args.data.clone(),
        progress: !args.quiet,
        stop: Some(stop.stop.clone()),
    };
    let outcome = local::run(&plan, &out, state, &options)?;
    let count = |s: local::Status| outcome.state.runs.iter().filter(|r| r.status == s).count();
    let (finished, failed) = (count(local::Status::Finished), count(local::Status::Failed));
    eprintln!(
        "gantry: sweep `{}`: {finished} of {} runs finished{}",
        plan.name,
        plan.runs.len(),
        if failed > 0 { format!(", {failed} failed (see {}/logs)", out.display()) } else { String::new() }
    );
    if outcome.stopped {
        eprintln!("gantry: stopped; continue with: gantry sweep {}{}", spec.display(), out_flag(&args.out));
        return Ok(EXIT_STOPPED);
    }
    if failed == 0 {
        eprintln!("gantry: compare them: gantry compare {}", out.display());
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn out_flag(out: &Option<PathBuf>) -> String {
    out.as_ref().map(|o| format!(" --out {}", o.display())).unwrap_or_default()
}

/// `gantry sweep run SPEC --task I`: carry run I of the sweep to its end (what array tasks run).
fn task_command(args: &SweepArgs, plan: &crate::sweep::Plan, out: &Path, index: usize) -> Result<i32> {
    use crate::sweep::task;
    let stop = install_stop_handler();
    let options = stop.options(!args.quiet);
    let task_options = task::TaskOptions {
        threads: args.threads,
        data: args.data.clone(),
        lock_wait: std::time::Duration::from_secs(120),
    };
    let name = plan.task(index)?.name.clone();
    std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
    match task::run(plan, out, index, &task_options, &options)? {
        task::TaskOutcome::AlreadyFinished => {
            eprintln!("gantry: sweep run {name} is finished; nothing to do");
            Ok(0)
        }
        task::TaskOutcome::Trained(outcome) => Ok(report(&outcome)),
    }
}

/// `gantry sweep SPEC --emit slurm|k8s`: write the cluster scheduler's job definition into the
/// sweep folder (prepared already) and say how to submit it.
fn emit_command(args: &SweepArgs, plan: &crate::sweep::Plan, out: &Path, kind: Emit) -> Result<i32> {
    use crate::sweep;
    let absolute = std::path::absolute(out).map_err(|e| Error::io("resolve", out, e))?;
    let gantry = std::env::current_exe().map_err(|e| Error::io("find", "the gantry executable", e))?;
    let target = sweep::emit::Target {
        name: &plan.name,
        runs: plan.runs.len(),
        sweep: &absolute,
        gantry: &gantry,
        threads: args.threads.unwrap_or(1),
        parallel: if args.jobs > 1 { args.jobs } else { 0 },
    };
    let (file, text, how) = match kind {
        Emit::Slurm => ("sweep.sbatch", sweep::emit::slurm(&target), "sbatch"),
        Emit::K8s => ("sweep-k8s.yaml", sweep::emit::kubernetes(&target, &args.image), "kubectl apply -f"),
    };
    let path = absolute.join(file);
    crate::durable::write_atomic(&path, text.as_bytes())?;
    eprintln!(
        "gantry: wrote {} ({} runs); submit it with: {how} {}",
        path.display(),
        plan.runs.len(),
        path.display()
    );
    Ok(0)
}

/// What a stop request means at the moment it arrives.
#[derive(Debug, Clone, Default)]
struct StopState {
    /// Raised by the first signal: the loop finishes its iteration, checkpoints and stops.
    stop: Arc<AtomicBool>,
    /// Raised while something polls `stop` (the training loop, a sweep's scheduler): only then
    /// can a stop wait for it.
    listening: Arc<AtomicBool>,
    /// Set once training is over (only the dashboard is still up).
    finished: Arc<AtomicBool>,
}

impl StopState {
    /// The options of a training command stopped by this state.
    fn options(&self, progress: bool) -> Options {
        Options {
            progress,
            stop: Some(self.stop.clone()),
            stop_after: None,
            listening: Some(self.listening.clone()),
        }
    }
}

/// What one SIGINT or SIGTERM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnSignal {
    /// Training is over and the dashboard is up: close it.
    CloseDashboard,
    /// The loop is running: it finishes its iteration, checkpoints and stops.
    CheckpointAndStop,
    /// Exit at once with this code.
    Exit(i32),
}

/// The policy: a first signal while the loop listens asks it to checkpoint; a second one, or one
/// while nothing listens (reading or decoding data, training the judge, writing the final files;
/// `Exit(EXIT_STOPPED)`), ends the process at once, so one SIGTERM ends any command at any phase.
fn on_signal(finished: bool, listening: bool, asked_before: bool) -> OnSignal {
    if finished {
        OnSignal::CloseDashboard
    } else if asked_before {
        OnSignal::Exit(EXIT_ABORTED)
    } else if listening {
        OnSignal::CheckpointAndStop
    } else {
        OnSignal::Exit(EXIT_STOPPED)
    }
}

/// Stop requests from SIGINT/SIGTERM, as [`on_signal`] decides.
fn install_stop_handler() -> StopState {
    let state = StopState::default();
    let (flag, listening, finished) = (state.stop.clone(), state.listening.clone(), state.finished.clone());
    let installed = ctrlc::set_handler(move || {
        let asked_before = flag.swap(true, Ordering::SeqCst);
        match on_signal(finished.load(Ordering::SeqCst), listening.load(Ordering::SeqCst), asked_before) {
            OnSignal::CloseDashboard => eprintln!("\ngantry: closing the dashboard"),
            OnSignal::CheckpointAndStop => eprintln!(
                "\ngantry: stopping after this iteration and saving a checkpoint (signal again to exit at once)"
            ),
            OnSignal::Exit(code) if code == EXIT_ABORTED => {
                eprintln!(
                    "\ngantry: second signal: exiting now without a new checkpoint (exit code {EXIT_ABORTED}); \
                     a resume continues from the last one saved"
                );
                std::process::exit(code);
            }
            OnSignal::Exit(code) => {
                eprintln!(
                    "\ngantry: stopped by a signal outside the training loop, with nothing to checkpoint \
                     (exit code {code}); a run folder already made resumes from its last checkpoint or starts again"
                );
                std::process::exit(code);
            }
        }
    });
    if let Err(e) = installed {
        eprintln!(
            "warning: cannot handle SIGINT/SIGTERM ({e}); an interrupted run resumes from its last checkpoint"
        );
    }
    state
}

fn train_command(args: TrainArgs) -> Result<i32> {
    if let Some(run) = &args.resume {
        let mut given = args.new.given();
        let others =
            [("--out", args.out.is_some()), ("--force", args.force), ("--preset", args.preset.is_some())];
        given.extend(others.iter().filter(|(_, on)| *on).map(|(name, _)| name.to_string()));
        given.extend((!args.set.is_empty()).then(|| "--set".to_string()));
        if !given.is_empty() {
            return Err(Error::usage(
                "--resume",
                format!("continues a run as it was: {} do not apply", given.join(", ")),
            ));
        }
        return resume_command(run, &args.run);
    }
    let flags = &args.run;
    let mut overrides = args.new.lowered()?;
    overrides.named.extend(flags.settings.lowered()?.named);
    overrides.settings = args.set.clone();
    // `--data DIR` alone on an image folder or CIFAR-10's batches: that data set, said.
    let asked =
        args.new.dataset.is_some() || args.set.iter().any(|s| s.trim_start().starts_with("data.dataset"));
    let named = match (args.preset.as_deref(), flags.config.as_deref()) {
        (Some(name), _) => Config::preset(name)?.data.dataset,
        (None, Some(file)) => Config::from_file(file)?.data.dataset,
        (None, None) => Dataset::Mnist,
    };
    if let Some(dir) = flags.settings.data.as_deref().filter(|_| !asked && named == Dataset::Mnist)
        && let Some((dataset, what)) = detected_dataset(dir)
    {
        eprintln!(
            "gantry: {} holds {what} and no MNIST files: training on it as dataset = \"{}\" (--dataset decides)",
            dir.display(),
            dataset.name()
        );
        overrides = overrides.with("data.dataset", dataset)?;
    }
    let config = Config::resolve_from(args.preset.as_deref(), flags.config.as_deref(), &overrides)?;
    let out =
        args.out.unwrap_or_else(|| run_dir::generated_path(Path::new("runs"), config.data.dataset.name()));
    eprintln!(
        "gantry: training {} iterations on {} (batch {}, seed {}, {} threads) -> {}",
        config.train.iterations,
        config.data.dataset.name(),
        config.train.batch_size,
        config.train.seed,
        config.effective_threads(),
        out.display()
    );
    let stop = install_stop_handler();
    let options = stop.options(!flags.quiet);
    if flags.serve {
        start_dashboard(&out, flags.listen, options.stop.clone())?;
    }
    let outcome = train::start(&config, &out, replace_if(args.force), &options)?;
    finish_command(&outcome, flags, &stop)
}

/// [`run_dir::Existing::Replace`] where the user said `--force`, else `Keep`.
fn replace_if(force: bool) -> run_dir::Existing {
    if force { run_dir::Existing::Replace } else { run_dir::Existing::Keep }
}

/// The data set the `--data` folder `dir` holds when it is not MNIST's files but an image folder or
/// CIFAR-10's batches, with what was found in words; None otherwise (MNIST's files are there, or
/// nothing recognisable is, and the usual search and its error follow). Asked only where the
/// command, its preset and its config name no data set but MNIST, the default.
fn detected_dataset(dir: &Path) -> Option<(Dataset, String)> {
    match crate::data::look_at(dir) {
        crate::data::Found::Cifar10 => Some((Dataset::Cifar10, "CIFAR-10's batches".into())),
        crate::data::Found::Images { top, class_folders } => {
            let what = if top > 0 {
                format!("{top} PNG/JPEG images")
            } else {
                format!("{class_folders} sub-folders of PNG/JPEG images (the classes)")
            };
            Some((Dataset::Folder, what))
        }
        crate::data::Found::Idx | crate::data::Found::Nothing => None,
    }
}

/// `gantry resume RUN` (and `gantry train --resume RUN`).
fn resume_command(run: &Path, flags: &RunFlags) -> Result<i32> {
    let overrides = flags.settings.lowered()?;
    let stop = install_stop_handler();
    let options = stop.options(!flags.quiet);
    if flags.serve {
        // RUN_DIR, or RUN_DIR/checkpoints/step_N.
        let (root, _) = run_dir::run_root(run);
        start_dashboard(&root, flags.listen, options.stop.clone())?;
    }
    let outcome = train::resume(run, flags.config.as_deref(), &overrides, &options)?;
    finish_command(&outcome, flags, &stop)
}

/// Report the end of a training command, keep the dashboard up if asked, choose the exit code.
fn finish_command(outcome: &TrainOutcome, flags: &RunFlags, stop: &StopState) -> Result<i32> {
    let code = report(outcome);
    if flags.serve && code == 0 {
        stop.finished.store(true, Ordering::SeqCst);
        eprintln!("gantry: training finished; the dashboard stays up until Ctrl-C");
        while !stop.stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    Ok(code)
}

/// Serve `run`'s dashboard from a background thread while the main thread trains. Binding happens
/// before training starts, so a busy port is an error up front rather than a silent missing page.
fn start_dashboard(run: &Path, listen: ListenArgs, stop: Option<Arc<AtomicBool>>) -> Result<()> {
    let dashboard = Arc::new(Dashboard::single(run));
    let addr = serve::bind_address(listen.host, listen.port);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ready = tx.clone();
        let result = serve::serve_blocking(dashboard, addr, stop, move |bound| {
            let _ = ready.send(Ok(bound));
        });
        if let Err(e) = result {
            // Before `ready` the error goes back to the caller; after it, training goes on without.
            if let Err(std::sync::mpsc::SendError(Err(e))) = tx.send(Err(e)) {
                eprintln!("gantry: dashboard stopped: {e}");
            }
        }
    });
    match rx.recv() {
        Ok(Ok(bound)) => {
            announce_dashboard(bound, &run.display().to_string());
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::io(
            "listen on",
            addr.to_string(),
            std::io::Error::new(std::io::ErrorKind::AddrInUse, "the dashboard could not start"),
        )),
    }
}

fn announce_dashboard(bound: std::net::SocketAddr, what: &str) {
    eprintln!("gantry: dashboard of {what} at http://{bound}/");
    if !bound.ip().is_loopback() {
        eprintln!(
            "gantry: warning: listening on {bound}: anyone who can reach this address can read the runs"
        );
    }
}

/// Print the end of a run and choose the exit code.
fn report(outcome: &TrainOutcome) -> i32 {
    match outcome.stopped_at {
        Some(it) => {
            eprintln!(
                "gantry: stopped at iteration {it}; checkpoint saved. Continue with:\n  gantry resume {}",
                outcome.run.root().display()
            );
            EXIT_STOPPED
        }
        None if outcome.already_complete => {
            let n = outcome.records.len();
            eprintln!(
                "gantry: {} is complete ({n} iterations); nothing was changed. To train it further:\n  \
                 gantry resume {} --iterations {}",
                outcome.run.root().display(),
                outcome.run.root().display(),
                n.saturating_mul(2).max(1)
            );
            0
        }
        None => {
            print!("{}", summary(outcome));
            0
        }
    }
}

/// The end-of-run table: each metric's mean over the last 10% of iterations, and where things are.
pub fn summary(outcome: &TrainOutcome) -> String {
    let n = outcome.records.len();
    let tail = metrics::tail_len(n, 0.1);
    let mut s = format!(
        "\nTrained {n} iterations in {:.1} s ({:.2} ms/iteration, {} threads).\n\
         Mean over the last {tail} iterations:\n",
        outcome.info.wall_seconds,
        1e3 * outcome.info.wall_seconds / n.max(1) as f64,
        outcome.info.threads
    );
    s.push_str("  metric        mean\n  ------------  --------\n");
    for (name, mean) in metrics::tail_means(&outcome.records, 0.1) {
        s.push_str(&format!("  {name:<12}  {mean:>8.4}\n"));
    }
    s.push_str(&match (outcome.loss.equilibrium_loss(), outcome.loss.is_cross_entropy()) {
        (Some(l), true) => format!("  (equilibrium: acc 0.5, d_out 0.5, losses ln 2 = {l:.4})\n"),
        (Some(l), false) => format!("  (equilibrium: acc 0.5, d_out 0.5, losses {l})\n"),
        (None, _) => format!(
            "  ({} losses have no fixed equilibrium value; acc 0.5 means D cannot tell real from fake)\n",
            outcome.loss.name()
        ),
    });
    if outcome.g_ema > 0.0 {
        s.push_str(&format!(
            "\nThe grids, the judge's scores and weights/generator.* are of the moving average of G \
             (train.g_ema = {}); the checkpoints also hold G itself.\n",
            outcome.g_ema
        ));
    }
    if let Some(q) = &outcome.quality {
        s.push_str(&format!(
            "\nSample quality at iteration {} (the judge's scores, eval.csv): FID {:.2}, precision {:.3}, \
             recall {:.3}{}{}\n",
            q.iteration,
            q.fid,
            q.precision,
            q.recall,
            if q.inception_score.is_finite() {
                format!(", {} classes present", q.classes_present)
            } else {
                String::new()
            },
            q.class_accuracy.map(|a| format!(", class accuracy {:.2}%", 100.0 * a)).unwrap_or_default()
        ));
    }
    let root = outcome.run.root().display();
    let quality = if outcome.quality.is_some() { "eval.csv (sample quality), " } else { "" };
    let quality_plot = if outcome.quality.is_some() { ", quality" } else { "" };
    let info = &outcome.info;
    let judge = if info.image_rows >= crate::eval::reference::MIN_SIDE {
        format!("; `gantry eval {root}` judges 10,000 samples")
    } else {
        format!(" (gantry's judge takes images of {0}x{0} or more)", crate::eval::reference::MIN_SIDE)
    };
    s.push_str(&format!(
        "\nOutputs in {root}:\n  \
         metrics.csv, d_loss_real.npy, d_loss_fake.npy, g_loss.npy, d_output.npy, {quality}alerts.json\n  \
         samples/ (grids), timelapse.gif, plots/ (curves_raw, curves_smoothed{quality_plot}; png and svg)\n  \
         weights/ (generator.bpk, discriminator.bpk, generator.safetensors, manifest.json), checkpoints/\n  \
         config.toml, run.json, events.out.tfevents.* (tensorboard --logdir {root})\n\
         `gantry report {root}` writes one HTML file of it all{judge}\n"
    ));
    s
}

fn sample_command(args: SampleArgs) -> Result<()> {
    if !args.walk.is_empty() || args.walk_classes {
        return sample_walk(args);
    }
    if args.format != SampleFormat::Grid {
        return sample_files(args);
    }
    if args.n == 0 || args.n > 4096 {
        return Err(Error::usage("--n", format!("must be within 1..=4096, found {}", args.n)));
    }
    let run = RunDir::open(&args.run)?;
    // The default file is the command's own; a file the user names is replaced only with --force.
    let existing = if args.out.is_none() { run_dir::Existing::Replace } else { replace_if(args.force) };
    let out = args.out.clone().unwrap_or_else(|| crate::sample::default_out(&run, args.seed));
    run_dir::check_output(&out, run_dir::OwnOutput::SampleGrid, existing, "--out")?;
    let weights = crate::sample::Weights::Final;
    let g = loaded_generator(&run, &weights, &args)?;
    let images = g.generate(args.n, args.seed, args.class)?;
    grid::save_png(&out, &images, GridLayout::for_count(args.n, g.rows, g.cols, g.channels))?;
    let averaged = match crate::Config::from_file(&run.config()) {
        Ok(c) if c.train.g_ema > 0.0 => {
            format!(" (from the moving average of G, train.g_ema = {})", c.train.g_ema)
        }
        _ => String::new(),
    };
    let of_class = args.class.map(|c| format!(" of class {c}")).unwrap_or_default();
    let truncated = args.truncation.map(|psi| format!(", noise truncated to ±{psi}")).unwrap_or_default();
    eprintln!("gantry: wrote {} samples{of_class}{averaged}{truncated} to {}", args.n, out.display());
    Ok(())
}

/// The run's generator as `gantry sample` draws from it: on the device asked, its noise truncated
/// when `--truncation` says.
fn loaded_generator(
    run: &RunDir,
    weights: &crate::sample::Weights,
    args: &SampleArgs,
) -> Result<crate::sample::LoadedGenerator> {
    let g = crate::sample::LoadedGenerator::load(run, weights, args.device.device.unwrap_or_default())?;
    match args.truncation {
        Some(psi) => g.truncated(psi),
        None => Ok(g),
    }
}

/// `gantry sample --walk SEEDS` and `--walk-classes`: a latent walk as one PNG, a row per segment.
fn sample_walk(args: SampleArgs) -> Result<()> {
    let run = RunDir::open(&args.run)?;
    let Some(out) = args.out.clone() else {
        return Err(Error::usage("--out", "a walk is one PNG: give --out FILE.png"));
    };
    run_dir::check_output(&out, run_dir::OwnOutput::Nothing, replace_if(args.force), "--out")?;
    let g = loaded_generator(&run, &crate::sample::Weights::Final, &args)?;
    let walk = if args.walk_classes {
        crate::sample::class_walk(&g, args.seed)?
    } else {
        crate::sample::seed_walk(&g, &args.walk, args.steps, args.class)?
    };
    let images = g.generate_latents(&walk.noise, &walk.labels)?;
    let frames = images.len() / g.pixels();
    let layout = GridLayout {
        rows: frames / walk.frames_per_row,
        cols: walk.frames_per_row,
        tile_h: g.rows,
        tile_w: g.cols,
        channels: g.channels,
    };
    grid::save_png(&out, &images, layout)?;
    eprintln!("gantry: wrote a walk of {frames} frames ({} a row) to {}", walk.frames_per_row, out.display());
    Ok(())
}

/// `gantry sample --format png|npy`: `--n` images as files other tools read, drawn in slices.
fn sample_files(args: SampleArgs) -> Result<()> {
    use crate::sample::{MAX_SAMPLES, Weights};
    if args.n == 0 || args.n > MAX_SAMPLES {
        return Err(Error::usage("--n", format!("must be within 1..={MAX_SAMPLES}, found {}", args.n)));
    }
    let run = RunDir::open(&args.run)?;
    let what = if args.format == SampleFormat::Png { "the folder of PNG files" } else { "the .npy file" };
    let Some(out) = args.out.clone() else {
        let name = if args.format == SampleFormat::Png { "png" } else { "npy" };
        return Err(Error::usage("--out", format!("--format {name} writes {what}: give --out")));
    };
    if args.format == SampleFormat::Png {
        if out.exists() && !out.is_dir() {
            return Err(Error::usage("--out", format!("{} is not a folder", out.display())));
        }
        let used =
            out.is_dir() && std::fs::read_dir(&out).map_err(|e| Error::io("list", &out, e))?.next().is_some();
        if used && !args.force {
            return Err(Error::usage(
                "--out",
                format!(
                    "{} is not empty; pass --force to write into it (its NNNNNN.png files replaced)",
                    out.display()
                ),
            ));
        }
        run_dir::check_output(
            &out.join("000000.png"),
            run_dir::OwnOutput::Nothing,
            run_dir::Existing::Replace,
            "--out",
        )?;
    } else {
        run_dir::check_output(&out, run_dir::OwnOutput::Nothing, replace_if(args.force), "--out")?;
    }
    let g = loaded_generator(&run, &Weights::Final, &args)?;
    match args.format {
        SampleFormat::Png => crate::sample::write_png_folder(&g, args.n, args.seed, args.class, &out)?,
        _ => crate::sample::write_npy(&g, args.n, args.seed, args.class, &out)?,
    }
    let of_class = args.class.map(|c| format!(" of class {c}")).unwrap_or_default();
    let truncated = args.truncation.map(|psi| format!(", noise truncated to ±{psi}")).unwrap_or_default();
    eprintln!(
        "gantry: wrote {} samples{of_class} ({}x{}x{}{truncated}) to {}",
        args.n,
        g.rows,
        g.cols,
        g.channels,
        out.display()
    );
    Ok(())
}

/// `gantry export RUN`: the run's verified generator, written as ONNX.
fn export_command(args: ExportArgs) -> Result<()> {
    let run = RunDir::open(&args.run)?;
    // The command's own default file is replaced, as `gantry sample`'s grid is; a file the user
    // names only with --force.
    let (out, own, existing) = match &args.out {
        Some(out) => (out.clone(), run_dir::OwnOutput::Nothing, replace_if(args.force)),
        None => {
            (run.root().join(run_dir::EXPORTED_ONNX), run_dir::OwnOutput::Export, run_dir::Existing::Replace)
        }
    };
    run_dir::check_output(&out, own, existing, "--out")?;
    let weights = match args.checkpoint {
        Some(step) => crate::sample::Weights::Checkpoint(step),
        None => crate::sample::Weights::Final,
    };
    let g = crate::sample::LoadedGenerator::load(&run, &weights, crate::device::DeviceChoice::Cpu)?;
    let bytes = match args.format {
        ExportFormat::Onnx => g.onnx(),
    };
    crate::durable::write_atomic(&out, &bytes)?;
    let class = if g.classes() > 0 { " and `class` [N] (int64)" } else { "" };
    eprintln!(
        "gantry: wrote {} ({} KB): input `z` [N, {}]{class}, output `image` [N, {}, {}, {}] in [-1, 1]",
        out.display(),
        bytes.len().div_ceil(1024),
        g.latent(),
        g.channels,
        g.rows,
        g.cols
    );
    Ok(())
}

fn bench_command(args: BenchArgs) -> Result<()> {
    if args.iterations == 0 || args.batch.is_empty() || args.threads.is_empty() {
        return Err(Error::usage(
            "--iterations",
            "needs at least one iteration, batch size and thread count",
        ));
    }
    if let Some(&t) = args.threads.iter().find(|&&t| t == 0 || t > MAX_THREADS) {
        return Err(Error::usage(
            "--threads",
            format!("thread counts must be within 1..={MAX_THREADS}, found {t}"),
        ));
    }
    if args.iterations > 1_000_000 || args.warmup > 1_000_000 {
        return Err(Error::usage("--iterations", "at most 1,000,000 timed and 1,000,000 warm-up iterations"));
    }
    if let Some(path) = &args.json {
        run_dir::check_output(path, run_dir::OwnOutput::Nothing, replace_if(args.force), "--json")?;
    }
    let overrides = args.device.lowered()?;
    let config = Config::resolve_from(args.preset.as_deref(), args.config.as_deref(), &overrides)?;
    println!(
        "gantry {} training-step benchmark ({} warm-up + {} timed iterations each, random images)",
        env!("CARGO_PKG_VERSION"),
        args.warmup,
        args.iterations
    );
    println!("batch  threads  median ms/it   p10     p90    images/s  GFLOP/s  of peak (1024³ product)");
    let results = bench::run(&config, &args.batch, &args.threads, args.warmup, args.iterations, |r| {
        println!(
            "{:>5}  {:>7}  {:>12.2}  {:>6.2}  {:>6.2}  {:>9.0}  {:>7.1}  {:>6.0}% of {:.0}",
            r.batch,
            r.threads,
            r.median_ms,
            r.p10_ms,
            r.p90_ms,
            r.images_per_s,
            r.gflops,
            100.0 * r.fraction_of_peak(),
            r.peak_gflops
        );
    })?;
    if args.layers {
        for r in &results {
            print_layers(&config, r)?;
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results).expect("results serialize");
        crate::durable::write_atomic(path, (text + "\n").as_bytes())?;
    }
    Ok(())
}

/// `gantry bench --layers`: every layer of `config`'s networks timed alone at `step`'s batch size
/// and threads, and the layers' share of the step `step` measured.
fn print_layers(config: &Config, step: &bench::BenchResult) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(step.threads)
        .build()
        .map_err(|e| Error::usage("--threads", format!("cannot start {} threads: {e}", step.threads)))?;
    let layers = pool.install(|| {
        crate::train::layer_bench::time_layers(config, crate::data::PIXELS_28, step.batch, LAYER_REPS)
    });
    println!(
        "\nbatch {}, {} threads: each layer alone (medians of {LAYER_REPS}), ms; passes a step runs: forward, input gradient, weight gradient",
        step.batch, step.threads
    );
    println!(
        "net  layer        shape                          forward  in-grad  w-grad   GFLOP  fwd GFLOP/s  passes   ms/step"
    );
    let mut total = 0.0;
    for l in &layers {
        let [f, i, w] = l.passes;
        println!(
            "{:<3}  {:<11}  {:<29}  {:>7.2}  {:>7.2}  {:>6.2}  {:>6.2}  {:>11.1}  {f:.0}/{i:.0}/{w:.0}  {:>8.2}",
            l.net,
            l.name,
            l.shape,
            l.forward_ms,
            l.input_grad_ms,
            l.weight_grad_ms,
            l.flop / 1e9,
            l.flop / 1e6 / l.forward_ms.max(1e-9),
            l.per_step_ms()
        );
        total += l.per_step_ms();
    }
    let rest = step.median_ms - total;
    println!(
        "the layers: {total:.1} ms of the step's {:.1} ms ({:.0}%); outside them (BatchNorm, activations, losses, optimizer, copies, the graph): {rest:.1} ms ({:.0}%)",
        step.median_ms,
        100.0 * total / step.median_ms,
        100.0 * rest / step.median_ms
    );
    Ok(())
}

/// Timed runs of each pass of each layer (`gantry bench --layers`).
const LAYER_REPS: usize = 7;

fn plot_command(args: PlotArgs) -> Result<()> {
    let run = RunDir::open(&args.run)?;
    let config = Config::from_file(&run.config())?;
    let records = metrics::read_csv(&run.metrics_csv())?;
    if records.is_empty() {
        return Err(Error::bad_data(run.metrics_csv(), "has no rows to plot"));
    }
    std::fs::create_dir_all(run.plots_dir()).map_err(|e| Error::io("create", run.plots_dir(), e))?;
    let mut written =
        plot::write_curves(&run.plots_dir(), &records, config.output.smoothing_window, config.train.loss)?;
    let quality_rows = metrics::quality::read(&run.eval_csv())?;
    if !quality_rows.is_empty() {
        written.extend(plot::write_quality(&run.plots_dir(), &quality_rows)?);
    }
    for path in written {
        eprintln!("gantry: wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_folder_of_images_or_cifar_batches_is_taken_as_such() {
        let tmp = tempfile::tempdir().unwrap();
        let flat = tmp.path().join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        std::fs::write(flat.join("a.png"), "x").unwrap();
        let found = detected_dataset(&flat).unwrap();
        assert_eq!(found.0, Dataset::Folder);
        assert!(found.1.contains("1 PNG/JPEG images"), "{}", found.1);
        let classes = tmp.path().join("classes");
        std::fs::create_dir_all(classes.join("cat")).unwrap();
        std::fs::write(classes.join("cat/1.jpg"), "x").unwrap();
        assert!(detected_dataset(&classes).unwrap().1.contains("1 sub-folders"));
        let cifar = tmp.path().join("cifar/cifar-10-batches-bin");
        std::fs::create_dir_all(&cifar).unwrap();
        std::fs::write(cifar.join("data_batch_1.bin"), "x").unwrap();
        assert_eq!(detected_dataset(&tmp.path().join("cifar")).unwrap().0, Dataset::Cifar10);
        let mnist = tmp.path().join("mnist");
        std::fs::create_dir_all(&mnist).unwrap();
        std::fs::write(mnist.join("train-images-idx3-ubyte.gz"), "x").unwrap();
        std::fs::write(mnist.join("a.png"), "x").unwrap();
        assert_eq!(detected_dataset(&mnist), None, "MNIST's files are MNIST");
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(detected_dataset(&empty), None, "nothing recognisable");
    }

    #[test]
    fn a_signal_outside_the_loop_ends_the_command_at_once() {
        // The bug: a SIGTERM while a folder was hashed (a FIFO named x.png) set a flag nobody read.
        assert_eq!(on_signal(false, false, false), OnSignal::Exit(EXIT_STOPPED));
        assert_eq!(on_signal(false, true, false), OnSignal::CheckpointAndStop);
        assert_eq!(on_signal(false, true, true), OnSignal::Exit(EXIT_ABORTED));
        assert_eq!(on_signal(false, false, true), OnSignal::Exit(EXIT_ABORTED));
        assert_eq!(on_signal(true, false, false), OnSignal::CloseDashboard);
    }
}
