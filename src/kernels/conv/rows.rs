//! One im2col row at a time, gathered from the big side or added back to it: the copies behind
//! [`super::Plan`]'s gather and scatter.
//!
//! A row holds, for each big channel c and window row kh in order, a run of k values: big[c, bi,
//! first + kw − lo] for kw in lo..hi and 0 for the other kw, or k zeros where the window row bi lies
//! outside the image. On CPUs with AVX-512 the gather writes a run of up to 16 values with one
//! masked load and one masked store; elsewhere, and for longer runs, plain loops, which move the
//! same values (a test below holds the two paths equal). The scatter adds each run to the big side
//! value by value, in row order, unrolled for runs of up to 5 values.

use std::mem::MaybeUninit;

/// Where one im2col row's runs lie in the big side (one image's `[cb, hb, wb]`).
pub(super) struct Runs<'a> {
    /// The window's side: each run's length.
    pub k: usize,
    /// The window columns inside the image: lo..hi.
    pub lo: usize,
    pub hi: usize,
    /// For each window row kh, the offset of big[0, bi, first] (None: the row is outside).
    pub starts: &'a [Option<usize>],
    /// The big side's channels and the distance between two of them (hb·wb).
    pub channels: usize,
    pub channel_len: usize,
}

impl Runs<'_> {
    /// `f(the run's offset in the row, its big offset if inside)` for each run in row order.
    #[inline(always)]
    fn each(&self, mut f: impl FnMut(usize, Option<usize>)) {
        for c in 0..self.channels {
            for (kh, start) in self.starts.iter().enumerate() {
                f((c * self.k + kh) * self.k, start.map(|s| s + c * self.channel_len));
            }
        }
    }

    /// Whether a run fits one 16-lane register and the CPU has AVX-512.
    fn lanes(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.k <= 16 && std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Write the im2col row `row` (`channels·k·k` values, every one written) from `big`.
    pub fn gather(&self, big: &[f32], row: &mut [MaybeUninit<f32>]) {
        assert_eq!(row.len(), self.channels * self.k * self.k, "an im2col row's length");
        #[cfg(target_arch = "x86_64")]
        if self.lanes() {
            // SAFETY: the CPU supports AVX-512F and k <= 16, checked just above.
            return unsafe { self.gather_avx512(big, row) };
        }
        self.gather_portable(big, row)
    }

    fn gather_portable(&self, big: &[f32], row: &mut [MaybeUninit<f32>]) {
        let (k, lo, hi) = (self.k, self.lo, self.hi);
        self.each(|at, start| {
            let dst = &mut row[at..][..k];
            match start {
                Some(s) => {
                    let src = &big[s..][..hi - lo];
                    dst[..lo].iter_mut().for_each(|v| _ = v.write(0.0));
                    dst[lo..hi].iter_mut().zip(src).for_each(|(v, s)| _ = v.write(*s));
                    dst[hi..].iter_mut().for_each(|v| _ = v.write(0.0));
                }
                None => dst.iter_mut().for_each(|v| _ = v.write(0.0)),
            }
        });
    }

    /// Add the im2col row `row` back into `big`, run after run. Runs of a length known when
    /// compiling (1 to 5 values: a 5×5 window's, whole or cut by the padding) are unrolled;
    /// loads and stores of single values let each run read what the one before it stored, where
    /// masked vector loads would wait for it (measured: twice as fast as either those or a loop).
    pub fn scatter(&self, row: &[f32], big: &mut [f32]) {
        match self.hi - self.lo {
            1 => self.scatter_runs::<1>(row, big),
            2 => self.scatter_runs::<2>(row, big),
            3 => self.scatter_runs::<3>(row, big),
            4 => self.scatter_runs::<4>(row, big),
            5 => self.scatter_runs::<5>(row, big),
            _ => self.scatter_any(row, big),
        }
    }

    fn scatter_runs<const N: usize>(&self, row: &[f32], big: &mut [f32]) {
        let lo = self.lo;
        self.each(|at, start| {
            let Some(s) = start else { return };
            let (src, dst) = (&row[at + lo..][..N], &mut big[s..][..N]);
            for w in 0..N {
                dst[w] += src[w];
            }
        });
    }

    fn scatter_any(&self, row: &[f32], big: &mut [f32]) {
        let (lo, hi) = (self.lo, self.hi);
        self.each(|at, start| {
            let Some(s) = start else { return };
            let src = &row[at + lo..][..hi - lo];
            big[s..][..hi - lo].iter_mut().zip(src).for_each(|(d, s)| *d += s);
        });
    }

    /// The lanes lo..hi of a 16-lane mask, and the lanes 0..k.
    #[cfg(target_arch = "x86_64")]
    fn masks(&self) -> (u16, u16) {
        let below = |n: usize| ((1u32 << n) - 1) as u16;
        (below(self.hi) & !below(self.lo), below(self.k))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn gather_avx512(&self, big: &[f32], row: &mut [MaybeUninit<f32>]) {
        use std::arch::x86_64::{_mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_setzero_ps};
        let (inside, run) = self.masks();
        let (k, lo, hi) = (self.k, self.lo, self.hi);
        self.each(|at, start| {
            let dst = row[at..][..k].as_mut_ptr().cast::<f32>();
            let values = match start {
                // SAFETY: the lanes lo..hi read big[s..s + hi − lo], inside `big` (the slice
                // bounds-checks it); the other lanes are masked off and not read.
                Some(s) => unsafe {
                    _mm512_maskz_loadu_ps(inside, big[s..][..hi - lo].as_ptr().wrapping_sub(lo))
                },
                None => _mm512_setzero_ps(),
            };
            // SAFETY: the lanes 0..k write row[at..at + k], inside `row`.
            unsafe { _mm512_mask_storeu_ps(dst, run, values) };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Big sides of 3 channels of 6×9 values, and the runs of a 5×5 window at every column
    /// offset a padding of 2 gives: whole, cut on the left or the right, and rows outside.
    fn cases() -> Vec<(usize, usize, Vec<Option<usize>>)> {
        let mut cases = Vec::new();
        for (lo, hi, first) in [(0, 5, 0), (2, 5, 0), (1, 5, 0), (0, 4, 5), (0, 3, 6), (0, 5, 4)] {
            let starts = vec![None, Some(first), Some(9 + first), None, Some(2 * 9 + first)];
            cases.push((lo, hi, starts));
        }
        cases
    }

    fn big() -> Vec<f32> {
        (0..3 * 6 * 9).map(|i| (i as f32 * 0.61).sin() * 3.0).collect()
    }

    #[test]
    fn the_lane_gather_writes_what_the_plain_loops_write() {
        let big = big();
        for (lo, hi, starts) in cases() {
            let runs = Runs { k: 5, lo, hi, starts: &starts, channels: 3, channel_len: 6 * 9 };
            let (mut lanes, mut plain) =
                (vec![MaybeUninit::new(f32::NAN); 75], vec![MaybeUninit::new(f32::NAN); 75]);
            runs.gather(&big, &mut lanes);
            runs.gather_portable(&big, &mut plain);
            // SAFETY: both were initialized (NaN), then written.
            let bits = |v: &[MaybeUninit<f32>]| {
                v.iter().map(|x| unsafe { x.assume_init() }.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(bits(&lanes), bits(&plain), "lo {lo}, hi {hi}");
            assert!(bits(&plain).iter().all(|b| !f32::from_bits(*b).is_nan()), "every value written");
        }
    }

    #[test]
    fn unrolled_scatters_add_what_the_plain_loop_adds() {
        let row: Vec<f32> = (0..75).map(|i| (i as f32 * 0.37).cos()).collect();
        for (lo, hi, starts) in cases() {
            let runs = Runs { k: 5, lo, hi, starts: &starts, channels: 3, channel_len: 6 * 9 };
            let (mut unrolled, mut plain) = (big(), big());
            runs.scatter(&row, &mut unrolled);
            runs.scatter_any(&row, &mut plain);
            assert_eq!(unrolled, plain, "lo {lo}, hi {hi}");
            assert_ne!(unrolled, big(), "the row was added");
        }
    }
}
