//! A local stand-in for the Hugging Face Hub on 127.0.0.1, for tests. It answers the paths the
//! `hf-hub` client uses:
//!
//! - `GET /api/models/{owner}/{name}/revision/{rev}`: repo info with the commit `sha`;
//! - `GET /api/models/{owner}/{name}/tree/{rev}?recursive=true`: the file listing with sizes,
//!   each file's git `oid`, and for Git-LFS files an `lfs` object
//!   (`{"oid": <sha256>, "size": <size>, "pointerSize": <len>}`) as the Hub gives it;
//! - `HEAD|GET /{owner}/{name}/resolve/{rev}/{path}`: a plain file is served directly, with
//!   `ETag` (its git oid), `X-Repo-Commit`, `Content-Length`, and `Range: bytes=a-b` answered
//!   with 206 + `Content-Range`. An LFS file answers `302 Found` with an absolute
//!   `Location: {url}/cdn/{sha256}` (the Hub's CDN redirect), `X-Repo-Commit`,
//!   `X-Linked-Etag: "<sha256>"`, `X-Linked-Size`, `ETag: "<git oid of the pointer>"` and
//!   `Content-Length: 0`;
//! - `HEAD|GET /cdn/{sha256}`: the content of an LFS file (`ETag` its sha256), with the same
//!   range handling.
//!
//! Files may be sparse (real leading bytes, zeros after), so a fixture can describe
//! gigabytes of weights with only its header in memory. Faults (status codes, truncated bodies,
//! ignored ranges, stalls, corrupted bytes) are injected per path, and every request is logged.
//!
//! Git object ids are not git's blob SHA-1 (that would need a SHA-1 dependency and hashing every
//! sparse file in full): a file's `oid` is a deterministic 40-hex digest of the content git would
//! store (the file itself, or the LFS pointer file for an LFS file), so equal contents get equal
//! oids and an LFS file's `oid` always differs from its `lfs.oid`. The LFS `sha256` is the real
//! SHA-256 of the full content, zeros included, computed on first use and cached (or declared
//! with [`Body::declared_sha256`] for sparse files too large to hash).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use tiny_http::{Header, Method, Response, Server, StatusCode};

/// A file's contents: `prefix` then zeros up to `size`, stored in git or in Git LFS.
///
/// Build one with [`Body::bytes`] / [`Body::sparse`] (plain git files, served directly) or
/// [`Body::lfs`] / [`Body::sparse_lfs`] (LFS files, served through the CDN redirect);
/// [`Body::into_lfs`] marks any body as LFS. Clones share the cached digests.
#[derive(Clone, Debug)]
pub struct Body {
    prefix: Arc<Vec<u8>>,
    size: u64,
    lfs: bool,
    sha256: Arc<OnceLock<String>>,
    oid: Arc<OnceLock<String>>,
}

