//! A `[rows, cols]` matrix turned around: the convolutions' changes of layout (a chunk's product
//! rows to channels, an image to channel-last and back, a weight's columns reordered). A copy: the
//! same values on every path.
//!
//! On CPUs with AVX-512 whole 16×16 tiles go through registers: sixteen rows loaded, interleaved
//! in four rounds of shuffles (32-bit pairs, 64-bit pairs, then the 128-bit lanes twice), and
//! stored as sixteen columns; the rows and columns past the last whole tile are copied value by
//! value. Elsewhere, blocks of 16 rows, each destination run written in order.

use super::on_wide_lanes;

/// `dst[c·rows + r] = src[r·cols + c]`.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { tiles_avx512(src, rows, cols, dst) };
    }
    on_wide_lanes(move || blocks(src, rows, cols, dst))
}

/// Blocks of 16 rows that stay in cache, each destination run written in order.
#[inline(always)]
fn blocks(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const BLOCK: usize = 16;
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        for c in 0..cols {
            let column = &src[r0 * cols + c..];
            for (k, v) in dst[c * rows + r0..c * rows + r1].iter_mut().enumerate() {
                *v = column[k * cols];
            }
        }
    }
}

/// Rows `rs` and columns `cs` of the matrix, value by value.
fn part(
    src: &[f32],
    (rows, cols): (usize, usize),
    dst: &mut [f32],
    rs: std::ops::Range<usize>,
    cs: std::ops::Range<usize>,
) {
    for r in rs {
        for c in cs.clone() {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// The whole 16×16 tiles through registers, then the rest value by value.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tiles_avx512(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    let (whole_rows, whole_cols) = (rows / 16 * 16, cols / 16 * 16);
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "the matrices' lengths");
    for r0 in (0..whole_rows).step_by(16) {
        for c0 in (0..whole_cols).step_by(16) {
            // SAFETY: rows r0..r0 + 16 <= rows and columns c0..c0 + 16 <= cols, so every value
            // read (src[(r0 + i)·cols + c0 + j]) and written (dst[(c0 + j)·rows + r0 + i]) lies
            // inside the rows·cols values of each slice (asserted above).
            unsafe {
                tile(src.as_ptr().add(r0 * cols + c0), cols, dst.as_mut_ptr().add(c0 * rows + r0), rows)
            };
        }
    }
    part(src, (rows, cols), dst, whole_rows..rows, 0..cols);
    part(src, (rows, cols), dst, 0..whole_rows, whole_cols..cols);
}

/// One 16×16 tile: row i of `src` (16 values from `src + i·src_stride`) becomes column i of `dst`
/// (value j at `dst + j·dst_stride + i`).
///
/// # Safety
/// The 16 rows of 16 values from `src` must be readable and those from `dst` writable, each row
/// `*_stride` values after the one before.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, row) in r.iter_mut().enumerate() {
        // SAFETY: row i lies inside the tile the caller vouches for.
        *row = unsafe { _mm512_loadu_ps(src.add(i * src_stride)) };
    }
    // Round 1, within each 128-bit lane L: rows 2i and 2i+1 interleaved value by value; t[2i]
    // holds their columns 4L and 4L+1, t[2i+1] their columns 4L+2 and 4L+3.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Round 2, pairs of values: s[4g + m] lane L holds column 4L + m of rows 4g..4g+4.
    let pairs = |lo: bool, a: __m512, b: __m512| {
        let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
        _mm512_castpd_ps(if lo { _mm512_unpacklo_pd(a, b) } else { _mm512_unpackhi_pd(a, b) })
    };
    let mut s = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let [a, b, c, d] = [t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]];
        s[4 * g] = pairs(true, a, c);
        s[4 * g + 1] = pairs(false, a, c);
        s[4 * g + 2] = pairs(true, b, d);
        s[4 * g + 3] = pairs(false, b, d);
    }
    // Rounds 3 and 4, the lanes: column 4L + m is lane L of s[m], s[4 + m], s[8 + m], s[12 + m].
    for m in 0..4 {
        let [a, b, c, d] = [s[m], s[4 + m], s[8 + m], s[12 + m]];
        let (ab_low, ab_high) = (_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
        let (cd_low, cd_high) = (_mm512_shuffle_f32x4::<0x44>(c, d), _mm512_shuffle_f32x4::<0xEE>(c, d));
        r[m] = _mm512_shuffle_f32x4::<0x88>(ab_low, cd_low);
        r[4 + m] = _mm512_shuffle_f32x4::<0xDD>(ab_low, cd_low);
        r[8 + m] = _mm512_shuffle_f32x4::<0x88>(ab_high, cd_high);
        r[12 + m] = _mm512_shuffle_f32x4::<0xDD>(ab_high, cd_high);
    }
    for (j, column) in r.iter().enumerate() {
        // SAFETY: column j of the tile lies inside the destination the caller vouches for.
        unsafe { _mm512_storeu_ps(dst.add(j * dst_stride), *column) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path moves each value where the definition puts it: whole tiles, edges, both.
    #[test]
    fn the_tiles_and_the_blocks_turn_the_matrix_around() {
        for (rows, cols) in [(1, 1), (16, 16), (32, 48), (196, 32), (32, 196), (17, 15), (3, 40), (49, 64)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let expected: Vec<f32> = (0..rows * cols).map(|n| src[(n % rows) * cols + n / rows]).collect();
            let mut fast = vec![f32::NAN; rows * cols];
            transpose(&src, rows, cols, &mut fast);
            assert_eq!(fast, expected, "{rows}×{cols}");
            let mut plain = vec![f32::NAN; rows * cols];
            blocks(&src, rows, cols, &mut plain);
            assert_eq!(plain, expected, "{rows}×{cols}, the portable blocks");
        }
    }
}
