//! Self-conditioning (Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs"):
//! the training images grouped into `data.clusters` clusters by k-means on their pixels, whose
//! ids a conditional GAN then takes in place of labels. No label is read: an unconditional data
//! set (or a folder without class sub-folders) trains as a conditional one, which spares G the
//! in-between images an unconditional G draws between modes. A labelled conditional run can split
//! each class the same way (`model.clusters_per_class`): G and D then take (class, cluster).
//! This module owns the clustering (a pure function of the images, `k` and the seed; within
//! classes, of the labels too) and the class frequencies G and the judge draw from.
//!
//! The clustering is Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), fit
//! on at most [`FIT_SAMPLE`] images (fewer of large ones: [`FIT_VALUES`]) drawn by the seed, then
//! every image assigned to its nearest centre. It runs on one thread in a fixed order, so the
//! same images, `k` and seed give the same ids on every machine and thread count: a resumed run
//! recomputes them and must find what the run started with (run.json keeps the cluster sizes to
//! check against). It is written here
//! rather than taken from linfa-clustering for that guarantee and to convert only the sample and
//! a chunk at a time to floats (a 60,000-image set would be a 188 MB f32 matrix there).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::TrainingImages;
use crate::error::{Error, Result};

/// Images the centres are fitted on (drawn without replacement by the seed); all are assigned.
pub const FIT_SAMPLE: usize = 10_000;
/// Values (f32) the fitting sample may hold: fewer images of large ones (64 MB).
pub const FIT_VALUES: usize = 16 << 20;
/// Lloyd iterations at most (it stops earlier when no assignment changes).
pub const MAX_ITERATIONS: usize = 30;

/// The cluster id (0..k) of every image of `images`, and the clusters' sizes. Refused (naming the
/// data file) with fewer images than clusters; `k` must be 2 to 256.
pub fn cluster(images: &TrainingImages, k: usize, seed: u64) -> Result<(Vec<u8>, Vec<usize>)> {
    if !(2..=256).contains(&k) {
        return Err(Error::config("data.clusters", format!("must be 2 to 256, found {k}")));
    }
    if images.count < k {
        return Err(Error::bad_data(
            &images.source,
            format!(
                "holds {} images, fewer than the {k} clusters asked for: set data.clusters to {} or fewer, or add images",
                images.count, images.count
            ),
        ));
    }
    let all: Vec<usize> = (0..images.count).collect();
    let labels = k_means(images, &all, k, seed);
    let sizes = sizes(&labels, k);
    Ok((labels, sizes))
}

/// Each class of a labelled set split into `per_class` clusters (`model.clusters_per_class`):
/// every image's id `class * per_class + its cluster within the class` (0..classes * per_class),
/// and the ids' sizes. Class c is clustered on its own, with seed `seed + c`. Refused (naming the
/// data file) when a class has fewer images than `per_class`, or the images carry no labels.
pub fn cluster_within_classes(
    images: &TrainingImages,
    classes: usize,
    per_class: usize,
    seed: u64,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let ids = classes.saturating_mul(per_class);
    if per_class < 2 || ids > 256 {
        return Err(Error::config(
            "model.clusters_per_class",
            format!(
                "must be 2 or more with classes x clusters_per_class at most 256, found {per_class} x {classes}"
            ),
        ));
    }
    let Some(labels) = images.labels.as_ref() else {
        return Err(Error::bad_data(
            &images.source,
            "has no labels to split into clusters (model.clusters_per_class)",
        ));
    };
    if labels.len() != images.count {
        return Err(Error::bad_data(
            &images.source,
            format!("has {} labels for its {} images", labels.len(), images.count),
        ));
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        match members.get_mut(l as usize) {
            Some(m) => m.push(i),
            None => {
                return Err(Error::bad_data(
                    &images.source,
                    format!("image {i} has label {l}, not one of the {classes} classes (model.classes)"),
                ));
            }
        }
    }
    let mut out = vec![0u8; images.count];
    for (c, m) in members.iter().enumerate() {
        if m.len() < per_class {
            return Err(Error::bad_data(
                &images.source,
                format!(
                    "holds {} images of class {c}, fewer than the {per_class} clusters each class is split into \
                     (model.clusters_per_class): set model.clusters_per_class = 0 (no clusters) or at most {}, \
                     or add images of that class",
                    m.len(),
                    m.len()
                ),
            ));
        }
        let within = k_means(images, m, per_class, seed.wrapping_add(c as u64));
        for (&i, &j) in m.iter().zip(&within) {
            out[i] = (c * per_class + j as usize) as u8;
        }
    }
    let sizes = sizes(&out, ids);
    Ok((out, sizes))
}

