//! The judge and the sample metrics on real data: orderings and bounds that must hold (real vs
//! itself ~0, train vs test small, noise large, one class covers one class), `gantry eval` on a run
//! and on files from other tools, and sample quality measured during training.
//!
//! The judge is trained once per build folder (cached under target/tmp/judge-cache; about four
//! minutes on 2 cores), then loaded by every test.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use gantry::config::Dataset;
use gantry::data::{self, LabelledImages, Split};
use gantry::eval::judge::{Judge, JudgeConfig};
use gantry::eval::reference::JudgeData;
use gantry::eval::{self, EvalReport, EvalSettings};
use gantry::train;

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("judge-cache")
}

/// The MNIST judge; the first caller trains it, the others wait and load it from the cache.
fn judge() -> Judge {
    static TRAINING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let data = gantry::config::DataConfig { dir: Some(common::mnist_dir()), ..Default::default() };
    Judge::load_or_train(
        &JudgeData::open(&data, None, gantry::data::Progress::Quiet).unwrap(),
        Some(&cache_dir()),
        &JudgeConfig::default(),
        &mut |line| eprintln!("{line}"),
    )
    .unwrap()
}

fn split(s: Split) -> LabelledImages {
    data::load_labelled(Dataset::Mnist, &common::mnist_dir(), s).unwrap()
}

fn report(judge: &Judge, images: &[f32], real: &eval::judge::Judgement) -> EvalReport {
    eval::evaluate(judge, "test", images, real, &EvalSettings::default()).unwrap()
}

#[test]
fn judge_is_accurate_and_metrics_order_real_train_one_class_and_noise() {
    let judge = judge();
    assert!(
        judge.test_accuracy >= JudgeConfig::required_accuracy(Dataset::Mnist),
        "judge test accuracy {}",
        judge.test_accuracy
    );
    let test = split(Split::Test);
    let train = split(Split::Train);
    let real = judge.judge(&test.images.all_floats()).unwrap();

    // Real against itself: every distance vanishes, precision and recall are perfect.
    let itself = eval::compare(&judge, "itself", &real, &real, &EvalSettings::default()).unwrap();
    assert!(itself.fid.abs() < 1e-6, "FID of the test set with itself: {}", itself.fid);
    assert_eq!((itself.precision, itself.recall), (1.0, 1.0));

    // 10,000 training images: other digits from the same distribution.
    let train_part = &train.images.floats(0..10_000);
    let from_train = report(&judge, train_part, &real);
    // Uniform noise in [-1, 1].
    let mut state = 12345u64;
    let noise: Vec<f32> = (0..2_000 * 784)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let from_noise = report(&judge, &noise, &real);
    // Only the test set's threes.
    let threes: Vec<f32> = test
        .labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| l == 3)
        .flat_map(|(i, _)| test.images.floats(i..i + 1))
        .collect();
    let one_class = report(&judge, &threes, &real);
    eprintln!(
        "{}",
        eval::format_table(&[itself.clone(), from_train.clone(), one_class.clone(), from_noise.clone()])
    );

    assert!(from_train.fid < 0.02 * from_noise.fid, "train {} vs noise {}", from_train.fid, from_noise.fid);
    assert!(from_train.fid < one_class.fid && one_class.fid < from_noise.fid);
    assert!(from_train.precision > 0.7 && from_train.recall > 0.7, "{from_train:?}");
    assert!(from_train.separability < 0.6, "train vs test features look alike: {}", from_train.separability);
    assert_eq!(from_train.classes_present, 10);
    assert!(from_train.inception_score > 9.0, "{}", from_train.inception_score);

    assert_eq!(one_class.classes_present, 1, "{:?}", one_class.class_histogram);
    assert!(one_class.recall < 0.3, "one class misses most of the real manifold: {}", one_class.recall);
    assert!(one_class.inception_score < 1.5);
    assert!(one_class.class_kl_from_uniform > 2.0);

    // Uniform noise: no recall, no coverage, nearly no density, trivially separable. (Precision
    // alone is fooled here: a few outlying real digits have neighbourhoods wide enough to hold the
    // noise's features; density, which counts balls, is not.)
    assert!(from_noise.recall < 0.01 && from_noise.coverage < 0.01, "{from_noise:?}");
    assert!(from_noise.density < 0.5 * from_train.density, "{from_noise:?} vs {from_train:?}");
    assert!(from_noise.separability > 0.95, "{from_noise:?}");
    assert!(from_noise.kid > 10.0 * from_train.kid.abs());

    // Same inputs, same seed: the same numbers, bit for bit.
    assert_eq!(report(&judge, train_part, &real), from_train);
}

