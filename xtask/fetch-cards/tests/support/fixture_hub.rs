//! A local stand-in for the Hub on 127.0.0.1, answering the paths the `hf-hub` client uses:
//!
//! - `GET /api/models/{owner}/{name}/revision/{rev}`: repo info with the commit `sha`;
//! - `GET /api/models/{owner}/{name}/tree/{rev}?recursive=true`: the file listing with sizes;
//! - `HEAD|GET /{owner}/{name}/resolve/{rev}/{path}`: files, with `ETag`, `X-Repo-Commit`,
//!   `Content-Length`, and `Range: bytes=a-b` answered with 206 + `Content-Range`.
//!
//! Files may be sparse (real leading bytes, zeros after), so a fixture can describe
//! gigabytes of weights with only its header in memory. Faults (status codes, truncated bodies,
//! ignored ranges, stalls) are injected per path, and every request is logged.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tiny_http::{Header, Method, Response, Server, StatusCode};

/// A file's contents: `prefix` then zeros up to `size`.
#[derive(Clone, Debug)]
pub struct Body {
    pub prefix: Arc<Vec<u8>>,
    pub size: u64,
}

impl Body {
    pub fn bytes(b: impl Into<Vec<u8>>) -> Body {
        let b = b.into();
        Body {
            size: b.len() as u64,
            prefix: Arc::new(b),
        }
    }
    pub fn sparse(prefix: Vec<u8>, size: u64) -> Body {
        assert!(prefix.len() as u64 <= size);
        Body {
            prefix: Arc::new(prefix),
            size,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct FixtureRepo {
    pub id: String,
    pub sha: String,
    pub files: BTreeMap<String, Body>,
}

impl FixtureRepo {
    pub fn new(id: &str) -> FixtureRepo {
        // A stable fake commit per repo id.
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
    pub fn file(mut self, path: &str, body: Body) -> Self {
        self.files.insert(path.to_owned(), body);
        self
    }
    pub fn json(self, path: &str, v: &serde_json::Value) -> Self {
        self.file(path, Body::bytes(serde_json::to_vec_pretty(v).unwrap()))
    }
}

/// What to do to requests whose path contains `path`.
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

pub struct FixtureHub {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
    release: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FixtureHub {
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
        let (s, st, rel) = (server.clone(), state.clone(), release.clone());
        let thread = std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let (st, rel) = (st.clone(), rel.clone());
                std::thread::spawn(move || handle(req, &st, &rel));
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

    /// Requests currently held by a `Stall` fault.
    pub fn stalled(&self) -> usize {
        self.state.lock().unwrap().stalled
    }

    pub fn release_stalls(&self) {
        self.release.store(true, Ordering::SeqCst);
    }

    pub fn sha(&self, repo: &str) -> String {
        self.state.lock().unwrap().repos[repo].sha.clone()
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

/// Zeros after the prefix; fails after `fail_after` bytes when set (a dropped connection).
struct BodyReader {
    body: Body,
    pos: u64,
    end: u64,
    fail_after: Option<u64>,
    sent: u64,
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
        let mut want = (self.end - self.pos).min(buf.len() as u64);
        if let Some(n) = self.fail_after {
            want = want.min(n - self.sent);
        }
        let want = want as usize;
        for (i, b) in buf[..want].iter_mut().enumerate() {
            let p = self.pos as usize + i;
            *b = self.body.prefix.get(p).copied().unwrap_or(0);
        }
        self.pos += want as u64;
        self.sent += want as u64;
        Ok(want)
    }
}

fn respond_json(req: tiny_http::Request, status: u16, v: &serde_json::Value) -> (u16, u64) {
    let body = serde_json::to_vec(v).unwrap();
    let n = body.len() as u64;
    let resp = Response::from_data(body)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_chunked_threshold(usize::MAX);
    let _ = req.respond(resp);
    (status, n)
}

fn error_json(req: tiny_http::Request, status: u16, code: &str, msg: &str) -> (u16, u64) {
    let body = serde_json::json!({ "error": msg });
    let b = serde_json::to_vec(&body).unwrap();
    let n = b.len() as u64;
    let resp = Response::from_data(b)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("X-Error-Code", code))
        .with_header(header("X-Error-Message", msg))
        .with_chunked_threshold(usize::MAX);
    let _ = req.respond(resp);
    (status, n)
}

fn handle(req: tiny_http::Request, st: &Arc<Mutex<State>>, release: &AtomicBool) {
    let method = req.method().clone();
    let url = req.url().to_owned();
    let get_header = |name: &'static str| {
        req.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let range = get_header("Range");
    let authorization = get_header("Authorization");
    let path = url.split('?').next().unwrap_or("").to_owned();
    let m = if method == Method::Head {
        "HEAD"
    } else {
        "GET"
    };

    // Faults.
    let mut truncate = None;
    let mut ignore_range = false;
    let mut stall = false;
    let mut forced = None;
    {
        let mut s = st.lock().unwrap();
        for (f, count) in s.faults.iter_mut() {
            match f {
                Fault::Status {
                    path: p,
                    method: fm,
                    status,
                    times,
                } if path.contains(p.as_str())
                    && fm.is_none_or(|x| x == m)
                    && times.is_none_or(|t| *count < t) =>
                {
                    *count += 1;
                    forced = Some(*status);
                }
                Fault::Truncate { path: p, keep } if path.contains(p.as_str()) && m == "GET" => {
                    truncate = Some(*keep as u64)
                }
                Fault::IgnoreRange { path: p } if path.contains(p.as_str()) => ignore_range = true,
                Fault::Stall { path: p } if path.contains(p.as_str()) && m == "GET" => stall = true,
                _ => {}
            }
        }
    }
    let log_it = |status: u16, sent: u64| {
        st.lock().unwrap().log.push(Logged {
            method: m.to_owned(),
            url: url.clone(),
            range: range.clone(),
            authorization: authorization.clone(),
            status,
            sent,
        });
    };
    if let Some(status) = forced {
        let code = match status {
            401 | 403 => "GatedRepo",
            404 => "EntryNotFound",
            _ => "Fixture",
        };
        let (s, n) = error_json(req, status, code, "fixture fault");
        log_it(s, n);
        return;
    }

    let repos = st.lock().unwrap().repos.clone();
    let find_repo = |rest: &str| -> Option<(FixtureRepo, String)> {
        repos.iter().find_map(|(id, r)| {
            rest.strip_prefix(id.as_str())
                .and_then(|t| t.strip_prefix('/'))
                .map(|t| (r.clone(), t.to_owned()))
        })
    };

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, tail)) = find_repo(rest) else {
            let (s, n) = error_json(req, 404, "RepoNotFound", "Repository not found");
            log_it(s, n);
            return;
        };
        let (kind, rev) = tail.split_once('/').unwrap_or((tail.as_str(), ""));
        let rev = percent_decode(rev);
        if rev != "main" && rev != repo.sha {
            let (s, n) = error_json(req, 404, "RevisionNotFound", "Invalid rev id");
            log_it(s, n);
            return;
        }
        let (s, n) = match kind {
            "revision" => respond_json(
                req,
                200,
                &serde_json::json!({
                    "id": repo.id,
                    "sha": repo.sha,
                    "siblings": repo.files.keys().map(|k| serde_json::json!({"rfilename": k})).collect::<Vec<_>>(),
                }),
            ),
            "tree" => {
                let mut entries = Vec::new();
                let mut dirs = std::collections::BTreeSet::new();
                for (p, b) in &repo.files {
                    let mut d = p.as_str();
                    while let Some((parent, _)) = d.rsplit_once('/') {
                        dirs.insert(parent.to_owned());
                        d = parent;
                    }
                    entries.push(serde_json::json!({
                        "type": "file", "oid": format!("{:040x}", b.size), "size": b.size, "path": p,
                    }));
                }
                for d in dirs {
                    entries.push(serde_json::json!({"type": "directory", "oid": "0".repeat(40), "size": 0, "path": d}));
                }
                respond_json(req, 200, &serde_json::Value::Array(entries))
            }
            _ => error_json(req, 404, "NotFound", "unknown api path"),
        };
        log_it(s, n);
        return;
    }

    // /{repo}/resolve/{rev}/{file}
    let resolved = find_repo(path.trim_start_matches('/')).and_then(|(repo, tail)| {
        let t = tail.strip_prefix("resolve/")?;
        let (rev, file) = t.split_once('/')?;
        Some((repo, percent_decode(rev), percent_decode(file)))
    });
    let Some((repo, rev, file)) = resolved else {
        let (s, n) = error_json(req, 404, "RepoNotFound", "Repository not found");
        log_it(s, n);
        return;
    };
    if rev != "main" && rev != repo.sha {
        let (s, n) = error_json(req, 404, "RevisionNotFound", "Invalid rev id");
        log_it(s, n);
        return;
    }
    let Some(body) = repo.files.get(&file).cloned() else {
        let (s, n) = error_json(req, 404, "EntryNotFound", "Entry not found");
        log_it(s, n);
        return;
    };
    let size = body.size;
    let etag = format!("\"{:016x}{:016x}\"", size, body.prefix.len());
    let parsed = range.as_deref().and_then(|r| {
        let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
        let a: u64 = a.parse().ok()?;
        let b: u64 = if b.is_empty() {
            size - 1
        } else {
            b.parse().ok()?
        };
        (a <= b && a < size).then_some((a, b.min(size - 1)))
    });
    if stall && parsed.is_some() {
        st.lock().unwrap().stalled += 1;
        for _ in 0..600 {
            if release.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (status, start, end) = match parsed {
        Some((a, b)) if !ignore_range && method == Method::Get => (206, a, b + 1),
        _ => (200, 0, size),
    };
    let len = end - start;
    let reader = BodyReader {
        body,
        pos: start,
        end,
        fail_after: truncate.filter(|k| *k < len),
        sent: 0,
    };
    let mut resp = Response::new(
        StatusCode(status),
        vec![
            header("ETag", &etag),
            header("X-Repo-Commit", &repo.sha),
            header("Accept-Ranges", "bytes"),
            header("Content-Type", "application/octet-stream"),
        ],
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
    let sent = if method == Method::Head {
        0
    } else {
        truncate.map_or(len, |k| k.min(len))
    };
    let _ = req.respond(resp);
    log_it(status, sent);
}
