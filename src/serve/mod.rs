//! The live dashboard: a small read-only HTTP server over one or more run folders.
//!
//! `gantry serve RUN...` (and `gantry train --serve`) serve one page (`dashboard.html`, no external
//! assets) that draws the curves, D's outputs, the sample grids with a slider, progress and ETA, the
//! config and the alerts. The page asks for everything through a small JSON API and follows a
//! running training through server-sent events:
//!
//! | path                               | what                                                     |
//! |------------------------------------|----------------------------------------------------------|
//! | `/`                                | the page                                                 |
//! | `/api/runs`                        | the runs served, by name                                 |
//! | `/api/groups`                      | each run's configuration group, seeds aside (the overlay |
//! |                                    | view colours a group's seeds alike)                      |
//! | `/api/runs/{run}/status`           | progress, ETA, grid steps, alerts                        |
//! | `/api/runs/{run}/metrics?from=N`   | `metrics.csv` rows from row N on, as JSON, at most       |
//! |                                    | [`MAX_ROWS_PER_RESPONSE`] (`more`: further rows follow)  |
//! | `/api/runs/{run}/config`           | the run's `config.toml`                                  |
//! | `/api/runs/{run}/events`           | server-sent `status` events whenever the status changes  |
//! | `/runs/{run}/files/{path}`         | a file of the run folder (read-only)                     |
//!
//! The server never writes, and never takes the run's lock (so a training or resume is never
//! refused because someone is watching). Files are served only from inside the run folders:
//! paths with `..`, absolute paths, hidden names, and symbolic links that lead outside or to a
//! hidden name are refused.
//!
//! No request costs more than a bounded amount of memory and work: files (and `config.toml`) are
//! streamed in [`FILE_CHUNK`]-byte chunks, never read whole; a run's status is computed at most every
//! [`STATUS_TTL`] and shared, as one buffer, by every status request and event stream; the small
//! files it reads (`config.toml`, `run.json`, `alerts.json`) are read only up to [`MAX_SMALL_FILE`]
//! bytes and `eval.csv` only its newest [`MAX_EVAL_BYTES`]; the metrics rows are found through an
//! incremental index of row offsets (the file is scanned once, as it grows) and sent at most
//! [`MAX_ROWS_PER_RESPONSE`] at a time. File system work runs on a few blocking threads, never on
//! the thread that serves the connections.
//!
//! [`connections`] owns the accept loop and its limits ([`ServeLimits`]: header, idle and
//! stalled-write timeouts, a connection cap) and the `Host` check: it binds 127.0.0.1 unless another
//! address is given explicitly; bound to loopback it answers only requests addressed to
//! `localhost`, `127.x.x.x` or `[::1]` (a page of another site reaching it through DNS rebinding
//! gets 403), bound explicitly to another address it answers any name.

pub mod connections;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

pub use self::connections::{HostPolicy, ServeLimits};
use crate::alerts::Alert;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::metrics::CSV_COLUMNS;
use crate::metrics::quality::QualityRecord;
use crate::run_dir::{RunDir, RunInfo};

/// The page, with its script and styles inline.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Default port of `gantry serve`.
pub const DEFAULT_PORT: u16 = 6150;

/// How often an event stream looks at the run folder for news.
const POLL: Duration = Duration::from_millis(500);

/// An event stream with no news sends a comment this often, so proxies and the idle timeout keep it.
const EVENTS_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A run counts as training while its metrics grew within this long.
const ACTIVE_WITHIN: Duration = Duration::from_secs(10);

/// A run's status is recomputed at most this often; requests in between share the last one.
pub const STATUS_TTL: Duration = Duration::from_millis(250);

/// Files are sent in chunks of this many bytes.
pub const FILE_CHUNK: usize = 16 * 1024;

/// The most metrics rows one answer carries; the page asks again from where it stopped.
pub const MAX_ROWS_PER_RESPONSE: usize = 2_000;

/// `config.toml`, `run.json` and `alerts.json` larger than this are not read for the status.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// Only this many bytes of `eval.csv`'s newest rows are read for the status.
pub const MAX_EVAL_BYTES: u64 = 1 << 20;

/// A metrics row (or a CSV header) longer than this is not a row gantry wrote.
const MAX_ROW_BYTES: usize = 4096;

/// The metrics index remembers where every this-many-th line starts.
const INDEX_STRIDE: usize = 1024;

/// At most this many grid steps are listed (the newest).
const MAX_GRIDS: usize = 100_000;

/// Threads for file system work (status, metrics, file chunks).
const BLOCKING_THREADS: usize = 8;

/// One metrics.csv row as sent: a value per column, null where not finite.
type MetricRow = Vec<Option<f64>>;

/// The runs being served.
#[derive(Debug)]
pub struct Dashboard {
    runs: Vec<ServedRun>,
    /// Held while the groups are computed: concurrent `/api/groups` requests take turns (each
    /// then finds the runs' settings cached) instead of filling the pool that serves status.
    groups_turn: Mutex<()>,
}

#[derive(Debug)]
struct ServedRun {
    name: String,
    root: PathBuf,
    rows: Mutex<RowIndex>,
    progress: Mutex<ProgressTracker>,
    grids: Mutex<GridCache>,
    /// The last status computed, as JSON, and when.
    snapshot: Mutex<Option<(Instant, Bytes)>>,
    /// The run's chosen settings (for `/api/groups`), read again only when its config.toml changes.
    settings: Mutex<SettingsCache>,
}

/// A run's settings as of one version of its config.toml.
#[derive(Debug, Default)]
struct SettingsCache {
    /// The file's identity and modification time when it was read (None: not read yet, or the
    /// file was not there).
    stamp: Option<FileStamp>,
    settings: Option<BTreeMap<String, String>>,
    /// How often the file was parsed (for tests).
    reads: usize,
}

/// What tells one version of a file from the next: an atomic rewrite makes a new inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self { modified: meta.modified().ok(), len: meta.len(), inode })
    }
}

