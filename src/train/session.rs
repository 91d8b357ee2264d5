//! Running a run: the session (everything that changes while it trains), the loop (a step per
//! iteration, records flushed in batches), grids, progress lines, TensorBoard events, sample
//! quality and checkpoints on their schedule, and the end-of-run files.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::quality::QualityProbe;
use crate::alerts::{self, Alert, Monitor};
use crate::checkpoint::{self, RngState, TrainingState, policy};
use crate::conditions::Conditions;
use crate::config::Config;
use crate::data::TrainingImages;
use crate::error::{Error, IoContext, Result};
use crate::grid::{self, GridLayout};
use crate::lock::RunLock;
use crate::metrics::quality::{self as eval_csv, QualityRecord};
use crate::metrics::{self, CsvLog, IterationRecord};
use crate::plot;
use crate::rng::Streams;
use crate::run_dir::{DataFacts, RunDir, RunInfo};
use crate::tensorboard::EventWriter;
use crate::timelapse;

use super::gan::{Gan, Networks};
use super::open::grid_layout;
use super::schedule;
use super::{Listening, Options, TrainOutcome};

/// The mutable state of a run in progress.
pub(super) struct Session {
    gan: Gan,
    streams: Streams,
    fixed_noise: Vec<f32>,
    records: Vec<IterationRecord>,
    csv: CsvLog,
    /// Watches for training failures.
    monitor: Monitor,
    /// TensorBoard's view of the run.
    events: EventWriter,
    /// The sample-quality judge (None when `eval.every` is 0).
    quality: Option<QualityProbe>,
    /// Training-loop wall time of earlier processes (resumed runs).
    wall_before: f64,
    resumed_from: Option<usize>,
    /// How long each checkpoint of this process took to write, ms.
    checkpoint_ms: Vec<f64>,
    /// The newest sample-quality row (for progress lines and the summary).
    last_quality: Option<QualityRecord>,
    /// The training data's identity, recorded in run.json.
    data: DataFacts,
    /// The recipe's hash, recorded in checkpoints.
    recipe_hash: Option<String>,
}

/// Where a resumed session picks up: its checkpoint's iteration and training wall time, the
/// records kept up to it, and the newest sample-quality row.
pub(super) struct Resumed {
    pub iteration: usize,
    pub wall_seconds: f64,
    pub records: Vec<IterationRecord>,
    pub last_quality: Option<QualityRecord>,
}

impl Session {
    /// The one way a session starts: a new run's (`resumed` None: no records, no time spent) or
    /// a resumed one's. `trainer`: the GAN, the random streams and the grids' fixed noise;
    /// `logs`: metrics.csv, the alert monitor and TensorBoard's events.
    pub(super) fn new(
        config: &Config,
        (gan, streams, fixed_noise): (Gan, Streams, Vec<f32>),
        (csv, monitor, events): (CsvLog, Monitor, EventWriter),
        quality: Option<QualityProbe>,
        data: DataFacts,
        resumed: Option<Resumed>,
    ) -> Self {
        let (records, wall_before, resumed_from, last_quality) = match resumed {
            Some(r) => (r.records, r.wall_seconds, Some(r.iteration), r.last_quality),
            None => (Vec::new(), 0.0, None, None),
        };
        Self {
            gan,
            streams,
            fixed_noise,
            records,
            csv,
            monitor,
            events,
            quality,
            wall_before,
            resumed_from,
            checkpoint_ms: Vec::new(),
            last_quality,
            data,
            recipe_hash: config.train.recipe_hash(),
        }
    }
}

