//! Architectures: the built-in ones (the MLP and conv VAEs of PyTorch's examples, the ResNet
//! VAE of `shared/peers/vae_common.py`) written in the architecture format of `spec`, which
//! also reads them from files; `spec::build` turns one into a graph.

pub mod spec;

pub use spec::{build, ArchSpec, ConvLayer, Heads, Layer, Size, Stacked};

use crate::ops::conv::Shape;

fn relu() -> Option<String> {
    Some("relu".into())
}

fn numbered(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_string()
    } else {
        format!("{base}_{i}")
    }
}

/// PyTorch's example VAE: fc1 [, fc1_1 ...] (`act`, e.g. relu) -> fc21 | fc22 -> z -> fc3
/// [, fc3_1 ...] (`act`) -> fc4, on the flattened data (vae-gpu's (h, w, c) order).
/// `below`: stochastic layers under the code, bottom first, each (its size, the hidden
/// widths up to the layer above); layer L (2, 3, ...) then has an encoder encL [, encL_1
/// ...] -> encL_mu | encL_logvar from the code below, and a decoder decL [, decL_1 ...] ->
/// prior{L-1}_mu | prior{L-1}_logvar, the prior of the layer below (Burda et al. 2016).
pub fn mlp(hidden: &[usize], act: &str, below: &[(usize, Vec<usize>)]) -> ArchSpec {
    let act = || Some(act.to_string());
    let linear = |n: usize, name: String, act| Layer::Linear {
        out: Size::Count(n),
        act,
        name: Some(name),
        repeat: 1,
    };
    let mut encoder = vec![Layer::Flatten];
    encoder.extend(
        hidden
            .iter()
            .enumerate()
            .map(|(i, &h)| linear(h, numbered("fc1", i), act())),
    );
    let mut decoder: Vec<Layer> = hidden
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &h)| linear(h, numbered("fc3", i), act()))
        .collect();
    decoder.push(Layer::Linear {
        out: Size::Word("data".into()),
        act: None,
        name: Some("fc4".into()),
        repeat: 1,
    });
    let below = below
        .iter()
        .enumerate()
        .map(|(i, (latent, hidden))| {
            let level = i + 2;
            let (enc, dec) = (format!("enc{level}"), format!("dec{level}"));
            let prior = format!("prior{}", level - 1);
            Stacked {
                latent: *latent,
                encoder: hidden
                    .iter()
                    .enumerate()
                    .map(|(k, &h)| linear(h, numbered(&enc, k), act()))
                    .collect(),
                heads: Heads::Two([format!("{enc}_mu"), format!("{enc}_logvar")]),
                decoder: hidden
                    .iter()
                    .rev()
                    .enumerate()
                    .map(|(k, &h)| linear(h, numbered(&dec, k), act()))
                    .collect(),
                prior: Heads::Two([format!("{prior}_mu"), format!("{prior}_logvar")]),
            }
        })
        .collect();
    ArchSpec {
        latent: None,
        encoder,
        heads: Heads::Two(["fc21".into(), "fc22".into()]),
        decoder,
        below,
    }
}

/// The conv VAE: conv1 .. convN (k4 s2 p1, ReLU) -> fc_enc (mu | logvar) -> z -> fc_dec
/// (ReLU, to the last conv's image) -> deconvN .. deconv1 (k4 s2 p1, ReLU but the last).
pub fn conv(data: Shape, widths: &[usize]) -> Result<ArchSpec, String> {
    let n = widths.len();
    let div = 1 << n;
    if n == 0 || !data.h.is_multiple_of(div) || !data.w.is_multiple_of(div) {
        return Err(format!(
            "the conv architecture halves the image {n} times: {}x{} must divide by {div} (resize image data with --size; an array must have such a shape)",
            data.h, data.w
        ));
    }
    if let Some(w) = widths.iter().find(|w| **w == 0 || **w % 4 != 0) {
        return Err(format!(
            "conv channel widths must be positive multiples of 4, got {w}"
        ));
    }
    let layer = |out: Size, act, name: String, transposed: bool| {
        let c = ConvLayer {
            out,
            kernel: 4,
            stride: 2,
            padding: 1,
            act,
            name: Some(name),
            repeat: 1,
        };
        if transposed {
            Layer::Deconv(c)
        } else {
            Layer::Conv(c)
        }
    };
    let encoder = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| layer(Size::Count(w), relu(), format!("conv{}", i + 1), false))
        .collect();
    let mut decoder = vec![Layer::Linear {
        out: Size::Image([data.h >> n, data.w >> n, widths[n - 1]]),
        act: relu(),
        name: Some("fc_dec".into()),
        repeat: 1,
    }];
    for i in (0..n).rev() {
        let (out, act) = match i {
            0 => (Size::Word("data".into()), None),
            i => (Size::Count(widths[i - 1]), relu()),
        };
        decoder.push(layer(out, act, format!("deconv{}", i + 1), true));
    }
    Ok(ArchSpec {
        below: Vec::new(),
        latent: None,
        encoder,
        heads: Heads::One("fc_enc".into()),
        decoder,
    })
}

