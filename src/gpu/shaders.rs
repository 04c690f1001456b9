//! The WGSL sources. Each kernel family is one file in shaders/; small shared pieces
//! (activation functions, launch indexing, the GEMM bindings) are prepended at build time.

macro_rules! shader_source {
    ($($file:literal),+) => {
        concat!($(include_str!(concat!("../../shaders/", $file)), "\n"),+)
    };
}

/// A kernel family: one WGSL module, one or more entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Gemm,
    GemmSubgroup,
    GemmRegister,
    GemmSubgroupTex,
    GemmRegisterTex,
    Elementwise,
    BiasGrad,
    BiasGradTex,
    Conv,
    ConvTex,
    Sample,
    Loss,
    LossTex,
    Iwae,
    IwaeWeights,
    Vamp,
    Level,
    Moments,
    Adam,
    Gather,
    Softmax,
    TableLoss,
    GroupNorm,
    Tensor,
    Gru,
    Sequence,
    Clip,
    Tokens,
}

impl Shader {
    pub const ALL: [Shader; 28] = [
        Shader::Gemm,
        Shader::GemmSubgroup,
        Shader::GemmRegister,
        Shader::GemmSubgroupTex,
        Shader::GemmRegisterTex,
        Shader::Elementwise,
        Shader::BiasGrad,
        Shader::BiasGradTex,
        Shader::Conv,
        Shader::ConvTex,
        Shader::Sample,
        Shader::Loss,
        Shader::LossTex,
        Shader::Iwae,
        Shader::IwaeWeights,
        Shader::Vamp,
        Shader::Level,
        Shader::Moments,
        Shader::Adam,
        Shader::Gather,
        Shader::Softmax,
        Shader::TableLoss,
        Shader::GroupNorm,
        Shader::Tensor,
        Shader::Gru,
        Shader::Sequence,
        Shader::Clip,
        Shader::Tokens,
    ];

    /// Every module's source, which the tuner's cache is keyed by: a change to any kernel
    /// invalidates the measured choices.
    pub fn all_sources() -> String {
        Shader::ALL.map(Shader::source).concat()
    }