/// Run the loop on the configured threads, then write the end-of-run files.
pub(super) fn finish(
    config: &Config,
    images: &TrainingImages,
    run: RunDir,
    mut session: Session,
    nets: Networks,
    options: &Options,
    _lock: RunLock,
) -> Result<TrainOutcome> {
    let threads = config.effective_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::config("train.threads", format!("cannot start {threads} threads: {e}")))?;
    let (nets, stopped_at) =
        pool.install(|| training_loop(config, images, &run, &mut session, nets, options))?;

    let records = std::mem::take(&mut session.records);
    let mut info = RunInfo::started(&session.data, images, threads);
    info.iterations_done = records.len();
    info.wall_seconds = session.wall_before;
    info.checkpoints_written = session.checkpoint_ms.len();
    info.checkpoint_ms_median = median(&mut session.checkpoint_ms);
    info.write(&run)?;
    alerts::save(&run.alerts(), session.monitor.alerts())?;
    if stopped_at.is_none() {
        // The old manifest goes first: until the new one is written the weights are unverified,
        // never "corrupted".
        let manifest = run.weights_dir().join("manifest.json");
        if manifest.is_file() {
            std::fs::remove_file(&manifest).at("remove", &manifest)?;
        }
        session.gan.save_weights(&nets, &run)?;
        metrics::write_npy_files(run.root(), &records)?;
        plot::write_curves(&run.plots_dir(), &records, config.output.smoothing_window, config.train.loss)?;
        let quality_rows = eval_csv::read(&run.eval_csv())?;
        if !quality_rows.is_empty() {
            plot::write_quality(&run.plots_dir(), &quality_rows)?;
        }
        timelapse::write_gif(&run)?;
        // Last: the manifest of the final weights marks the run complete.
        checkpoint::write_weights_manifest(&run.weights_dir(), records.len())?;
    }
    Ok(TrainOutcome {
        run,
        records,
        info,
        stopped_at,
        resumed_from: session.resumed_from,
        already_complete: false,
        quality: session.last_quality,
        loss: config.train.loss,
        g_ema: config.train.g_ema,
    })
}

/// The loop itself, from the session's iteration to the configured total. Returns the iteration
/// it stopped at when a stop was requested.
pub(super) fn training_loop(
    config: &Config,
    images: &TrainingImages,
    run: &RunDir,
    s: &mut Session,
    mut nets: Networks,
    options: &Options,
) -> Result<(Networks, Option<usize>)> {
    let total = config.train.iterations;
    let interval = config.output.sample_interval;
    let layout = grid_layout(config, images);
    let labels = Conditions::of(config).grid(layout.rows, layout.cols);
    let first = s.records.len();
    let bar = progress_bar(total, options.progress);
    bar.set_position(first as u64);
    // Without a terminal (a log file, a notebook cell, CI) the bar draws nothing: plain lines.
    let plain_lines = options.progress && !std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut line_from = (first, Instant::now());

    let mut last_checkpoint = Instant::now();
    let mut loop_start = Instant::now();
    // Records not yet read from the training device: read together at every flush, before a
    // checkpoint and for a progress line, so that a GPU is not made to wait for the host each
    // iteration. Each is then written, watched and logged as it would have been at once.
    let mut unread = Vec::new();
    let _listening = Listening::raise(options.listening.as_ref());
    for iteration in first..total {
        let record;
        (nets, record) = s.gan.step(nets, iteration, images, &mut s.streams);
        unread.push(record);

        let done = iteration + 1;
        if schedule::is_flush_step(done, total, interval) {
            take_records(s, &mut unread, &bar, options, run)?;
            s.csv.flush()?;
            s.events.flush()?;
        }
        if schedule::is_sample_step(done, total, interval) {
            sample_grid(s, &nets, (done, &labels, layout, images.dim()), run, (&bar, options))?;
        }
        if let Some(probe) = &s.quality
            && schedule::is_eval_step(done, total, config.eval.every)
        {
            s.last_quality = Some(judge_samples(run, probe, &s.gan, &nets, &mut s.events, done)?);
        }
        let stop = options.stop_requested(done);
        let cp = &config.checkpoint;
        let due = policy::is_checkpoint_step(
            done,
            total,
            config.checkpoint_every(),
            last_checkpoint.elapsed(),
            cp.every_minutes,
        );
        if stop || due {
            // The time spent writing counts in the next stretch of wall time.
            s.wall_before += loop_start.elapsed().as_secs_f64();
            loop_start = Instant::now();
            take_records(s, &mut unread, &bar, options, run)?;
            s.events.flush()?;
            save_checkpoint(run, s, &nets, done, cp.keep)?;
            last_checkpoint = Instant::now();
        }
        if stop {
            bar.finish_and_clear();
            return Ok((nets, Some(done)));
        }
        if plain_lines && schedule::is_progress_line_step(done, total, last_line.elapsed()) {
            take_records(s, &mut unread, &bar, options, run)?;
            print_progress_line(s, (done, total), line_from);
            last_line = Instant::now();
            line_from = (done, Instant::now());
        }
        // Display steps are flush steps: the newest record has been read.
        if schedule::is_display_step(done, total) {
            show_on_bar(&bar, s.records.last());
        }
        bar.inc(1);
    }
    s.wall_before += loop_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    take_records(s, &mut unread, &bar, options, run)?;
    s.csv.flush()?;
    s.events.flush()?;
    Ok((nets, None))
}

