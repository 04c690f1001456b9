//! The layer list of each architecture, with the shapes, activations and checkpoint names
//! the parameters, the launch program and the checkpoints are built from.
//!
//! mlp:  fc1 [, fc1_1 ...] -> (fc21 | fc22) -> z -> fc3 [, fc3_1 ...] -> fc4
//! conv: conv1 .. convN (k4 s2 p1, ReLU) -> fc_enc (mu | logvar) -> z -> fc_dec (ReLU)
//!       -> deconvN .. deconv1 (k4 s2 p1, ReLU but the last) -> logits

use super::config::ModelConfig;
use crate::ops::conv::Shape;
use crate::ops::Activation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Linear,
    Conv { k: usize, stride: usize, pad: usize },
    ConvT { k: usize, stride: usize, pad: usize },
}

/// Checkpoint names of a layer's tensors with the rows of the weight each takes (the fused
/// mu/logvar heads of the MLP are stored as two PyTorch layers).
pub type Parts = Vec<(String, usize)>;

#[derive(Clone, Debug)]
pub struct LayerDef {
    pub kind: LayerKind,
    pub input: Shape,
    pub output: Shape,
    pub act: Activation,
    pub parts: Parts,
    /// A Linear whose input is an image: flattened (h, w, c) here, (c, h, w) in PyTorch.
    pub chw_in: bool,
    /// A Linear whose output is an image, likewise.
    pub chw_out: bool,
}

impl LayerDef {
    /// The weight as a matrix: Linear [out, in], Conv2d [Cout, Cin*K*K],
    /// ConvTranspose2d [Cin, Cout*K*K] (PyTorch's layouts, flattened).
    pub fn weight_dims(&self) -> (usize, usize) {
        match self.kind {
            LayerKind::Linear => (self.output.numel(), self.input.numel()),
            LayerKind::Conv { k, .. } => (self.output.c, self.input.c * k * k),
            LayerKind::ConvT { k, .. } => (self.input.c, self.output.c * k * k),
        }
    }

    pub fn bias_len(&self) -> usize {
        match self.kind {
            LayerKind::Linear => self.output.numel(),
            _ => self.output.c,
        }
    }

    /// PyTorch's shape of the weight part that spans `rows` rows.
    pub fn torch_weight_shape(&self, rows: usize) -> Vec<usize> {
        let (_, cols) = self.weight_dims();
        match self.kind {
            LayerKind::Linear => vec![rows, cols],
            LayerKind::Conv { k, .. } => vec![rows, self.input.c, k, k],
            LayerKind::ConvT { k, .. } => vec![rows, self.output.c, k, k],
        }
    }
}

/// A model's layers and the index of the layer whose output is mu | logvar.
pub struct Arch {
    pub layers: Vec<LayerDef>,
    pub heads: usize,
}

fn flat(n: usize) -> Shape {
    Shape { h: 1, w: 1, c: n }
}

fn linear(input: Shape, output: Shape, act: Activation, parts: Parts) -> LayerDef {
    LayerDef {
        kind: LayerKind::Linear,
        input,
        output,
        act,
        parts,
        chw_in: false,
        chw_out: false,
    }
}

impl Arch {
    pub fn new(c: &ModelConfig) -> Result<Arch, String> {
        match c.arch.as_str() {
            "mlp" => Ok(Arch::mlp(c)),
            "conv" => Arch::conv(c),
            other => Err(format!("unknown architecture '{other}' (mlp or conv)")),
        }
    }

    fn mlp(c: &ModelConfig) -> Arch {
        let name = |base: &str, i: usize| {
            if i == 0 {
                base.to_string()
            } else {
                format!("{base}_{i}")
            }
        };
        let mut layers = Vec::new();
        let mut width = c.input_dim();
        for (i, &h) in c.hidden.iter().enumerate() {
            layers.push(linear(
                flat(width),
                flat(h),
                Activation::Relu,
                vec![(name("fc1", i), h)],
            ));
            width = h;
        }
        let heads = layers.len();
        let parts = vec![
            ("fc21".to_string(), c.latent),
            ("fc22".to_string(), c.latent),
        ];
        layers.push(linear(
            flat(width),
            flat(2 * c.latent),
            Activation::Identity,
            parts,
        ));
        width = c.latent;
        for (i, &h) in c.hidden.iter().rev().enumerate() {
            layers.push(linear(
                flat(width),
                flat(h),
                Activation::Relu,
                vec![(name("fc3", i), h)],
            ));
            width = h;
        }
        layers.push(linear(
            flat(width),
            flat(c.output_dim()),
            Activation::Identity,
            vec![("fc4".to_string(), c.output_dim())],
        ));
        Arch { layers, heads }
    }

    fn conv(c: &ModelConfig) -> Result<Arch, String> {
        let n = c.conv_channels.len();
        let div = 1 << n;
        if n == 0 || !c.height.is_multiple_of(div) || !c.width.is_multiple_of(div) {
            return Err(format!(
                "the conv architecture halves the image {n} times: {}x{} must divide by {div} (resize image data with --size; an array must have such a shape)",
                c.height, c.width
            ));
        }
        if let Some(w) = c.conv_channels.iter().find(|w| **w == 0 || **w % 4 != 0) {
            return Err(format!(
                "conv channel widths must be positive multiples of 4, got {w}"
            ));
        }
        let conv = LayerKind::Conv {
            k: 4,
            stride: 2,
            pad: 1,
        };
        let convt = LayerKind::ConvT {
            k: 4,
            stride: 2,
            pad: 1,
        };
        let mut shapes = vec![Shape {
            h: c.height,
            w: c.width,
            c: c.channels,
        }];
        for (i, &w) in c.conv_channels.iter().enumerate() {
            shapes.push(Shape {
                h: c.height >> (i + 1),
                w: c.width >> (i + 1),
                c: w,
            });
        }
        let mut layers = Vec::new();
        for i in 0..n {
            let parts = vec![(format!("conv{}", i + 1), shapes[i + 1].c)];
            layers.push(LayerDef {
                kind: conv,
                input: shapes[i],
                output: shapes[i + 1],
                act: Activation::Relu,
                parts,
                chw_in: false,
                chw_out: false,
            });
        }
        let code = shapes[n];
        let heads = layers.len();
        let mut enc = linear(
            code,
            flat(2 * c.latent),
            Activation::Identity,
            vec![("fc_enc".to_string(), 2 * c.latent)],
        );
        enc.chw_in = true;
        layers.push(enc);
        let mut dec = linear(
            flat(c.latent),
            code,
            Activation::Relu,
            vec![("fc_dec".to_string(), code.numel())],
        );
        dec.chw_out = true;
        layers.push(dec);
        for i in (0..n).rev() {
            let act = if i == 0 {
                Activation::Identity
            } else {
                Activation::Relu
            };
            let parts = vec![(format!("deconv{}", i + 1), shapes[i + 1].c)];
            layers.push(LayerDef {
                kind: convt,
                input: shapes[i + 1],
                output: shapes[i],
                act,
                parts,
                chw_in: false,
                chw_out: false,
            });
        }
        Ok(Arch { layers, heads })
    }
}
