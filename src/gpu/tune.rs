//! Kernels chosen by measurement. The fastest GEMM kernel depends on the adapter and the
//! CPU under a CPU driver far more than on its name (lavapipe's subgroup kernel runs 5x
//! slower without AVX-512), so the first time a device meets a GEMM shape, every kernel it
//! can run is timed on that shape (outputs checked against the first candidate's) and the
//! fastest is kept in a cache file keyed by adapter, driver, back end, kernel sources and
//! shape. `ops::gemm::kernel` is the one function that decides; `vae-gpu tune` and `vae-gpu
//! info` ask it. Burn/CubeCL's autotune is the public model for this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Gpu, GpuError};

/// A GEMM problem as the tuner keys it (the product alone; epilogues cost the same on
/// every kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl GemmShape {
    /// Whether A and B fit the texture kernels' textures (stored sizes, rows padded to 4).
    pub fn fits_textures(&self, gpu: &Gpu) -> bool {
        let up4 = super::round_up4;
        let (a_rows, a_ld) = if self.trans_a {
            (self.k, up4(self.m))
        } else {
            (self.m, up4(self.k))
        };
        let (b_rows, b_ld) = if self.trans_b {
            (self.n, up4(self.k))
        } else {
            (self.k, up4(self.n))
        };
        super::texture::TextureOperand::fits(gpu, a_rows * a_ld)
            && super::texture::TextureOperand::fits(gpu, b_rows * b_ld)
    }
}

impl std::fmt::Display for GemmShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |b| if b { "T" } else { "N" };
        write!(
            f,
            "gemm {}x{}x{} {}{}",
            self.m,
            self.n,
            self.k,
            t(self.trans_a),
            t(self.trans_b)
        )
    }
}

/// What the tuner measured for one problem (a GEMM shape, an Adam size...): the variants
/// by name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    pub pick: String,
    /// Median microseconds per launch of each candidate that ran correctly.
    pub micros: BTreeMap<String, f64>,
}

/// Whether unmeasured shapes are measured (`VAE_GPU_TUNE=off` uses the built-in choice:
/// for tests that compare runs bit for bit, and for users who want no measuring at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneMode {
    Measure,
    Off,
}

/// The cache file: one table of measured shapes per device identity.
#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    devices: BTreeMap<String, BTreeMap<String, Measured>>,
}

const FORMAT: u32 = 1;

/// The picks of one device, loaded from and saved to the cache file.
pub struct Tuner {
    mode: TuneMode,
    path: Option<PathBuf>,
    /// Adapter, driver, back end and a hash of the GEMM kernels' sources: a new driver or
    /// an edited kernel is a new device to the cache.
    identity: String,
    picks: BTreeMap<String, Measured>,
    /// Problems decided in this process, and whether to measure each of them again once.
    pub(crate) seen: std::collections::BTreeSet<String>,
    pub(crate) remeasure: bool,
}

/// `$VAE_GPU_CACHE_DIR`, else `$XDG_CACHE_HOME/vae-gpu`, else `~/.cache/vae-gpu`.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("VAE_GPU_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("vae-gpu")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/vae-gpu")))
        .or_else(|| env("LOCALAPPDATA").map(|d| d.join("vae-gpu")))
}