    /// The file under shaders/ that holds this family's kernels.
    pub fn file(self) -> &'static str {
        match self {
            Shader::Gemm => "gemm.wgsl",
            Shader::GemmSubgroup => "gemm_subgroup.wgsl",
            Shader::GemmRegister => "gemm_register.wgsl",
            Shader::GemmSubgroupTex => "gemm_subgroup_tex.wgsl",
            Shader::GemmRegisterTex => "gemm_register.wgsl",
            Shader::Elementwise => "elementwise.wgsl",
            Shader::BiasGrad | Shader::BiasGradTex => "bias_grad.wgsl",
            Shader::Conv => "conv.wgsl",
            Shader::ConvTex => "conv.wgsl",
            Shader::Sample => "sample.wgsl",
            Shader::Loss => "loss.wgsl",
            Shader::LossTex => "loss.wgsl",
            Shader::Iwae => "iwae.wgsl",
            Shader::IwaeWeights => "iwae_weights.wgsl",
            Shader::Vamp => "vamp.wgsl",
            Shader::Level => "level.wgsl",
            Shader::Moments => "moments.wgsl",
            Shader::Adam => "adam.wgsl",
            Shader::Gather => "gather.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::TableLoss => "table_loss.wgsl",
            Shader::GroupNorm => "groupnorm.wgsl",
            Shader::Tensor => "tensor.wgsl",
            Shader::Gru => "gru.wgsl",
            Shader::Sequence => "sequence.wgsl",
            Shader::Clip => "clip.wgsl",
            Shader::Tokens => "tokens.wgsl",
        }
    }

    /// The complete module source, shared pieces included.
    pub fn source(self) -> &'static str {
        match self {
            Shader::Gemm => shader_source!(
                "activation.wgsl",
                "gemm_common.wgsl",
                "gemm_buffers.wgsl",
                "gemm.wgsl"
            ),
            Shader::GemmSubgroup => shader_source!(
                "activation.wgsl",
                "gemm_common.wgsl",
                "gemm_buffers.wgsl",
                "conv_params.wgsl",
                "gemm_subgroup.wgsl"
            ),
            Shader::GemmRegister => shader_source!(
                "activation.wgsl",
                "gemm_common.wgsl",
                "gemm_buffers.wgsl",
                "gemm_register.wgsl"
            ),
            Shader::GemmSubgroupTex => shader_source!(
                "activation.wgsl",
                "gemm_common.wgsl",
                "texel.wgsl",
                "gemm_textures.wgsl",
                "gemm_subgroup_tex.wgsl"
            ),
            Shader::GemmRegisterTex => shader_source!(
                "activation.wgsl",
                "gemm_common.wgsl",
                "texel.wgsl",
                "gemm_textures.wgsl",
                "gemm_register.wgsl"
            ),
            Shader::Elementwise => {
                shader_source!("index.wgsl", "activation.wgsl", "elementwise.wgsl")
            }
            Shader::BiasGrad => {
                shader_source!("index.wgsl", "reads_buffer.wgsl", "bias_grad.wgsl")
            }
            Shader::BiasGradTex => shader_source!(
                "index.wgsl",
                "texel.wgsl",
                "reads_texture.wgsl",
                "bias_grad.wgsl"
            ),
            Shader::Conv => shader_source!(
                "index.wgsl",
                "activation.wgsl",
                "conv_params.wgsl",
                "reads_buffer.wgsl",
                "conv.wgsl"
            ),
            Shader::ConvTex => shader_source!(
                "index.wgsl",
                "activation.wgsl",
                "conv_params.wgsl",
                "texel.wgsl",
                "reads_texture.wgsl",
                "conv.wgsl"
            ),
            Shader::Sample => shader_source!("index.wgsl", "philox.wgsl", "sample.wgsl"),
            Shader::Loss => shader_source!(
                "index.wgsl",
                "reads_buffer.wgsl",
                "loss_params.wgsl",
                "loss.wgsl"
            ),
            Shader::LossTex => shader_source!(
                "index.wgsl",
                "texel.wgsl",
                "reads_texture.wgsl",
                "loss_params.wgsl",
                "loss.wgsl"
            ),
            Shader::Iwae => shader_source!("iwae.wgsl"),
            Shader::IwaeWeights => shader_source!("index.wgsl", "iwae_weights.wgsl"),
            Shader::Vamp => shader_source!("index.wgsl", "vamp.wgsl"),
            Shader::Level => shader_source!("index.wgsl", "level.wgsl"),
            Shader::Moments => shader_source!("moments.wgsl"),
            Shader::Adam => shader_source!("index.wgsl", "texel.wgsl", "adam.wgsl"),
            Shader::Gather => shader_source!("index.wgsl", "philox.wgsl", "gather.wgsl"),
            Shader::Softmax => shader_source!("index.wgsl", "softmax.wgsl"),
            Shader::TableLoss => shader_source!("loss_params.wgsl", "table_loss.wgsl"),
            Shader::GroupNorm => {
                shader_source!("index.wgsl", "activation.wgsl", "groupnorm.wgsl")
            }
            Shader::Tensor => shader_source!("index.wgsl", "activation.wgsl", "tensor.wgsl"),
            Shader::Gru => shader_source!("index.wgsl", "gru.wgsl"),
            Shader::Sequence => shader_source!("index.wgsl", "sequence.wgsl"),
            Shader::Clip => shader_source!("index.wgsl", "clip.wgsl"),
            Shader::Tokens => shader_source!("index.wgsl", "philox.wgsl", "tokens.wgsl"),
        }
    }

    /// Whether the module needs the adapter's subgroup feature.
    pub fn needs_subgroups(self) -> bool {
        matches!(self, Shader::GemmSubgroup | Shader::GemmSubgroupTex)
    }
}
