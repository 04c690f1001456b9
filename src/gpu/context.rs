//! Instance, adapter choice and device: the one place that talks to wgpu's setup API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::shaders::Shader;
use super::tune::{Measured, TuneMode, Tuner};
use super::GpuError;

/// Which wgpu back end to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// A real GPU if there is one, then a CPU Vulkan driver, then GL.
    #[default]
    Auto,
    /// Vulkan: Linux, Windows, Android; lavapipe and SwiftShader on the CPU.
    Vulkan,
    /// Metal: macOS and iOS.
    Metal,
    /// Direct3D 12: Windows.
    Dx12,
    /// OpenGL / GLES: the fallback (Mesa's llvmpipe on the CPU); no subgroups, slower.
    #[cfg_attr(feature = "cli", value(alias = "gles", alias = "opengl"))]
    Gl,
}

impl BackendChoice {
    fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto => wgpu::Backends::all(),
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

/// How to pick the adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: BackendChoice,
    /// Case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// Turn on wgpu's validation (and the Vulkan validation layers when installed).
    pub validation: bool,
}

/// A GEMM kernel.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum GemmPath {
    /// Workgroup-memory tiles with register blocks: portable, the right shape for real GPUs.
    Tiled,
    /// Subgroup broadcast with 32x4 register blocks: for 8-wide CPU drivers (lavapipe).
    Subgroup,
    /// 8x8 register blocks read straight from global memory: CPU drivers without subgroups
    /// (GL on llvmpipe, SwiftShader).
    Register,
    /// Subgroup broadcast, 32x8 register blocks, A and B copied into textures: lavapipe,
    /// where texture reads avoid the per-lane loops of storage-buffer reads.
    SubgroupTex,
    /// SubgroupTex with 32x4 blocks (32 x 32 per workgroup), for N just over a multiple of
    /// 64, where the wide kernel's last column block is mostly padding.
    SubgroupTexNarrow,
    /// 8x8 register blocks with A and B in textures, for drivers without subgroups.
    RegisterTex,
}

impl GemmPath {
    /// Whether the kernel reads A and B from textures.
    pub fn textures(self) -> bool {
        matches!(
            self,
            GemmPath::SubgroupTex | GemmPath::SubgroupTexNarrow | GemmPath::RegisterTex
        )
    }

