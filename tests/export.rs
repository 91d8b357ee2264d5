//! `gantry export`: a run's generator as ONNX, checked by onnx's own checker and run in
//! onnxruntime (the `onnx` and `onnxruntime` Python packages; `.ci/run` installs them with
//! TensorBoard's reader and names that Python in `GANTRY_PYTHON`). Its images agree with gantry's
//! own forward pass on the same noise within 1e-5, for the classic preset's networks, the dcgan
//! preset's (self-conditioned: a projection D, G asked for clusters) and cdcgan's (classes split
//! into clusters).

mod common;

use std::path::Path;
use std::process::Command;

use gantry::config::Config;
use gantry::run_dir::RunDir;
use gantry::sample::{LoadedGenerator, Weights};

fn python() -> String {
    std::env::var("GANTRY_PYTHON")
        .or_else(|_| std::env::var("GANTRY_TB_PYTHON"))
        .unwrap_or_else(|_| "python3".into())
}

/// `preset`'s networks trained for a few iterations into `out`.
fn trained(preset: &str, out: &Path) {
    let mut c = Config::preset(preset).unwrap();
    c.data.dir = Some(common::mnist_dir());
    c.train.iterations = 3;
    c.train.threads = 2;
    c.output.sample_interval = 3;
    c.eval.every = 0;
    gantry::train::train(&c, out).unwrap();
}

fn gantry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry")).args(args).output().unwrap()
}

fn raw<T: Copy>(values: &[T], to_le: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

/// Export `run`, run the file in onnxruntime on 5 rows of noise (and ids), and compare with
/// gantry's forward pass; returns what the Python side saw.
fn exported_agrees(run: &Path, tmp: &Path) -> serde_json::Value {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = gantry(&["export", &s(run)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let onnx = run.join("generator.onnx");
    let g = LoadedGenerator::load(&RunDir::open(run).unwrap(), &Weights::Final, Default::default()).unwrap();
    let n = 5;
    let z: Vec<f32> = (0..n * g.latent()).map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0).collect();
    let ids = g.asked_classes(n, None).unwrap();
    let ours = g.generate_latents(&z, &ids).unwrap();
    std::fs::write(tmp.join("z.f32"), raw(&z, |v| v.to_le_bytes().to_vec())).unwrap();
    let class = if ids.is_empty() {
        "-".to_string()
    } else {
        let path = tmp.join("class.i64");
        std::fs::write(&path, raw(&ids, |v| (v as i64).to_le_bytes().to_vec())).unwrap();
        s(&path)
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/run_onnx.py");
    let out = tmp.join("image.f32");
    let o = Command::new(python())
        .args([
            script,
            &s(&onnx),
            &s(&tmp.join("z.f32")),
            &n.to_string(),
            &g.latent().to_string(),
            &class,
            &s(&out),
        ])
        .output()
        .expect("run Python");
    assert!(
        o.status.success(),
        "onnx or onnxruntime failed (are they installed for {}? set GANTRY_PYTHON):\n{}",
        python(),
        String::from_utf8_lossy(&o.stderr)
    );
    let theirs: Vec<f32> = std::fs::read(&out)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(theirs.len(), ours.len());
    let worst = ours.iter().zip(&theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-5, "{}: onnxruntime differs from gantry by {worst:e}", run.display());
    eprintln!("{}: largest |onnxruntime - gantry| {worst:e}", run.display());
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn exported_generators_run_in_onnxruntime_as_in_gantry() {
    let tmp = tempfile::tempdir().unwrap();
    for preset in ["classic", "dcgan", "cdcgan"] {
        let run = tmp.path().join(preset);
        trained(preset, &run);
        let seen = exported_agrees(&run, tmp.path());
        assert_eq!(seen["opset"], 17, "{seen}");
        assert_eq!(seen["outputs"], serde_json::json!(["image"]), "{seen}");
        assert_eq!(seen["shape"], serde_json::json!([5, 1, 28, 28]), "{seen}");
        assert_eq!(seen["batch_axis"], "N", "a dynamic batch axis: {seen}");
        let inputs =
            if preset == "classic" { serde_json::json!(["z"]) } else { serde_json::json!(["z", "class"]) };
        assert_eq!(seen["inputs"], inputs, "{seen}");
        let architecture: serde_json::Value =
            serde_json::from_str(seen["metadata"]["gantry.architecture"].as_str().unwrap()).unwrap();
        let kind = if preset == "classic" { "mlp" } else { "dcgan" };
        assert_eq!(architecture["kind"], kind, "{seen}");
    }
}

/// Bad input: a damaged weights file is named, exit 2, and nothing is written; the export never
/// lands on a run's own files.
#[test]
fn exporting_a_damaged_run_or_onto_a_runs_file_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("r");
    common::cli_run(&run, 4, 4);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = gantry(&["export", &s(&run), "--out", &s(&run.join("metrics.csv"))]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let weights = run.join("weights/generator.bpk");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&weights, bytes).unwrap();
    let o = gantry(&["export", &s(&run)]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("generator.bpk"));
    assert!(!run.join("generator.onnx").exists());
}
