//! The Hub, as fetch-cards sees it: resolve a revision to a commit, list files with sizes,
//! download small files into the hub cache, and read byte prefixes of weight files.
//!
//! All network access goes through the `hf-hub` client, so `HF_ENDPOINT`, `HF_TOKEN` and the
//! hub cache variables (`HF_HOME`, `HF_HUB_CACHE`) mean what they mean for every other Hub
//! tool. What `hf-hub` does not cache (the commit a branch points to, the file listing, the
//! header bytes) is kept beside its cache under `<hub cache>/.fetch-cards/`, keyed by commit,
//! so a run without network works from what an earlier run fetched.

use super::error::FetchError;
use futures::StreamExt;
use hf_hub::repository::RepoTreeEntry;
use hf_hub::{HFClient, HFRepository, RepoTypeModel};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to reach the Hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Hub base URL; `None` = `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Hub cache folder; `None` = `HF_HUB_CACHE`, else `$HF_HOME/hub`, else the default.
    pub cache_dir: Option<PathBuf>,
    /// Token; `None` = `HF_TOKEN`, else the token file `huggingface-cli login` wrote.
    pub token: Option<String>,
    /// Use only the cache; `None` = `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Retries after a 408/429/5xx answer or a dropped connection, with exponential backoff.
    pub retries: usize,
    /// First backoff delay; each retry doubles it (with jitter).
    pub retry_base_delay: Duration,
    /// A read that waits longer than this fails (a stalled server must not hang the command).
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
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Bytes and requests one model cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Body bytes of byte-range reads (weight headers).
    pub range_bytes: u64,
    pub range_requests: u64,
    /// Body bytes of small files downloaded (config.json, README.md …).
    pub file_bytes: u64,
    pub files_downloaded: u64,
    /// Small files and headers served from the cache instead.
    pub cache_hits: u64,
}

impl Transfer {
    pub fn total(&self) -> u64 {
        self.range_bytes + self.file_bytes
    }
}

/// One file of a repo listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepoFile {
    pub path: String,
    pub size: u64,
}

pub struct Hub {
    rt: tokio::runtime::Runtime,
    client: HFClient,
    offline: bool,
    /// Set once a request found the Hub unreachable: the rest of the run uses the cache.
    fell_back: Cell<Option<String>>,
    attempts: usize,
}

