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
/// (2: the card holds the SHA-256 of the decoded bytes, checked at every read.)
const CACHE_VERSION: u32 = 2;

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
    /// Why the cache was not used although it had an entry for this folder (it was damaged).
    #[serde(skip)]
    pub cache_note: Option<String>,
}

impl FolderReport {
    /// The lines to tell the user: what was skipped and why, and what was resized, once.
    pub fn lines(&self, side: usize) -> Vec<String> {
        let mut lines = Vec::new();
        lines.extend(self.cache_note.clone());
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
    /// SHA-256 of the `.bin` beside it (the pixels, then the labels).
    sha256: String,
    report: FolderReport,
}

/// One file of the folder: its path relative to the folder and its label.
struct Entry {
    relative: String,
    path: PathBuf,
    label: Option<u8>,
    /// Its size when the folder was listed (a regular file of 1 to [`MAX_FILE_BYTES`] bytes).
    len: u64,
}

/// Read the folder `dir` as `side` x `side` images of `channels` channels (decoding it, or from
/// the cache under `cache_root`), with labels when it has class sub-folders.
pub fn load(
    dir: &Path,
    side: usize,
    channels: usize,
    cache_root: &Path,
    progress: super::Progress,
) -> Result<(TrainingImages, FolderReport)> {
    let (entries, classes, mut skipped) = scan(dir)?;
    if entries.is_empty() {
        return Err(Error::DataNotFound(nothing_found(dir, &classes, &skipped)));
    }
    if entries.len() > MAX_IMAGES {
        return Err(Error::bad_data(dir, format!("holds {} images, more than {MAX_IMAGES}", entries.len())));
    }
    check_memory(dir, entries.len(), (side, channels))?;
    let key = content_key(&entries, side, channels)?;
    let cache = cache_root.join("folders");
    let (bin, card_path) = (cache.join(format!("{key}.bin")), cache.join(format!("{key}.json")));
    let cache_note = match read_cache(&bin, &card_path, side, channels) {
        Cached::Hit(images, mut report) => {
            report.cached = true;
            return Ok((images, *report));
        }
        Cached::Miss => None,
        Cached::Damaged(why) => Some(format!(
            "the cache of its decoded images, {}, is damaged ({why}): decoded again",
            bin.display()
        )),
    };

    let (bytes, labels, sizes) = decode_all(&entries, (side, channels), dir, progress, &mut skipped);
    let plane = side * side;
    let count = bytes.len() / (plane * channels);
    if count == 0 {
        let first = skipped.first().map(|(f, why)| format!(": {f} ({why})")).unwrap_or_default();
        return Err(Error::bad_data(dir, format!("holds no image that can be read{first}")));
    }
    let labelled = !classes.is_empty();
    let report =
        FolderReport { classes, skipped, sizes: sizes.into_iter().collect(), cached: false, cache_note };
    let shape = CacheShape { count, side, channels, labelled };
    store_cache(&cache, (&bin, &card_path), &bytes, &labels, shape, &report)?;
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

/// One file decoded ([`decode`]): its planes and its size before resizing, or why it was skipped.
type Decoded = std::result::Result<(Vec<u8>, (u32, u32)), String>;

/// Refuse a folder whose decoded images cannot fit in memory (held twice, briefly, while they are
/// gathered), before anything is decoded.
fn check_memory(dir: &Path, images: usize, (side, channels): (usize, usize)) -> Result<()> {
    let needed = (images as u64).saturating_mul((side * side * channels) as u64).saturating_mul(2);
    if let Some(available) = crate::allocator::available_memory()
        && needed > available
    {
        return Err(Error::TooLarge {
            what: format!("{images} images of {side}x{side}x{channels} from {}", dir.display()),
            needed: crate::allocator::gib(needed),
            available: crate::allocator::gib(available),
            advice: "make data.image_size smaller, or use fewer images".into(),
        });
    }
    Ok(())
}

/// Decode every entry in parallel (a bar on a terminal): the images' bytes in entry order, their
/// labels, and their sizes before resizing; an entry that cannot be used is added to `skipped`.
fn decode_all(
    entries: &[Entry],
    (side, channels): (usize, usize),
    dir: &Path,
    progress: super::Progress,
    skipped: &mut Vec<(String, String)>,
) -> (Vec<u8>, Vec<u8>, BTreeSet<(u32, u32)>) {
    let bar = super::decode_bar(entries.len() as u64, progress, dir);
    let plane = side * side;
    let decoded: Vec<Decoded> = entries
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
    (bytes, labels, sizes)
}

/// What a cache entry holds.
#[derive(Clone, Copy)]
struct CacheShape {
    count: usize,
    side: usize,
    channels: usize,
    labelled: bool,
}

/// Write a cache entry: the bytes (pixels, then labels) and the card with their SHA-256.
fn store_cache(
    cache: &Path,
    (bin, card_path): (&Path, &Path),
    bytes: &[u8],
    labels: &[u8],
    shape: CacheShape,
    report: &FolderReport,
) -> Result<()> {
    std::fs::create_dir_all(cache).at("create", cache)?;
    let mut stored = bytes.to_vec();
    stored.extend_from_slice(labels);
    durable::write_atomic(bin, &stored)?;
    let sha256 = durable::sha256_hex(&stored);
    let CacheShape { count, side, channels, labelled } = shape;
    let card =
        CacheCard { version: CACHE_VERSION, count, side, channels, labelled, sha256, report: report.clone() };
    let text = serde_json::to_string_pretty(&card).expect("the card serializes");
    durable::write_atomic(card_path, (text + "\n").as_bytes())
}

/// Why a folder gave no image to decode: what was found instead, in words.
fn nothing_found(dir: &Path, classes: &[String], skipped: &[(String, String)]) -> String {
    let shown: Vec<String> = skipped.iter().take(3).map(|(f, why)| format!("{f} ({why})")).collect();
    let others = match skipped.len() {
        0 => "nothing else".to_string(),
        n => format!("{n} other entries: {}{}", shown.join(", "), if n > 3 { ", ..." } else { "" }),
    };
    if classes.is_empty() {
        format!("no PNG or JPEG files in {} ({others})", dir.display())
    } else {
        format!(
            "no PNG or JPEG files in the class folders of {} ({}; {others})",
            dir.display(),
            classes.join(", ")
        )
    }
}

/// macOS's metadata folder in zip archives: never a class.
const MACOS_METADATA: &str = "__MACOSX";

/// The folder's image files in a fixed order (class by class, names sorted), the class names, and
/// the entries skipped, each named with its reason. Only regular files are listed as images (a
/// FIFO, a device, a link to nothing or a link loop is skipped and named, never opened), each with
/// its size checked. A folder is labelled when it holds class sub-folders and no image of its
/// own; where images lie at its top, it is a folder of unlabelled images and its sub-folders
/// (`thumbs/`, `__MACOSX/`) are skipped and named.
#[allow(clippy::type_complexity)]
fn scan(dir: &Path) -> Result<(Vec<Entry>, Vec<String>, Vec<(String, String)>)> {
    if !dir.is_dir() {
        return Err(Error::DataNotFound(format!("{} is not a folder of images", dir.display())));
    }
    let relative = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let mut skipped = Vec::new();
    let mut folders = Vec::new();
    let mut files = Vec::new();
    for path in sorted_entries(dir)? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        match std::fs::metadata(&path) {
            Err(e) => skipped.push((relative(&path), durable::input_problem(&e))),
            Ok(m) if m.is_dir() && name == MACOS_METADATA => {
                skipped.push((format!("{name}/"), "macOS metadata, not images".into()))
            }
            Ok(m) if m.is_dir() => folders.push(path),
            Ok(m) => files.push((path, m)),
        }
    }
    let images_on_top = files.iter().filter(|(p, m)| m.is_file() && has_image_extension(p)).count();
    let mut entries = Vec::new();
    if folders.is_empty() || images_on_top > 0 {
        for path in &folders {
            skipped.push((
                format!("{}/", relative(path)),
                format!(
                    "a sub-folder beside {images_on_top} image files: the folder is read as unlabelled images \
                     (for classes, put every image in a class sub-folder)"
                ),
            ));
        }
        for (path, meta) in files {
            push_file(path, &meta, None, &relative, &mut entries, &mut skipped);
        }
        return Ok((entries, Vec::new(), skipped));
    }
    for (path, _) in files {
        skipped.push((relative(&path), "beside the class folders".into()));
    }
    let mut classes = Vec::new();
    for path in folders {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(name) => classes.push((name.to_string(), path)),
            None => skipped.push((
                format!("{}/", relative(&path)),
                "a class folder whose name is not UTF-8: rename it to use its images".into(),
            )),
        }
    }
    if classes.len() > 256 {
        return Err(Error::bad_data(dir, format!("has {} class folders, more than 256", classes.len())));
    }
    for (label, (_, class_dir)) in classes.iter().enumerate() {
        walk_class(class_dir, label as u8, &relative, &mut entries, &mut skipped)?;
    }
    Ok((entries, classes.into_iter().map(|(name, _)| name).collect(), skipped))
}

