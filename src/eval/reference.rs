//! The real images behind a judge, for every kind of data: what the judge learns from, what it is
//! tested on (a held-out split, its accuracy reported), and the real images samples are compared
//! with.
//!
//! - MNIST and Fashion-MNIST: the training split teaches the ten classes, the test split tests the
//!   judge and is what samples are compared with.
//! - CIFAR-10: the same with `data_batch_*.bin` and `test_batch.bin` (without `test_batch.bin`, a
//!   seeded tenth of the training images is held out and compared with).
//! - A folder with class sub-folders (two or more): its classes; a seeded tenth of its images (at
//!   least [`MIN_HELD_OUT`]) is held out to test the judge; samples are compared with all its
//!   images, as the GAN trained on all of them.
//! - A folder without class sub-folders (or with one): the judge learns which of four rotations
//!   (0, 90, 180, 270 degrees) an image was shown at, a task that needs no labels (Gidaris et al.,
//!   "Unsupervised representation learning by predicting image rotations", 2018) and makes its
//!   features see shape and texture; FID, KID, precision/recall, density/coverage and the
//!   separability probe work as with classes, the class metrics (inception score, classes present)
//!   do not exist for it.
//!
//! Nothing is ever downloaded for a judge: it learns from the images the run trains on.

use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::judge::{JudgeShape, JudgeTask};
use crate::config::{DataConfig, Dataset};
use crate::data::{self, LabelledImages, Split, TrainingImages, cifar};
use crate::durable::sha256_file;
use crate::error::{Error, Result};

/// The fewest images a judge is trained for (half a batch; below it no split means anything).
pub const MIN_IMAGES: usize = 20;
/// The fewest images held out to test a folder's judge.
pub const MIN_HELD_OUT: usize = 10;
/// The smallest image side the judge's network takes (two 5x5 convolutions and 2x2 poolings).
pub const MIN_SIDE: usize = 12;
/// Salts of the held-out split's stream and of a folder's reference order (apart from the judge's
/// training seed).
const SPLIT_SALT: u64 = 0x686f_6c64_6f75_7400;
const REFERENCE_SALT: u64 = 0x7265_616c_5f6f_7264;

/// The real images of one data set, located and (for CIFAR-10 and folders) read.
#[derive(Debug)]
pub struct JudgeData {
    pub dataset: Dataset,
    /// What the judge takes and tells apart.
    pub shape: JudgeShape,
    /// What identifies the images: checksums of the files (part of the judge's cache key).
    pub identity: String,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// The IDX files' folder, read when needed (a cached judge needs only the checksums).
    Idx(PathBuf),
    /// All the images, labelled or not, and the separate test images when the data set has them.
    Images { all: TrainingImages, test: Option<TrainingImages> },
}

/// Whether a judge can be trained for `count` images of `side` pixels: the reason when not.
pub fn unsupported(count: usize, side: usize) -> Option<String> {
    if side < MIN_SIDE {
        return Some(format!(
            "images of {side}x{side} are too small for the judge (at least {MIN_SIDE}x{MIN_SIDE})"
        ));
    }
    if count < MIN_IMAGES {
        return Some(format!("{count} images are too few to train a judge (at least {MIN_IMAGES})"));
    }
    None
}

/// The task and class count a judge of these labels learns: their classes when there are two or
/// more, else rotations.
pub fn task_for(labels: Option<&[u8]>) -> (JudgeTask, usize) {
    match labels {
        Some(l) if l.iter().any(|&x| x != l[0]) => {
            (JudgeTask::Classes, l.iter().map(|&x| x as usize + 1).max().unwrap_or(0))
        }
        _ => (JudgeTask::Rotation, 4),
    }
}

