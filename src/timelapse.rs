//! The timelapse: every fixed-noise grid of a run, in order, as one looping animated GIF.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::grid::SCALE;
use crate::run_dir::RunDir;

/// Delay between frames, in hundredths of a second.
const FRAME_DELAY: u16 = 10;
/// The last frame is held this long, so the end of the run can be seen.
const LAST_FRAME_DELAY: u16 = 200;

/// The run's sample grids, oldest first.
pub fn grid_files(run: &RunDir) -> Result<Vec<PathBuf>> {
    let dir = run.samples_dir();
    let mut files: Vec<(usize, PathBuf)> = fs::read_dir(&dir)
        .at("list", &dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| Some((crate::run_dir::grid_step(&p.file_name()?.to_string_lossy())?, p)))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Write `timelapse.gif` from the run's grids (at their original, unscaled size): grey grids on
/// one grey palette, colour grids each on a palette of its own (NeuQuant, as the gif crate
/// quantizes).
pub fn write_gif(run: &RunDir) -> Result<PathBuf> {
    let frames = grid_files(run)?;
    let path = run.timelapse();
    let fail = |problem: String| Error::Render { path: path.clone(), problem };
    let mut encoder: Option<gif::Encoder<BufWriter<File>>> = None;
    let grey: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    for (k, frame_path) in frames.iter().enumerate() {
        let (pixels, width, height, channels) = read_grid(frame_path)?;
        let (w, h) = (width / SCALE, height / SCALE);
        // Every SCALE-th pixel of every SCALE-th row: the grid before it was scaled up.
        let small: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (y * SCALE * width + x * SCALE) * channels))
            .flat_map(|at| pixels[at..at + channels].to_vec())
            .collect();
        let enc = match &mut encoder {
            Some(enc) => enc,
            None => {
                let file = File::create(&path).at("create", &path)?;
                let mut enc = gif::Encoder::new(BufWriter::new(file), w as u16, h as u16, &grey)
                    .map_err(|e| fail(e.to_string()))?;
                enc.set_repeat(gif::Repeat::Infinite).map_err(|e| fail(e.to_string()))?;
                encoder.insert(enc)
            }
        };
        let mut frame = if channels == 3 {
            gif::Frame::from_rgb_speed(w as u16, h as u16, &small, 10)
        } else {
            gif::Frame::from_indexed_pixels(w as u16, h as u16, small, None)
        };
        frame.delay = if k + 1 == frames.len() { LAST_FRAME_DELAY } else { FRAME_DELAY };
        enc.write_frame(&frame).map_err(|e| fail(e.to_string()))?;
    }
    if encoder.is_none() {
        return Err(fail("the run has no sample grids".into()));
    }
    Ok(path)
}

/// Read one of gantry's sample grids: 8-bit grey or RGB pixels, width, height, channels (1 or 3).
pub fn read_grid(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    let file = File::open(path).at("open", path)?;
    let bad = |e: png::DecodingError| Error::bad_data(path, format!("unreadable PNG ({e})"));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().map_err(bad)?;
    let size = reader.output_buffer_size().ok_or_else(|| Error::bad_data(path, "PNG too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    let channels = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale, png::BitDepth::Eight) => 1,
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        _ => return Err(Error::bad_data(path, "not an 8-bit grey or RGB sample grid")),
    };
    buf.truncate(info.buffer_size());
    Ok((buf, info.width as usize, info.height as usize, channels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{self, GridLayout};

    #[test]
    fn one_frame_per_grid_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, _lock, _) = RunDir::create_locked(tmp.path(), crate::run_dir::Existing::Keep).unwrap();
        let layout = GridLayout { rows: 2, cols: 2, tile_h: 3, tile_w: 3, channels: 1 };
        for (step, level) in [(0, -1.0f32), (200, 0.0), (400, 1.0)] {
            grid::save_png(&run.sample_grid(step), &[level; 4 * 9], layout).unwrap();
        }
        let path = write_gif(&run).unwrap();
        let mut decoder = gif::DecodeOptions::new();
        decoder.set_color_output(gif::ColorOutput::Indexed);
        let mut d = decoder.read_info(File::open(path).unwrap()).unwrap();
        let (w, h) = layout.size();
        assert_eq!((d.width() as usize, d.height() as usize), (w / SCALE, h / SCALE));
        let mut centres = Vec::new();
        while let Some(frame) = d.read_next_frame().unwrap() {
            centres.push(frame.buffer[(grid::PAD + 1) * (w / SCALE) + grid::PAD + 1]);
        }
        assert_eq!(centres, vec![0, 128, 255]);
    }

    #[test]
    fn colour_grids_make_a_colour_timelapse() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, _lock, _) = RunDir::create_locked(tmp.path(), crate::run_dir::Existing::Keep).unwrap();
        let layout = GridLayout { rows: 1, cols: 1, tile_h: 4, tile_w: 4, channels: 3 };
        // A red tile (channel 0 at 1, the others at -1).
        let red: Vec<f32> = (0..3 * 16).map(|i| if i < 16 { 1.0 } else { -1.0 }).collect();
        grid::save_png(&run.sample_grid(0), &red, layout).unwrap();
        let path = write_gif(&run).unwrap();
        let mut decoder = gif::DecodeOptions::new();
        decoder.set_color_output(gif::ColorOutput::RGBA);
        let mut d = decoder.read_info(File::open(path).unwrap()).unwrap();
        let frame = d.read_next_frame().unwrap().unwrap();
        let w = layout.size().0 / SCALE;
        let at = ((grid::PAD + 1) * w + grid::PAD + 1) * 4;
        let rgb = &frame.buffer[at..at + 3];
        assert!(rgb[0] > 240 && rgb[1] < 15 && rgb[2] < 15, "{rgb:?}");
    }
}
