//! The live dashboard: a small read-only HTTP server over one or more run folders.
//!
//! `gantry serve RUN...` (and `gantry train --serve`) serve one page (`dashboard.html`, no external
//! assets) that draws the curves, D's outputs, the sample grids with a slider, progress and ETA, the
//! config and the alerts. The page asks for everything through a small JSON API and follows a
//! running training through server-sent events:
//!
//! | path                               | what                                                   |
//! |------------------------------------|--------------------------------------------------------|
//! | `/`                                | the page                                               |
//! | `/api/runs`                        | the runs served, by name                               |
//! | `/api/runs/{run}/status`           | progress, ETA, grid steps, alerts                      |
//! | `/api/runs/{run}/metrics?from=N`   | `metrics.csv` rows from row N on, as JSON              |
//! | `/api/runs/{run}/config`           | the run's `config.toml`                                |
//! | `/api/runs/{run}/events`           | server-sent `status` events whenever the status changes |
//! | `/runs/{run}/files/{path}`         | a file of the run folder (read-only)                   |
//!
//! The server never writes, and never takes the run's lock (so a training or resume is never
//! refused because someone is watching). Files are served only from inside the run folders:
//! paths with `..`, absolute paths, hidden names, and symbolic links that lead outside or to a
//! hidden name are refused.
//! It binds 127.0.0.1 unless another address is given explicitly.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::alerts::{self, Alert};
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::metrics::CSV_COLUMNS;
use crate::run_dir::{RunDir, RunInfo};

/// The page, with its script and styles inline.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Default port of `gantry serve`.
pub const DEFAULT_PORT: u16 = 6150;

/// How often an event stream looks at the run folder for news.
const POLL: Duration = Duration::from_millis(500);

/// A run counts as training while its metrics grew within this long.
const ACTIVE_WITHIN: Duration = Duration::from_secs(10);

/// The runs being served.
#[derive(Debug)]
pub struct Dashboard {
    runs: Vec<ServedRun>,
}

#[derive(Debug)]
struct ServedRun {
    name: String,
    root: PathBuf,
    rows: Mutex<RowCounter>,
    progress: Mutex<ProgressTracker>,
}

impl Dashboard {
    /// Serve the run folder `root` (which may not exist yet: `train --serve` starts the server first).
    pub fn single(root: &Path) -> Self {
        let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        Self { runs: vec![ServedRun::new(name, root.to_path_buf())] }
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
                return Err(refuse("is neither a run folder (no config.toml) nor a folder of run folders"));
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
        Ok(Self { runs })
    }

    /// The names the runs are served under, in order.
    pub fn run_names(&self) -> Vec<&str> {
        self.runs.iter().map(|r| r.name.as_str()).collect()
    }

    fn run(&self, name: &str) -> Option<&ServedRun> {
        self.runs.iter().find(|r| r.name == name)
    }
}

fn is_run_folder(path: &Path) -> bool {
    path.join("config.toml").is_file()
}

impl ServedRun {
    fn new(name: String, root: PathBuf) -> Self {
        Self {
            name,
            root,
            rows: Mutex::new(RowCounter::default()),
            progress: Mutex::new(ProgressTracker::default()),
        }
    }

    fn status(&self) -> RunStatus {
        let run = RunDir::from_path(&self.root);
        let rows = self.rows.lock().expect("row counter").count(&run.metrics_csv());
        let config = Config::from_file(&run.config()).ok();
        let total = config.as_ref().map(|c| c.train.iterations);
        let info = RunInfo::read(&run).ok();
        let (rate, seen_growing) = self.progress.lock().expect("progress").observe(Instant::now(), rows);
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
        RunStatus {
            name: self.name.clone(),
            iterations_done: rows,
            iterations_total: total,
            active,
            finished,
            ms_per_iteration,
            eta_seconds,
            smoothing_window: config.map(|c| c.output.smoothing_window).unwrap_or(100),
            grids: grid_steps(&run.samples_dir()),
            alerts: alerts::load(&run.alerts()).unwrap_or_default(),
            quality: crate::train::quality::read(&run.eval_csv()).unwrap_or_default(),
        }
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
    /// Iterations at which a fixed-noise grid exists, ascending.
    pub grids: Vec<usize>,
    pub alerts: Vec<Alert>,
    /// Sample quality measured during training (eval.csv), oldest first.
    pub quality: Vec<crate::train::quality::QualityRecord>,
}

/// Whether a file name is hidden (starts with a dot).
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// The sample grids present (`samples/step_NNNNNN.png`), by iteration.
fn grid_steps(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut steps: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("step_")?.strip_suffix(".png")?.parse().ok()
        })
        .collect();
    steps.sort_unstable();
    steps
}

