//! CIFAR-10's binary format: `data_batch_1.bin` ... `data_batch_5.bin` (training) and
//! `test_batch.bin`, each a run of 3,073-byte records: a label byte (0-9), then the 32x32 image's
//! red, green and blue planes (1,024 bytes each). Read where a user has the files (gantry never
//! downloads them): `data.dir` itself or its `cifar-10-batches-bin/` folder, as the archive
//! unpacks.

use std::path::{Path, PathBuf};

use super::TrainingImages;
use crate::error::{Error, IoContext, Result};

/// Side of a CIFAR-10 image.
pub const SIDE: usize = 32;
/// Bytes of one record: the label and three 32x32 planes.
pub const RECORD: usize = 1 + 3 * SIDE * SIDE;
/// Records in one batch file of the published set.
pub const BATCH_RECORDS: usize = 10_000;
/// The training batches' file names.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test batch's file name.
pub const TEST_FILE: &str = "test_batch.bin";
/// The folder the published archive unpacks into.
pub const ARCHIVE_FOLDER: &str = "cifar-10-batches-bin";

/// The folder of `dir` that holds the batches: `dir`, or its `cifar-10-batches-bin/`.
pub fn locate(dir: &Path) -> Result<PathBuf> {
    [dir.to_path_buf(), dir.join(ARCHIVE_FOLDER)]
        .into_iter()
        .find(|d| TRAIN_FILES.iter().any(|f| d.join(f).is_file()))
        .ok_or_else(|| {
            Error::DataNotFound(format!(
                "no CIFAR-10 batches in {} (expected {} ... {} there or in {ARCHIVE_FOLDER}/; \
                 the binary version of the data set)",
                dir.display(),
                TRAIN_FILES[0],
                TRAIN_FILES[4]
            ))
        })
}

/// The training images of the batches in `dir` (those of the five present; at least one), with
/// their labels. Every file's size is checked before it is read: a whole number of records, at
/// most a batch's worth.
pub fn load_train(dir: &Path) -> Result<TrainingImages> {
    let folder = locate(dir)?;
    let files: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| folder.join(f)).filter(|p| p.is_file()).collect();
    let mut bytes = Vec::new();
    let mut labels = Vec::new();
    for path in &files {
        read_batch(path, &mut bytes, &mut labels)?;
    }
    Ok(TrainingImages {
        count: labels.len(),
        rows: SIDE,
        cols: SIDE,
        channels: 3,
        bytes,
        source: files[0].clone(),
        labels: Some(labels),
    })
}

/// The test batch's images and labels, when the folder of `dir` that holds the batches has it.
pub fn load_test(dir: &Path) -> Result<Option<TrainingImages>> {
    let path = locate(dir)?.join(TEST_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let (mut bytes, mut labels) = (Vec::new(), Vec::new());
    read_batch(&path, &mut bytes, &mut labels)?;
    Ok(Some(TrainingImages {
        count: labels.len(),
        rows: SIDE,
        cols: SIDE,
        channels: 3,
        bytes,
        source: path,
        labels: Some(labels),
    }))
}

/// Append one batch file's images (planes as stored: [3, 32, 32]) and labels.
pub fn read_batch(path: &Path, bytes: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<()> {
    let len = std::fs::metadata(path).at("read", path)?.len();
    if len == 0 || !len.is_multiple_of(RECORD as u64) || len > (BATCH_RECORDS * RECORD) as u64 {
        return Err(Error::bad_data(
            path,
            format!(
                "is {len} bytes: a CIFAR-10 batch is a whole number of {RECORD}-byte records, at most {BATCH_RECORDS}"
            ),
        ));
    }
    let data = std::fs::read(path).at("read", path)?;
    if data.len() as u64 != len {
        return Err(Error::bad_data(path, "changed while it was read"));
    }
    for (i, record) in data.chunks_exact(RECORD).enumerate() {
        if record[0] >= 10 {
            return Err(Error::bad_data(
                path,
                format!("record {i} has label {}, not a class 0-9", record[0]),
            ));
        }
        labels.push(record[0]);
        bytes.extend_from_slice(&record[1..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: [u8; 3]) -> Vec<u8> {
        let mut r = vec![label];
        for v in fill {
            r.extend(std::iter::repeat_n(v, SIDE * SIDE));
        }
        r
    }

    #[test]
    fn batches_read_in_order_with_their_labels_and_planes() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join(ARCHIVE_FOLDER);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join(TRAIN_FILES[0]), [record(3, [255, 0, 0]), record(7, [0, 0, 9])].concat())
            .unwrap();
        std::fs::write(folder.join(TRAIN_FILES[2]), record(1, [1, 2, 3])).unwrap();
        let images = load_train(tmp.path()).unwrap();
        assert_eq!((images.count, images.dim(), images.labels.as_deref()), (3, 3072, Some(&[3, 7, 1][..])));
        assert_eq!((images.bytes[0], images.bytes[1024], images.bytes[3072 + 2048]), (255, 0, 9));
        assert_eq!(images.bytes[2 * 3072 + 1024], 2);
    }

    #[test]
    fn bad_batches_are_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_train(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("data_batch_1.bin") && e.contains(&tmp.path().display().to_string()), "{e}");
        let path = tmp.path().join(TRAIN_FILES[0]);
        for (bytes, says) in [
            (record(3, [0; 3])[..100].to_vec(), "3073-byte records"),
            (Vec::new(), "is 0 bytes"),
            (record(12, [0; 3]), "label 12"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let e = load_train(tmp.path()).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(says) && e.to_string().contains("data_batch_1.bin"), "{e}");
        }
    }
}
