//! Checkpoints: the whole training state, written all-or-nothing and verified before use.
//!
//! A checkpoint is a folder `checkpoints/step_NNNNNN/` holding
//! - `generator.bpk`, `discriminator.bpk`: weights and BatchNorm statistics (burnpack);
//! - `optimizer_g.bpk`, `optimizer_d.bpk`: both Adam states with their step counts, keyed by
//!   parameter id (burn's record format, which safetensors alone cannot carry);
//! - `generator_ema.bpk`, only when the run keeps a moving average of G (`train.g_ema`);
//! - `state.json`: the iteration, every random stream's position, the fixed sample noise, a hash
//!   of the architecture and of the recipe, spectral norm's power-iteration vectors when D has
//!   it, and the format version;
//! - `manifest.json`, written last: each file's size and SHA-256.
//!
//! It is written into a temporary folder beside the final one, every file and the folder fsynced,
//! then renamed into place and the parent fsynced. Only folders whose manifest matches their files
//! count as checkpoints.

pub mod policy;

use std::fs;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::durable::{hex, sha256_hex, sync_dir, write_synced};
use crate::error::{Error, IoContext, Result};
use crate::rng::Streams;

/// Version of the checkpoint layout; bumped on any incompatible change. Version 2 adds the
/// recipe's hash to `state.json`; version 3 the augmentation stream, spectral norm's vectors and
/// the optional `generator_ema.bpk`; version 4 the dropout stream; version 5 the label stream.
/// Checkpoints of versions 1 to 4 still load: they come from recipes without augmentation,
/// spectral norm, EMA, dropout or conditioning (as each version lacks), whose new state is its
/// initial value.
pub const FORMAT_VERSION: u32 = 5;

/// The oldest checkpoint layout this gantry reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Prefix of the temporary folders a save writes into.
const TMP_PREFIX: &str = ".tmp-";
const MANIFEST: &str = "manifest.json";
const STATE: &str = "state.json";
/// A checkpoint's (and `weights/`') files of G's and D's weights, and a checkpoint's optimizer
/// states.
pub const GENERATOR_FILE: &str = "generator.bpk";
pub const DISCRIMINATOR_FILE: &str = "discriminator.bpk";
pub const OPTIMIZER_G_FILE: &str = "optimizer_g.bpk";
pub const OPTIMIZER_D_FILE: &str = "optimizer_d.bpk";
/// The files of a checkpoint besides the manifest.
pub const FILES: [&str; 5] = [GENERATOR_FILE, DISCRIMINATOR_FILE, OPTIMIZER_G_FILE, OPTIMIZER_D_FILE, STATE];

/// The checkpoint file of the moving average of G, present when the run keeps one.
pub const EMA_FILE: &str = "generator_ema.bpk";

/// The files of a run's `weights/` folder (see [`write_weights_manifest`]).
pub const WEIGHT_FILES: [&str; 4] = [GENERATOR_FILE, DISCRIMINATOR_FILE, "generator.safetensors", MANIFEST];

/// Position of one ChaCha stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key, hex.
    pub seed: String,
    pub stream: u64,
    /// Position in 32-bit words (a u128, as a decimal string for JSON).
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: hex(&rng.get_seed()),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self, path: &Path) -> Result<ChaCha8Rng> {
        let bad = |what: &str| Error::bad_data(path, format!("invalid random state: {what}"));
        let bytes = unhex(&self.seed).filter(|b| b.len() == 32).ok_or_else(|| bad("seed"))?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse::<u128>().map_err(|_| bad("word_pos"))?);
        Ok(rng)
    }
}