/// A lock that a panic elsewhere does not poison for the server (the data are caches).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Dashboard {
    /// Serve the run folder `root` (which may not exist yet: `train --serve` starts the server first).
    pub fn single(root: &Path) -> Self {
        let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        Self { runs: vec![ServedRun::new(name, root.to_path_buf())], groups_turn: Mutex::new(()) }
    }

    /// Serve each path given: a run folder (it has a `config.toml`), or a folder of run folders
    /// (`runs/`), whose runs are all served side by side. A path that does not exist or is not a
    /// folder is an [`Error::RunDir`].
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self> {
        let mut found = Vec::new();
        for path in paths {
            if is_run_folder(path) {
                found.push(path.clone());
                continue;
            }
            let refuse = |problem: &str| Error::RunDir { path: path.clone(), problem: problem.into() };
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(refuse("does not exist")),
                Err(e) => return Err(Error::io("read run folder", path, e)),
                Ok(m) if !m.is_dir() => {
                    return Err(refuse("is not a folder (give a run folder or a folder of run folders)"));
                }
                Ok(_) => {}
            }
            let entries = std::fs::read_dir(path).at("read run folder", path)?;
            let mut children: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| is_run_folder(p)).collect();
            if children.is_empty() {
                return Err(refuse(
                    "is neither a gantry run folder (a config.toml with gantry's run.json or lock) nor a folder of run folders",
                ));
            }
            children.sort();
            found.extend(children);
        }
        let mut runs: Vec<ServedRun> = Vec::new();
        for root in found {
            let base =
                root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            let mut name = base.clone();
            let mut k = 2;
            while runs.iter().any(|r| r.name == name) {
                name = format!("{base}-{k}");
                k += 1;
            }
            runs.push(ServedRun::new(name, root));
        }
        Ok(Self { runs, groups_turn: Mutex::new(()) })
    }

    /// The names the runs are served under, in order.
    pub fn run_names(&self) -> Vec<&str> {
        self.runs.iter().map(|r| r.name.as_str()).collect()
    }

    fn run(&self, name: &str) -> Option<&ServedRun> {
        self.runs.iter().find(|r| r.name == name)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.runs.iter().position(|r| r.name == name)
    }
}

/// Whether `path` is a run to serve: the one test of a run folder ([`crate::run_dir::is_run_folder`]).
fn is_run_folder(path: &Path) -> bool {
    crate::run_dir::is_run_folder(path)
}

impl ServedRun {
    fn new(name: String, root: PathBuf) -> Self {
        Self {
            name,
            root,
            rows: Mutex::new(RowIndex::default()),
            progress: Mutex::new(ProgressTracker::default()),
            grids: Mutex::new(GridCache::default()),
            snapshot: Mutex::new(None),
            settings: Mutex::new(SettingsCache::default()),
        }
    }

    /// The run's chosen settings, parsed from its config.toml only when the file changed since
    /// the last read (None when it cannot be read).
    fn chosen_settings(&self) -> Option<BTreeMap<String, String>> {
        let path = self.root.join(crate::run_dir::CONFIG);
        let stamp = FileStamp::of(&path);
        let mut cache = lock(&self.settings);
        if stamp.is_some() && cache.stamp == stamp {
            return cache.settings.clone();
        }
        cache.reads += 1;
        cache.settings = Config::from_file(&path).ok().map(|c| c.chosen_settings());
        cache.stamp = stamp;
        cache.settings.clone()
    }

    /// The status as JSON: the shared snapshot if it is recent, else a fresh one.
    fn status_json(&self) -> Bytes {
        let mut snapshot = lock(&self.snapshot);
        if let Some((at, json)) = snapshot.as_ref()
            && at.elapsed() < STATUS_TTL
        {
            return json.clone();
        }
        let json = Bytes::from(serde_json::to_vec(&self.status()).unwrap_or_else(|_| b"null".to_vec()));
        *snapshot = Some((Instant::now(), json.clone()));
        json
    }

    fn status(&self) -> RunStatus {
        let run = RunDir::from_path(&self.root);
        let rows = lock(&self.rows).refresh(&run.metrics_csv());
        let config_path = run.config();
        let config = read_capped(&config_path, MAX_SMALL_FILE)
            .ok()
            .flatten()
            .and_then(|text| Config::from_toml_str(&text, &config_path).ok());
        let total = config.as_ref().map(|c| c.train.iterations);
        let info: Option<RunInfo> = RunInfo::read(&run).ok();
        let (rate, seen_growing) = lock(&self.progress).observe(Instant::now(), rows);
        // A first look has no history yet: a metrics file written in the last few seconds counts.
        let recently_written = std::fs::metadata(run.metrics_csv())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age <= ACTIVE_WITHIN);
        let active = seen_growing || recently_written;
        // A run seen progressing: its live rate. Otherwise what the last process recorded.
        let ms_per_iteration = rate.map(|per_s| 1e3 / per_s).or_else(|| {
            info.as_ref()
                .filter(|i| i.iterations_done > 0)
                .map(|i| 1e3 * i.wall_seconds / i.iterations_done as f64)
        });
        let finished = total.is_some_and(|t| rows >= t);
        let eta_seconds = match (total, rate) {
            (Some(t), Some(per_s)) if seen_growing && !finished => {
                Some(t.saturating_sub(rows) as f64 / per_s)
            }
            _ => None,
        };
        let loss = config.as_ref().map(|c| c.train.loss).unwrap_or_default();
        RunStatus {
            name: self.name.clone(),
            iterations_done: rows,
            iterations_total: total,
            active,
            finished,
            ms_per_iteration,
            eta_seconds,
            smoothing_window: config.as_ref().map(|c| c.output.smoothing_window).unwrap_or(100),
            loss: loss.name().to_string(),
            loss_reference: loss.equilibrium_loss().map(|v| (v, loss.equilibrium_label().to_string())),
            output_reference: loss.equilibrium_output(),
            grids: lock(&self.grids).steps(&run.samples_dir()),
            alerts: read_json(&run.alerts()).unwrap_or_default(),
            quality: read_quality(&run.eval_csv()),
        }
    }

    /// Up to [`MAX_ROWS_PER_RESPONSE`] rows of metrics.csv from data row `from` on, and whether
    /// more complete rows follow them.
    fn metric_rows(&self, from: usize) -> std::result::Result<(Vec<MetricRow>, bool), String> {
        let path = RunDir::from_path(&self.root).metrics_csv();
        let (start, skip, end, total) = {
            let mut index = lock(&self.rows);
            let total = index.refresh(&path);
            match index.locate(from) {
                Some((start, skip)) => (start, skip, index.scanned_bytes, total),
                None => return Ok((Vec::new(), false)),
            }
        };
        let rows = read_metric_rows(&path, start, skip, end, from, MAX_ROWS_PER_RESPONSE)?;
        let more = from + rows.len() < total;
        Ok((rows, more))
    }
}

