//! A folder of the user's own images (`dataset = "folder"`, `data.dir`): PNG and JPEG files of any
//! size, grey or colour, with class sub-folders as labels (torchvision's ImageFolder convention:
//! `DIR/cat/1.png`, `DIR/dog/2.jpg`; without sub-folders the images are unlabelled). Each image is
//! resized (its shorter side to `data.image_size`) and centre-cropped to a square, and converted to
//! `data.channels`.
//!
//! Decoding happens once: the result is cached under the per-user cache (`folders/`), keyed by the
//! SHA-256 of every file's name and bytes and of the size asked for, so a changed, added or removed
//! file is noticed; later runs read the cache as MNIST's files are read. Files that cannot be used
//! (not an image, empty, truncated, or a header announcing more than [`MAX_PIXELS`] pixels: a
//! decompression bomb, refused before any decoding) are skipped, counted and named in one report;
//! a folder with no usable image is an error.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::TrainingImages;
use crate::durable;
use crate::error::{Error, IoContext, Result};

/// The largest image (width x height, from its header) gantry decodes: 64 megapixels.
pub const MAX_PIXELS: u64 = 64 << 20;
/// The largest image file read (bytes).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Images per folder at most (the decoded set must fit in memory).
pub const MAX_IMAGES: usize = 2_000_000;
/// Version of the cache's layout.
const CACHE_VERSION: u32 = 1;

/// What reading a folder found, for the user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FolderReport {
    /// The class sub-folders' names, in label order (empty: unlabelled).
    pub classes: Vec<String>,
    /// Files skipped, with the reason (relative paths).
    pub skipped: Vec<(String, String)>,
    /// The distinct sizes (width x height) of the images before resizing.
    pub sizes: Vec<(u32, u32)>,
    /// Whether the decoded images came from the cache.
    #[serde(skip)]
    pub cached: bool,
}

impl FolderReport {
    /// The lines to tell the user: what was skipped and why, and what was resized, once.
    pub fn lines(&self, side: usize) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.skipped.is_empty() {
            let shown: Vec<String> =
                self.skipped.iter().take(5).map(|(file, why)| format!("{file} ({why})")).collect();
            let more = self.skipped.len().saturating_sub(5);
            lines.push(format!(
                "skipped {} file(s): {}{}",
                self.skipped.len(),
                shown.join(", "),
                if more > 0 { format!(", and {more} more") } else { String::new() }
            ));
        }
        let resized = self.sizes.iter().any(|&(w, h)| (w as usize, h as usize) != (side, side));
        if resized {
            let (w, h) = self.sizes[0];
            lines.push(format!(
                "images of {} size(s) ({w}x{h}{}) resized and centre-cropped to {side}x{side}",
                self.sizes.len(),
                if self.sizes.len() > 1 { ", ..." } else { "" }
            ));
        }
        lines
    }
}

/// The card saved beside a cached folder's decoded images.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheCard {
    version: u32,
    count: usize,
    side: usize,
    channels: usize,
    labelled: bool,
    report: FolderReport,
}

/// One file of the folder: its path relative to the folder and its label.
struct Entry {
    relative: String,
    path: PathBuf,
    label: Option<u8>,
}