impl Body {
    /// A plain (non-LFS) file with exactly these bytes.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Body {
        let b = b.into();
        let size = b.len() as u64;
        Body::sparse(b, size)
    }

    /// A plain (non-LFS) file of `size` bytes: `prefix`, then zeros.
    pub fn sparse(prefix: Vec<u8>, size: u64) -> Body {
        assert!(prefix.len() as u64 <= size, "prefix longer than the file");
        Body {
            prefix: Arc::new(prefix),
            size,
            lfs: false,
            sha256: Arc::default(),
            oid: Arc::default(),
        }
    }

    /// An LFS file with exactly these bytes.
    pub fn lfs(b: impl Into<Vec<u8>>) -> Body {
        Body::bytes(b).into_lfs()
    }

    /// An LFS file of `size` bytes: `prefix`, then zeros.
    pub fn sparse_lfs(prefix: Vec<u8>, size: u64) -> Body {
        Body::sparse(prefix, size).into_lfs()
    }

    /// The same content, stored in LFS.
    pub fn into_lfs(mut self) -> Body {
        if !self.lfs {
            self.lfs = true;
            self.oid = Arc::default();
        }
        self
    }

    /// The same content with `sha256` (64 hex) taken as its SHA-256 instead of hashing it: for
    /// sparse files too large to hash that are listed but never downloaded. Served bytes are not
    /// checked against it.
    pub fn declared_sha256(mut self, sha256: &str) -> Body {
        assert!(
            sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "a sha256 is 64 hex digits: {sha256:?}"
        );
        self.sha256 = Arc::new(OnceLock::from(sha256.to_ascii_lowercase()));
        self.oid = Arc::default();
        self
    }

    /// Whether the file is stored in LFS (listed with `lfs`, resolved through `/cdn/`).
    pub fn is_lfs(&self) -> bool {
        self.lfs
    }

    /// The leading bytes held in memory (the rest of the file is zeros).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The byte at `pos` of the full content.
    pub fn byte_at(&self, pos: u64) -> u8 {
        usize::try_from(pos)
            .ok()
            .and_then(|p| self.prefix.get(p).copied())
            .unwrap_or(0)
    }

    /// The full content, zeros included (for small files in tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.prefix.to_vec();
        v.resize(usize::try_from(self.size).expect("file fits in memory"), 0);
        v
    }

    /// SHA-256 (lowercase hex) of the full content, zeros included: the LFS oid. Computed on
    /// first call by streaming the zeros in chunks, then cached (shared by clones).
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| {
            let mut h = Sha256::new();
            h.update(self.prefix.as_slice());
            let zeros = vec![0u8; 1 << 20];
            let mut left = self.size - self.prefix.len() as u64;
            while left > 0 {
                let n = left.min(zeros.len() as u64);
                h.update(&zeros[..n as usize]);
                left -= n;
            }
            hex(&h.finalize())
        })
    }

    /// The Git-LFS pointer file git stores for this content.
    pub fn lfs_pointer(&self) -> String {
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            self.sha256(),
            self.size
        )
    }

    /// The tree entry's `oid` (40 hex): a digest of what git stores, i.e. the content of a plain
    /// file or the pointer file of an LFS file. Not git's SHA-1, but equal contents give equal
    /// oids (trailing zeros of a sparse prefix do not count) and it costs only the prefix.
    pub fn git_oid(&self) -> &str {
        self.oid.get_or_init(|| {
            if self.lfs {
                let p = self.lfs_pointer();
                fake_git_oid(p.as_bytes(), p.len() as u64)
            } else {
                fake_git_oid(&self.prefix, self.size)
            }
        })
    }
}

/// `sha256("blob {size}\0" + prefix without its trailing zeros)`, first 40 hex digits.
fn fake_git_oid(prefix: &[u8], size: u64) -> String {
    let end = prefix.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut h = Sha256::new();
    h.update(format!("blob {size}\0").as_bytes());
    h.update(&prefix[..end]);
    let mut s = hex(&h.finalize());
    s.truncate(40);
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A model repo: its id (`owner/name`), commit sha and files by path (`/`-separated).
#[derive(Clone, Debug, Default)]
pub struct FixtureRepo {
    pub id: String,
    pub sha: String,
    pub files: BTreeMap<String, Body>,
}

impl FixtureRepo {
    /// An empty repo with a stable fake commit sha derived from `id`.
    pub fn new(id: &str) -> FixtureRepo {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        FixtureRepo {
            id: id.to_owned(),
            sha: format!("{h:016x}{:016x}{:08x}", h.rotate_left(17), h as u32),
            files: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the file at `path`.
    pub fn file(mut self, path: &str, body: Body) -> Self {
        self.files.insert(path.to_owned(), body);
        self
    }

    /// Adds a plain file holding `v` as pretty JSON.
    pub fn json(self, path: &str, v: &serde_json::Value) -> Self {
        self.file(path, Body::bytes(serde_json::to_vec_pretty(v).unwrap()))
    }

    /// A repo with every file under `dir` (recursively; symlinks followed; `.git` skipped), at its
    /// path relative to `dir` with `/` separators. Files for which `lfs_if(rel_path, size)` holds are stored in
    /// LFS ([`FixtureRepo::default_lfs`] is the Hub's usual rule); file contents are read into
    /// memory.
    pub fn from_dir(
        id: &str,
        dir: impl AsRef<Path>,
        lfs_if: impl Fn(&str, u64) -> bool,
    ) -> std::io::Result<FixtureRepo> {
        fn walk(
            dir: &Path,
            rel: &str,
            out: &mut Vec<(String, std::path::PathBuf)>,
        ) -> std::io::Result<()> {
            let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().into_string().map_err(|n| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("non-UTF-8 file name {n:?} in {}", dir.display()),
                    )
                })?;
                let r = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = std::fs::metadata(e.path())?;
                if meta.is_dir() {
                    if r == ".git" {
                        continue;
                    }
                    walk(&e.path(), &r, out)?;
                } else if meta.is_file() {
                    out.push((r, e.path()));
                }
            }
            Ok(())
        }
        let mut files = Vec::new();
        walk(dir.as_ref(), "", &mut files)?;
        let mut repo = FixtureRepo::new(id);
        for (rel, path) in files {
            let body = Body::bytes(std::fs::read(&path)?);
            let body = if lfs_if(&rel, body.size()) {
                body.into_lfs()
            } else {
                body
            };
            repo.files.insert(rel, body);
        }
        Ok(repo)
    }

    /// The usual Hub rule for what goes to LFS: weight and archive formats from the default
    /// `.gitattributes` (`*.safetensors`, `*.gguf`, `*.bin`, `*.pt`, `*.onnx`, …) and any file
    /// over 10 MiB.
    pub fn default_lfs(path: &str, size: u64) -> bool {
        const EXTS: &[&str] = &[
            "safetensors",
            "gguf",
            "bin",
            "pt",
            "pth",
            "ckpt",
            "onnx",
            "h5",
            "msgpack",
            "npz",
            "npy",
            "pb",
            "tflite",
            "ot",
            "model",
            "zip",
            "gz",
            "tar",
            "zst",
            "parquet",
            "arrow",
        ];
        let ext = path.rsplit_once('.').map(|(_, e)| e);
        size > 10 << 20 || ext.is_some_and(|e| EXTS.contains(&e))
    }
}

