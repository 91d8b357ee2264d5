//! `gantry eval`: judge run generators and outside samples side by side. Everything that can be
//! wrong (flags, run folders, weights, sample files) is read and checked before the judge is
//! loaded or trained (minutes, the first time); generators draw and are judged in slices, so
//! memory stays bounded for any `--n`.

use std::path::PathBuf;

use crate::config::{Config, DataConfig, Dataset};
use crate::error::{Error, Result};
use crate::flags::DeviceFlag;
pub use crate::run_dir::FeatureSpace;
use crate::run_dir::RunDir;
use crate::sample::{LoadedGenerator, Weights};

use super::EvalSettings;
use super::inception::report::{Protocol, RealSet};
use super::inception::{self, Extracted, Inception};
use super::judge::{Judge, JudgeConfig, Judgement};
use super::reference::JudgeData;
use super::samples::{self, ImageShape, MAX_IMAGES, MIN_IMAGES};

/// What `gantry eval` was asked to do: the command line's flags, defined here.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EvalRequest {
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
    /// Images to draw from each run's generator (10 to 100,000).
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Seed of the generator's noise and of KID's subsets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data set the samples imitate (runs: taken from their config; default mnist).
    #[arg(long, value_enum)]
    pub dataset: Option<Dataset>,
    /// Folder with the data set's IDX files. Default: the run's own data, then $GANTRY_DATA, then
    /// the cache.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Write the reports as JSON here (default, when judging one run: RUN/eval.json). Never a
    /// file of a run's own (its config, metrics, weights...).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Replace the --json file if it exists (the default file, the command's own, is always
    /// replaced).
    #[arg(long)]
    pub force: bool,
    /// The feature space of the scores: gantry's judge, trained on the run's own data (default),
    /// or pytorch-fid's InceptionV3, the field's FID (needs its weights file: --inception-weights).
    #[arg(long, value_enum, default_value_t = FeatureSpace::Judge)]
    pub features: FeatureSpace,
    /// pytorch-fid's weights file, pt_inception-2015-12-05-6726825d.pth (default: the run's
    /// eval.inception_weights, then $GANTRY_INCEPTION_WEIGHTS, then gantry's cache, then a download
    /// into it).
    #[arg(long, value_name = "FILE")]
    pub inception_weights: Option<PathBuf>,
    /// Real images to compare with instead of the data set's test images (--features inception):
    /// a .npy or a folder of PNGs, read as --samples is.
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Where the generators draw their samples (the judge itself always runs on the CPU).
    #[command(flatten)]
    pub device: DeviceFlag,
}

/// Run `gantry eval`: print the table, write the JSON.
pub fn run(req: &EvalRequest) -> Result<()> {
    match req.features {
        FeatureSpace::Judge => judge_all(req),
        FeatureSpace::Inception => inception_all(req),
    }
}

/// Check the flags every feature space shares.
fn check_request(req: &EvalRequest) -> Result<()> {
    if req.runs.is_empty() && req.samples.is_empty() {
        return Err(Error::usage("eval", "give a run folder or --samples FILE to judge"));
    }
    if !(MIN_IMAGES..=MAX_IMAGES).contains(&req.n) {
        return Err(Error::usage(
            "--n",
            format!("must be within {MIN_IMAGES}..={MAX_IMAGES}, found {}", req.n),
        ));
    }
    if req.features != FeatureSpace::Inception {
        if req.inception_weights.is_some() {
            return Err(Error::usage("--inception-weights", "is for --features inception"));
        }
        if req.reference.is_some() {
            return Err(Error::usage(
                "--reference",
                "is for --features inception (the judge compares with its data set's own images)",
            ));
        }
    }
    Ok(())
}

/// Everything read and checked before any scoring: the runs' generators, the data they imitate,
/// other tools' samples, the reference images when given, the JSON file.
struct Opened {
    /// The runs and their configs.
    runs: Vec<(RunDir, Config)>,
    data: DataConfig,
    shape: ImageShape,
    generators: Vec<(String, LoadedGenerator)>,
    outside: Vec<(String, Vec<f32>)>,
    reference: Option<(String, Vec<f32>)>,
    json_path: Option<PathBuf>,
}

