//! Copies from GPU buffers to the host: blocking for tests and one-off results, and
//! non-blocking (`PendingRead`) so training never waits on the GPU to report a loss.

use std::sync::{Arc, Mutex};

use super::{Gpu, GpuError};

/// A copy to a staging buffer whose mapping completes in the background.
pub struct PendingRead {
    staging: wgpu::Buffer,
    done: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>>,
}

impl PendingRead {
    /// Records a copy of `size` bytes at `offset` of `src` into `encoder`. Call `start` once
    /// the encoder is submitted.
    pub fn record(
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> PendingRead {
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(src, offset, &staging, 0, size);
        PendingRead {
            staging,
            done: Arc::new(Mutex::new(None)),
        }
    }

    /// Asks for the mapping; it completes during later device polls.
    pub fn start(&self) {
        let done = self.done.clone();
        self.staging.map_async(wgpu::MapMode::Read, .., move |r| {
            *done.lock().unwrap() = Some(r)
        });
    }

    /// The bytes if the copy has landed, without blocking.
    pub fn try_take(&self, gpu: &Gpu) -> Result<Option<Vec<u8>>, GpuError> {
        gpu.device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        self.take_if_done()
    }

    /// The bytes, waiting for the GPU if needed.
    pub fn wait(&self, gpu: &Gpu) -> Result<Vec<u8>, GpuError> {
        gpu.wait()?;
        // When threads share the device, another thread's poll may have collected this
        // mapping's callback and not run it yet: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(bytes) = self.take_if_done()? {
                return Ok(bytes);
            }
            if std::time::Instant::now() > deadline {
                return Err(GpuError::Readback(
                    "mapping did not complete within 60 s".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
            gpu.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
        }
    }

    fn take_if_done(&self) -> Result<Option<Vec<u8>>, GpuError> {
        match self.done.lock().unwrap().take() {
            None => Ok(None),
            Some(Err(e)) => Err(GpuError::Readback(e.to_string())),
            Some(Ok(())) => {
                let bytes = self
                    .staging
                    .get_mapped_range(..)
                    .map_err(|e| GpuError::Readback(e.to_string()))?
                    .to_vec();
                self.staging.unmap();
                Ok(Some(bytes))
            }
        }
    }
}

/// Reads `size` bytes at `offset` of `src`, blocking until they arrive.
pub fn read_buffer(
    gpu: &Gpu,
    src: &wgpu::Buffer,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>, GpuError> {
    let mut encoder = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("read"),
        });
    let pending = PendingRead::record(gpu, &mut encoder, src, offset, size);
    gpu.queue.submit([encoder.finish()]);
    pending.start();
    pending.wait(gpu)
}