/// What to do to requests whose path contains `path`. A `/cdn/{sha256}` request also matches
/// faults whose `path` is contained in `/{repo}/{file}` of a repo file with that content, so a
/// fault on `model.safetensors` reaches its CDN download (a fault on `/resolve/` does not); a
/// `Status` fault with `times` then counts the resolve request and the CDN request alike.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, `times` times (then normally), or always.
    Status {
        path: String,
        method: Option<&'static str>,
        status: u16,
        times: Option<usize>,
    },
    /// Announce the full length but close the connection after `keep` body bytes.
    Truncate { path: String, keep: usize },
    /// Ignore `Range` and answer 200 with the whole file.
    IgnoreRange { path: String },
    /// Hold ranged GETs until the test releases them (or for a minute).
    Stall { path: String },
    /// Send `keep` body bytes of GETs, then hold the open connection until the test releases
    /// it (or for a minute): a transfer stopped midway, e.g. while its client is killed.
    StallAfter { path: String, keep: usize },
    /// Serve every GET body with its first byte XOR 0xff, while the listing and headers still
    /// advertise the true sizes, oids and sha256.
    Corrupt { path: String },
}

impl Fault {
    /// Always answer requests of any method whose path contains `path` with `status`.
    pub fn status(path: &str, status: u16) -> Fault {
        Fault::Status {
            path: path.into(),
            method: None,
            status,
            times: None,
        }
    }
}

/// One request as the hub answered it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub url: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// Body bytes sent.
    pub sent: u64,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, FixtureRepo>,
    faults: Vec<(Fault, usize)>,
    log: Vec<Logged>,
    stalled: usize,
}

/// The running server; stops when dropped (stalled requests are released).
pub struct FixtureHub {
    /// `http://127.0.0.1:{port}`, the endpoint to give the client.
    pub url: String,
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
    release: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FixtureHub {
    /// Serves `repos` on a free port of 127.0.0.1, one thread per request.
    pub fn start(repos: Vec<FixtureRepo>) -> FixtureHub {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let url = format!(
            "http://{}",
            server.server_addr().to_ip().expect("ip address")
        );
        let state = Arc::new(Mutex::new(State {
            repos: repos.into_iter().map(|r| (r.id.clone(), r)).collect(),
            ..State::default()
        }));
        let release = Arc::new(AtomicBool::new(false));
        let (s, st, rel, u) = (server.clone(), state.clone(), release.clone(), url.clone());
        let thread = std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let (st, rel, u) = (st.clone(), rel.clone(), u.clone());
                std::thread::spawn(move || handle(req, &st, &rel, &u));
            }
        });
        FixtureHub {
            url,
            state,
            server,
            release,
            thread: Some(thread),
        }
    }

    pub fn fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push((f, 0));
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Body bytes sent over all logged requests.
    pub fn body_bytes_sent(&self) -> u64 {
        self.state.lock().unwrap().log.iter().map(|l| l.sent).sum()
    }

    /// Body bytes sent for files (resolve and CDN requests), listings and repo info excluded.
    pub fn file_bytes_sent(&self) -> u64 {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .filter(|l| !l.url.starts_with("/api/"))
            .map(|l| l.sent)
            .sum()
    }

    /// Logged requests whose URL contains `substr`.
    pub fn requests_matching(&self, substr: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.log.iter().filter(|l| l.url.contains(substr)).count()
    }

    /// Body bytes sent to requests whose URL contains `substr`.
    pub fn bytes_sent_matching(&self, substr: &str) -> u64 {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .filter(|l| l.url.contains(substr))
            .map(|l| l.sent)
            .sum()
    }

    /// Requests held by a `Stall` or `StallAfter` fault so far.
    pub fn stalled(&self) -> usize {
        self.state.lock().unwrap().stalled
    }

    pub fn release_stalls(&self) {
        self.release.store(true, Ordering::SeqCst);
    }

    /// The commit sha of `repo`. Panics on an unknown repo.
    pub fn sha(&self, repo: &str) -> String {
        self.state.lock().unwrap().repos[repo].sha.clone()
    }

    /// The file `path` of `repo`, if any (for its `sha256()`, `git_oid()` …).
    pub fn body(&self, repo: &str, path: &str) -> Option<Body> {
        let s = self.state.lock().unwrap();
        s.repos.get(repo)?.files.get(path).cloned()
    }
}

