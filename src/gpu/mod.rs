//! The GPU runtime: device setup, shader sources, tensors, readback and dispatch recording.

mod context;
mod readback;
pub mod shaders;
mod tensor;
pub mod texture;
pub mod tune;

pub use context::{
    adapters, all_adapters, default_gemm, supports_subgroup_gemm, BackendChoice, GemmPath, Gpu,
    GpuOptions,
};
pub use readback::{read_buffer, PendingRead};
pub use tensor::{round_up4, Matrix};

/// Errors from the GPU runtime, each with the context a user needs.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found for {0}; run `vae-gpu info` to list adapters (install mesa-vulkan-drivers for a CPU Vulkan driver)")]
    NoAdapter(String),
    #[error("could not open a device on {0}")]
    Device(String),
    #[error("shader {0}")]
    Shader(String),
    #[error("GPU validation error: {0}")]
    Validation(String),
    #[error("unsupported on this adapter: {0}")]
    Unsupported(String),
    #[error("shape mismatch in {0}")]
    Shape(String),
    #[error("too large for this adapter: {0}")]
    Limit(String),
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
    #[error("{0}")]
    Config(String),
}

impl GpuError {
    /// Whether the GPU or its driver failed (no adapter, a lost device, a shader the driver
    /// rejects), as opposed to a request it cannot serve.
    pub fn is_device_failure(&self) -> bool {
        matches!(
            self,
            GpuError::NoAdapter(_)
                | GpuError::Device(_)
                | GpuError::Shader(_)
                | GpuError::Validation(_)
                | GpuError::Readback(_)
        )
    }
}

/// One recorded kernel launch: pipeline, bindings and grid, ready to go into a pass.
/// Model code builds these once and records them every step.
pub struct Dispatch {
    /// What the launch computes, for profiles and messages.
    pub label: String,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) bind_group: wgpu::BindGroup,
    pub(crate) workgroups: [u32; 3],
    /// The launch's parameter block, rewritten with `queue.write_buffer` when it changes.
    pub params: wgpu::Buffer,
    /// Textures the launch reads, copied from their matrices just before it runs.
    pub(crate) textures: Vec<texture::TextureOperand>,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Records launches in order: runs of launches share a compute pass; a launch that reads
/// textures starts a new pass after the copies that fill them (a pass boundary orders the
/// copies after the launches that wrote their source matrices).
pub fn encode(encoder: &mut wgpu::CommandEncoder, dispatches: &[&Dispatch]) {
    let mut rest = dispatches;
    while let Some((first, _)) = rest.split_first() {
        for t in &first.textures {
            t.record_copy(encoder);
        }
        let run = 1 + rest[1..]
            .iter()
            .take_while(|d| d.textures.is_empty())
            .count();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        for d in &rest[..run] {
            d.record(&mut pass);
        }
        drop(pass);
        rest = &rest[run..];
    }
}

impl Gpu {
    /// Records the launches in order (see `encode`) and submits them as one command buffer.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<(), GpuError> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        encode(&mut encoder, dispatches);
        self.queue.submit([encoder.finish()]);
        self.check()
    }

    /// Waits until the queue is idle.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        self.check()
    }

    /// A uniform buffer holding `params`, rewritable later.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: std::mem::size_of::<T>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue
            .write_buffer(&buffer, 0, bytemuck::bytes_of(params));
        buffer
    }

    /// A 2-D grid of workgroups covering `groups` workgroups (kernels index it with
    /// `flat_index` and ignore the overshoot).
    pub fn grid(&self, groups: u64) -> Result<[u32; 3], GpuError> {
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension);
        let groups = groups.max(1);
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(GpuError::Limit(format!(
                "{groups} workgroups exceed {max} x {max}"
            )));
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Bind group for a dispatch: entry i of `resources` goes to binding `bindings[i]`.
    pub(crate) fn dispatch(
        &self,
        label: String,
        pipeline: wgpu::ComputePipeline,
        params: wgpu::Buffer,
        bindings: &[(u32, wgpu::BindingResource<'_>)],
        workgroups: [u32; 3],
    ) -> Dispatch {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        entries.extend(
            bindings
                .iter()
                .map(|(binding, resource)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: resource.clone(),
                }),
        );
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch {
            label,
            pipeline,
            bind_group,
            workgroups,
            params,
            textures: Vec::new(),
        }
    }
}
