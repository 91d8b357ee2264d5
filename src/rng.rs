//! The run's random streams. Each concern draws from its own seeded ChaCha stream, so that adding
//! a draw in one place (say, a bigger sample grid) never shifts another (the data order), and so
//! that every stream's position can be saved and restored exactly.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Stream numbers (ChaCha's 64-bit stream id) of each concern.
const INIT_STREAM: u64 = 1;
const DATA_STREAM: u64 = 2;
const NOISE_STREAM: u64 = 3;
const FIXED_NOISE_STREAM: u64 = 4;
const AUGMENT_STREAM: u64 = 5;
const DROPOUT_STREAM: u64 = 6;
const LABEL_STREAM: u64 = 7;

/// All random streams of a run, derived from one seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Streams {
    /// Initial weights.
    pub init: ChaCha8Rng,
    /// Which real images go into each batch.
    pub data: ChaCha8Rng,
    /// Noise for the D-step fakes and the G step.
    pub noise: ChaCha8Rng,
    /// The fixed noise of the sample grids, drawn once per run.
    pub fixed: ChaCha8Rng,
    /// The differentiable augmentation's shifts and cutouts (`train.augment`).
    pub augment: ChaCha8Rng,
    /// D's dropout masks (`model.d_dropout`).
    pub dropout: ChaCha8Rng,
    /// The classes asked of G in a conditional run (`model.conditional`).
    pub labels: ChaCha8Rng,
}

impl Streams {
    pub fn new(seed: u64) -> Self {
        let stream = |id| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(id);
            r
        };
        Self {
            init: stream(INIT_STREAM),
            data: stream(DATA_STREAM),
            noise: stream(NOISE_STREAM),
            fixed: stream(FIXED_NOISE_STREAM),
            augment: stream(AUGMENT_STREAM),
            dropout: stream(DROPOUT_STREAM),
            labels: stream(LABEL_STREAM),
        }
    }

    /// The augmentation stream at its start, for the run whose streams have key `seed` (what a
    /// checkpoint written before the stream existed resumes with).
    pub fn augment_stream(seed: [u8; 32]) -> ChaCha8Rng {
        Self::stream_at_start(seed, AUGMENT_STREAM)
    }

    /// The dropout stream at its start (what a checkpoint of version 3 or older resumes with).
    pub fn dropout_stream(seed: [u8; 32]) -> ChaCha8Rng {
        Self::stream_at_start(seed, DROPOUT_STREAM)
    }

    /// The label stream at its start (what a checkpoint of version 4 or older resumes with).
    pub fn label_stream(seed: [u8; 32]) -> ChaCha8Rng {
        Self::stream_at_start(seed, LABEL_STREAM)
    }

    fn stream_at_start(seed: [u8; 32], id: u64) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::from_seed(seed);
        r.set_stream(id);
        r
    }
}

/// The 32-byte ChaCha key every stream of a run with `seed` shares (what a checkpoint records).
pub fn key(seed: u64) -> [u8; 32] {
    ChaCha8Rng::seed_from_u64(seed).get_seed()
}

/// `n` draws from N(0, 1).
pub fn normal(rng: &mut ChaCha8Rng, n: usize, out: &mut Vec<f32>) {
    out.clear();
    out.extend((0..n).map(|_| rng.sample::<f32, _>(StandardNormal)));
}

/// `n` draws from N(0, 1) truncated to [-psi, psi] by resampling (the truncation trick of BigGAN,
/// Brock et al. 2019: each value beyond psi is drawn again, from the same stream, until it falls
/// within). `psi` must be positive; the smaller it is, the more draws it takes (psi = 0.1: about
/// 12 per value).
pub fn truncated_normal(rng: &mut ChaCha8Rng, n: usize, psi: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend((0..n).map(|_| {
        loop {
            let v = rng.sample::<f32, _>(StandardNormal);
            if v.abs() <= psi {
                break v;
            }
        }
    }));
}

/// `n` classes uniform in `0..classes` (at most 256).
pub fn labels(rng: &mut ChaCha8Rng, n: usize, classes: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend((0..n).map(|_| rng.random_range(0..classes) as u8));
}

/// `n` classes drawn with probability proportional to their sizes, given as running totals
/// (`cumulative[c]`: the images of classes 0..=c; a self-conditioned run's clusters): an index
/// uniform over all the images, then the class it falls in.
pub fn weighted_labels(rng: &mut ChaCha8Rng, n: usize, cumulative: &[usize], out: &mut Vec<u8>) {
    out.clear();
    let total = cumulative.last().copied().unwrap_or(0);
    if total == 0 {
        return;
    }
    out.extend((0..n).map(|_| {
        let i = rng.random_range(0..total);
        cumulative.partition_point(|&c| c <= i) as u8
    }));
}

