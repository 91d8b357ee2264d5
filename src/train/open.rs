//! Opening a run: a new one (`start`: everything read and checked, then the folder made and the
//! first grid drawn), or a stopped one resumed (`resume`: a sequence of pure checks that write
//! nothing — the config, the data, the checkpoint — then the folder rewound to the checkpoint).
//! Both end in one [`Session`] handed to the loop.

use std::path::Path;
use std::time::Instant;

use super::quality::QualityProbe;
use crate::alerts::{self, Monitor, Rules};
use crate::checkpoint::{self};
use crate::conditions::Conditions;
use crate::config::{Config, Overrides};
use crate::data::{self, TrainingImages};
use crate::error::{Error, Result};
use crate::grid::{self, GridLayout};
use crate::lock::RunLock;
use crate::metrics::quality::{self as eval_csv};
use crate::metrics::{self, CsvLog, IterationRecord};
use crate::rng::{self, Streams};
use crate::run_dir::{self, DataFacts, Existing, RunDir, RunInfo, remembered_data_dir};
use crate::tensorboard::EventWriter;

use super::gan::{Gan, Networks};
use super::session::{Resumed, Session, finish, log_grid};
use super::{Options, TrainOutcome};

/// Start a new run in `out`; an existing run folder there is replaced (gantry's files only) when
/// `existing` says [`Existing::Replace`] (`--force`).
pub fn start(config: &Config, out: &Path, existing: Existing, options: &Options) -> Result<TrainOutcome> {
    config.validate()?;
    // The device opens (or is refused) before anything is read or made.
    let device = crate::device::resolve(config.train.device)?;
    // Read the data and check the model fits before creating anything, so an error leaves no
    // half-made run folder.
    let (images, data) = training_data(config, config.data.dir.as_deref(), options.progress)?;
    crate::model::check_memory(config, images.dim())?;
    // The judge too (it may have to be trained, or its data be missing) before anything is made.
    let quality = QualityProbe::new(config, data.cluster_sizes.as_deref(), options.progress)?;
    let (run, lock, kept) = RunDir::create_locked(out, existing)?;
    report_kept(&kept);
    begin(config, (images, data), quality, (run, lock), &device, options)
}

pub(super) fn report_kept(kept: &[std::path::PathBuf]) {
    if !kept.is_empty() {
        let names: Vec<String> = kept.iter().map(|p| p.display().to_string()).collect();
        eprintln!("gantry: kept {} entries gantry did not write: {}", kept.len(), names.join(", "));
    }
}

/// Train from iteration 0 into the run folder `run`, whose lock is held and which holds none of
/// gantry's files yet (a new folder, or one whose gantry files were just removed).
pub(super) fn begin(
    config: &Config,
    (images, data): (TrainingImages, DataFacts),
    quality: Option<QualityProbe>,
    (run, lock): (RunDir, RunLock),
    device: &burn::tensor::Device,
    options: &Options,
) -> Result<TrainOutcome> {
    write_config(&run, config)?;
    // The data facts first, so that even a run killed before its end remembers its data.
    RunInfo::started(&data, &images, config.effective_threads()).write(&run)?;
    let mut streams = Streams::new(config.train.seed);
    let (mut gan, nets) = Gan::new(config, (images.rows, images.cols, images.channels), &mut streams, device);
    if let Some(sizes) = &data.cluster_sizes {
        gan.draw_classes_as(sizes);
    }
    let layout = grid_layout(config, &images);
    let fixed_noise = fixed_noise(config, &layout, &mut streams.fixed);
    let csv = CsvLog::create(&run.metrics_csv())?;
    let first_grid =
        gan.generate(&nets, &fixed_noise, &Conditions::of(config).grid(layout.rows, layout.cols));
    let first_png = grid::save_png(&run.sample_grid(0), &first_grid, layout)?;
    let mut monitor =
        Monitor::new(Rules::for_loss(config.train.loss), &reference_images(&images, &layout), images.dim());
    monitor.observe_grid(0, &first_grid, images.dim());
    let mut events = EventWriter::create(run.root())?;
    log_grid(&mut events, 0, &first_png, &layout)?;
    let trainer = (gan, streams, fixed_noise);
    let session = Session::new(config, trainer, (csv, monitor, events), quality, data, None);
    finish(config, &images, run, session, nets, options, lock)
}