/// Read the folder `dir` as `side` x `side` images of `channels` channels (decoding it, or from
/// the cache under `cache_root`), with labels when it has class sub-folders.
pub fn load(
    dir: &Path,
    side: usize,
    channels: usize,
    cache_root: &Path,
    progress: bool,
) -> Result<(TrainingImages, FolderReport)> {
    let (entries, classes, mut skipped) = scan(dir)?;
    if entries.is_empty() {
        return Err(Error::DataNotFound(format!(
            "no PNG or JPEG files in {}{}",
            dir.display(),
            if skipped.is_empty() { String::new() } else { format!(" ({} other files)", skipped.len()) }
        )));
    }
    if entries.len() > MAX_IMAGES {
        return Err(Error::bad_data(dir, format!("holds {} images, more than {MAX_IMAGES}", entries.len())));
    }
    // The decoded set is held in memory (twice, briefly, while it is gathered): refuse one that
    // cannot fit before anything is decoded.
    let needed = (entries.len() as u64).saturating_mul((side * side * channels) as u64).saturating_mul(2);
    if let Some(available) = crate::allocator::available_memory()
        && needed > available
    {
        return Err(Error::TooLarge {
            what: format!("{} images of {side}x{side}x{channels} from {}", entries.len(), dir.display()),
            needed: crate::allocator::gib(needed),
            available: crate::allocator::gib(available),
            advice: "make data.image_size smaller, or use fewer images".into(),
        });
    }
    let key = content_key(&entries, side, channels)?;
    let cache = cache_root.join("folders");
    let (bin, card_path) = (cache.join(format!("{key}.bin")), cache.join(format!("{key}.json")));
    if let Some((images, mut report)) = read_cache(&bin, &card_path, side, channels) {
        report.cached = true;
        return Ok((images, report));
    }

    let bar = super::decode_bar(entries.len() as u64, progress, dir);
    let plane = side * side;
    let decoded: Vec<std::result::Result<(Vec<u8>, (u32, u32)), String>> = entries
        .par_iter()
        .map(|e| {
            let out = decode(&e.path, side, channels);
            bar.inc(1);
            out
        })
        .collect();
    bar.finish_and_clear();
    let mut bytes = Vec::with_capacity(entries.len().min(MAX_IMAGES) * plane * channels);
    let mut labels = Vec::new();
    let mut sizes = BTreeSet::new();
    for (entry, result) in entries.iter().zip(decoded) {
        match result {
            Ok((pixels, size)) => {
                bytes.extend_from_slice(&pixels);
                labels.extend(entry.label);
                sizes.insert(size);
            }
            Err(why) => skipped.push((entry.relative.clone(), why)),
        }
    }
    let count = bytes.len() / (plane * channels);
    if count == 0 {
        let first = skipped.first().map(|(f, why)| format!(": {f} ({why})")).unwrap_or_default();
        return Err(Error::bad_data(dir, format!("holds no image that can be read{first}")));
    }
    let labelled = !classes.is_empty();
    let report = FolderReport { classes, skipped, sizes: sizes.into_iter().collect(), cached: false };
    std::fs::create_dir_all(&cache).at("create", &cache)?;
    let mut stored = bytes.clone();
    stored.extend_from_slice(&labels);
    durable::write_atomic(&bin, &stored)?;
    let card = CacheCard { version: CACHE_VERSION, count, side, channels, labelled, report: report.clone() };
    let text = serde_json::to_string_pretty(&card).expect("the card serializes");
    durable::write_atomic(&card_path, (text + "\n").as_bytes())?;
    let images = TrainingImages {
        count,
        rows: side,
        cols: side,
        channels,
        bytes,
        source: bin,
        labels: labelled.then_some(labels),
    };
    Ok((images, report))
}

/// The folder's image files in a fixed order (class by class, names sorted), the class names, and
/// the files skipped at once (not PNG or JPEG by name; files beside class sub-folders).
#[allow(clippy::type_complexity)]
fn scan(dir: &Path) -> Result<(Vec<Entry>, Vec<String>, Vec<(String, String)>)> {
    if !dir.is_dir() {
        return Err(Error::DataNotFound(format!("{} is not a folder of images", dir.display())));
    }
    let listing = sorted_entries(dir)?;
    let classes: Vec<String> = listing
        .iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter(|name| !name.starts_with('.'))
        .collect();
    if classes.len() > 256 {
        return Err(Error::bad_data(dir, format!("has {} class folders, more than 256", classes.len())));
    }
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let relative = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    if classes.is_empty() {
        for path in listing {
            push_file(path, None, &relative, &mut entries, &mut skipped);
        }
    } else {
        for path in listing.into_iter().filter(|p| !p.is_dir()) {
            skipped.push((relative(&path), "beside the class folders".into()));
        }
        for (label, class) in classes.iter().enumerate() {
            let mut stack = vec![dir.join(class)];
            while let Some(folder) = stack.pop() {
                for path in sorted_entries(&folder)? {
                    // Linked folders are not followed (a link to a parent would never end).
                    let linked = path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
                    if path.is_dir() && !linked {
                        stack.push(path);
                    } else if path.is_dir() {
                        skipped.push((relative(&path), "a linked folder (not followed)".into()));
                    } else {
                        push_file(path, Some(label as u8), &relative, &mut entries, &mut skipped);
                    }
                }
            }
        }
    }
    Ok((entries, classes, skipped))
}