/// Write the fixed-noise grid after `done` iterations (and log it to TensorBoard), and show it to
/// the alert monitor.
pub(super) fn sample_grid(
    s: &mut Session,
    nets: &Networks,
    (done, labels, layout, dim): (usize, &[u8], GridLayout, usize),
    run: &RunDir,
    (bar, options): (&ProgressBar, &Options),
) -> Result<()> {
    let samples = s.gan.generate(nets, &s.fixed_noise, labels);
    let png = grid::save_png(&run.sample_grid(done), &samples, layout)?;
    log_grid(&mut s.events, done, &png, &layout)?;
    if let Some(alert) = s.monitor.observe_grid(done, &samples, dim) {
        announce(bar, options, run, &s.monitor, &alert)?;
    }
    Ok(())
}

/// One plain progress line (no terminal): the newest record, and the speed since `from`.
pub(super) fn print_progress_line(
    s: &Session,
    (done, total): (usize, usize),
    (from_it, from_t): (usize, Instant),
) {
    let ms = 1e3 * from_t.elapsed().as_secs_f64() / (done - from_it).max(1) as f64;
    if let Some(record) = s.records.last() {
        eprintln!("gantry: {}", progress_line(done, total, ms, record, s.last_quality.as_ref()));
    }
}

/// The newest record's losses beside the progress bar.
pub(super) fn show_on_bar(bar: &ProgressBar, record: Option<&IterationRecord>) {
    if let Some(record) = record {
        bar.set_message(format!(
            "D loss {:.3} acc {:.2} | G loss {:.3}",
            record.d_loss, record.acc, record.g_loss
        ));
    }
}

/// Read the `unread` records from the training device (one transfer), then append each to the
/// metrics and TensorBoard logs, keep it, and show it to the alert monitor, in order.
pub(super) fn take_records(
    s: &mut Session,
    unread: &mut Vec<super::gan::StepRecord>,
    bar: &ProgressBar,
    options: &Options,
    run: &RunDir,
) -> Result<()> {
    if unread.is_empty() {
        return Ok(());
    }
    for record in s.gan.read_records(std::mem::take(unread)) {
        s.csv.append(&record)?;
        s.records.push(record);
        if let Some(alert) = s.monitor.observe(&record) {
            announce(bar, options, run, &s.monitor, &alert)?;
        }
        log_scalars(&mut s.events, &record)?;
    }
    Ok(())
}

/// One plain progress line: where the run is, its pace, and the latest numbers.
pub(super) fn progress_line(
    done: usize,
    total: usize,
    ms: f64,
    r: &IterationRecord,
    q: Option<&QualityRecord>,
) -> String {
    let eta = std::time::Duration::from_secs((ms * (total - done) as f64 / 1e3).round() as u64);
    let mut line = format!(
        "iteration {done}/{total} ({:.0}%), {ms:.2} ms/iteration, ETA {} | D loss {:.3} acc {:.2} | G loss {:.3}",
        100.0 * done as f64 / total as f64,
        humantime::format_duration(eta),
        r.d_loss,
        r.acc,
        r.g_loss
    );
    if let Some(q) = q {
        line.push_str(&format!(" | FID {:.2} (iteration {})", q.fid, q.iteration));
        if let Some(a) = q.class_accuracy {
            line.push_str(&format!(", class accuracy {:.1}%", 100.0 * a));
        }
    }
    line
}

