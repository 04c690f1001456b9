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
    let mut text = String::new();
    let mut listed = Vec::new();
    for adapter in &all {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let is_chosen = chosen.as_ref() == Some(&info);
        let f = adapter.features();
        let (subgroups, timestamps) = (
            f.contains(wgpu::Features::SUBGROUP),
            f.contains(wgpu::Features::TIMESTAMP_QUERY),
        );
        let tuner = Tuner::new(&info, &Shader::all_sources());
        text += &format!(
            "{} {} ({:?}, {:?})\n    driver: {} {}\n",
            if is_chosen { "*" } else { " " },
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info
        );
        text += &format!(
            "    limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, \
             invocations/workgroup {}, storage buffers/stage {}\n",
            limits.max_storage_buffer_binding_size >> 20,
            limits.max_buffer_size >> 20,
            limits.max_compute_workgroup_storage_size >> 10,
            limits.max_compute_invocations_per_workgroup,
            limits.max_storage_buffers_per_shader_stage
        );
        text += &format!(
            "    features: subgroups {} (size {}..{}), timestamp queries {}\n",
            yes(subgroups),
            info.subgroup_min_size,
            info.subgroup_max_size,
            yes(timestamps),
        );
        text += &format!(
            "    kernels: {} measured choice(s) cached{}; GEMM {:?} for unmeasured shapes{}\n",
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
            text += &format!("      {shape}: {}\n", m.pick);
        }
        listed.push(serde_json::json!({
            "name": info.name,
            "backend": format!("{:?}", info.backend),
            "device_type": format!("{:?}", info.device_type),
            "driver": info.driver,
            "driver_info": info.driver_info,
            "chosen": is_chosen,
            "storage_binding_bytes": limits.max_storage_buffer_binding_size,
            "buffer_bytes": limits.max_buffer_size,
            "subgroups": subgroups,
            "subgroup_size": [info.subgroup_min_size, info.subgroup_max_size],
            "timestamp_queries": timestamps,
            "default_gemm": format!("{:?}", default_gemm(adapter)),
            "kernels": tuner.all().iter().map(|(shape, m)| (shape.clone(), m.pick.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        }));
    }
    text += &match &chosen {
        Some(info) => format!(
            "* = used with these options: {} ({:?})",
            info.name, info.backend
        ),
        None => format!(
            "no adapter matches --backend {:?} --adapter {:?}",
            device.backend, device.adapter
        ),
    };
    super::report(
        &text,
        serde_json::json!({
            "adapters": listed,
            "chosen": chosen.map(|i| format!("{} ({:?})", i.name, i.backend)),
        }),
    );
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