impl Drop for FixtureHub {
    fn drop(&mut self) {
        self.release_stalls();
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("valid header")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bytes `pos..end` of the body; fails after `fail_after` bytes when set (a dropped
/// connection); flips the first byte sent when `corrupt`.
struct BodyReader {
    body: Body,
    pos: u64,
    end: u64,
    fail_after: Option<u64>,
    corrupt: bool,
    sent: u64,
    hold: Option<Hold>,
}

/// Where a `StallAfter` transfer stops, and what releases it.
struct Hold {
    after: u64,
    held: bool,
    state: Arc<Mutex<State>>,
    release: Arc<AtomicBool>,
}

impl Hold {
    /// Counts the stall and waits for the release (a minute at most).
    fn wait(&mut self) {
        self.held = true;
        self.state.lock().unwrap().stalled += 1;
        for _ in 0..600 {
            if self.release.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(n) = self.fail_after
            && self.sent >= n
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "fixture: truncated",
            ));
        }
        if let Some(h) = self.hold.as_mut()
            && !h.held
            && self.sent >= h.after
        {
            h.wait();
        }
        let mut want = (self.end - self.pos).min(buf.len() as u64);
        if let Some(n) = self.fail_after {
            want = want.min(n - self.sent);
        }
        if let Some(h) = self.hold.as_ref().filter(|h| !h.held) {
            want = want.min(h.after - self.sent);
        }
        let want = want as usize;
        for (i, b) in buf[..want].iter_mut().enumerate() {
            *b = self.body.byte_at(self.pos + i as u64);
        }
        if self.corrupt && self.sent == 0 && want > 0 {
            buf[0] ^= 0xff;
        }
        self.pos += want as u64;
        self.sent += want as u64;
        Ok(want)
    }
}

/// A response ready to send, its status and the body bytes it will send.
type Answer = (tiny_http::ResponseBox, u16, u64);

fn respond_json(status: u16, v: &serde_json::Value) -> Answer {
    let body = serde_json::to_vec(v).unwrap();
    let n = body.len() as u64;
    let resp = Response::from_data(body)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_chunked_threshold(usize::MAX);
    (resp.boxed(), status, n)
}

fn error_json(status: u16, code: &str, msg: &str) -> Answer {
    let body = serde_json::json!({ "error": msg });
    let b = serde_json::to_vec(&body).unwrap();
    let n = b.len() as u64;
    let resp = Response::from_data(b)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("X-Error-Code", code))
        .with_header(header("X-Error-Message", msg))
        .with_chunked_threshold(usize::MAX);
    (resp.boxed(), status, n)
}

/// The faults that apply to one request.
#[derive(Default)]
struct Applied {
    forced: Option<u16>,
    truncate: Option<u64>,
    ignore_range: bool,
    stall: bool,
    stall_after: Option<u64>,
    corrupt: bool,
}

/// The parts of a request the hub looks at.
struct Req<'a> {
    method: &'static str,
    path: &'a str,
    range: Option<&'a str>,
}