/// What the page shows about a run besides its curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub name: String,
    /// Complete rows in metrics.csv.
    pub iterations_done: usize,
    /// The configured total (None until config.toml exists).
    pub iterations_total: Option<usize>,
    /// Whether metrics grew in the last few seconds.
    pub active: bool,
    pub finished: bool,
    pub ms_per_iteration: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub smoothing_window: usize,
    /// The objective, and the reference lines that follow from it: the losses' value and D's
    /// mean output where D cannot tell real from fake (None where the objective has none).
    pub loss: String,
    pub loss_reference: Option<(f64, String)>,
    pub output_reference: Option<f64>,
    /// Iterations at which a fixed-noise grid exists, ascending (the newest [`MAX_GRIDS`]).
    pub grids: Vec<usize>,
    pub alerts: Vec<Alert>,
    /// Sample quality measured during training (eval.csv, its newest rows), oldest first.
    pub quality: Vec<QualityRecord>,
}

/// Whether a file name is hidden (starts with a dot).
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// The text of a small file, or None when there is no such file. Only regular files are opened
/// (a FIFO would block), and one over `cap` bytes is refused after reading `cap + 1` of them.
fn read_capped(path: &Path, cap: u64) -> Result<Option<String>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
        Ok(m) if !m.is_file() => return Err(Error::bad_data(path, "is not a regular file")),
        Ok(_) => {}
    }
    let file = std::fs::File::open(path).at("open", path)?;
    let mut text = String::new();
    file.take(cap + 1).read_to_string(&mut text).at("read", path)?;
    if text.len() as u64 > cap {
        return Err(Error::bad_data(path, format!("is larger than {cap} bytes; not read")));
    }
    Ok(Some(text))
}

/// A small JSON file, parsed; None when it is missing, too large or not what was expected.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = read_capped(path, MAX_SMALL_FILE).ok().flatten()?;
    serde_json::from_str(&text).ok()
}

/// A CSV file's header line and as many of its newest complete lines as fit in `cap` bytes.
fn read_newest_lines(path: &Path, cap: u64) -> Result<Option<String>> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
        Ok(m) if !m.is_file() => return Err(Error::bad_data(path, "is not a regular file")),
        Ok(m) => m,
    };
    let mut file = std::fs::File::open(path).at("open", path)?;
    let mut bytes = Vec::new();
    if meta.len() <= cap {
        (&mut file).take(cap).read_to_end(&mut bytes).at("read", path)?;
    } else {
        BufReader::new((&mut file).take(MAX_ROW_BYTES as u64))
            .read_until(b'\n', &mut bytes)
            .at("read", path)?;
        if bytes.last() != Some(&b'\n') {
            return Err(Error::bad_data(path, "has no header line"));
        }
        file.seek(SeekFrom::Start(meta.len() - cap)).at("seek in", path)?;
        let mut tail = Vec::new();
        file.take(cap).read_to_end(&mut tail).at("read", path)?;
        // The first line of the tail is cut: drop it.
        let start = tail.iter().position(|&b| b == b'\n').map_or(tail.len(), |p| p + 1);
        bytes.extend_from_slice(&tail[start..]);
    }
    // A line being written now is read next time.
    bytes.truncate(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1));
    String::from_utf8(bytes).map(Some).map_err(|_| Error::bad_data(path, "is not UTF-8 text"))
}

/// The newest quality records of `eval.csv` (none when it is missing or damaged).
fn read_quality(path: &Path) -> Vec<QualityRecord> {
    let Ok(Some(text)) = read_newest_lines(path, MAX_EVAL_BYTES) else { return Vec::new() };
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .collect::<std::result::Result<_, _>>()
        .unwrap_or_default()
}

/// The sample grids present (`samples/step_NNNNNN.png`), by iteration, rescanned only when the
/// folder changed.
#[derive(Debug, Default)]
struct GridCache {
    modified: Option<SystemTime>,
    steps: Vec<usize>,
}

impl GridCache {
    fn steps(&mut self, dir: &Path) -> Vec<usize> {
        let modified = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        // A folder changed within the last two seconds may change again within its clock's tick.
        let settled = modified.and_then(|t| t.elapsed().ok()).is_some_and(|age| age > Duration::from_secs(2));
        if modified.is_none() || modified != self.modified || !settled {
            self.steps = grid_steps(dir);
            self.modified = modified;
        }
        self.steps.clone()
    }
}

/// The sample grids present (`samples/step_NNNNNN.png`), by iteration: the newest [`MAX_GRIDS`].
fn grid_steps(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut steps: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            crate::run_dir::grid_step(&name)
        })
        .collect();
    steps.sort_unstable();
    let extra = steps.len().saturating_sub(MAX_GRIDS);
    steps.drain(..extra);
    steps
}

/// An index of a growing CSV file, kept without re-reading it: complete rows are counted and the
/// offset of every [`INDEX_STRIDE`]-th line is remembered, scanning only the bytes appended since
/// the last look (in bounded chunks). A file that shrank, or was replaced (a resume truncates rows
/// past its checkpoint), is indexed again from the start.
#[derive(Debug, Default)]
struct RowIndex {
    /// Where the last complete line ends.
    scanned_bytes: u64,
    /// Complete lines, the header included.
    lines: usize,
    /// `marks[k]`: where line `k * INDEX_STRIDE` starts.
    marks: Vec<u64>,
    /// The file indexed (device and inode), to notice a replacement.
    identity: Option<(u64, u64)>,
}

