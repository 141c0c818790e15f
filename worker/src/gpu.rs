//! GPUs: how many a worker has, which ones a job gets, and how they reach the container.
//!
//! Detection at start-up: `DCC_GPUS` when set; else NVML (libnvidia-ml loaded at run time, so the
//! binary runs on hosts without the driver); else a count of `/dev/nvidia<N>` nodes. Each GPU job
//! gets `gpus` specific free GPUs, never shared with another running job.
//!
//! Attachment modes (`DCC_GPU_MODE`):
//! - `runtime`: `HostConfig.Runtime = "nvidia"` + `NVIDIA_VISIBLE_DEVICES=<pinned indexes>` (needs
//!   the NVIDIA container toolkit's runtime registered in dockerd — what the 2018 system did);
//! - `device-requests`: the `--gpus` path, a `DeviceRequest` for the pinned ids (needs the toolkit);
//! - `devices`: no toolkit: the pinned `/dev/nvidia<N>` plus `nvidiactl`, `nvidia-uvm`,
//!   `nvidia-uvm-tools`, read-only binds of the driver folders and a matching `LD_LIBRARY_PATH`;
//! - `auto` (default): `runtime` when dockerd has an `nvidia` runtime, else `devices`.
//!
//! A mode the host cannot serve fails the job `GPU_UNAVAILABLE` with the daemon's message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bollard::models::{DeviceMapping, DeviceRequest, HostConfig};

/// How GPUs reach containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuMode {
    /// The `nvidia` runtime and `NVIDIA_VISIBLE_DEVICES`.
    Runtime,
    /// A Docker `DeviceRequest` (`--gpus`).
    DeviceRequests,
    /// Device nodes and driver binds, no toolkit.
    Devices,
}

impl GpuMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuMode::Runtime => "runtime",
            GpuMode::DeviceRequests => "device-requests",
            GpuMode::Devices => "devices",
        }
    }

    /// Resolves `DCC_GPU_MODE` (`auto` looks at the daemon's runtimes).
    pub fn resolve(requested: &str, daemon_has_nvidia_runtime: bool) -> Result<Self, crate::WorkerError> {
        match requested {
            "runtime" => Ok(GpuMode::Runtime),
            "device-requests" => Ok(GpuMode::DeviceRequests),
            "devices" => Ok(GpuMode::Devices),
            "auto" | "" if daemon_has_nvidia_runtime => Ok(GpuMode::Runtime),
            "auto" | "" => Ok(GpuMode::Devices),
            other => Err(crate::WorkerError::GpuMode(other.to_string())),
        }
    }
}

/// How a worker attaches GPUs.
#[derive(Clone, Debug)]
pub struct GpuSettings {
    /// The resolved mode.
    pub mode: GpuMode,
    /// Where the device nodes are (`DCC_GPU_DEVICE_DIR`, `/dev`; tests use fake nodes).
    pub device_dir: PathBuf,
    /// `host[:container]` folders bound read-only in `devices` mode (`DCC_GPU_DRIVER_BINDS`).
    pub driver_binds: Vec<String>,
    /// `LD_LIBRARY_PATH` set in `devices` mode (`DCC_GPU_LD_LIBRARY_PATH`).
    pub ld_library_path: Option<String>,
}

/// The GPUs a worker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detected {
    /// How many.
    pub count: u32,
    /// Their models, when NVML could tell.
    pub models: Vec<String>,
    /// Where the count came from (`DCC_GPUS`, `nvml`, `devices`).
    pub source: &'static str,
}

/// Counts the GPUs: `override_count` (DCC_GPUS) first, then NVML, then device nodes.
pub fn detect(override_count: Option<u32>, device_dir: &Path) -> Detected {
    if let Some(n) = override_count {
        return Detected {
            count: n,
            models: Vec::new(),
            source: "DCC_GPUS",
        };
    }
    if let Ok(nvml) = nvml_wrapper::Nvml::init()
        && let Ok(n) = nvml.device_count()
    {
        let models = (0..n)
            .map(|i| {
                nvml.device_by_index(i)
                    .and_then(|d| d.name())
                    .unwrap_or_else(|_| "unknown".into())
            })
            .collect();
        return Detected {
            count: n,
            models,
            source: "nvml",
        };
    }
    Detected {
        count: device_indexes(device_dir).len() as u32,
        models: Vec::new(),
        source: "devices",
    }
}

