//! Statistics over judge features: everything that turns the judge's outputs (feature rows and class
//! probabilities) into numbers about a generator, with no model or I/O in here.
//!
//! Owns: the checked feature-matrix view ([`Features`]), mean and covariance, the PSD matrix square
//! root, the Fréchet distance (FID), the Kernel distance (KID), improved precision/recall, the
//! Inception-Score analogue, class coverage and a linear separability probe.
//!
//! Inputs arrive as `f32` (what the judge produces); all statistics are computed in `f64`, except
//! the pairwise distances of precision/recall, which run in `f32` for speed (see [`precision_recall`]).
//! Bad input (shapes that do not match, too few rows, non-finite values) is an `Err`, never a panic.

use nalgebra::{DMatrix, DVector, Dyn, SymmetricEigen};
use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

/// The config key errors point at: sample counts and feature shapes come from the eval settings.
const KEY: &str = "eval.samples";

fn bad(problem: impl Into<String>) -> Error {
    Error::config(KEY, problem)
}

/// A row-major matrix of judge features: `rows` samples of `cols` features each.
///
/// The constructor checks the shape, at least 2 rows (a covariance needs them) and that every value
/// is finite, so the functions below can rely on all three.
#[derive(Debug, Clone, Copy)]
pub struct Features<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> Features<'a> {
    /// Wraps `rows × cols` row-major values; `Err` on a wrong length, fewer than 2 rows, no
    /// columns, or a non-finite value.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if cols == 0 || rows.checked_mul(cols) != Some(data.len()) {
            return Err(bad(format!("{} feature values do not make {rows} rows of {cols}", data.len())));
        }
        if rows < 2 {
            return Err(bad(format!("need at least 2 samples for feature statistics, got {rows}")));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("feature {} of sample {} is {}", i % cols, i / cols, data[i])));
        }
        Ok(Self { data, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` (panics past the last row, like slice indexing).
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

fn column_mean(f: Features) -> Vec<f64> {
    let mut sum = vec![0.0; f.cols];
    for i in 0..f.rows {
        for (s, &v) in sum.iter_mut().zip(f.row(i)) {
            *s += v as f64;
        }
    }
    sum.iter().map(|s| s / f.rows as f64).collect()
}

fn same_width(a: &Features, b: &Features) -> Result<()> {
    if a.cols == b.cols {
        Ok(())
    } else {
        Err(bad(format!("real samples have {} features but generated ones have {}", a.cols, b.cols)))
    }
}

/// Column means and the unbiased (divide by `n - 1`) covariance.
///
/// Two-pass: the data are centred before the products, which avoids the cancellation of
/// `E[x²] - E[x]²` when features have a large offset.
pub fn mean_and_covariance(f: Features) -> (DVector<f64>, DMatrix<f64>) {
    let mean = DVector::from_vec(column_mean(f));
    let centred = DMatrix::from_fn(f.rows, f.cols, |i, j| f.data[i * f.cols + j] as f64 - mean[j]);
    let cov = centred.tr_mul(&centred) / (f.rows - 1) as f64;
    (mean, cov)
}

/// Eigendecomposition of the symmetric part of `a`. Bounded iterations and a finiteness check,
/// because nalgebra's unbounded variant can spin forever on NaN input.
fn symmetric_eigen(a: &DMatrix<f64>) -> Result<SymmetricEigen<f64, Dyn>> {
    if !a.is_square() {
        return Err(bad(format!("a covariance must be square, got {}x{}", a.nrows(), a.ncols())));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(bad("covariance has non-finite entries"));
    }
    let sym = (a + a.transpose()) * 0.5;
    SymmetricEigen::try_new(sym, f64::EPSILON, 1000 + 100 * a.nrows())
        .ok_or_else(|| bad("covariance eigendecomposition did not converge"))
}

/// Square root of a symmetric positive semi-definite matrix: `V diag(sqrt(max(λ, 0))) Vᵀ`.
///
/// The input is symmetrised first (`(A + Aᵀ)/2`) since covariances are symmetric only up to
/// rounding; negative eigenvalues (rounding noise around 0 for a PSD input) are clamped to 0.
pub fn sqrtm_psd(a: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    let eig = symmetric_eigen(a)?;
    let mut v_scaled = eig.eigenvectors.clone();
    for (mut col, &l) in v_scaled.column_iter_mut().zip(eig.eigenvalues.iter()) {
        col *= l.max(0.0).sqrt();
    }
    Ok(v_scaled * eig.eigenvectors.transpose())
}

/// Fréchet distance between N(mu1, s1) and N(mu2, s2):
/// `|mu1 - mu2|² + Tr(s1) + Tr(s2) - 2 Tr(sqrt(s1^½ s2 s1^½))`.
///
/// `s1^½ s2 s1^½` has the same eigenvalues as the `s1 s2` of the usual formula but is symmetric PSD,
/// so its square-root trace is a sum of real square roots: no complex parts to discard, as with
/// scipy's `sqrtm` of the non-symmetric product. The result is clamped at 0 (rounding can push
/// identical distributions slightly below).
pub fn frechet_distance(
    mu1: &DVector<f64>,
    s1: &DMatrix<f64>,
    mu2: &DVector<f64>,
    s2: &DMatrix<f64>,
) -> Result<f64> {
    let d = mu1.len();
    if mu2.len() != d || s1.shape() != (d, d) || s2.shape() != (d, d) {
        return Err(bad(format!(
            "Fréchet distance of mismatched shapes: means {} and {}, covariances {:?} and {:?}",
            d,
            mu2.len(),
            s1.shape(),
            s2.shape()
        )));
    }
    let r = sqrtm_psd(s1)?;
    let tr_covmean: f64 =
        symmetric_eigen(&(&r * s2 * &r))?.eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
    let fid = (mu1 - mu2).norm_squared() + s1.trace() + s2.trace() - 2.0 * tr_covmean;
    Ok(fid.max(0.0))
}

/// [`frechet_distance`] of the Gaussians fitted to two feature sets (FID with the judge's features).
pub fn frechet_distance_features(a: Features, b: Features) -> Result<f64> {
    same_width(&a, &b)?;
    let ((mu1, s1), (mu2, s2)) = (mean_and_covariance(a), mean_and_covariance(b));
    frechet_distance(&mu1, &s1, &mu2, &s2)
}

/// Kernel Inception Distance: the unbiased MMD² with kernel `k(x, y) = (x·y / d + 1)³`, averaged
/// over `subsets` subsets of `m = min(subset_size, real rows, fake rows)` rows of each set, drawn
/// without replacement by a ChaCha8 stream seeded with `seed` (same seed, same numbers).
///
/// Returns `(mean, std)` over the subsets, with the population standard deviation (divide by
/// `subsets`, as `np.std` in torch-fidelity). When `m` equals both row counts a subset is the whole
/// set (only the order changes), so one subset gives the exact, sampling-free statistic.
pub fn kid(
    real: Features,
    fake: Features,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    same_width(&real, &fake)?;
    if subsets == 0 || subset_size < 2 {
        return Err(bad(format!("KID needs >= 1 subset of >= 2 samples, got {subsets} of {subset_size}")));
    }
    let m = subset_size.min(real.rows).min(fake.rows);
    // Draw every subset up front, in order, so the numbers cannot depend on rayon's scheduling.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let picks: Vec<_> = (0..subsets)
        .map(|_| (index::sample(&mut rng, real.rows, m), index::sample(&mut rng, fake.rows, m)))
        .collect();
    let gather = |f: &Features, idx: &index::IndexVec| {
        DMatrix::from_fn(m, f.cols, |i, j| f.row(idx.index(i))[j] as f64)
    };
    let values: Vec<f64> =
        picks.par_iter().map(|(ix, iy)| mmd2_unbiased(&gather(&real, ix), &gather(&fake, iy))).collect();
    Ok(mean_and_std(&values))
}

/// Unbiased MMD² of two equally sized samples (rows), polynomial kernel of degree 3.
fn mmd2_unbiased(x: &DMatrix<f64>, y: &DMatrix<f64>) -> f64 {
    let (m, d) = (x.nrows() as f64, x.ncols() as f64);
    let kernel = |gram: DMatrix<f64>| gram.map(|v| (v / d + 1.0).powi(3));
    let off_diagonal_sum = |k: DMatrix<f64>| k.sum() - k.trace();
    let kxx = off_diagonal_sum(kernel(x * x.transpose()));
    let kyy = off_diagonal_sum(kernel(y * y.transpose()));
    let kxy = kernel(x * y.transpose()).sum();
    (kxx + kyy) / (m * (m - 1.0)) - 2.0 * kxy / (m * m)
}

/// Query rows per parallel work item (and reference rows per cache tile) in the distance scans.
const BLOCK: usize = 128;
/// Row padding of the distance kernel: 8 `f32`s, a whole number of SIMD registers on every target.
const LANES: usize = 8;

/// Dot product written for autovectorisation: 8 independent lane accumulators need no float
/// reassociation, so the compiler maps them onto SIMD registers. Rows are zero-padded to `LANES`.
/// On baseline x86-64 (SSE2, no FMA) this runs at about 20 cycles for 84 features, the
/// multiply-add throughput limit; a 4-rows-at-once variant measured slower (register spills).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.as_chunks::<LANES>().0.iter().zip(b.as_chunks::<LANES>().0) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum()
}

/// Squared distance from squared norms and the dot product; clamped, as rounding can go below 0.
#[inline]
fn dist2(a_norm: f32, b_norm: f32, dot: f32) -> f32 {
    (a_norm + b_norm - 2.0 * dot).max(0.0)
}

/// Feature rows as zero-padded `f32`, centred on a common point, with their squared norms.
struct Packed {
    data: Vec<f32>,
    stride: usize,
    rows: usize,
    norms: Vec<f32>,
}

impl Packed {
    /// Centring on the real mean keeps norms small, which limits the `f32` cancellation in
    /// `|a|² + |b|² - 2 a·b`. Norms use the same `dot`, so a row's distance to itself is exactly 0.
    fn new(f: Features, centre: &[f64]) -> Self {
        let stride = f.cols.next_multiple_of(LANES);
        let mut data = vec![0.0f32; f.rows * stride];
        for (i, dst) in data.chunks_exact_mut(stride).enumerate() {
            for ((d, &s), &c) in dst.iter_mut().zip(f.row(i)).zip(centre) {
                *d = (s as f64 - c) as f32;
            }
        }
        let norms = data.chunks_exact(stride).map(|row| dot(row, row)).collect();
        Self { data, stride, rows: f.rows, norms }
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.stride..(i + 1) * self.stride]
    }
}

/// Calls `visit(i, d2)` for every row `i` of `q`, where `d2[j]` is the squared distance to row `j`
/// of `r`, and collects the results in row order. Blocks of `block` query rows run in parallel and
/// hold only `block × r.rows` distances; inside a block, `r` is walked in tiles of `block` rows so a
/// tile stays in cache while every query row of the block uses it.
fn scan<T: Send>(q: &Packed, r: &Packed, block: usize, visit: impl Fn(usize, &[f32]) -> T + Sync) -> Vec<T> {
    let starts: Vec<usize> = (0..q.rows).step_by(block).collect();
    starts
        .into_par_iter()
        .flat_map_iter(|q0| {
            let q1 = (q0 + block).min(q.rows);
            let mut d2 = vec![0.0f32; (q1 - q0) * r.rows];
            for r0 in (0..r.rows).step_by(block) {
                let r1 = (r0 + block).min(r.rows);
                for i in q0..q1 {
                    let (qi, qn) = (q.row(i), q.norms[i]);
                    let out = &mut d2[(i - q0) * r.rows + r0..(i - q0) * r.rows + r1];
                    for (j, o) in (r0..r1).zip(out) {
                        *o = dist2(qn, r.norms[j], dot(qi, r.row(j)));
                    }
                }
            }
            d2.chunks_exact(r.rows).enumerate().map(|(k, row)| visit(q0 + k, row)).collect::<Vec<_>>()
        })
        .collect()
}

/// The `k`-th smallest value of `d2`, skipping index `skip` (the point itself).
fn kth_smallest(d2: &[f32], skip: usize, k: usize) -> f32 {
    let mut best = vec![f32::INFINITY; k]; // ascending
    for (j, &d) in d2.iter().enumerate() {
        if d < best[k - 1] && j != skip {
            best.pop();
            best.insert(best.partition_point(|&b| b <= d), d);
        }
    }
    best[k - 1]
}

/// Improved precision and recall (Kynkäänniemi et al. 2019), as `(precision, recall)`.
///
/// Each real point gets a ball whose radius is the distance to its `k`-th nearest other real
/// point; precision is the fraction of fake points inside at least one real ball (distance <=
/// radius). Recall is the same with the roles swapped. Memory stays at `O(block × n)`: distances are
/// computed per block of rows, in `f32` as `|a|² + |b|² - 2 a·b` on data centred on the real mean,
/// and compared squared (no square roots). `k` must be below both row counts (3 is usual).
pub fn precision_recall(real: Features, fake: Features, k: usize) -> Result<(f64, f64)> {
    manifold_scores(real, fake, k).map(|m| (m.precision, m.recall))
}

/// The four k-NN manifold scores of a fake set against a real one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ManifoldScores {
    /// Fraction of fake points inside at least one real ball (Kynkäänniemi et al. 2019).
    pub precision: f64,
    /// Fraction of real points inside at least one fake ball (Kynkäänniemi et al. 2019).
    pub recall: f64,
    /// Real balls containing each fake point, averaged and divided by k (Naeem et al. 2020): about
    /// 1 when fakes are spread like the reals. Unlike precision, a few real outliers with huge
    /// balls cannot push it up much.
    pub density: f64,
    /// Fraction of real balls that contain at least one fake point (Naeem et al. 2020).
    pub coverage: f64,
}

/// Precision, recall, density and coverage in one set of passes (see [`precision_recall`] for how
/// distances are computed).
pub fn manifold_scores(real: Features, fake: Features, k: usize) -> Result<ManifoldScores> {
    manifold_scores_blocked(real, fake, k, BLOCK)
}

fn manifold_scores_blocked(real: Features, fake: Features, k: usize, block: usize) -> Result<ManifoldScores> {
    same_width(&real, &fake)?;
    if k == 0 || k >= real.rows || k >= fake.rows {
        return Err(bad(format!(
            "precision/recall neighbour k = {k} must be in 1..{} (fewer than either set's {} and {} samples)",
            real.rows.min(fake.rows),
            real.rows,
            fake.rows
        )));
    }
    let centre = column_mean(real);
    let (r, f) = (Packed::new(real, &centre), Packed::new(fake, &centre));
    let radii = |p: &Packed| scan(p, p, block, |i, d2| kth_smallest(d2, i, k));
    let (real_radii2, fake_radii2) = (radii(&r), radii(&f));
    // One pass over the fake-to-real distances serves all four: each fake row counts the real balls
    // it is in (precision, density), marks the real balls it is in (coverage) and the real points
    // inside its own ball (recall).
    let in_fake_ball: Vec<AtomicBool> = (0..r.rows).map(|_| AtomicBool::new(false)).collect();
    let ball_hit: Vec<AtomicBool> = (0..r.rows).map(|_| AtomicBool::new(false)).collect();
    let real_balls_containing = scan(&f, &r, block, |i, d2| {
        let mut count = 0usize;
        for (j, &d) in d2.iter().enumerate() {
            if d <= fake_radii2[i] {
                in_fake_ball[j].store(true, Ordering::Relaxed);
            }
            if d <= real_radii2[j] {
                ball_hit[j].store(true, Ordering::Relaxed);
                count += 1;
            }
        }
        count
    });
    let share = |flags: &[AtomicBool]| {
        flags.iter().filter(|c| c.load(Ordering::Relaxed)).count() as f64 / r.rows as f64
    };
    let m = f.rows as f64;
    Ok(ManifoldScores {
        precision: real_balls_containing.iter().filter(|&&c| c > 0).count() as f64 / m,
        recall: share(&in_fake_ball),
        density: real_balls_containing.iter().sum::<usize>() as f64 / (k as f64 * m),
        coverage: share(&ball_hit),
    })
}

/// Index of the largest value (ties go to the lower index): the predicted class of a row.
pub fn argmax(row: &[f32]) -> usize {
    (1..row.len()).fold(0, |best, c| if row[c] > row[best] { c } else { best })
}

/// Checks a row-major table of class probabilities and returns its row count. Rows must be
/// distributions (non-negative, summing to 1 within 1e-3): this catches logits passed by mistake.
fn probability_rows(probs: &[f32], classes: usize) -> Result<usize> {
    if classes == 0 || probs.is_empty() || !probs.len().is_multiple_of(classes) {
        return Err(bad(format!("{} probabilities do not make rows of {classes} classes", probs.len())));
    }
    for (i, row) in probs.chunks_exact(classes).enumerate() {
        let sum: f64 = row.iter().map(|&p| p as f64).sum();
        if row.iter().any(|p| !(p.is_finite() && *p >= 0.0)) || (sum - 1.0).abs() > 1e-3 {
            return Err(bad(format!("sample {i}: class probabilities {row:?} are not a distribution")));
        }
    }
    Ok(probs.len() / classes)
}

/// Inception-Score analogue with the judge's class probabilities (`classes` per row):
/// `exp(mean_i KL(p(y|x_i) || p(y)))`, `p(y)` the marginal over rows. Probabilities are clamped at
/// 1e-12 inside the logarithms, so zero entries contribute nothing. Ranges from 1 to `classes`.
pub fn inception_score(probs: &[f32], classes: usize) -> Result<f64> {
    let n = probability_rows(probs, classes)?;
    let mut marginal = vec![0.0f64; classes];
    for row in probs.chunks_exact(classes) {
        for (m, &p) in marginal.iter_mut().zip(row) {
            *m += p as f64 / n as f64;
        }
    }
    let ln = |p: f64| p.max(1e-12).ln();
    let kl = |row: &[f32]| {
        row.iter().zip(&marginal).map(|(&p, &q)| p as f64 * (ln(p as f64) - ln(q))).sum::<f64>()
    };
    Ok((probs.chunks_exact(classes).map(kl).sum::<f64>() / n as f64).exp())
}

/// The Inception Score as torch-fidelity reports it: the rows cut into `splits` consecutive parts
/// (part i is rows `i*n/splits .. (i+1)*n/splits`), [`inception_score`] of each, and their mean
/// and population standard deviation. Needs at least one row per split.
pub fn inception_score_splits(probs: &[f32], classes: usize, splits: usize) -> Result<(f64, f64)> {
    let n = probability_rows(probs, classes)?;
    if splits == 0 || n < splits {
        return Err(bad(format!(
            "an inception score of {splits} splits needs at least {splits} samples, got {n}"
        )));
    }
    let scores = (0..splits)
        .map(|i| inception_score(&probs[i * n / splits * classes..(i + 1) * n / splits * classes], classes))
        .collect::<Result<Vec<f64>>>()?;
    Ok(mean_and_std(&scores))
}

/// Mean and population standard deviation (numpy's `np.std`, as torch-fidelity reports them).
fn mean_and_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (mean, (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt())
}

/// How the judge's verdicts spread over the classes.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Samples per class, by argmax of the probabilities (ties go to the lower class).
    pub histogram: Vec<usize>,
    /// Classes that received at least 1% of the samples: a stray sample or two does not count as
    /// covering a mode.
    pub present: usize,
    /// KL(histogram fractions || uniform), with 0 ln 0 = 0: 0 when balanced, ln(classes) when all
    /// samples fall in one class.
    pub kl_from_uniform: f64,
}

/// Class coverage of generated samples, from the judge's probabilities (`classes` per row).
pub fn class_coverage(probs: &[f32], classes: usize) -> Result<Coverage> {
    let n = probability_rows(probs, classes)?;
    let mut histogram = vec![0usize; classes];
    for row in probs.chunks_exact(classes) {
        histogram[argmax(row)] += 1;
    }
    let present = histogram.iter().filter(|&&c| c * 100 >= n).count(); // integer form of >= 1%
    let kl_from_uniform = histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 / n as f64)
        .map(|f| f * (f * classes as f64).ln())
        .sum();
    Ok(Coverage { histogram, present, kl_from_uniform })
}

/// The share of samples asked for class `asked[i]` that the judge classifies as that class (the
/// argmax of their probabilities, `classes` per row): a conditional generator's class accuracy.
pub fn class_accuracy(probs: &[f32], classes: usize, asked: &[u8]) -> Result<f64> {
    let n = probability_rows(probs, classes)?;
    if asked.len() != n {
        return Err(bad(format!("{} classes asked for {n} samples", asked.len())));
    }
    let hits = probs.chunks_exact(classes).zip(asked).filter(|(row, c)| argmax(row) == **c as usize).count();
    Ok(hits as f64 / n as f64)
}

/// What accuracy a linear judge would reach telling real from generated features (0.5: it cannot).
///
/// Fits Fisher's linear discriminant on the even rows of each set, `w = (S + εI)⁻¹ (mu_real -
/// mu_fake)` with `S` the pooled covariance and `ε = 1e-6 · Tr(S)/d` (judge features can be
/// rank-deficient, e.g. dead units), thresholds at the midpoint of the projected class means, and
/// reports the balanced accuracy on the odd rows. The split is deterministic; needs 4 rows a set.
pub fn separability_accuracy(real: Features, fake: Features) -> Result<f64> {
    same_width(&real, &fake)?;
    if real.rows < 4 || fake.rows < 4 {
        return Err(bad(format!(
            "separability needs >= 4 samples a set, got {} and {}",
            real.rows, fake.rows
        )));
    }
    let d = real.cols;
    let even_rows =
        |f: Features| -> Vec<f32> { (0..f.rows).step_by(2).flat_map(|i| f.row(i)).copied().collect() };
    let (real_fit, fake_fit) = (even_rows(real), even_rows(fake));
    let (nr, nf) = (real_fit.len() / d, fake_fit.len() / d);
    let (mu_r, s_r) = mean_and_covariance(Features::new(&real_fit, nr, d)?);
    let (mu_f, s_f) = mean_and_covariance(Features::new(&fake_fit, nf, d)?);
    let mut s = (s_r * (nr - 1) as f64 + s_f * (nf - 1) as f64) / (nr + nf - 2) as f64;
    let ridge = (1e-6 * s.trace() / d as f64).max(1e-12);
    for i in 0..d {
        s[(i, i)] += ridge;
    }
    let chol = s.cholesky().ok_or_else(|| bad("pooled feature covariance is not positive definite"))?;
    let w = chol.solve(&(&mu_r - &mu_f));
    let threshold = 0.5 * w.dot(&(&mu_r + &mu_f));
    let score = |x: &[f32]| x.iter().zip(w.iter()).map(|(&v, &wi)| v as f64 * wi).sum::<f64>();
    let hit_rate = |f: Features, is_real: bool| {
        let test: Vec<usize> = (1..f.rows).step_by(2).collect();
        test.iter().filter(|&&i| (score(f.row(i)) > threshold) == is_real).count() as f64 / test.len() as f64
    };
    Ok(0.5 * (hit_rate(real, true) + hit_rate(fake, false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;
    use rand_distr::StandardNormal;

    /// `rows × cols` N(0, 1) values times `scale` plus `shift`, from a fixed seed.
    fn gaussian(seed: u64, rows: usize, cols: usize, scale: f32, shift: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..rows * cols).map(|_| rng.sample::<f32, _>(StandardNormal) * scale + shift).collect()
    }

    fn feats(data: &[f32], cols: usize) -> Features<'_> {
        Features::new(data, data.len() / cols, cols).unwrap()
    }

    fn rel_err(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
        (a - b).norm() / b.norm()
    }

    #[test]
    fn sqrtm_squares_back_for_spd_and_singular_psd() {
        let b = DMatrix::from_vec(8, 8, gaussian(1, 8, 8, 1.0, 0.0).iter().map(|&v| v as f64).collect());
        let spd = &b * b.transpose() + DMatrix::identity(8, 8);
        let r = sqrtm_psd(&spd).unwrap();
        assert!(rel_err(&(&r * &r), &spd) < 1e-9);
        // Rank 3 in 6 dimensions: eigenvalues at 0 may come out slightly negative and are clamped.
        let b = DMatrix::from_vec(6, 3, gaussian(2, 6, 3, 1.0, 0.0).iter().map(|&v| v as f64).collect());
        let psd = &b * b.transpose();
        let r = sqrtm_psd(&psd).unwrap();
        assert!(rel_err(&(&r * &r), &psd) < 1e-9);
        assert!(sqrtm_psd(&DMatrix::zeros(2, 3)).is_err());
    }

    #[test]
    fn frechet_is_zero_on_itself_shift_only_and_symmetric() {
        // Quantised to 1/1024 so that adding dyadic shifts is exact in f32.
        let a: Vec<f32> =
            gaussian(3, 500, 8, 1.0, 0.0).iter().map(|v| (v * 1024.0).round() / 1024.0).collect();
        let fa = feats(&a, 8);
        assert!(frechet_distance_features(fa, fa).unwrap() < 1e-9);
        let c = [0.5f32, -1.0, 2.0, 0.0, 0.25, -0.75, 1.5, 3.0];
        let shifted: Vec<f32> = a.chunks(8).flat_map(|row| row.iter().zip(&c).map(|(v, s)| v + s)).collect();
        let c2: f64 = c.iter().map(|&v| (v as f64).powi(2)).sum();
        let fid = frechet_distance_features(fa, feats(&shifted, 8)).unwrap();
        assert!((fid - c2).abs() < 1e-9 * c2, "{fid} vs {c2}");
        let b = gaussian(4, 300, 8, 1.3, 0.2);
        let (ab, ba) = (
            frechet_distance_features(fa, feats(&b, 8)).unwrap(),
            frechet_distance_features(feats(&b, 8), fa).unwrap(),
        );
        assert!(ab > 0.1 && (ab - ba).abs() < 1e-9 * ab, "{ab} vs {ba}");
    }

    /// The feature sets of `tests/golden/frechet_golden.py`, rebuilt from the same formula.
    fn golden_sets() -> (Vec<f32>, Vec<f32>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..50 {
            for j in 0..6 {
                let (x, y) = (i as f64, j as f64);
                a.push(((0.37 * x + 1.3 * y).sin() + 0.1 * y * (0.11 * x * y).cos()) as f32);
                b.push(
                    ((0.23 * x + 0.7 * y).cos() + 0.05 * (y + 1.0) * (0.17 * x * y + 0.5).sin() + 0.2) as f32,
                );
            }
        }
        (a, b)
    }

    /// Golden values printed by `tests/golden/frechet_golden.py` with Python 3.11.7, numpy 2.4.6,
    /// scipy 1.17.1 (FID the pytorch-fid way, scipy `sqrtm(s1 @ s2)` real part; KID with all 50 rows
    /// as a single subset, so no sampling). Tolerance: 1e-8 relative.
    #[test]
    fn golden_values_match_numpy_scipy() {
        const FID: f64 = 2.7025495088763276;
        const TR_SQRTM_S1S2: f64 = 1.7381421295549486;
        const KID: f64 = 0.5391812881277778;
        const INCEPTION: f64 = 1.5281384950722214;
        let close = |got: f64, want: f64| assert!((got - want).abs() <= 1e-8 * want.abs(), "{got} vs {want}");
        let (a, b) = golden_sets();
        let (fa, fb) = (feats(&a, 6), feats(&b, 6));
        close(frechet_distance_features(fa, fb).unwrap(), FID);
        let ((_, s1), (_, s2)) = (mean_and_covariance(fa), mean_and_covariance(fb));
        let r1 = sqrtm_psd(&s1).unwrap();
        close(sqrtm_psd(&(&r1 * &s2 * &r1)).unwrap().trace(), TR_SQRTM_S1S2);
        let (kid_mean, kid_std) = kid(fa, fb, 1, 50, 0).unwrap();
        close(kid_mean, KID);
        assert_eq!(kid_std, 0.0);
        #[rustfmt::skip]
        let probs = [
            0.5, 0.25, 0.125, 0.125,
            0.125, 0.5, 0.25, 0.125,
            0.0625, 0.0625, 0.75, 0.125,
            0.25, 0.25, 0.25, 0.25,
            1.0, 0.0, 0.0, 0.0,
            0.0, 0.125, 0.375, 0.5,
        ];
        close(inception_score(&probs, 4).unwrap(), INCEPTION);
    }

    #[test]
    fn kid_is_near_zero_on_itself_positive_when_shifted_and_seeded() {
        let a = gaussian(5, 1000, 16, 1.0, 0.0);
        let b = gaussian(6, 1000, 16, 1.0, 0.5);
        let (fa, fb) = (feats(&a, 16), feats(&b, 16));
        let (same, same_std) = kid(fa, fa, 20, 200, 1).unwrap();
        let (shifted, _) = kid(fa, fb, 20, 200, 1).unwrap();
        eprintln!("KID self {same} ± {same_std}, shifted {shifted}");
        // Subsets drawn from one set share ~m²/n points, and k(x, x) is large, so the self value sits
        // slightly below 0 (about -0.015 here); a real difference is far above that.
        assert!(same.abs() < 0.03 && shifted > 0.5 && shifted > 20.0 * same.abs());
        assert_eq!(kid(fa, fb, 20, 200, 1).unwrap(), kid(fa, fb, 20, 200, 1).unwrap());
        assert_ne!(kid(fa, fb, 20, 200, 1).unwrap().0, kid(fa, fb, 20, 200, 2).unwrap().0);
    }

    /// Plain f64 precision/recall, one pair at a time: the reference for the blocked version.
    fn brute_precision_recall(real: Features, fake: Features, k: usize) -> (f64, f64) {
        let d2 =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>();
        let radii = |f: Features| -> Vec<f64> {
            (0..f.rows)
                .map(|i| {
                    let mut d: Vec<f64> =
                        (0..f.rows).filter(|&j| j != i).map(|j| d2(f.row(i), f.row(j))).collect();
                    d.sort_by(f64::total_cmp);
                    d[k - 1]
                })
                .collect()
        };
        let inside = |p: Features, c: Features, r: &[f64]| {
            (0..p.rows).filter(|&i| (0..c.rows).any(|j| d2(p.row(i), c.row(j)) <= r[j])).count() as f64
                / p.rows as f64
        };
        (inside(fake, real, &radii(real)), inside(real, fake, &radii(fake)))
    }

    #[test]
    fn precision_recall_extremes_and_mode_dropping() {
        let real = gaussian(7, 2000, 8, 1.0, 0.0);
        let fr = feats(&real, 8);
        assert_eq!(precision_recall(fr, fr, 3).unwrap(), (1.0, 1.0));
        let far = gaussian(8, 1500, 8, 1.0, 100.0);
        assert_eq!(precision_recall(fr, feats(&far, 8), 3).unwrap(), (0.0, 0.0));
        // The generator keeps one mode (first feature > 1): everything it makes is realistic, but
        // it misses most of the real distribution.
        let mode: Vec<f32> = real.chunks(8).filter(|row| row[0] > 1.0).flatten().copied().collect();
        let (p, r) = precision_recall(fr, feats(&mode, 8), 3).unwrap();
        eprintln!("one mode kept: precision {p}, recall {r}");
        assert!(p == 1.0 && r < 0.6, "precision {p}, recall {r}");
        // Against the brute-force reference on overlapping clouds.
        let (a, b) = (gaussian(9, 300, 10, 1.0, 0.0), gaussian(10, 250, 10, 1.2, 0.3));
        let (fa, fb) = (feats(&a, 10), feats(&b, 10));
        let m = manifold_scores_blocked(fa, fb, 5, 16).unwrap();
        let (p, r) = (m.precision, m.recall);
        assert!(p > 0.0 && p < 1.0 && r > 0.0 && r < 1.0);
        assert_eq!((p, r), brute_precision_recall(fa, fb, 5));
        // Density and coverage of a set against itself: every point is in its own ball plus k
        // others' (density (k+1)/k), and every ball holds a point (coverage 1).
        let own = manifold_scores(fa, fa, 5).unwrap();
        assert_eq!(own.coverage, 1.0);
        assert!(own.density >= 1.0, "{own:?}");
        // Far away: nothing inside any ball.
        let far = manifold_scores(fa, feats(&gaussian(13, 250, 10, 1.0, 100.0), 10), 5).unwrap();
        assert_eq!((far.density, far.coverage), (0.0, 0.0));
    }

    #[test]
    fn precision_recall_blocking_at_scale() {
        let (n, d) = (10_000, 84);
        let (real, fake) = (gaussian(11, n, d, 1.0, 0.0), gaussian(12, n, d, 1.1, 0.05));
        let (fr, ff) = (feats(&real, d), feats(&fake, d));
        let start = std::time::Instant::now();
        let blocked = precision_recall(fr, ff, 3).unwrap();
        eprintln!("precision/recall {n}x{d} both ways, k=3: {:.2?} -> {blocked:?}", start.elapsed());
        // Small blocks that do not divide n exercise every block and tile edge.
        let small_blocks = manifold_scores_blocked(fr, ff, 3, 37).unwrap();
        assert_eq!((small_blocks.precision, small_blocks.recall), blocked);
        assert!(blocked.0 > 0.0 && blocked.0 < 1.0 && blocked.1 > 0.0 && blocked.1 < 1.0);
    }

    #[test]
    fn inception_score_bounds() {
        let one_hot = |class: usize| (0..10).map(move |c| if c == class { 1.0f32 } else { 0.0 });
        let single: Vec<f32> = (0..100).flat_map(|_| one_hot(3)).collect();
        assert!((inception_score(&single, 10).unwrap() - 1.0).abs() < 1e-12);
        let spread: Vec<f32> = (0..100).flat_map(|i| one_hot(i % 10)).collect();
        assert!((inception_score(&spread, 10).unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn inception_score_splits_average_each_parts_score() {
        // Split 1: two confident, different classes (score 2); split 2: both the same class (1).
        let probs = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        let (mean, std) = inception_score_splits(&probs, 2, 2).unwrap();
        assert!((mean - 1.5).abs() < 1e-9 && (std - 0.5).abs() < 1e-9, "{mean} {std}");
        assert!(inception_score_splits(&probs, 2, 5).is_err());
    }

    #[test]
    fn coverage_of_one_class_and_of_all() {
        let one_hot = |class: usize| (0..10).map(move |c| if c == class { 0.9f32 } else { 0.1 / 9.0 });
        let single: Vec<f32> = (0..200).flat_map(|_| one_hot(7)).collect();
        let cov = class_coverage(&single, 10).unwrap();
        assert_eq!((cov.histogram[7], cov.present), (200, 1));
        assert!((cov.kl_from_uniform - 10f64.ln()).abs() < 1e-12);
        let balanced: Vec<f32> = (0..200).flat_map(|i| one_hot(i % 10)).collect();
        let cov = class_coverage(&balanced, 10).unwrap();
        assert_eq!((cov.histogram, cov.present), (vec![20; 10], 10));
        assert!(cov.kl_from_uniform.abs() < 1e-12);
    }

    #[test]
    fn class_accuracy_counts_the_samples_classified_as_asked() {
        // Three samples of two classes: the first two classified as 0, the last as 1.
        let probs = [0.9, 0.1, 0.6, 0.4, 0.2, 0.8];
        assert_eq!(class_accuracy(&probs, 2, &[0, 0, 1]).unwrap(), 1.0);
        assert!((class_accuracy(&probs, 2, &[0, 1, 1]).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(class_accuracy(&probs, 2, &[1, 1, 0]).unwrap(), 0.0);
        assert!(class_accuracy(&probs, 2, &[0, 1]).is_err());
    }

    #[test]
    fn separability_chance_and_separated() {
        let (a, b) = (gaussian(13, 3000, 16, 1.0, 0.0), gaussian(14, 3000, 16, 1.0, 0.0));
        let same = separability_accuracy(feats(&a, 16), feats(&b, 16)).unwrap();
        assert!((same - 0.5).abs() < 0.05, "{same}");
        let c = gaussian(15, 3000, 16, 1.0, 1.5);
        let apart = separability_accuracy(feats(&a, 16), feats(&c, 16)).unwrap();
        assert!(apart > 0.95, "{apart}");
        // Identical sets: w = 0, every projection ties with the threshold.
        assert_eq!(separability_accuracy(feats(&a, 16), feats(&a, 16)).unwrap(), 0.5);
    }

    #[test]
    fn bad_input_is_an_error() {
        let data = [0.0f32; 12];
        assert!(Features::new(&data, 5, 3).is_err()); // 15 != 12
        assert!(Features::new(&data[..3], 1, 3).is_err()); // one row
        assert!(Features::new(&data, 12, 0).is_err());
        assert!(Features::new(&[0.0, f32::NAN, 1.0, 2.0], 2, 2).is_err());
        let wide = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let (a, b) = (Features::new(&data, 4, 3).unwrap(), Features::new(&wide, 2, 4).unwrap());
        assert!(frechet_distance_features(a, b).is_err());
        assert!(kid(a, b, 1, 2, 0).is_err());
        assert!(kid(a, a, 0, 2, 0).is_err());
        assert!(precision_recall(a, b, 1).is_err());
        assert!(precision_recall(a, a, 4).is_err()); // k must leave a neighbour
        assert!(separability_accuracy(a, b).is_err());
        let (mu, s) = (DVector::zeros(3), DMatrix::identity(3, 3));
        assert!(frechet_distance(&mu, &s, &DVector::zeros(2), &s).is_err());
        assert!(inception_score(&[0.5, 0.5, 1.0], 2).is_err());
        assert!(inception_score(&[2.0, -1.0], 2).is_err());
        assert!(class_coverage(&[], 10).is_err());
    }
}
