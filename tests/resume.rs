//! Never lose a run: a run stopped anywhere and resumed ends byte-identical to one that never
//! stopped; damaged checkpoints are detected; the architecture cannot change under a resume.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use gantry::checkpoint::{self, RngState};
use gantry::config::Overrides;
use gantry::rng::Streams;
use gantry::run_dir::Existing;
use gantry::train::{self, Options};

/// Files that must come out byte-identical.
const OUTPUTS: [&str; 9] = [
    "metrics.csv",
    "d_loss_real.npy",
    "d_loss_fake.npy",
    "g_loss.npy",
    "d_output.npy",
    "weights/generator.bpk",
    "weights/discriminator.bpk",
    "weights/generator.safetensors",
    "samples/step_000120.png",
];

fn config() -> gantry::Config {
    // 120 iterations, checkpoints (and grids) every 40.
    common::tiny_config(120, 40, 11)
}

fn straight_run(dir: &Path) -> PathBuf {
    let out = dir.join("straight");
    train::train(&config(), &out).unwrap();
    out
}

fn stopped_at(dir: &Path, name: &str, stop: usize) -> PathBuf {
    let out = dir.join(name);
    let options = Options { stop_after: Some(stop), ..Default::default() };
    let outcome = train::start(&config(), &out, Existing::Keep, &options).unwrap();
    assert_eq!(outcome.stopped_at, Some(stop));
    out
}

fn resume(run: &Path) -> train::TrainOutcome {
    train::resume(run, None, &Overrides::default(), &Options::default()).unwrap()
}

fn differing(a: &Path, b: &Path) -> Vec<&'static str> {
    OUTPUTS.into_iter().filter(|f| fs::read(a.join(f)).unwrap() != fs::read(b.join(f)).unwrap()).collect()
}

#[test]
fn resumed_runs_are_byte_identical_to_a_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = straight_run(tmp.path());
    // At the first iteration, mid-way, just before a checkpoint and just after one.
    for stop in [1, 60, 79, 81] {
        let run = stopped_at(tmp.path(), &format!("stop{stop}"), stop);
        let outcome = resume(&run);
        assert_eq!(outcome.resumed_from, Some(stop));
        assert_eq!(outcome.records.len(), 120);
        let diff = differing(&straight, &run);
        assert!(diff.is_empty(), "stopped at {stop} and resumed: {diff:?} differ from the straight run");
    }
}

#[test]
fn control_resume_without_the_random_state_differs() {
    // Proves the test above can fail: forget the data and noise streams' positions.
    let tmp = tempfile::tempdir().unwrap();
    let straight = straight_run(tmp.path());
    let run = stopped_at(tmp.path(), "forgetful", 60);
    let ckpt = run.join("checkpoints/step_000060");
    let state_path = ckpt.join("state.json");
    let mut state: checkpoint::TrainingState =
        serde_json::from_slice(&fs::read(&state_path).unwrap()).unwrap();
    let fresh = Streams::new(11);
    state.rng_data = RngState::capture(&fresh.data);
    state.rng_noise = RngState::capture(&fresh.noise);
    fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    checkpoint::rewrite_manifest(&ckpt).unwrap();
    resume(&run);
    let diff = differing(&straight, &run);
    assert!(diff.contains(&"metrics.csv") && diff.contains(&"weights/generator.bpk"), "{diff:?}");
}

#[test]
fn damaged_newest_checkpoint_falls_back_and_named_one_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = straight_run(tmp.path());
    let run = stopped_at(tmp.path(), "damaged", 100);
    // Checkpoints at 40, 80 and the stop at 100; damage the newest.
    let newest = run.join("checkpoints/step_000100");
    let g = newest.join("generator.bpk");
    let bytes = fs::read(&g).unwrap();
    fs::write(&g, &bytes[..bytes.len() - 10]).unwrap();

    // Named explicitly: an error naming the file, and nothing changes.
    let err = train::resume(&newest, None, &Overrides::default(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("generator.bpk"), "{err}");
    assert_eq!(err.exit_code(), 2);

    // Automatic: falls back to iteration 80 and still ends identical.
    let outcome = resume(&run);
    assert_eq!(outcome.resumed_from, Some(80));
    assert!(differing(&straight, &run).is_empty());
}

