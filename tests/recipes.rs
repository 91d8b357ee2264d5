//! The objectives, recipe options and stabilizers: the reference step on burn's own modules
//! matches the fused fast path on the classic recipe, every objective and stabilizer (spectral
//! norm, G's moving average, DiffAugment) trains and resumes byte-identical after a stop, and a
//! resume cannot change the recipe.

mod common;

use std::fs;
use std::path::Path;

use gantry::config::Overrides;
use gantry::config::{Augment, Conditioning, DUpdate, Kernels, Loss, UpdateOrder};
use gantry::metrics::METRICS;
use gantry::run_dir::Existing;
use gantry::train::{self, Options};

#[test]
fn the_reference_step_matches_the_fused_fast_path_on_the_classic_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let fused = common::tiny_config(20, 10, 4);
    let mut reference = fused.clone();
    reference.train.kernels = Kernels::Reference;
    let a = train::train(&fused, &tmp.path().join("fused")).unwrap().records;
    let b = train::train(&reference, &tmp.path().join("reference")).unwrap().records;
    // Iteration 0 reads only operations that are bit-identical to burn's (dense layers, inference
    // batch norm, Adam); G's training batch norm sums the batch in another order (within 1e-6
    // relative), so later iterations drift apart by float reassociation, slowly.
    let d_terms = |r: &gantry::metrics::IterationRecord| {
        [r.d_loss_real, r.d_loss_fake, r.acc_real, r.acc_fake, r.d_out_real, r.d_out_fake]
    };
    assert_eq!(d_terms(&a[0]), d_terms(&b[0]), "D's first updates are bit-identical");
    let g0 = (a[0].g_loss as f64 - b[0].g_loss as f64).abs() / (a[0].g_loss as f64).abs();
    assert!(g0 < 1e-6, "G's first loss, through the training batch norm: {g0:e} relative");
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(&b) {
        for (name, get) in METRICS {
            let (u, v) = (get(x) as f64, get(y) as f64);
            let rel = (u - v).abs() / u.abs().max(1e-3);
            worst = worst.max(rel);
            assert!(rel < 1e-3, "iteration {} {name}: fused {u} reference {v}", x.iteration);
        }
    }
    eprintln!("largest relative difference over 20 iterations: {worst:.2e}");
}

/// A dcgan small enough for a test: 16 -> 8 -> 1 channels in G, 8 -> 16 in D, dropout 0.3.
fn small_dcgan(c: &mut gantry::Config) {
    c.model.kind = gantry::config::ModelKind::Dcgan;
    c.model.g_channels = vec![16, 8];
    c.model.d_channels = vec![8, 16];
    c.model.d_dropout = 0.3;
    c.model.leaky_slope = 0.3;
    c.train.batch_size = 16;
}

fn recipe(loss: Loss, tweak: impl Fn(&mut gantry::Config)) -> gantry::Config {
    let mut c = common::tiny_config(40, 10, 9);
    c.train.loss = loss;
    tweak(&mut c);
    c
}