impl JudgeData {
    /// Locate (and read, where it is not MNIST's format) the images `data` names, from `explicit`
    /// when given. `progress`: say what a folder's decoding did.
    pub fn open(data: &DataConfig, explicit: Option<&Path>, progress: data::Progress) -> Result<Self> {
        let dataset = data.dataset;
        let explicit = explicit.or(data.dir.as_deref());
        if dataset.is_idx() {
            let dir = data::locate(dataset, explicit)?;
            let mut identity = String::new();
            for stem in &data::FILE_STEMS[..2] {
                let path = data::find_file(&dir, stem)
                    .ok_or_else(|| Error::DataNotFound(format!("{}: {stem} is missing", dir.display())))?;
                identity.push_str(&sha256_file(&path)?);
                identity.push('\n');
            }
            return Ok(Self { dataset, shape: JudgeShape::IDX, identity, source: Source::Idx(dir) });
        }
        let dir = data::required_dir(dataset, explicit)?;
        let (all, test, identity) = match dataset {
            Dataset::Cifar10 => {
                let folder = cifar::locate(dir)?;
                let all = cifar::load_train(dir)?;
                let mut identity = String::new();
                for name in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]) {
                    let path = folder.join(name);
                    if path.is_file() {
                        identity.push_str(&format!("{name} {}\n", sha256_file(&path)?));
                    }
                }
                (all, cifar::load_test(dir)?, identity)
            }
            _ => {
                let (all, report) = data::load_folder(data, dir, progress)?;
                // The decoded file is named by the SHA-256 of every file's path, label and bytes.
                let key =
                    all.source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let identity = format!("folder {key} classes {}\n", report.classes.join("/"));
                (all, None, identity)
            }
        };
        let (task, classes) = task_for(all.labels.as_deref());
        let shape = JudgeShape { side: all.rows, channels: all.channels, classes, task };
        Ok(Self { dataset, shape, identity, source: Source::Images { all, test } })
    }

    /// Why no judge can be trained for these images, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        match &self.source {
            Source::Idx(_) => None,
            Source::Images { all, .. } => unsupported(all.count, all.rows),
        }
    }

    /// The judge's training and test sets (rotated copies for the rotation task), the held-out
    /// split drawn from `seed`.
    pub fn judge_sets(&self, seed: u64) -> Result<(LabelledImages, LabelledImages)> {
        if let Some(why) = self.unsupported() {
            return Err(Error::bad_data(self.source_path(), why));
        }
        let (all, test) = match &self.source {
            Source::Idx(dir) => {
                return Ok((
                    data::load_labelled(self.dataset, dir, Split::Train)?,
                    data::load_labelled(self.dataset, dir, Split::Test)?,
                ));
            }
            Source::Images { all, test } => (all, test),
        };
        let (train_idx, test_idx, test_set) = match test {
            Some(t) => ((0..all.count).collect(), Vec::new(), Some(t)),
            None => {
                let (train, held_out) = held_out_split(all.count, seed);
                (train, held_out, None)
            }
        };
        let pick = |set: &TrainingImages, idx: &[usize]| -> LabelledImages {
            match self.shape.task {
                JudgeTask::Classes => {
                    let labels = set.labels.as_deref().unwrap_or_default();
                    LabelledImages {
                        images: subset(set, idx),
                        labels: idx.iter().map(|&i| labels[i]).collect(),
                    }
                }
                JudgeTask::Rotation => rotations(set, idx),
            }
        };
        let train = pick(all, &train_idx);
        let test = match test_set {
            Some(t) => pick(t, &(0..t.count).collect::<Vec<_>>()),
            None => pick(all, &test_idx),
        };
        Ok((train, test))
    }

    /// The real images samples are compared with (see the module doc), with their classes when
    /// the data has them, in a seeded order (`seed`), so that the first n (what the evaluation
    /// during training compares with) are a fair sample of them all. A test set as published is
    /// not one: MNIST's first 5,000 test digits are the NIST training set's writers, its last
    /// 5,000 its test set's, and a folder lists its images class by class.
    pub fn reference(&self, seed: u64) -> Result<TrainingImages> {
        let images = match &self.source {
            Source::Idx(dir) => {
                let set = data::load_labelled(self.dataset, dir, Split::Test)?;
                let mut images = set.images;
                images.labels = Some(set.labels);
                images
            }
            Source::Images { test: Some(t), .. } => t.clone(),
            Source::Images { all, test: None } if self.dataset == Dataset::Cifar10 => {
                let (_, held_out) = held_out_split(all.count, seed);
                subset(all, &held_out)
            }
            Source::Images { all, .. } => all.clone(),
        };
        let mut order: Vec<usize> = (0..images.count).collect();
        shuffle(&mut order, seed ^ REFERENCE_SALT);
        Ok(subset(&images, &order))
    }

    /// Which images [`JudgeData::reference`] gives, for a report's protocol.
    pub fn describe_reference(&self) -> &'static str {
        match &self.source {
            Source::Idx(_) => "the test split",
            Source::Images { test: Some(_), .. } => "the test batch",
            Source::Images { test: None, .. } if self.dataset == Dataset::Cifar10 => {
                "a seeded tenth of the training batches, held out"
            }
            Source::Images { .. } => "all the folder's images",
        }
    }

    /// The file the images came from (for messages).
    fn source_path(&self) -> &Path {
        match &self.source {
            Source::Idx(dir) => dir,
            Source::Images { all, .. } => &all.source,
        }
    }
}