/// The device nodes a GPU worker watches: those of its GPUs that existed when it started. A node
/// that disappears later means the driver was unloaded or the GPU fell off the bus, and every GPU
/// job would fail; a worker whose GPU count is configured without nodes watches nothing.
#[derive(Clone, Debug, Default)]
pub struct WatchedDevices {
    /// The device folder.
    pub dir: PathBuf,
    /// Indexes whose `nvidia<N>` node existed at start.
    pub indexes: Vec<u32>,
}

impl WatchedDevices {
    /// The nodes of GPUs `0..count` present under `dir` now.
    pub fn at_start(dir: &Path, count: u32) -> Self {
        WatchedDevices {
            dir: dir.to_path_buf(),
            indexes: device_indexes(dir).into_iter().filter(|i| *i < count).collect(),
        }
    }

    /// Why the GPUs cannot be used now, if a watched node is gone.
    pub fn problem(&self) -> Option<String> {
        let gone: Vec<String> = self
            .indexes
            .iter()
            .map(|i| self.dir.join(format!("nvidia{i}")))
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        (!gone.is_empty()).then(|| {
            format!(
                "GPU device node(s) {} disappeared (driver unloaded or GPU lost); GPU jobs would fail",
                gone.join(", ")
            )
        })
    }
}

/// Indexes of the `nvidia<N>` nodes under `dir`.
pub fn device_indexes(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("nvidia")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The free GPUs of a worker.
pub struct GpuPool {
    total: u32,
    free: Mutex<BTreeSet<u32>>,
}

impl GpuPool {
    /// GPUs `0..count`, all free.
    pub fn new(count: u32) -> Self {
        GpuPool {
            total: count,
            free: Mutex::new((0..count).collect()),
        }
    }

    /// How many in all.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// How many free now.
    pub fn free(&self) -> u32 {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len() as u32
    }

    /// Takes `n` specific free GPUs (lowest indexes first), or none when fewer are free.
    pub fn take(&self, n: u32) -> Option<Vec<u32>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if (free.len() as u32) < n {
            return None;
        }
        let ids: Vec<u32> = free.iter().take(n as usize).copied().collect();
        for id in &ids {
            free.remove(id);
        }
        Some(ids)
    }

    /// Gives GPUs back.
    pub fn give(&self, ids: &[u32]) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids.iter().copied());
    }
}