    fn needs_subgroups(self) -> bool {
        matches!(
            self,
            GemmPath::Subgroup | GemmPath::SubgroupTex | GemmPath::SubgroupTexNarrow
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: Shader,
    entry: &'static str,
    constants: Vec<(&'static str, u32)>,
}

/// A device and queue plus everything kernels need to launch on it.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The GEMM kernel for shapes the tuner has not measured (with `VAE_GPU_TUNE=off`).
    pub default_gemm: GemmPath,
    /// Whether the subgroup kernels run here (8-wide subgroups).
    subgroup_gemm: bool,
    /// A driver that runs shaders on the CPU (lavapipe, llvmpipe, SwiftShader).
    pub(crate) cpu_driver: bool,
    tuner: Mutex<Tuner>,
    /// Told once, when this process first times kernel variants (see `on_first_measure`).
    measure_notice: Mutex<Option<fn(&str)>>,
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Bound where a kernel's optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
    pub(crate) dummy_uniform: wgpu::Buffer,
    /// A lower bound on one binding than the adapter's (0: none), see `limit_bindings`.
    binding_cap: std::sync::atomic::AtomicU64,
}

fn instance(opts: &GpuOptions, backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.backends = backends;
    if opts.validation {
        // Not DEBUG: its shader debug info names WGSL as the source language, which older
        // validation layers reject as invalid SPIR-V.
        desc.flags |= wgpu::InstanceFlags::VALIDATION;
        desc.flags.remove(wgpu::InstanceFlags::DEBUG);
    }
    wgpu::Instance::new(desc)
}

/// Lower is preferred: real GPUs first, then CPU drivers, GL after Vulkan on the same device.
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    (device, u8::from(info.backend == wgpu::Backend::Gl))
}

/// Every adapter the options allow, best first. `auto` looks at GL only when no other back
/// end has an adapter (GL is the fallback, and probing it wakes EGL for nothing).
pub fn adapters(opts: &GpuOptions) -> Vec<wgpu::Adapter> {
    let primary = opts.backend.backends();
    let mut list = enumerate(opts, primary - wgpu::Backends::GL);
    if list.is_empty() && primary.contains(wgpu::Backends::GL) {
        list = enumerate(opts, wgpu::Backends::GL);
    }
    list
}

/// Every adapter on every back end (GL included), best first, for listings and tests.
pub fn all_adapters(opts: &GpuOptions) -> Vec<wgpu::Adapter> {
    enumerate(opts, wgpu::Backends::all())
}

fn enumerate(opts: &GpuOptions, backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    if backends.is_empty() {
        return Vec::new();
    }
    let mut list = pollster::block_on(instance(opts, backends).enumerate_adapters(backends));
    if let Some(want) = &opts.adapter {
        let want = want.to_lowercase();
        list.retain(|a| a.get_info().name.to_lowercase().contains(&want));
    }
    list.sort_by_key(|a| preference(&a.get_info()));
    list
}

/// Whether the subgroup GEMM can run: it is written for subgroups of exactly 8 lanes.
pub fn supports_subgroup_gemm(adapter: &wgpu::Adapter) -> bool {
    let info = adapter.get_info();
    adapter.features().contains(wgpu::Features::SUBGROUP)
        && info.subgroup_min_size == 8
        && info.subgroup_max_size == 8
}

/// The GEMM kernel for shapes not measured yet: subgroup broadcast where subgroups are 8
/// wide, register blocks on other CPU drivers, workgroup tiles on real GPUs.
pub fn default_gemm(adapter: &wgpu::Adapter) -> GemmPath {
    if supports_subgroup_gemm(adapter) {
        GemmPath::Subgroup
    } else if adapter.get_info().device_type == wgpu::DeviceType::Cpu {
        GemmPath::Register
    } else {
        GemmPath::Tiled
    }
}

impl Gpu {
    /// Opens the adapter the options pick.
    pub fn new(opts: &GpuOptions) -> Result<Gpu, GpuError> {
        let adapter = adapters(opts).into_iter().next().ok_or_else(|| {
            GpuError::NoAdapter(format!(
                "backend {:?}{}",
                opts.backend,
                opts.adapter
                    .as_ref()
                    .map(|a| format!(", adapter name containing '{a}'"))
                    .unwrap_or_default()
            ))
        })?;
        Gpu::from_adapter(adapter)
    }