/// Answers one request. It is logged before the response is sent, so a client that has its
/// response always finds it in the log.
fn handle(
    req: tiny_http::Request,
    st: &Arc<Mutex<State>>,
    release: &Arc<AtomicBool>,
    hub_url: &str,
) {
    let url = req.url().to_owned();
    let get_header = |name: &'static str| {
        req.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let range = get_header("Range");
    let authorization = get_header("Authorization");
    let method = if *req.method() == Method::Head {
        "HEAD"
    } else {
        "GET"
    };
    let r = Req {
        method,
        path: url.split('?').next().unwrap_or(""),
        range: range.as_deref(),
    };
    let (resp, status, sent) = answer(&r, st, release, hub_url);
    st.lock().unwrap().log.push(Logged {
        method: method.to_owned(),
        url: url.clone(),
        range: range.clone(),
        authorization,
        status,
        sent,
    });
    let _ = req.respond(resp);
}

fn answer(r: &Req, st: &Arc<Mutex<State>>, release: &Arc<AtomicBool>, hub_url: &str) -> Answer {
    let (m, path) = (r.method, r.path);
    let repos = st.lock().unwrap().repos.clone();

    // A CDN request stands for the repo files with that content: faults match those too.
    let cdn = path.strip_prefix("/cdn/").map(|sha| {
        let mut body = None;
        let mut names = Vec::new();
        for (id, r) in &repos {
            for (p, b) in &r.files {
                if b.is_lfs() && b.sha256() == sha {
                    names.push(format!("/{id}/{p}"));
                    body.get_or_insert_with(|| b.clone());
                }
            }
        }
        (body, names)
    });
    let mut targets = vec![path.to_owned()];
    if let Some((_, names)) = &cdn {
        targets.extend(names.iter().cloned());
    }
    let hit = |p: &str| targets.iter().any(|t| t.contains(p));

    let mut f = Applied::default();
    {
        let mut s = st.lock().unwrap();
        for (fault, count) in s.faults.iter_mut() {
            match fault {
                Fault::Status {
                    path: p,
                    method: fm,
                    status,
                    times,
                } if hit(p) && fm.is_none_or(|x| x == m) && times.is_none_or(|t| *count < t) => {
                    *count += 1;
                    f.forced = Some(*status);
                }
                Fault::Truncate { path: p, keep } if hit(p) && m == "GET" => {
                    f.truncate = Some(*keep as u64)
                }
                Fault::IgnoreRange { path: p } if hit(p) => f.ignore_range = true,
                Fault::Stall { path: p } if hit(p) && m == "GET" => f.stall = true,
                Fault::StallAfter { path: p, keep } if hit(p) && m == "GET" => {
                    f.stall_after = Some(*keep as u64)
                }
                Fault::Corrupt { path: p } if hit(p) && m == "GET" => f.corrupt = true,
                _ => {}
            }
        }
    }
    if let Some(status) = f.forced {
        let code = match status {
            401 | 403 => "GatedRepo",
            404 => "EntryNotFound",
            _ => "Fixture",
        };
        return error_json(status, code, "fixture fault");
    }

    if let Some((body, _)) = cdn {
        return match body {
            Some(body) => serve(r, body, &[], &f, st, release),
            None => error_json(404, "EntryNotFound", "Entry not found"),
        };
    }

    let find_repo = |rest: &str| -> Option<(FixtureRepo, String)> {
        repos.iter().find_map(|(id, r)| {
            rest.strip_prefix(id.as_str())
                .and_then(|t| t.strip_prefix('/'))
                .map(|t| (r.clone(), t.to_owned()))
        })
    };

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, tail)) = find_repo(rest) else {
            return error_json(404, "RepoNotFound", "Repository not found");
        };
        let (kind, rev) = tail.split_once('/').unwrap_or((tail.as_str(), ""));
        let rev = percent_decode(rev);
        if rev != "main" && rev != repo.sha {
            return error_json(404, "RevisionNotFound", "Invalid rev id");
        }
        return match kind {
            "revision" => respond_json(
                200,
                &serde_json::json!({
                    "id": repo.id,
                    "sha": repo.sha,
                    "siblings": repo.files.keys().map(|k| serde_json::json!({"rfilename": k})).collect::<Vec<_>>(),
                }),
            ),
            "tree" => respond_json(200, &tree(&repo)),
            _ => error_json(404, "NotFound", "unknown api path"),
        };
    }

    // /{repo}/resolve/{rev}/{file}
    let resolved = find_repo(path.trim_start_matches('/')).and_then(|(repo, tail)| {
        let t = tail.strip_prefix("resolve/")?;
        let (rev, file) = t.split_once('/')?;
        Some((repo, percent_decode(rev), percent_decode(file)))
    });
    let Some((repo, rev, file)) = resolved else {
        return error_json(404, "RepoNotFound", "Repository not found");
    };
    if rev != "main" && rev != repo.sha {
        return error_json(404, "RevisionNotFound", "Invalid rev id");
    }
    let Some(body) = repo.files.get(&file).cloned() else {
        return error_json(404, "EntryNotFound", "Entry not found");
    };
    let commit = header("X-Repo-Commit", &repo.sha);
    if body.is_lfs() {
        let resp = Response::empty(StatusCode(302))
            .with_header(header(
                "Location",
                &format!("{hub_url}/cdn/{}", body.sha256()),
            ))
            .with_header(commit)
            .with_header(header("ETag", &format!("\"{}\"", body.git_oid())))
            .with_header(header("X-Linked-Etag", &format!("\"{}\"", body.sha256())))
            .with_header(header("X-Linked-Size", &body.size().to_string()))
            .with_chunked_threshold(usize::MAX);
        return (resp.boxed(), 302, 0);
    }
    serve(r, body, &[commit], &f, st, release)
}