#[test]
fn architecture_changes_are_refused_and_extensions_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = stopped_at(tmp.path(), "arch", 50);
    let cfg = tmp.path().join("changed.toml");
    let mut changed = config();
    changed.model.latent_dim = 64;
    changed.model.d_hidden = vec![128];
    fs::write(&cfg, changed.to_toml()).unwrap();
    let err =
        train::resume(&run, Some(&cfg), &Overrides::default(), &Options::default()).unwrap_err().to_string();
    assert!(err.contains("model.latent_dim: 100 -> 64") && err.contains("model.d_hidden"), "{err}");

    // Regression (resume panicked on a key one config leaves out: clusters_per_class is not written
    // at 0): a config file that splits the classes into clusters is refused by name, and the run's
    // files stay as they were.
    let before = fs::read(run.join("config.toml")).unwrap();
    let metrics = fs::read(run.join("metrics.csv")).unwrap();
    let mut clusters = config();
    clusters.model.conditional = gantry::config::Conditioning::Projection;
    clusters.model.clusters_per_class = 2;
    fs::write(&cfg, clusters.to_toml()).unwrap();
    let err =
        train::resume(&run, Some(&cfg), &Overrides::default(), &Options::default()).unwrap_err().to_string();
    assert!(err.contains("model.clusters_per_class: (unset) -> 2"), "{err}");
    assert_eq!(fs::read(run.join("config.toml")).unwrap(), before);
    assert_eq!(fs::read(run.join("metrics.csv")).unwrap(), metrics);

    let longer = Overrides::default().with("train.iterations", 130).unwrap();
    let outcome = train::resume(&run, None, &longer, &Options::default()).unwrap();
    assert_eq!(outcome.records.len(), 130);
    let saved = gantry::Config::from_file(&run.join("config.toml")).unwrap();
    assert_eq!(saved.train.iterations, 130);
}

/// Copy a folder tree (the fixtures are small).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

/// What a PNG holds, apart from how it was compressed: its header (IHDR) and its inflated image
/// data (each row's filter byte and filtered pixels). The compressed bytes depend on the zlib
/// implementation flate2 is built with (zlib-rs since burn-store's PyTorch reader came in), the
/// image does not.
fn png_content(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let (mut at, mut header, mut data) = (8, Vec::new(), Vec::new());
    while at + 12 <= bytes.len() {
        let n = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let (kind, chunk) = (&bytes[at + 4..at + 8], &bytes[at + 8..at + 8 + n]);
        match kind {
            b"IHDR" => header.extend_from_slice(chunk),
            b"IDAT" => data.extend_from_slice(chunk),
            _ => {}
        }
        at += 12 + n;
    }
    flate2::read::ZlibDecoder::new(&data[..]).read_to_end(&mut header).unwrap();
    header
}

/// Runs stopped at iteration 20 by earlier builds, one of each checkpoint format (1 to 5) and
/// kind of network (`tests/fixtures/old_checkpoints/`; its README says which build and how),
/// resumed to 40 by this one with the binary: every output is byte-identical to what the earlier
/// build wrote when it trained 40 iterations without stopping (`after_40.sha256`). The fixtures
/// hold no samples/, plots/ or weights/ folder, so this is also the test of the bug where a
/// resumed run whose folders were removed failed at its first grid.
#[test]
fn checkpoints_of_every_earlier_format_resume_byte_identical() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old_checkpoints");
    let tmp = tempfile::tempdir().unwrap();
    let mut formats = std::collections::BTreeSet::new();
    for fixture in fs::read_dir(&fixtures).unwrap() {
        let fixture = fixture.unwrap().path();
        if !fixture.is_dir() {
            continue;
        }
        let name = fixture.file_name().unwrap().to_string_lossy().to_string();
        let run = tmp.path().join(&name);
        copy_tree(&fixture, &run);
        fs::remove_file(run.join("after_40.sha256")).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["resume", "--iterations", "40", "-q", "--data"])
            .arg(common::mnist_dir())
            .arg(&run)
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let expected = fs::read_to_string(fixture.join("after_40.sha256")).unwrap();
        for line in expected.lines() {
            let (hash, file) = line.split_once("  ").unwrap();
            let bytes = fs::read(run.join(file)).unwrap_or_else(|e| panic!("{name}: {file}: {e}"));
            let bytes = if file.ends_with(".png") { png_content(&bytes) } else { bytes };
            assert_eq!(
                gantry::durable::sha256_hex(&bytes),
                hash,
                "{name}: {file} differs from the earlier build's"
            );
        }
        formats.insert(name[..7].to_string());
    }
    assert_eq!(formats.len(), 5, "one fixture of each format: {formats:?}");
}