fn open(req: &EvalRequest) -> Result<Opened> {
    check_request(req)?;
    let runs = req
        .runs
        .iter()
        .map(|path| {
            let run = RunDir::open(path)?;
            let config = Config::from_file(&run.config())?;
            Ok((run, config))
        })
        .collect::<Result<Vec<_>>>()?;
    let (data, generators) = open_generators(req, &runs)?;
    let (side, channels) = data.shape();
    let shape = ImageShape { side, channels };
    let outside = load_outside(&req.samples, shape)?;
    let reference = load_outside(req.reference.as_slice(), shape)?.pop();
    let json_path = json_path(req, &runs)?;
    Ok(Opened { runs, data, shape, generators, outside, reference, json_path })
}

/// Write `reports` as JSON where the request says, if anywhere.
fn write_json<T: serde::Serialize>(path: Option<&PathBuf>, reports: &T) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(reports).expect("reports serialize");
        crate::durable::write_atomic(path, (text + "\n").as_bytes())?;
        eprintln!("gantry: wrote {}", path.display());
    }
    Ok(())
}

/// `gantry eval` in the judge's feature space.
fn judge_all(req: &EvalRequest) -> Result<()> {
    let started = std::time::Instant::now();
    let Opened { data, generators, outside, json_path, .. } = open(req)?;
    let (judge_data, judge) = load_judge(&data)?;
    let judge_seed = JudgeConfig::default().seed;
    let test = judge_data.reference(judge_seed)?;
    let real = judge.judge(&test.all_floats())?;
    let settings = EvalSettings { seed: req.seed, ..Default::default() };

    let mut reports = Vec::new();
    for (source, g) in &generators {
        let mut fake = Judgement::empty();
        g.generate_slices(req.n, req.seed, None, &mut |images| {
            fake.append(judge.judge(images)?);
            Ok(())
        })?;
        let mut report = super::compare(&judge, source, &fake, &real, &settings)?;
        if let Some(asked) = g.judged_classes(req.n)? {
            // A conditional generator drew every class: its class accuracy, and each class's FID
            // against the test images of that class (a self-conditioned one's classes are its
            // clusters, not the judge's: none).
            super::add_class_scores(&mut report, &fake, &asked, &real, test.labels.as_deref())?;
        }
        reports.push(report);
    }
    for (source, images) in &outside {
        reports.push(super::evaluate(&judge, source, images, &real, &settings)?);
    }
    print!("{}", super::format_table(&reports));
    eprintln!("gantry: judged in {:.1} s", started.elapsed().as_secs_f64());
    write_json(json_path.as_ref(), &reports)
}

/// `gantry eval --features inception`: the same samples scored in pytorch-fid's feature space.
fn inception_all(req: &EvalRequest) -> Result<()> {
    let started = std::time::Instant::now();
    let opened = open(req)?;
    check_inception_memory(req, &opened)?;
    let config_weights = configured_weights(&opened.runs)?;
    let path = inception::locate_weights(req.inception_weights.as_deref(), config_weights.as_deref())?;
    let net = Inception::load(&path)?;
    let settings = EvalSettings { seed: req.seed, ..Default::default() };
    let real = inception_reference(&net, &opened)?;
    let protocol = Protocol::new(&net.weights, real.description.clone(), real.count, &settings);
    let ImageShape { side, channels } = opened.shape;
    let mut reports = Vec::new();
    for (source, g) in &opened.generators {
        let bar = inception::progress(req.n, source);
        let mut fake = Extracted::default();
        g.generate_slices(req.n, req.seed, None, &mut |images| {
            fake.append(net.extract(images, side, channels)?);
            bar.set_position(fake.count as u64);
            Ok(())
        })?;
        bar.finish_and_clear();
        reports.push(inception::report::score(source, &fake, &real, &protocol, &settings)?);
    }
    for (source, images) in &opened.outside {
        let fake = net.extract_shown(images, side, channels, source)?;
        reports.push(inception::report::score(source, &fake, &real, &protocol, &settings)?);
    }
    print!("{}", inception::report::format_table(&reports));
    eprintln!("gantry: scored in {:.1} s", started.elapsed().as_secs_f64());
    write_json(opened.json_path.as_ref(), &reports)
}

