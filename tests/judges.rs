//! A judge for any data: a folder with class sub-folders gets a judge of its classes, a folder
//! without them a judge of the four rotations, CIFAR-10's batches one of their classes, each
//! tested on held-out images; each judge ranks real images before a trained GAN's samples, and
//! those before an untrained GAN's and before uniform noise. Training with evaluation on, and
//! `gantry eval`, work on a colour folder through the binary.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use gantry::config::{DataConfig, Dataset};
use gantry::data::{self, Split};
use gantry::eval::judge::{Judge, JudgeConfig, JudgeTask};
use gantry::eval::reference::JudgeData;
use gantry::eval::{self, EvalReport, EvalSettings};
use gantry::run_dir::RunDir;
use gantry::sample::{LoadedGenerator, Weights};
use gantry::train;

/// MNIST's first `n` training digits as PNG files: `labelled/<digit>/<i>.png` and `plain/<i>.png`.
fn digit_folders(root: &Path, n: usize) {
    let set = data::load_labelled(Dataset::Mnist, &common::mnist_dir(), Split::Train).unwrap();
    for i in 0..n {
        let img =
            image::GrayImage::from_raw(28, 28, set.images.bytes[i * 784..(i + 1) * 784].to_vec()).unwrap();
        let class = root.join("labelled").join(set.labels[i].to_string());
        fs::create_dir_all(&class).unwrap();
        fs::create_dir_all(root.join("plain")).unwrap();
        img.save(class.join(format!("{i:04}.png"))).unwrap();
        img.save(root.join("plain").join(format!("{i:04}.png"))).unwrap();
    }
}

fn grey_folder(dir: &Path) -> DataConfig {
    DataConfig {
        dataset: Dataset::Folder,
        dir: Some(dir.to_path_buf()),
        image_size: Some(28),
        channels: Some(1),
        clusters: 0,
    }
}

/// `n` samples of the run's final generator.
fn samples(run: &Path, n: usize) -> Vec<f32> {
    let g = LoadedGenerator::load(&RunDir::open(run).unwrap(), &Weights::Final, Default::default()).unwrap();
    let mut out = Vec::new();
    g.generate_slices(n, 1, None, &mut |images| {
        out.extend_from_slice(images);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn each_judge_ranks_real_before_a_trained_gan_before_an_untrained_one_and_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // SAFETY of the environment: only this test binary reads GANTRY_CACHE_DIR (the decoded
    // folders' cache), and its tests all set the same value.
    unsafe { std::env::set_var("GANTRY_CACHE_DIR", &cache) };
    digit_folders(tmp.path(), 1000);

    // The GANs: the classic MLPs trained on the unlabelled folder, and one after a single step.
    let mut config = common::tiny_config(2000, 1000, 3);
    config.data = grey_folder(&tmp.path().join("plain"));
    train::train(&config, &tmp.path().join("trained")).unwrap();
    config.train.iterations = 1;
    train::train(&config, &tmp.path().join("untrained")).unwrap();
    let n = 500;
    let trained = samples(&tmp.path().join("trained"), n);
    let untrained = samples(&tmp.path().join("untrained"), n);
    // Other real digits than the folder's, and uniform noise in [-1, 1].
    let mnist = data::load_labelled(Dataset::Mnist, &common::mnist_dir(), Split::Train).unwrap();
    let real = mnist.images.floats(50_000..50_000 + n);
    let mut state = 7u64;
    let noise: Vec<f32> = (0..n * 784)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();

    // A short training of each judge (the default trains longer); its own cache folder.
    let cfg = JudgeConfig { epochs: 3, min_epoch_steps: 60, ..Default::default() };
    for (folder, task, classes) in [("labelled", JudgeTask::Classes, 10), ("plain", JudgeTask::Rotation, 4)] {
        let data =
            JudgeData::open(&grey_folder(&tmp.path().join(folder)), None, gantry::data::Progress::Quiet)
                .unwrap();
        assert_eq!((data.shape.task, data.shape.classes), (task, classes), "{folder}");
        let judge = Judge::load_or_train(&data, Some(&cache), &cfg, &mut |_| {}).unwrap();
        assert!(judge.test_accuracy >= 0.85, "{folder}: held-out accuracy {}", judge.test_accuracy);
        let reference = judge.judge(&data.reference(cfg.seed).unwrap().all_floats()).unwrap();
        let report = |name: &str, images: &[f32]| -> EvalReport {
            eval::evaluate(&judge, name, images, &reference, &EvalSettings::default()).unwrap()
        };
        let [r, t, u, z] =
            [("real", &real), ("trained", &trained), ("untrained", &untrained), ("noise", &noise)]
                .map(|(name, images)| report(name, images));
        eprintln!("{folder}:\n{}", eval::format_table(&[r.clone(), t.clone(), u.clone(), z.clone()]));
        assert!(r.fid < t.fid && t.fid < u.fid && t.fid < z.fid, "{folder}: FID {r:?} {t:?} {u:?} {z:?}");
        assert!(r.kid < t.kid && t.kid < u.kid && t.kid < z.kid, "{folder}: KID");
        assert!(r.density > t.density && t.density > u.density && t.density > z.density, "{folder}: density");
        match task {
            JudgeTask::Classes => assert!(r.inception_score > t.inception_score && t.classes_present >= 8),
            // No classes: no class metrics, said so rather than made up.
            JudgeTask::Rotation => {
                assert!(t.inception_score.is_nan() && t.class_histogram.is_empty());
                let json = serde_json::to_string(&t).unwrap();
                let back: EvalReport = serde_json::from_str(&json).unwrap();
                // (serde_json parses floats to within an ulp, not always exactly.)
                assert!(back.inception_score.is_nan() && (back.fid - t.fid).abs() <= 1e-12 * t.fid);
            }
        }
        // A second judge of the same images comes from the cache, the same judge.
        let again = Judge::load_or_train(&data, Some(&cache), &cfg, &mut |_| {}).unwrap();
        assert!(!again.trained_now && again.test_accuracy == judge.test_accuracy);
    }
}

#[test]
fn cifar_batches_judge_their_classes_held_out_by_the_test_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("cifar-10-batches-bin");
    fs::create_dir_all(&folder).unwrap();
    let batch = |n: u32, salt: u32| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let label = (i % 3) as u8;
                std::iter::once(label).chain((0..3072u32).map(move |p| ((p * 7 + i * 13 + salt) % 251) as u8))
            })
            .collect()
    };
    fs::write(folder.join("data_batch_1.bin"), batch(40, 0)).unwrap();
    let data =
        DataConfig { dataset: Dataset::Cifar10, dir: Some(tmp.path().to_path_buf()), ..Default::default() };
    let judged = JudgeData::open(&data, None, gantry::data::Progress::Quiet).unwrap();
    assert_eq!((judged.shape.side, judged.shape.channels, judged.shape.classes), (32, 3, 3));
    // Without test_batch.bin a seeded tenth (at least 10) is held out, and compared with.
    let (train, test) = judged.judge_sets(0).unwrap();
    assert_eq!((train.labels.len(), test.labels.len()), (30, 10));
    assert_eq!(judged.reference(0).unwrap().count, 10);
    fs::write(folder.join("test_batch.bin"), batch(20, 5)).unwrap();
    let judged = JudgeData::open(&data, None, gantry::data::Progress::Quiet).unwrap();
    let (train, test) = judged.judge_sets(0).unwrap();
    assert_eq!((train.labels.len(), test.labels.len()), (40, 20));
    assert_eq!(judged.reference(0).unwrap().source, folder.join("test_batch.bin"));
}