/// A seeded split of `count` images: (training indices, held-out indices), the held-out a tenth
/// (at least [`MIN_HELD_OUT`]), both in ascending order.
pub fn held_out_split(count: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..count).collect();
    shuffle(&mut order, seed ^ SPLIT_SALT);
    let held = (count / 10).max(MIN_HELD_OUT).min(count / 2);
    let mut test = order[..held].to_vec();
    let mut train = order[held..].to_vec();
    test.sort_unstable();
    train.sort_unstable();
    (train, test)
}

/// Fisher-Yates with a stream seeded from `seed`.
fn shuffle(order: &mut [usize], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
}

/// The images at `idx`, with their labels when they have them.
fn subset(set: &TrainingImages, idx: &[usize]) -> TrainingImages {
    let d = set.dim();
    let mut bytes = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        bytes.extend_from_slice(&set.bytes[i * d..(i + 1) * d]);
    }
    TrainingImages {
        count: idx.len(),
        rows: set.rows,
        cols: set.cols,
        channels: set.channels,
        bytes,
        source: set.source.clone(),
        labels: set.labels.as_ref().map(|l| idx.iter().map(|&i| l[i]).collect()),
    }
}

/// Each image at `idx` four times, turned by 0, 90, 180 and 270 degrees, labelled 0-3.
fn rotations(set: &TrainingImages, idx: &[usize]) -> LabelledImages {
    let d = set.dim();
    let mut bytes = Vec::with_capacity(idx.len() * d * 4);
    let mut labels = Vec::with_capacity(idx.len() * 4);
    for &i in idx {
        let image = &set.bytes[i * d..(i + 1) * d];
        for quarter in 0..4u8 {
            bytes.extend(rotate(image, set.rows, set.channels, quarter));
            labels.push(quarter);
        }
    }
    let images = TrainingImages {
        count: labels.len(),
        rows: set.rows,
        cols: set.cols,
        channels: set.channels,
        bytes,
        source: set.source.clone(),
        labels: None,
    };
    LabelledImages { images, labels }
}