#[test]
fn every_objective_trains_and_resumes_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "ns-gfirst-2d",
            recipe(Loss::Ns, |c| {
                c.train.order = UpdateOrder::GFirst;
                c.train.d_steps = 2;
                c.train.real_label = 0.9;
            }),
        ),
        ("minimax-joint", recipe(Loss::Minimax, |c| c.train.d_update = DUpdate::Joint)),
        ("lsgan", recipe(Loss::Lsgan, |_| {})),
        ("hinge-reference", recipe(Loss::Hinge, |c| c.train.kernels = Kernels::Reference)),
        (
            "wgan",
            recipe(Loss::Wgan, |c| {
                c.train.d_steps = 5;
                c.train.d_update = DUpdate::Joint;
            }),
        ),
        // The classic fast path with an EMA of G beside it.
        ("ns-ema", recipe(Loss::Ns, |c| c.train.g_ema = 0.99)),
        (
            "hinge-sn-ema-augment",
            recipe(Loss::Hinge, |c| {
                c.model.d_spectral_norm = true;
                c.train.g_ema = 0.999;
                c.train.augment = vec![Augment::Translation, Augment::Cutout];
            }),
        ),
        ("wgan-sn", recipe(Loss::Wgan, |c| c.model.d_spectral_norm = true)),
        // The regression: augmentation on the classic objective ran the fast path, which skipped it.
        ("ns-augment", recipe(Loss::Ns, |c| c.train.augment = vec![Augment::Cutout, Augment::Translation])),
        // Convolutional networks (small), with dropout in D: TensorFlow's DCGAN tutorial step, and
        // the Keras-GAN order with an EMA of G.
        (
            "dcgan-simultaneous",
            recipe(Loss::Ns, |c| {
                small_dcgan(c);
                c.train.order = UpdateOrder::Simultaneous;
                c.train.d_update = DUpdate::Joint;
            }),
        ),
        (
            "dcgan-dfirst-ema",
            recipe(Loss::Hinge, |c| {
                small_dcgan(c);
                c.train.g_ema = 0.99;
            }),
        ),
        // Conditional networks: the class joined to G's noise and to D's input (mlp, reference
        // step: the fast path is unconditional only), or projected on D's features (dcgan, the
        // simultaneous step, g-first with an mlp).
        ("mlp-concat", recipe(Loss::Ns, |c| c.model.conditional = Conditioning::Concat)),
        (
            "mlp-projection-gfirst",
            recipe(Loss::Hinge, |c| {
                c.model.conditional = Conditioning::Projection;
                c.train.order = UpdateOrder::GFirst;
            }),
        ),
        (
            "dcgan-concat-simultaneous",
            recipe(Loss::Ns, |c| {
                small_dcgan(c);
                c.model.conditional = Conditioning::Concat;
                c.train.order = UpdateOrder::Simultaneous;
                c.train.d_update = DUpdate::Joint;
            }),
        ),
        (
            "dcgan-projection",
            recipe(Loss::Ns, |c| {
                small_dcgan(c);
                c.model.conditional = Conditioning::Projection;
            }),
        ),
        // Spectral norm on convolutions, and on a conditional D (its class embedding too).
        (
            "dcgan-sn-hinge",
            recipe(Loss::Hinge, |c| {
                small_dcgan(c);
                c.model.d_spectral_norm = true;
            }),
        ),
        (
            "dcgan-projection-sn-simultaneous",
            recipe(Loss::Ns, |c| {
                small_dcgan(c);
                c.model.conditional = Conditioning::Projection;
                c.model.d_spectral_norm = true;
                c.train.order = UpdateOrder::Simultaneous;
                c.train.d_update = DUpdate::Joint;
            }),
        ),
        // Radford et al.'s D: BatchNorm after every convolution but the first.
        (
            "dcgan-d-batch-norm",
            recipe(Loss::Ns, |c| {
                small_dcgan(c);
                c.model.d_batch_norm = true;
            }),
        ),
        (
            "mlp-concat-sn",
            recipe(Loss::Lsgan, |c| {
                c.model.conditional = Conditioning::Concat;
                c.model.d_spectral_norm = true;
            }),
        ),
        // Self-conditioned (Liu et al. 2020): G and a projection D on 12 k-means clusters of the
        // images, G's clusters drawn in proportion to their sizes.
        (
            "dcgan-self-conditioned",
            recipe(Loss::Ns, |c| {
                small_dcgan(c);
                c.model.conditional = Conditioning::Projection;
                c.model.classes = 12;
                c.data.clusters = 12;
            }),
        ),
        // Each class split into 3 k-means clusters: G and a projection D on 30 (class, cluster) ids.
        (
            "dcgan-clusters-per-class",
            recipe(Loss::Ns, |c| {
                small_dcgan(c);
                c.model.conditional = Conditioning::Projection;
                c.model.clusters_per_class = 3;
            }),
        ),
        // AC-GAN (Odena et al. 2017): D classifies as it judges; an mlp on the Keras-GAN order,
        // a spectrally normalized dcgan on the tutorial's simultaneous step.
        ("mlp-acgan", recipe(Loss::Ns, |c| c.model.conditional = Conditioning::Acgan)),
        (
            "dcgan-acgan-sn-simultaneous",
            recipe(Loss::Hinge, |c| {
                small_dcgan(c);
                c.model.conditional = Conditioning::Acgan;
                c.model.d_spectral_norm = true;
                c.train.order = UpdateOrder::Simultaneous;
                c.train.d_update = DUpdate::Joint;
            }),
        ),
        // The regression: g-first used spectral norm's σ before any power iteration had set v (NaN).
        (
            "lsgan-gfirst-sn",
            recipe(Loss::Lsgan, |c| {
                c.train.order = UpdateOrder::GFirst;
                c.model.d_spectral_norm = true;
            }),
        ),
    ];
    for (name, config) in cases {
        let straight = tmp.path().join(format!("{name}-straight"));
        let outcome = train::train(&config, &straight).unwrap();
        let all_finite = outcome.records.iter().all(|r| METRICS.iter().all(|(_, get)| get(r).is_finite()));
        assert!(all_finite, "{name}: a metric is not finite");
        let stopped = tmp.path().join(format!("{name}-stopped"));
        let options = Options { stop_after: Some(17), ..Default::default() };
        assert_eq!(train::start(&config, &stopped, Existing::Keep, &options).unwrap().stopped_at, Some(17));
        train::resume(&stopped, None, &Overrides::default(), &Options::default()).unwrap();
        for file in
            ["metrics.csv", "weights/generator.bpk", "weights/discriminator.bpk", "samples/step_000040.png"]
        {
            assert_eq!(
                fs::read(straight.join(file)).unwrap(),
                fs::read(stopped.join(file)).unwrap(),
                "{name}: {file} differs after a resume"
            );
        }
    }
    conditional_runs_draw_the_classes_asked(tmp.path());
    self_conditioned_runs_draw_their_clusters(tmp.path());
    clusters_per_class_keep_to_their_class(tmp.path());
    // G's moving average is what the grids and weights show: they differ from G's own.
    let plain = fs::read(tmp.path().join("lsgan-straight/weights/generator.bpk")).unwrap();
    let ema_run = tmp.path().join("ns-ema-straight");
    let ema_ckpt = ema_run.join("checkpoints/step_000040");
    assert_ne!(fs::read(ema_run.join("weights/generator.bpk")).unwrap(), plain);
    assert_ne!(
        fs::read(ema_ckpt.join("generator.bpk")).unwrap(),
        fs::read(ema_ckpt.join("generator_ema.bpk")).unwrap(),
    );
    assert_eq!(
        fs::read(ema_run.join("weights/generator.bpk")).unwrap().len(),
        fs::read(ema_ckpt.join("generator_ema.bpk")).unwrap().len()
    );
    let sampled = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sample", "--n", "4", "--out"])
        .arg(tmp.path().join("ema.png"))
        .arg(&ema_run)
        .output()
        .unwrap();
    assert!(sampled.status.success());
    let said = String::from_utf8_lossy(&sampled.stderr);
    assert!(said.contains("moving average of G"), "gantry sample says which G it used: {said}");
    // The classic records are the same with and without the average beside them.
    let classic = train::train(&recipe(Loss::Ns, |_| {}), &tmp.path().join("ns")).unwrap();
    assert_eq!(
        fs::read(tmp.path().join("ns/metrics.csv")).unwrap(),
        fs::read(ema_run.join("metrics.csv")).unwrap()
    );
    assert_ne!(
        fs::read(tmp.path().join("ns/samples/step_000040.png")).unwrap(),
        fs::read(ema_run.join("samples/step_000040.png")).unwrap()
    );
    drop(classic);
    let augmented = fs::read(tmp.path().join("ns-augment-straight/metrics.csv")).unwrap();
    assert_ne!(
        fs::read(tmp.path().join("ns/metrics.csv")).unwrap(),
        augmented,
        "augmentation changes D's inputs"
    );
    // Spectral norm's vectors are in the checkpoint, one pair per D layer (784 -> 512 -> 256 -> 1).
    let state: serde_json::Value = serde_json::from_slice(
        &fs::read(tmp.path().join("wgan-sn-straight/checkpoints/step_000040/state.json")).unwrap(),
    )
    .unwrap();
    let sizes: Vec<(usize, usize)> = state["spectral_norm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["v"].as_array().unwrap().len(), p["u"].as_array().unwrap().len()))
        .collect();
    assert_eq!(sizes, vec![(784, 512), (512, 256), (256, 1)]);
    // WGAN's critic is clipped to 0.01: with inputs in [-1, 1] its score is bounded by the
    // layers' fan-ins, 784 -> 512 -> 256 -> 1, times the clip: (784c + c) 512c 256c + ... < 103.
    let wgan = gantry::metrics::read_csv(&tmp.path().join("wgan-straight/metrics.csv")).unwrap();
    assert!(
        wgan.iter().all(|r| r.d_out_real.abs() < 103.0 && r.d_out_fake.abs() < 103.0),
        "{:?}",
        wgan.last()
    );
}

