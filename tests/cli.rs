//! The binary as a user meets it: help, exit codes, and clear errors for bad input.

mod common;

use std::fs;
use std::process::{Command, Output};

fn gantry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn train_help_explains_every_flag() {
    let o = gantry(&["train", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--config",
        "--data",
        "--dataset",
        "--iterations",
        "--batch-size",
        "--sample-interval",
        "--seed",
        "--threads",
        "--out",
        "--force",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(help.contains("fashion-mnist"));
}

#[test]
fn config_errors_exit_2_and_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    fs::write(&cfg, "[train]\nbatchsize = 64\n").unwrap();
    let o = gantry(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("batchsize") && stderr(&o).contains("bad.toml"), "{}", stderr(&o));

    fs::write(&cfg, "[train]\nbatch_size = 0\n").unwrap();
    let o = gantry(&["train", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("train.batch_size"), "{}", stderr(&o));

    let o = gantry(&["train", "--config", tmp.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "a missing config file is bad input");
    assert!(stderr(&o).contains("missing.toml"), "{}", stderr(&o));

    let o = gantry(&["train", "--iterations", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("train.iterations"), "{}", stderr(&o));
}

#[test]
fn corrupt_data_file_is_named_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    // A real header announcing 60000 images, followed by only 100 bytes.
    let mut bytes = vec![0, 0, 8, 3];
    for d in [60_000u32, 28, 28] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(&[0; 100]);
    fs::write(data.join("train-images-idx3-ubyte"), &bytes).unwrap();
    let out = tmp.path().join("run");
    let o = gantry(&["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("train-images-idx3-ubyte") && err.contains("47040000"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "a failed start must not leave a run folder");
}

#[test]
fn existing_run_folder_is_never_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("notes.txt"), "mine").unwrap();
    let data = common::mnist_dir();
    let args = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--iterations",
        "3",
        "--eval-every",
        "0",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    let o = gantry(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a gantry run folder"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");

    // --force does not replace a folder that is not a gantry run either.
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = gantry(&forced);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a gantry run folder"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");

    // A run folder is replaced with --force (the user's notes stay), and `gantry plot` and
    // `gantry sample` work on the result.
    fs::remove_file(out.join("notes.txt")).unwrap();
    assert!(gantry(&args).status.success());
    fs::write(out.join("notes.txt"), "mine").unwrap();
    let o = gantry(&forced);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Mean over the last"));
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    let o = gantry(&["plot", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let grid = tmp.path().join("grid.png");
    let o = gantry(&["sample", out.to_str().unwrap(), "--out", grid.to_str().unwrap(), "--n", "16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::metadata(&grid).unwrap().len() > 100);
}

#[test]
fn set_takes_any_key_and_refuses_bad_ones_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let out_arg = out.to_str().unwrap();
    for (set, named) in [
        ("train.no_such_key=1", "no_such_key"),
        ("train.g_ema=1.5", "train.g_ema"),
        ("train.augment=[\"blur\"]", "blur"),
        ("model.d_spectral_norm=maybe", "model.d_spectral_norm"),
        ("train.loss=wgan-gp", "second derivatives"),
    ] {
        let o = gantry(&["train", "--set", set, "--out", out_arg]);
        assert_eq!(o.status.code(), Some(2), "{set}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{set}: {}", stderr(&o));
        assert!(!out.exists(), "{set}: a refused setting made the run folder");
    }
    let o = gantry(&["train", "--resume", out_arg, "--set", "train.g_ema=0.9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--set"), "{}", stderr(&o));
}

/// `gantry sample --format npy|png`: N images for other tools, drawn in slices of 500 (N = 1,200
/// crosses two slice boundaries); the .npy is uint8 [N, H, W, C] and its images are the PNG
/// folder's, byte for byte; an existing file is replaced only with --force.
#[test]
fn sample_writes_npy_and_png_folders_that_other_tools_read() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("R");
    common::cli_run(&run, 20, 10);
    let npy = tmp.path().join("s.npy");
    let pngs = tmp.path().join("pngs");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let o = gantry(&["sample", &s(&run), "--format", "npy", "--n", "1200", "--seed", "3", "--out", &s(&npy)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o =
        gantry(&["sample", &s(&run), "--format", "png", "--n", "1200", "--seed", "3", "--out", &s(&pngs)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = fs::read(&npy).unwrap();
    let file = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(file.shape(), &[1200, 28, 28, 1]);
    let values: Vec<u8> = file.into_vec().unwrap();
    assert_eq!(fs::read_dir(&pngs).unwrap().count(), 1200);
    for k in [0usize, 499, 500, 1199] {
        let img = image::open(pngs.join(format!("{k:06}.png"))).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (28, 28));
        assert_eq!(img.as_raw()[..], values[k * 784..(k + 1) * 784], "image {k}");
    }
    // The same seed, the same bytes; an existing file needs --force.
    let o = gantry(&["sample", &s(&run), "--format", "npy", "--n", "1200", "--seed", "3", "--out", &s(&npy)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = gantry(&[
        "sample",
        &s(&run),
        "--format",
        "npy",
        "--n",
        "1200",
        "--seed",
        "3",
        "--out",
        &s(&npy),
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&npy).unwrap(), bytes);
    let o = gantry(&["sample", &s(&run), "--format", "png", "--n", "2", "--out", &s(&pngs)]);
    assert_eq!(o.status.code(), Some(2), "a folder already used needs --force: {}", stderr(&o));
}

/// `--truncation PSI`: the noise resampled within [-PSI, PSI]; the same seed and PSI give the
/// same images, another PSI other ones, and a PSI out of range is refused with exit 2.
#[test]
fn sample_truncation_changes_the_noise_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("R");
    common::cli_run(&run, 20, 10);
    let draw = |name: &str, psi: &str| -> Vec<u8> {
        let out = tmp.path().join(name);
        let o = gantry(&[
            "sample",
            run.to_str().unwrap(),
            "--format",
            "npy",
            "--n",
            "50",
            "--truncation",
            psi,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("truncated to ±{psi}")), "{}", stderr(&o));
        fs::read(out).unwrap()
    };
    let (a, b, c) = (draw("a.npy", "0.5"), draw("b.npy", "0.5"), draw("c.npy", "2"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let x = tmp.path().join("x.png");
    let o = gantry(&["sample", run.to_str().unwrap(), "--truncation", "0", "--out", x.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--truncation"), "{}", stderr(&o));
    assert!(!x.exists());
}

/// `--walk 0,1,2 --steps 5`: two rows of five frames, the first and last frames the seeds' own
/// latents (spherical interpolation between them); a walk needs two seeds or more.
#[test]
fn sample_walks_between_seeds_as_one_png() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("R");
    common::cli_run(&run, 20, 10);
    let out = tmp.path().join("walk.png");
    let r = run.to_str().unwrap();
    let o = gantry(&["sample", r, "--walk", "0,1,2", "--steps", "5", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("walk of 10 frames (5 a row)"), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    // Grid geometry (grid.rs): (tiles * (28 + 2) + 2) * 3 pixels.
    assert_eq!((img.width(), img.height()), ((5 * 30 + 2) * 3, (2 * 30 + 2) * 3));
    // The first frame is seed 0's own first sample (t = 0 is its latent exactly).
    let single = tmp.path().join("single.png");
    let o = gantry(&["sample", r, "--n", "1", "--seed", "0", "--out", single.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let single = image::open(&single).unwrap().to_luma8();
    let walk = img.to_luma8();
    assert_eq!(single.dimensions(), (96, 96));
    for (x, y, p) in single.enumerate_pixels() {
        assert_eq!(walk.get_pixel(x, y), p, "pixel ({x}, {y})");
    }
    let o = gantry(&["sample", r, "--walk", "7", "--out", tmp.path().join("one.png").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = gantry(&["sample", r, "--walk-classes", "--out", tmp.path().join("c.png").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "an unconditional run has no classes: {}", stderr(&o));
}