/// Adds the pinned GPUs `ids` to a container definition.
pub fn attach(host: &mut HostConfig, env: &mut Vec<String>, ids: &[u32], s: &GpuSettings) {
    if ids.is_empty() {
        return;
    }
    let list = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    match s.mode {
        GpuMode::Runtime => {
            host.runtime = Some("nvidia".into());
            env.push(format!("NVIDIA_VISIBLE_DEVICES={list}"));
            env.push("NVIDIA_DRIVER_CAPABILITIES=compute,utility".into());
        }
        GpuMode::DeviceRequests => {
            host.device_requests = Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(ids.iter().map(u32::to_string).collect()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]);
        }
        GpuMode::Devices => {
            let node = |name: String| DeviceMapping {
                path_on_host: Some(s.device_dir.join(&name).display().to_string()),
                path_in_container: Some(format!("/dev/{name}")),
                cgroup_permissions: Some("rwm".into()),
            };
            let mut devices: Vec<DeviceMapping> = ids.iter().map(|i| node(format!("nvidia{i}"))).collect();
            for shared in ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"] {
                if s.device_dir.join(shared).exists() {
                    devices.push(node(shared.to_string()));
                }
            }
            host.devices = Some(devices);
            let binds: Vec<String> = s
                .driver_binds
                .iter()
                .map(|b| {
                    let (h, c) = b.split_once(':').unwrap_or((b, b));
                    format!("{h}:{c}:ro")
                })
                .collect();
            if !binds.is_empty() {
                host.binds.get_or_insert_with(Vec::new).extend(binds);
            }
            if let Some(p) = &s.ld_library_path {
                env.push(format!("LD_LIBRARY_PATH={p}"));
            }
            env.push(format!("NVIDIA_VISIBLE_DEVICES={list}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_node_that_disappears_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["nvidia0", "nvidia1", "nvidia7", "nvidiactl"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        // GPUs 0 and 1 only: nvidia7 is not one of this worker's.
        let w = WatchedDevices::at_start(dir.path(), 2);
        assert_eq!(w.indexes, vec![0, 1]);
        assert_eq!(w.problem(), None);
        std::fs::remove_file(dir.path().join("nvidia1")).unwrap();
        assert!(w.problem().is_some_and(|p| p.contains("nvidia1")));
        // A count configured without nodes watches nothing.
        assert_eq!(WatchedDevices::at_start(&dir.path().join("none"), 2).problem(), None);
    }

    fn settings(mode: GpuMode) -> GpuSettings {
        GpuSettings {
            mode,
            device_dir: PathBuf::from("/fake/dev"),
            driver_binds: vec!["/usr/local/nvidia".into(), "/usr/lib/x86_64-linux-gnu:/host/lib".into()],
            ld_library_path: Some("/usr/local/nvidia/lib64".into()),
        }
    }

    #[test]
    fn runtime_mode() {
        let (mut h, mut env) = (HostConfig::default(), Vec::new());
        attach(&mut h, &mut env, &[1, 3], &settings(GpuMode::Runtime));
        assert_eq!(h.runtime.as_deref(), Some("nvidia"));
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=1,3".to_string()));
        assert!(h.devices.is_none() && h.device_requests.is_none());
    }

    #[test]
    fn device_requests_mode() {
        let (mut h, mut env) = (HostConfig::default(), Vec::new());
        attach(&mut h, &mut env, &[0], &settings(GpuMode::DeviceRequests));
        let r = &h.device_requests.unwrap()[0];
        assert_eq!(r.driver.as_deref(), Some("nvidia"));
        assert_eq!(r.device_ids, Some(vec!["0".to_string()]));
        assert_eq!(r.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert!(h.runtime.is_none());
    }

    #[test]
    fn devices_mode() {
        let (mut h, mut env) = (HostConfig::default(), Vec::new());
        attach(&mut h, &mut env, &[2], &settings(GpuMode::Devices));
        let d = &h.devices.unwrap()[0];
        assert_eq!(d.path_on_host.as_deref(), Some("/fake/dev/nvidia2"));
        assert_eq!(d.path_in_container.as_deref(), Some("/dev/nvidia2"));
        assert_eq!(
            h.binds.unwrap(),
            vec![
                "/usr/local/nvidia:/usr/local/nvidia:ro",
                "/usr/lib/x86_64-linux-gnu:/host/lib:ro"
            ]
        );
        assert!(env.contains(&"LD_LIBRARY_PATH=/usr/local/nvidia/lib64".to_string()));
        assert!(h.runtime.is_none());
    }

    #[test]
    fn pool_pins_distinct_gpus() {
        let p = GpuPool::new(2);
        let a = p.take(1).unwrap();
        let b = p.take(1).unwrap();
        assert_ne!(a, b);
        assert!(p.take(1).is_none());
        p.give(&a);
        assert_eq!(p.take(1).unwrap(), a);
    }

    #[test]
    fn resolves_auto() {
        assert_eq!(GpuMode::resolve("auto", true).unwrap(), GpuMode::Runtime);
        assert_eq!(GpuMode::resolve("auto", false).unwrap(), GpuMode::Devices);
        assert!(GpuMode::resolve("cuda", false).is_err());
    }
}