/// The conditional runs of [`every_objective_trains_and_resumes_byte_identical`]: grids of one
/// row per class, the label stream in the checkpoint, `gantry sample --class`.
fn conditional_runs_draw_the_classes_asked(tmp: &std::path::Path) {
    for name in ["mlp-concat", "dcgan-projection"] {
        let run = tmp.join(format!("{name}-straight"));
        // One row per class (10), output.grid_cols columns (5).
        assert_grid_rows(&run, 10);
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(run.join("checkpoints/step_000040/state.json")).unwrap())
                .unwrap();
        assert!(state["rng_labels"].is_object() || state["rng_labels"].is_array(), "{name}: {state}");
    }
    let gantry = |args: &[&str], run: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry")).args(args).arg(run).output().unwrap()
    };
    let run = tmp.join("dcgan-projection-straight");
    let (threes, sevens) = (tmp.join("threes.png"), tmp.join("sevens.png"));
    for (class, out) in [("3", &threes), ("7", &sevens)] {
        let o = gantry(&["sample", "--n", "4", "--class", class, "--out", out.to_str().unwrap()], &run);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("of class {class}")));
    }
    // The same noise, another class: other images.
    assert_ne!(fs::read(&threes).unwrap(), fs::read(&sevens).unwrap());
    let o = gantry(&["sample", "--class", "10"], &run);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("0..=9"), "{}", String::from_utf8_lossy(&o.stderr));
    // An unconditional run takes no class; nothing is written.
    let o = gantry(&["sample", "--class", "3"], &tmp.join("lsgan-straight"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not conditional"));
    assert!(!tmp.join("lsgan-straight/sample-seed0.png").exists());
}

fn self_conditioned_runs_draw_their_clusters(tmp: &std::path::Path) {
    let run = tmp.join("dcgan-self-conditioned-straight");
    let sizes = cluster_sizes(&run);
    assert_eq!((sizes.len(), sizes.iter().sum::<u64>()), (12, 60_000), "{sizes:?}");
    assert!(sizes.iter().all(|&s| s > 0));
    // output.grid_rows rows (5), not one per cluster.
    assert_grid_rows(&run, 5);
    // Its G draws the clusters in proportion to their sizes; any one of them on request.
    let g = final_generator(&run);
    let asked = g.asked_classes(60_000, None).unwrap();
    let drawn: Vec<u64> = (0..12u8).map(|c| asked.iter().filter(|&&a| a == c).count() as u64).collect();
    assert_eq!(drawn, sizes);
    let out = tmp.join("cluster11.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sample", "--n", "4", "--class", "11", "--out", out.to_str().unwrap()])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success() && out.is_file(), "{}", String::from_utf8_lossy(&o.stderr));
    // A resume whose clustering differed from the run's is refused and changes nothing.
    let stopped = tmp.join("dcgan-self-conditioned-stopped");
    let mut info: serde_json::Value =
        serde_json::from_slice(&fs::read(stopped.join("run.json")).unwrap()).unwrap();
    info["cluster_sizes"][0] = serde_json::json!(sizes[0] + 1);
    fs::write(stopped.join("run.json"), serde_json::to_vec_pretty(&info).unwrap()).unwrap();
    let before = crate::common::files_under(&stopped);
    let e =
        train::resume(&stopped, None, &Overrides::default(), &Options::default()).unwrap_err().to_string();
    assert!(e.contains("clusters of sizes"), "{e}");
    assert_eq!(crate::common::files_under(&stopped), before);
}