/// Write the checkpoint after `done` iterations, then delete the ones beyond `keep`.
pub(super) fn save_checkpoint(
    run: &RunDir,
    s: &mut Session,
    nets: &Networks,
    done: usize,
    keep: usize,
) -> Result<()> {
    let started = Instant::now();
    // The metrics rows the checkpoint counts on must be on disk before it is.
    s.csv.sync()?;
    let snapshot = s.gan.snapshot(
        nets,
        TrainingState {
            format_version: checkpoint::FORMAT_VERSION,
            iteration: done,
            architecture_hash: s.gan.architecture_hash.clone(),
            rng_init: RngState::capture(&s.streams.init),
            rng_data: RngState::capture(&s.streams.data),
            rng_noise: RngState::capture(&s.streams.noise),
            rng_fixed: RngState::capture(&s.streams.fixed),
            fixed_noise: s.fixed_noise.clone(),
            wall_seconds: s.wall_before,
            recipe_hash: s.recipe_hash.clone(),
            rng_augment: Some(RngState::capture(&s.streams.augment)),
            rng_dropout: Some(RngState::capture(&s.streams.dropout)),
            rng_labels: Some(RngState::capture(&s.streams.labels)),
            // Filled in by the trainer, which holds them.
            spectral_norm: None,
        },
    )?;
    let dir = run.checkpoints_dir();
    checkpoint::write(&dir, &snapshot)?;
    // Only folders that hold nothing but checkpoint files are counted and deleted: a folder of
    // that name with anything else in it (someone's notebook) is never touched.
    let existing: Vec<usize> = checkpoint::list(&dir)?
        .into_iter()
        .filter(|(_, path)| checkpoint::is_own_folder(path))
        .map(|(it, _)| it)
        .collect();
    for it in policy::to_delete(&existing, keep, s.resumed_from) {
        let path = dir.join(checkpoint::folder_name(it));
        std::fs::remove_dir_all(&path).at("remove old checkpoint", &path)?;
    }
    s.checkpoint_ms.push(started.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Score the generator after `done` iterations on the probe's fixed noise; log the row to
/// eval.csv and TensorBoard.
pub(super) fn judge_samples(
    run: &RunDir,
    probe: &QualityProbe,
    gan: &Gan,
    nets: &Networks,
    events: &mut EventWriter,
    done: usize,
) -> Result<QualityRecord> {
    // Generated in slices, to keep the run's memory peak at the training set's.
    const SLICE: usize = 256;
    let (latent, labels) = (gan.latent_dim(), probe.labels());
    let samples: Vec<f32> = probe
        .noise()
        .chunks(SLICE * latent)
        .enumerate()
        .flat_map(|(i, z)| {
            let rows = i * SLICE..i * SLICE + z.len() / latent;
            gan.generate(nets, z, labels.get(rows).unwrap_or(&[]))
        })
        .collect();
    let q = probe.measure(done, &samples)?;
    eval_csv::append(&run.eval_csv(), &q)?;
    log_quality(events, &q)?;
    Ok(q)
}

pub(super) fn log_quality(events: &mut EventWriter, q: &QualityRecord) -> Result<()> {
    let mut scalars = vec![
        ("quality/fid", q.fid as f32),
        ("quality/kid", q.kid as f32),
        ("quality/precision", q.precision as f32),
        ("quality/recall", q.recall as f32),
        ("quality/separability", q.separability as f32),
    ];
    // A rotation judge (unlabelled images) has no classes: no class scalars then.
    if q.inception_score.is_finite() {
        scalars.push(("quality/inception_score", q.inception_score as f32));
        scalars.push(("quality/classes_present", q.classes_present as f32));
    }
    events.scalars(q.iteration, &scalars)?;
    match q.class_accuracy {
        Some(a) => events.scalars(q.iteration, &[("quality/class_accuracy", a as f32)]),
        None => Ok(()),
    }
}

/// Every metric of one iteration, as TensorBoard scalars (step = iterations done before it).
pub(super) fn log_scalars(events: &mut EventWriter, r: &IterationRecord) -> Result<()> {
    events.scalars(
        r.iteration,
        &[
            ("loss/d", r.d_loss),
            ("loss/d_real", r.d_loss_real),
            ("loss/d_fake", r.d_loss_fake),
            ("loss/g", r.g_loss),
            ("accuracy/d", r.acc),
            ("accuracy/d_real", r.acc_real),
            ("accuracy/d_fake", r.acc_fake),
            ("d_output/real", r.d_out_real),
            ("d_output/fake", r.d_out_fake),
        ],
    )
}

/// The grid drawn after `step` iterations (its PNG bytes), as a TensorBoard image.
pub(super) fn log_grid(events: &mut EventWriter, step: usize, png: &[u8], layout: &GridLayout) -> Result<()> {
    events.image(step, "samples", png, layout.size(), layout.channels)
}

/// Show an alert on the console and save every alert so far to `alerts.json`.
pub(super) fn announce(
    bar: &ProgressBar,
    options: &Options,
    run: &RunDir,
    monitor: &Monitor,
    alert: &Alert,
) -> Result<()> {
    let line = format!("alert at iteration {}: {}", alert.raised_at, alert.message);
    if options.progress {
        bar.println(line);
    } else {
        eprintln!("gantry: {line}");
    }
    alerts::save(&run.alerts(), monitor.alerts())
}

pub(super) fn progress_bar(total: usize, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if visible { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta_precise}, {per_sec}] {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
