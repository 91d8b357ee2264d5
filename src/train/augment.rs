//! Differentiable augmentation of the batches D sees (DiffAugment, Zhao et al. 2020): the same
//! random transformation family on real and on fake images, in D's updates and in G's, so that D
//! cannot tell them apart by the augmentation and G's gradient flows through it.
//!
//! Both transformations follow the reference implementation (`DiffAugment_pytorch.py`):
//! - `translation`: each image shifted by whole pixels, up to 1/8 of its side each way
//!   (`int(side / 8 + 0.5)`: ±4 pixels on 28), the uncovered border zero;
//! - `cutout`: a square of half the side (`int(side / 2 + 0.5)`) set to zero, centred anywhere
//!   in the image (cut at its edges).
//!
//! Pixels are moved, never mixed, so one plan is a source index and a mask per output pixel:
//! `out[b, p] = x[b, index[b, p]] * mask[b, p]`, a `gather` whose gradient burn computes. A colour
//! image's channels move together: one plan per image, applied to each channel (the reference
//! transforms [b, c, h, w] batches the same way).
//! Deciding (the plan, from the augmentation stream) is apart from doing (the gather) and tested
//! on its own.

use burn::tensor::{Int, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::config::Augment;

/// Where each output pixel comes from, for a batch of `rows x cols` images.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// [b * pixels] source pixel of each output pixel (within its own image).
    pub index: Vec<i64>,
    /// [b * pixels] 1 where the pixel is kept, 0 where it is zeroed.
    pub mask: Vec<f32>,
}

/// Draw the plan for `batch` images from `rng`: per image, the shift (translation) and then the
/// cutout's centre, in the order `kinds` lists them.
pub(crate) fn plan(kinds: &[Augment], rows: usize, cols: usize, batch: usize, rng: &mut ChaCha8Rng) -> Plan {
    let pixels = rows * cols;
    let mut index = Vec::with_capacity(batch * pixels);
    let mut mask = Vec::with_capacity(batch * pixels);
    for _ in 0..batch {
        // Source (row, col) of each output pixel, or None where it falls outside the image.
        let mut source: Vec<Option<(usize, usize)>> =
            (0..pixels).map(|p| Some((p / cols, p % cols))).collect();
        for kind in kinds {
            match kind {
                Augment::Translation => {
                    let (sr, sc) = ((rows as f64 / 8.0 + 0.5) as i64, (cols as f64 / 8.0 + 0.5) as i64);
                    let dr = rng.random_range(-sr..=sr);
                    let dc = rng.random_range(-sc..=sc);
                    // The image so far, shifted: output (r, c) shows what (r + dr, c + dc) showed.
                    let before = source.clone();
                    for (p, s) in source.iter_mut().enumerate() {
                        let (r, c) = ((p / cols) as i64 + dr, (p % cols) as i64 + dc);
                        let inside = (0..rows as i64).contains(&r) && (0..cols as i64).contains(&c);
                        *s = if inside { before[r as usize * cols + c as usize] } else { None };
                    }
                }
                Augment::Cutout => {
                    let (hr, hc) = ((rows as f64 / 2.0 + 0.5) as i64, (cols as f64 / 2.0 + 0.5) as i64);
                    // The reference draws the offset in [0, side + (1 - size % 2)).
                    let or = rng.random_range(0..rows as i64 + (1 - hr % 2));
                    let oc = rng.random_range(0..cols as i64 + (1 - hc % 2));
                    let (r0, c0) = (or - hr / 2, oc - hc / 2);
                    for (p, s) in source.iter_mut().enumerate() {
                        let (r, c) = ((p / cols) as i64, (p % cols) as i64);
                        if (r0..r0 + hr).contains(&r) && (c0..c0 + hc).contains(&c) {
                            *s = None;
                        }
                    }
                }
            }
        }
        for s in source {
            index.push(s.map_or(0, |(r, c)| (r * cols + c) as i64));
            mask.push(if s.is_some() { 1.0 } else { 0.0 });
        }
    }
    Plan { index, mask }
}

/// `x` [b, channels * rows * cols] (each image's channels one after the other) augmented by a
/// fresh plan from `rng`, the same for every channel of an image; `x` unchanged when `kinds` is
/// empty (and nothing drawn).
pub(crate) fn apply(
    x: Tensor<2>,
    kinds: &[Augment],
    (rows, cols): (usize, usize),
    rng: &mut ChaCha8Rng,
) -> Tensor<2> {
    if kinds.is_empty() {
        return x;
    }
    let [batch, pixels] = x.dims();
    let device = x.device();
    let Plan { index, mask } = plan(kinds, rows, cols, batch, rng);
    let (index, mask) = per_channel(index, mask, pixels / (rows * cols), rows * cols);
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [batch, pixels]), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [batch, pixels]), &device);
    x.gather(1, index) * mask
}