#[cfg(unix)]
fn file_identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl RowIndex {
    /// Bring the index up to date with the file at `path`; returns its data rows (complete lines
    /// after the header).
    fn refresh(&mut self, path: &Path) -> usize {
        if self.try_refresh(path).is_err() {
            *self = Self::default();
        }
        self.lines.saturating_sub(1)
    }

    fn try_refresh(&mut self, path: &Path) -> std::io::Result<()> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let mut file = std::fs::File::open(path)?;
        let len = meta.len();
        let identity = file_identity(&meta);
        let mut rewritten = len < self.scanned_bytes || identity != self.identity;
        if !rewritten && self.scanned_bytes > 0 {
            // Still a line end where the last complete line ended?
            let mut byte = [0u8];
            file.seek(SeekFrom::Start(self.scanned_bytes - 1))?;
            file.read_exact(&mut byte)?;
            rewritten = byte[0] != b'\n';
        }
        if rewritten {
            *self = Self { identity, ..Self::default() };
        }
        if self.marks.is_empty() {
            self.marks.push(0);
        }
        if len == self.scanned_bytes {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.scanned_bytes))?;
        let mut reader = file.take(len - self.scanned_bytes);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut at = self.scanned_bytes;
        loop {
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            for (i, _) in chunk[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
                self.lines += 1;
                self.scanned_bytes = at + i as u64 + 1;
                if self.lines.is_multiple_of(INDEX_STRIDE) {
                    self.marks.push(self.scanned_bytes);
                }
            }
            at += n as u64;
        }
    }

    /// Where to start reading for data row `row`: a line start at or before it and how many lines
    /// to skip from there. None when the row is not complete yet.
    fn locate(&self, row: usize) -> Option<(u64, usize)> {
        let line = row.checked_add(1)?;
        if line >= self.lines {
            return None;
        }
        let k = line / INDEX_STRIDE;
        Some((*self.marks.get(k)?, line - k * INDEX_STRIDE))
    }
}

/// Iterations per second over the last minute, from the row counts the server has seen.
#[derive(Debug, Default)]
struct ProgressTracker {
    seen: VecDeque<(Instant, usize)>,
    last_growth: Option<Instant>,
}
impl ProgressTracker {
    const SPAN: Duration = Duration::from_secs(60);

    /// Record `rows` seen at `now`; returns (iterations per second if known, whether active).
    fn observe(&mut self, now: Instant, rows: usize) -> (Option<f64>, bool) {
        match self.seen.back() {
            Some(&(_, last)) if rows < last => {
                self.seen.clear();
                self.last_growth = None;
            }
            Some(&(_, last)) if rows > last => self.last_growth = Some(now),
            _ => {}
        }
        self.seen.push_back((now, rows));
        while self.seen.len() > 2 && now.duration_since(self.seen[0].0) > Self::SPAN {
            self.seen.pop_front();
        }
        let active = self.last_growth.is_some_and(|t| now.duration_since(t) <= ACTIVE_WITHIN);
        let (t0, r0) = self.seen[0];
        let seconds = now.duration_since(t0).as_secs_f64();
        let rate = (active && rows > r0 && seconds >= 0.5).then(|| (rows - r0) as f64 / seconds);
        (rate, active)
    }
}

/// The address to listen on: 127.0.0.1 unless `host` is given explicitly.
pub fn bind_address(host: Option<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), port)
}

/// The router: every route of the dashboard over `dashboard`'s runs (without the `Host` check,
/// which [`serve_blocking`] adds for the address it binds).
pub fn app(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD_HTML) }))
        .route("/api/runs", get(list_runs))
        .route("/api/groups", get(list_groups))
        .route("/api/runs/{run}/status", get(run_status))
        .route("/api/runs/{run}/metrics", get(run_metrics))
        .route("/api/runs/{run}/config", get(run_config))
        .route("/api/runs/{run}/events", get(run_events))
        .route("/runs/{run}/files/{*path}", get(run_file))
        .fallback(|| async { not_found("no such page") })
        .with_state(dashboard)
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("404: {what}\n")).into_response()
}

fn server_error(what: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("500: {what}\n")).into_response()
}

async fn list_runs(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(d.run_names()).into_response()
}

/// `[{"run": name, "group": label}, ...]` in serving order (see [`group_labels`]).
async fn list_groups(State(d): State<Arc<Dashboard>>) -> Response {
    let answer = blocking(move || groups(&d)).await;
    match answer {
        Some(list) => axum::Json(list).into_response(),
        None => server_error("the runs' configurations could not be read".into()),
    }
}

/// The body of `/api/groups`. Each run's config.toml is parsed only when it changed since the last
/// request (a stat per run otherwise), and one request computes at a time.
fn groups(d: &Dashboard) -> Vec<serde_json::Value> {
    let _turn = lock(&d.groups_turn);
    let settings: Vec<Option<BTreeMap<String, String>>> =
        d.runs.iter().map(ServedRun::chosen_settings).collect();
    let labels = group_labels(&settings);
    d.runs
        .iter()
        .zip(labels)
        .map(|(r, group)| serde_json::json!({ "run": r.name, "group": group.unwrap_or_else(|| r.name.clone()) }))
        .collect()
}