/// Continue the run in `path` (a run folder, or one of its checkpoint folders) from its newest
/// valid checkpoint (or the one named). `file` and `overrides` may extend the run; changing the
/// architecture is refused. Everything is read and checked before anything is written: a resume
/// that fails changes nothing, and a resume of a complete run is a no-op that says so.
pub fn resume(
    path: &Path,
    file: Option<&Path>,
    overrides: &Overrides,
    options: &Options,
) -> Result<TrainOutcome> {
    let (root, explicit) = run_dir::run_root(path);
    let run = RunDir::open(&root)?;
    let lock = RunLock::acquire(run.root())?;
    if let Some(pid) = lock.took_over_from {
        eprintln!("gantry: taking over the lock of process {pid}, which stopped without releasing it");
    }
    let saved = Config::from_file(&run.config())?;
    let config = resumed_config(&saved, file, overrides)?;
    // The device opens (or is refused) before anything is changed.
    let device = crate::device::resolve(config.train.device)?;
    let info = RunInfo::read(&run).ok();
    let data_dir = overrides.data_dir().or_else(|| remembered_data_dir(&run, &config));
    let (images, data) = training_data(&config, data_dir.as_deref(), options.progress)?;
    crate::model::check_memory(&config, images.dim())?;
    // The judge finds its data where the training images were found (not saved in config.toml).
    let mut with_data = config.clone();
    with_data.data.dir = data_dir.clone();
    let shown = user_data_path(&config, data_dir.as_deref(), &images);
    check_same_data(info.as_ref(), &data, &images, &shown)?;
    for stray in checkpoint::strays(&run.checkpoints_dir()) {
        eprintln!("warning: skipping {}: not a checkpoint folder", stray.display());
    }
    let found = find_checkpoint(&run, explicit.as_deref())?;
    let Some((ckpt_path, snapshot)) = found else {
        let no_checkpoints = checkpoint::list(&run.checkpoints_dir())?.is_empty();
        if no_checkpoints && stopped_before_first_checkpoint(&run, &saved) {
            // Killed before its first checkpoint: nothing to lose but those first rows. Start
            // over in place, under the lock already held; only gantry's own files are replaced.
            let quality = QualityProbe::new(&with_data, data.cluster_sizes.as_deref(), options.progress)?;
            eprintln!(
                "gantry: {} stopped before its first checkpoint; starting it again",
                run.root().display()
            );
            report_kept(&run_dir::replace_run_files(&run)?);
            return begin(&config, (images, data), quality, (run, lock), &device, options);
        }
        let problem = no_checkpoint_problem(&run, no_checkpoints);
        return Err(Error::Checkpoint { path: run.checkpoints_dir(), problem });
    };
    let state = &snapshot.state;
    check_checkpoint(state, &config, &ckpt_path, &run)?;
    let streams = state.streams(&ckpt_path)?;
    let (gan, nets) = loaded_gan(&config, (&images, &data), (&snapshot, &ckpt_path), &device)?;
    // The rows up to the checkpoint must all be there; rows after it are redone.
    let (records, kept_rows) = metrics::read_prefix(&run.metrics_csv(), state.iteration)?;
    let quality_rows = eval_csv::read(&run.eval_csv())?;
    let alerts_saved = if run.alerts().is_file() { Some(alerts::load(&run.alerts())?) } else { None };

    if state.iteration == config.train.iterations
        && checkpoint::weights_manifest_iteration(&run.weights_dir()) == Some(state.iteration)
    {
        // Complete: the end-of-run files were written after this very checkpoint.
        let info = info.unwrap_or_else(|| RunInfo::started(&data, &images, config.effective_threads()));
        let quality = quality_rows.last().copied();
        return Ok(TrainOutcome::complete(&config, run, (info, records), (state.iteration, quality)));
    }

    // The judge last (it may have to be trained): a failure here still changes nothing.
    let quality = QualityProbe::new(&with_data, data.cluster_sizes.as_deref(), options.progress)?;

    // Everything checked: from here on the run folder is written.
    let (monitor, csv) =
        rewind_run_folder(&run, &config, (&data, &images), state, (&records, &kept_rows), alerts_saved)?;
    eprintln!("gantry: resuming {} from iteration {}", run.root().display(), state.iteration);
    let resumed = Resumed {
        iteration: state.iteration,
        wall_seconds: state.wall_seconds,
        records,
        last_quality: quality_rows.iter().rev().find(|q| q.iteration <= state.iteration).copied(),
    };
    // A new event file; TensorBoard reads all of a run folder's files together.
    let logs = (csv, monitor, EventWriter::create(run.root())?);
    let trainer = (gan, streams, state.fixed_noise.clone());
    let session = Session::new(&config, trainer, logs, quality, data, Some(resumed));
    finish(&config, &images, run, session, nets, options, lock)
}