/// Everything of the training state that is not a tensor record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingState {
    pub format_version: u32,
    /// Iterations completed.
    pub iteration: usize,
    /// SHA-256 of the architecture part of the config (see [`crate::Config::architecture_hash`]).
    pub architecture_hash: String,
    pub rng_init: RngState,
    pub rng_data: RngState,
    pub rng_noise: RngState,
    pub rng_fixed: RngState,
    /// The fixed noise of the sample grids, [rows * cols * latent].
    pub fixed_noise: Vec<f32>,
    /// Wall time of the training loop so far, seconds.
    pub wall_seconds: f64,
    /// SHA-256 of the recipe (objective, D steps, order, label, D update, clip, optimizers; see
    /// [`crate::config::TrainConfig::recipe`]): the optimizer states in the checkpoint belong to
    /// it. Absent in version-1 checkpoints, which are all of the classic recipe.
    #[serde(default)]
    pub recipe_hash: Option<String>,
    /// The augmentation stream (version 3; older checkpoints never drew from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng_augment: Option<RngState>,
    /// Spectral norm's power-iteration vectors, one pair per D layer, when D has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectral_norm: Option<Vec<crate::model::SpectralVectors>>,
    /// The dropout stream (version 4; older checkpoints never drew from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng_dropout: Option<RngState>,
    /// The label stream (version 5; older checkpoints never drew from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng_labels: Option<RngState>,
}

impl TrainingState {
    /// Whether this checkpoint's random streams come from `seed` (`train.seed`): every stream's
    /// key is the seed's, so a hand-edited seed in a run's config.toml is told apart.
    pub fn written_with_seed(&self, seed: u64) -> bool {
        self.rng_init.seed == hex(&crate::rng::key(seed))
    }

    pub fn streams(&self, path: &Path) -> Result<Streams> {
        let init = self.rng_init.restore(path)?;
        let augment = match &self.rng_augment {
            Some(state) => state.restore(path)?,
            // Not drawn from yet: the stream at its start, from the run's key.
            None => Streams::augment_stream(init.get_seed()),
        };
        let dropout = match &self.rng_dropout {
            Some(state) => state.restore(path)?,
            None => Streams::dropout_stream(init.get_seed()),
        };
        let labels = match &self.rng_labels {
            Some(state) => state.restore(path)?,
            None => Streams::label_stream(init.get_seed()),
        };
        Ok(Streams {
            init,
            data: self.rng_data.restore(path)?,
            noise: self.rng_noise.restore(path)?,
            fixed: self.rng_fixed.restore(path)?,
            augment,
            dropout,
            labels,
        })
    }
}

/// A checkpoint in memory: the state and the serialized records.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: TrainingState,
    pub generator: Vec<u8>,
    pub discriminator: Vec<u8>,
    pub optimizer_g: Vec<u8>,
    pub optimizer_d: Vec<u8>,
    /// The moving average of G, when the run keeps one.
    pub generator_ema: Option<Vec<u8>>,
}

impl Snapshot {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let state = serde_json::to_vec_pretty(&self.state).expect("TrainingState serializes");
        vec![
            (FILES[0], self.generator.clone()),
            (FILES[1], self.discriminator.clone()),
            (FILES[2], self.optimizer_g.clone()),
            (FILES[3], self.optimizer_d.clone()),
            (FILES[4], state),
        ]
        .into_iter()
        .chain(self.generator_ema.clone().map(|bytes| (EMA_FILE, bytes)))
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ManifestEntry {
    name: String,
    size: u64,
    sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    iteration: usize,
    files: Vec<ManifestEntry>,
}

/// A step of [`write`] at which a test can make the save fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFault {
    /// A file write fails (as a full disk would).
    WriteError,
    /// The process dies after the data files, before the manifest.
    BeforeManifest,
    /// The process dies after the manifest, before the rename.
    BeforeRename,
}

/// Folder name of the checkpoint after `iteration` iterations.
pub fn folder_name(iteration: usize) -> String {
    format!("step_{iteration:06}")
}

/// Write `snapshot` as `dir/step_NNNNNN`, all or nothing. Returns the checkpoint's folder.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<PathBuf> {
    write_with_fault(dir, snapshot, None)
}