/// A run with `model.clusters_per_class` (3): each class's images split into its own clusters,
/// one grid row per class, `--class 7` drawing only class 7's clusters.
fn clusters_per_class_keep_to_their_class(tmp: &std::path::Path) {
    let run = tmp.join("dcgan-clusters-per-class-straight");
    let sizes = cluster_sizes(&run);
    assert_eq!(sizes.len(), 30);
    assert!(sizes.iter().all(|&s| s > 0));
    // Class c's clusters (ids 3c..3c+3) hold its images: MNIST's training set has 5,923 zeros,
    // 6,742 ones, ... (the counts of train-labels-idx1-ubyte).
    let per_class: Vec<u64> = sizes.chunks(3).map(|c| c.iter().sum()).collect();
    assert_eq!(per_class, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    // One row per class (10), output.grid_cols columns (5).
    assert_grid_rows(&run, 10);
    let g = final_generator(&run);
    assert_eq!(g.classes(), 10);
    // Without a class: every id in proportion to its size; the judge is told each one's class.
    let asked = g.asked_classes(60_000, None).unwrap();
    let drawn: Vec<u64> = (0..30u8).map(|c| asked.iter().filter(|&&a| a == c).count() as u64).collect();
    assert_eq!(drawn, sizes);
    let judged = g.judged_classes(60_000).unwrap().unwrap();
    assert!(asked.iter().zip(&judged).all(|(&id, &class)| id / 3 == class));
    // Class 7: its three clusters only, by their sizes.
    let sevens = g.asked_classes(600, Some(7)).unwrap();
    assert!(sevens.iter().all(|&id| (21..24).contains(&id)), "{sevens:?}");
    assert!((21..24u8).all(|id| sevens.contains(&id)));
    let out = tmp.join("clusters-per-class-7.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sample", "--n", "4", "--class", "7", "--out", out.to_str().unwrap()])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success() && out.is_file(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sample", "--class", "10"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "there are 10 classes, not 30");
    // Regression (`gantry sample --class 7` panicked when run.json gave class 7's clusters no
    // image): a damaged run.json is refused by name, and nothing is written. Last use of this run.
    let mut info: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("run.json")).unwrap()).unwrap();
    for id in 21..24 {
        info["cluster_sizes"][id] = serde_json::json!(0);
    }
    fs::write(run.join("run.json"), serde_json::to_vec_pretty(&info).unwrap()).unwrap();
    let empty = tmp.join("clusters-per-class-empty-7.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sample", "--n", "4", "--class", "7", "--out", empty.to_str().unwrap()])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("run.json") && stderr.contains("no image"), "{stderr}");
    assert!(!empty.exists());
}