/// Bring the run folder back to the checkpoint at `state` (everything checked before): leftover
/// checkpoint saves removed, config and run.json rewritten, metrics.csv cut to the kept rows and
/// eval.csv to the checkpoint's iteration; returns the alert monitor (having seen the kept records
/// again, so stretches in progress carry on) and the metrics log to append to.
pub(super) fn rewind_run_folder(
    run: &RunDir,
    config: &Config,
    (data, images): (&DataFacts, &TrainingImages),
    state: &checkpoint::TrainingState,
    (records, kept_rows): (&[IterationRecord], &str),
    alerts_saved: Option<Vec<crate::alerts::Alert>>,
) -> Result<(Monitor, CsvLog)> {
    let (removed, warnings) = checkpoint::clean_leftovers(&run.checkpoints_dir())?;
    for leftover in removed {
        eprintln!("gantry: removed an unfinished checkpoint save: {}", leftover.display());
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    // The user may have removed samples/, plots/ or weights/ of a stopped run.
    run.make_folders()?;
    write_config(run, config)?;
    let mut started = RunInfo::started(data, images, config.effective_threads());
    started.iterations_done = state.iteration;
    started.wall_seconds = state.wall_seconds;
    started.write(run)?;
    metrics::write_prefix(&run.metrics_csv(), kept_rows)?;
    // The alert monitor sees the kept records again, so stretches in progress carry on.
    let layout = grid_layout(config, images);
    let mut monitor =
        Monitor::new(Rules::for_loss(config.train.loss), &reference_images(images, &layout), images.dim());
    if let Some(saved) = alerts_saved {
        monitor.restore(saved, state.iteration);
    }
    for r in records {
        monitor.observe(r);
    }
    let csv = CsvLog::open_append(&run.metrics_csv())?;
    eval_csv::truncate(&run.eval_csv(), state.iteration)?;
    Ok((monitor, csv))
}

/// G and D built for `config` and loaded from the checkpoint `snapshot` (at `path`), drawing
/// classes as the run's clusters say.
pub(super) fn loaded_gan(
    config: &Config,
    (images, data): (&TrainingImages, &DataFacts),
    (snapshot, path): (&checkpoint::Snapshot, &Path),
    device: &burn::tensor::Device,
) -> Result<(Gan, Networks)> {
    let shape = (images.rows, images.cols, images.channels);
    let (gan, nets) = Gan::new(config, shape, &mut Streams::new(config.train.seed), device);
    let (mut gan, nets) = gan.load(nets, snapshot, path)?;
    if let Some(sizes) = &data.cluster_sizes {
        gan.draw_classes_as(sizes);
    }
    Ok((gan, nets))
}

/// The configuration a resume continues with: the run's own (or `file`), with the overrides,
/// validated; refused when it would change the architecture or the recipe.
pub(super) fn resumed_config(saved: &Config, file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
    let config = match file {
        Some(f) => Config::from_file(f)?,
        None => saved.clone(),
    };
    let config = config.with_overrides(overrides)?;
    config.validate()?;
    let diff = saved.architecture_diff(&config);
    if !diff.is_empty() {
        return Err(Error::config(
            "model",
            format!("a resumed run cannot change its architecture; differing keys:\n  {}", diff.join("\n  ")),
        ));
    }
    let recipe_diff: Vec<String> = saved
        .train
        .recipe()
        .into_iter()
        .zip(config.train.recipe())
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| format!("{}: {} -> {}", a.0, a.1, b.1))
        .collect();
    if !recipe_diff.is_empty() {
        return Err(Error::config(
            "train",
            format!(
                "a resumed run cannot change its recipe; differing keys:\n  {}",
                recipe_diff.join("\n  ")
            ),
        ));
    }
    Ok(config)
}

/// The data a resume read must be the run's: the same bytes (SHA-256 of its images) and, for a
/// clustered run, the same clusters; refused naming the user's data (`shown`).
pub(super) fn check_same_data(
    info: Option<&RunInfo>,
    data: &DataFacts,
    images: &TrainingImages,
    shown: &Path,
) -> Result<()> {
    if let Some(recorded) = info.and_then(|i| i.data_sha256.clone())
        && recorded != data.sha256
    {
        let changed = if shown != images.source { " (its files changed since the run began)" } else { "" };
        return Err(Error::bad_data(
            shown,
            format!(
                "is not the data this run was trained on{changed} (SHA-256 {}, the run recorded {recorded} for {}); \
                 pass --data with the original files; nothing was changed",
                data.sha256,
                info.map(|i| i.data_file.as_str()).unwrap_or("?")
            ),
        ));
    }

    if let Some(recorded) = info.and_then(|i| i.cluster_sizes.as_ref())
        && data.cluster_sizes.as_ref() != Some(recorded)
    {
        return Err(Error::bad_data(
            shown,
            format!(
                "grouped into clusters of sizes {:?}, but the run was trained on clusters of sizes \
                 {recorded:?} (data.clusters, model.clusters_per_class): its G would be asked for other classes; nothing was changed",
                data.cluster_sizes.as_deref().unwrap_or(&[])
            ),
        ));
    }
    Ok(())
}