/// Every image under one class folder, sub-folders included (linked folders are not followed: a
/// link to a parent would never end).
fn walk_class(
    class_dir: &Path,
    label: u8,
    relative: &dyn Fn(&Path) -> String,
    entries: &mut Vec<Entry>,
    skipped: &mut Vec<(String, String)>,
) -> Result<()> {
    let mut stack = vec![class_dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for path in sorted_entries(&folder)? {
            let linked = path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
            match std::fs::metadata(&path) {
                Err(e) => skipped.push((relative(&path), durable::input_problem(&e))),
                Ok(m) if m.is_dir() && !linked => stack.push(path),
                Ok(m) if m.is_dir() => {
                    skipped.push((relative(&path), "a linked folder (not followed)".into()))
                }
                Ok(m) => push_file(path, &m, Some(label), relative, entries, skipped),
            }
        }
    }
    Ok(())
}

pub(crate) fn has_image_extension(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
}

/// List one file (its metadata read through links) as an image, or skip it with its reason.
fn push_file(
    path: PathBuf,
    meta: &std::fs::Metadata,
    label: Option<u8>,
    relative: &dyn Fn(&Path) -> String,
    entries: &mut Vec<Entry>,
    skipped: &mut Vec<(String, String)>,
) {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.starts_with('.') {
        return;
    }
    let why = if !has_image_extension(&path) {
        "not a .png, .jpg or .jpeg file".to_string()
    } else if !meta.is_file() {
        format!("{}, not an image file", durable::kind_of(meta))
    } else if meta.len() == 0 {
        "empty file".to_string()
    } else if meta.len() > MAX_FILE_BYTES {
        format!("{} bytes, more than {MAX_FILE_BYTES}", meta.len())
    } else {
        entries.push(Entry { relative: relative(&path), path, label, len: meta.len() });
        return;
    };
    skipped.push((relative(&path), why));
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir).at("list", dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

/// SHA-256 of the size asked for and every file's relative path, label and bytes (each opened as
/// a regular file of the size it was listed with, at most [`MAX_FILE_BYTES`]).
fn content_key(entries: &[Entry], side: usize, channels: usize) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(format!("gantry folder cache {CACHE_VERSION}: {side}x{side}x{channels}\n"));
    let mut buf = vec![0u8; 1 << 16];
    for e in entries {
        hash.update(format!("{}\t{:?}\n", e.relative, e.label));
        let (file, len) = durable::open_input(&e.path, MAX_FILE_BYTES, "image")?;
        if len != e.len {
            return Err(Error::bad_data(&e.path, "changed while the folder was read; try again"));
        }
        let mut file = file.take(MAX_FILE_BYTES);
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

/// What the cache holds for a folder.
enum Cached {
    /// A complete entry whose bytes match their checksum.
    Hit(TrainingImages, Box<FolderReport>),
    /// Nothing usable under this key (no entry, another layout, a half-written one).
    Miss,
    /// An entry whose bytes do not match their checksum.
    Damaged(String),
}

/// The cached images, when the cache holds a complete, matching entry whose bytes verify.
fn read_cache(bin: &Path, card: &Path, side: usize, channels: usize) -> Cached {
    let Ok(text) = durable::read_text_limited(card, 64 << 20, "folder cache card") else {
        return Cached::Miss;
    };
    let Ok(card) = serde_json::from_str::<CacheCard>(&text) else { return Cached::Miss };
    let per_image = side * side * channels + usize::from(card.labelled);
    let Some(expected) = card.count.checked_mul(per_image) else { return Cached::Miss };
    if card.version != CACHE_VERSION || (card.side, card.channels) != (side, channels) || card.count == 0 {
        return Cached::Miss;
    }
    let mut bytes = match durable::read_limited(bin, expected as u64) {
        Ok(bytes) if bytes.len() == expected => bytes,
        _ => return Cached::Damaged(format!("not {expected} bytes")),
    };
    if durable::sha256_hex(&bytes) != card.sha256 {
        return Cached::Damaged("its bytes do not match their checksum".into());
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
    Cached::Hit(images, Box::new(card.report))
}

/// One file as `channels` planes of `side` x `side` bytes, and its size before resizing; or why
/// it cannot be used.
fn decode(path: &Path, side: usize, channels: usize) -> std::result::Result<(Vec<u8>, (u32, u32)), String> {
    let data = durable::read_limited(path, MAX_FILE_BYTES).map_err(|e| match e {
        durable::ReadRefused::Io(e) => format!("unreadable: {}", durable::input_problem(&e)),
        other => format!("the image {other}"),
    })?;
    if data.is_empty() {
        return Err("empty file".into());
    }
    if jpeg_is_truncated(&data) {
        return Err("a truncated JPEG (no end-of-image marker after its last scan)".into());
    }
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
    let decoder = reader.into_decoder().map_err(|e| format!("cannot be decoded: {e}"))?;
    // The decoded size from the header (16-bit RGBA at 64 megapixels: 512 MiB), held from the
    // shared budget while it is decoded, however many cores decode at once.
    let _held = DecodeBudget::reserve(image::ImageDecoder::total_bytes(&decoder));
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot be decoded: {e}"))?;
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

/// Bytes that the images being decoded at once may take together (their decoded size, from their
/// headers), whatever the number of cores: one 16-bit RGBA image of [`MAX_PIXELS`] takes half.
pub const DECODE_BUDGET: u64 = 1 << 30;

/// The decoded bytes in flight, and the wait for room.
static IN_FLIGHT: (std::sync::Mutex<u64>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A share of [`DECODE_BUDGET`], given back when dropped.
struct DecodeBudget(u64);

impl DecodeBudget {
    /// Wait until `bytes` (at most the whole budget) fit beside the decodes in flight; one decode
    /// always proceeds, so the wait ends.
    fn reserve(bytes: u64) -> Self {
        let bytes = bytes.min(DECODE_BUDGET);
        let (used, room) = &IN_FLIGHT;
        let mut used = used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *used > 0 && *used + bytes > DECODE_BUDGET {
            used = room.wait(used).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += bytes;
        Self(bytes)
    }
}

impl Drop for DecodeBudget {
    fn drop(&mut self) {
        let (used, room) = &IN_FLIGHT;
        let mut used = used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *used -= self.0;
        room.notify_all();
    }
}

/// Whether `data`, when it is a JPEG, ends before its image does: no end-of-image marker (FF D9)
/// after its last start-of-scan (FF DA). Inside a scan's coded data every FF byte is followed by
/// 00 or a restart marker, so neither marker can appear there by chance; a thumbnail's end marker
/// in the header comes before the last scan and does not count. The decoder fills the missing
/// rows in grey without an error, so this is checked before decoding.
fn jpeg_is_truncated(data: &[u8]) -> bool {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let Some(scan) = data.windows(2).rposition(|w| w == [0xFF, 0xDA]) else { return true };
    !data[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_share_one_memory_budget_whatever_the_cores() {
        let first = DecodeBudget::reserve(DECODE_BUDGET / 2 + 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = DecodeBudget::reserve(DECODE_BUDGET / 2 + 1);
            tx.send(()).unwrap();
        });
        // The second waits while the first holds more than half ...
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
        drop(first);
        // ... and goes on once it is given back.
        rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
        waiter.join().unwrap();
        // One larger than the whole budget still proceeds alone.
        drop(DecodeBudget::reserve(u64::MAX));
    }

    #[test]
    fn a_jpeg_without_its_end_marker_is_truncated() {
        let whole = [0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xD9, 0xFF, 0xDA, 1, 2, 0xFF, 0x00, 3, 0xFF, 0xD9];
        assert!(!jpeg_is_truncated(&whole));
        // Cut inside the scan: the thumbnail's FF D9 before it does not count.
        assert!(jpeg_is_truncated(&whole[..12]));
        assert!(jpeg_is_truncated(&whole[..6]), "no scan at all");
        assert!(!jpeg_is_truncated(b"\x89PNG not a jpeg"));
    }
}