fn env_truthy(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

impl Hub {
    pub fn new(opts: &HubOptions) -> Result<Hub, FetchError> {
        let ua = format!("hf-hub/1.0; fetch-cards/{}", env!("CARGO_PKG_VERSION"));
        let http = reqwest::Client::builder()
            .user_agent(ua)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(opts.read_timeout)
            .build()
            .map_err(|e| FetchError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        let mut b = HFClient::builder()
            .client(http)
            .retry_max_attempts(opts.retries)
            .retry_base_delay(opts.retry_base_delay);
        if let Some(e) = &opts.endpoint {
            b = b.endpoint(e.clone());
        }
        if let Some(c) = &opts.cache_dir {
            b = b.cache_dir(c.clone());
        }
        if let Some(t) = &opts.token {
            b = b.token(t.clone());
        }
        let client = b.build().map_err(|e| {
            FetchError::Usage(format!(
                "cannot set up the Hub client (check HF_ENDPOINT): {e}"
            ))
        })?;
        // hf-xet (used by hf-hub for Xet-backed files) needs a multi-threaded runtime.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| FetchError::io("tokio runtime", e))?;
        Ok(Hub {
            rt,
            client,
            offline: opts.offline.unwrap_or_else(|| env_truthy("HF_HUB_OFFLINE")),
            fell_back: Cell::new(None),
            attempts: opts.retries + 1,
        })
    }

    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    pub fn cache_dir(&self) -> &Path {
        self.client.cache_dir()
    }

    /// Whether this run reads only the cache (offline by choice or because the Hub was
    /// unreachable); the reason, if any.
    pub fn offline_reason(&self) -> Option<String> {
        if self.offline {
            return Some("HF_HUB_OFFLINE is set".into());
        }
        let r = self.fell_back.take();
        self.fell_back.set(r.clone());
        r
    }

    fn cache_only(&self) -> bool {
        self.offline || self.offline_reason().is_some()
    }

    fn repo(&self, repo: &str) -> HFRepository<RepoTypeModel> {
        let (owner, name) = hf_hub::split_id(repo);
        self.client.model(owner, name)
    }

    /// `<cache>/.fetch-cards/models--owner--name`.
    fn meta_dir(&self, repo: &str) -> PathBuf {
        self.cache_dir()
            .join(".fetch-cards")
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    fn unreachable(&self, repo: &str, e: &hf_hub::HFError, missing: &str) -> FetchError {
        FetchError::Offline {
            repo: repo.to_owned(),
            cause: e.to_string(),
            missing: missing.to_owned(),
        }
    }

    fn offline_error(&self, repo: &str, missing: &str) -> FetchError {
        FetchError::Offline {
            repo: repo.to_owned(),
            cause: self.offline_reason().unwrap_or_else(|| "offline".into()),
            missing: missing.to_owned(),
        }
    }

    /// Resolves `revision` (branch, tag or sha) to a commit sha.
    pub fn resolve(&self, repo: &str, revision: &str) -> Result<String, FetchError> {
        let ref_file = self.meta_dir(repo).join("refs").join(encode_path(revision));
        let cached = || -> Option<String> {
            if is_commit(revision) {
                return Some(revision.to_owned());
            }
            let hub_ref = self
                .cache_dir()
                .join(format!("models--{}", repo.replace('/', "--")))
                .join("refs")
                .join(revision);
            [&ref_file, &hub_ref]
                .iter()
                .find_map(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| is_commit(s))
        };
        if self.cache_only() {
            return cached().ok_or_else(|| {
                self.offline_error(repo, &format!("commit for revision `{revision}`"))
            });
        }
        let r = self.repo(repo);
        let info = self
            .rt
            .block_on(r.info().revision(revision.to_owned()).send());
        match info {
            Ok(info) => {
                let sha = info
                    .sha
                    .filter(|s| is_commit(s))
                    .ok_or_else(|| FetchError::Layout {
                        repo: repo.to_owned(),
                        detail: format!(
                            "the Hub's repo info for revision `{revision}` has no commit sha"
                        ),
                    })?;
                write_cache(&ref_file, sha.as_bytes());
                Ok(sha)
            }
            Err(e) if FetchError::is_unreachable(&e) => {
                self.fell_back
                    .set(Some(format!("the Hub is unreachable: {e}")));
                cached().ok_or_else(|| {
                    self.unreachable(repo, &e, &format!("commit for revision `{revision}`"))
                })
            }
            Err(e) => Err(FetchError::from_hub(e, repo, None, self.attempts)),
        }
    }

    /// Every file of the repo at `sha`, with sizes (recursive listing).
    pub fn tree(&self, repo: &str, sha: &str) -> Result<Vec<RepoFile>, FetchError> {
        let cache = self.meta_dir(repo).join(sha).join("tree.json");
        let cached = || -> Option<Vec<RepoFile>> {
            let text = std::fs::read(&cache).ok()?;
            serde_json::from_slice(&text).ok()
        };
        if let Some(files) = cached() {
            return Ok(files);
        }
        if self.cache_only() {
            return Err(self.offline_error(repo, &format!("file listing at {sha}")));
        }
        let r = self.repo(repo);
        let result = self.rt.block_on(async {
            let stream = r
                .list_tree()
                .revision(sha.to_owned())
                .recursive(true)
                .send()?;
            futures::pin_mut!(stream);
            let mut files = Vec::new();
            while let Some(entry) = stream.next().await {
                if let RepoTreeEntry::File { path, size, .. } = entry? {
                    files.push(RepoFile { path, size });
                }
            }
            Ok::<_, hf_hub::HFError>(files)
        });
        match result {
            Ok(mut files) => {
                files.sort_by(|a, b| a.path.cmp(&b.path));
                if let Ok(json) = serde_json::to_vec(&files) {
                    write_cache(&cache, &json);
                }
                Ok(files)
            }
            Err(e) if FetchError::is_unreachable(&e) => {
                self.fell_back
                    .set(Some(format!("the Hub is unreachable: {e}")));
                Err(self.unreachable(repo, &e, &format!("file listing at {sha}")))
            }
            Err(e) => Err(FetchError::from_hub(e, repo, None, self.attempts)),
        }
    }

    /// Downloads a small file at `sha` into the hub cache (or finds it there) and reads it.
    pub fn small_file(
        &self,
        repo: &str,
        sha: &str,
        file: &RepoFile,
        t: &mut Transfer,
    ) -> Result<Vec<u8>, FetchError> {
        let snapshot = self
            .cache_dir()
            .join(format!("models--{}", repo.replace('/', "--")))
            .join("snapshots")
            .join(sha)
            .join(&file.path);
        let was_cached = snapshot.exists();
        let r = self.repo(repo);
        let result = self.rt.block_on(
            r.download_file()
                .filename(file.path.clone())
                .revision(sha.to_owned())
                .local_files_only(self.cache_only())
                .send(),
        );
        let path = match result {
            Ok(p) => p,
            Err(hf_hub::HFError::LocalEntryNotFound { .. }) => {
                return Err(self.offline_error(repo, &format!("copy of `{}`", file.path)));
            }
            Err(e) if FetchError::is_unreachable(&e) => {
                self.fell_back
                    .set(Some(format!("the Hub is unreachable: {e}")));
                return Err(self.unreachable(repo, &e, &format!("copy of `{}`", file.path)));
            }
            Err(e) => {
                return Err(FetchError::from_hub(
                    e,
                    repo,
                    Some(&file.path),
                    self.attempts,
                ));
            }
        };
        let bytes = std::fs::read(&path).map_err(|e| FetchError::io(&path, e))?;
        if bytes.len() as u64 != file.size {
            return Err(FetchError::Truncated {
                repo: repo.to_owned(),
                file: file.path.clone(),
                detail: format!("got {} B, the listing says {} B", bytes.len(), file.size),
            });
        }
        if was_cached || self.cache_only() {
            t.cache_hits += 1;
        } else {
            t.file_bytes += bytes.len() as u64;
            t.files_downloaded += 1;
        }
        Ok(bytes)
    }

    /// A weight file whose leading bytes are read on demand.
    pub fn remote_file<'h>(&'h self, repo: &str, sha: &str, file: &RepoFile) -> RemoteFile<'h> {
        let cache = self
            .meta_dir(repo)
            .join(sha)
            .join("headers")
            .join(encode_path(&file.path));
        let prefix = std::fs::read(&cache).unwrap_or_default();
        let from_cache = !prefix.is_empty();
        RemoteFile {
            hub: self,
            repo: repo.to_owned(),
            sha: sha.to_owned(),
            path: file.path.clone(),
            size: file.size,
            cached_len: prefix.len(),
            prefix,
            cache,
            from_cache,
        }
    }

    async fn range_read(
        &self,
        repo: &str,
        sha: &str,
        path: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, FetchError> {
        let want = range.end - range.start;
        let r = self.repo(repo);
        let (announced, mut stream) = r
            .download_file_stream()
            .filename(path.to_owned())
            .revision(sha.to_owned())
            .range(range.clone())
            .send()
            .await
            .map_err(|e| self.map_read_error(e, repo, path))?;
        if let Some(n) = announced
            && n > want
        {
            return Err(FetchError::RangeIgnored {
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
                    return Err(FetchError::Truncated {
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
            return Err(FetchError::Truncated {
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
        Ok(out)
    }

    fn map_read_error(&self, e: hf_hub::HFError, repo: &str, path: &str) -> FetchError {
        if FetchError::is_unreachable(&e) {
            self.fell_back
                .set(Some(format!("the Hub is unreachable: {e}")));
            return self.unreachable(repo, &e, &format!("header of `{path}`"));
        }
        match FetchError::from_hub(e, repo, Some(path), self.attempts) {
            FetchError::Hub { source, .. }
                if matches!(*source, hf_hub::HFError::Request { .. }) =>
            {
                FetchError::Truncated {
                    repo: repo.to_owned(),
                    file: path.to_owned(),
                    detail: format!("the transfer broke off ({source})"),
                }
            }
            other => other,
        }
    }
}

/// The leading bytes of one weight file, fetched by growing byte-range reads and remembered
/// in the cache once a header has been parsed from them.
pub struct RemoteFile<'h> {
    hub: &'h Hub,
    pub repo: String,
    pub sha: String,
    pub path: String,
    /// Size from the listing.
    pub size: u64,
    prefix: Vec<u8>,
    cached_len: usize,
    cache: PathBuf,
    from_cache: bool,
}

impl RemoteFile<'_> {
    /// The first `min(len, size)` bytes, reading only what is not there yet.
    pub fn prefix(&mut self, len: u64, t: &mut Transfer) -> Result<&[u8], FetchError> {
        let len = len.min(self.size);
        let have = self.prefix.len() as u64;
        if have < len {
            if self.hub.cache_only() {
                return Err(self.hub.offline_error(
                    &self.repo,
                    &format!("header bytes of `{}` ({len} B needed)", self.path),
                ));
            }
            let bytes = self.hub.rt.block_on(self.hub.range_read(
                &self.repo,
                &self.sha,
                &self.path,
                have..len,
            ))?;
            t.range_bytes += bytes.len() as u64;
            t.range_requests += 1;
            self.prefix.extend_from_slice(&bytes);
        }
        Ok(&self.prefix[..len as usize])
    }

    /// Remembers the bytes read so far for offline runs; counts a cache hit if nothing was read.
    pub fn finish(self, t: &mut Transfer) {
        if self.from_cache && self.prefix.len() == self.cached_len {
            t.cache_hits += 1;
        } else if self.prefix.len() > self.cached_len {
            write_cache(&self.cache, &self.prefix);
        }
    }
}

/// Writes a cache entry (temp + rename); a cache that cannot be written only costs a refetch.
fn write_cache(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A repo path or revision as one file name.
fn encode_path(p: &str) -> String {
    p.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
