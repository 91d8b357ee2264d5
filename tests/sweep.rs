//! `gantry sweep` and `gantry compare` through the real binary: a sweep killed outright, and one of
//! its jobs killed, ends with every run identical to a straight run of it and no finished run
//! trained again; bad specs are refused before anything runs; the Slurm script's tasks and the
//! Kubernetes manifest; the comparison's files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn gantry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gantry"));
    c.env("GANTRY_DATA", common::mnist_dir());
    c
}

fn out(args: &[&str]) -> Output {
    gantry().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 2 batch sizes x 2 seeds of a short classic run (the fast path: the test stays short).
fn write_spec(dir: &Path, iterations: usize) -> PathBuf {
    let spec = dir.join("order.toml");
    fs::write(
        &spec,
        format!(
            "seeds = [0, 1]\n[base]\ntrain.iterations = {iterations}\noutput.sample_interval = 50\n\
             eval.every = 0\n[axes]\n\"train.batch_size\" = [8, 16]\n"
        ),
    )
    .unwrap();
    spec
}

const RUNS: [&str; 4] =
    ["batch_size=8_seed=0", "batch_size=8_seed=1", "batch_size=16_seed=0", "batch_size=16_seed=1"];

fn rows(run: &Path) -> usize {
    fs::read_to_string(run.join("metrics.csv")).map(|t| t.lines().count().saturating_sub(1)).unwrap_or(0)
}

/// The PID holding a run folder's lock (its file names the holder while it is held).
fn holder(run: &Path) -> Option<u32> {
    fs::read_to_string(run.join(".lock")).ok()?.trim().parse().ok()
}

fn wait_until(what: &str, child: &mut Child, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before {what}");
        assert!(t0.elapsed() < Duration::from_secs(180), "no progress towards {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_sweep(spec: &Path, sweep: &Path) -> Child {
    gantry()
        .args(["sweep", s(spec), "--out", s(sweep), "--jobs", "2", "--threads", "1", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_sweep_killed_outright_and_a_job_killed_end_like_straight_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), 300);
    let sweep = tmp.path().join("S");

    // SIGKILL the sweep once its first runs are under way: its jobs checkpoint and stop.
    let mut child = start_sweep(&spec, &sweep);
    wait_until("a run's first checkpoint", &mut child, || RUNS.iter().any(|r| rows(&sweep.join(r)) > 120));
    child.kill().unwrap();
    child.wait().unwrap();

    // Again; this time SIGKILL one of its jobs, which the sweep resumes.
    let mut child = start_sweep(&spec, &sweep);
    let mut victim = None;
    wait_until("a job to kill", &mut child, || {
        victim =
            RUNS.iter().map(|r| sweep.join(r)).find(|r| rows(r) > 20 && rows(r) < 250 && holder(r).is_some());
        victim.is_some()
    });
    let victim = victim.unwrap();
    let pid = holder(&victim).unwrap();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "the sweep ends well: {status}");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(sweep.join("sweep.json")).unwrap()).unwrap();
    for r in state["runs"].as_array().unwrap() {
        assert_eq!(r["status"], "finished", "{r}");
    }

    // Each run equals the same run trained straight through (`sweep run --task`, no kills).
    let straight = tmp.path().join("straight");
    for i in 0..RUNS.len() {
        let o = out(&[
            "sweep",
            "run",
            s(&spec),
            "--out",
            s(&straight),
            "--task",
            &i.to_string(),
            "--threads",
            "1",
            "-q",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for run in RUNS {
        for f in ["metrics.csv", "weights/generator.safetensors"] {
            assert!(
                fs::read(straight.join(run).join(f)).unwrap() == fs::read(sweep.join(run).join(f)).unwrap(),
                "{run}/{f} differs from the straight run"
            );
        }
    }

    // A finished sweep is not trained again.
    let before: Vec<_> = RUNS
        .iter()
        .map(|r| fs::metadata(sweep.join(r).join("weights/manifest.json")).unwrap().modified().unwrap())
        .collect();
    let o = out(&["sweep", s(&spec), "--out", s(&sweep), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("4 finished already"), "{}", stderr(&o));
    let after: Vec<_> = RUNS
        .iter()
        .map(|r| fs::metadata(sweep.join(r).join("weights/manifest.json")).unwrap().modified().unwrap())
        .collect();
    assert_eq!(before, after);

    // Compared: two groups of two seeds, each file written.
    let o = out(&["compare", s(&sweep)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("[1] batch_size=8 (2 runs)") && table.contains("[2] batch_size=16 (2 runs)"),
        "{table}"
    );
    for f in [
        "compare.csv",
        "compare-runs.csv",
        "compare.json",
        "compare.html",
        "compare-curves.png",
        "compare-curves.svg",
    ] {
        assert!(sweep.join("compare").join(f).is_file(), "{f}");
    }
    let csv = fs::read_to_string(sweep.join("compare/compare.csv")).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("batch_size=16,16,acc,2,")), "{csv}");
}

#[test]
fn bad_specs_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("[axes]\n\"train.lossy\" = [\"ns\"]", "train.lossy"),
        ("[axes]\n\"train.loss\" = []", "train.loss"),
        ("[axes]\n\"train.batch_size\" = [\"big\"]", "train.batch_size"),
        (
            "combine = \"zip\"\n[axes]\n\"train.loss\" = [\"ns\", \"hinge\"]\n\"train.d_steps\" = [1]",
            "train.d_steps",
        ),
        ("[axes]\n\"train.loss\" = [\"ns\", \"hinge\"]\n\"train.real_label\" = [0.9]", "train.real_label"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let spec = tmp.path().join(format!("bad{i}.toml"));
        fs::write(&spec, text).unwrap();
        let sweep = tmp.path().join(format!("S{i}"));
        let o = out(&["sweep", s(&spec), "--out", s(&sweep)]);
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{text}: {}", stderr(&o));
        assert!(!sweep.exists(), "nothing was made for {text}");
    }
    // A folder of other files is not taken for a sweep.
    let spec = write_spec(tmp.path(), 10);
    let mine = tmp.path().join("mine");
    fs::create_dir_all(&mine).unwrap();
    fs::write(mine.join("notes.txt"), "x").unwrap();
    let o = out(&["sweep", s(&spec), "--out", s(&mine)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(fs::read_dir(&mine).unwrap().count(), 1);
}

#[test]
fn slurm_tasks_run_their_runs_and_a_resubmitted_task_does_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), 40);
    let sweep = tmp.path().join("S");
    let o = out(&["sweep", s(&spec), "--out", s(&sweep), "--emit", "slurm", "--threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = sweep.join("sweep.sbatch");
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-3\n"), "{text}");
    // The script as a Slurm array task runs it: task 2 is planned run 2.
    let task = |i: &str| {
        Command::new("bash")
            .arg(&script)
            .env("SLURM_ARRAY_TASK_ID", i)
            .env("SLURM_CPUS_PER_TASK", "1")
            .env("GANTRY_DATA", common::mnist_dir())
            .output()
            .unwrap()
    };
    let o = task("2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rows(&sweep.join(RUNS[2])), 40);
    assert!(!sweep.join(RUNS[0]).exists() && !sweep.join(RUNS[3]).exists());
    let o = task("2");
    assert!(o.status.success() && stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    let o = task("4");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--task"), "{}", stderr(&o));

    let o = out(&["sweep", s(&spec), "--out", s(&sweep), "--emit", "k8s", "--image", "example/gantry:1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let k8s = fs::read_to_string(sweep.join("sweep-k8s.yaml")).unwrap();
    assert!(k8s.contains("completions: 4") && k8s.contains("$(JOB_COMPLETION_INDEX)"), "{k8s}");
    // The listing knows what is done.
    let o = out(&["sweep", s(&spec), "--out", s(&sweep), "--dry-run"]);
    let listing = String::from_utf8_lossy(&o.stdout);
    let line = |run: &str| {
        listing
            .lines()
            .find(|l| l.contains(run))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(line(RUNS[2]).ends_with(&format!("{} 40 iterations finished", RUNS[2])), "{listing}");
    assert!(line(RUNS[0]).ends_with(&format!("{} 40 iterations to start", RUNS[0])), "{listing}");
}
