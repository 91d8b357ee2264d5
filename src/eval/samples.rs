//! Samples from any tool, read into what the judge takes: images of its side S and C channels as
//! `[n, C * S * S]` floats in [-1, 1] (channel planes, as gantry's images are). Accepted: a `.npy`
//! array of shape [N, C, S, S], [N, S, S, C] (numpy's and TensorFlow's channels-last), [N, C*S*S],
//! or for grey images [N, S, S] (float or uint8), or a folder of SxS PNG files, one image each
//! (colour averaged to grey for a grey judge, grey repeated into three channels for a colour one).
//! For MNIST that is [N, 28, 28], [N, 1, 28, 28] or [N, 784]. The value range is read off the
//! data: anything above 1.5 means 0-255, anything below -0.01 means [-1, 1], otherwise [0, 1].

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The images' side and channels (the judge's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub side: usize,
    pub channels: usize,
}

impl ImageShape {
    /// MNIST's 28x28 grey.
    pub const MNIST: ImageShape = ImageShape { side: 28, channels: 1 };

    /// Values per image.
    pub fn dim(&self) -> usize {
        self.side * self.side * self.channels
    }
}

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

/// The most images read from one `.npy` file or folder (the judge compares every pair of samples,
/// so far more than this takes hours anyway).
pub const MAX_IMAGES: usize = 100_000;

/// The fewest images that can be judged (precision/recall need k + 1 = 4 neighbours; the
/// separability probe 4 a set; below 10 the numbers mean little).
pub const MIN_IMAGES: usize = 10;

/// Samples read from one file or folder.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `[n, channels * side * side]` in [-1, 1].
    pub values: Vec<f32>,
    /// Files of a folder that were skipped (hidden files such as macOS's `._x.png`), by name.
    pub skipped: Vec<String>,
}

/// Read samples of `shape` from a `.npy` file or a folder of PNGs, as `[n, dim]` in [-1, 1].
/// Every size is checked against the file (or the folder's listing) before anything is allocated
/// for it.
pub fn load(path: &Path, shape: ImageShape) -> Result<Loaded> {
    // Bytes (PNG, uint8) are 0-255 whatever their content; floats say their range by their values.
    // A missing path, a link to nothing, a FIFO or a device is refused (bad input) before it is
    // opened; a folder is read as PNGs.
    let is_dir = match std::fs::metadata(path) {
        Ok(m) => m.is_dir(),
        Err(e) => {
            return Err(Error::bad_data(
                path,
                format!("the samples cannot be read: {}", crate::durable::input_problem(&e)),
            ));
        }
    };
    let (mut values, known, skipped) = if is_dir {
        let (values, skipped) = read_png_folder(path, shape)?;
        (values, Some(Range::Bytes), skipped)
    } else {
        let (values, range) = read_npy(path, shape)?;
        (values, range, Vec::new())
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_data(path, format!("value {i} is {}", values[i])));
    }
    let range = known.unwrap_or_else(|| Range::detect(&values));
    range.normalize(&mut values);
    if let Some(v) = values.iter().find(|v| v.abs() > 1.0 + 1e-3) {
        return Err(Error::bad_data(path, format!("values outside 0-255, [0, 1] and [-1, 1] (found {v})")));
    }
    let n = values.len() / shape.dim();
    if n < MIN_IMAGES {
        return Err(Error::bad_data(
            path,
            format!("holds {n} images; at least {MIN_IMAGES} are needed to judge"),
        ));
    }
    Ok(Loaded { values, skipped })
}

/// The largest PNG sample file read.
const MAX_PNG_BYTES: u64 = 64 << 20;

/// The largest `.npy` header read (numpy writes 128 bytes).
const MAX_NPY_HEADER: u64 = 64 * 1024;

