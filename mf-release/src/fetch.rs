//! Fetching repository files over HTTP(S) or from a local directory (spec/RELEASE.md "Updating", step 4).
//!
//! Small files (the manifest) are read whole under a size cap. Pieces (full archives, patches, file
//! tables) are downloaded into `DIR/<sha256>.part`, resumed with `Range: bytes=N-` after an interruption,
//! never allowed past the manifest's size, and renamed to `DIR/<sha256>` only once their size and SHA-256
//! match. Transient failures (connection errors, timeouts, 5xx, 408, 429) are retried with backoff,
//! resuming from what arrived; a 404 or a response of the wrong length is not.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use mf_format::fs::{Dir, Kind};

use crate::hash::sha256_reader;
use crate::manifest::ObjectRef;
use crate::update::state;

/// How patient fetching is.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Connect timeout, and the longest a read may wait for data before the connection counts as stalled.
    pub timeout: Duration,
    /// Attempts per file before giving up (at least 1).
    pub attempts: u32,
    /// Pause before the second attempt; doubled for each further attempt, capped at 4 s.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions { timeout: Duration::from_secs(30), attempts: 4, backoff: Duration::from_millis(250) }
    }
}

/// Where a repository lives.
#[derive(Debug, Clone)]
enum Location {
    /// Base URL, ending in `/`.
    Http(String),
    Dir(PathBuf),
}

/// Reads files of one release repository.
pub struct Fetcher {
    location: Location,
    agent: Option<ureq::Agent>,
    options: FetchOptions,
    /// Bytes received from the repository so far (network bytes for HTTP, bytes copied for a directory).
    received: AtomicU64,
    /// Attempts of [`Fetcher::fetch_range`] so far (each retry counts).
    range_attempts: AtomicU64,
}

/// Why one attempt failed, and whether trying again may help.
struct Failure {
    what: String,
    transient: bool,
    /// HTTP 416: the server holds fewer bytes than the range asked for.
    unsatisfiable: bool,
    /// The server sent nothing for the timeout (a stall or a connect timeout).
    timed_out: bool,
}

impl Failure {
    fn transient(what: impl Into<String>) -> Failure {
        Failure { what: what.into(), transient: true, unsatisfiable: false, timed_out: false }
    }

    fn timeout(what: impl Into<String>) -> Failure {
        Failure { timed_out: true, ..Failure::transient(what) }
    }

    fn fatal(what: impl Into<String>) -> Failure {
        Failure { what: what.into(), transient: false, unsatisfiable: false, timed_out: false }
    }

    fn unsatisfiable(what: impl Into<String>) -> Failure {
        Failure { what: what.into(), transient: false, unsatisfiable: true, timed_out: false }
    }
}

/// An open response: the body from byte `start` on, and the whole file's length when known.
struct Stream {
    reader: Box<dyn Read>,
    start: u64,
    total: Option<u64>,
}