fn push_file(
    path: PathBuf,
    label: Option<u8>,
    relative: &dyn Fn(&Path) -> String,
    entries: &mut Vec<Entry>,
    skipped: &mut Vec<(String, String)>,
) {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if path.is_dir() || name.starts_with('.') {
        return;
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        entries.push(Entry { relative: relative(&path), path, label });
    } else {
        skipped.push((relative(&path), "not a .png, .jpg or .jpeg file".into()));
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir).at("list", dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

/// SHA-256 of the size asked for and every file's relative path, label and bytes.
fn content_key(entries: &[Entry], side: usize, channels: usize) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(format!("gantry folder cache {CACHE_VERSION}: {side}x{side}x{channels}\n"));
    let mut buf = vec![0u8; 1 << 16];
    for e in entries {
        hash.update(format!("{}\t{:?}\n", e.relative, e.label));
        let mut file = std::fs::File::open(&e.path).at("read", &e.path)?;
        loop {
            let n = file.read(&mut buf).at("read", &e.path)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
    }
    Ok(durable::hex(&hash.finalize())[..32].to_string())
}

/// The cached images, when the cache holds a complete, matching entry.
fn read_cache(
    bin: &Path,
    card: &Path,
    side: usize,
    channels: usize,
) -> Option<(TrainingImages, FolderReport)> {
    let text = durable::read_text_limited(card, 64 << 20, "folder cache card").ok()?;
    let card: CacheCard = serde_json::from_str(&text).ok()?;
    let per_image = side * side * channels + usize::from(card.labelled);
    let expected = card.count.checked_mul(per_image)?;
    if card.version != CACHE_VERSION || (card.side, card.channels) != (side, channels) || card.count == 0 {
        return None;
    }
    if std::fs::metadata(bin).ok()?.len() != expected as u64 {
        return None;
    }
    let mut bytes = std::fs::read(bin).ok()?;
    if bytes.len() != expected {
        return None;
    }
    let labels = card.labelled.then(|| bytes.split_off(card.count * side * side * channels));
    let images = TrainingImages {
        count: card.count,
        rows: side,
        cols: side,
        channels,
        bytes,
        source: bin.to_path_buf(),
        labels,
    };
    Some((images, card.report))
}

/// One file as `channels` planes of `side` x `side` bytes, and its size before resizing; or why
/// it cannot be used.
fn decode(path: &Path, side: usize, channels: usize) -> std::result::Result<(Vec<u8>, (u32, u32)), String> {
    let len = std::fs::metadata(path).map_err(|e| format!("unreadable: {e}"))?.len();
    if len == 0 {
        return Err("empty file".into());
    }
    if len > MAX_FILE_BYTES {
        return Err(format!("{len} bytes, more than {MAX_FILE_BYTES}"));
    }
    let data = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    let reader = || image::ImageReader::new(std::io::Cursor::new(&data)).with_guessed_format();
    let (w, h) = reader()
        .map_err(|e| format!("unreadable: {e}"))?
        .into_dimensions()
        .map_err(|e| format!("not a PNG or JPEG image: {e}"))?;
    if w == 0 || h == 0 {
        return Err(format!("{w}x{h} pixels"));
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!("{w}x{h} pixels, more than {MAX_PIXELS}: refused before decoding"));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(16 * MAX_PIXELS);
    let mut reader = reader().map_err(|e| format!("unreadable: {e}"))?;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| format!("cannot be decoded: {e}"))?;
    let s = side as u32;
    let img = img.resize_to_fill(s, s, image::imageops::FilterType::Triangle);
    let planes = if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        // Interleaved RGB -> three planes.
        let rgb = img.to_rgb8().into_raw();
        (0..3).flat_map(|c| rgb.iter().skip(c).step_by(3).copied().collect::<Vec<u8>>()).collect()
    };
    Ok((planes, (w, h)))
}
