//! The training-step benchmark: the classic preset's iteration timed after warm-up, at several
//! batch sizes and thread counts, reported as median ms/iteration, images/s and achieved GFLOP/s,
//! beside the rate a large matrix product reaches on the same threads.
//! It times exactly the step `gantry train` runs (the same `Gan::step`), on random images so it
//! needs no data set (as the peer scripts do without `--data`).

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::config::{Config, ModelConfig, UpdateOrder};
use crate::data::TrainingImages;
use crate::error::{Error, Result};
use crate::kernels::dense::{Order, Split, product};
use crate::rng::Streams;

use super::gan::Gan;

/// Random images the benchmark draws its batches from.
const BENCH_IMAGES: usize = 4096;

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub batch: usize,
    pub threads: usize,
    pub iterations: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    /// Training images consumed per second (one real batch per iteration).
    pub images_per_s: f64,
    /// Matrix-product FLOPs per iteration (see [`flops_per_iteration`]) over the median time.
    pub gflops: f64,
    /// This machine's matrix-product rate on the same threads (see [`product_peak_gflops`]): the
    /// median of its measurements between the timed steps.
    pub peak_gflops: f64,
}

impl BenchResult {
    /// The step's achieved rate as a fraction of the machine's matrix-product rate.
    pub fn fraction_of_peak(&self) -> f64 {
        self.gflops / self.peak_gflops
    }
}

/// Side of the square product that measures the machine's peak.
const PEAK_SIDE: usize = 1024;

/// Timed iterations between two measurements of the product rate.
const PEAK_EVERY: usize = 25;

/// The FP32 rate this machine reaches on a large matrix product (1024³, through the same code and
/// gemm kernels the step's products use, on the current rayon pool's threads): the best of 3 in a
/// row. Nominal peaks (cores x FLOP/cycle x clock) depend on how many vector units and what clock
/// a virtual machine really gets; this is what the step's products could reach at best.
pub fn product_peak_gflops() -> f64 {
    let n = PEAK_SIDE;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 17) as f32 * 0.01).collect();
    let best = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let c = product(n, n, n, &a, (n as isize, 1), &a, (n as isize, 1), Order::RowMajor, Split::Gemm);
            let seconds = t0.elapsed().as_secs_f64();
            std::hint::black_box(c);
            seconds
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (n * n * n) as f64 / best / 1e9
}

/// Matrix-product FLOPs of one iteration (multiply-add = 2): G forward for the fakes; D forward
/// and backward (weight gradients, and input gradients below the first layer) on the real and on
/// the fake batch; G forward and backward through D (D's input gradients only, G's weight
/// gradients and its input gradients below the first layer). About 0.60 GFLOP at batch 32 for the
/// classic preset. The simultaneous step (`train.order`) counts one G forward, D forward on both
/// batches, D's input gradients and G's gradients for G's loss, D's gradients for D's: what
/// PyTorch computes for the same step, not the second D forward burn needs (see `Gan`).
pub fn flops_per_iteration(model: &ModelConfig, pixels: usize, batch: usize, order: UpdateOrder) -> f64 {
    let (g, d) = crate::model::layer_macs(model, pixels);
    let total = |layers: &[f64]| layers.iter().sum::<f64>();
    let below_first = |layers: &[f64]| total(&layers[1..]);
    let (g_fwd, d_fwd) = (total(&g), total(&d));
    let macs = match order {
        UpdateOrder::Simultaneous => {
            let for_g = d_fwd + g_fwd + below_first(&g);
            let for_d = 2.0 * (d_fwd + below_first(&d));
            g_fwd + 2.0 * d_fwd + for_g + for_d
        }
        UpdateOrder::DFirst | UpdateOrder::GFirst => {
            let d_update = d_fwd + d_fwd + below_first(&d);
            let g_update = g_fwd + d_fwd + d_fwd + g_fwd + below_first(&g);
            g_fwd + 2.0 * d_update + g_update
        }
    };
    2.0 * batch as f64 * macs
}

/// Time `iterations` training steps after `warmup` ones, at each batch size and thread count.
pub fn run(
    base: &Config,
    batches: &[usize],
    threads: &[usize],
    warmup: usize,
    iterations: usize,
    mut on_result: impl FnMut(&BenchResult),
) -> Result<Vec<BenchResult>> {
    let images = random_images(base.train.seed, crate::model::conditioning::ids(&base.model));
    let device = crate::device::resolve(base.train.device)?;
    let mut results = Vec::new();
    for &t in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| Error::usage("--threads", format!("cannot start {t} threads: {e}")))?;
        for &b in batches {
            let mut config = base.clone();
            config.train.batch_size = b;
            config.validate()?;
            crate::model::check_memory(&config, crate::data::PIXELS_28)?;
            let result = pool.install(|| measure(&config, &images, (t, &device), warmup, iterations));
            on_result(&result);
            results.push(result);
        }
    }
    Ok(results)
}