impl Fetcher {
    /// A fetcher for `repo`: an `http://` or `https://` URL, a `file://` URL or a directory path.
    pub fn new(repo: &str, options: FetchOptions) -> Result<Fetcher> {
        let options = FetchOptions { attempts: options.attempts.max(1), ..options };
        let (location, agent) = if repo.starts_with("http://") || repo.starts_with("https://") {
            let base = if repo.ends_with('/') { repo.to_owned() } else { format!("{repo}/") };
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(options.timeout))
                .timeout_per_read(Some(options.timeout))
                .timeout_per_write(Some(options.timeout))
                // Byte ranges refer to the stored bytes: no transparent decompression.
                .accept_encoding(ureq::config::AutoHeaderValue::None)
                .user_agent(concat!("mf/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent();
            (Location::Http(base), Some(agent))
        } else {
            let path = repo.strip_prefix("file://").unwrap_or(repo);
            let dir = PathBuf::from(path);
            if !dir.is_dir() {
                return Err(Error::Fetch {
                    url: repo.to_owned(),
                    what: "not an http(s):// URL or an existing repository directory".into(),
                });
            }
            (Location::Dir(dir), None)
        };
        Ok(Fetcher { location, agent, options, received: AtomicU64::new(0), range_attempts: AtomicU64::new(0) })
    }

    /// The URL or path of the file at repository path `path`, for messages.
    pub fn url(&self, path: &str) -> String {
        match &self.location {
            Location::Http(base) => format!("{base}{path}"),
            Location::Dir(dir) => dir.join(path).display().to_string(),
        }
    }

    /// Bytes received from the repository by this fetcher so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Range requests made by [`Fetcher::fetch_range`] so far, each attempt of a retried one counted.
    pub fn range_requests(&self) -> u64 {
        self.range_attempts.load(Ordering::Relaxed)
    }

    /// The options this fetcher was made with (timeout, attempts, backoff).
    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// The whole file at repository path `path`, refused when longer than `cap` bytes.
    pub fn fetch_small(&self, path: &str, cap: u64) -> Result<Vec<u8>> {
        let url = self.url(path);
        self.with_retries(&url, || {
            let stream = self.open(path, 0, Freshness::Revalidate)?;
            if let Some(total) = stream.total.filter(|&t| t > cap) {
                return Err(Failure::fatal(format!("{total} bytes is more than the {cap}-byte limit")));
            }
            let mut bytes = Vec::new();
            let n = read_counted(stream.reader.take(cap + 1), &mut bytes, &self.received)
                .map_err(|e| self.io_failure(&e, bytes.len() as u64, stream.total))?;
            if n > cap {
                return Err(Failure::fatal(format!("more than the {cap}-byte limit")));
            }
            Ok(bytes)
        })
    }

    /// Downloads `object` into `dir/<sha256>` and returns a path naming it inside `dir` (see
    /// [`Dir::fd_path`]), resuming `dir/<sha256>.part` if an earlier attempt left one. A complete file
    /// already there is checked and reused. Every name is opened relative to `dir` without following
    /// a symlink: a link or special file where a download belongs is refused. `progress` is told how
    /// many of the object's bytes are present locally as they arrive (it may go back to 0 when a
    /// server ignores the range and the download restarts).
    pub fn fetch_object(&self, object: &ObjectRef, dir: &Dir, progress: &dyn Fn(u64)) -> Result<PathBuf> {
        let url = self.url(&object.path);
        let complete = object.sha256.as_str();
        let part = format!("{}.part", object.sha256);
        for name in [complete, part.as_str()] {
            // Only regular files the client wrote itself are used or resumed: a planted link would be
            // read as the piece, or appended to.
            if let Some(meta) = dir.metadata(name).map_err(|e| Error::io(dir.display_path(name), e))? {
                if meta.kind != Kind::File {
                    return Err(Error::UnsafeState {
                        path: dir.display_path(name),
                        what: format!(
                            "{} where the updater keeps a download",
                            match meta.kind {
                                Kind::Symlink => "a symbolic link",
                                other => other.describe(),
                            }
                        ),
                    });
                }
            }
        }
        match dir.open_file(complete) {
            Ok(file) => {
                if matches_open_object(file, &dir.display_path(complete), object)? {
                    progress(object.size);
                    return Ok(state::pinned_path(dir, complete));
                }
                state::remove_file(dir, complete)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(state::state_error(&dir.display_path(complete), e)),
        }
        self.with_retries(&url, || self.fetch_part(object, dir, &part, progress))?;
        let part_path = dir.display_path(&part);
        let file = dir.open_file(&part).map_err(|e| state::state_error(&part_path, e))?;
        let (sha256, len) = sha256_reader(&file).map_err(|e| Error::io(&part_path, e))?;
        if len != object.size || sha256 != object.sha256 {
            state::remove_file(dir, &part)?;
            return Err(Error::Mismatch {
                origin: url,
                what: format!(
                    "downloaded {len} bytes with SHA-256 {sha256}, but the manifest says {} bytes with SHA-256 {}; \
                     the piece was discarded",
                    object.size, object.sha256
                ),
            });
        }
        file.sync_all().map_err(|e| Error::io(&part_path, e))?;
        dir.rename(&part, dir, complete).map_err(|e| Error::io(dir.display_path(complete), e))?;
        let _ = dir.sync();
        Ok(state::pinned_path(dir, complete))
    }

    /// One attempt at completing `dir/part`: requests what is missing and appends it.
    // Over 80 lines: one resume attempt read top to bottom (what we hold, what the server answers,
    // the copy, the refusal of extra bytes); each step decides what the `.part` file keeps.
    fn fetch_part(&self, object: &ObjectRef, dir: &Dir, part: &str, progress: &dyn Fn(u64)) -> Result<(), Failure> {
        let part_path = dir.display_path(part);
        let io_fatal = |e: std::io::Error| Failure::fatal(format!("{}: {e}", part_path.display()));
        // Opened (created if missing) once, without following a link: every byte goes to this file.
        let mut file = dir.open_file_append(part, 0o600).map_err(io_fatal)?;
        let mut have = file.metadata().map_err(io_fatal)?.len();
        if have > object.size {
            // Not ours to keep: longer than the piece can be.
            have = 0;
        }
        progress(have);
        if have == object.size && have > 0 {
            return Ok(());
        }
        let stream = match self.open(&object.path, have, Freshness::Cached) {
            // The server has fewer bytes than we already hold: start over.
            Err(failure) if failure.unsatisfiable && have > 0 => {
                have = 0;
                progress(0);
                self.open(&object.path, 0, Freshness::Cached)?
            }
            other => other?,
        };
        if let Some(total) = stream.total.filter(|&t| t != object.size) {
            drop(file);
            let _ = dir.remove_file(part);
            return Err(Failure::fatal(format!(
                "the server has {total} bytes, but the manifest says {}: wrong file, refused",
                object.size
            )));
        }
        if stream.start != have {
            // A 200 to a range request: the body starts at 0.
            have = 0;
            progress(0);
        }
        // Keep exactly the bytes the response continues (none when starting over).
        if file.metadata().map_err(io_fatal)?.len() != have {
            file.set_len(have).map_err(io_fatal)?;
        }
        let wanted = object.size - have;
        let mut reader = stream.reader;
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0u64;
        while got < wanted {
            let room = usize::try_from(wanted - got).unwrap_or(usize::MAX).min(buf.len());
            let n = match reader.read(&mut buf[..room]) {
                Ok(0) => {
                    return Err(Failure::transient(format!(
                        "connection closed after {} of {} bytes",
                        have + got,
                        object.size
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_failure(&e, have + got, Some(object.size))),
            };
            self.received.fetch_add(n as u64, Ordering::Relaxed);
            file.write_all(&buf[..n]).map_err(io_fatal)?;
            got += n as u64;
            progress(have + got);
        }
        // Anything past the manifest's size is refused, not stored.
        let mut extra = [0u8; 1];
        loop {
            match reader.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => {
                    drop(file);
                    let _ = dir.remove_file(part);
                    return Err(Failure::fatal(format!(
                        "the response is longer than the manifest's {} bytes: wrong file, refused",
                        object.size
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // The bytes we need arrived; a broken connection after them does not matter.
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Opens repository path `path` from byte `from` on.
    fn open(&self, path: &str, from: u64, freshness: Freshness) -> Result<Stream, Failure> {
        match &self.location {
            Location::Dir(dir) => {
                let full = dir.join(path);
                let mut file = File::open(&full).map_err(|e| Failure::fatal(e.to_string()))?;
                let total = file.metadata().map_err(|e| Failure::fatal(e.to_string()))?.len();
                if from > total {
                    return Err(Failure::unsatisfiable(format!("the file has only {total} bytes")));
                }
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))
                    .map_err(|e| Failure::fatal(e.to_string()))?;
                Ok(Stream { reader: Box::new(file), start: from, total: Some(total) })
            }
            Location::Http(base) => {
                let url = format!("{base}{path}");
                let agent = self.agent.as_ref().ok_or_else(|| Failure::fatal("no HTTP agent"))?;
                let mut request = agent.get(&url);
                if from > 0 {
                    request = request.header("Range", format!("bytes={from}-"));
                }
                if freshness == Freshness::Revalidate {
                    request = request.header("Cache-Control", "no-cache");
                }
                let response = request.call().map_err(|e| ureq_failure(e, from))?;
                let status = response.status().as_u16();
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
                match status {
                    200 => Ok(Stream {
                        reader: Box::new(response.into_body().into_reader()),
                        start: 0,
                        total: content_length,
                    }),
                    206 => {
                        let range = header("content-range").unwrap_or_default();
                        let (start, total) = parse_content_range(&range)
                            .ok_or_else(|| Failure::fatal(format!("206 with a malformed Content-Range {range:?}")))?;
                        if start != from {
                            return Err(Failure::fatal(format!(
                                "asked for bytes from {from}, the server sent a range starting at {start}"
                            )));
                        }
                        Ok(Stream { reader: Box::new(response.into_body().into_reader()), start, total })
                    }
                    416 => Err(Failure::unsatisfiable(format!(
                        "HTTP 416 range not satisfiable (asked for bytes from {from})"
                    ))),
                    _ => Err(status_failure(status)),
                }
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out.
    fn with_retries<T>(&self, url: &str, attempt: impl FnMut() -> Result<T, Failure>) -> Result<T> {
        self.retrying(attempt).map_err(|(_, what)| Error::Fetch { url: url.to_owned(), what })
    }

    /// [`Fetcher::with_retries`]'s loop: on failure, the last attempt's failure and its message with
    /// the number of attempts made.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T, (Failure, String)> {
        let mut pause = self.options.backoff;
        let mut n = 1;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) if failure.transient && n < self.options.attempts => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(4));
                    n += 1;
                }
                Err(failure) => {
                    let tries =
                        if failure.transient { format!(" (gave up after {n} attempts)") } else { String::new() };
                    let what = format!("{}{tries}", failure.what);
                    return Err((failure, what));
                }
            }
        }
    }

    /// Bytes `[offset, offset + len)` of the repository file `path`, whose whole length the manifest
    /// gives as `total`. Over HTTP one `Range: bytes=A-B` request: the answer must be a 206 whose
    /// `Content-Range` is exactly that range of a `total`-byte file, and no more than `len` bytes are
    /// read. A 200 (a server ignoring ranges) is accepted only for a file of at most
    /// [`MAX_WHOLE_FOR_RANGE`] bytes, which is then read whole; a larger one is refused rather than
    /// downloaded. From a directory: a positioned read. Transient failures are retried; when the
    /// server stayed silent for the timeout on the last attempt the error is [`Error::Timeout`].
    pub fn fetch_range(&self, path: &str, offset: u64, len: u64, total: u64) -> Result<Vec<u8>> {
        let url = self.url(path);
        let end = offset.checked_add(len).filter(|&end| end <= total && len > 0);
        if end.is_none() || len > MAX_RANGE_REQUEST {
            return Err(Error::BadArgument(format!(
                "{url}: bytes {offset}+{len} are not a range of at most {MAX_RANGE_REQUEST} bytes inside the {total}-byte file"
            )));
        }
        self.retrying(|| self.range_attempt(path, offset, len, total)).map_err(|(failure, what)| {
            let what = format!("bytes {offset}..{}: {what}", offset + len);
            if failure.timed_out {
                Error::Timeout { url: url.clone(), what }
            } else {
                Error::Fetch { url: url.clone(), what }
            }
        })
    }

    /// One attempt of [`Fetcher::fetch_range`].
    fn range_attempt(&self, path: &str, offset: u64, len: u64, total: u64) -> Result<Vec<u8>, Failure> {
        self.range_attempts.fetch_add(1, Ordering::Relaxed);
        let mut out = vec![0u8; len as usize];
        match &self.location {
            Location::Dir(dir) => {
                let file = mf_format::fs::open_regular(dir.join(path)).map_err(|e| Failure::fatal(e.to_string()))?;
                let size = file.metadata().map_err(|e| Failure::fatal(e.to_string()))?.len();
                if size != total {
                    return Err(Failure::fatal(format!("the file has {size} bytes, the manifest says {total}")));
                }
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut out, offset)
                    .map_err(|e| Failure::fatal(e.to_string()))?;
                self.received.fetch_add(len, Ordering::Relaxed);
                Ok(out)
            }
            Location::Http(base) => self.http_range(&format!("{base}{path}"), offset, total, out),
        }
    }

    /// [`Fetcher::range_attempt`] over HTTP: fills `out` with the bytes from `offset` of `url`.
    fn http_range(&self, url: &str, offset: u64, total: u64, mut out: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let len = out.len() as u64;
        let agent = self.agent.as_ref().ok_or_else(|| Failure::fatal("no HTTP agent"))?;
        let last = offset + len - 1;
        let response = agent
            .get(url)
            .header("Range", format!("bytes={offset}-{last}"))
            .call()
            .map_err(|e| ureq_failure(e, offset))?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Bytes to skip before `offset`: a 206 starts there; a 200 is the whole file.
        let (skip, whole) = match status {
            206 => {
                let range = header("content-range").unwrap_or_default();
                if parse_full_content_range(&range) != Some((offset, last, total)) {
                    return Err(Failure::fatal(format!(
                        "asked for bytes {offset}-{last} of a {total}-byte file, the server sent Content-Range {range:?}: wrong file or range, refused"
                    )));
                }
                (0, false)
            }
            200 if total <= MAX_WHOLE_FOR_RANGE => (offset, true),
            200 => {
                return Err(Failure::fatal(format!(
                    "the server ignores Range requests (200 instead of 206); the {total}-byte file is not downloaded whole for a part of it"
                )))
            }
            416 => return Err(Failure::fatal(format!("HTTP 416: the server has no bytes {offset}-{last}"))),
            _ => return Err(status_failure(status)),
        };
        let mut reader = response.into_body().into_reader();
        if skip > 0 {
            let skipped = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())
                .map_err(|e| self.io_failure(&e, 0, Some(total)))?;
            if skipped < skip {
                return Err(Failure::transient(format!("connection closed after {skipped} bytes")));
            }
        }
        let mut got = 0usize;
        while got < out.len() {
            match reader.read(&mut out[got..]) {
                Ok(0) => {
                    return Err(Failure::transient(format!(
                        "connection closed after {got} of the {len} bytes asked for"
                    )))
                }
                Ok(n) => {
                    got += n;
                    self.received.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_failure(&e, got as u64, Some(len))),
            }
        }
        // The body must end here; reading its end also hands the connection back to the
        // agent's pool for the next request (keep-alive).
        if !whole && matches!(reader.read(&mut [0u8; 1]), Ok(n) if n > 0) {
            return Err(Failure::fatal(format!("the response is longer than the {len} bytes asked for: refused")));
        }
        Ok(out)
    }
}

/// The failure of a response whose status carries no content: transient when trying again may
/// help (timeouts, rate limits, server errors), fatal otherwise (404 and the rest).
fn status_failure(status: u16) -> Failure {
    match status {
        404 => Failure::fatal("HTTP 404 not found"),
        408 | 429 | 500..=599 => Failure::transient(format!("HTTP {status}")),
        _ => Failure::fatal(format!("HTTP {status}")),
    }
}

/// The longest range [`Fetcher::fetch_range`] asks for in one request.
pub const MAX_RANGE_REQUEST: u64 = 16 << 20;

/// A server that answers a range request with the whole file (200) is tolerated for files up to
/// this size; a larger one is refused rather than downloaded for a part of it.
pub const MAX_WHOLE_FOR_RANGE: u64 = 1 << 20;

/// `bytes START-END/TOTAL` with all three numbers → (START, END, TOTAL).
fn parse_full_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// Reads everything from `reader` into `out`, counting bytes into `counter`.
fn read_counted(mut reader: impl Read, out: &mut Vec<u8>, counter: &AtomicU64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        out.extend_from_slice(&buf[..n]);
        total += n as u64;
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL if given).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total.trim() == "*" { None } else { Some(total.trim().parse().ok()?) };
    Some((start.trim().parse().ok()?, total))
}

fn ureq_failure(error: ureq::Error, from: u64) -> Failure {
    let at = if from > 0 { format!(" (resuming at byte {from})") } else { String::new() };
    match error {
        ureq::Error::Timeout(kind) => Failure::timeout(format!("timed out ({kind}){at}")),
        ureq::Error::Io(e) => Failure::transient(format!("{e}{at}")),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Protocol(_) => {
            Failure::transient(format!("{error}{at}"))
        }
        other => Failure::fatal(other.to_string()),
    }
}

impl Fetcher {
    /// A read error in the middle of a body: transient (the next attempt resumes).
    fn io_failure(&self, error: &std::io::Error, have: u64, total: Option<u64>) -> Failure {
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        let inner = error.get_ref().and_then(|e| e.downcast_ref::<ureq::Error>());
        let stalled = format!("no data for {} s (timeout)", self.options.timeout.as_secs_f64());
        let timed_out = matches!(inner, Some(ureq::Error::Timeout(_))) || error.kind() == std::io::ErrorKind::TimedOut;
        let what = match inner {
            _ if timed_out => stalled,
            Some(inner) => inner.to_string(),
            None => error.to_string(),
        };
        Failure { timed_out, ..Failure::transient(format!("{what} after {have}{of} bytes")) }
    }
}

/// True when the open file (at `path`, for messages) has `object`'s size and SHA-256.
fn matches_open_object(file: File, path: &Path, object: &ObjectRef) -> Result<bool> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len != object.size {
        return Ok(false);
    }
    Ok(sha256_reader(file).map_err(|e| Error::io(path, e))?.0 == object.sha256)
}

/// Makes renames in `dir` durable, best effort: [`mf_format::fs::sync_dir`] with its error dropped,
/// for callers whose rename already happened and who have nothing left to undo if the fsync fails.
pub fn sync_dir(dir: &Path) {
    let _ = mf_format::fs::sync_dir(dir);
}

/// Whether a cache between client and repository may answer from a stored copy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Content-addressed objects never change: any cached copy is right.
    Cached,
    /// The manifest is rewritten in place: a stale CDN copy would look like a rollback, so caches
    /// are asked to revalidate with the origin.
    Revalidate,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_hex;

    fn object(bytes: &[u8], path: &str) -> ObjectRef {
        ObjectRef { path: path.into(), size: bytes.len() as u64, sha256: sha256_hex(bytes) }
    }

    #[test]
    fn full_content_ranges_parse_and_directory_ranges_are_checked() {
        assert_eq!(parse_full_content_range("bytes 100-199/200"), Some((100, 199, 200)));
        assert_eq!(parse_full_content_range("bytes 100-199/*"), None);
        assert_eq!(parse_full_content_range("bytes 100-/200"), None);
        let repo = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(repo.path().join("a.mf"), &data).unwrap();
        let fetcher = Fetcher::new(repo.path().to_str().unwrap(), FetchOptions::default()).unwrap();
        assert_eq!(fetcher.fetch_range("a.mf", 100, 50, 10_000).unwrap(), &data[100..150]);
        assert_eq!(fetcher.received(), 50);
        // Outside the file, empty, too long for one request, or a file of another size: refused.
        assert!(fetcher.fetch_range("a.mf", 9_990, 11, 10_000).is_err());
        assert!(fetcher.fetch_range("a.mf", 0, 0, 10_000).is_err());
        assert!(fetcher.fetch_range("a.mf", 0, MAX_RANGE_REQUEST + 1, u64::MAX).is_err());
        let err = fetcher.fetch_range("a.mf", 0, 10, 20_000).unwrap_err().to_string();
        assert!(err.contains("the manifest says 20000") && err.contains("a.mf"), "{err}");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }

    #[test]
    fn directory_pieces_resume_and_are_checked() {
        let repo = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::create_dir_all(repo.path().join("full")).unwrap();
        std::fs::write(repo.path().join("full/a.mf"), &data).unwrap();
        let fetcher = Fetcher::new(repo.path().to_str().unwrap(), FetchOptions::default()).unwrap();
        let dir = Dir::open(downloads.path()).unwrap();
        let obj = object(&data, "full/a.mf");
        // A partial download from an earlier run is continued, not restarted.
        std::fs::write(downloads.path().join(format!("{}.part", obj.sha256)), &data[..40_000]).unwrap();
        let path = fetcher.fetch_object(&obj, &dir, &|_| {}).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(fetcher.received(), 60_000);
        // A .part longer than the piece can be is not trusted: the download starts over.
        std::fs::remove_file(&path).unwrap();
        let mut junk = data.clone();
        junk.extend_from_slice(b"trailing junk");
        std::fs::write(downloads.path().join(format!("{}.part", obj.sha256)), &junk).unwrap();
        let path = fetcher.fetch_object(&obj, &dir, &|_| {}).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(fetcher.received(), 160_000);
        // A complete piece already downloaded is reused without fetching.
        fetcher.fetch_object(&obj, &dir, &|_| {}).unwrap();
        assert_eq!(fetcher.received(), 160_000);
        // A longer file in the repository is refused and leaves nothing behind.
        let short = object(&data[..1000], "full/a.mf");
        let err = fetcher.fetch_object(&short, &dir, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("wrong file"), "{err}");
        assert!(!downloads.path().join(&short.sha256).exists());
        // A wrong hash deletes the piece.
        let mut bad = obj.clone();
        bad.sha256 = sha256_hex(b"other");
        let err = fetcher.fetch_object(&bad, &dir, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("discarded"), "{err}");
        assert!(!downloads.path().join(format!("{}.part", bad.sha256)).exists());
        // Missing files are not retried forever and name the path.
        let err = fetcher.fetch_small("nope.json", 100).unwrap_err().to_string();
        assert!(err.contains("nope.json"), "{err}");
        assert!(fetcher.fetch_small("full/a.mf", 10).unwrap_err().to_string().contains("limit"));
    }
}
