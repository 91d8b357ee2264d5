//! `gantry sweep --emit slurm` on a real Slurm: the job array's tasks run their planned runs, and
//! a resubmitted array finds them finished and does nothing. Needs a running Slurm
//! (`scripts/slurm-local.sh` starts a one-node one on localhost; `.ci/run` does, then runs this
//! test with `--ignored`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sbatch_wait(script: &Path) {
    let o = Command::new("sbatch").args(["--wait", s(script)]).output().expect("sbatch on PATH");
    assert!(
        o.status.success(),
        "sbatch: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
#[ignore = "needs a running Slurm: scripts/slurm-local.sh starts one; .ci/run runs this with --ignored"]
fn a_slurm_job_array_runs_the_sweep_and_a_resubmission_does_nothing() {
    // Slurm's jobs run as this user on this machine: the sweep folder must be one they can see.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm-sweep");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let spec = root.join("seeds.toml");
    fs::write(
        &spec,
        "seeds = [0, 1, 2]\n[base]\ntrain.iterations = 60\noutput.sample_interval = 20\neval.every = 0\n",
    )
    .unwrap();
    let sweep = root.join("S");
    let o = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sweep", s(&spec), "--out", s(&sweep), "--emit", "slurm", "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = sweep.join("sweep.sbatch");
    // The job's environment: sbatch passes this process's, GANTRY_DATA included.
    unsafe { std::env::set_var("GANTRY_DATA", common::mnist_dir()) };
    sbatch_wait(&script);
    for seed in 0..3 {
        let run = sweep.join(format!("seed={seed}"));
        let manifest = run.join("weights/manifest.json");
        assert!(
            manifest.is_file(),
            "run {seed} finished; its log: {}",
            fs::read_to_string(sweep.join(format!("logs/task-{seed}.log"))).unwrap_or_default()
        );
        assert_eq!(fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 61);
    }
    let before = fs::metadata(sweep.join("seed=1/weights/manifest.json")).unwrap().modified().unwrap();
    sbatch_wait(&script);
    let log = fs::read_to_string(sweep.join("logs/task-1.log")).unwrap();
    assert!(log.contains("nothing to do"), "{log}");
    assert_eq!(fs::metadata(sweep.join("seed=1/weights/manifest.json")).unwrap().modified().unwrap(), before);
}