/// Counts complete rows of a growing CSV file without re-reading it: only the bytes appended since
/// the last look are scanned. A file that shrank (a resume truncates rows past its checkpoint) is
/// counted again from the start.
#[derive(Debug, Default)]
struct RowCounter {
    scanned_bytes: u64,
    newlines: usize,
}

impl RowCounter {
    /// Data rows (complete lines after the header).
    fn count(&mut self, path: &Path) -> usize {
        let Ok(mut file) = std::fs::File::open(path) else {
            *self = Self::default();
            return 0;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.scanned_bytes {
            *self = Self::default();
        }
        if len > self.scanned_bytes && file.seek(SeekFrom::Start(self.scanned_bytes)).is_ok() {
            let mut fresh = Vec::with_capacity((len - self.scanned_bytes) as usize);
            if file.take(len - self.scanned_bytes).read_to_end(&mut fresh).is_ok() {
                // Stop at the last newline: a row being written now is counted next time.
                if let Some(last) = fresh.iter().rposition(|&b| b == b'\n') {
                    self.newlines += fresh[..=last].iter().filter(|&&b| b == b'\n').count();
                    self.scanned_bytes += last as u64 + 1;
                }
            }
        }
        self.newlines.saturating_sub(1)
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

/// The router: every route of the dashboard over `dashboard`'s runs.
pub fn app(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD_HTML) }))
        .route("/api/runs", get(list_runs))
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

async fn list_runs(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(d.run_names()).into_response()
}

async fn run_status(State(d): State<Arc<Dashboard>>, UrlPath(run): UrlPath<String>) -> Response {
    match d.run(&run) {
        Some(r) => axum::Json(r.status()).into_response(),
        None => not_found("no such run"),
    }
}

#[derive(Debug, Deserialize)]
struct MetricsQuery {
    #[serde(default)]
    from: usize,
}

/// Rows of metrics.csv from row `from` on: `{"from": N, "columns": [...], "rows": [[...], ...]}`.
/// Only complete lines are returned, so a row being written is sent next time.
async fn run_metrics(
    State(d): State<Arc<Dashboard>>,
    UrlPath(run): UrlPath<String>,
    Query(q): Query<MetricsQuery>,
) -> Response {
    let Some(r) = d.run(&run) else { return not_found("no such run") };
    let path = RunDir::from_path(&r.root).metrics_csv();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("read {}: {e}\n", path.display()))
                .into_response();
        }
    };
    match parse_metric_rows(&text, q.from) {
        Ok(rows) => axum::Json(serde_json::json!({ "from": q.from, "columns": CSV_COLUMNS, "rows": rows }))
            .into_response(),
        Err(problem) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {problem}\n", path.display())).into_response()
        }
    }
}

/// Parse the complete data lines of a metrics.csv text, skipping the first `from` of them.
/// Non-finite values become JSON null.
fn parse_metric_rows(text: &str, from: usize) -> std::result::Result<Vec<Vec<Option<f64>>>, String> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Ok(Vec::new()),
    };
    let mut rows = Vec::new();
    for (k, line) in complete.lines().skip(1).enumerate().skip(from) {
        let values: Vec<Option<f64>> = line
            .split(',')
            .map(|v| v.trim().parse::<f64>().map(|x| x.is_finite().then_some(x)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| format!("row {} is not numbers: {line:?}", k + 1))?;
        if values.len() != CSV_COLUMNS.len() {
            return Err(format!("row {} has {} fields, expected {}", k + 1, values.len(), CSV_COLUMNS.len()));
        }
        rows.push(values);
    }
    Ok(rows)
}