/// The runs' `eval.inception_weights`, a relative path taken from the run folder; the first run's
/// where they differ (said).
fn configured_weights(runs: &[(RunDir, Config)]) -> Result<Option<PathBuf>> {
    let mut found: Option<PathBuf> = None;
    for (run, config) in runs {
        let Some(path) = &config.eval.inception_weights else { continue };
        let path = run.root().join(path);
        match &found {
            Some(first) if *first != path => eprintln!(
                "gantry: warning: the runs name different Inception weights; {} is used, not {}",
                first.display(),
                path.display()
            ),
            Some(_) => {}
            None => found = Some(path),
        }
    }
    Ok(found)
}

/// Refuse a scoring whose features cannot fit in memory: every set's 2048-d features as f32, and
/// the largest set twice more as f64 (its covariance's centred copy).
fn check_inception_memory(req: &EvalRequest, opened: &Opened) -> Result<()> {
    let dim = opened.shape.dim().max(1);
    let sets = opened.generators.len() * req.n
        + opened.outside.iter().map(|(_, v)| v.len() / dim).sum::<usize>()
        + opened.reference.as_ref().map_or(10_000, |(_, v)| v.len() / dim);
    let largest = req.n.max(opened.outside.iter().map(|(_, v)| v.len() / dim).max().unwrap_or(0)) as u64;
    let width = inception::net::POOL_FEATURES as u64;
    let needed = (sets as u64 * width * 4 + largest * width * 16).saturating_add(1 << 30);
    let Some(available) = crate::allocator::available_memory() else { return Ok(()) };
    if needed > available {
        return Err(Error::TooLarge {
            what: format!("Inception features of {sets} images"),
            needed: crate::allocator::gib(needed),
            available: crate::allocator::gib(available),
            advice: "give a smaller --n or fewer sample sets".into(),
        });
    }
    Ok(())
}

/// The real images' Inception features: `--reference`'s, else the data set's reference images
/// (kept in the cache, keyed by the weights and the data, after the first time).
fn inception_reference(net: &Inception, opened: &Opened) -> Result<RealSet> {
    let ImageShape { side, channels } = opened.shape;
    if let Some((source, images)) = &opened.reference {
        return RealSet::new(source.clone(), net.extract_shown(images, side, channels, source)?);
    }
    let judge_data = JudgeData::open(&opened.data, None, crate::data::Progress::Shown)?;
    let test = judge_data.reference(JudgeConfig::default().seed)?;
    let description = format!("{}: {}", judge_data.dataset.name(), judge_data.describe_reference());
    let key = inception::cache::key(&net.weights.sha256, &test.bytes, test.count);
    if let Some((features, inception_score)) = inception::cache::load(&key, test.count, net.weights.width()) {
        eprintln!("gantry: the reference images' Inception features from the cache");
        return Ok(RealSet { description, count: test.count, features, inception_score });
    }
    let extracted = net.extract_shown(&test.all_floats(), side, channels, &description)?;
    let real = RealSet::new(description, extracted)?;
    inception::cache::store(&key, &real);
    Ok(real)
}