fn gantry(args: &[&str], dir: &Path, cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(dir)
        .env("GANTRY_CACHE_DIR", cache)
        .output()
        .unwrap()
}

#[test]
fn a_colour_folder_run_is_judged_while_it_trains_and_by_gantry_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // Unlabelled 16x16 colour pictures: a coloured square at a place and a colour of its own.
    let dir = tmp.path().join("pictures");
    fs::create_dir_all(&dir).unwrap();
    for k in 0..40u32 {
        let img = image::RgbImage::from_fn(20, 20, |x, y| {
            let inside = x >= k % 9 && x < k % 9 + 8 && y >= k % 7 && y < k % 7 + 10;
            let c = [(k * 37 % 200) as u8 + 40, (k * 91 % 200) as u8 + 40, (k * 53 % 200) as u8 + 40];
            image::Rgb(if inside { c } else { [10, 10, 10] })
        });
        img.save(dir.join(format!("{k:02}.png"))).unwrap();
    }
    let o = gantry(
        &[
            "train",
            "--dataset",
            "folder",
            "--data",
            "pictures",
            "--set",
            "data.image_size=16",
            "--iterations",
            "40",
            "--eval-every",
            "20",
            "--set",
            "eval.samples=40",
            "--out",
            "run",
        ],
        tmp.path(),
        &cache,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("4 rotations"), "the judge says what it learned: {stderr}");
    let rows = gantry::metrics::quality::read(&tmp.path().join("run/eval.csv")).unwrap();
    assert_eq!(rows.iter().map(|r| r.iteration).collect::<Vec<_>>(), [20, 40]);
    assert!(rows.iter().all(|r| r.fid.is_finite() && r.inception_score.is_nan()), "{rows:?}");

    let o = gantry(&["eval", "run", "--n", "40"], tmp.path(), &cache);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("FID (judge features)") && stdout.contains("4 rotations"), "{stdout}");
    assert!(!stdout.contains("inception score"), "a rotation judge has no classes: {stdout}");
    assert!(stderr.contains(" from "), "the judge trained during the run is reused: {stderr}");
    let reports: Vec<EvalReport> =
        serde_json::from_slice(&fs::read(tmp.path().join("run/eval.json")).unwrap()).unwrap();
    assert_eq!(reports[0].judge_task, JudgeTask::Rotation);
    // The report shows the run's quality table without class numbers.
    let o = gantry(&["report", "run"], tmp.path(), &cache);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