fn read_npy(path: &Path, want: ImageShape) -> Result<(Vec<f32>, Option<Range>)> {
    use std::io::{Read, Seek};
    let bad = |problem: String| Error::bad_data(path, problem);
    // At most MAX_IMAGES float64 images and a header (the header's count is checked below).
    let most = (MAX_IMAGES as u64).saturating_mul(want.dim() as u64 * 8).saturating_add(MAX_NPY_HEADER + 12);
    let (file, file_len) = crate::durable::open_input(path, most, "samples file")?;
    let mut reader = std::io::BufReader::new(file);
    // The header's length, from the preamble, before npyz reads (and allocates) it.
    let mut preamble = [0u8; 12];
    reader.read_exact(&mut preamble).map_err(|_| bad("not a .npy file: too short".into()))?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file: no NUMPY magic".into()));
    }
    let (header_len, preamble_len) = match preamble[6] {
        1 => (u64::from(u16::from_le_bytes([preamble[8], preamble[9]])), 10),
        2 | 3 => (u64::from(u32::from_le_bytes([preamble[8], preamble[9], preamble[10], preamble[11]])), 12),
        v => return Err(bad(format!("not a .npy file: format version {v}"))),
    };
    if header_len > MAX_NPY_HEADER {
        return Err(bad(format!("not a .npy file: a header of {header_len} bytes")));
    }
    let data_len = file_len.saturating_sub(preamble_len + header_len);
    reader.rewind().at("read", path)?;
    let npy = npyz::NpyFile::new(reader).map_err(|e| bad(format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad("Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into()));
    }
    let shape = npy.shape().to_vec();
    let (s, c) = (want.side as u64, want.channels as u64);
    let (count, channels_last) = match shape.as_slice() {
        [n, h, w] if c == 1 && (*h, *w) == (s, s) => (*n, false),
        [n, ch, h, w] if (*ch, *h, *w) == (c, s, s) => (*n, false),
        [n, h, w, ch] if (*h, *w, *ch) == (s, s, c) => (*n, true),
        [n, d] if *d == c * s * s => (*n, false),
        _ => {
            let grey = if c == 1 { format!("[N, {s}, {s}], ") } else { String::new() };
            return Err(bad(format!(
                "shape {shape:?}; expected {grey}[N, {c}, {s}, {s}], [N, {s}, {s}, {c}] or [N, {}]",
                c * s * s
            )));
        }
    };
    let npyz::DType::Plain(type_str) = npy.dtype() else {
        return Err(bad("structured arrays are not images".into()));
    };
    let code = type_str.to_string();
    let item_size: u64 = match &code[1..] {
        "f4" => 4,
        "f8" => 8,
        "u1" => 1,
        _ => return Err(bad(format!("element type {code}; expected float32, float64 or uint8"))),
    };
    if count == 0 || count > MAX_IMAGES as u64 {
        return Err(bad(format!("shape {shape:?}: {count} images; between 1 and {MAX_IMAGES} are read")));
    }
    // The count is at most MAX_IMAGES here, so this cannot overflow; the data the header announces
    // must be exactly what the file holds, before any of it is read.
    let pixels = want.dim() as u64;
    let expected = count * pixels * item_size;
    if data_len != expected {
        return Err(bad(format!(
            "the header announces {count} images of {code} ({expected} bytes) but the file holds {data_len} bytes of data"
        )));
    }
    let read = |e: std::io::Error| bad(format!("cannot read the {code} data: {e}"));
    let (values, range): (Vec<f32>, _) = match &code[1..] {
        "f4" => (npy.into_vec::<f32>().map_err(read)?, None),
        "f8" => (npy.into_vec::<f64>().map_err(read)?.into_iter().map(|v| v as f32).collect(), None),
        _ => (npy.into_vec::<u8>().map_err(read)?.into_iter().map(f32::from).collect(), Some(Range::Bytes)),
    };
    if values.len() as u64 != count * pixels {
        return Err(bad(format!("{} values for {count} images of {}x{}x{}", values.len(), s, s, c)));
    }
    if channels_last && c > 1 {
        return Ok((to_planes(&values, want), range));
    }
    Ok((values, range))
}

/// Channels-last images `[n, S, S, C]` as channel planes `[n, C, S, S]`.
fn to_planes<T: Copy + Default>(values: &[T], shape: ImageShape) -> Vec<T> {
    let (plane, c) = (shape.side * shape.side, shape.channels);
    let mut out = vec![T::default(); values.len()];
    for (image, dst) in values.chunks_exact(shape.dim()).zip(out.chunks_exact_mut(shape.dim())) {
        for p in 0..plane {
            for k in 0..c {
                dst[k * plane + p] = image[p * c + k];
            }
        }
    }
    out
}

/// Every `.png` in `dir` (sorted by name), each one image of `shape` (see [`read_png`]).
/// Hidden files (a leading dot, as macOS's `._x.png` companions) are skipped and returned by
/// name. Each file's size is read from its header before it is decoded.
fn read_png_folder(dir: &Path, shape: ImageShape) -> Result<(Vec<f32>, Vec<String>)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(dir).at("read folder", dir)? {
        let path = entry.at("read folder", dir)?.path();
        if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            skipped.push(name);
        } else {
            files.push(path);
        }
        if files.len() > MAX_IMAGES {
            return Err(Error::bad_data(dir, format!("holds more than {MAX_IMAGES} .png files")));
        }
    }
    files.sort();
    skipped.sort();
    if files.is_empty() {
        return Err(Error::bad_data(dir, "holds no .png files"));
    }
    let mut values = Vec::with_capacity(files.len() * shape.dim());
    for path in &files {
        values.extend(read_png(path, shape)?.into_iter().map(f32::from));
    }
    Ok((values, skipped))
}

