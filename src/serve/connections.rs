//! The dashboard's accept loop: one hyper HTTP/1 connection per socket, with the limits that keep a
//! hostile or broken client from holding the server.
//!
//! | limit                                   | what happens                                            |
//! |-----------------------------------------|---------------------------------------------------------|
//! | [`ServeLimits::header_timeout`]         | a request head (line and headers) not complete in time, |
//! |                                         | or a kept-alive connection with no next request: closed |
//! | [`ServeLimits::idle_timeout`]           | no byte moved either way for this long: closed          |
//! | [`ServeLimits::stalled_write_timeout`]  | a response the client stopped reading: dropped          |
//! | [`ServeLimits::max_connections`]        | at the cap, a new connection closes the stalest one     |
//! | `Host` header (loopback binds only)     | not `localhost`/`127.x.x.x`/`[::1]`: 403                |
//!
//! The cap is lowered to what the descriptor limit allows (two descriptors per connection: its
//! socket and a file being sent), after raising the soft limit to the hard one. A new connection is
//! never left waiting in the backlog: at the cap the connection that moved no byte for the longest
//! is closed to make room, so a short request from the page is answered while idle or stalled
//! sockets fill the table. Per connection, hyper buffers at most [`MAX_BUF`] bytes of a response
//! (plus one body chunk), so memory stays bounded whatever the clients do.
//!
//! On shutdown new connections are refused, open ones finish their current response (idle ones close
//! at once), and whatever is still open after [`GRACE`] (event streams) is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, Id, JoinSet};
use tokio::time::Instant;

/// The most bytes hyper buffers per connection, each way (its minimum is 8 KiB).
pub const MAX_BUF: usize = 64 * 1024;

/// How long open connections may take to finish once the server stops.
pub const GRACE: Duration = Duration::from_secs(2);

/// Descriptors kept free for everything else the process opens (run files, a training's own files).
const RESERVED_DESCRIPTORS: u64 = 64;

/// Pause after an accept that failed for lack of resources (descriptors, memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// The limits the dashboard enforces on its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request's head must arrive within this long of the server starting to wait for it: on a
    /// fresh connection and between requests of a kept-alive one.
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout: Duration,
    /// A response whose writes stay blocked this long (the client does not read) is dropped.
    pub stalled_write_timeout: Duration,
    /// Connections served at once (fewer if the descriptor limit allows fewer).
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            stalled_write_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// Which `Host` values a request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPolicy {
    /// Bound to a loopback address: only `localhost`, `127.x.x.x` and `[::1]`, with no port or
    /// `port`. Anything else is a page of another site reaching the server through DNS rebinding.
    Loopback { port: u16 },
    /// Bound explicitly to another address: the user chose to let other machines in, under any name.
    Any,
}

impl HostPolicy {
    /// The policy for a server bound to `bound`.
    pub fn for_address(bound: SocketAddr) -> Self {
        if bound.ip().is_loopback() { HostPolicy::Loopback { port: bound.port() } } else { HostPolicy::Any }
    }

    /// Whether a request with this `Host` value (and authority in its target, if any) is served.
    pub fn allows(self, host: Option<&str>, authority: Option<&str>) -> bool {
        match self {
            HostPolicy::Any => true,
            HostPolicy::Loopback { port } => {
                (host.is_some() || authority.is_some())
                    && host.is_none_or(|h| is_loopback_host(h, port))
                    && authority.is_none_or(|a| is_loopback_host(a, port))
            }
        }
    }
}

/// `localhost`, `127.x.x.x` or `[::1]`, optionally followed by `:port`.
fn is_loopback_host(value: &str, port: u16) -> bool {
    let (name_ok, given_port) = match value.strip_prefix('[') {
        Some(rest) => {
            let Some((inside, after)) = rest.split_once(']') else { return false };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return false,
                },
            };
            (inside.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()), port)
        }
        None => {
            let (name, port) = match value.split_once(':') {
                Some((name, p)) => (name, Some(p)),
                None => (value, None),
            };
            let ok = name.eq_ignore_ascii_case("localhost")
                || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
            (ok, port)
        }
    };
    let port_ok = given_port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>() == Ok(port)
    });
    name_ok && port_ok
}

/// Middleware: refuse requests whose `Host` the policy does not allow (403).
pub async fn check_host(State(policy): State<HostPolicy>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).map(|v| v.to_str().unwrap_or("\u{0}"));
    let authority = request.uri().authority().map(|a| a.as_str());
    if policy.allows(host, authority) {
        next.run(request).await
    } else {
        let shown: String = host.unwrap_or("(none)").escape_debug().take(100).collect();
        (
            StatusCode::FORBIDDEN,
            format!("403: Host {shown} is not this server (use http://localhost or http://127.0.0.1)\n"),
        )
            .into_response()
    }
}

/// Raise the soft descriptor limit to the hard one where that is possible; returns the soft limit
/// in force (None where it cannot be read).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        // An unlimited hard limit is not accepted as a soft one for descriptors: ask for a million.
        let wanted = libc::rlimit { rlim_cur: limit.rlim_max.min(1 << 20), rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given, which lives for the whole call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            limit.rlim_cur = wanted.rlim_cur;
        }
    }
    Some(limit.rlim_cur)
}

/// Raise the soft descriptor limit (not available here: the limit in force is unknown).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn raise_descriptor_limit() -> Option<u64> {
    None
}