/// The checkpoint to resume from: the one named, else the newest that verifies (warnings said).
pub(super) fn find_checkpoint(
    run: &RunDir,
    explicit: Option<&Path>,
) -> Result<Option<(std::path::PathBuf, checkpoint::Snapshot)>> {
    let found = match &explicit {
        Some(p) => Some((p.to_path_buf(), checkpoint::load(p)?)),
        None => {
            let (found, warnings) = checkpoint::newest_valid(&run.checkpoints_dir())?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            found
        }
    };
    Ok(found)
}

/// Why a run without a usable checkpoint is not started again in place.
pub(super) fn no_checkpoint_problem(run: &RunDir, no_checkpoints: bool) -> String {
    if no_checkpoints {
        format!(
            "holds no checkpoint to resume from, but the run has results (metrics past its first \
                 checkpoint, final weights or a report), which a restart would overwrite; nothing was \
                 changed. To train it again from the start: `gantry train --out {} --force` (replaces \
                 gantry's files there and keeps yours), or train into a new folder",
            run.root().display()
        )
    } else {
        // Never wipe a run whose checkpoints are all damaged: a person should look first.
        "no checkpoint verifies (see the warnings above); nothing was changed".into()
    }
}

/// A checkpoint must be this configuration's: its seed, architecture and recipe, and no further
/// than the iterations asked for.
pub(super) fn check_checkpoint(
    state: &checkpoint::TrainingState,
    config: &Config,
    ckpt_path: &Path,
    run: &RunDir,
) -> Result<()> {
    if !state.written_with_seed(config.train.seed) {
        let was = (0..=u64::from(u16::MAX))
            .find(|&s| state.written_with_seed(s))
            .map(|s| format!(" (it was written with train.seed = {s})"))
            .unwrap_or_default();
        return Err(Error::Checkpoint {
            path: ckpt_path.to_path_buf(),
            problem: format!(
                "was not written with train.seed = {}{was}: a resumed run keeps the seed its records were \
                 made with; put the run's seed back in {}; nothing was changed",
                config.train.seed,
                run.config().display()
            ),
        });
    }
    if state.architecture_hash != config.architecture_hash() {
        return Err(Error::Checkpoint {
            path: ckpt_path.to_path_buf(),
            problem: "was written by a different architecture".into(),
        });
    }
    if state.recipe_hash != config.train.recipe_hash() {
        return Err(Error::Checkpoint {
            path: ckpt_path.to_path_buf(),
            problem: "was written by a different recipe (objective, D steps, order, optimizers)".into(),
        });
    }
    if state.iteration > config.train.iterations {
        return Err(Error::config(
            "train.iterations",
            format!(
                "the checkpoint is at iteration {}, beyond the {} asked for",
                state.iteration, config.train.iterations
            ),
        ));
    }
    Ok(())
}

/// Whether a run without checkpoints is one that was stopped before its first checkpoint was
/// written (no more metrics rows than the step it was due at, no final weights, no report): one
/// that can start over without losing anything. The rows of that step are flushed before its
/// checkpoint is written, so a kill between the two leaves exactly `first_due` rows; a missing
/// or header-only metrics file is a kill before any row. A run with more rows lost its
/// checkpoints some other way, and its records are kept (the resume is refused).
/// `saved` is the run's own configuration (not one a resume passes), and a metrics file that
/// cannot be read counts as results.
pub(super) fn stopped_before_first_checkpoint(run: &RunDir, saved: &Config) -> bool {
    let first_due = saved.checkpoint_every().min(saved.train.iterations);
    let Ok(rows) = metrics::rows_on_disk(&run.metrics_csv()) else { return false };
    rows <= first_due
        && checkpoint::weights_manifest_iteration(&run.weights_dir()).is_none()
        && !run.report().exists()
        && !run.eval_csv().exists()
}

