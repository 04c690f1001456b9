//! `vae-gpu info`: the adapters wgpu sees and the one vae-gpu would pick.

use super::DeviceArgs;
use crate::gpu::{adapters, all_adapters, supports_subgroup_gemm, GpuOptions};

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
            "    features: subgroups {} (size {}..{}), timestamp queries {}; GEMM kernel: {}",
            yes(f.contains(wgpu::Features::SUBGROUP)),
            info.subgroup_min_size,
            info.subgroup_max_size,
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY)),
            if supports_subgroup_gemm(adapter) {
                "subgroup"
            } else {
                "tiled"
            }
        );
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