/// [`write`], failing on purpose at `fault` (for tests of what a crash leaves behind).
pub fn write_with_fault(dir: &Path, snapshot: &Snapshot, fault: Option<SaveFault>) -> Result<PathBuf> {
    fs::create_dir_all(dir).at("create", dir)?;
    let name = folder_name(snapshot.state.iteration);
    let tmp = dir.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).at("remove", &tmp)?;
    }
    fs::create_dir(&tmp).at("create", &tmp)?;
    let result = write_into(&tmp, dir, &name, snapshot, fault);
    if result.is_err() && !matches!(fault, Some(SaveFault::BeforeManifest | SaveFault::BeforeRename)) {
        // A real error (not a simulated crash): clean up now rather than at the next start.
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn write_into(
    tmp: &Path,
    dir: &Path,
    name: &str,
    snapshot: &Snapshot,
    fault: Option<SaveFault>,
) -> Result<PathBuf> {
    let mut entries = Vec::new();
    for (file, bytes) in snapshot.files() {
        let path = tmp.join(file);
        if fault == Some(SaveFault::WriteError) && file == FILES[2] {
            return Err(Error::io("write", &path, std::io::Error::other("simulated write error")));
        }
        write_synced(&path, &bytes)?;
        entries.push(ManifestEntry {
            name: file.to_string(),
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    if fault == Some(SaveFault::BeforeManifest) {
        return Err(simulated_crash(tmp));
    }
    let manifest =
        Manifest { format_version: FORMAT_VERSION, iteration: snapshot.state.iteration, files: entries };
    write_synced(&tmp.join(MANIFEST), &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))?;
    sync_dir(tmp)?;
    if fault == Some(SaveFault::BeforeRename) {
        return Err(simulated_crash(tmp));
    }
    let final_path = dir.join(name);
    if fs::symlink_metadata(&final_path).is_ok() {
        // Only an invalid leftover can be here (a valid newer one would have been resumed from):
        // gantry's own damaged folder goes; anything else (a file, a link, a folder with other
        // files) is moved aside, never deleted.
        if is_own_folder(&final_path) {
            fs::remove_dir_all(&final_path).at("remove stale checkpoint", &final_path)?;
        } else {
            let aside = aside_path(&final_path);
            fs::rename(&final_path, &aside).at("move aside", &final_path)?;
            eprintln!(
                "warning: {} was in the way of a checkpoint and is not one; moved to {}",
                final_path.display(),
                aside.display()
            );
        }
    }
    fs::rename(tmp, &final_path).at("rename into place", &final_path)?;
    sync_dir(dir)?;
    Ok(final_path)
}

fn simulated_crash(path: &Path) -> Error {
    Error::io("save (simulated crash)", path, std::io::Error::other("simulated crash"))
}

/// Whether `path` is a folder that only gantry's checkpoint saves write: a real folder (not a
/// link) holding nothing but checkpoint files (a save that died may have written only some).
pub fn is_own_folder(path: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else { return false };
    let Ok(entries) = fs::read_dir(path) else { return false };
    meta.is_dir()
        && entries.into_iter().all(|e| {
            e.is_ok_and(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                e.file_type().is_ok_and(|t| t.is_file())
                    && (FILES.contains(&name.as_str()) || name == MANIFEST || name == EMA_FILE)
            })
        })
}

/// Remove the temporary folders of saves that never finished (`.tmp-step_NNNNNN-PID`, holding
/// only checkpoint files). Anything else of that name is left alone and reported in the warnings.
/// Returns (removed, warnings).
pub fn clean_leftovers(dir: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let (mut removed, mut warnings) = (Vec::new(), Vec::new());
    if !dir.is_dir() {
        return Ok((removed, warnings));
    }
    for entry in fs::read_dir(dir).at("list", dir)? {
        let path = entry.at("list", dir)?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TMP_PREFIX)) {
            if is_own_folder(&path) {
                fs::remove_dir_all(&path).at("remove leftover", &path)?;
                removed.push(path);
            } else {
                warnings.push(format!(
                    "{} is not an unfinished checkpoint save of gantry's; left as it is",
                    path.display()
                ));
            }
        }
    }
    Ok((removed, warnings))
}