/// Each run's group label: the settings in which the runs differ, the seed aside, as
/// `key=value` with the key's last part (`loss=hinge, d_steps=5`), or `all runs` when they differ
/// only in seed. None for a run whose config could not be read.
pub fn group_labels(settings: &[Option<BTreeMap<String, String>>]) -> Vec<Option<String>> {
    let without_seed: Vec<Option<BTreeMap<String, String>>> = settings
        .iter()
        .map(|s| {
            s.clone().map(|mut s| {
                s.remove("train.seed");
                s
            })
        })
        .collect();
    let known: Vec<&BTreeMap<String, String>> = without_seed.iter().flatten().collect();
    let mut keys: Vec<String> = Vec::new();
    for pair in known.windows(2) {
        keys.extend(crate::config::differing_keys(pair[0], pair[1]));
    }
    keys.sort();
    keys.dedup();
    without_seed
        .iter()
        .map(|s| {
            s.as_ref().map(|s| {
                if keys.is_empty() {
                    return "all runs".to_string();
                }
                let short = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
                let value =
                    |k: &String| s.get(k).map_or("-".to_string(), |v| v.trim_matches('"').to_string());
                keys.iter().map(|k| format!("{}={}", short(k), value(k))).collect::<Vec<_>>().join(", ")
            })
        })
        .collect()
}

/// Run `work` on a blocking thread (file system work stays off the connections' thread).
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

async fn run_status(State(d): State<Arc<Dashboard>>, UrlPath(run): UrlPath<String>) -> Response {
    let Some(k) = d.position(&run) else { return not_found("no such run") };
    match blocking(move || d.runs[k].status_json()).await {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => server_error(format!("the status of {run} could not be read")),
    }
}

#[derive(Debug, Deserialize)]
struct MetricsQuery {
    #[serde(default)]
    from: usize,
}

/// One answer of `/api/runs/{run}/metrics`.
#[derive(Debug, Serialize)]
struct MetricsAnswer {
    from: usize,
    columns: &'static [&'static str],
    rows: Vec<MetricRow>,
    more: bool,
}

/// Rows of metrics.csv from row `from` on:
/// `{"from": N, "columns": [...], "rows": [[...], ...], "more": bool}`, at most
/// [`MAX_ROWS_PER_RESPONSE`] rows; `more` says whether further complete rows follow. Only complete
/// lines are returned, so a row being written is sent next time.
async fn run_metrics(
    State(d): State<Arc<Dashboard>>,
    UrlPath(run): UrlPath<String>,
    Query(q): Query<MetricsQuery>,
) -> Response {
    let Some(k) = d.position(&run) else { return not_found("no such run") };
    let from = q.from;
    let root = d.runs[k].root.clone();
    match blocking(move || d.runs[k].metric_rows(from)).await {
        Some(Ok((rows, more))) => {
            axum::Json(MetricsAnswer { from, columns: &CSV_COLUMNS, rows, more }).into_response()
        }
        Some(Err(problem)) => {
            server_error(format!("{}: {problem}", RunDir::from_path(&root).metrics_csv().display()))
        }
        None => server_error(format!("the metrics of {run} could not be read")),
    }
}

/// Rows of the metrics file from byte `start` (a line start) on: `skip` lines skipped, then up to
/// `max` complete lines before byte `end`, parsed; `first_row` numbers them in messages.
fn read_metric_rows(
    path: &Path,
    start: u64,
    skip: usize,
    end: u64,
    first_row: usize,
    max: usize,
) -> std::result::Result<Vec<MetricRow>, String> {
    let failed = |e: std::io::Error| format!("cannot read: {e}");
    let mut file = std::fs::File::open(path).map_err(failed)?;
    file.seek(SeekFrom::Start(start)).map_err(failed)?;
    let mut reader = BufReader::with_capacity(64 * 1024, file.take(end.saturating_sub(start)));
    for _ in 0..skip {
        reader.skip_until(b'\n').map_err(failed)?;
    }
    let mut rows = Vec::new();
    let mut line = Vec::with_capacity(256);
    while rows.len() < max {
        line.clear();
        let n = (&mut reader).take(MAX_ROW_BYTES as u64 + 1).read_until(b'\n', &mut line).map_err(failed)?;
        let row = first_row + rows.len();
        if line.last() != Some(&b'\n') {
            if n > MAX_ROW_BYTES {
                return Err(format!("row {} is longer than {MAX_ROW_BYTES} bytes", row + 1));
            }
            break; // the end of what was indexed (or the file changed under us)
        }
        let text = std::str::from_utf8(&line[..n - 1]).map_err(|_| format!("row {} is not text", row + 1))?;
        rows.push(parse_metric_row(text, row)?);
    }
    Ok(rows)
}