/// The ResNet VAE (`ResNetVAE` in shared/peers/vae_common.py, state_dict names included):
/// enc_in (3x3), per level `blocks` residual blocks (GroupNorm + SiLU, 3x3 conv, twice; a
/// 1x1 conv on the skip where the width changes) and, but at the last level, a stride-2 3x3
/// conv; GroupNorm + SiLU; fc_enc. The decoder mirrors it with nearest x2 upsampling and a
/// 3x3 conv per level, then GroupNorm + SiLU and dec_out (3x3) to logits.
pub fn resnet(
    data: Shape,
    widths: &[usize],
    blocks: usize,
    groups: usize,
) -> Result<ArchSpec, String> {
    let levels = widths.len();
    if levels == 0 || blocks == 0 {
        return Err(
            "the resnet architecture needs at least one width and one block per level".into(),
        );
    }
    let div = 1 << (levels - 1);
    if !data.h.is_multiple_of(div) || !data.w.is_multiple_of(div) {
        let fit = |n: usize| n.div_ceil(div) * div;
        return Err(format!(
            "the resnet architecture halves the image {} times: {}x{} must divide by {div}; resize image data with --size {}x{} (an array must have such a shape)",
            levels - 1,
            data.w,
            data.h,
            fit(data.w),
            fit(data.h)
        ));
    }
    if let Some(w) = widths
        .iter()
        .find(|w| **w == 0 || !w.is_multiple_of(groups) || !w.is_multiple_of(4))
    {
        return Err(format!(
            "resnet widths must be positive multiples of 4 and of --groups {groups}, got {w}"
        ));
    }
    let conv = |out: Size, k: usize, stride: usize, name: &str| {
        Layer::Conv(ConvLayer {
            out,
            kernel: k,
            stride,
            padding: k / 2,
            act: None,
            name: Some(name.into()),
            repeat: 1,
        })
    };
    let norm = |name: &str| Layer::Groupnorm {
        groups,
        act: Some("silu".into()),
        name: Some(name.into()),
        repeat: 1,
    };
    let block = |name: String, cin: usize, cout: usize| Layer::Residual {
        name: Some(name),
        body: vec![
            norm("norm1"),
            conv(Size::Count(cout), 3, 1, "conv1"),
            norm("norm2"),
            conv(Size::Count(cout), 3, 1, "conv2"),
        ],
        skip: if cin == cout {
            Vec::new()
        } else {
            vec![conv(Size::Count(cout), 1, 1, "skip")]
        },
        repeat: 1,
    };
    let mut encoder = vec![conv(Size::Count(widths[0]), 3, 1, "enc_in")];
    let (mut cin, mut at) = (widths[0], 0);
    for (i, &c) in widths.iter().enumerate() {
        for _ in 0..blocks {
            encoder.push(block(format!("enc.{at}"), cin, c));
            cin = c;
            at += 1;
        }
        if i + 1 < levels {
            encoder.push(conv(Size::Count(c), 3, 2, &format!("enc.{at}")));
            at += 1;
        }
    }
    encoder.push(norm("enc_norm"));
    let last = widths[levels - 1];
    let mut decoder = vec![Layer::Linear {
        out: Size::Image([data.h / div, data.w / div, last]),
        act: None,
        name: Some("fc_dec".into()),
        repeat: 1,
    }];
    let (mut cin, mut at) = (last, 0);
    for i in (0..levels).rev() {
        for _ in 0..blocks {
            decoder.push(block(format!("dec.{at}"), cin, widths[i]));
            cin = widths[i];
            at += 1;
        }
        if i > 0 {
            decoder.push(Layer::Upsample);
            decoder.push(conv(
                Size::Count(widths[i - 1]),
                3,
                1,
                &format!("dec.{}", at + 1),
            ));
            cin = widths[i - 1];
            at += 2;
        }
    }
    decoder.push(norm("dec_norm"));
    decoder.push(conv(Size::Word("data".into()), 3, 1, "dec_out"));
    Ok(ArchSpec {
        below: Vec::new(),
        latent: None,
        encoder,
        heads: Heads::One("fc_enc".into()),
        decoder,
    })
}