/// The recursive tree listing: files (with `lfs` for LFS files), then their directories.
fn tree(repo: &FixtureRepo) -> serde_json::Value {
    let mut entries = Vec::new();
    let mut dirs = BTreeSet::new();
    for (p, b) in &repo.files {
        let mut d = p.as_str();
        while let Some((parent, _)) = d.rsplit_once('/') {
            dirs.insert(parent.to_owned());
            d = parent;
        }
        let mut e = serde_json::json!({
            "type": "file", "oid": b.git_oid(), "size": b.size(), "path": p,
        });
        if b.is_lfs() {
            e["lfs"] = serde_json::json!({
                "oid": b.sha256(), "size": b.size(), "pointerSize": b.lfs_pointer().len(),
            });
        }
        entries.push(e);
    }
    for d in dirs {
        entries.push(
            serde_json::json!({"type": "directory", "oid": "0".repeat(40), "size": 0, "path": d}),
        );
    }
    serde_json::Value::Array(entries)
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` within a file of `size` bytes, as `(first, last)`.
fn parse_range(r: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = r.trim().strip_prefix("bytes=")?.split_once('-')?;
    if size == 0 {
        return None;
    }
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return (n > 0).then(|| (size - n.min(size), size - 1));
    }
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        size - 1
    } else {
        b.parse().ok()?
    };
    (a <= b && a < size).then_some((a, b.min(size - 1)))
}

/// Serves `body` directly (200, or 206 for a range), applying the faults.
fn serve(
    r: &Req,
    body: Body,
    extra: &[Header],
    f: &Applied,
    st: &Arc<Mutex<State>>,
    release: &Arc<AtomicBool>,
) -> Answer {
    let size = body.size();
    let etag = if body.is_lfs() {
        body.sha256().to_owned()
    } else {
        body.git_oid().to_owned()
    };
    let parsed = r.range.and_then(|r| parse_range(r, size));
    if f.stall && parsed.is_some() {
        Hold {
            after: 0,
            held: false,
            state: Arc::clone(st),
            release: Arc::clone(release),
        }
        .wait();
    }
    let get = r.method == "GET";
    let (status, start, end) = match parsed {
        Some((a, b)) if !f.ignore_range && get => (206, a, b + 1),
        _ => (200, 0, size),
    };
    let len = end - start;
    let reader = BodyReader {
        body,
        pos: start,
        end,
        fail_after: f.truncate.filter(|k| *k < len),
        corrupt: f.corrupt,
        sent: 0,
        hold: f.stall_after.filter(|k| *k < len).map(|after| Hold {
            after,
            held: false,
            state: Arc::clone(st),
            release: Arc::clone(release),
        }),
    };
    let mut headers = vec![
        header("ETag", &format!("\"{etag}\"")),
        header("Accept-Ranges", "bytes"),
        header("Content-Type", "application/octet-stream"),
    ];
    headers.extend_from_slice(extra);
    let mut resp = Response::new(
        StatusCode(status),
        headers,
        reader,
        Some(len as usize),
        None,
    )
    .with_chunked_threshold(usize::MAX);
    if status == 206 {
        resp.add_header(header(
            "Content-Range",
            &format!("bytes {start}-{}/{size}", end - 1),
        ));
    }
    let sent = if get {
        f.truncate.map_or(len, |k| k.min(len))
    } else {
        0
    };
    (resp.boxed(), status, sent)
}