/// One data line of metrics.csv (`row` counts from 0); non-finite values become JSON null.
fn parse_metric_row(line: &str, row: usize) -> std::result::Result<MetricRow, String> {
    let values: Vec<Option<f64>> = line
        .trim_end_matches('\r')
        .split(',')
        .map(|v| v.trim().parse::<f64>().map(|x| x.is_finite().then_some(x)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("row {} is not numbers: {line:?}", row + 1))?;
    if values.len() != CSV_COLUMNS.len() {
        return Err(format!("row {} has {} fields, expected {}", row + 1, values.len(), CSV_COLUMNS.len()));
    }
    Ok(values)
}

async fn run_config(State(d): State<Arc<Dashboard>>, UrlPath(run): UrlPath<String>) -> Response {
    let Some(r) = d.run(&run) else { return not_found("no such run") };
    let root = r.root.clone();
    match blocking(move || resolve_inside(&root, crate::run_dir::CONFIG)).await {
        Some(Ok(file)) => send_file(&file).await.unwrap_or_else(|| not_found("no config.toml yet")),
        Some(Err(Refused::Outside)) => forbidden(),
        _ => not_found("no config.toml yet"),
    }
}

/// Server-sent events: a `status` event now, then one whenever the status changes, and a comment
/// when nothing changed for [`EVENTS_KEEP_ALIVE`]. Each event is the run's shared status buffer
/// between a prefix and a suffix (framed here rather than by axum's `Sse`, which copies the data
/// into every stream), and the stream is polled only as fast as its client reads.
async fn run_events(State(d): State<Arc<Dashboard>>, UrlPath(run): UrlPath<String>) -> Response {
    let Some(k) = d.position(&run) else { return not_found("no such run") };
    struct Follow {
        d: Arc<Dashboard>,
        k: usize,
        last: Option<Bytes>,
        queue: VecDeque<Bytes>,
        quiet_since: tokio::time::Instant,
        first: bool,
    }
    let start = Follow {
        d,
        k,
        last: None,
        queue: VecDeque::new(),
        quiet_since: tokio::time::Instant::now(),
        first: true,
    };
    let stream = futures_util::stream::unfold(start, |mut s| async move {
        loop {
            if let Some(chunk) = s.queue.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(chunk), s));
            }
            if !s.first {
                tokio::time::sleep(POLL).await;
            }
            s.first = false;
            let d = s.d.clone();
            let k = s.k;
            let json = blocking(move || d.runs[k].status_json()).await?;
            if s.last.as_ref() != Some(&json) {
                // serde_json's compact output has no line breaks: one `data:` line.
                s.queue.push_back(Bytes::from_static(b"event: status\ndata: "));
                s.queue.push_back(json.clone());
                s.queue.push_back(Bytes::from_static(b"\n\n"));
                s.last = Some(json);
                s.quiet_since = tokio::time::Instant::now();
            } else if s.quiet_since.elapsed() >= EVENTS_KEEP_ALIVE {
                s.queue.push_back(Bytes::from_static(b":\n\n"));
                s.quiet_since = tokio::time::Instant::now();
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "403: outside the run folder\n").into_response()
}

async fn run_file(
    State(d): State<Arc<Dashboard>>,
    UrlPath((run, path)): UrlPath<(String, String)>,
) -> Response {
    let Some(r) = d.run(&run) else { return not_found("no such run") };
    let root = r.root.clone();
    match blocking(move || resolve_inside(&root, &path)).await {
        Some(Ok(file)) => send_file(&file).await.unwrap_or_else(|| not_found("no such file")),
        Some(Err(Refused::Outside)) => forbidden(),
        _ => not_found("no such file"),
    }
}

/// Stream the regular file at `path` in [`FILE_CHUNK`]-byte chunks, as long as it was when opened
/// (None when it cannot be opened). A chunk is read only when the client took the one before.
async fn send_file(path: &Path) -> Option<Response> {
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let meta = file.metadata().await.ok()?;
    if !meta.is_file() {
        return None;
    }
    file.set_max_buf_size(FILE_CHUNK);
    let len = meta.len();
    let chunks = futures_util::stream::try_unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut chunk = vec![0u8; usize::try_from(left).unwrap_or(FILE_CHUNK).min(FILE_CHUNK)];
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while sent"));
        }
        chunk.truncate(n);
        Ok(Some((Bytes::from(chunk), (file, left - n as u64))))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(response)
}

/// Why a file request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The path could name something outside the run folder, or hidden inside it (403).
    Outside,
    /// No such file inside it (404).
    Missing,
}