    /// Opens a device on this adapter with the adapter's own limits and the optional
    /// features the kernels use (subgroups, timestamps) when present.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu, GpuError> {
        let info = adapter.get_info();
        let wanted = wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vae-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| GpuError::Device(format!("{} ({:?}): {e}", info.name, info.backend)))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            sink.lock()
                .unwrap()
                .push(format!("device lost ({reason:?}): {msg}"));
        });
        let default_gemm = default_gemm(&adapter);
        let cpu_driver = info.device_type == wgpu::DeviceType::Cpu;
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let dummy_uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy uniform"),
            size: 64,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: false,
        });
        log::info!(
            "using {} ({:?}, {:?}), default GEMM kernel {:?}",
            info.name,
            info.backend,
            info.device_type,
            default_gemm
        );
        let tuner = Mutex::new(Tuner::new(&info, &Shader::all_sources()));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            default_gemm,
            subgroup_gemm: supports_subgroup_gemm(&adapter),
            cpu_driver,
            tuner,
            measure_notice: Mutex::new(None),
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            errors,
            dummy,
            dummy_uniform,
            binding_cap: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The most bytes one matrix of a model's step may take: what the adapter binds at
    /// once (and holds in one buffer), or less after `limit_bindings`.
    pub fn binding_limit(&self) -> u64 {
        let cap = self.binding_cap.load(std::sync::atomic::Ordering::Relaxed);
        let adapter = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if cap == 0 {
            adapter
        } else {
            adapter.min(cap)
        }
    }

    /// Programs compiled from now on keep every matrix of a step under `bytes` (None: the
    /// adapter's limit), running convolutions in chunks of images where their columns
    /// would be larger: so that tests can run that path on small models.
    pub fn limit_bindings(&self, bytes: Option<u64>) {
        self.binding_cap
            .store(bytes.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// "name (backend)" for messages.
    pub fn describe(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// The GEMM kernels this device can run, its default first.
    pub fn gemm_paths(&self) -> Vec<GemmPath> {
        let mut paths = vec![self.default_gemm];
        for p in [
            GemmPath::SubgroupTex,
            GemmPath::SubgroupTexNarrow,
            GemmPath::Subgroup,
            GemmPath::RegisterTex,
            GemmPath::Register,
            GemmPath::Tiled,
        ] {
            let runs = !p.needs_subgroups() || self.subgroup_gemm;
            if runs && !paths.contains(&p) {
                paths.push(p);
            }
        }
        paths
    }

    /// Calls `notice` with a one-line message the first time this process times kernel
    /// variants: the CLI prints it, so that a first run which spends seconds measuring (and,
    /// on CPU drivers, compiling) says why.
    pub fn on_first_measure(&self, notice: fn(&str)) {
        *self.measure_notice.lock().unwrap() = Some(notice);
    }

    /// Which of `candidates` (variants of one kernel, the default first) runs for the problem
    /// `key`: the one function that decides. The first time a device meets a problem,
    /// `measure` times the candidates (µs each) and the fastest is cached (see `tune`);
    /// with `VAE_GPU_TUNE=off`, unmeasured problems get the default.
    pub fn choose<K: Copy + std::fmt::Debug>(
        &self,
        key: &str,
        candidates: &[K],
        measure: impl FnOnce(&Gpu) -> Result<Vec<(K, f64)>, GpuError>,
    ) -> Result<K, GpuError> {
        let name = |k: &K| format!("{k:?}");
        let mut tuner = self.tuner.lock().unwrap();
        let first = tuner.seen.insert(key.to_string());
        let fresh = !(tuner.remeasure && first);
        let known = tuner
            .get(key)
            .filter(|_| fresh)
            .and_then(|m| candidates.iter().find(|c| name(c) == m.pick));
        if let Some(k) = known {
            return Ok(*k);
        }
        if tuner.mode() == TuneMode::Off || candidates.len() == 1 {
            return Ok(candidates[0]);
        }
        if let Some(notice) = self.measure_notice.lock().unwrap().take() {
            let kept = tuner
                .cache_path()
                .map_or("memory".to_string(), |p| p.display().to_string());
            notice(&format!(
                "timing kernel variants for shapes new to {} (once per device and shape; the fastest are kept in {kept})",
                self.describe()
            ));
        }
        let micros = measure(self)?;
        let pick = micros
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(candidates[0], |(k, _)| *k);
        log::info!("{key}: {pick:?} ({micros:?} us)");
        let measured = Measured {
            pick: name(&pick),
            micros: micros.iter().map(|(k, us)| (name(k), *us)).collect(),
        };
        tuner.insert(key, measured);
        Ok(pick)
    }

    /// The tuner's state for this device (for `vae-gpu info` and `tune`).
    pub fn tuner(&self) -> std::sync::MutexGuard<'_, Tuner> {
        self.tuner.lock().unwrap()
    }

    /// Returns the first validation error or device loss seen since the last check.
    pub fn check(&self) -> Result<(), GpuError> {
        let mut errors = self.errors.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut *errors);
        Err(GpuError::Validation(all.join("; ")))
    }

    /// The compute pipeline for an entry point, compiled once per process.
    /// `constants` are the module's override constants (booleans as 0/1).
    pub fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, u32)],
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = PipelineKey {
            shader,
            entry,
            constants: constants.to_vec(),
        };
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        if shader.needs_subgroups() && !self.features.contains(wgpu::Features::SUBGROUP) {
            return Err(GpuError::Unsupported(format!(
                "{} needs subgroups, which {} lacks",
                shader.file(),
                self.describe()
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .modules
            .lock()
            .unwrap()
            .entry(shader)
            .or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.file()),
                        source: wgpu::ShaderSource::Wgsl(shader.source().into()),
                    })
            })
            .clone();
        let consts: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, f64::from(v))).collect();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &consts,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Shader(format!(
                "{} `{entry}`: {err}",
                shader.file()
            )));
        }
        // Each new pipeline costs a compile (about a second of LLVM on CPU drivers).
        log::debug!("new pipeline: {} `{entry}` {constants:?}", shader.file());
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }
}