/// The runs' generators, verified and loaded, and the data they were trained on (all the same;
/// without runs, the flags'), with the folder to find it in: `--data`, else a run's own.
fn open_generators(
    req: &EvalRequest,
    runs: &[(RunDir, Config)],
) -> Result<(DataConfig, Vec<(String, LoadedGenerator)>)> {
    // The data the runs were trained on (all the same), else the flags'.
    let mut data: Option<(DataConfig, PathBuf)> = None;
    // Without --data, the data folder a run was trained from (when it is still there).
    let mut data_dir = req.data.clone();
    let mut generators = Vec::new();
    for (run, config) in runs {
        let d = config.data.dataset;
        if data_dir.is_none() {
            data_dir = crate::run_dir::remembered_data_dir(run, config).filter(|dir| dir.is_dir());
        }
        if req.dataset.is_some_and(|x| x != d) {
            return Err(Error::usage(
                "--dataset",
                format!("{} was trained on {}", run.root().display(), d.name()),
            ));
        }
        let mut this = config.data.clone();
        this.dir = None;
        match &data {
            Some((first, from)) if first.dataset != d || first.shape() != this.shape() => {
                return Err(Error::usage(
                    "eval",
                    format!(
                        "{} and {} were trained on different images ({} {:?} and {} {:?}): judge them apart",
                        from.display(),
                        run.root().display(),
                        first.dataset.name(),
                        first.shape(),
                        d.name(),
                        this.shape()
                    ),
                ));
            }
            Some(_) => {}
            None => data = Some((this, run.root().to_path_buf())),
        }
        let weights = req.checkpoint.map_or(Weights::Final, Weights::Checkpoint);
        let g = LoadedGenerator::load(run, &weights, req.device.device.unwrap_or_default())?;
        let source = match req.checkpoint {
            Some(_) => g.source.parent().unwrap_or(run.root()).display().to_string(),
            None => run.root().display().to_string(),
        };
        generators.push((source, g));
    }
    let mut data = match data {
        Some((data, _)) => data,
        None => DataConfig { dataset: req.dataset.unwrap_or(Dataset::Mnist), ..Default::default() },
    };
    data.dir = data_dir;
    let (side, channels) = data.shape();
    for (_, g) in &generators {
        if (g.rows, g.cols, g.channels) != (side, side, channels) {
            return Err(Error::bad_data(
                &g.source,
                format!(
                    "makes {}x{} images of {} channel(s), not the {side}x{side}x{channels} of its data",
                    g.rows, g.cols, g.channels
                ),
            ));
        }
    }
    Ok((data, generators))
}

/// Other tools' samples, each read and checked before the judge is loaded.
fn load_outside(paths: &[PathBuf], shape: ImageShape) -> Result<Vec<(String, Vec<f32>)>> {
    let mut outside = Vec::new();
    for path in paths {
        let loaded = samples::load(path, shape)?;
        if !loaded.skipped.is_empty() {
            eprintln!(
                "gantry: {}: skipped {} hidden files ({})",
                path.display(),
                loaded.skipped.len(),
                loaded.skipped.join(", ")
            );
        }
        outside.push((path.display().to_string(), loaded.values));
    }
    Ok(outside)
}

/// Where the reports go as JSON (`--json`, else RUN/eval.json for one run judged alone), checked
/// before any work: never a folder, never a run's own file, an existing file only with --force.
fn json_path(req: &EvalRequest, runs: &[(RunDir, Config)]) -> Result<Option<PathBuf>> {
    let space = req.features;
    let json_path = match (&req.json, runs, req.samples.is_empty()) {
        (Some(path), _, _) => Some(path.clone()),
        (None, [(run, _)], true) => {
            Some(run.root().join(crate::run_dir::eval_report_name(space, req.checkpoint)))
        }
        _ => None,
    };
    if let Some(path) = &json_path {
        let existing = if req.json.is_some() && !req.force {
            crate::run_dir::Existing::Keep
        } else {
            crate::run_dir::Existing::Replace
        };
        crate::run_dir::check_output(path, crate::run_dir::OwnOutput::EvalReport(space), existing, "--json")?;
    }

    Ok(json_path)
}

/// The judge of `data`'s images (trained and cached the first time), said with its accuracy;
/// refused where no judge fits these images.
fn load_judge(data: &DataConfig) -> Result<(JudgeData, Judge)> {
    let dataset = data.dataset;
    let judge_data = JudgeData::open(data, None, crate::data::Progress::Shown)?;
    if let Some(why) = judge_data.unsupported() {
        return Err(Error::usage("eval", format!("no judge for these images: {why}")));
    }
    let judge = Judge::load_or_train(&judge_data, None, &JudgeConfig::default(), &mut |line| {
        eprintln!("gantry: {line}")
    })?;
    if let Some(path) = &judge.cached_at {
        eprintln!(
            "gantry: judge of {} ({}; {:.2}% held-out accuracy){} {}",
            dataset.name(),
            judge.shape.describe(),
            100.0 * judge.test_accuracy,
            if judge.trained_now { " trained and cached at" } else { " from" },
            path.display()
        );
    }
    let required = JudgeConfig::required_accuracy(dataset);
    if judge.test_accuracy < required {
        eprintln!(
            "gantry: warning: the judge reaches {:.2}% on the test set, below the {:.0}% it should; treat the numbers with care",
            100.0 * judge.test_accuracy,
            100.0 * required
        );
    }
    Ok((judge_data, judge))
}