/// `n` indices uniform in `0..len`, drawn with replacement (as `np.random.randint` does).
pub fn indices(rng: &mut ChaCha8Rng, n: usize, len: usize, out: &mut Vec<usize>) {
    out.clear();
    out.extend((0..n).map(|_| rng.random_range(0..len)));
}

/// `n` dropout mask values: 0 where a uniform draw in [0, 1) falls below `rate` (dropped), else
/// `keep`. The same draws and values as `n` calls of `rng.random::<f32>()` (rand's f32 is a 24-bit
/// integer, the top of one 32-bit word, times 2⁻²⁴: below `rate` exactly when that integer is below
/// rate·2²⁴), drawn as one block of words: a `dcgan-tf` step draws ten million of them.
pub fn dropout_mask(rng: &mut ChaCha8Rng, n: usize, rate: f32, keep: f32, out: &mut Vec<f32>) {
    let mut words = vec![0u32; n];
    rng.fill(&mut words[..]);
    let threshold = f64::from(rate) * f64::from(1u32 << 24);
    out.clear();
    out.extend(words.iter().map(|&w| if f64::from(w >> 8) < threshold { 0.0 } else { keep }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_draws_stay_within_psi_and_follow_the_stream() {
        let mut a = ChaCha8Rng::seed_from_u64(1);
        let mut b = ChaCha8Rng::seed_from_u64(1);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        truncated_normal(&mut a, 10_000, 0.5, &mut x);
        truncated_normal(&mut b, 10_000, 0.5, &mut y);
        assert_eq!(x, y, "the same stream, the same draws");
        assert!(x.iter().all(|v| v.abs() <= 0.5));
        // Within the bound, the values are N(0, 1)'s: the ones of an untruncated draw, in order.
        let mut c = ChaCha8Rng::seed_from_u64(1);
        let mut plain = Vec::new();
        normal(&mut c, 100_000, &mut plain);
        let kept: Vec<f32> = plain.into_iter().filter(|v| v.abs() <= 0.5).take(10_000).collect();
        assert_eq!(kept, x);
    }

    #[test]
    fn same_seed_same_draws_and_streams_are_independent() {
        let (mut a, mut b) = (Streams::new(7), Streams::new(7));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        normal(&mut a.noise, 10, &mut x);
        normal(&mut b.noise, 10, &mut y);
        assert_eq!(x, y);
        // Drawing from `fixed` does not move `noise`.
        normal(&mut a.fixed, 5, &mut x);
        normal(&mut a.noise, 10, &mut x);
        normal(&mut b.noise, 10, &mut y);
        assert_eq!(x, y);
        let mut other = Streams::new(8);
        normal(&mut other.noise, 10, &mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn weighted_labels_follow_the_sizes() {
        let mut s = Streams::new(0);
        let mut v = Vec::new();
        // Sizes 1, 0, 3: class 1 is never drawn, class 2 about three times as often as class 0.
        weighted_labels(&mut s.labels, 4000, &[1, 1, 4], &mut v);
        let count = |c: u8| v.iter().filter(|&&x| x == c).count();
        assert_eq!((v.len(), count(1)), (4000, 0));
        assert!((2800..3200).contains(&count(2)), "{}", count(2));
        assert_eq!(count(0) + count(2), 4000);
    }

    #[test]
    fn indices_stay_in_range() {
        let mut s = Streams::new(0);
        let mut v = Vec::new();
        indices(&mut s.data, 1000, 3, &mut v);
        assert!(v.iter().all(|&i| i < 3));
        assert!((0..3).all(|k| v.contains(&k)));
    }

    #[test]
    fn dropout_masks_drawn_in_a_block_are_the_draws_one_at_a_time() {
        for (rate, n) in [(0.3f32, 10_007), (0.5, 64), (0.0, 100), (0.999, 5000), (1e-7, 33)] {
            let keep = 1.0 / (1.0 - rate);
            let (mut a, mut b) = (Streams::new(3).dropout, Streams::new(3).dropout);
            let mut block = Vec::new();
            dropout_mask(&mut a, n, rate, keep, &mut block);
            let single: Vec<f32> =
                (0..n).map(|_| if b.random::<f32>() < rate { 0.0 } else { keep }).collect();
            assert_eq!(block, single, "rate {rate}, {n} values");
            assert_eq!(a.random::<u64>(), b.random::<u64>(), "both streams left at the same place");
        }
    }
}