/// The CPU's model name (Linux), for keying CPU drivers' measurements.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl Tuner {
    pub fn new(info: &wgpu::AdapterInfo, sources: &str) -> Tuner {
        let mode = match std::env::var("VAE_GPU_TUNE").as_deref() {
            Ok("off" | "0") => TuneMode::Off,
            _ => TuneMode::Measure,
        };
        let mut identity = format!(
            "{} | {} {} | {:?} | kernels {:016x}",
            info.name,
            info.driver,
            info.driver_info,
            info.backend,
            crate::io::fnv1a64(sources.as_bytes())
        );
        if info.device_type == wgpu::DeviceType::Cpu {
            // A CPU driver's speed is the CPU's (a home directory may move between machines),
            // and Mesa's llvmpipe can be told to use fewer of its features.
            identity += &format!(" | cpu {}", cpu_model());
            if let Ok(caps) = std::env::var("GALLIUM_OVERRIDE_CPU_CAPS") {
                identity += &format!(" ({caps})");
            }
        }
        let path = cache_dir().map(|d| d.join("kernels.json"));
        let picks = path
            .as_deref()
            .and_then(Self::read)
            .and_then(|mut c| c.devices.remove(&identity))
            .unwrap_or_default();
        Tuner {
            mode,
            path,
            identity,
            picks,
            seen: Default::default(),
            remeasure: false,
        }
    }

    /// The cache file's contents; a missing, corrupt or foreign-format file is ignored (and
    /// rewritten at the next save).
    fn read(path: &Path) -> Option<CacheFile> {
        let text = crate::io::read_input_text(path).ok()?;
        match serde_json::from_str::<CacheFile>(&text) {
            Ok(c) if c.format == FORMAT => Some(c),
            Ok(_) | Err(_) => {
                // Once per process, however many devices read it.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    log::warn!(
                        "{}: unreadable kernel cache, measuring again",
                        path.display()
                    )
                });
                None
            }
        }
    }

    pub fn mode(&self) -> TuneMode {
        self.mode
    }

    pub fn cache_path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// What is known for a problem.
    pub fn get(&self, key: &str) -> Option<&Measured> {
        self.picks.get(key)
    }

    /// Measure every shape again the first time this process meets it (`tune --force`).
    pub fn remeasure(&mut self) {
        self.remeasure = true;
    }

    /// The problems decided in this process.
    pub fn seen(&self) -> &std::collections::BTreeSet<String> {
        &self.seen
    }

    /// Every measured shape of this device.
    pub fn all(&self) -> &BTreeMap<String, Measured> {
        &self.picks
    }

    /// Records a measurement and saves the cache (merged with what other devices or
    /// processes wrote meanwhile). A cache that cannot be written only costs a warning.
    pub fn insert(&mut self, key: &str, measured: Measured) {
        self.picks.insert(key.to_string(), measured);
        let Some(path) = &self.path else { return };
        let mut file = Self::read(path).unwrap_or_default();
        file.format = FORMAT;
        // This device's tables from other kernel sources (an older or newer vae-gpu) are
        // never read again: drop them, so that the file does not grow with every upgrade.
        let device = without_kernels(&self.identity);
        file.devices
            .retain(|id, _| *id == self.identity || without_kernels(id) != device);
        file.devices
            .entry(self.identity.clone())
            .or_default()
            .extend(self.picks.clone());
        let saved = std::fs::create_dir_all(crate::io::parent_dir(path)).and_then(|()| {
            let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
            crate::io::write_atomic(path, &json)
        });
        if let Err(e) = saved {
            log::warn!(
                "{}: cannot save the kernel cache: {e}; this process keeps its choices in memory",
                path.display()
            );
            // Once: every later measurement would fail and warn the same way.
            self.path = None;
        }
    }
}

/// A device identity without its kernel-sources hash: the same device under any build.
fn without_kernels(identity: &str) -> String {
    identity
        .split(" | ")
        .filter(|part| !part.starts_with("kernels "))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Each candidate with the median microseconds per run of the launches `build` makes for
/// it (run once first, which compiles them).
pub fn time_each<K: Copy>(
    gpu: &Gpu,
    candidates: &[K],
    build: impl Fn(K) -> Result<Vec<super::Dispatch>, GpuError>,
) -> Result<Vec<(K, f64)>, GpuError> {
    let launches: Vec<Vec<super::Dispatch>> = candidates
        .iter()
        .map(|&k| {
            let launches = build(k)?;
            gpu.run(&launches.iter().collect::<Vec<_>>())?;
            Ok(launches)
        })
        .collect::<Result<_, GpuError>>()?;
    let times = time_interleaved(gpu, &launches)?;
    Ok(candidates.iter().copied().zip(times).collect())
}

/// Median microseconds per run of each candidate's launches (compiled and run once
/// already). The candidates take turns, round after round, so that a slow spell of a shared
/// machine hits them alike instead of deciding for one: at least 3 rounds, at most 15, and
/// no more once about 30 ms per candidate have passed. A candidate more than 4x behind the
/// best after the first round is not run again.
pub(crate) fn time_interleaved(
    gpu: &Gpu,
    candidates: &[Vec<super::Dispatch>],
) -> Result<Vec<f64>, GpuError> {
    let runs: Vec<Vec<&super::Dispatch>> = candidates.iter().map(|c| c.iter().collect()).collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let budget = Duration::from_millis(30) * runs.len() as u32;
    let started = Instant::now();
    for round in 1..=15 {
        let best = times
            .iter()
            .filter_map(|t| t.first())
            .fold(f64::INFINITY, |a, &b| a.min(b));
        for (launches, t) in runs.iter().zip(&mut times) {
            if t.first().is_some_and(|&first| first > 4.0 * best) {
                continue;
            }
            let run = Instant::now();
            gpu.run(launches)?;
            gpu.wait()?;
            t.push(run.elapsed().as_secs_f64() * 1e6);
        }
        if round >= 3 && started.elapsed() > budget {
            break;
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}
