//! Sampling twin: the same Philox4x32-10 integer stream as shaders/sample.wgsl.

use crate::ops::sample::Noise;

pub const LOGVAR_MIN: f64 = -30.0;
pub const LOGVAR_MAX: f64 = 20.0;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(0x9E37_79B9);
            k[1] = k[1].wrapping_add(0xBB67_AE85);
        }
        let (hi0, lo0) = mulhilo(0xD251_1F53, c[0]);
        let (hi1, lo1) = mulhilo(0xCD9E_8D57, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The standard normal the GPU draws for `element` at this RNG position.
pub fn normal_at(noise: Noise, element: u32) -> f64 {
    let r = philox4x32_10(
        [element, noise.step, noise.stream, 0],
        [noise.seed as u32, (noise.seed >> 32) as u32],
    );
    let u1 = (f64::from(r[0] >> 8) + 1.0) / 16_777_216.0;
    let u2 = f64::from(r[1] >> 8) / 16_777_216.0;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// (z, eps) for mulv = [rows, 2Z] (mu then logvar).
pub fn sample_forward(mulv: &[f64], rows: usize, z: usize, noise: Noise) -> (Vec<f64>, Vec<f64>) {
    let mut zs = vec![0.0; rows * z];
    let mut eps = vec![0.0; rows * z];
    for r in 0..rows {
        for j in 0..z {
            let i = r * z + j;
            let e = normal_at(noise, i as u32);
            let lv = mulv[r * 2 * z + z + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
            zs[i] = mulv[r * 2 * z + j] + (0.5 * lv).exp() * e;
            eps[i] = e;
        }
    }
    (zs, eps)
}

/// Adds dz's contribution to dmulv ([rows, 2Z]).
pub fn sample_backward(
    mulv: &[f64],
    dz: &[f64],
    eps: &[f64],
    dmulv: &mut [f64],
    rows: usize,
    z: usize,
) {
    for r in 0..rows {
        for j in 0..z {
            let i = r * z + j;
            let lv = mulv[r * 2 * z + z + j];
            dmulv[r * 2 * z + j] += dz[i];
            if (LOGVAR_MIN..=LOGVAR_MAX).contains(&lv) {
                dmulv[r * 2 * z + z + j] += dz[i] * eps[i] * 0.5 * (0.5 * lv).exp();
            }
        }
    }
}

/// The corruption twin: the value corrupt_main writes for element `i` (of a [rows, cols]
/// batch, flat index) with clean value x.
pub fn corrupt(x: f64, i: u32, noise: Noise, c: crate::ops::sample::Corruption) -> f64 {
    use crate::ops::sample::Corruption;
    let key = [noise.seed as u32, (noise.seed >> 32) as u32];
    let r = philox4x32_10([i, noise.step, noise.stream, 1], key);
    let hit = |p: f32| f64::from(r[0] >> 8) / 16_777_216.0 < f64::from(p);
    match c {
        Corruption::Gaussian(s) => (x + f64::from(s) * normal_at(noise, i)).clamp(0.0, 1.0),
        Corruption::SaltPepper(p) if hit(p) => f64::from(r[1] & 1),
        Corruption::Mask(p) if hit(p) => 0.0,
        _ => x,
    }
}

/// A binary draw of value `x`, value `j` of image `image` (see shaders/gather.wgsl).
pub fn binarize(x: f64, j: u32, image: u32, noise: Noise) -> f64 {
    let key = [noise.seed as u32, (noise.seed >> 32) as u32];
    let r = philox4x32_10([j, image, noise.step, noise.stream], key);
    if f64::from(r[0] >> 8) / 16_777_216.0 < x {
        1.0
    } else {
        0.0
    }
}