/// Committed checkpoint folders (valid or not), newest first, with their iteration. Only folders
/// named `step_NNNNNN` count; see [`strays`] for other entries of such a name.
pub fn list(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    if !dir.is_dir() {
        return Ok(found);
    }
    for entry in fs::read_dir(dir).at("list", dir)? {
        let entry = entry.at("list", dir)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let Some(it) = parse_step(&name)
            && is_dir
        {
            found.push((it, path));
        }
    }
    found.sort_by_key(|(it, _)| std::cmp::Reverse(*it));
    Ok(found)
}

/// The iteration of a checkpoint folder's name, `step_NNNNNN` exactly.
fn parse_step(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("step_")?;
    (digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// Entries of `dir` named like checkpoints that are not folders (a file `step_000200`, a link):
/// never read as checkpoints, and moved aside when a save needs their name.
pub fn strays(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| parse_step(&e.file_name().to_string_lossy()).is_some())
        .filter(|e| !e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// A free name beside `path` to move an entry that is in the way to: `NAME.aside-N`.
fn aside_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (1..)
        .map(|k| path.with_file_name(format!("{name}.aside-{k}")))
        .find(|p| fs::symlink_metadata(p).is_err())
        .expect("some suffix is free")
}

/// Read and verify a checkpoint folder: every file present, of the size and checksum its manifest
/// says. The error names the first bad file.
pub fn load(path: &Path) -> Result<Snapshot> {
    let manifest_path = path.join(MANIFEST);
    let bad = |file: &Path, problem: String| Error::Checkpoint { path: file.to_path_buf(), problem };
    let text = crate::durable::read_limited(&manifest_path, 1 << 20)
        .map_err(|e| bad(&manifest_path, format!("unreadable manifest ({e})")))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| bad(&manifest_path, format!("corrupt manifest ({e})")))?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&manifest.format_version) {
        return Err(bad(
            &manifest_path,
            format!(
                "format version {} (this gantry reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})",
                manifest.format_version
            ),
        ));
    }
    let mut contents = std::collections::HashMap::new();
    let ema_listed = manifest.files.iter().any(|e| e.name == EMA_FILE);
    for name in FILES.into_iter().chain(ema_listed.then_some(EMA_FILE)) {
        let file = path.join(name);
        let entry = manifest
            .files
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| bad(&file, "not listed in the manifest".into()))?;
        // The size first, from the file system: a file far larger than the manifest says is never
        // read into memory.
        let on_disk = fs::metadata(&file).map_err(|e| bad(&file, format!("unreadable ({e})")))?.len();
        if on_disk != entry.size {
            return Err(bad(
                &file,
                format!("size {on_disk} bytes, manifest says {} (truncated?)", entry.size),
            ));
        }
        let bytes = fs::read(&file).map_err(|e| bad(&file, format!("unreadable ({e})")))?;
        if bytes.len() as u64 != entry.size {
            return Err(bad(
                &file,
                format!("size {} bytes, manifest says {} (truncated?)", bytes.len(), entry.size),
            ));
        }
        if sha256_hex(&bytes) != entry.sha256 {
            return Err(bad(&file, "checksum does not match the manifest (corrupted)".into()));
        }
        contents.insert(name, bytes);
    }
    let state_path = path.join(STATE);
    let state: TrainingState = serde_json::from_slice(&contents[STATE])
        .map_err(|e| bad(&state_path, format!("unreadable state ({e})")))?;
    if state.iteration != manifest.iteration || state.format_version != manifest.format_version {
        return Err(bad(&state_path, "disagrees with the manifest".into()));
    }
    let mut take = |name: &str| contents.remove(name).unwrap_or_default();
    Ok(Snapshot {
        generator: take(FILES[0]),
        discriminator: take(FILES[1]),
        optimizer_g: take(FILES[2]),
        optimizer_d: take(FILES[3]),
        generator_ema: contents.remove(EMA_FILE),
        state,
    })
}