/// Save the run's configuration, every default choice filled with the value the run takes.
pub(super) fn write_config(run: &RunDir, config: &Config) -> Result<()> {
    let mut resolved = config.clone();
    resolved.train.resolve_defaults();
    crate::durable::write_atomic(&run.config(), resolved.to_toml().as_bytes())
}

/// A grid's worth of training images (the first ones), the diversity a healthy grid approaches.
pub(super) fn reference_images(images: &TrainingImages, layout: &GridLayout) -> Vec<f32> {
    let n = (layout.rows * layout.cols).min(images.count);
    images.floats(0..n)
}

/// The fixed noise of every sample grid, drawn once: [rows * cols, latent]. In a conditional run
/// each column has one noise vector, the same down its rows (one class per row), so that a
/// column shows one style in every class.
pub(super) fn fixed_noise(
    config: &Config,
    layout: &GridLayout,
    stream: &mut rand_chacha::ChaCha8Rng,
) -> Vec<f32> {
    let latent = config.model.latent_dim;
    let mut noise = Vec::new();
    if !config.model.is_conditional() {
        rng::normal(stream, layout.rows * layout.cols * latent, &mut noise);
        return noise;
    }
    rng::normal(stream, layout.cols * latent, &mut noise);
    noise.repeat(layout.rows)
}

/// The training images `config` names, read from `dir`, and their facts. In a self-conditioned
/// run (`data.clusters`) no label is read: each image's label is its k-means cluster, and the
/// facts carry the clusters' sizes; with `model.clusters_per_class` each label becomes its
/// (class, cluster) id, the facts carrying those ids' sizes.
pub(super) fn training_data(
    config: &Config,
    dir: Option<&Path>,
    progress: bool,
) -> Result<(TrainingImages, DataFacts)> {
    let clusters = config.data.clusters;
    let classes = (config.model.is_conditional() && clusters == 0).then_some(config.model.classes);
    let said = if progress { data::Progress::Shown } else { data::Progress::Quiet };
    let mut images = data::load_training_images(&config.data, dir, classes, said)?;
    let mut facts = DataFacts::of(&images)?;
    let shown = user_data_path(config, dir, &images);
    let in_user_terms = |e| about_user_data(e, &images, &shown);
    // Self-conditioning (data.clusters) or clusters within classes: never both (validate).
    let per_class = config.model.clusters_per_class;
    let started = Instant::now();
    let clustered = if clusters > 0 {
        let ids = data::clusters::cluster(&images, clusters, config.train.seed).map_err(in_user_terms)?;
        Some((
            ids,
            format!("grouped the {} training images into {clusters} clusters", images.count),
            "the cluster as a class",
        ))
    } else if per_class > 0 && config.model.is_conditional() {
        let classes = config.model.classes;
        let ids = data::clusters::cluster_within_classes(&images, classes, per_class, config.train.seed)
            .map_err(in_user_terms)?;
        Some((
            ids,
            format!("split each of the {classes} classes into {per_class} clusters"),
            "(class, cluster)",
        ))
    } else {
        None
    };
    if let Some(((ids, sizes), what, takes)) = clustered {
        if progress {
            eprintln!(
                "gantry: {what} by k-means on their pixels ({:.1} s; {} to {} images each): G and D take {takes}",
                started.elapsed().as_secs_f64(),
                sizes.iter().min().unwrap_or(&0),
                sizes.iter().max().unwrap_or(&0),
            );
        }
        images.labels = Some(ids);
        facts.cluster_sizes = Some(sizes);
    }
    Ok((images, facts))
}

/// The data as the user knows it: an image folder's own path (its decoded images live in
/// gantry's cache, a file the user never named), else the file the images were read from.
pub(super) fn user_data_path(
    config: &Config,
    dir: Option<&Path>,
    images: &TrainingImages,
) -> std::path::PathBuf {
    match (config.data.dataset, dir) {
        (crate::config::Dataset::Folder, Some(dir)) => dir.to_path_buf(),
        _ => images.source.clone(),
    }
}

/// An error about the images' file, told of `shown` (the user's folder) instead of gantry's cache.
pub(super) fn about_user_data(e: Error, images: &TrainingImages, shown: &Path) -> Error {
    match e {
        Error::BadDataFile { path, problem } if path == images.source => {
            Error::BadDataFile { path: shown.to_path_buf(), problem }
        }
        other => other,
    }
}

pub(super) fn grid_layout(config: &Config, images: &TrainingImages) -> GridLayout {
    GridLayout {
        rows: config.grid_rows(),
        cols: config.output.grid_cols,
        tile_h: images.rows,
        tile_w: images.cols,
        channels: images.channels,
    }
}
