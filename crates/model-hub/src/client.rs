//! [`HubClient`]: the workspace's one connection to the Hub, configured once from
//! [`HubOptions`] (or the `HF_*` variables) with timeouts on every request.
//!
//! The protocol is `hf-hub`'s (repo info, ranged and Xet-backed file streams, retries), so
//! `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME` / `HF_HUB_CACHE` and `HF_HUB_OFFLINE` mean what they mean
//! for every other Hub tool. The one request made here directly is the tree listing: hf-hub
//! 1.0 reads an LFS file's hash from a `sha256` field, while the Hub's tree API names it `oid`,
//! and the download check needs that hash.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hf_hub::{HFClient, HFRepository, RepoTypeModel};
use serde::Deserialize;

use crate::error::HubError;

/// How to reach the Hub. `None` fields come from the environment, as every Hub tool reads it.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Hub base URL; `None` = `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Hub cache folder; `None` = `HF_HUB_CACHE`, else `$HF_HOME/hub`, else the default.
    pub cache_dir: Option<PathBuf>,
    /// Token; `None` = `HF_TOKEN`, else `HF_TOKEN_PATH`, else the token file
    /// `huggingface-cli login` wrote. Never printed.
    pub token: Option<String>,
    /// Use only the cache; `None` = `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Retries after a 408/429/5xx answer or a dropped connection, with exponential backoff.
    pub retries: usize,
    /// First backoff delay; each retry doubles it.
    pub retry_base_delay: Duration,
    /// Connecting longer than this fails.
    pub connect_timeout: Duration,
    /// A read that waits longer than this fails (a stalled server must not hang the caller).
    pub read_timeout: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            endpoint: None,
            cache_dir: None,
            token: None,
            offline: None,
            retries: 4,
            retry_base_delay: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A variable set to 1/true/yes/on.
fn env_truthy(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The token as the Hub tools resolve it: `HF_TOKEN`, the file `HF_TOKEN_PATH` names, or the
/// token file under `HF_HOME` (none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set).
fn implicit_token() -> Option<String> {
    if std::env::var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_ok_and(|v| !v.is_empty()) {
        return None;
    }
    if let Ok(t) = std::env::var("HF_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_owned());
    }
    let file = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_hub::hf_home().join("token"));
    std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// One file of a repository at a commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepoFile {
    /// Path in the repository, `/`-separated.
    pub path: String,
    /// Size in bytes (of the content, not of an LFS pointer).
    pub size: u64,
    /// The git object id (the blob's name in the cache for files outside LFS).
    #[serde(default)]
    pub oid: String,
    /// sha256 of the content, for files stored in LFS (their blob name in the cache).
    #[serde(default)]
    pub lfs_sha256: Option<String>,
}

impl RepoFile {
    /// The file's blob name in the Hub cache: the sha256 for LFS files, else the git oid
    /// (what the Hub's ETag says, as the Python client names blobs).
    pub fn blob_name(&self) -> &str {
        self.lfs_sha256.as_deref().unwrap_or(&self.oid)
    }
}

struct Inner {
    hf: HFClient,
    /// The same timeouts and token as `hf`, for the tree listing.
    http: reqwest::Client,
    token: Option<String>,
    offline: bool,
    retries: usize,
    retry_base_delay: Duration,
}

