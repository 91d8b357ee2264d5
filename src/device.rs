//! Where the tensors live: `train.device` (`--device`), resolved once into the burn device that
//! training and sampling (`gantry sample`, `gantry eval`'s generators) compute on.
//!
//! - `cpu` (the default): burn's Flex backend with gantry's fused kernels.
//! - `wgpu` (the best adapter wgpu finds), `wgpu:discrete:N`, `wgpu:integrated:N`, `wgpu:virtual:N`
//!   (the N-th adapter of that kind, from 0), `wgpu:cpu` (a software Vulkan driver such as Mesa's
//!   lavapipe): burn's wgpu backend, WGSL kernels run through Vulkan, Metal or DX12, in a build with
//!   the `gpu` feature (`cargo build --release --features gpu`). gantry's fused kernels are the
//!   Flex backend's; on wgpu the backend extensions take their composed default bodies (burn's own
//!   operations) and training takes the sequential reference step.
//!
//! The judge always runs on the CPU: it is the same network, bit for bit, on every machine, so
//! FIDs stay comparable between runs on any device.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Which wgpu adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WgpuKind {
    /// wgpu's choice (a high-power GPU first).
    Best,
    Discrete(usize),
    Integrated(usize),
    Virtual(usize),
    /// A software rasterizer (lavapipe, llvmpipe, SwiftShader).
    Cpu,
}

/// A device as the config and the command line name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Wgpu(WgpuKind),
}

/// The names `--device` takes, for messages.
pub const DEVICE_NAMES: &str = "cpu, wgpu, wgpu:discrete:N, wgpu:integrated:N, wgpu:virtual:N or wgpu:cpu";

impl DeviceChoice {
    pub fn is_cpu(self) -> bool {
        self == DeviceChoice::Cpu
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Wgpu(WgpuKind::Best) => write!(f, "wgpu"),
            DeviceChoice::Wgpu(WgpuKind::Discrete(i)) => write!(f, "wgpu:discrete:{i}"),
            DeviceChoice::Wgpu(WgpuKind::Integrated(i)) => write!(f, "wgpu:integrated:{i}"),
            DeviceChoice::Wgpu(WgpuKind::Virtual(i)) => write!(f, "wgpu:virtual:{i}"),
            DeviceChoice::Wgpu(WgpuKind::Cpu) => write!(f, "wgpu:cpu"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("unknown device {s:?}: one of {DEVICE_NAMES}");
        let parts: Vec<&str> = s.trim().split(':').collect();
        let index = |i: &str| i.parse::<usize>().map_err(|_| bad());
        Ok(match parts.as_slice() {
            ["cpu"] => DeviceChoice::Cpu,
            ["wgpu"] => DeviceChoice::Wgpu(WgpuKind::Best),
            ["wgpu", "cpu"] => DeviceChoice::Wgpu(WgpuKind::Cpu),
            ["wgpu", "discrete"] => DeviceChoice::Wgpu(WgpuKind::Discrete(0)),
            ["wgpu", "integrated"] => DeviceChoice::Wgpu(WgpuKind::Integrated(0)),
            ["wgpu", "virtual"] => DeviceChoice::Wgpu(WgpuKind::Virtual(0)),
            ["wgpu", "discrete", i] => DeviceChoice::Wgpu(WgpuKind::Discrete(index(i)?)),
            ["wgpu", "integrated", i] => DeviceChoice::Wgpu(WgpuKind::Integrated(index(i)?)),
            ["wgpu", "virtual", i] => DeviceChoice::Wgpu(WgpuKind::Virtual(index(i)?)),
            _ => return Err(bad()),
        })
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether this build has the wgpu backend (the `gpu` feature).
pub const GPU_BUILT: bool = cfg!(feature = "gpu");

/// The burn device (without autodiff) of `choice`, opened once per process and reused.
pub fn resolve(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex()),
        DeviceChoice::Wgpu(kind) => wgpu::open(kind),
    }
}

/// Whether `device` is burn's Flex CPU backend (where gantry's fused kernels and schedule apply).
pub fn is_flex(device: &Device) -> bool {
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// One device `gantry devices` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// What `--device` takes for it.
    pub choice: String,
    /// What it is.
    pub description: String,
}

/// Every device this build can compute on: the CPU, then each wgpu adapter (none without the
/// `gpu` feature).
pub fn list() -> Vec<Listed> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut out =
        vec![Listed { choice: "cpu".into(), description: format!("burn's Flex backend, {threads} cores") }];
    out.extend(wgpu::list());
    out
}

