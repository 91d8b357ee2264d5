//! Sample grids: a batch of generated images tiled into one PNG, white digits on black as MNIST
//! shows them (or in colour, for 3-channel images), separated by a thin grey border and scaled up
//! so they are easy to look at. Images are `[n, channels, h, w]` row-major, as the networks
//! compute them.

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Border between tiles, in image pixels (before scaling).
pub const PAD: usize = 2;
/// Nearest-neighbour upscaling factor.
pub const SCALE: usize = 3;
/// Border grey level.
const PAD_LEVEL: u8 = 96;

/// Layout of a grid of `rows x cols` tiles of `h x w` pixels, of 1 (grey) or 3 (RGB) channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLayout {
    pub rows: usize,
    pub cols: usize,
    pub tile_h: usize,
    pub tile_w: usize,
    pub channels: usize,
}

impl GridLayout {
    /// Width and height of the PNG.
    pub fn size(&self) -> (usize, usize) {
        ((self.cols * (self.tile_w + PAD) + PAD) * SCALE, (self.rows * (self.tile_h + PAD) + PAD) * SCALE)
    }

    /// The nearest grid (as square as possible) holding `n` tiles.
    pub fn for_count(n: usize, tile_h: usize, tile_w: usize, channels: usize) -> Self {
        let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
        let rows = n.div_ceil(cols).max(1);
        Self { rows, cols, tile_h, tile_w, channels }
    }
}

/// Render images (`[n, channels * h * w]`, channel-major, values in [-1, 1]) into 8-bit pixels,
/// row-major, `channels` interleaved per pixel (grey, or RGB). Tiles beyond the images given stay
/// black.
pub fn render(images: &[f32], layout: GridLayout) -> Vec<u8> {
    let (width, height) = layout.size();
    let (uw, uh, c) = (width / SCALE, height / SCALE, layout.channels);
    let mut small = vec![PAD_LEVEL; uw * uh * c];
    let plane = layout.tile_h * layout.tile_w;
    for k in 0..layout.rows * layout.cols {
        let (r, col) = (k / layout.cols, k % layout.cols);
        let (y0, x0) = (PAD + r * (layout.tile_h + PAD), PAD + col * (layout.tile_w + PAD));
        for ch in 0..c {
            for y in 0..layout.tile_h {
                for x in 0..layout.tile_w {
                    let at = (k * c + ch) * plane + y * layout.tile_w + x;
                    let v = images.get(at).copied().unwrap_or(-1.0);
                    small[((y0 + y) * uw + x0 + x) * c + ch] = level(v);
                }
            }
        }
    }
    let mut out = vec![0u8; width * height * c];
    for y in 0..height {
        for x in 0..width {
            let from = ((y / SCALE) * uw + x / SCALE) * c;
            out[(y * width + x) * c..(y * width + x + 1) * c].copy_from_slice(&small[from..from + c]);
        }
    }
    out
}

/// One value in [-1, 1] as an 8-bit level, as every image gantry writes maps it (`0.5 * x + 0.5`).
pub fn level(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) * 0.5 + 0.5) * 255.0).round() as u8
}

/// One image (`channels * h * w`, channel-major, in [-1, 1]) as 8-bit pixels, row-major with its
/// channels interleaved (grey, or RGB): what PNG files and numpy's `[h, w, c]` hold.
pub fn interleaved(image: &[f32], h: usize, w: usize, channels: usize) -> Vec<u8> {
    let plane = h * w;
    let mut out = vec![0u8; plane * channels];
    for ch in 0..channels {
        for p in 0..plane {
            out[p * channels + ch] = level(image[ch * plane + p]);
        }
    }
    out
}

/// Render and save a grid as an 8-bit greyscale (or RGB) PNG; returns the PNG's bytes (for other
/// consumers of the same image, such as TensorBoard).
pub fn save_png(path: &Path, images: &[f32], layout: GridLayout) -> Result<Vec<u8>> {
    let (w, h) = layout.size();
    let pixels = render(images, layout);
    let png =
        if layout.channels == 3 { encode_rgb_png(&pixels, w, h) } else { encode_gray_png(&pixels, w, h) }
            .map_err(|e| Error::Render { path: path.to_path_buf(), problem: e.to_string() })?;
    // Written beside and renamed, so a dashboard never shows a half-written grid.
    let partial = path.with_extension("png.partial");
    std::fs::write(&partial, &png).at("write", &partial)?;
    std::fs::rename(&partial, path).at("rename", &partial)?;
    Ok(png)
}

/// Encode 8-bit grey pixels (row-major) as a PNG in memory.
pub fn encode_gray_png(pixels: &[u8], width: usize, height: usize) -> Result<Vec<u8>, png::EncodingError> {
    encode_png(pixels, width, height, png::ColorType::Grayscale)
}

/// Encode 8-bit RGB pixels (row-major, interleaved) as a PNG in memory.
pub fn encode_rgb_png(pixels: &[u8], width: usize, height: usize) -> Result<Vec<u8>, png::EncodingError> {
    encode_png(pixels, width, height, png::ColorType::Rgb)
}

fn encode_png(
    pixels: &[u8],
    width: usize,
    height: usize,
    color: png::ColorType,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_by_five_of_mnist_size() {
        let l = GridLayout { rows: 5, cols: 5, tile_h: 28, tile_w: 28, channels: 1 };
        assert_eq!(l.size(), (152 * 3, 152 * 3));
    }

    #[test]
    fn tiles_land_where_expected() {
        let l = GridLayout { rows: 1, cols: 2, tile_h: 2, tile_w: 2, channels: 1 };
        // Tile 0 all white, tile 1 all black.
        let imgs = [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0];
        let px = render(&imgs, l);
        let (w, _) = l.size();
        let at = |x: usize, y: usize| px[(y * SCALE) * w + x * SCALE];
        assert_eq!(at(0, 0), PAD_LEVEL);
        assert_eq!(at(PAD, PAD), 255);
        assert_eq!(at(PAD + 2 + PAD, PAD), 0);
    }

    /// Channel-major images become interleaved RGB pixels: a red tile and a blue one.
    #[test]
    fn colour_tiles_land_where_expected() {
        let l = GridLayout { rows: 1, cols: 2, tile_h: 1, tile_w: 1, channels: 3 };
        let px = render(&[1.0, -1.0, -1.0, -1.0, -1.0, 1.0], l);
        let (w, _) = l.size();
        let at = |x: usize, y: usize| &px[((y * SCALE) * w + x * SCALE) * 3..][..3];
        assert_eq!(at(0, 0), [PAD_LEVEL; 3]);
        assert_eq!(at(PAD, PAD), [255, 0, 0]);
        assert_eq!(at(PAD + 1 + PAD, PAD), [0, 0, 255]);
        let tmp = tempfile::tempdir().unwrap();
        let png = save_png(&tmp.path().join("c.png"), &[0.0; 6], l).unwrap();
        assert_eq!(png[25], 2, "the PNG's colour type is RGB");
    }

    #[test]
    fn square_layout_for_count() {
        let l = GridLayout::for_count(64, 28, 28, 1);
        assert_eq!((l.rows, l.cols), (8, 8));
        let l = GridLayout::for_count(10, 28, 28, 1);
        assert_eq!((l.rows, l.cols), (3, 4));
    }
}
