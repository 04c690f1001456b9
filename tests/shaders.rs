//! Every WGSL module parses and validates with naga and translates to the Metal (MSL),
//! DX12 (HLSL), Vulkan (SPIR-V) and GL (GLSL) back ends, so back ends we cannot run here
//! are still checked at the shader level. Each failure names the file and the target.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use vae_gpu::gpu::shaders::Shader;

fn validated(shader: Shader) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| {
        panic!(
            "{}: parse: {}",
            shader.file(),
            e.emit_to_string(shader.source())
        )
    });
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| {
            panic!(
                "{}: validate: {}",
                shader.file(),
                e.emit_to_string(shader.source())
            )
        });
    (module, info)
}

/// The module with every combination of its override constants at 0 and 1 applied, as a
/// pipeline would see it, labelled for messages.
fn variants(shader: Shader) -> Vec<(String, naga::Module, naga::valid::ModuleInfo)> {
    let (module, info) = validated(shader);
    let names: Vec<String> = module
        .overrides
        .iter()
        .filter_map(|(_, o)| o.name.clone())
        .collect();
    (0..1u32 << names.len())
        .map(|bits| {
            let mut constants = naga::back::PipelineConstants::default();
            for (i, name) in names.iter().enumerate() {
                constants.insert(name.clone(), f64::from((bits >> i) & 1));
            }
            let (m, i) =
                naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
                    .unwrap_or_else(|e| panic!("{}: overrides {constants:?}: {e}", shader.file()));
            (
                format!("{} {constants:?}", shader.file()),
                m.into_owned(),
                i.into_owned(),
            )
        })
        .collect()
}

fn entry_points(module: &naga::Module) -> Vec<String> {
    module.entry_points.iter().map(|e| e.name.clone()).collect()
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let registered: Vec<String> = Shader::ALL
        .iter()
        .flat_map(|s| {
            // Every file included into some module counts as registered.
            std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| {
                    s.source()
                        .contains(&std::fs::read_to_string(dir.join(f)).unwrap())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            registered.contains(&name),
            "shaders/{name} is not part of any module"
        );
    }
}

#[test]
fn shaders_validate() {
    for shader in Shader::ALL {
        let (module, _) = validated(shader);
        assert!(
            !module.entry_points.is_empty(),
            "{}: no entry points",
            shader.file()
        );
    }
}

#[test]
fn shaders_translate_to_spirv() {
    for (label, module, info) in Shader::ALL.into_iter().flat_map(variants) {
        for ep in entry_points(&module) {
            let pipeline = spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: ep.clone(),
            };
            spv::write_vec(&module, &info, &spv::Options::default(), Some(&pipeline))
                .unwrap_or_else(|e| panic!("{label} `{ep}` -> SPIR-V: {e}"));
        }
    }
}

#[test]
fn shaders_translate_to_msl() {
    for (label, module, info) in Shader::ALL.into_iter().flat_map(variants) {
        let options = msl::Options {
            lang_version: (2, 4),
            fake_missing_bindings: true,
            ..Default::default()
        };
        msl::write_string(&module, &info, &options, &msl::PipelineOptions::default())
            .unwrap_or_else(|e| panic!("{label} -> MSL: {e}"));
    }
}

#[test]
fn shaders_translate_to_hlsl() {
    for (label, module, info) in Shader::ALL.into_iter().flat_map(variants) {
        let options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_0,
            fake_missing_bindings: true,
            ..Default::default()
        };
        let mut out = String::new();
        hlsl::Writer::new(&mut out, &options, &hlsl::PipelineOptions::default())
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{label} -> HLSL: {e}"));
    }
}

#[test]
fn shaders_translate_to_glsl() {
    for shader in Shader::ALL {
        // GL has no subgroup broadcast in compute on our targets; that kernel is Vulkan-only
        // and devices without subgroups use the tiled GEMM.
        if shader.needs_subgroups() {
            continue;
        }
        for (label, module, info) in variants(shader) {
            for ep in entry_points(&module) {
                let options = glsl::Options {
                    version: glsl::Version::Desktop(430),
                    ..Default::default()
                };
                let pipeline = glsl::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: ep.clone(),
                    multiview: None,
                };
                let mut out = String::new();
                glsl::Writer::new(
                    &mut out,
                    &module,
                    &info,
                    &options,
                    &pipeline,
                    naga::proc::BoundsCheckPolicies::default(),
                )
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("{label} `{ep}` -> GLSL: {e}"));
            }
        }
    }
}
