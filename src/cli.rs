//! The command line: argument definitions and what each command does. `main` only parses, calls
//! [`run`] and maps the error to an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

use crate::checkpoint;
use crate::config::{Config, Dataset, Overrides};
use crate::data;
use crate::error::{Error, Result};
use crate::eval;
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
    /// (Re)draw a run's loss and accuracy charts from its metrics.csv.
    Plot(PlotArgs),
    /// Write one self-contained HTML report of a run (charts, grids, timelapse, summary, alerts,
    /// config) that opens offline in any browser.
    Report(ReportArgs),
    /// Judge samples against the real test set with a classifier trained on the data set (FID and
    /// KID in its feature space, precision/recall, Inception-Score analogue, class coverage): a
    /// run's generator, or images from any tool.
    Eval(EvalArgs),
    /// Serve the live dashboard of one or more runs (a run folder, or a folder of runs such as
    /// `runs/`) on http://127.0.0.1:6150/.
    Serve(ServeArgs),
    /// Time the training step (classic preset, random images) at several batch sizes and thread
    /// counts: median ms/iteration, images/s, achieved GFLOP/s.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// TOML config file; command-line flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder with the four IDX files (.gz or raw). Default: $GANTRY_DATA, then the cache.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Data set to train on.
    #[arg(long, value_enum)]
    pub dataset: Option<Dataset>,
    /// Number of training iterations [config: train.iterations, default 30000].
    #[arg(long, value_name = "N")]
    pub iterations: Option<usize>,
    /// Images per batch [config: train.batch_size, default 32].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Write a sample grid every N iterations [config: output.sample_interval, default 200].
    #[arg(long, value_name = "N")]
    pub sample_interval: Option<usize>,
    /// Seed of every random stream [config: train.seed, default 0].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Compute threads; 0 = one per core [config: train.threads, default 0].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Judge sample quality every N iterations (FID, precision/recall... into eval.csv); 0 = off
    /// [config: eval.every, default 2000].
    #[arg(long, value_name = "N")]
    pub eval_every: Option<usize>,
    /// Run folder to write. Default: runs/<dataset>-<UTC time>.
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Replace an existing non-empty run folder (its contents are deleted).
    #[arg(long)]
    pub force: bool,
    /// Continue the run in RUN_DIR (or from the checkpoint folder given) instead of starting one.
    /// Only --iterations, --threads, --sample-interval, --data and --config may change; the
    /// architecture may not.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// No progress bar.
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

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run folders whose generator to judge (each one a column of the table).
    #[arg(value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Judge the generator saved in the checkpoint after this many iterations (RUN/checkpoints/)
    /// instead of the final one.
    #[arg(long, value_name = "ITERATION")]
    pub checkpoint: Option<usize>,
    /// Images made by any tool: a .npy of shape [N,28,28] or [N,784] (0-255, [0,1] or [-1,1]), or a
    /// folder of 28x28 PNGs. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub samples: Vec<PathBuf>,
    /// Images to draw from each run's generator.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Seed of the generator's noise and of KID's subsets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data set the samples imitate (runs: taken from their config; default mnist).
    #[arg(long, value_enum)]
    pub dataset: Option<Dataset>,
    /// Folder with the data set's IDX files. Default: $GANTRY_DATA, then the cache.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Write the reports as JSON here (default, when judging one run: RUN/eval.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
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
    /// Extend the run to N iterations.
    #[arg(long, value_name = "N")]
    pub iterations: Option<usize>,
    /// Compute threads (use the original number for a bit-identical continuation).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The run folder.
    pub run: PathBuf,
    /// PNG file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Number of images (laid out as a near-square grid).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder.
    pub run: PathBuf,
    /// HTML file to write (default: RUN/report.html).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run folder.
    pub run: PathBuf,
}

/// Exit code of a run stopped by SIGINT or SIGTERM after it saved its checkpoint.
pub const EXIT_STOPPED: i32 = 130;

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Train(args) => train_command(args),
        Command::Resume(args) => train_command(TrainArgs {
            config: None,
            data: None,
            dataset: None,
            iterations: args.iterations,
            batch_size: None,
            sample_interval: None,
            seed: None,
            threads: args.threads,
            eval_every: None,
            out: None,
            force: false,
            resume: Some(args.run),
            quiet: args.quiet,
            serve: false,
            listen: ListenArgs { port: serve::DEFAULT_PORT, host: None },
        }),
        Command::Eval(args) => eval_command(args).map(|()| 0),
        Command::Serve(args) => {
            let dashboard = Arc::new(Dashboard::from_paths(&args.runs)?);
            let addr = serve::bind_address(args.listen.host, args.listen.port);
            serve::serve_blocking(dashboard.clone(), addr, None, |bound| {
                announce_dashboard(bound, &dashboard.run_names().join(", "))
            })?;
            Ok(0)
        }
        Command::Sample(args) => sample_command(args).map(|()| 0),
        Command::Plot(args) => plot_command(args).map(|()| 0),
        Command::Bench(args) => bench_command(args).map(|()| 0),
        Command::Report(args) => {
            let run = RunDir::open(&args.run)?;
            let path = report::write(&run, args.out.as_deref())?;
            eprintln!("gantry: wrote {}", path.display());
            Ok(0)
        }
    }
}

