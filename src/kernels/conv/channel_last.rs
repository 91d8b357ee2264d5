//! im2col rows in channel-last order, for the products whose result columns are the rows' columns:
//! col2im's product (`small · W`, then scattered) and the weight's gradient (`smallᵀ · rows`).
//!
//! A row in [`Plan::gather`]'s order holds, for each big channel c and window row kh, a run of k
//! values, so that gathering or scattering it moves cb·k runs of at most k values (5 for a 5×5
//! window). In channel-last order, `(kh·k + kw)·cb + c`, with the big side held channel-last
//! (`[hb, wb, cb]`), a window row is one run of up to k·cb values (160 for 32 channels): a copy or
//! an addition on full vector lanes. The products above sum over the small side's channels or over
//! the positions, never over a row's columns, so putting the columns in another order moves the
//! results' values without changing one bit of them: the scatter adds the same values to each big
//! value in the same order (positions in row order), and the weight's gradient is turned back to
//! burn's `[cs, cb, k, k]` at the end. The tests in `super::tests` hold both paths equal, bit for
//! bit. The convolution's own product sums over a row's columns, so it keeps [`Plan::gather`]'s
//! order (and its bits).

use super::{Plan, on_wide_lanes, transpose};
use std::mem::MaybeUninit;

/// The order of a row's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Columns {
    /// `(c·k + kh)·k + kw`, the order of burn's weight `[cs, cb, k, k]`.
    ChannelFirst,
    /// `(kh·k + kw)·cb + c` (see the module docs).
    ChannelLast,
}

impl Plan {
    /// The order the rows of col2im and of the weight's gradient take: channel-last where the
    /// big side has channels to run over (with one, both orders are the same).
    pub(super) fn free_columns(&self) -> Columns {
        if self.cb > 1 { Columns::ChannelLast } else { Columns::ChannelFirst }
    }

    /// A weight (or its gradient) `[cs, cb·k·k]` with each row's columns put in the order `to`,
    /// from the other one.
    pub(super) fn weight_in(&self, weight: &[f32], to: Columns) -> Vec<f32> {
        let (cb, kk) = (self.cb, self.k * self.k);
        let (rows, cols) = match to {
            Columns::ChannelLast => (cb, kk),
            Columns::ChannelFirst => (kk, cb),
        };
        let mut out = vec![0.0f32; self.cs * cb * kk];
        for (src, dst) in weight.chunks_exact(cb * kk).zip(out.chunks_exact_mut(cb * kk)) {
            transpose(src, rows, cols, dst);
        }
        out
    }

    /// One image's channel-last rows, every value written:
    /// `cols[(i·ws + j)·width + (kh·k + kw)·cb + c]` = big[c, i·s − p + kh, j·s − p + kw], 0
    /// outside the image; `scratch` holds the image channel-last.
    pub(super) fn gather_channel_last(
        &self,
        big: &[f32],
        scratch: &mut Vec<f32>,
        cols: &mut [MaybeUninit<f32>],
    ) {
        let (width, k, cb, wb) = (self.width(), self.k, self.cb, self.wb);
        scratch.resize(self.big_len(), 0.0);
        transpose(big, cb, self.hb * wb, scratch);
        on_wide_lanes(|| {
            for (n, row) in cols[..self.positions() * width].chunks_exact_mut(width).enumerate() {
                let (i, j) = (n / self.ws, n % self.ws);
                let (lo, hi, first) = self.columns(j);
                for (kh, run) in row.chunks_exact_mut(k * cb).enumerate() {
                    let (before, inside) = run.split_at_mut(lo * cb);
                    let (inside, after) = inside.split_at_mut((hi - lo) * cb);
                    match self.big_row(i, kh) {
                        Some(bi) => {
                            _ = inside.write_copy_of_slice(&scratch[(bi * wb + first) * cb..][..inside.len()])
                        }
                        None => inside.iter_mut().for_each(|v| _ = v.write(0.0)),
                    }
                    before.iter_mut().chain(after).for_each(|v| _ = v.write(0.0));
                }
            }
        })
    }

    /// Add one image's channel-last rows back where [`Plan::gather_channel_last`] took them from,
    /// row after row in order, into the image held channel-last in `scratch`, then write it to
    /// `big` (`[cb, hb, wb]`, every value): the values [`Plan::scatter`] adds, in its order.
    pub(super) fn scatter_channel_last(&self, cols: &[f32], scratch: &mut Vec<f32>, big: &mut [f32]) {
        let (width, k, cb, wb) = (self.width(), self.k, self.cb, self.wb);
        scratch.clear();
        scratch.resize(self.big_len(), 0.0);
        on_wide_lanes(|| {
            for (n, row) in cols[..self.positions() * width].chunks_exact(width).enumerate() {
                let (i, j) = (n / self.ws, n % self.ws);
                let (lo, hi, first) = self.columns(j);
                for (kh, run) in row.chunks_exact(k * cb).enumerate() {
                    let Some(bi) = self.big_row(i, kh) else { continue };
                    let src = &run[lo * cb..hi * cb];
                    let dst = &mut scratch[(bi * wb + first) * cb..][..src.len()];
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                }
            }
        });
        transpose(scratch, self.hb * wb, cb, big);
    }
}
