//! The real binary killed with SIGKILL at random moments, resumed each time, ends identical to a
//! straight run, for the classic preset and for every objective with the stabilizers; SIGTERM
//! checkpoints and exits with the documented code; one writer per run.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

const ITERATIONS: &str = "300";

fn gantry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gantry"));
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn start(out: &Path) -> Child {
    let data = common::mnist_dir();
    gantry()
        .args([
            "train",
            "-q",
            "--threads",
            "2",
            "--seed",
            "4",
            "--sample-interval",
            "25",
            "--iterations",
            ITERATIONS,
            "--eval-every",
            "0",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(out)
        .spawn()
        .unwrap()
}

fn resume(run: &Path) -> Child {
    gantry().args(["train", "-q", "--resume"]).arg(run).spawn().unwrap()
}

fn rows(run: &Path) -> usize {
    fs::read_to_string(run.join("metrics.csv")).map(|t| t.lines().count().saturating_sub(1)).unwrap_or(0)
}

fn wait_for_rows(run: &Path, n: usize, child: &mut Child) {
    let t0 = Instant::now();
    while rows(run) < n {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {n} rows");
        assert!(t0.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    assert!(start(&straight).wait().unwrap().success());

    let run = tmp.path().join("killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut child = start(&run);
    let mut kills = 0;
    loop {
        let delay = Duration::from_millis(rng.random_range(50..2500));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        child = resume(&run);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "final resume failed: {status}");
    assert!(kills >= 3, "only {kills} kills landed; the test did not test much");
    eprintln!("survived {kills} SIGKILLs");
    for f in [
        "metrics.csv",
        "g_loss.npy",
        "d_loss_real.npy",
        "weights/generator.bpk",
        "weights/generator.safetensors",
    ] {
        assert!(
            fs::read(straight.join(f)).unwrap() == fs::read(run.join(f)).unwrap(),
            "{f} differs after {kills} kills"
        );
    }
}

#[test]
fn sigterm_checkpoints_the_last_logged_step_and_a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut child = start(&run);
    wait_for_rows(&run, 40, &mut child);

    // While it runs, a second writer is refused.
    let second = gantry().stderr(Stdio::piped()).args(["train", "--resume"]).arg(&run).output().unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGTERM must checkpoint and exit 130");
    let logged = rows(&run);
    let newest = gantry::checkpoint::list(&run.join("checkpoints")).unwrap()[0].0;
    assert_eq!(newest, logged, "the checkpoint holds the last logged step");
    assert!(resume(&run).wait().unwrap().success());
    assert_eq!(rows(&run), 300);
}

/// Each objective (with spectral norm, G's moving average, DiffAugment, a small dcgan with dropout
/// and the simultaneous step, and a conditional mlp among them), trained by
/// the binary from a config file, SIGKILLed after its first checkpoint and resumed, ends with the
/// bytes of a straight run.
#[test]
fn a_sigkilled_run_of_each_objective_resumes_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("ns-ema", "loss = \"ns\"\ng_ema = 0.99", ""),
        ("minimax", "loss = \"minimax\"\nd_update = \"joint\"", ""),
        ("lsgan-augment", "loss = \"lsgan\"\naugment = [\"translation\", \"cutout\"]", ""),
        ("hinge-sn-ema", "loss = \"hinge\"\ng_ema = 0.999", "d_spectral_norm = true"),
        ("wgan-sn", "loss = \"wgan\"\nd_steps = 3", "d_spectral_norm = true"),
        (
            "dcgan-tf-small",
            "order = \"simultaneous\"\nd_update = \"joint\"\nbatch_size = 16",
            "kind = \"dcgan\"\ng_channels = [16, 8]\nd_channels = [8, 16]\nd_dropout = 0.3",
        ),
        // Conditional: the classes asked of G come from their own stream, saved in checkpoints.
        ("ns-concat", "loss = \"ns\"", "conditional = \"concat\""),
    ];
    for (name, train, model) in cases {
        let config = tmp.path().join(format!("{name}.toml"));
        let text = format!(
            "[train]\n{train}\niterations = 100\nseed = 5\nthreads = 2\n[model]\n{model}\n\
             [output]\nsample_interval = 20\n[checkpoint]\nevery = 20\n[eval]\nevery = 0\n"
        );
        fs::write(&config, text).unwrap();
        let run_with = |out: &Path| {
            gantry()
                .args(["train", "-q", "--config"])
                .arg(&config)
                .arg("--data")
                .arg(common::mnist_dir())
                .arg("--out")
                .arg(out)
                .spawn()
                .unwrap()
        };
        let straight = tmp.path().join(format!("{name}-straight"));
        assert!(run_with(&straight).wait().unwrap().success(), "{name}");
        let killed = tmp.path().join(format!("{name}-killed"));
        let mut child = run_with(&killed);
        // After the first checkpoint's rows, before the end.
        wait_for_rows(&killed, 30, &mut child);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(rows(&killed) < 100, "{name}: the run ended before the kill");
        assert!(resume(&killed).wait().unwrap().success(), "{name}: the resume failed");
        for f in
            ["metrics.csv", "weights/generator.bpk", "weights/discriminator.bpk", "samples/step_000100.png"]
        {
            assert!(
                fs::read(straight.join(f)).unwrap() == fs::read(killed.join(f)).unwrap(),
                "{name}: {f} differs after a SIGKILL and a resume"
            );
        }
    }
}