/// A square `[channels, side, side]` image turned anticlockwise by `quarter` quarter turns.
pub fn rotate(image: &[u8], side: usize, channels: usize, quarter: u8) -> Vec<u8> {
    let s = side;
    let mut out = vec![0u8; image.len()];
    for c in 0..channels {
        let plane = &image[c * s * s..(c + 1) * s * s];
        let dst = &mut out[c * s * s..(c + 1) * s * s];
        for y in 0..s {
            for x in 0..s {
                let (sy, sx) = match quarter % 4 {
                    0 => (y, x),
                    1 => (x, s - 1 - y),
                    2 => (s - 1 - y, s - 1 - x),
                    _ => (s - 1 - x, y),
                };
                dst[y * s + x] = plane[sy * s + sx];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_turns_compose_and_four_are_the_identity() {
        let side = 5;
        let image: Vec<u8> = (0..2 * side * side).map(|v| v as u8).collect();
        let once = rotate(&image, side, 2, 1);
        assert_ne!(once, image);
        assert_eq!(rotate(&once, side, 2, 1), rotate(&image, side, 2, 2));
        assert_eq!(rotate(&rotate(&image, side, 2, 2), side, 2, 1), rotate(&image, side, 2, 3));
        assert_eq!(rotate(&rotate(&image, side, 2, 3), side, 2, 1), image);
        // Anticlockwise: the top-right corner comes to the top left.
        assert_eq!(once[0], image[side - 1]);
        // Each channel turns on its own.
        assert_eq!(once[side * side], image[side * side + side - 1]);
    }

    #[test]
    fn the_held_out_split_is_a_seeded_tenth_disjoint_from_training() {
        let (train, test) = held_out_split(500, 0);
        assert_eq!((train.len(), test.len()), (450, 50));
        assert!(train.iter().all(|i| !test.contains(i)));
        assert_eq!(held_out_split(500, 0), (train.clone(), test.clone()));
        assert_ne!(held_out_split(500, 1).1, test);
        // Small folders still hold out ten images, never more than half.
        assert_eq!(held_out_split(30, 0).1.len(), 10);
        assert_eq!(held_out_split(20, 0).1.len(), 10);
    }

    #[test]
    fn labels_of_two_classes_or_more_are_learned_else_rotations() {
        assert_eq!(task_for(Some(&[0, 2, 1])), (JudgeTask::Classes, 3));
        assert_eq!(task_for(Some(&[1, 1])), (JudgeTask::Rotation, 4));
        assert_eq!(task_for(None), (JudgeTask::Rotation, 4));
        assert!(unsupported(19, 28).unwrap().contains("at least 20"));
        assert!(unsupported(100, 8).unwrap().contains("at least 12x12"));
        assert_eq!(unsupported(20, 12), None);
    }

    #[test]
    fn a_published_test_sets_first_images_are_not_the_reference_in_training() {
        // The bug: the evaluation during training compared samples with MNIST's first 2,000 test
        // digits, the NIST training set's writers only (MNIST's test set is 5,000 of those, then
        // 5,000 of other writers). Those 2,000 scored FID 5.1 against the whole test set, 2,000
        // random training digits 2.5, and the cdcgan preset's in-training FID read 10.6 where
        // `gantry eval` gave 4.3 on as many samples. Here: a test set whose halves differ.
        let half = |i: usize| u8::from(i >= 100);
        let test = TrainingImages {
            count: 200,
            rows: 1,
            cols: 1,
            channels: 1,
            bytes: (0..200).map(|i| half(i) * 100 + (i % 100) as u8).collect(),
            source: PathBuf::from("t10k-images-idx3-ubyte"),
            labels: Some((0..200).map(half).collect()),
        };
        let shape = JudgeShape { side: 1, channels: 1, classes: 2, task: JudgeTask::Classes };
        let all = TrainingImages { count: 0, bytes: Vec::new(), labels: Some(Vec::new()), ..test.clone() };
        let data = JudgeData {
            dataset: Dataset::Mnist,
            shape,
            identity: String::new(),
            source: Source::Images { all, test: Some(test) },
        };
        let reference = data.reference(0).unwrap();
        let first = &reference.labels.as_ref().unwrap()[..20];
        assert!(first.contains(&0) && first.contains(&1), "{first:?}");
        let mut bytes = reference.bytes.clone();
        bytes.sort_unstable();
        assert_eq!(
            bytes,
            (0..200).map(|i| half(i) * 100 + (i % 100) as u8).collect::<Vec<_>>(),
            "all of them"
        );
        assert!(reference.bytes.iter().zip(reference.labels.unwrap()).all(|(&b, l)| b / 100 == l));
    }

    #[test]
    fn a_class_ordered_folders_first_reference_images_hold_every_class() {
        // The bug: the evaluation during training compared samples with a folder's first 2,000
        // images, which are its first classes only (FID 313 where `gantry eval`, on all of them,
        // gave 32).
        let labels: Vec<u8> = (0..300).map(|i| (i / 100) as u8).collect();
        let all = TrainingImages {
            count: 300,
            rows: 1,
            cols: 1,
            channels: 1,
            bytes: (0..300).map(|i| (i / 100 * 10 + i % 10) as u8).collect(),
            source: PathBuf::from("folder.bin"),
            labels: Some(labels),
        };
        let shape = JudgeShape { side: 1, channels: 1, classes: 3, task: JudgeTask::Classes };
        let data = JudgeData {
            dataset: Dataset::Folder,
            shape,
            identity: String::new(),
            source: Source::Images { all, test: None },
        };
        let reference = data.reference(0).unwrap();
        assert_eq!(reference.count, 300);
        let first = &reference.labels.as_ref().unwrap()[..30];
        assert!((0..3).all(|c| first.contains(&c)), "{first:?}");
        // Each image keeps its label.
        assert!(
            reference
                .bytes
                .iter()
                .zip(reference.labels.unwrap())
                .all(|(&b, l)| b as usize / 10 == l as usize)
        );
        assert_eq!(data.reference(0).unwrap().bytes, reference.bytes, "seeded");
    }
}