/// Time `n` steps after `warmup`. The product rate is measured between them (before the first,
/// every [`PEAK_EVERY`] steps, and after the last), so that the step and the peak it is compared
/// with are measured under the same conditions: on a shared virtual machine both drift by 10-20%
/// over minutes. Each is summarized by its median.
fn measure(
    config: &Config,
    images: &TrainingImages,
    (threads, device): (usize, &burn::tensor::Device),
    warmup: usize,
    n: usize,
) -> BenchResult {
    let mut streams = Streams::new(config.train.seed);
    let (mut gan, mut nets) =
        Gan::new(config, (images.rows, images.cols, images.channels), &mut streams, device);
    // Each step ends by reading its record, so that on a GPU the time is the step's, not the time
    // to queue it.
    for i in 0..warmup {
        let record;
        (nets, record) = gan.step(nets, i, images, &mut streams);
        gan.read_records(vec![record]);
    }
    let mut peaks = Vec::new();
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        if i % PEAK_EVERY == 0 {
            peaks.push(product_peak_gflops());
        }
        let t0 = Instant::now();
        let record;
        (nets, record) = gan.step(nets, warmup + i, images, &mut streams);
        gan.read_records(vec![record]);
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    peaks.push(product_peak_gflops());
    peaks.sort_by(f64::total_cmp);
    let peak_gflops = peaks[peaks.len() / 2];
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let median = at(0.5);
    let batch = config.train.batch_size;
    BenchResult {
        batch,
        threads,
        iterations: n,
        median_ms: median,
        p10_ms: at(0.1),
        p90_ms: at(0.9),
        images_per_s: batch as f64 / (median / 1e3),
        gflops: flops_per_iteration(&config.model, images.dim(), batch, config.train.order)
            / (median / 1e3)
            / 1e9,
        peak_gflops,
    }
}

/// Random 28x28 images, with random labels of `classes` classes when that is not 0.
pub(super) fn random_images(seed: u64, classes: usize) -> TrainingImages {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xbe9c);
    let bytes = (0..BENCH_IMAGES * 784).map(|_| rng.random_range(0..=255u8)).collect();
    let labels =
        (classes > 0).then(|| (0..BENCH_IMAGES).map(|_| rng.random_range(0..classes) as u8).collect());
    TrainingImages {
        count: BENCH_IMAGES,
        rows: 28,
        cols: 28,
        channels: 1,
        bytes,
        source: "random".into(),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_iteration_is_about_0_6_gflop() {
        let f = flops_per_iteration(&ModelConfig::default(), 784, 32, UpdateOrder::DFirst);
        // Hand count: G forward 2*32*1,492,992 = 95.6 MFLOP, D forward 34.1 MFLOP; see the doc.
        assert!((f / 1e9 - 0.60).abs() < 0.01, "{f}");
        assert_eq!(flops_per_iteration(&ModelConfig::default(), 784, 64, UpdateOrder::GFirst), 2.0 * f);
    }

    #[test]
    fn the_dcgan_tf_step_is_about_116_gflop_at_batch_256() {
        let c = Config::preset("dcgan-tf").unwrap();
        // Hand count per image: G 1,254,400 (Dense) + 40,140,800 + 10,035,200 + 313,600 (the
        // transposed convolutions, input positions x taps x channels) = 51,744,000; D 313,600 +
        // 10,035,200 + 6,272 = 10,355,072. The step: G + 2 D forward, D + G + G below its first
        // layer for G's loss, 2 (D + D below its first layer) for D's = 225,835,904.
        let f = flops_per_iteration(&c.model, 784, 256, c.train.order);
        assert_eq!(f, 2.0 * 256.0 * 225_835_904.0);
    }

    #[test]
    fn measures_a_tiny_model() {
        let mut config = Config::default();
        config.model.g_hidden = vec![16];
        config.model.d_hidden = vec![16];
        let results = run(&config, &[8], &[1], 1, 3, |_| {}).unwrap();
        assert_eq!(results.len(), 1);
        let r = &results[0];
        assert!(r.median_ms > 0.0 && r.p10_ms <= r.median_ms && r.median_ms <= r.p90_ms);
        assert!(r.gflops > 0.0 && r.images_per_s > 0.0);
        assert!(r.peak_gflops > r.gflops && r.fraction_of_peak() > 0.0, "{r:?}");
    }
}