/// A plan of `area` pixels per image repeated over each image's `channels` (channel k's sources
/// are in channel k); the plan itself for grey images.
fn per_channel(index: Vec<i64>, mask: Vec<f32>, channels: usize, area: usize) -> (Vec<i64>, Vec<f32>) {
    if channels == 1 {
        return (index, mask);
    }
    let mut all_index = Vec::with_capacity(index.len() * channels);
    let mut all_mask = Vec::with_capacity(mask.len() * channels);
    for (image, keep) in index.chunks_exact(area).zip(mask.chunks_exact(area)) {
        for k in 0..channels {
            all_index.extend(image.iter().map(|&i| i + (k * area) as i64));
            all_mask.extend_from_slice(keep);
        }
    }
    (all_index, all_mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use rand::SeedableRng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(11)
    }

    #[test]
    fn translation_moves_whole_images_within_the_reference_range() {
        let (rows, cols) = (28, 28);
        let mut r = rng();
        for _ in 0..50 {
            let p = plan(&[Augment::Translation], rows, cols, 1, &mut r);
            // A shift (dr, dc): kept pixels read from (row + dr, col + dc), the rest are zero.
            let kept: Vec<usize> = (0..rows * cols).filter(|&i| p.mask[i] == 1.0).collect();
            let first = kept[0];
            let (dr, dc) = (
                (p.index[first] as usize / cols) as i64 - (first / cols) as i64,
                (p.index[first] as usize % cols) as i64 - (first % cols) as i64,
            );
            assert!(dr.abs() <= 4 && dc.abs() <= 4, "shift ({dr}, {dc})");
            for &i in &kept {
                let (r, c) = ((i / cols) as i64, (i % cols) as i64);
                assert_eq!(p.index[i], (r + dr) * cols as i64 + c + dc);
            }
            assert_eq!(kept.len() as i64, (28 - dr.abs()) * (28 - dc.abs()));
        }
    }

    /// Applied in the order listed, as the reference's `x = f(x)`: a cutout before a shift moves
    /// with the image.
    #[test]
    fn steps_compose_in_the_order_listed() {
        let (mut a, mut b, mut c) = (rng(), rng(), rng());
        let both = plan(&[Augment::Cutout, Augment::Translation], 28, 28, 1, &mut a);
        // The same draws, one step at a time: the cutout's centre first, then the shift.
        let cut = plan(&[Augment::Cutout], 28, 28, 1, &mut b);
        c.random_range(0..29i64);
        c.random_range(0..29i64);
        let shift = plan(&[Augment::Translation], 28, 28, 1, &mut c);
        for p in 0..28 * 28 {
            let through = shift.mask[p] == 1.0 && cut.mask[shift.index[p] as usize] == 1.0;
            assert_eq!(both.mask[p] == 1.0, through, "pixel {p}");
            if through {
                assert_eq!(both.index[p], shift.index[p]);
            }
        }
    }

    #[test]
    fn cutout_zeroes_a_square_of_half_the_side_cut_at_the_edges() {
        let mut r = rng();
        let mut sizes = Vec::new();
        for _ in 0..200 {
            let p = plan(&[Augment::Cutout], 28, 28, 1, &mut r);
            // Kept pixels stay where they are.
            assert!((0..28 * 28).all(|i| p.mask[i] == 0.0 || p.index[i] == i as i64));
            let zeros = p.mask.iter().filter(|&&m| m == 0.0).count();
            assert!(zeros <= 14 * 14 && zeros > 0);
            sizes.push(zeros);
        }
        // Some squares fall wholly inside the image.
        assert!(sizes.contains(&(14 * 14)));
    }

    #[test]
    fn applying_a_plan_gathers_and_masks_and_passes_gradients() {
        let device = Device::flex().autodiff();
        let x: Vec<f32> = (0..2 * 16).map(|i| i as f32).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [2, 16]), &device).require_grad();
        let kinds = [Augment::Translation, Augment::Cutout];
        let (mut a, mut b) = (rng(), rng());
        let out: Vec<f32> = apply(x.clone(), &kinds, (4, 4), &mut a).to_data().try_into_vec().unwrap();
        let p = plan(&kinds, 4, 4, 2, &mut b);
        for (i, &v) in out.iter().enumerate() {
            let image = i / 16;
            assert_eq!(v, (image * 16) as f32 * p.mask[i] + p.index[i] as f32 * p.mask[i]);
        }
        // The gradient of the sum counts how often each input pixel was kept.
        let grads = apply(x.clone(), &kinds, (4, 4), &mut rng()).sum().backward();
        let g: Vec<f32> = x.grad(&grads).unwrap().to_data().try_into_vec().unwrap();
        let mut counts = vec![0f32; 32];
        for i in 0..32 {
            counts[(i / 16) * 16 + p.index[i] as usize] += p.mask[i];
        }
        assert_eq!(g, counts);
        // Nothing to do: the batch as it was, and no draw.
        let mut c = rng();
        let same = apply(x.clone(), &[], (4, 4), &mut c);
        assert_eq!(same.to_data(), x.to_data());
        assert_eq!(c, rng());
    }

    /// A colour image's three channels are moved and cut as one: each channel of the output is
    /// what the same draws make of that channel alone as a grey image.
    #[test]
    fn a_colour_images_channels_move_together() {
        let device = Device::flex();
        let (side, area) = (8, 64);
        let kinds = [Augment::Translation, Augment::Cutout];
        // Two RGB images, every value distinct.
        let x: Vec<f32> = (0..2 * 3 * area).map(|i| 1.0 + i as f32).collect();
        let colour = Tensor::<2>::from_data(TensorData::new(x.clone(), [2, 3 * area]), &device);
        let out: Vec<f32> =
            apply(colour, &kinds, (side, side), &mut rng()).into_data().try_into_vec().unwrap();
        let p = plan(&kinds, side, side, 2, &mut rng());
        for image in 0..2 {
            for k in 0..3 {
                for q in 0..area {
                    let (at, plan_at) = (image * 3 * area + k * area + q, image * area + q);
                    let expected =
                        x[image * 3 * area + k * area + p.index[plan_at] as usize] * p.mask[plan_at];
                    assert_eq!(out[at], expected, "image {image} channel {k} pixel {q}");
                }
            }
        }
        assert!(out.contains(&0.0), "something was cut");
    }
}