#[cfg(feature = "gpu")]
mod wgpu {
    use std::sync::Mutex;

    use burn::backend::DispatchDevice;
    use burn::tensor::{Device, DeviceKind, DeviceType};

    use super::{DeviceChoice, Listed, WgpuKind};
    use crate::error::{Error, Result};

    /// Devices opened so far: wgpu opens each adapter once per process.
    static OPENED: Mutex<Vec<(WgpuKind, Device)>> = Mutex::new(Vec::new());

    fn kind_of(kind: WgpuKind) -> DeviceKind {
        match kind {
            WgpuKind::Best => DeviceKind::DefaultDevice,
            WgpuKind::Discrete(i) => DeviceKind::DiscreteGpu(i),
            WgpuKind::Integrated(i) => DeviceKind::IntegratedGpu(i),
            WgpuKind::Virtual(i) => DeviceKind::VirtualGpu(i),
            WgpuKind::Cpu => DeviceKind::Cpu,
        }
    }

    pub(super) fn open(kind: WgpuKind) -> Result<Device> {
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, device)) = opened.iter().find(|(k, _)| *k == kind) {
            return Ok(device.clone());
        }
        let device = Device::wgpu_options().device_kind(kind_of(kind)).init().map_err(|e| {
            Error::usage(
                "--device",
                format!(
                    "{}: no such wgpu adapter here ({e}); `gantry devices` lists what there is",
                    DeviceChoice::Wgpu(kind)
                ),
            )
        })?;
        opened.push((kind, device.clone()));
        Ok(device)
    }

    pub(super) fn list() -> Vec<Listed> {
        Device::enumerate(DeviceType::Wgpu)
            .into_iter()
            .filter_map(|device| {
                let DispatchDevice::Cube(burn::backend::CubeDevice::Wgpu(w)) = device.as_dispatch() else {
                    return None;
                };
                use burn::backend::WgpuDeviceKind as K;
                let kind = match w.kind {
                    K::DiscreteGpu(i) => WgpuKind::Discrete(i),
                    K::IntegratedGpu(i) => WgpuKind::Integrated(i),
                    K::VirtualGpu(i) => WgpuKind::Virtual(i),
                    K::Cpu => WgpuKind::Cpu,
                    _ => return None,
                };
                let name = device.identity().map(|id| id.name).unwrap_or_else(|| "unnamed adapter".into());
                Some(Listed {
                    choice: DeviceChoice::Wgpu(kind).to_string(),
                    description: format!("wgpu: {name}"),
                })
            })
            .collect()
    }
}

#[cfg(not(feature = "gpu"))]
mod wgpu {
    use burn::tensor::Device;

    use super::{DeviceChoice, Listed, WgpuKind};
    use crate::error::{Error, Result};

    pub(super) fn open(kind: WgpuKind) -> Result<Device> {
        Err(Error::usage(
            "--device",
            format!(
                "{}: this gantry was built without the wgpu backend; build it with \
                 `cargo build --release --features gpu`",
                DeviceChoice::Wgpu(kind)
            ),
        ))
    }

    pub(super) fn list() -> Vec<Listed> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_round_trip_and_bad_ones_are_refused_with_the_list() {
        for name in ["cpu", "wgpu", "wgpu:cpu", "wgpu:discrete:1", "wgpu:integrated:0", "wgpu:virtual:2"] {
            let choice: DeviceChoice = name.parse().unwrap();
            assert_eq!(choice.to_string(), name);
        }
        assert_eq!(
            "wgpu:discrete".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Wgpu(WgpuKind::Discrete(0))
        );
        for bad in ["gpu", "cuda", "wgpu:discrete:x", "wgpu:2", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("wgpu:cpu"), "{bad}: {e}");
        }
        assert!(is_flex(&resolve(DeviceChoice::Cpu).unwrap()));
        assert_eq!(list()[0].choice, "cpu");
    }

    #[cfg(not(feature = "gpu"))]
    #[test]
    fn a_wgpu_device_in_a_cpu_build_says_how_to_build_one() {
        let e = resolve("wgpu:cpu".parse().unwrap()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--features gpu"), "{e}");
    }
}
