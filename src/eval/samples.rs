//! Samples from any tool, read into what the judge takes: 28x28 grey images as `[n, 784]` floats in
//! [-1, 1]. Accepted: a `.npy` array of shape [N, 28, 28], [N, 1, 28, 28] or [N, 784] (float or
//! uint8), or a folder of 28x28 PNG files, one image each. The value range is read off the data:
//! anything above 1.5 means 0-255, anything below -0.01 means [-1, 1], otherwise [0, 1].

use std::path::Path;

use crate::error::{Error, IoContext, Result};

const SIDE: usize = 28;
const PIXELS: usize = SIDE * SIDE;

/// The value range a set of images was found to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    MinusOneToOne,
    ZeroToOne,
    Bytes,
}

impl Range {
    /// Guess the range from the values (see the module doc).
    pub fn detect(values: &[f32]) -> Self {
        let (lo, hi) =
            values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if hi > 1.5 {
            Range::Bytes
        } else if lo < -0.01 {
            Range::MinusOneToOne
        } else {
            Range::ZeroToOne
        }
    }

    /// Map `values` from this range to [-1, 1] in place.
    pub fn normalize(self, values: &mut [f32]) {
        match self {
            Range::MinusOneToOne => {}
            Range::ZeroToOne => values.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0),
            Range::Bytes => values.iter_mut().for_each(|v| *v = *v / 127.5 - 1.0),
        }
    }
}

/// Read samples from a `.npy` file or a folder of PNGs, as `[n, 784]` in [-1, 1].
pub fn load(path: &Path) -> Result<Vec<f32>> {
    // Bytes (PNG, uint8) are 0-255 whatever their content; floats say their range by their values.
    let (mut values, known) =
        if path.is_dir() { (read_png_folder(path)?, Some(Range::Bytes)) } else { read_npy(path)? };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_data(path, format!("value {i} is {}", values[i])));
    }
    let range = known.unwrap_or_else(|| Range::detect(&values));
    range.normalize(&mut values);
    if let Some(v) = values.iter().find(|v| v.abs() > 1.0 + 1e-3) {
        return Err(Error::bad_data(path, format!("values outside 0-255, [0, 1] and [-1, 1] (found {v})")));
    }
    Ok(values)
}

fn read_npy(path: &Path) -> Result<(Vec<f32>, Option<Range>)> {
    let bytes = std::fs::read(path).at("read", path)?;
    let bad = |problem: String| Error::bad_data(path, problem);
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad("Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into()));
    }
    let shape = npy.shape().to_vec();
    let count = match shape.as_slice() {
        [n, 28, 28] | [n, 1, 28, 28] | [n, 784] => *n as usize,
        _ => return Err(bad(format!("shape {shape:?}; expected [N, 28, 28], [N, 1, 28, 28] or [N, 784]"))),
    };
    let npyz::DType::Plain(type_str) = npy.dtype() else {
        return Err(bad("structured arrays are not images".into()));
    };
    let code = type_str.to_string();
    let read = |e: std::io::Error| bad(format!("cannot read the {code} data: {e}"));
    let (values, range): (Vec<f32>, _) = match &code[1..] {
        "f4" => (npy.into_vec::<f32>().map_err(read)?, None),
        "f8" => (npy.into_vec::<f64>().map_err(read)?.into_iter().map(|v| v as f32).collect(), None),
        "u1" => {
            (npy.into_vec::<u8>().map_err(read)?.into_iter().map(f32::from).collect(), Some(Range::Bytes))
        }
        _ => return Err(bad(format!("element type {code}; expected float32, float64 or uint8"))),
    };
    if values.len() != count * PIXELS || count == 0 {
        return Err(bad(format!("{} values for {count} images of 28x28", values.len())));
    }
    Ok((values, range))
}

/// Every `.png` in `dir` (sorted by name), each one 28x28 image; colour is averaged to grey.
fn read_png_folder(dir: &Path) -> Result<Vec<f32>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .at("read folder", dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_data(dir, "holds no .png files"));
    }
    let mut values = Vec::with_capacity(files.len() * PIXELS);
    for path in &files {
        let (grey, width, height) = crate::timelapse::read_gray(path)?;
        if (width, height) != (SIDE, SIDE) {
            return Err(Error::bad_data(
                path,
                format!("is {width}x{height}; expected one 28x28 image per file"),
            ));
        }
        values.extend(grey.iter().map(|&p| f32::from(p)));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use npyz::WriterBuilder;

    #[test]
    fn ranges_are_detected_and_mapped_to_minus_one_one() {
        for (values, range) in [
            (vec![0.0, 255.0, 127.5], Range::Bytes),
            (vec![0.0, 1.0, 0.5], Range::ZeroToOne),
            (vec![-1.0, 1.0, 0.0], Range::MinusOneToOne),
        ] {
            assert_eq!(Range::detect(&values), range);
            let mut v = values.clone();
            range.normalize(&mut v);
            assert_eq!(v, [-1.0, 1.0, 0.0]);
        }
    }

    #[test]
    fn npy_shapes_and_types() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, shape: &[u64], data: &[u8]| {
            let path = tmp.path().join(name);
            let mut out = Vec::new();
            let mut w =
                npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut out).begin_nd().unwrap();
            w.extend(data.iter().copied()).unwrap();
            w.finish().unwrap();
            std::fs::write(&path, out).unwrap();
            path
        };
        let two = vec![255u8; 2 * PIXELS];
        let ok = load(&write("a.npy", &[2, 28, 28], &two)).unwrap();
        assert_eq!(ok.len(), 2 * PIXELS);
        assert!(ok.iter().all(|&v| v == 1.0));
        let err = load(&write("b.npy", &[2, 27, 29], &vec![0u8; 2 * 27 * 29])).unwrap_err().to_string();
        assert!(err.contains("b.npy") && err.contains("shape"), "{err}");
        std::fs::write(tmp.path().join("c.npy"), b"not numpy").unwrap();
        let err = load(&tmp.path().join("c.npy")).unwrap_err().to_string();
        assert!(err.contains("c.npy") && err.contains("not a .npy"), "{err}");
    }
}