/// A run's final G, loaded as `gantry sample` loads it.
fn final_generator(run: &Path) -> gantry::sample::LoadedGenerator {
    let dir = gantry::run_dir::RunDir::open(run).unwrap();
    gantry::sample::LoadedGenerator::load(&dir, &gantry::sample::Weights::Final, Default::default()).unwrap()
}

/// The cluster sizes run.json records.
fn cluster_sizes(run: &Path) -> Vec<u64> {
    let info: serde_json::Value = serde_json::from_slice(&fs::read(run.join("run.json")).unwrap()).unwrap();
    info["cluster_sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect()
}

/// The grid at iteration 40 has `rows` rows of output.grid_cols (5) 28x28 tiles.
fn assert_grid_rows(run: &Path, rows: usize) {
    let (w, h) = image::open_png_size(&run.join("samples/step_000040.png"));
    let layout = gantry::grid::GridLayout { rows, cols: 5, tile_h: 28, tile_w: 28, channels: 1 };
    assert_eq!((w as usize, h as usize), layout.size(), "{}", run.display());
}

/// Reading a PNG's size from its header (the IHDR chunk), enough for these checks.
mod image {
    pub fn open_png_size(path: &std::path::Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    }
}

#[test]
fn a_resume_cannot_change_the_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let config = recipe(Loss::Hinge, |_| {});
    let options = Options { stop_after: Some(10), ..Default::default() };
    train::start(&config, &run, Existing::Keep, &options).unwrap();
    let other = tmp.path().join("other.toml");
    let mut changed = config.clone();
    changed.train.loss = Loss::Lsgan;
    fs::write(&other, changed.to_toml()).unwrap();
    let err = train::resume(&run, Some(&other), &Overrides::default(), &Options::default()).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("train.loss: hinge -> lsgan"), "{err}");
    // The saved config names every choice the run made, and the CLI refuses what cannot train.
    let saved = fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(saved.contains("loss = \"hinge\"") && saved.contains("optimizer_d = \"adam\""), "{saved}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["train", "--loss", "wgan-gp", "--out"])
        .arg(tmp.path().join("gp"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("second derivatives"));
    assert!(!Path::new(&tmp.path().join("gp")).exists());
}
