//! What a newcomer tripped on, pinned: a run remembers its data, resuming a finished run changes
//! nothing, training prints progress lines into a log, `gantry sample` writes into the run.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The binary with the data found through $GANTRY_DATA, as the README's first command runs it.
fn with_data_env(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("GANTRY_DATA", common::mnist_dir())
        .output()
        .unwrap()
}

/// The binary with no $GANTRY_DATA and an empty user cache: only what the run remembers helps.
fn without_data_env(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env_remove("GANTRY_DATA")
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("HOME", home)
        .output()
        .unwrap()
}

#[test]
fn a_run_remembers_its_data_for_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("R");
    common::cli_run(&run, 100, 50);
    let o = without_data_env(&["resume", s(&run), "--iterations", "150", "-q"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 151);
    // `gantry resume` takes --data like `train` does.
    let o = without_data_env(
        &["resume", s(&run), "--iterations", "200", "--data", s(&common::mnist_dir()), "-q"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Other data than the run's is refused, and the run is left as it was.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let images =
        fs::read(gantry::data::find_file(&common::mnist_dir(), "train-images-idx3-ubyte").unwrap()).unwrap();
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&images[..]), &mut decoded)
        .unwrap_or_default();
    if decoded.is_empty() {
        decoded = images;
    }
    decoded[100] ^= 0xff; // one pixel of one image
    fs::write(other.join("train-images-idx3-ubyte"), decoded).unwrap();
    let before = common::files_under(&run);
    let o =
        without_data_env(&["resume", s(&run), "--iterations", "250", "--data", s(&other), "-q"], tmp.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not the data this run was trained on"), "{}", stderr(&o));
    assert_eq!(common::files_under(&run), before);
}

#[test]
fn resuming_a_finished_run_changes_nothing_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("R");
    common::cli_run(&run, 60, 30);
    let before = common::files_under(&run);
    let o = with_data_env(&["resume", s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("is complete (60 iterations)") && err.contains("--iterations 120"), "{err}");
    assert!(!err.contains("taking over the lock"), "a cleanly finished run left no lock to take over: {err}");
    assert_eq!(
        common::files_under(&run),
        before,
        "run.json, metrics.csv, the .npy files, the GIF and the events are untouched"
    );
}

#[test]
fn training_prints_progress_lines_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("R");
    // stderr is a pipe here, as in a log file or a notebook cell.
    let o = with_data_env(&[
        "train",
        "--iterations",
        "40",
        "--sample-interval",
        "20",
        "--eval-every",
        "0",
        "--out",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("iteration 40/40"))
        .unwrap_or_else(|| panic!("no progress line:\n{err}"));
    assert!(line.contains("ms/iteration") && line.contains("ETA") && line.contains("G loss"), "{line}");
    let o = with_data_env(&[
        "train",
        "--iterations",
        "40",
        "--eval-every",
        "0",
        "--out",
        s(&tmp.path().join("Q")),
        "-q",
    ]);
    assert!(!stderr(&o).contains("iteration 40/40"), "-q prints no progress: {}", stderr(&o));
    // The summary lists every output.
    let summary = String::from_utf8_lossy(&o.stdout);
    for name in ["metrics.csv", "timelapse.gif", "weights/", "events.out.tfevents", "run.json"] {
        assert!(summary.contains(name), "summary lacks {name}:\n{summary}");
    }
}

#[test]
fn sample_without_out_writes_into_the_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("R");
    common::cli_run(&run, 10, 200);
    let o = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sample", s(&run), "--n", "9", "--seed", "4"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("sample-seed4.png").is_file());
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1, "nothing in the current folder");
}