/// Stop requests from SIGINT/SIGTERM: the first asks the loop to checkpoint and stop, a second
/// exits at once.
fn install_stop_handler() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ngantry: second signal, exiting now");
            std::process::exit(EXIT_STOPPED);
        }
        eprintln!(
            "\ngantry: stopping after this iteration and saving a checkpoint (signal again to exit at once)"
        );
    });
    if let Err(e) = installed {
        eprintln!(
            "warning: cannot handle SIGINT/SIGTERM ({e}); an interrupted run resumes from its last checkpoint"
        );
    }
    stop
}

fn train_command(args: TrainArgs) -> Result<i32> {
    let options = Options { progress: !args.quiet, stop: Some(install_stop_handler()), stop_after: None };
    let overrides = Overrides {
        dataset: args.dataset,
        data_dir: args.data,
        iterations: args.iterations,
        batch_size: args.batch_size,
        sample_interval: args.sample_interval,
        seed: args.seed,
        threads: args.threads,
        eval_every: args.eval_every,
    };
    if let Some(run) = &args.resume {
        if args.out.is_some()
            || args.force
            || args.seed.is_some()
            || args.batch_size.is_some()
            || args.dataset.is_some()
        {
            return Err(Error::config(
                "--resume",
                "continues a run as it was: --out, --force, --seed, --batch-size and --dataset do not apply",
            ));
        }
        if args.serve {
            // RUN_DIR, or RUN_DIR/checkpoints/step_N.
            let root = run.ancestors().find(|p| p.join("config.toml").is_file()).unwrap_or(run);
            start_dashboard(root, args.listen, options.stop.clone())?;
        }
        let outcome = train::resume(run, args.config.as_deref(), &overrides, &options)?;
        return Ok(report(&outcome));
    }
    let config = Config::resolve(args.config.as_deref(), &overrides)?;
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
    if args.serve {
        start_dashboard(&out, args.listen, options.stop.clone())?;
    }
    let outcome = train::start(&config, &out, args.force, &options)?;
    let code = report(&outcome);
    if args.serve && code == 0 {
        eprintln!("gantry: training finished; the dashboard stays up until Ctrl-C");
        let stop = options.stop.expect("train installs a stop flag");
        while !stop.load(Ordering::SeqCst) {
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
                "gantry: stopped at iteration {it}; checkpoint saved. Continue with:\n  gantry train --resume {}",
                outcome.run.root().display()
            );
            EXIT_STOPPED
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
    s.push_str(&format!(
        "  (equilibrium: acc 0.5, d_out 0.5, losses ln 2 = {:.4})\n\nOutputs in {}:\n  \
         metrics.csv, d_loss_real.npy, d_loss_fake.npy, g_loss.npy, d_output.npy\n  \
         samples/ (grids), timelapse.gif, plots/ (curves_raw, curves_smoothed), alerts.json, weights/,\n  \
         checkpoints/, config.toml, run.json; `gantry report {}` writes one HTML file of it all\n",
        std::f64::consts::LN_2,
        outcome.run.root().display(),
        outcome.run.root().display()
    ));
    s
}

fn sample_command(args: SampleArgs) -> Result<()> {
    if args.n == 0 || args.n > 4096 {
        return Err(Error::config("--n", format!("must be within 1..=4096, found {}", args.n)));
    }
    let run = RunDir::open(&args.run)?;
    let (images, rows, cols) = train::sample_from_run(&run, args.n, args.seed)?;
    grid::save_png(&args.out, &images, GridLayout::for_count(args.n, rows, cols))?;
    eprintln!("gantry: wrote {} samples to {}", args.n, args.out.display());
    Ok(())
}

fn eval_command(args: EvalArgs) -> Result<()> {
    if args.runs.is_empty() && args.samples.is_empty() {
        return Err(Error::config("eval", "give a run folder or --samples FILE to judge"));
    }
    if !(2..=1_000_000).contains(&args.n) {
        return Err(Error::config("--n", format!("must be within 2..=1000000, found {}", args.n)));
    }
    let started = std::time::Instant::now();
    let runs = args.runs.iter().map(RunDir::open).collect::<Result<Vec<_>>>()?;
    let mut dataset = args.dataset;
    // Without --data, the data folder a run was trained from (when it is still there).
    let mut data_dir = args.data.clone();
    for run in &runs {
        let data_config = Config::from_file(&run.config())?.data;
        let d = data_config.dataset;
        if data_dir.is_none() {
            data_dir = data_config.dir.filter(|dir| dir.is_dir());
        }
        if dataset.is_some_and(|x| x != d) {
            return Err(Error::config(
                "--dataset",
                format!("{} was trained on {}", run.root().display(), d.name()),
            ));
        }
        dataset = Some(d);
    }
    let dataset = dataset.unwrap_or(Dataset::Mnist);
    // Read everything that can be wrong before a judge may have to be trained (minutes).
    let outside_samples =
        args.samples.iter().map(|path| Ok((path, eval::samples::load(path)?))).collect::<Result<Vec<_>>>()?;
    let judge = eval::judge::Judge::load_or_train(
        dataset,
        data_dir.as_deref(),
        None,
        &eval::judge::JudgeConfig::default(),
        &mut |line| eprintln!("gantry: {line}"),
    )?;
    if let Some(path) = &judge.cached_at {
        eprintln!(
            "gantry: judge for {} ({:.2}% test accuracy){} {}",
            dataset.name(),
            100.0 * judge.test_accuracy,
            if judge.trained_now { " trained and cached at" } else { " from" },
            path.display()
        );
    }
    let required = eval::judge::JudgeConfig::required_accuracy(dataset);
    if judge.test_accuracy < required {
        eprintln!(
            "gantry: warning: the judge reaches {:.2}% on the test set, below the {:.0}% it should; treat the numbers with care",
            100.0 * judge.test_accuracy,
            100.0 * required
        );
    }
    let dir = data::locate(dataset, data_dir.as_deref())?;
    let test = data::load_labelled(dataset, &dir, data::Split::Test)?;
    let real = judge.judge(&test.images.all_floats())?;
    let settings = eval::EvalSettings { seed: args.seed, ..Default::default() };

    let mut reports = Vec::new();
    for run in &runs {
        let (weights, source) = match args.checkpoint {
            Some(step) => {
                let folder = run.checkpoints_dir().join(checkpoint::folder_name(step));
                (folder.join("generator.bpk"), folder.display().to_string())
            }
            None => (run.generator_weights(), run.root().display().to_string()),
        };
        let (images, rows, cols) = train::sample_generator(run, &weights, args.n, args.seed)?;
        if (rows, cols) != (28, 28) {
            return Err(Error::config(
                "eval",
                format!("{source}: the judge takes 28x28 images, not {rows}x{cols}"),
            ));
        }
        reports.push(eval::evaluate(&judge, &source, &images, &real, &settings)?);
    }
    for (path, images) in &outside_samples {
        reports.push(eval::evaluate(&judge, &path.display().to_string(), images, &real, &settings)?);
    }
    print!("{}", eval::format_table(&reports));
    eprintln!("gantry: judged in {:.1} s", started.elapsed().as_secs_f64());
    let json_path = match (&args.json, runs.as_slice(), args.samples.is_empty()) {
        (Some(path), _, _) => Some(path.clone()),
        (None, [run], true) => Some(match args.checkpoint {
            Some(step) => run.root().join(format!("eval-{}.json", checkpoint::folder_name(step))),
            None => run.root().join("eval.json"),
        }),
        _ => None,
    };
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&reports).expect("reports serialize");
        std::fs::write(&path, text + "\n").map_err(|e| Error::io("write", &path, e))?;
        eprintln!("gantry: wrote {}", path.display());
    }
    Ok(())
}