/// The cluster id (0..k) of each of the images at `indices` (at least `k` of them; `k` at most
/// 256): the centres fitted on a sample of them drawn by `seed`, then each assigned.
fn k_means(images: &TrainingImages, indices: &[usize], k: usize, seed: u64) -> Vec<u8> {
    let d = images.dim();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // The fitting sample: a partial Fisher-Yates shuffle of the indices.
    let count = indices.len();
    let n = count.min(FIT_SAMPLE).min((FIT_VALUES / d.max(1)).max(k));
    let mut order = indices.to_vec();
    for i in 0..n {
        let j = rng.random_range(i..count);
        order.swap(i, j);
    }
    // The images as the GAN sees them, in [-1, 1] (distances only scale with the range).
    let mut sample = Vec::with_capacity(n * d);
    images.gather_into(&order[..n], &mut sample);
    let mut centres = seed_centres(&sample, d, k, &mut rng);
    let mut assigned = vec![usize::MAX; n];
    for _ in 0..MAX_ITERATIONS {
        let mut changed = false;
        for (i, x) in sample.chunks_exact(d).enumerate() {
            let (c, _) = nearest(x, &centres, d);
            changed |= assigned[i] != c;
            assigned[i] = c;
        }
        if !changed {
            break;
        }
        update_centres(&sample, d, &assigned, &mut centres, k);
    }
    // Every image, a chunk at a time.
    const CHUNK: usize = 1024;
    let mut labels = Vec::with_capacity(count);
    let mut chunk = Vec::new();
    for part in indices.chunks(CHUNK) {
        images.gather_into(part, &mut chunk);
        labels.extend(chunk.chunks_exact(d).map(|x| nearest(x, &centres, d).0 as u8));
    }
    labels
}

/// How many of `labels` fall in each of `k` classes.
pub fn sizes(labels: &[u8], k: usize) -> Vec<usize> {
    let mut sizes = vec![0usize; k];
    for &l in labels {
        if let Some(s) = sizes.get_mut(l as usize) {
            *s += 1;
        }
    }
    sizes
}

/// k-means++: the first centre a random image, each next one an image drawn with probability
/// proportional to its squared distance from the nearest centre so far.
fn seed_centres(sample: &[f32], d: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = sample.len() / d;
    let first = rng.random_range(0..n);
    let mut centres = sample[first * d..(first + 1) * d].to_vec();
    let mut dist: Vec<f64> = sample.chunks_exact(d).map(|x| squared(x, &centres) as f64).collect();
    for _ in 1..k {
        let total: f64 = dist.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.random::<f64>() * total;
            dist.iter()
                .position(|&w| {
                    r -= w;
                    r < 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.random_range(0..n)
        };
        let c = sample[pick * d..(pick + 1) * d].to_vec();
        for (w, x) in dist.iter_mut().zip(sample.chunks_exact(d)) {
            *w = w.min(squared(x, &c) as f64);
        }
        centres.extend(c);
    }
    centres
}

/// Each centre the mean of its images; an emptied one moves to the image farthest from its
/// centre (so that every cluster keeps images).
fn update_centres(sample: &[f32], d: usize, assigned: &[usize], centres: &mut [f32], k: usize) {
    let mut sums = vec![0f64; k * d];
    let mut counts = vec![0usize; k];
    for (x, &c) in sample.chunks_exact(d).zip(assigned) {
        counts[c] += 1;
        for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(x) {
            *s += v as f64;
        }
    }
    for c in 0..k {
        if counts[c] > 0 {
            for (m, &s) in centres[c * d..(c + 1) * d].iter_mut().zip(&sums[c * d..(c + 1) * d]) {
                *m = (s / counts[c] as f64) as f32;
            }
        }
    }
    let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return;
    }
    let mut far: Vec<f32> = sample
        .chunks_exact(d)
        .zip(assigned)
        .map(|(x, &a)| squared(x, &centres[a * d..(a + 1) * d]))
        .collect();
    for c in empty {
        let (i, _) =
            far.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        far[i] = 0.0;
        centres[c * d..(c + 1) * d].copy_from_slice(&sample[i * d..(i + 1) * d]);
    }
}