async fn run_config(State(d): State<Arc<Dashboard>>, UrlPath(run): UrlPath<String>) -> Response {
    let Some(r) = d.run(&run) else { return not_found("no such run") };
    match std::fs::read_to_string(RunDir::from_path(&r.root).config()) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(_) => not_found("no config.toml yet"),
    }
}

/// Server-sent events: a `status` event now, then one whenever the status changes.
async fn run_events(State(d): State<Arc<Dashboard>>, UrlPath(run): UrlPath<String>) -> Response {
    if d.run(&run).is_none() {
        return not_found("no such run");
    }
    let stream =
        futures_util::stream::unfold((d, run, String::new(), true), |(d, run, last, first)| async move {
            loop {
                if !first {
                    tokio::time::sleep(POLL).await;
                }
                let status = d.run(&run)?.status();
                let json = serde_json::to_string(&status).ok()?;
                if json != last {
                    let event = Event::default().event("status").data(json.clone());
                    return Some((Ok::<_, std::convert::Infallible>(event), (d, run, json, false)));
                }
                if first {
                    return Some((Ok(Event::default().comment("unchanged")), (d, run, last, false)));
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn run_file(
    State(d): State<Arc<Dashboard>>,
    UrlPath((run, path)): UrlPath<(String, String)>,
) -> Response {
    let Some(r) = d.run(&run) else { return not_found("no such run") };
    let file = match resolve_inside(&r.root, &path) {
        Ok(file) => file,
        Err(Refused::Outside) => {
            return (StatusCode::FORBIDDEN, "403: outside the run folder\n").into_response();
        }
        Err(Refused::Missing) => return not_found("no such file"),
    };
    match std::fs::read(&file) {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&file))], bytes).into_response(),
        Err(_) => not_found("no such file"),
    }
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

/// Listen on `addr` and serve until `stop` is set (or forever). `ready` is called with the bound
/// address (the actual port when `addr` has port 0) before the first request is taken.
pub fn serve_blocking(
    dashboard: Arc<Dashboard>,
    addr: SocketAddr,
    stop: Option<Arc<AtomicBool>>,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let what = format!("{addr}");
    let io = |source| Error::io("listen on", &what, source);
    let listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(&what, e))?;
    listener.set_nonblocking(true).map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io)?;
    runtime.block_on(async move {
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
        axum::serve(listener, app(dashboard)).with_graceful_shutdown(shutdown).await.map_err(io)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn row_counter_counts_complete_rows_and_restarts_after_truncation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.csv");
        let mut counter = RowCounter::default();
        assert_eq!(counter.count(&path), 0);
        std::fs::write(&path, "h\n1\n2\n3").unwrap();
        assert_eq!(counter.count(&path), 2, "the unfinished third row is not counted yet");
        std::fs::write(&path, "h\n1\n2\n3\n4\n").unwrap();
        assert_eq!(counter.count(&path), 4);
        std::fs::write(&path, "h\n1\n").unwrap();
        assert_eq!(counter.count(&path), 1);
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
        let header = CSV_COLUMNS.join(",");
        let text = format!("{header}\n0,1,2,3,4,5,6,7,8,9\n1,NaN,2,3,4,5,6,inf,8,9\n2,1,2");
        let rows = parse_metric_rows(&text, 0).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1][1], None);
        assert_eq!(rows[1][7], None);
        assert_eq!(parse_metric_rows(&text, 1).unwrap(), rows[1..]);
        assert!(parse_metric_rows(&format!("{header}\n0,1\n"), 0).unwrap_err().contains("2 fields"));
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
        let dashboard = Arc::new(Dashboard { runs: Vec::new() });
        let err = serve_blocking(dashboard, addr, None, |_| {}).unwrap_err();
        assert!(err.to_string().contains("--port 0"), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
