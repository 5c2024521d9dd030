//! The Hub, as fetch-cards sees it: resolve a revision to a commit, list files with sizes,
//! download small files into the hub cache, and read byte prefixes of weight files.
//!
//! Every request goes through the workspace's one Hub client, [`model_hub::HubClient`]
//! (timeouts on every request, token, retries with backoff), so `HF_ENDPOINT`, `HF_TOKEN`,
//! `HF_HUB_OFFLINE` and the hub cache variables (`HF_HOME`, `HF_HUB_CACHE`) mean what they mean
//! for every other Hub tool, and Hub failures are [`model_hub::HubError`]s. This module is what
//! is specific to fetch-cards: a synchronous facade over the async client (its own tokio
//! runtime), falling back to the cache for the rest of a run once the Hub is unreachable, and
//! the metadata the hub cache does not hold (the commit a branch points to, the file listing,
//! the header bytes), kept beside it under `<hub cache>/.fetch-cards/`, keyed by commit, so a
//! run without network works from what an earlier run fetched.

use super::error::FetchError;
use model_hub::cache::RepoCache;
use model_hub::{HubClient, HubError, is_commit};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// How to reach the Hub (model-hub's options: endpoint, cache, token, offline, retries and
/// timeouts).
pub use model_hub::HubOptions;
/// One file of a repo listing (path, size, git oid, LFS sha256).
pub use model_hub::RepoFile;

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

pub struct Hub {
    rt: tokio::runtime::Runtime,
    client: HubClient,
    /// Set once a request found the Hub unreachable: the rest of the run uses the cache.
    fell_back: Cell<Option<String>>,
}

impl Hub {
    pub fn new(opts: &HubOptions) -> Result<Hub, FetchError> {
        let client = HubClient::new(opts)?;
        // hf-xet (used by hf-hub for Xet-backed files) needs a multi-threaded runtime.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| FetchError::io("tokio runtime", e))?;
        Ok(Hub {
            rt,
            client,
            fell_back: Cell::new(None),
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
        if self.client.offline() {
            return Some("HF_HUB_OFFLINE is set".into());
        }
        let r = self.fell_back.take();
        self.fell_back.set(r.clone());
        r
    }

    fn cache_only(&self) -> bool {
        self.client.offline() || self.offline_reason().is_some()
    }

    /// Remembers that the Hub is unreachable (`cause`): the rest of the run uses the cache.
    fn fall_back(&self, cause: String) {
        self.fell_back.set(Some(cause));
    }

    /// `<cache>/.fetch-cards/models--owner--name`.
    fn meta_dir(&self, repo: &str) -> PathBuf {
        self.cache_dir()
            .join(".fetch-cards")
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    fn offline_error(&self, repo: &str, missing: &str) -> FetchError {
        HubError::Offline {
            repo: repo.to_owned(),
            cause: self.offline_reason().unwrap_or_else(|| "offline".into()),
            missing: missing.to_owned(),
        }
        .into()
    }

    /// A failure of the client's own requests (listing, byte ranges); an unreachable Hub
    /// switches the run to the cache, and the error names what the cache lacks (`missing`).
    fn client_error(&self, e: HubError, missing: &str) -> FetchError {
        match e {
            HubError::Offline { repo, cause, .. } => {
                self.fall_back(cause.clone());
                HubError::Offline {
                    repo,
                    cause,
                    missing: missing.to_owned(),
                }
                .into()
            }
            other => other.into(),
        }
    }

    /// Resolves `revision` (branch, tag or sha) to a commit sha.
    pub fn resolve(&self, repo: &str, revision: &str) -> Result<String, FetchError> {
        let ref_file = self.meta_dir(repo).join("refs").join(encode_path(revision));
        let cached = || -> Option<String> {
            if is_commit(revision) {
                return Some(revision.to_owned());
            }
            std::fs::read_to_string(&ref_file)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| is_commit(s))
                .or_else(|| RepoCache::new(self.cache_dir(), repo).read_ref(revision))
        };
        let missing = format!("commit for revision `{revision}`");
        if self.cache_only() {
            return cached().ok_or_else(|| self.offline_error(repo, &missing));
        }
        match self.rt.block_on(self.client.resolve(repo, revision)) {
            Ok(sha) => {
                write_cache(&ref_file, sha.as_bytes());
                Ok(sha)
            }
            Err(e @ HubError::Offline { .. }) => {
                let err = self.client_error(e, &missing);
                cached().ok_or(err)
            }
            Err(e) => Err(e.into()),
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
        let missing = format!("file listing at {sha}");
        if self.cache_only() {
            return Err(self.offline_error(repo, &missing));
        }
        // Sorted by path.
        let files = self
            .rt
            .block_on(self.client.tree(repo, sha))
            .map_err(|e| self.client_error(e, &missing))?;
        if let Ok(json) = serde_json::to_vec(&files) {
            write_cache(&cache, &json);
        }
        Ok(files)
    }

    /// Downloads a small file at `sha` into the hub cache (or finds it there) and reads it.
    pub fn small_file(
        &self,
        repo: &str,
        sha: &str,
        file: &RepoFile,
        t: &mut Transfer,
    ) -> Result<Vec<u8>, FetchError> {
        let snapshot = RepoCache::new(self.cache_dir(), repo)
            .snapshot(sha)
            .join(&file.path);
        let missing = format!("copy of `{}`", file.path);
        let (path, received) = if self.cache_only() {
            if !snapshot.is_file() {
                return Err(self.offline_error(repo, &missing));
            }
            (snapshot, 0)
        } else {
            self.rt
                .block_on(self.client.fetch_file(repo, sha, file))
                .map_err(|e| self.client_error(e, &missing))?
        };
        let bytes = std::fs::read(&path).map_err(|e| FetchError::io(&path, e))?;
        if bytes.len() as u64 != file.size {
            return Err(HubError::Truncated {
                repo: repo.to_owned(),
                file: file.path.clone(),
                detail: format!("got {} B, the listing says {} B", bytes.len(), file.size),
            }
            .into());
        }
        if received == 0 {
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
            let bytes = self
                .hub
                .rt
                .block_on(
                    self.hub
                        .client
                        .read_range(&self.repo, &self.sha, &self.path, have..len),
                )
                .map_err(|e| {
                    self.hub
                        .client_error(e, &format!("header of `{}`", self.path))
                })?;
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
    let _ = model_hub::cache::write_atomically(path, bytes);
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
