//! The TensorBoard event files, read back by TensorBoard's own Python reader (the `tensorboard`
//! package; `.ci/run` installs it and names its Python in `GANTRY_PYTHON`).

mod common;

use std::process::Command;

use gantry::metrics::read_csv;
use gantry::train;

#[test]
fn tensorboard_reads_every_scalar_and_the_grids() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train::train(&common::tiny_config(60, 20, 3), &out).unwrap();

    let python = std::env::var("GANTRY_PYTHON")
        .or_else(|_| std::env::var("GANTRY_TB_PYTHON"))
        .unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_tensorboard.py");
    let output = Command::new(&python).arg(script).arg(&out).output().expect("run the TensorBoard reader");
    assert!(
        output.status.success(),
        "TensorBoard's reader failed (is `tensorboard` installed for {python}? set GANTRY_PYTHON):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let records = read_csv(&out.join("metrics.csv")).unwrap();
    let g_loss = read["scalars"]["loss/g"].as_array().unwrap();
    assert_eq!(g_loss.len(), 60);
    for (event, record) in g_loss.iter().zip(&records) {
        assert_eq!(event[0].as_u64().unwrap() as usize, record.iteration);
        assert_eq!(event[1].as_f64().unwrap() as f32, record.g_loss);
    }
    for tag in [
        "loss/d",
        "loss/d_real",
        "loss/d_fake",
        "accuracy/d",
        "accuracy/d_real",
        "accuracy/d_fake",
        "d_output/real",
        "d_output/fake",
    ] {
        assert_eq!(read["scalars"][tag].as_array().map(|a| a.len()), Some(60), "{tag}");
    }
    let acc_last = read["scalars"]["accuracy/d"][59][1].as_f64().unwrap() as f32;
    assert_eq!(acc_last, records[59].acc);

    // Grids at 0, 20, 40, 60, as 456x456 images.
    let images = read["images"]["samples"].as_array().unwrap();
    let steps: Vec<u64> = images.iter().map(|i| i[0].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![0, 20, 40, 60]);
    assert_eq!((images[0][1].as_u64(), images[0][2].as_u64()), (Some(456), Some(456)));
}