/// The file `relative` names inside `root`. Only plain, non-hidden path components are accepted,
/// and the resolved file (symbolic links followed) must lie under the resolved root with no hidden
/// component below it: a link may not lead to `.lock` any more than the path may name it.
pub fn resolve_inside(root: &Path, relative: &str) -> std::result::Result<PathBuf, Refused> {
    let plain_and_visible =
        |p: &Path| p.components().all(|c| matches!(c, Component::Normal(s) if !is_hidden(s)));
    let rel = Path::new(relative);
    if relative.is_empty() || relative.contains('\\') || !plain_and_visible(rel) {
        return Err(Refused::Outside);
    }
    let root = root.canonicalize().map_err(|_| Refused::Missing)?;
    let file = root.join(rel).canonicalize().map_err(|_| Refused::Missing)?;
    match file.strip_prefix(&root) {
        Ok(below) if plain_and_visible(below) => {}
        _ => return Err(Refused::Outside),
    }
    if file.is_file() { Ok(file) } else { Err(Refused::Missing) }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        Some("toml" | "txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The error of a failed bind: a busy port says how to get another.
fn bind_error(what: &str, e: std::io::Error) -> Error {
    let source = if e.kind() == std::io::ErrorKind::AddrInUse {
        std::io::Error::new(
            e.kind(),
            format!(
                "{e}: another program listens there; choose another port with --port, or --port 0 for any free port"
            ),
        )
    } else {
        e
    };
    Error::io("listen on", what, source)
}

/// Listen on `addr` and serve until `stop` is set (or forever), within the default
/// [`ServeLimits`]. `ready` is called with the bound address (the actual port when `addr` has
/// port 0) before the first request is taken.
pub fn serve_blocking(
    dashboard: Arc<Dashboard>,
    addr: SocketAddr,
    stop: Option<Arc<AtomicBool>>,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    serve_blocking_with(dashboard, addr, ServeLimits::default(), stop, ready)
}

/// [`serve_blocking`] within `limits`.
pub fn serve_blocking_with(
    dashboard: Arc<Dashboard>,
    addr: SocketAddr,
    limits: ServeLimits,
    stop: Option<Arc<AtomicBool>>,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let what = format!("{addr}");
    let io = |source| Error::io("listen on", &what, source);
    let listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(&what, e))?;
    listener.set_nonblocking(true).map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    let cap = connections::connection_cap(limits.max_connections, connections::raise_descriptor_limit());
    let router = app(dashboard)
        .layer(axum::middleware::from_fn_with_state(HostPolicy::for_address(bound), connections::check_host));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(io)?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(io)?;
        ready(bound);
        let shutdown = async move {
            match stop {
                Some(flag) => {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        connections::serve(listener, router, limits, cap, shutdown).await;
        Ok(())
    });
    // A blocking read stuck on a slow disk does not hold the caller.
    runtime.shutdown_timeout(connections::GRACE);
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_the_settings_runs_differ_in_seeds_aside() {
        let with = |pairs: &[(&str, &str)]| {
            let mut m = crate::Config::default().run_settings();
            for (k, v) in pairs {
                m.insert(k.to_string(), v.to_string());
            }
            Some(m)
        };
        let labels = group_labels(&[
            with(&[("train.loss", "\"ns\""), ("train.seed", "0")]),
            with(&[("train.loss", "\"ns\""), ("train.seed", "1")]),
            with(&[("train.loss", "\"hinge\""), ("train.seed", "0")]),
            None,
        ]);
        let labels: Vec<Option<&str>> = labels.iter().map(|l| l.as_deref()).collect();
        assert_eq!(labels, vec![Some("loss=ns"), Some("loss=ns"), Some("loss=hinge"), None]);
        let seeds_only = group_labels(&[with(&[("train.seed", "0")]), with(&[("train.seed", "1")])]);
        assert_eq!(seeds_only, vec![Some("all runs".to_string()), Some("all runs".to_string())]);
    }

    #[test]
    fn groups_reread_a_config_only_when_it_changes() {
        // The bug: every /api/groups request parsed every run's config.toml (1,000 runs, 200
        // requests: a status request waited 9.3 s).
        let tmp = tempfile::tempdir().unwrap();
        use crate::config::Loss;
        for (name, loss) in [("a", Loss::Ns), ("b", Loss::Hinge)] {
            let mut c = Config::default();
            c.train.loss = loss;
            std::fs::create_dir_all(tmp.path().join(name)).unwrap();
            std::fs::write(tmp.path().join(name).join("config.toml"), c.to_toml()).unwrap();
            // A run folder holds gantry's lock (or run.json) beside its config.
            drop(crate::lock::RunLock::acquire(&tmp.path().join(name)).unwrap());
        }
        let d = Dashboard::from_paths(&[tmp.path().join("a"), tmp.path().join("b")]).unwrap();
        let reads = |d: &Dashboard| d.runs.iter().map(|r| lock(&r.settings).reads).sum::<usize>();
        let first = groups(&d);
        assert_eq!(first[1]["group"], "loss=hinge");
        assert_eq!(reads(&d), 2);
        for _ in 0..5 {
            assert_eq!(groups(&d), first);
        }
        assert_eq!(reads(&d), 2, "unchanged configs are not parsed again");
        // An atomic rewrite (what gantry does) is a new version: read again.
        let mut c = Config::default();
        c.train.loss = Loss::Lsgan;
        crate::durable::write_atomic(&tmp.path().join("b/config.toml"), c.to_toml().as_bytes()).unwrap();
        assert_eq!(groups(&d)[1]["group"], "loss=lsgan");
        assert_eq!(reads(&d), 3);
    }

    #[test]
    fn binds_loopback_unless_an_address_is_given() {
        assert!(bind_address(None, 0).ip().is_loopback());
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(bind_address(Some(any), 7).ip(), any);
    }

    #[test]
    fn resolve_inside_refuses_every_way_out() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        std::fs::create_dir_all(root.join("samples")).unwrap();
        std::fs::write(root.join("samples/step_000000.png"), b"x").unwrap();
        std::fs::write(root.join(".lock"), b"1").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), b"s").unwrap();
        assert!(resolve_inside(&root, "samples/step_000000.png").is_ok());
        for bad in ["../secret.txt", "samples/../../secret.txt", "/etc/passwd", "", ".lock", "a\\..\\b"] {
            assert_eq!(resolve_inside(&root, bad), Err(Refused::Outside), "{bad}");
        }
        assert_eq!(resolve_inside(&root, "samples"), Err(Refused::Missing), "folders are not served");
        assert_eq!(resolve_inside(&root, "nope.png"), Err(Refused::Missing));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("link.txt")).unwrap();
            assert_eq!(resolve_inside(&root, "link.txt"), Err(Refused::Outside), "a symlink leading outside");
        }
    }

    #[test]
    fn row_index_counts_complete_rows_and_restarts_after_truncation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.csv");
        let mut index = RowIndex::default();
        assert_eq!(index.refresh(&path), 0);
        std::fs::write(&path, "h\n1\n2\n3").unwrap();
        assert_eq!(index.refresh(&path), 2, "the unfinished third row is not counted yet");
        std::fs::write(&path, "h\n1\n2\n3\n4\n").unwrap();
        assert_eq!(index.refresh(&path), 4);
        // Rewritten in place, no shorter: noticed (no line end where the last complete line ended).
        std::fs::write(&path, "h\n1\n222222\n").unwrap();
        assert_eq!(index.refresh(&path), 2);
        std::fs::write(&path, "h\n1\n").unwrap();
        assert_eq!(index.refresh(&path), 1);
    }

    fn metrics_text(rows: usize) -> String {
        let mut text = CSV_COLUMNS.join(",") + "\n";
        for r in 0..rows {
            text += &format!("{r},1,2,3,4,5,6,7,8,9\n");
        }
        text
    }

    #[test]
    fn metrics_answers_are_bounded_and_continue_where_they_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("metrics.csv"), metrics_text(2 * MAX_ROWS_PER_RESPONSE + 500))
            .unwrap();
        let run = ServedRun::new("r".into(), tmp.path().to_path_buf());
        let (rows, more) = run.metric_rows(0).unwrap();
        assert_eq!((rows.len(), more), (MAX_ROWS_PER_RESPONSE, true));
        assert_eq!(rows[0][0], Some(0.0));
        let mut seen = rows.len();
        loop {
            let (rows, more) = run.metric_rows(seen).unwrap();
            assert_eq!(rows[0][0], Some(seen as f64), "continues at row {seen}");
            seen += rows.len();
            if !more {
                break;
            }
        }
        assert_eq!(seen, 2 * MAX_ROWS_PER_RESPONSE + 500);
        // Rows between the index marks, and past the end.
        for from in [1, INDEX_STRIDE - 1, INDEX_STRIDE, INDEX_STRIDE + 7, 3 * INDEX_STRIDE + 1] {
            assert_eq!(run.metric_rows(from).unwrap().0[0][0], Some(from as f64), "from {from}");
        }
        assert_eq!(run.metric_rows(seen).unwrap(), (Vec::new(), false));
        assert_eq!(run.metric_rows(usize::MAX).unwrap(), (Vec::new(), false));
    }

    #[test]
    fn a_metrics_row_too_long_is_an_error_not_a_read_of_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let text = metrics_text(2) + &"1".repeat(10 * MAX_ROW_BYTES) + "\n";
        std::fs::write(tmp.path().join("metrics.csv"), text).unwrap();
        let run = ServedRun::new("r".into(), tmp.path().to_path_buf());
        assert!(run.metric_rows(2).unwrap_err().contains("longer than"));
        assert_eq!(run.metric_rows(0).unwrap_err(), format!("row 3 is longer than {MAX_ROW_BYTES} bytes"));
    }

    #[test]
    fn progress_rate_and_activity() {
        let t0 = Instant::now();
        let mut p = ProgressTracker::default();
        assert_eq!(p.observe(t0, 0), (None, false));
        let (rate, active) = p.observe(t0 + Duration::from_secs(2), 100);
        assert!(active);
        assert!((rate.unwrap() - 50.0).abs() < 1e-9);
        // No growth for longer than ACTIVE_WITHIN: stopped, no rate.
        assert_eq!(p.observe(t0 + Duration::from_secs(20), 100), (None, false));
        // Fewer rows than before (a resume truncated them): start over.
        assert_eq!(p.observe(t0 + Duration::from_secs(21), 40), (None, false));
    }

    #[test]
    fn metric_rows_skip_the_partial_line_and_map_non_finite_to_null() {
        let tmp = tempfile::tempdir().unwrap();
        let header = CSV_COLUMNS.join(",");
        let text = format!("{header}\n0,1,2,3,4,5,6,7,8,9\n1,NaN,2,3,4,5,6,inf,8,9\n2,1,2");
        std::fs::write(tmp.path().join("metrics.csv"), &text).unwrap();
        let run = ServedRun::new("r".into(), tmp.path().to_path_buf());
        let (rows, more) = run.metric_rows(0).unwrap();
        assert_eq!((rows.len(), more), (2, false));
        assert_eq!(rows[1][1], None);
        assert_eq!(rows[1][7], None);
        assert_eq!(run.metric_rows(1).unwrap().0, rows[1..]);
        assert!(parse_metric_row("0,1", 0).unwrap_err().contains("2 fields"));
        assert!(parse_metric_row("0,x,2,3,4,5,6,7,8,9", 4).unwrap_err().contains("row 5 is not numbers"));
    }

    #[cfg(unix)]
    #[test]
    fn symlink_to_a_hidden_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join(".lock"), b"1").unwrap();
        std::fs::write(root.join(".hidden/inner.txt"), b"2").unwrap();
        std::fs::write(root.join("visible.txt"), b"3").unwrap();
        std::os::unix::fs::symlink(root.join(".lock"), root.join("lock_link")).unwrap();
        std::os::unix::fs::symlink(root.join(".hidden"), root.join("dir_link")).unwrap();
        std::os::unix::fs::symlink("visible.txt", root.join("fine_link.txt")).unwrap();
        assert_eq!(resolve_inside(&root, "lock_link"), Err(Refused::Outside));
        assert_eq!(resolve_inside(&root, "dir_link/inner.txt"), Err(Refused::Outside));
        assert!(resolve_inside(&root, "fine_link.txt").is_ok(), "a link to a visible file inside is fine");
        // The run folder itself may sit under a hidden folder: only what is below it counts.
        let hidden_parent = tmp.path().join(".runs/r");
        std::fs::create_dir_all(&hidden_parent).unwrap();
        std::fs::write(hidden_parent.join("a.txt"), b"4").unwrap();
        assert!(resolve_inside(&hidden_parent, "a.txt").is_ok());
    }

    #[test]
    fn serve_on_a_missing_path_is_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no-such-runs");
        let err = Dashboard::from_paths(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(
            err.to_string().contains(&missing.display().to_string())
                && err.to_string().contains("does not exist")
        );
        let file = tmp.path().join("file.txt");
        std::fs::write(&file, "x").unwrap();
        let err = Dashboard::from_paths(std::slice::from_ref(&file)).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("not a folder"), "{err}");
    }

    #[test]
    fn a_busy_port_suggests_port_0() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let dashboard = Arc::new(Dashboard { runs: Vec::new(), groups_turn: Mutex::new(()) });
        let err = serve_blocking(dashboard, addr, None, |_| {}).unwrap_err();
        assert!(err.to_string().contains("--port 0"), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn status_reads_of_run_files_are_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_SMALL_FILE as usize + 1]).unwrap();
        assert!(read_capped(&big, MAX_SMALL_FILE).is_err());
        assert_eq!(read_json::<Vec<Alert>>(&big), None);
        assert_eq!(read_capped(&tmp.path().join("none"), 10).unwrap(), None);
        // eval.csv: its header and newest complete rows only.
        let eval = tmp.path().join("eval.csv");
        let mut text = String::from("a,b\n");
        for k in 0..1000 {
            text += &format!("{k},{k}\n");
        }
        text += "1000,10";
        std::fs::write(&eval, &text).unwrap();
        let newest = read_newest_lines(&eval, 100).unwrap().unwrap();
        assert!(newest.starts_with("a,b\n") && newest.ends_with("999,999\n"), "{newest}");
        assert!(newest.len() <= 100 + 4, "{}", newest.len());
        let all = read_newest_lines(&eval, 1 << 20).unwrap().unwrap();
        assert!(all.starts_with("a,b\n0,0\n") && all.ends_with("999,999\n"));
    }

    #[test]
    fn the_status_snapshot_is_one_shared_buffer() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("metrics.csv"), metrics_text(3)).unwrap();
        let run = ServedRun::new("r".into(), tmp.path().to_path_buf());
        let first = run.status_json();
        let kept = lock(&run.snapshot).as_ref().map(|(_, json)| json.as_ptr());
        assert_eq!(kept, Some(first.as_ptr()), "the snapshot is the buffer handed out");
        let status: RunStatus = serde_json::from_slice(&first).unwrap();
        assert_eq!(status.iterations_done, 3);
    }
}