/// One SxS PNG of any colour type and bit depth as the bytes of `shape`'s channel planes. For
/// grey: grey as it is, colour as the mean of red, green and blue; for colour: red, green and
/// blue, grey repeated into the three; alpha ignored, 16 bits reduced to 8. Refused by its header
/// (before any pixel is decoded) unless it is SxS.
fn read_png(path: &Path, shape: ImageShape) -> Result<Vec<u8>> {
    let side = shape.side;
    let (file, _) = crate::durable::open_input(path, MAX_PNG_BYTES, "sample image")?;
    let bad = |e: png::DecodingError| Error::bad_data(path, format!("unreadable PNG ({e})"));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = (reader.info().width, reader.info().height);
    if (width as usize, height as usize) != (side, side) {
        return Err(Error::bad_data(
            path,
            format!("is {width}x{height}; expected one {side}x{side} image per file"),
        ));
    }
    let size = reader.output_buffer_size().ok_or_else(|| Error::bad_data(path, "PNG too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    buf.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    let pixels = side * side;
    if buf.len() != pixels * channels {
        return Err(Error::bad_data(
            path,
            format!("decoded to {} bytes, expected {}", buf.len(), pixels * channels),
        ));
    }
    // Indexed images are expanded to RGB above; grey may carry alpha.
    let colour = matches!(info.color_type, png::ColorType::Rgb | png::ColorType::Rgba);
    let rgb: Vec<[u8; 3]> =
        buf.chunks_exact(channels).map(|p| if colour { [p[0], p[1], p[2]] } else { [p[0]; 3] }).collect();
    Ok(if shape.channels == 1 {
        rgb.iter().map(|p| ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2]) + 1) / 3) as u8).collect()
    } else {
        (0..3).flat_map(|k| rgb.iter().map(move |p| p[k])).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use npyz::WriterBuilder;

    const PIXELS: usize = 28 * 28;
    const MNIST: ImageShape = ImageShape::MNIST;

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

    fn load_mnist(path: &Path) -> Result<Loaded> {
        load(path, MNIST)
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
        let ten = vec![255u8; 10 * PIXELS];
        let ok = load_mnist(&write("a.npy", &[10, 28, 28], &ten)).unwrap().values;
        assert_eq!(ok.len(), 10 * PIXELS);
        assert!(ok.iter().all(|&v| v == 1.0));
        let err = load_mnist(&write("few.npy", &[2, 28, 28], &ten[..2 * PIXELS])).unwrap_err().to_string();
        assert!(err.contains("few.npy") && err.contains("at least 10"), "{err}");
        let err = load_mnist(&write("b.npy", &[2, 27, 29], &vec![0u8; 2 * 27 * 29])).unwrap_err().to_string();
        assert!(err.contains("b.npy") && err.contains("shape"), "{err}");
        std::fs::write(tmp.path().join("c.npy"), b"not numpy").unwrap();
        let err = load(&tmp.path().join("c.npy"), MNIST).unwrap_err().to_string();
        assert!(err.contains("c.npy") && err.contains("not a .npy"), "{err}");
    }

    /// A .npy file whose header announces `shape` (uint8), followed by `data`.
    fn npy_with_header(shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_counts_that_overflow_or_disagree_with_the_file_are_refused_before_reading() {
        // The bug: `[2**60 + 20, 784]` with 20 images of data was judged as 20 samples, and
        // `[2**62, 28, 28]` failed only after the judge loaded, without naming the file.
        let tmp = tempfile::tempdir().unwrap();
        let data = vec![0u8; 20 * PIXELS];
        for shape in ["(1152921504606846996, 784)", "(4611686018427387904, 28, 28)", "(21, 784)"] {
            let path = tmp.path().join("bad.npy");
            std::fs::write(&path, npy_with_header(shape, &data)).unwrap();
            let err = load(&path, MNIST).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("bad.npy"), "{shape}: {err}");
        }
        let path = tmp.path().join("good.npy");
        std::fs::write(&path, npy_with_header("(20, 784)", &data)).unwrap();
        assert_eq!(load(&path, MNIST).unwrap().values.len(), 20 * PIXELS);
    }

    fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, pixel: &[u8]) {
        let file = std::fs::File::create(path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data: Vec<u8> = (0..width * height).flat_map(|_| pixel.iter().copied()).collect();
        writer.write_image_data(&data).unwrap();
    }

    #[test]
    fn png_folders_take_colour_skip_hidden_files_and_check_the_size_first() {
        // The bugs: colour PNGs (torchvision's save_image) were refused, a hidden `._x.png` failed
        // the whole folder, and a 20000x20000 PNG was decoded (1.2 GB) before its size was checked.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pngs");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..10 {
            write_png(&dir.join(format!("{i}.png")), 28, 28, png::ColorType::Rgb, &[255, 255, 0]);
        }
        std::fs::write(dir.join("._0.png"), b"AppleDouble junk").unwrap();
        let loaded = load(&dir, MNIST).unwrap();
        assert_eq!(loaded.skipped, ["._0.png"]);
        assert_eq!(loaded.values.len(), 10 * PIXELS);
        // Mean of (255, 255, 0) = 170 -> 170 / 127.5 - 1.
        assert!((loaded.values[0] - (170.0 / 127.5 - 1.0)).abs() < 1e-6, "{}", loaded.values[0]);
        // A decompression bomb's header: a 1x1 PNG with its IHDR claiming 20000x20000.
        let mut bomb = Vec::new();
        write_png(&tmp.path().join("one.png"), 1, 1, png::ColorType::Grayscale, &[0]);
        bomb.extend(std::fs::read(tmp.path().join("one.png")).unwrap());
        bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        std::fs::write(dir.join("big.png"), bomb).unwrap();
        let err = load(&dir, MNIST).unwrap_err().to_string();
        assert!(err.contains("big.png") && err.contains("20000x20000"), "{err}");
    }

    #[test]
    fn colour_samples_read_as_channel_planes_from_npy_either_layout_and_from_pngs() {
        let tmp = tempfile::tempdir().unwrap();
        let shape = ImageShape { side: 12, channels: 3 };
        // Ten images, each pixel (red 255, green 0, blue 51) in channels-last order.
        let hwc: Vec<u8> = (0..10 * 144).flat_map(|_| [255u8, 0, 51]).collect();
        let path = tmp.path().join("hwc.npy");
        let mut out = Vec::new();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[10, 12, 12, 3])
            .writer(&mut out)
            .begin_nd()
            .unwrap();
        w.extend(hwc.iter().copied()).unwrap();
        w.finish().unwrap();
        std::fs::write(&path, out).unwrap();
        let v = load(&path, shape).unwrap().values;
        assert_eq!(v.len(), 10 * shape.dim());
        // Planes: all red first, then green, then blue.
        assert_eq!((v[0], v[143], v[144], v[288]), (1.0, 1.0, -1.0, 51.0 / 127.5 - 1.0));
        // A grey judge refuses colour arrays, naming what it expects.
        let err = load(&path, ImageShape { side: 12, channels: 1 }).unwrap_err().to_string();
        assert!(err.contains("hwc.npy") && err.contains("[N, 12, 12]"), "{err}");
        // PNGs: colour kept for a colour judge, grey repeated into three planes.
        let dir = tmp.path().join("pngs");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..10 {
            let (color, px): (png::ColorType, &[u8]) = if i % 2 == 0 {
                (png::ColorType::Rgb, &[255, 0, 51])
            } else {
                (png::ColorType::Grayscale, &[0])
            };
            write_png(&dir.join(format!("{i}.png")), 12, 12, color, px);
        }
        let v = load(&dir, shape).unwrap().values;
        assert_eq!(v.len(), 10 * shape.dim());
        assert_eq!((v[0], v[144], v[288]), (1.0, -1.0, 51.0 / 127.5 - 1.0));
        assert!(v[shape.dim()..2 * shape.dim()].iter().all(|&x| x == -1.0), "a black grey image");
    }
}