fn bench_command(args: BenchArgs) -> Result<()> {
    if args.iterations == 0 || args.batch.is_empty() || args.threads.is_empty() {
        return Err(Error::config(
            "--iterations",
            "needs at least one iteration, batch size and thread count",
        ));
    }
    if args.threads.contains(&0) {
        return Err(Error::config("--threads", "thread counts must be at least 1"));
    }
    let config = Config::resolve(args.config.as_deref(), &Overrides::default())?;
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
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results).expect("results serialize");
        std::fs::write(path, text + "\n").map_err(|e| Error::io("write", path, e))?;
    }
    Ok(())
}

fn plot_command(args: PlotArgs) -> Result<()> {
    let run = RunDir::open(&args.run)?;
    let config = Config::from_file(&run.config())?;
    let records = metrics::read_csv(&run.metrics_csv())?;
    if records.is_empty() {
        return Err(Error::bad_data(run.metrics_csv(), "has no rows to plot"));
    }
    std::fs::create_dir_all(run.plots_dir()).map_err(|e| Error::io("create", run.plots_dir(), e))?;
    let mut written = plot::write_curves(&run.plots_dir(), &records, config.output.smoothing_window)?;
    let quality_rows = train::quality::read(&run.eval_csv())?;
    if !quality_rows.is_empty() {
        written.extend(plot::write_quality(&run.plots_dir(), &quality_rows)?);
    }
    for path in written {
        eprintln!("gantry: wrote {}", path.display());
    }
    Ok(())
}
