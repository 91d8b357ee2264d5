//! The wgpu backend without a GPU: Mesa's software Vulkan driver (lavapipe, Debian's
//! `mesa-vulkan-drivers`) is the adapter `--device wgpu:cpu` opens. A few iterations of the
//! classic preset and of a small dcgan on it against the CPU run, within a tolerance; checkpoints
//! written on one device resume on the other; a CPU run samples on wgpu.
//!
//! Tolerance: wgpu sums in other orders than the CPU (its matrix products tile differently, its
//! reductions run in workgroups), so values differ in the last bits from the first step and drift
//! apart slowly: a probe of burn 0.22.1 saw ~1e-6 relative after 20 MLP steps. The losses and D's
//! outputs here must agree within [`TOLERANCE`] (absolute, on values of order 1) over 20
//! iterations; accuracies, which threshold D's outputs at 0.5, may flip for an output within that
//! of 0.5, so they are compared as means.
//!
//! Built and run only with the `gpu` feature (`cargo test --release --features gpu --test gpu`).
#![cfg(feature = "gpu")]

mod common;

use std::path::Path;

use gantry::config::{Config, ModelKind, Overrides};
use gantry::device::{DeviceChoice, WgpuKind};
use gantry::metrics::IterationRecord;
use gantry::run_dir::{Existing, RunDir};
use gantry::sample::{LoadedGenerator, Weights};
use gantry::train::{self, Options};

/// Largest absolute difference allowed between a CPU and a wgpu value (losses, D's outputs).
const TOLERANCE: f64 = 2e-3;

const SOFTWARE: DeviceChoice = DeviceChoice::Wgpu(WgpuKind::Cpu);

fn on(mut config: Config, device: DeviceChoice) -> Config {
    config.train.device = device;
    config
}

/// The values of two runs' records, side by side: the largest difference of each.
fn assert_close(name: &str, a: &[IterationRecord], b: &[IterationRecord]) {
    assert_eq!(a.len(), b.len(), "{name}: record counts");
    let worst = a
        .iter()
        .zip(b)
        .flat_map(|(x, y)| {
            [
                (x.d_loss_real - y.d_loss_real).abs(),
                (x.d_loss_fake - y.d_loss_fake).abs(),
                (x.g_loss - y.g_loss).abs(),
                (x.d_out_real - y.d_out_real).abs(),
                (x.d_out_fake - y.d_out_fake).abs(),
            ]
        })
        .fold(0.0f64, |m, d| m.max(d as f64));
    eprintln!("{name}: largest CPU/wgpu difference {worst:.3e} over {} iterations", a.len());
    assert!(worst <= TOLERANCE, "{name}: CPU and wgpu differ by {worst}");
    let mean_acc = |r: &[IterationRecord]| r.iter().map(|x| x.acc as f64).sum::<f64>() / r.len() as f64;
    assert!((mean_acc(a) - mean_acc(b)).abs() < 0.05, "{name}: mean accuracy");
}

fn small_dcgan(mut c: Config) -> Config {
    c.model.kind = ModelKind::Dcgan;
    c.model.g_channels = vec![16, 8];
    c.model.d_channels = vec![8, 16];
    c.train.batch_size = 8;
    c
}

#[test]
fn the_classic_preset_and_a_dcgan_on_wgpu_match_the_cpu_within_the_tolerance() {
    let tmp = tempfile::tempdir().unwrap();
    // Spectral norm's power iteration and WGAN's clipping run on the device as well.
    let mut sn = small_dcgan(common::tiny_config(6, 3, 3));
    (sn.model.d_spectral_norm, sn.train.loss) = (true, gantry::config::Loss::Hinge);
    let mut wgan = common::tiny_config(10, 5, 4);
    wgan.train.loss = gantry::config::Loss::Wgan;
    // The class as G's input columns and D's embedding: wgpu's products over the one-hot labels.
    let mut projection = small_dcgan(common::tiny_config(6, 3, 5));
    projection.model.conditional = gantry::config::Conditioning::Projection;
    for (name, config) in [
        ("classic", common::tiny_config(20, 10, 1)),
        ("dcgan", small_dcgan(common::tiny_config(6, 3, 2))),
        ("dcgan-projection", projection),
        ("dcgan-sn-hinge", sn),
        ("wgan", wgan),
    ] {
        let cpu = train::train(&config, &tmp.path().join(format!("{name}-cpu"))).unwrap();
        let gpu =
            train::train(&on(config.clone(), SOFTWARE), &tmp.path().join(format!("{name}-gpu"))).unwrap();
        assert_close(name, &cpu.records, &gpu.records);
    }
}

#[test]
fn checkpoints_resume_across_devices_and_a_cpu_run_samples_on_wgpu() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::tiny_config(20, 10, 4);
    let straight = train::train(&config, &tmp.path().join("straight")).unwrap();
    // Started on wgpu, stopped at 10 (a checkpoint), resumed on the CPU; and the other way.
    for (name, first, then) in
        [("gpu-then-cpu", SOFTWARE, DeviceChoice::Cpu), ("cpu-then-gpu", DeviceChoice::Cpu, SOFTWARE)]
    {
        let dir = tmp.path().join(name);
        let options = Options { stop_after: Some(10), ..Default::default() };
        assert_eq!(
            train::start(&on(config.clone(), first), &dir, Existing::Keep, &options).unwrap().stopped_at,
            Some(10)
        );
        let overrides = Overrides::default().with("train.device", then).unwrap();
        let resumed = train::resume(&dir, None, &overrides, &Options::default()).unwrap();
        assert_close(name, &straight.records, &resumed.records);
        let saved = Config::from_file(&dir.join("config.toml")).unwrap();
        assert_eq!(saved.train.device, then, "{name}: the resumed run's config says where it ran");
    }
    // The CPU run's generator, drawn on each device.
    let run = RunDir::open(&tmp.path().join("straight")).unwrap();
    let draw = |device| {
        let g = LoadedGenerator::load(&run, &Weights::Final, device).unwrap();
        g.generate(16, 3, None).unwrap()
    };
    let (cpu, gpu) = (draw(DeviceChoice::Cpu), draw(SOFTWARE));
    let worst = cpu.iter().zip(&gpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "samples differ by {worst}");
}

#[test]
fn gantry_devices_lists_the_software_adapter_and_the_commands_take_it() {
    let tmp = tempfile::tempdir().unwrap();
    let gantry = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let o = gantry(&["devices"]);
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && listed.contains("wgpu:cpu"), "{listed}");
    let data = common::mnist_dir();
    let o = gantry(&[
        "train",
        "--device",
        "wgpu:cpu",
        "--data",
        data.to_str().unwrap(),
        "--iterations",
        "4",
        "--sample-interval",
        "2",
        "--eval-every",
        "0",
        "--out",
        "run",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = gantry(&["sample", "run", "--n", "4", "--device", "wgpu:cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = gantry(&["train", "--device", "wgpu:discrete:7", "--iterations", "2", "--out", "other"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!Path::new(&tmp.path().join("other")).exists(), "nothing written for a missing adapter");
}