/// A verified checkpoint and the folder it was read from.
pub type Found = (PathBuf, Snapshot);

/// The newest checkpoint in `dir` that verifies, with a warning for each newer one that did not.
pub fn newest_valid(dir: &Path) -> Result<(Option<Found>, Vec<String>)> {
    let mut warnings = Vec::new();
    for (_, path) in list(dir)? {
        match load(&path) {
            Ok(snapshot) => return Ok((Some((path, snapshot)), warnings)),
            Err(e) => warnings.push(format!("skipping checkpoint {}: {e}", path.display())),
        }
    }
    Ok((None, warnings))
}

/// Record the size and SHA-256 of the final weights files in `weights/manifest.json` (written
/// last, atomically), so that `gantry sample` and `gantry eval` can tell damaged weights.
pub fn write_weights_manifest(weights_dir: &Path, iteration: usize) -> Result<()> {
    let mut files = Vec::new();
    for name in &WEIGHT_FILES[..3] {
        let path = weights_dir.join(name);
        let bytes = fs::read(&path).at("read", &path)?;
        files.push(ManifestEntry {
            name: name.to_string(),
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    let manifest = Manifest { format_version: FORMAT_VERSION, iteration, files };
    crate::durable::write_atomic(
        &weights_dir.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
    )
}

/// The iteration recorded in `weights/manifest.json` (None when there is none or it is damaged):
/// a run whose manifest matches its last checkpoint is complete.
pub fn weights_manifest_iteration(weights_dir: &Path) -> Option<usize> {
    let bytes = crate::durable::read_limited(&weights_dir.join(MANIFEST), 1 << 20).ok()?;
    serde_json::from_slice::<Manifest>(&bytes).ok().map(|m| m.iteration)
}

/// What a missing `weights/manifest.json` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingManifest {
    /// A run written before manifests existed: read the weights unverified, with a warning.
    Warn,
    /// A run whose format always writes one: it was deleted or lost; refuse the weights.
    Refuse,
}

/// Read a final weights file, verified against `weights/manifest.json`. Without a manifest, as
/// `missing` says: a run written before the manifest existed has none (its file is read as it
/// is, with a warning); a newer run's was lost, and its weights are refused.
pub fn read_verified_weights(path: &Path, missing: MissingManifest) -> Result<Vec<u8>> {
    let bad = |problem: String| Error::Weights { path: path.to_path_buf(), problem };
    let meta = fs::metadata(path).map_err(|e| bad(format!("missing or unreadable ({e})")))?;
    if !meta.is_file() {
        return Err(bad("is not a file".into()));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let manifest_path = path.with_file_name(MANIFEST);
    let bytes = fs::read(path).map_err(|e| bad(format!("unreadable ({e})")))?;
    if !manifest_path.is_file() && missing == MissingManifest::Refuse {
        return Err(bad(format!(
            "cannot be verified: {} is missing (this run's format always writes one)",
            manifest_path.display()
        )));
    }
    if !manifest_path.is_file() {
        eprintln!(
            "warning: {} has no manifest (a run of an older gantry); its weights are not verified",
            manifest_path.parent().unwrap_or(Path::new(".")).display()
        );
        return Ok(bytes);
    }
    let text = crate::durable::read_limited(&manifest_path, 1 << 20).map_err(|e| Error::Weights {
        path: manifest_path.clone(),
        problem: format!("unreadable manifest: {e}"),
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| Error::Weights {
        path: manifest_path.clone(),
        problem: format!("corrupt manifest ({e})"),
    })?;
    let entry = manifest
        .files
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| bad(format!("not listed in {}", manifest_path.display())))?;
    if bytes.len() as u64 != entry.size {
        return Err(bad(format!(
            "size {} bytes, the manifest says {} (truncated?)",
            bytes.len(),
            entry.size
        )));
    }
    if sha256_hex(&bytes) != entry.sha256 {
        return Err(bad("checksum does not match weights/manifest.json (corrupted)".into()));
    }
    Ok(bytes)
}

/// Rewrite a checkpoint's manifest to match its files as they are now (for tests that edit a
/// checkpoint on purpose and for repair tools; training never calls it).
pub fn rewrite_manifest(path: &Path) -> Result<()> {
    let mut files = Vec::new();
    let ema = path.join(EMA_FILE).is_file().then_some(EMA_FILE);
    for name in FILES.into_iter().chain(ema) {
        let file = path.join(name);
        let bytes = fs::read(&file).at("read", &file)?;
        files.push(ManifestEntry {
            name: name.to_string(),
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    let state: TrainingState =
        serde_json::from_slice(&fs::read(path.join(STATE)).at("read", path.join(STATE))?)
            .map_err(|e| Error::bad_data(path.join(STATE), e.to_string()))?;
    let manifest = Manifest { format_version: state.format_version, iteration: state.iteration, files };
    write_synced(&path.join(MANIFEST), &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(iteration: usize) -> Snapshot {
        let s = Streams::new(9);
        Snapshot {
            state: TrainingState {
                format_version: FORMAT_VERSION,
                iteration,
                architecture_hash: "abc".into(),
                rng_init: RngState::capture(&s.init),
                rng_data: RngState::capture(&s.data),
                rng_noise: RngState::capture(&s.noise),
                rng_fixed: RngState::capture(&s.fixed),
                fixed_noise: vec![0.25, -1.5],
                wall_seconds: 1.0,
                recipe_hash: Some("r".into()),
                rng_augment: Some(RngState::capture(&s.augment)),
                spectral_norm: None,
                rng_dropout: Some(RngState::capture(&s.dropout)),
                rng_labels: Some(RngState::capture(&s.labels)),
            },
            generator: vec![1; 1000],
            discriminator: vec![2; 500],
            optimizer_g: vec![3; 300],
            optimizer_d: vec![4; 200],
            generator_ema: None,
        }
    }

    #[test]
    fn written_checkpoint_loads_back_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(tmp.path(), &snapshot(200)).unwrap();
        assert_eq!(path.file_name().unwrap(), "step_000200");
        let back = load(&path).unwrap();
        assert_eq!(back.state, snapshot(200).state);
        assert_eq!(back.generator, vec![1; 1000]);
        assert_eq!(back.optimizer_d, vec![4; 200]);
    }

    #[test]
    fn a_version_1_checkpoint_still_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let mut old = snapshot(200);
        old.state.format_version = 1;
        old.state.recipe_hash = None;
        old.state.rng_augment = None;
        let path = write(tmp.path(), &old).unwrap();
        // What version 1 wrote: no recipe_hash key, version 1 in the manifest.
        let state_path = path.join(STATE);
        let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&state_path).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("recipe_hash");
        fs::write(&state_path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        let manifest_path = path.join(MANIFEST);
        let mut manifest: Manifest = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
        manifest.format_version = 1;
        for e in &mut manifest.files {
            let bytes = fs::read(path.join(&e.name)).unwrap();
            (e.size, e.sha256) = (bytes.len() as u64, sha256_hex(&bytes));
        }
        fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
        let back = load(&path).unwrap();
        assert_eq!((back.state.format_version, &back.state.recipe_hash), (1, &None));
        // The augmentation stream, which version 1 did not have, resumes at its start.
        assert_eq!(back.state.streams(&path).unwrap().augment, Streams::new(9).augment);
        assert_eq!(back.generator_ema, None);
    }

    #[test]
    fn the_ema_generator_is_written_verified_and_loaded_when_present() {
        let tmp = tempfile::tempdir().unwrap();
        let mut with_ema = snapshot(400);
        with_ema.generator_ema = Some(vec![5; 700]);
        let path = write(tmp.path(), &with_ema).unwrap();
        assert!(is_own_folder(&path));
        assert_eq!(load(&path).unwrap().generator_ema, Some(vec![5; 700]));
        // Listed in the manifest, so a damaged EMA file is caught like any other.
        fs::write(path.join(EMA_FILE), vec![5; 699]).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains(EMA_FILE) && err.contains("truncated"), "{err}");
    }

    #[test]
    fn random_state_round_trips_mid_stream() {
        use rand::Rng;
        let mut rng = Streams::new(3).noise;
        for _ in 0..37 {
            rng.next_u32();
        }
        let mut restored = RngState::capture(&rng).restore(Path::new("x")).unwrap();
        assert_eq!(rng.next_u64(), restored.next_u64());
    }

    #[test]
    fn every_kind_of_damage_is_detected_and_named() {
        for file in FILES.iter().chain([&MANIFEST]) {
            for damage in ["truncate", "flip", "delete"] {
                let tmp = tempfile::tempdir().unwrap();
                let path = write(tmp.path(), &snapshot(400)).unwrap();
                let target = path.join(file);
                let mut bytes = fs::read(&target).unwrap();
                match damage {
                    "truncate" => fs::write(&target, &bytes[..bytes.len() / 2]).unwrap(),
                    "flip" => {
                        let mid = bytes.len() / 2;
                        bytes[mid] ^= 0x01;
                        fs::write(&target, &bytes).unwrap();
                    }
                    _ => fs::remove_file(&target).unwrap(),
                }
                let err = load(&path).expect_err(&format!("{damage} of {file} went unnoticed"));
                assert!(err.to_string().contains(file), "{damage} {file}: {err}");
            }
        }
    }

    #[test]
    fn a_stray_file_named_like_a_checkpoint_is_skipped_and_moved_aside() {
        // The bug: a file `checkpoints/step_000200` made every save at 200 fail, and a file
        // `checkpoints/.tmp-...` made every resume fail.
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("step_000200"), b"not a folder").unwrap();
        fs::write(tmp.path().join(".tmp-step_000400-1"), b"nor this").unwrap();
        assert!(list(tmp.path()).unwrap().is_empty());
        assert_eq!(strays(tmp.path()), vec![tmp.path().join("step_000200")]);
        let (removed, warnings) = clean_leftovers(tmp.path()).unwrap();
        assert!(removed.is_empty() && warnings.len() == 1, "{warnings:?}");
        let path = write(tmp.path(), &snapshot(200)).unwrap();
        assert_eq!(load(&path).unwrap().state.iteration, 200);
        assert_eq!(fs::read(tmp.path().join("step_000200.aside-1")).unwrap(), b"not a folder");
        assert_eq!(fs::read(tmp.path().join(".tmp-step_000400-1")).unwrap(), b"nor this");
        assert!(parse_step("step_12").is_none() && parse_step("step_000200.aside-1").is_none());
    }

    #[test]
    fn fallback_to_the_previous_valid_checkpoint_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), &snapshot(200)).unwrap();
        let newer = write(tmp.path(), &snapshot(400)).unwrap();
        fs::write(newer.join("generator.bpk"), b"garbage").unwrap();
        let (found, warnings) = newest_valid(tmp.path()).unwrap();
        assert_eq!(found.unwrap().1.state.iteration, 200);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("generator.bpk"), "{}", warnings[0]);
    }

    #[test]
    fn failed_saves_leave_the_previous_checkpoint_newest_and_are_cleaned() {
        for fault in [SaveFault::WriteError, SaveFault::BeforeManifest, SaveFault::BeforeRename] {
            let tmp = tempfile::tempdir().unwrap();
            write(tmp.path(), &snapshot(200)).unwrap();
            assert!(write_with_fault(tmp.path(), &snapshot(400), Some(fault)).is_err());
            let (found, _) = newest_valid(tmp.path()).unwrap();
            assert_eq!(found.unwrap().1.state.iteration, 200, "{fault:?}");
            // The crash leftovers are not checkpoints, and the next start removes them.
            assert_eq!(list(tmp.path()).unwrap().len(), 1, "{fault:?}");
            let (_, warnings) = clean_leftovers(tmp.path()).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("step_000200")], "{fault:?}");
        }
    }
}
