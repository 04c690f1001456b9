//! `vae-gpu info`: the adapters wgpu sees and the one vae-gpu would pick.

use super::DeviceArgs;
use crate::gpu::shaders::Shader;
use crate::gpu::tune::Tuner;
use crate::gpu::{adapters, all_adapters, default_gemm, GpuOptions};

pub fn run(device: &DeviceArgs) -> anyhow::Result<()> {
    let chosen = adapters(&device.options())
        .into_iter()
        .next()
        .map(|a| a.get_info());
    // List everything, whatever the filters, so a user can see what to ask for.
    let all = all_adapters(&GpuOptions::default());
    if all.is_empty() {
        anyhow::bail!(
            "no GPU adapter found on any back end; install a Vulkan driver (on Debian/Ubuntu: \
             apt-get install mesa-vulkan-drivers) or a GL driver"
        );
    }
    for adapter in &all {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let mark = if chosen.as_ref() == Some(&info) {
            "*"
        } else {
            " "
        };
        println!(
            "{mark} {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        );
        println!("    driver: {} {}", info.driver, info.driver_info);
        println!(
            "    limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, \
             invocations/workgroup {}, storage buffers/stage {}",
            limits.max_storage_buffer_binding_size >> 20,
            limits.max_buffer_size >> 20,
            limits.max_compute_workgroup_storage_size >> 10,
            limits.max_compute_invocations_per_workgroup,
            limits.max_storage_buffers_per_shader_stage
        );
        let f = adapter.features();
        println!(
            "    features: subgroups {} (size {}..{}), timestamp queries {}",
            yes(f.contains(wgpu::Features::SUBGROUP)),
            info.subgroup_min_size,
            info.subgroup_max_size,
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY)),
        );
        let tuner = Tuner::new(&info, &Shader::all_sources());
        println!(
            "    kernels: {} measured choice(s) cached{}; GEMM {:?} for unmeasured shapes{}",
            tuner.all().len(),
            tuner
                .cache_path()
                .map(|p| format!(" in {}", p.display()))
                .unwrap_or_default(),
            default_gemm(adapter),
            if tuner.all().is_empty() {
                " until measured (`vae-gpu tune`, or on first use)"
            } else {
                ""
            }
        );
        for (shape, m) in tuner.all() {
            println!("      {shape}: {}", m.pick);
        }
    }
    match chosen {
        Some(info) => println!(
            "* = used with these options: {} ({:?})",
            info.name, info.backend
        ),
        None => println!(
            "no adapter matches --backend {:?} --adapter {:?}",
            device.backend, device.adapter
        ),
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