/// The Hub, configured once; cheap to clone and shared across threads and tasks.
#[derive(Clone)]
pub struct HubClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("endpoint", &self.endpoint())
            .field("cache_dir", &self.cache_dir())
            .field("offline", &self.inner.offline)
            .field("token", &self.inner.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl HubClient {
    /// A client from the `HF_*` variables.
    pub fn from_env() -> Result<HubClient, HubError> {
        HubClient::new(&HubOptions::default())
    }

    /// A client for `opts`.
    pub fn new(opts: &HubOptions) -> Result<HubClient, HubError> {
        let ua = format!("hf-hub/1.0; model-hub/{}", env!("CARGO_PKG_VERSION"));
        let http = reqwest::Client::builder()
            .user_agent(ua)
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .build()
            .map_err(|e| HubError::Setup(format!("cannot set up the HTTP client: {e}")))?;
        let token = opts.token.clone().or_else(implicit_token);
        let mut b = HFClient::builder()
            .client(http.clone())
            .retry_max_attempts(opts.retries)
            .retry_base_delay(opts.retry_base_delay);
        if let Some(e) = &opts.endpoint {
            b = b.endpoint(e.clone());
        }
        if let Some(c) = &opts.cache_dir {
            b = b.cache_dir(c.clone());
        }
        if let Some(t) = &token {
            b = b.token(t.clone());
        }
        let hf = b.build().map_err(|e| {
            HubError::Setup(format!(
                "cannot set up the Hub client (check HF_ENDPOINT): {e}"
            ))
        })?;
        Ok(HubClient {
            inner: Arc::new(Inner {
                hf,
                http,
                token,
                offline: opts.offline.unwrap_or_else(|| env_truthy("HF_HUB_OFFLINE")),
                retries: opts.retries,
                retry_base_delay: opts.retry_base_delay,
            }),
        })
    }

    /// The Hub's base URL.
    pub fn endpoint(&self) -> &str {
        self.inner.hf.endpoint()
    }

    /// The hub cache folder.
    pub fn cache_dir(&self) -> &Path {
        self.inner.hf.cache_dir()
    }

    /// Whether only the cache may be used (`HF_HUB_OFFLINE` or [`HubOptions::offline`]).
    pub fn offline(&self) -> bool {
        self.inner.offline
    }

    /// Attempts per request (first try and retries).
    pub fn attempts(&self) -> usize {
        self.inner.retries + 1
    }

    fn repo(&self, repo: &str) -> HFRepository<RepoTypeModel> {
        let (owner, name) = hf_hub::split_id(repo);
        self.inner.hf.model(owner, name)
    }

    /// Resolves `revision` (branch, tag or sha) to a commit sha on the Hub. An unreachable
    /// Hub is [`HubError::Offline`], so that a caller may fall back to the cache.
    pub async fn resolve(&self, repo: &str, revision: &str) -> Result<String, HubError> {
        let info = self
            .repo(repo)
            .info()
            .revision(revision.to_owned())
            .send()
            .await
            .map_err(|e| {
                if HubError::is_unreachable(&e) {
                    HubError::Offline {
                        repo: repo.to_owned(),
                        cause: format!("the Hub is unreachable: {e}"),
                        missing: format!("commit for revision `{revision}`"),
                    }
                } else {
                    HubError::from_hub(e, repo, None, self.attempts())
                }
            })?;
        info.sha
            .filter(|s| is_commit(s))
            .ok_or_else(|| HubError::Protocol {
                repo: repo.to_owned(),
                detail: format!("the Hub's repo info for revision `{revision}` has no commit sha"),
            })
    }

    /// Every file of `repo` at commit `sha`, with sizes and LFS hashes, sorted by path.
    pub async fn tree(&self, repo: &str, sha: &str) -> Result<Vec<RepoFile>, HubError> {
        #[derive(Deserialize)]
        struct Lfs {
            oid: String,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "type")]
            kind: String,
            path: String,
            #[serde(default)]
            size: u64,
            #[serde(default)]
            oid: String,
            lfs: Option<Lfs>,
        }
        let mut url = format!(
            "{}/api/models/{repo}/tree/{sha}?recursive=true",
            self.endpoint().trim_end_matches('/')
        );
        let mut files = Vec::new();
        loop {
            let resp = self.get_with_retries(repo, sha, &url).await?;
            let next = next_link(resp.headers());
            let entries: Vec<Entry> = resp.json().await.map_err(|e| HubError::Protocol {
                repo: repo.to_owned(),
                detail: format!("the Hub's file listing at {sha} is not what it should be ({e})"),
            })?;
            files.extend(
                entries
                    .into_iter()
                    .filter(|e| e.kind == "file")
                    .map(|e| RepoFile {
                        path: e.path,
                        size: e.size,
                        oid: e.oid,
                        lfs_sha256: e.lfs.map(|l| l.oid.to_ascii_lowercase()),
                    }),
            );
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// GET with the token, retrying 408/429/5xx answers and dropped connections.
    async fn get_with_retries(
        &self,
        repo: &str,
        revision: &str,
        url: &str,
    ) -> Result<reqwest::Response, HubError> {
        let mut delay = self.inner.retry_base_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.inner.http.get(url);
            if let Some(t) = &self.inner.token {
                req = req.bearer_auth(t);
            }
            let last = attempt > self.inner.retries;
            match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry = matches!(status, 408 | 429 | 500..=599);
                    if !retry || last {
                        let code = resp
                            .headers()
                            .get("x-error-code")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        return Err(HubError::from_status(
                            status,
                            code.as_deref(),
                            repo,
                            revision,
                            attempt,
                        ));
                    }
                }
                Err(e) if e.is_connect() && (last || attempt == 1) => {
                    // No network at all: say so at once, the caller may fall back to the cache.
                    return Err(HubError::Offline {
                        repo: repo.to_owned(),
                        cause: format!("the Hub is unreachable: {e}"),
                        missing: format!("file listing at {revision}"),
                    });
                }
                Err(e) if last => {
                    return Err(HubError::Protocol {
                        repo: repo.to_owned(),
                        detail: format!("the file listing failed after {attempt} attempts: {e}"),
                    });
                }
                Err(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }

    /// Streams `path` at `sha` (the byte `range` of it when given): the announced length and
    /// the body. Follows the Hub's CDN redirects and reads Xet-backed files through hf-hub.
    pub async fn stream(
        &self,
        repo: &str,
        sha: &str,
        path: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<(Option<u64>, hf_hub::repository::download::HFByteStream), HubError> {
        self.repo(repo)
            .download_file_stream()
            .filename(path.to_owned())
            .revision(sha.to_owned())
            .maybe_range(range)
            .send()
            .await
            .map_err(|e| self.read_error(e, repo, path))
    }

    /// Reads bytes `range` of `path` at `sha` whole, refusing a server that ignores the range.
    pub async fn read_range(
        &self,
        repo: &str,
        sha: &str,
        path: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, HubError> {
        let want = range.end - range.start;
        let (announced, mut stream) = self.stream(repo, sha, path, Some(range.clone())).await?;
        if let Some(n) = announced
            && n > want
        {
            return Err(HubError::RangeIgnored {
                repo: repo.to_owned(),
                file: path.to_owned(),
                asked: want,
                announced: n,
            });
        }
        let mut out = Vec::with_capacity(want as usize);
        while (out.len() as u64) < want {
            match stream.next().await {
                Some(Ok(chunk)) => out.extend_from_slice(&chunk),
                // Once the answer has started, any failure is a body cut short.
                Some(Err(e)) => {
                    return Err(HubError::Truncated {
                        repo: repo.to_owned(),
                        file: path.to_owned(),
                        detail: format!(
                            "the transfer broke off after {} of {want} B ({e})",
                            out.len()
                        ),
                    });
                }
                None => break,
            }
        }
        if (out.len() as u64) < want {
            return Err(HubError::Truncated {
                repo: repo.to_owned(),
                file: path.to_owned(),
                detail: format!(
                    "asked for bytes {}..{} ({want} B), got {} B",
                    range.start,
                    range.end,
                    out.len()
                ),
            });
        }
        out.truncate(want as usize);
        Ok(out)
    }

    /// The error for a failed file request: unreachable Hub, HTTP status, or a body cut short.
    pub(crate) fn read_error(&self, e: hf_hub::HFError, repo: &str, path: &str) -> HubError {
        if HubError::is_unreachable(&e) {
            return HubError::Offline {
                repo: repo.to_owned(),
                cause: format!("the Hub is unreachable: {e}"),
                missing: format!("copy of `{path}`"),
            };
        }
        match HubError::from_hub(e, repo, Some(path), self.attempts()) {
            HubError::Hub { source, .. } if matches!(*source, hf_hub::HFError::Request { .. }) => {
                HubError::Truncated {
                    repo: repo.to_owned(),
                    file: path.to_owned(),
                    detail: format!("the transfer broke off ({source})"),
                }
            }
            other => other,
        }
    }
}

/// A 40-hex-digit commit sha.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `rel="next"` URL of a `Link` header (the Hub paginates long listings).
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}
