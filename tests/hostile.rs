//! What a hostile test of the command line found, each case pinned by a test named after it: no
//! user file is ever lost, every size from a file or flag is checked before it is used, and bad
//! input exits 2 with a message naming the file or flag (README "Exit codes").

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gantry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("GANTRY_DATA", common::mnist_dir())
        .env("GANTRY_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("judge-cache"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A finished run of `iterations` with grids and checkpoints every 50 (the issue's `R`).
fn run_folder(dir: &Path, name: &str, iterations: usize) -> PathBuf {
    let out = dir.join(name);
    common::cli_run(&out, iterations, 50);
    out
}

#[test]
fn resume_without_checkpoints_never_wipes_the_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 200);
    assert!(gantry(&["report", s(&run)]).status.success());
    fs::write(run.join("NOTES.txt"), "notes").unwrap();
    for entry in fs::read_dir(run.join("checkpoints")).unwrap() {
        fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let before = common::files_under(&run);
    let o = gantry(&["resume", s(&run), "--iterations", "100", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no checkpoint") && stderr(&o).contains("nothing was changed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        common::files_under(&run),
        before,
        "NOTES.txt, report.html and the metrics rows are all still there"
    );
}

#[test]
fn force_never_empties_a_folder_that_is_not_a_gantry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("D");
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(d.join("thesis.tex"), "x").unwrap();
    let o = gantry(&["train", "--out", s(&d), "--force", "--iterations", "20", "--eval-every", "0", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a gantry run folder"), "{}", stderr(&o));
    assert!(d.join("thesis.tex").is_file() && d.join("sub").is_dir());
    // The current folder is never replaced, even when it is a run.
    let run = run_folder(tmp.path(), "R", 20);
    let o = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["train", "--out", ".", "--force", "--iterations", "20", "--eval-every", "0", "-q"])
        .current_dir(&run)
        .env("GANTRY_DATA", common::mnist_dir())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("current folder"), "{}", stderr(&o));
    // A real run is replaced, and a file of the user's in it is kept.
    fs::write(run.join("NOTES.txt"), "mine").unwrap();
    let o = gantry(&["train", "--out", s(&run), "--force", "--iterations", "10", "--eval-every", "0", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("kept 1 entries") && stderr(&o).contains("NOTES.txt"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(run.join("NOTES.txt")).unwrap(), "mine");
    assert_eq!(fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 11);
}

#[test]
fn a_model_too_large_for_the_machine_exits_2_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("huge.toml");
    fs::write(&cfg, "[model]\ng_hidden = [65536, 65536]\n").unwrap();
    let out = tmp.path().join("run");
    let o = gantry(&["train", "--config", s(&cfg), "--out", s(&out), "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("GiB") && stderr(&o).contains("g_hidden"), "{}", stderr(&o));
    assert!(!out.exists(), "no half-made run folder");
    let o = gantry(&[
        "bench",
        "--config",
        s(&cfg),
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--batch",
        "32",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bad_config_files_exit_2_and_never_block() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.toml");
    fs::write(&garbage, vec![0xffu8; 5000]).unwrap();
    let fifo = tmp.path().join("fifo.toml");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for path in [garbage, tmp.path().to_path_buf(), tmp.path().join("missing.toml"), fifo, "/dev/zero".into()]
    {
        let o = gantry(&["train", "--config", s(&path), "--out", s(&tmp.path().join("r")), "-q"]);
        assert_eq!(o.status.code(), Some(2), "{}: {}", path.display(), stderr(&o));
        assert!(stderr(&o).contains(s(&path)), "{}", stderr(&o));
    }
    assert!(!tmp.path().join("r").exists());
}

#[test]
fn eval_checkpoint_verifies_the_manifest_and_names_a_missing_step() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 100);
    let ckpt = run.join("checkpoints/step_000100/generator.bpk");
    let mut bytes = fs::read(&ckpt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&ckpt, bytes).unwrap();
    let o = gantry(&["eval", s(&run), "--checkpoint", "100", "--n", "100"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("generator.bpk") && stderr(&o).contains("checksum"), "{}", stderr(&o));
    let o = gantry(&["eval", s(&run), "--checkpoint", "999", "--n", "100"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no checkpoint after 999")
            && err.contains("50, 100")
            && !err.contains("did the run finish"),
        "{err}"
    );
    // The sample count is checked before anything is loaded, and named as the flag it is.
    let o = gantry(&["eval", s(&run), "--n", "1000000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--n:") && !stderr(&o).contains("config key"), "{}", stderr(&o));
}

#[test]
fn damaged_final_weights_are_refused_by_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 20);
    let weights = run.join("weights/generator.bpk");
    let good = fs::read(&weights).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 5;
    bad[last] ^= 0x10;
    fs::write(&weights, &bad).unwrap();
    let o = gantry(&["sample", s(&run), "--out", s(&tmp.path().join("g.png"))]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("generator.bpk") && stderr(&o).contains("checksum"), "{}", stderr(&o));
    fs::remove_file(&weights).unwrap();
    let o = gantry(&["sample", s(&run), "--out", s(&tmp.path().join("g.png"))]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    fs::write(&weights, &good).unwrap();
    // A deleted manifest is no reason to trust the weights of a run whose format always writes one.
    let manifest = run.join("weights/manifest.json");
    let kept = fs::read(&manifest).unwrap();
    fs::remove_file(&manifest).unwrap();
    let o = gantry(&["sample", s(&run), "--out", s(&tmp.path().join("g.png"))]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot be verified") && stderr(&o).contains("manifest.json"),
        "{}",
        stderr(&o)
    );
    fs::write(&manifest, kept).unwrap();
    // An existing folder as --out: refused up front, nothing left behind.
    let folder = tmp.path().join("grid.png");
    fs::create_dir(&folder).unwrap();
    let o = gantry(&["sample", s(&run), "--out", s(&folder)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!tmp.path().join("grid.png.partial").exists());
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2, "only R and grid.png/");
}

#[test]
fn a_stray_entry_in_checkpoints_never_blocks_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_folder(tmp.path(), "R", 200);
    // A run stopped at 100 by a (simulated) kill, with a file where the next checkpoint goes and a
    // file with the temporary prefix.
    for step in [150, 200] {
        fs::remove_dir_all(out.join(format!("checkpoints/step_{step:06}"))).unwrap();
    }
    fs::remove_file(out.join("weights/manifest.json")).unwrap();
    fs::write(out.join("checkpoints/step_000150"), "mine").unwrap();
    fs::write(out.join("checkpoints/.tmp-notes"), "mine too").unwrap();
    let o = gantry(&["resume", s(&out), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("step_000150") && err.contains("moved to"), "{err}");
    assert!(out.join("checkpoints/step_000150").is_dir());
    assert_eq!(fs::read_to_string(out.join("checkpoints/step_000150.aside-1")).unwrap(), "mine");
    assert_eq!(fs::read_to_string(out.join("checkpoints/.tmp-notes")).unwrap(), "mine too");
}

#[test]
fn a_failed_resume_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 100);
    let metrics = run.join("metrics.csv");
    let text = fs::read_to_string(&metrics).unwrap();
    fs::write(&metrics, &text[..text.len() / 2]).unwrap();
    let before = common::files_under(&run);
    let o = gantry(&["resume", s(&run), "--iterations", "300", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("metrics.csv"), "{}", stderr(&o));
    assert_eq!(common::files_under(&run), before, "config.toml still says 100 iterations");
    // A missing metrics.csv and a garbage config.toml are bad input too.
    fs::remove_file(&metrics).unwrap();
    let o = gantry(&["resume", s(&run), "--iterations", "300", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    fs::write(run.join("config.toml"), "[[[").unwrap();
    let o = gantry(&["resume", s(&run), "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("config.toml"), "{}", stderr(&o));
}

#[test]
fn bench_threads_are_bounded_like_train() {
    let o = gantry(&["bench", "--threads", "100000", "--iterations", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--threads"), "{}", stderr(&o));
    let o = gantry(&["train", "--threads", "100000", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Leave `run` as a kill before its first checkpoint (due at 50) leaves it: no checkpoint, no
/// final weights, and the metrics file cut to `metrics` (its first bytes).
fn as_killed_before_the_first_checkpoint(run: &Path, metrics: impl Fn(&str) -> Option<String>) {
    for dir in ["checkpoints", "weights"] {
        if run.join(dir).exists() {
            fs::remove_dir_all(run.join(dir)).unwrap();
        }
    }
    let text = fs::read_to_string(run.join("metrics.csv")).unwrap();
    match metrics(&text) {
        Some(cut) => fs::write(run.join("metrics.csv"), cut).unwrap(),
        None => fs::remove_file(run.join("metrics.csv")).unwrap(),
    }
}

fn first_lines(text: &str, n: usize) -> String {
    text.split_inclusive('\n').take(n).collect()
}

fn resume_from_inside(run: &Path) -> Output {
    // From inside the run folder, as `gantry resume .`: no --force rule applies to a resume.
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["resume", ".", "--iterations", "60", "-q"])
        .current_dir(run)
        .env("GANTRY_DATA", common::mnist_dir())
        .output()
        .unwrap()
}

#[test]
fn a_run_killed_before_its_first_checkpoint_starts_again_keeping_the_users_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 100);
    // A kill at iteration 30: 30 rows.
    as_killed_before_the_first_checkpoint(&run, |t| Some(first_lines(t, 31)));
    fs::write(run.join("NOTES.txt"), "notes").unwrap();
    let o = resume_from_inside(&run);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped before its first checkpoint"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 61);
    assert_eq!(fs::read_to_string(run.join("NOTES.txt")).unwrap(), "notes");
}

/// CI found these: the kill test's resume refused (exit 2) a run killed after the rows of its
/// first checkpoint's step were flushed but before the checkpoint was written (rows == the step),
/// and one killed before its header reached the disk (an empty or missing metrics file).
#[test]
fn a_run_killed_between_its_first_checkpoints_rows_and_files_or_before_any_row_starts_again() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 100);
    type Cut = fn(&str) -> Option<String>;
    let cases: [(&str, Cut); 4] = [
        ("the 50 rows of the first checkpoint's step", |t| Some(first_lines(t, 51))),
        ("a header only", |t| Some(first_lines(t, 1))),
        ("half a header", |t| Some(t[..10].to_string())),
        ("no metrics file", |_| None),
    ];
    for (case, metrics) in cases {
        as_killed_before_the_first_checkpoint(&run, metrics);
        let o = resume_from_inside(&run);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        assert!(stderr(&o).contains("stopped before its first checkpoint"), "{case}: {}", stderr(&o));
        assert_eq!(fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 61, "{case}");
    }
    // One row past the first checkpoint's step is a run that lost its checkpoints: refused.
    as_killed_before_the_first_checkpoint(&run, |t| Some(first_lines(t, 52)));
    let before = common::files_under(&run);
    let o = resume_from_inside(&run);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(common::files_under(&run), before, "nothing was changed");
}

#[test]
fn checkpoint_pruning_never_deletes_a_folder_holding_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 200);
    let notebook = run.join("checkpoints/step_000100/analysis.ipynb");
    fs::write(&notebook, "{}").unwrap();
    let o = gantry(&["resume", s(&run), "--iterations", "400", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&notebook).unwrap(), "{}", "the folder with the notebook stays");
    for gone in [150, 250] {
        assert!(!run.join(format!("checkpoints/step_{gone:06}")).exists(), "step {gone} pruned");
    }
    // The newest three, and the one the run resumed from.
    for kept in [200, 300, 350, 400] {
        assert!(run.join(format!("checkpoints/step_{kept:06}")).is_dir(), "step {kept} kept");
    }
}

#[test]
fn sample_refuses_a_hand_edited_model_too_large_for_the_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 10);
    let config = fs::read_to_string(run.join("config.toml")).unwrap();
    let edited =
        config.replace("g_hidden = [\n    256,\n    512,\n    1024,\n]", "g_hidden = [65536, 65536]");
    assert_ne!(edited, config, "the config's g_hidden line was found");
    fs::write(run.join("config.toml"), edited).unwrap();
    let o = gantry(&["sample", s(&run)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("GiB"), "{}", stderr(&o));
}

// ---- The probe of the newer surfaces (sweeps, image folders, sample/eval outputs, signals) ----

/// `cmd` run with its own current folder, as [`gantry`] runs it.
fn gantry_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(dir)
        .env("GANTRY_DATA", common::mnist_dir())
        .output()
        .unwrap()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Wait for `child` at most `limit`; kill it (and fail) when it is still running then.
fn wait_at_most(child: &mut std::process::Child, limit: std::time::Duration, what: &str) -> Option<i32> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn sample_and_eval_never_write_over_a_runs_files_or_an_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 20);
    let before = common::files_under(&run);
    for (args, flag) in [
        (vec!["sample", s(&run), "--out", "R/weights/generator.bpk", "--force"], "--out"),
        (vec!["sample", s(&run), "--out", "R/config.toml"], "--out"),
        (vec!["sample", s(&run), "--out", "R/samples/step_000020.png"], "--out"),
        (vec!["eval", s(&run), "--json", "R/metrics.csv", "--force"], "--json"),
        (vec!["report", s(&run), "--out", "R/run.json"], "--out"),
    ] {
        let o = gantry_in(tmp.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag) && stderr(&o).contains("never writes over it"), "{}", stderr(&o));
    }
    assert_eq!(common::files_under(&run), before, "the run is as it was");
    // A file of the user's is replaced only with --force.
    let mine = tmp.path().join("mine.png");
    fs::write(&mine, "my picture").unwrap();
    let o = gantry(&["sample", s(&run), "--out", s(&mine)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&mine).unwrap(), "my picture");
    let o = gantry(&["sample", s(&run), "--out", s(&mine), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The default file is the command's own: drawn twice, replaced.
    for _ in 0..2 {
        assert!(gantry(&["sample", s(&run)]).status.success());
    }
}

#[test]
fn force_never_takes_a_folder_with_only_a_config_that_parses_for_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("D");
    fs::create_dir_all(&d).unwrap();
    for (name, text) in
        [("config.toml", ""), ("metrics.csv", "mine"), ("report.html", "mine"), ("run.json", "{}")]
    {
        fs::write(d.join(name), text).unwrap();
    }
    let before = common::files_under(&d);
    let o = gantry(&["train", "--out", s(&d), "--force", "--iterations", "5", "--eval-every", "0", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a gantry run folder"), "{}", stderr(&o));
    assert_eq!(common::files_under(&d), before);
}

#[test]
fn a_resume_refuses_a_hand_edited_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), "R", 100);
    let config = fs::read_to_string(run.join("config.toml")).unwrap();
    let edited = config.replace("seed = 0\n", "seed = 5\n");
    assert_ne!(edited, config, "the config's seed line was found");
    fs::write(run.join("config.toml"), &edited).unwrap();
    let before = common::files_under(&run);
    let o = gantry(&["resume", s(&run), "--iterations", "200", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("train.seed = 5") && stderr(&o).contains("written with train.seed = 0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(common::files_under(&run), before, "nothing was changed");
}

#[test]
fn one_sigterm_ends_a_command_outside_the_training_loop() {
    // The bug: the handler only raised a flag the loop would read, so a signal while the data
    // were read (a FIFO named x.png) or the judge trained waited for that to end, or forever.
    // Training the judge on an empty cache takes minutes: the signal lands there.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("R");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["train", "--iterations", "50", "--eval-every", "10", "-q", "--out", s(&out)])
        .env("GANTRY_DATA", common::mnist_dir())
        .env("GANTRY_CACHE_DIR", tmp.path().join("empty-cache"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let code = wait_at_most(&mut child, std::time::Duration::from_secs(30), "train after one SIGTERM");
    assert_eq!(code, Some(130));
    assert!(!out.exists(), "stopped before the run folder was made");
}

#[test]
fn eval_samples_that_are_missing_fifos_or_dangling_links_exit_2_and_never_block() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("samples.npy");
    mkfifo(&fifo);
    let pngs = tmp.path().join("pngs");
    fs::create_dir_all(&pngs).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere.png"), pngs.join("gone.png")).unwrap();
    let fifo_pngs = tmp.path().join("fifo-pngs");
    fs::create_dir_all(&fifo_pngs).unwrap();
    mkfifo(&fifo_pngs.join("x.png"));
    for path in [tmp.path().join("missing.npy"), fifo, pngs, fifo_pngs, "/dev/zero".into()] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["eval", "--samples", s(&path)])
            .env("GANTRY_DATA", common::mnist_dir())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let code = wait_at_most(&mut child, std::time::Duration::from_secs(30), s(&path));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(code, Some(2), "{}: {err}", path.display());
        assert!(err.contains(path.file_name().unwrap().to_str().unwrap()) || err.contains(s(&path)), "{err}");
    }
}

#[test]
fn sweeps_named_dot_dot_or_planning_a_billion_runs_are_refused_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    // The user's own files where a sweep named `..` would write.
    let home = tmp.path().join("home");
    let work = home.join("work");
    fs::create_dir_all(work.join("logs")).unwrap();
    fs::write(home.join("sweep.json"), "mine").unwrap();
    fs::write(work.join("dots.toml"), "name = \"..\"\n[base]\ntrain.iterations = 5\n").unwrap();
    let before = common::files_under(&home);
    for args in [["sweep", "dots.toml", "--jobs", "1"], ["sweep", "dots.toml", "--dry-run", "-q"]] {
        let o = gantry_in(&work, &args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("current folder or one above"), "{}", stderr(&o));
    }
    assert_eq!(common::files_under(&home), before);
    // Three axes of 1,000 values: counted, not built (this aborted at 4 GB).
    let axis = format!("[{}]", (1..=1000).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    let spec = tmp.path().join("huge.toml");
    fs::write(
        &spec,
        format!("[axes]\n\"train.iterations\" = {axis}\n\"output.sample_interval\" = {axis}\n\"eval.every\" = {axis}\n"),
    )
    .unwrap();
    let o = gantry(&["sweep", s(&spec), "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("1000000000 runs"), "{}", stderr(&o));
    // A TOML error on a 200 KB line is not echoed whole.
    fs::write(&spec, format!("name = \"a\" {}\n", "x".repeat(200_000))).unwrap();
    let o = gantry(&["sweep", s(&spec), "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stderr.len() < 2000, "{} bytes of stderr", o.stderr.len());
}

#[test]
fn a_second_sweep_on_a_folder_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("two.toml");
    fs::write(&spec, "seeds = [0, 1]\n[base]\ntrain.iterations = 5\neval.every = 0\n").unwrap();
    let folder = tmp.path().join("S");
    fs::create_dir_all(&folder).unwrap();
    // What a first `gantry sweep` holds while it runs.
    let held = gantry::lock::RunLock::acquire(&folder).unwrap();
    let o = gantry(&["sweep", s(&spec), "--out", s(&folder), "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("in use by another gantry sweep"), "{}", stderr(&o));
    assert!(!folder.join("sweep.json").exists(), "the second sweep wrote nothing");
    drop(held);
    let o = gantry(&["sweep", s(&spec), "--out", s(&folder), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
