//! SplitMix64: the small seeded generator for host-side randomness (weight init, shuffles).
//! GPU noise comes from the counter-based Philox in shaders/sample.wgsl instead.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller, from two uniforms).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(f64::EPSILON, 1.0), self.uniform(0.0, 1.0));
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// An index drawn with probabilities `weights` (summing to 1; the last one takes
    /// what rounding leaves), from one uniform.
    pub fn pick(&mut self, weights: impl IntoIterator<Item = f64>) -> usize {
        let u = self.uniform(0.0, 1.0);
        let mut acc = 0.0;
        let mut last = 0;
        for (k, w) in weights.into_iter().enumerate() {
            acc += w;
            if u < acc {
                return k;
            }
            last = k;
        }
        last
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Values in [lo, hi) rounded to f32, returned as f32 and as the exact f64.
    pub fn vec(&mut self, len: usize, lo: f64, hi: f64) -> (Vec<f32>, Vec<f64>) {
        let v: Vec<f32> = (0..len).map(|_| self.uniform(lo, hi) as f32).collect();
        let w = v.iter().map(|&x| f64::from(x)).collect();
        (v, w)
    }

    /// A uniformly random permutation of 0..n (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}