/// The binary with the tests' judge cache and data.
fn gantry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("GANTRY_CACHE_DIR", cache_dir())
        .env("GANTRY_DATA", common::mnist_dir())
        .output()
        .unwrap()
}

#[test]
fn eval_command_judges_a_run_and_files_from_other_tools() {
    let judge_ready = judge(); // trained (or loaded) before the command looks in the same cache
    drop(judge_ready);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train::train(&common::tiny_config(60, 30, 2), &run).unwrap();
    let o = gantry(&["eval", run.to_str().unwrap(), "--n", "500"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(table.contains("FID (judge features)") && table.contains("classes present"), "{table}");
    let saved: Vec<EvalReport> =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(saved[0].generated, 500);
    // The same command again: the same numbers. This time without GANTRY_DATA (and with an
    // empty user cache): a run is judged against the data folder it was trained from.
    let tmp_cache = tmp.path().join("empty-cache");
    let o = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["eval", run.to_str().unwrap(), "--n", "500"])
        .env("GANTRY_CACHE_DIR", cache_dir())
        .env_remove("GANTRY_DATA")
        .env("XDG_CACHE_HOME", &tmp_cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: Vec<EvalReport> =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(saved, again);

    // Another tool's samples: real test digits as uint8 [N, 28, 28], and as a folder of PNGs.
    let test = split(Split::Test);
    let bytes: Vec<u8> = test.images.bytes[..1000 * 784].to_vec();
    let npy = tmp.path().join("samples.npy");
    common::write_u8_npy(&npy, &bytes, &[1000, 28, 28]);
    let pngs = tmp.path().join("pngs");
    std::fs::create_dir(&pngs).unwrap();
    for i in 0..50 {
        let png = gantry::grid::encode_gray_png(&bytes[i * 784..(i + 1) * 784], 28, 28).unwrap();
        std::fs::write(pngs.join(format!("{i:03}.png")), png).unwrap();
    }
    let json = tmp.path().join("files.json");
    let o = gantry(&[
        "eval",
        "--samples",
        npy.to_str().unwrap(),
        "--samples",
        pngs.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<EvalReport> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!((files[0].generated, files[1].generated), (1000, 50));
    // Real digits (1,000 of the test set, so FID carries small-sample bias) look real.
    assert!(
        files[0].fid < 10.0 && files[0].precision > 0.9 && files[0].classes_present == 10,
        "{:?}",
        files[0]
    );

    // A file that is not samples: exit 2, named, before any judging.
    std::fs::write(tmp.path().join("bad.npy"), b"\x93NUMPY garbage").unwrap();
    let o = gantry(&["eval", "--samples", tmp.path().join("bad.npy").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.npy"));
}

#[test]
fn quality_during_training_is_logged_and_leaves_training_unchanged() {
    drop(judge());
    // SAFETY of the environment: only this test binary's tests read GANTRY_CACHE_DIR, and the
    // other tests pass the cache folder explicitly.
    unsafe { std::env::set_var("GANTRY_CACHE_DIR", cache_dir()) };
    let tmp = tempfile::tempdir().unwrap();
    let mut with_eval = common::tiny_config(100, 50, 5);
    with_eval.eval.every = 40;
    with_eval.eval.samples = 300;
    let outcome = train::train(&with_eval, &tmp.path().join("on")).unwrap();
    // The end-of-run summary carries the latest judge scores and names eval.csv.
    let summary = gantry::cli::summary(&outcome);
    assert!(summary.contains("Sample quality at iteration 100") && summary.contains("FID"), "{summary}");
    assert!(summary.contains("eval.csv") && summary.contains("quality"), "{summary}");
    train::train(&common::tiny_config(100, 50, 5), &tmp.path().join("off")).unwrap();

    let rows = gantry::metrics::quality::read(&tmp.path().join("on/eval.csv")).unwrap();
    assert_eq!(rows.iter().map(|r| r.iteration).collect::<Vec<_>>(), [40, 80, 100]);
    assert!(rows.iter().all(|r| r.fid.is_finite() && r.fid > 0.0 && (0.0..=1.0).contains(&r.precision)));
    assert!(!tmp.path().join("off/eval.csv").exists());
    assert!(
        tmp.path().join("on/plots/quality.png").is_file()
            && tmp.path().join("on/plots/quality.svg").is_file()
    );
    let report =
        gantry::report::write(&gantry::run_dir::RunDir::open(tmp.path().join("on")).unwrap(), None).unwrap();
    let html = std::fs::read_to_string(report).unwrap();
    assert!(html.contains("Sample quality") && html.contains("<td>80</td>"), "the report carries eval.csv");
    // The judge draws its own noise: the training itself is bit-identical with or without it.
    let metrics = |name: &str| std::fs::read(tmp.path().join(name).join("metrics.csv")).unwrap();
    assert_eq!(metrics("on"), metrics("off"));
}

#[test]
fn a_conditional_run_reports_its_class_accuracy_in_training_and_in_eval() {
    drop(judge());
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut config = common::tiny_config(60, 30, 3);
    config.model.conditional = gantry::config::Conditioning::Concat;
    config.eval.every = 30;
    config.eval.samples = 300;
    let file = tmp.path().join("conditional.toml");
    std::fs::write(&file, config.to_toml()).unwrap();
    let o = gantry(&["train", "--config", file.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("class accuracy"), "the summary gives the class accuracy: {said}");
    // eval.csv: a column of class accuracies, each a share; the report shows it.
    let text = std::fs::read_to_string(run.join("eval.csv")).unwrap();
    assert!(text.lines().next().unwrap().ends_with(",class_accuracy"), "{text}");
    let rows = gantry::metrics::quality::read(&run.join("eval.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.class_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a))), "{rows:?}");
    let report = gantry::report::write(&gantry::run_dir::RunDir::open(&run).unwrap(), None).unwrap();
    assert!(std::fs::read_to_string(report).unwrap().contains("<th>class accuracy</th>"));
    eval_scores_ten_classes(&run);
}

/// `gantry eval RUN`: the class accuracy and one FID for each of MNIST's 10 classes, in the table
/// and eval.json.
fn eval_scores_ten_classes(run: &std::path::Path) {
    let o = gantry(&["eval", run.to_str().unwrap(), "--n", "500"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("class accuracy") && table.contains("FID per class"), "{table}");
    let saved: Vec<EvalReport> =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    let per_class = saved[0].per_class_fid.as_ref().expect("a conditional run's eval has per-class FIDs");
    assert_eq!(per_class.len(), 10);
    assert!(per_class.iter().all(|f| f.is_finite() && *f > 0.0), "{per_class:?}");
    assert!(saved[0].class_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
}

/// `gantry train` of a tiny conditional run (a projection D) with clusters (`tweak` sets them),
/// judged at iterations 20 and 40 on 300 samples, into `tmp/run`; its stderr must say `said`.
fn clustered_run(
    tmp: &std::path::Path,
    said: &str,
    tweak: impl Fn(&mut gantry::Config),
) -> std::path::PathBuf {
    drop(judge());
    let run = tmp.join("run");
    let mut config = common::tiny_config(40, 20, 5);
    config.model.conditional = gantry::config::Conditioning::Projection;
    config.eval.every = 20;
    config.eval.samples = 300;
    tweak(&mut config);
    let file = tmp.join("clustered.toml");
    std::fs::write(&file, config.to_toml()).unwrap();
    let o = gantry(&["train", "--config", file.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains(said), "{}", String::from_utf8_lossy(&o.stderr));
    run
}

#[test]
fn a_self_conditioned_run_is_judged_without_class_scores_its_clusters_are_not_the_judges_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = clustered_run(tmp.path(), "into 12 clusters by k-means", |c| {
        c.model.classes = 12;
        c.data.clusters = 12;
    });
    let rows = gantry::metrics::quality::read(&run.join("eval.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.class_accuracy.is_none() && r.fid.is_finite()), "{rows:?}");
    let o = gantry(&["eval", run.to_str().unwrap(), "--n", "500"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("FID") && !table.contains("class accuracy"), "{table}");
    let saved: Vec<EvalReport> =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    assert!(saved[0].class_accuracy.is_none() && saved[0].per_class_fid.is_none());
}

#[test]
fn a_run_with_clusters_per_class_is_judged_on_its_classes_not_its_cluster_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let run = clustered_run(tmp.path(), "each of the 10 classes into 3 clusters", |c| {
        c.model.clusters_per_class = 3;
    });
    let rows = gantry::metrics::quality::read(&run.join("eval.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.class_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a))), "{rows:?}");
    // gantry eval scores the 10 classes (each id's class: id / 3), not the 30 ids.
    eval_scores_ten_classes(&run);
}