/// The connection cap: `wanted`, lowered to fit `descriptors` (two per connection, some reserved).
pub fn connection_cap(wanted: usize, descriptors: Option<u64>) -> usize {
    let fitting = descriptors.map_or(u64::MAX, |d| d.saturating_sub(RESERVED_DESCRIPTORS) / 2);
    wanted.min(usize::try_from(fitting).unwrap_or(usize::MAX)).max(1)
}

/// When bytes last moved on a connection and since when its writes are blocked, in milliseconds
/// since the server's start (`blocked_since` is 0 when no write waits, else the instant plus one).
#[derive(Debug)]
struct Activity {
    base: Instant,
    last: AtomicU64,
    blocked_since: AtomicU64,
}

impl Activity {
    fn new(base: Instant) -> Self {
        let a = Self { base, last: AtomicU64::new(0), blocked_since: AtomicU64::new(0) };
        a.moved();
        a
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn moved(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.moved();
        self.blocked_since.store(0, Ordering::Relaxed);
    }

    fn write_blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == 0 {
            self.blocked_since.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection has been idle or its writes blocked for too long.
    async fn expired(&self, limits: &ServeLimits) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let tick = Duration::from_secs(1)
            .min(limits.idle_timeout / 2)
            .min(limits.stalled_write_timeout / 2)
            .max(Duration::from_millis(10));
        loop {
            let now = self.now_ms();
            let idle_until = self.last.load(Ordering::Relaxed).saturating_add(ms(limits.idle_timeout));
            let blocked = self.blocked_since.load(Ordering::Relaxed);
            let stalled_until = match blocked {
                0 => u64::MAX,
                b => (b - 1).saturating_add(ms(limits.stalled_write_timeout)),
            };
            let until = idle_until.min(stalled_until);
            if now >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(until - now).min(tick)).await;
        }
    }
}

/// A socket that records its progress in an [`Activity`].
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved();
        }
        result
    }
}

impl Tracked {
    fn note_write(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(),
            Poll::Pending => self.activity.write_blocked(),
            _ => {}
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serve one connection until it ends, a limit closes it, or the server stops (then it may finish
/// its current response).
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: ServeLimits,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Tracked { stream, activity: activity.clone() });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_BUF)
        .writev(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(router));
    let expired = activity.expired(&limits);
    tokio::pin!(conn, expired);
    let mut stopping = false;
    loop {
        tokio::select! {
            // Errors (a timeout, a reset, a malformed request) end the connection; nothing to report.
            _ = conn.as_mut() => return,
            () = &mut expired => return,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Whether an accept failed for lack of resources (descriptors, buffers, memory) rather than
/// because one client gave up.
fn out_of_resources(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[derive(Debug)]
struct Open {
    activity: Arc<Activity>,
    handle: AbortHandle,
}

/// Close the connection that moved no byte for the longest.
fn evict_stalest(open: &mut HashMap<Id, Open>) {
    let stalest = open.iter().min_by_key(|(_, o)| o.activity.last.load(Ordering::Relaxed)).map(|(id, _)| *id);
    if let Some(closing) = stalest.and_then(|id| open.remove(&id)) {
        closing.handle.abort();
    }
}

/// Accept connections on `listener` and serve `router` on each, within `limits` (at most `cap` at
/// once), until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    cap: usize,
    shutdown: impl Future<Output = ()>,
) {
    let base = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut open: HashMap<Id, Open> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.remove(&id);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    while open.len() >= cap {
                        evict_stalest(&mut open);
                    }
                    let activity = Arc::new(Activity::new(base));
                    let task = connection(stream, router.clone(), limits, activity.clone(), stop_rx.clone());
                    let handle = tasks.spawn(task);
                    open.insert(handle.id(), Open { activity, handle });
                }
                Err(e) if out_of_resources(&e) => {
                    // Out of descriptors: make room rather than leave new clients in the backlog.
                    evict_stalest(&mut open);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(_) => {}
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_rebinding_hosts_are_refused_on_loopback() {
        let policy = HostPolicy::Loopback { port: 6150 };
        for ok in [
            "localhost",
            "localhost:6150",
            "LocalHost:6150",
            "127.0.0.1",
            "127.0.0.1:6150",
            "127.1.2.3:6150",
            "[::1]",
            "[::1]:6150",
        ] {
            assert!(policy.allows(Some(ok), None), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:6150",
            "localhost:80",
            "localhost:",
            "localhost:+6150",
            "127.0.0.1:6151",
            "10.0.0.1",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::2]:6150",
            "::1",
            "[::1]x",
            "user@localhost",
            "",
        ] {
            assert!(!policy.allows(Some(bad), None), "{bad}");
        }
        assert!(!policy.allows(None, None), "a request without a Host");
        assert!(!policy.allows(Some("localhost"), Some("evil.example")), "an absolute target elsewhere");
        assert!(HostPolicy::Any.allows(Some("evil.example"), None));
        assert_eq!(HostPolicy::for_address("0.0.0.0:1".parse().unwrap()), HostPolicy::Any);
        assert_eq!(HostPolicy::for_address("127.0.0.1:7".parse().unwrap()), HostPolicy::Loopback { port: 7 });
    }

    #[test]
    fn the_connection_cap_fits_the_descriptor_limit() {
        assert_eq!(connection_cap(512, None), 512);
        assert_eq!(connection_cap(512, Some(1 << 20)), 512);
        assert_eq!(connection_cap(512, Some(128)), 32);
        assert_eq!(connection_cap(512, Some(10)), 1);
    }
}