/// The nearest centre to `x` and its squared distance (the lower index on a tie).
fn nearest(x: &[f32], centres: &[f32], d: usize) -> (usize, f32) {
    centres
        .chunks_exact(d)
        .map(|c| squared(x, c))
        .enumerate()
        .fold((0, f32::INFINITY), |best, (i, v)| if v < best.1 { (i, v) } else { best })
}

/// Squared Euclidean distance, summed in eight lanes (vectorized, in a fixed order).
fn squared(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let t = x[l] - y[l];
            lanes[l] += t * t;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `per` images each of `groups` flat grey levels (0, 255 / (groups - 1), ...), with a
    /// little seeded noise, interleaved.
    fn groups(groups: usize, per: usize) -> TrainingImages {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut bytes = Vec::new();
        for i in 0..groups * per {
            let level = (i % groups) * 255 / (groups - 1);
            bytes.extend((0..16).map(|_| (level as i32 + rng.random_range(-8..=8)).clamp(0, 255) as u8));
        }
        TrainingImages {
            count: groups * per,
            rows: 4,
            cols: 4,
            channels: 1,
            bytes,
            source: PathBuf::from("synthetic"),
            labels: None,
        }
    }

    #[test]
    fn separated_groups_become_one_cluster_each() {
        let images = groups(4, 50);
        let (labels, sizes) = cluster(&images, 4, 0).unwrap();
        assert_eq!(sizes, vec![50; 4]);
        // Images of one grey level share an id, and no two levels share one.
        for g in 0..4 {
            let ids: Vec<u8> = labels.iter().skip(g).step_by(4).copied().collect();
            assert!(ids.iter().all(|&c| c == ids[0]), "level {g}: {ids:?}");
        }
        let mut firsts = labels[..4].to_vec();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 4);
    }

    #[test]
    fn each_class_is_split_into_its_own_clusters() {
        // Four grey levels; class 0 holds levels 0 and 2, class 1 levels 1 and 3.
        let mut images = groups(4, 40);
        images.labels = Some((0..160).map(|i| (i % 2) as u8).collect());
        let (ids, sizes) = cluster_within_classes(&images, 2, 2, 5).unwrap();
        assert_eq!(sizes, vec![40; 4]);
        for level in 0..4 {
            let of_level: Vec<u8> = ids.iter().skip(level).step_by(4).copied().collect();
            assert!(of_level.iter().all(|&c| c == of_level[0]), "level {level}: {of_level:?}");
            // A class's images keep to its ids: class c's are c * 2 and c * 2 + 1.
            assert_eq!(of_level[0] as usize / 2, level % 2, "level {level}");
        }
        assert_ne!(ids[0], ids[2]);
        assert_ne!(ids[1], ids[3]);
    }

    #[test]
    fn a_class_with_fewer_images_than_its_clusters_is_refused_naming_it() {
        let mut images = groups(2, 3);
        images.labels = Some(vec![0, 0, 0, 0, 0, 1]);
        let e = cluster_within_classes(&images, 2, 2, 0).unwrap_err().to_string();
        assert!(e.contains("synthetic") && e.contains("1 images of class 1"), "{e}");
        images.labels = Some(vec![0, 0, 1, 1]);
        let e = cluster_within_classes(&images, 2, 2, 0).unwrap_err().to_string();
        assert!(e.contains("4 labels for its 6 images"), "{e}");
        images.labels = None;
        assert!(cluster_within_classes(&images, 2, 2, 0).is_err());
    }

    #[test]
    fn the_same_images_and_seed_give_the_same_ids() {
        let images = groups(5, 40);
        let a = cluster(&images, 7, 11).unwrap();
        assert_eq!(a, cluster(&images, 7, 11).unwrap());
        assert!(a.0.iter().all(|&c| c < 7));
        assert_eq!(a.1.iter().sum::<usize>(), 200);
        // More clusters than grey levels: every cluster still holds images.
        assert!(a.1.iter().all(|&s| s > 0), "{:?}", a.1);
    }

    #[test]
    fn fewer_images_than_clusters_is_refused_naming_the_data() {
        let e = cluster(&groups(2, 2), 5, 0).unwrap_err().to_string();
        assert!(e.contains("synthetic") && e.contains("fewer than the 5 clusters"), "{e}");
        assert!(cluster(&groups(2, 2), 1, 0).is_err());
    }
}
