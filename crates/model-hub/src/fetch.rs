//! Whole-model downloads into the Hub cache: [`HubClient::snapshot`] resolves a revision,
//! lists the repository, picks the files a model needs ([`FileSelection`]), checks free disk
//! space against the bytes still missing, and downloads each missing file — resuming a partial
//! one, checking LFS files against their sha256, and moving a file to its final place only
//! once it is whole and checked. With `HF_HUB_OFFLINE` (or no network) it serves what the cache
//! holds and fetches nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use globset::GlobMatcher;
use sha2::{Digest, Sha256};

use crate::cache::RepoCache;
use crate::client::{HubClient, RepoFile, is_commit};
use crate::error::HubError;

/// Which files of a repository a model needs: the weight files its patterns match, and every
/// small configuration or tokenizer file (`*.json`, `*.txt`, `*.model`, `*.tiktoken`,
/// `*.jinja` up to 64 MiB) anywhere in the repository.
#[derive(Debug, Clone)]
pub struct FileSelection {
    patterns: Vec<(String, GlobMatcher)>,
}

/// The largest configuration or tokenizer file fetched alongside the weights.
const MAX_AUXILIARY_BYTES: u64 = 64 << 20;

impl FileSelection {
    /// Weights matching `patterns` (globs over repository paths; `*` stays within a folder,
    /// `**` crosses folders), plus the configuration and tokenizer files.
    pub fn weights<I, S>(patterns: I) -> Result<FileSelection, HubError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| {
                let p = p.into();
                let glob = globset::GlobBuilder::new(&p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| HubError::Setup(format!("file pattern `{p}`: {e}")))?;
                Ok((p, glob.compile_matcher()))
            })
            .collect::<Result<Vec<_>, HubError>>()?;
        Ok(FileSelection { patterns })
    }

    fn is_weight(&self, path: &str) -> bool {
        self.patterns.iter().any(|(_, m)| m.is_match(path))
    }

    /// Whether the model needs `path` of `size` bytes.
    pub fn wants(&self, path: &str, size: u64) -> bool {
        self.is_weight(path) || is_auxiliary(path, size)
    }

    /// Each pattern that matches none of `paths`.
    fn unmatched<'a>(&'a self, paths: &[&str]) -> Vec<&'a str> {
        self.patterns
            .iter()
            .filter(|(_, m)| !paths.iter().any(|p| m.is_match(p)))
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

fn is_auxiliary(path: &str, size: u64) -> bool {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    size <= MAX_AUXILIARY_BYTES && matches!(ext, "json" | "txt" | "model" | "tiktoken" | "jinja")
}

/// Where a needed file stands before the download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// In the cache, whole.
    Cached,
    /// This many bytes of it were downloaded before (resumed from there).
    Partial(u64),
    /// Not there.
    Missing,
}

/// One file of a [`FetchPlan`].
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub file: RepoFile,
    pub state: FileState,
}

impl PlannedFile {
    /// Bytes still to download.
    pub fn missing_bytes(&self) -> u64 {
        match self.state {
            FileState::Cached => 0,
            FileState::Partial(n) => self.file.size.saturating_sub(n),
            FileState::Missing => self.file.size,
        }
    }
}

/// What a download will do, before it starts.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    pub repo: String,
    pub commit: String,
    pub files: Vec<PlannedFile>,
}

impl FetchPlan {
    /// Bytes still to download.
    pub fn missing_bytes(&self) -> u64 {
        self.files.iter().map(PlannedFile::missing_bytes).sum()
    }

    /// Bytes of every needed file.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.file.size).sum()
    }
}

/// Hears how a download goes. Called from the downloading task: keep it cheap.
pub trait FetchObserver: Send + Sync {
    /// The plan, once the listing is known (not called when only the cache is read).
    fn planned(&self, _plan: &FetchPlan) {}
    /// `done` of `total` bytes of `file` are in the cache (including resumed bytes).
    fn progress(&self, _file: &str, _done: u64, _total: u64) {}
    /// `file` is whole and checked.
    fn finished(&self, _file: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl FetchObserver for Silent {}

/// A model's files in the cache.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub repo: String,
    pub commit: String,
    /// `snapshots/<commit>` in the cache: the model folder the loaders read.
    pub dir: PathBuf,
    /// The needed files, by repository path.
    pub files: Vec<String>,
    /// Body bytes downloaded by this call.
    pub downloaded_bytes: u64,
    /// Needed files that were already in the cache.
    pub cached_files: usize,
    /// Why only the cache was read (offline), if it was.
    pub offline: Option<String>,
}

impl HubClient {
    /// The files `selection` picks from `repo` at `revision`, in the cache: downloaded where
    /// missing (see the module docs), or, offline, found there.
    pub async fn snapshot(
        &self,
        repo: &str,
        revision: &str,
        selection: &FileSelection,
        observer: &dyn FetchObserver,
    ) -> Result<Snapshot, HubError> {
        check_repo_id(repo)?;
        let cache = RepoCache::new(self.cache_dir(), repo);
        if self.offline() {
            return cached_snapshot(&cache, repo, revision, selection, "HF_HUB_OFFLINE is set");
        }
        let plan = match self.plan(repo, revision, selection).await {
            Ok(plan) => plan,
            // No network: what the cache holds stands in, as for every Hub tool.
            Err(HubError::Offline { cause, .. }) => {
                return cached_snapshot(&cache, repo, revision, selection, &cause);
            }
            Err(e) => return Err(e),
        };
        observer.planned(&plan);
        let need = plan.missing_bytes();
        if need > 0 {
            let free = free_space(cache.cache())?;
            if need > free {
                return Err(HubError::DiskSpace {
                    repo: repo.to_owned(),
                    dir: cache.cache().to_path_buf(),
                    need,
                    free,
                });
            }
        }
        let mut downloaded = 0;
        let mut cached_files = 0;
        for planned in &plan.files {
            let f = &planned.file;
            if planned.state == FileState::Cached {
                // In the cache: linked into this commit's snapshot unless it is there already.
                if !blob_is_whole(&cache.snapshot(&plan.commit).join(&f.path), f.size) {
                    cache.link(&plan.commit, &f.path, f.blob_name())?;
                }
                observer.progress(&f.path, f.size, f.size);
                observer.finished(&f.path);
                cached_files += 1;
                continue;
            }
            downloaded += self.download(&cache, &plan.commit, f, observer).await?;
            observer.finished(&f.path);
        }
        if !is_commit(revision) {
            cache.write_ref(revision, &plan.commit)?;
        }
        Ok(Snapshot {
            repo: repo.to_owned(),
            dir: cache.snapshot(&plan.commit),
            commit: plan.commit.clone(),
            files: plan.files.iter().map(|f| f.file.path.clone()).collect(),
            downloaded_bytes: downloaded,
            cached_files,
            offline: None,
        })
    }

    /// What [`snapshot`](Self::snapshot) would download: the commit, the needed files and
    /// where each stands. Reads the Hub's listing, downloads nothing.
    pub async fn plan(
        &self,
        repo: &str,
        revision: &str,
        selection: &FileSelection,
    ) -> Result<FetchPlan, HubError> {
        check_repo_id(repo)?;
        let commit = if is_commit(revision) {
            revision.to_owned()
        } else {
            self.resolve(repo, revision).await?
        };
        let listing = self.tree(repo, &commit).await?;
        let paths: Vec<&str> = listing.iter().map(|f| f.path.as_str()).collect();
        if let Some(pattern) = selection.unmatched(&paths).first() {
            return Err(HubError::NoMatch {
                repo: repo.to_owned(),
                commit: commit.clone(),
                pattern: format!("`{pattern}`"),
                fix: "check the model's weight files (the registry's `files`, or --hub-file)"
                    .into(),
            });
        }
        let cache = RepoCache::new(self.cache_dir(), repo);
        let files = listing
            .into_iter()
            .filter(|f| selection.wants(&f.path, f.size))
            .map(|file| {
                let state = state_of(&cache, &commit, &file);
                PlannedFile { file, state }
            })
            .collect();
        Ok(FetchPlan {
            repo: repo.to_owned(),
            commit,
            files,
        })
    }

    /// `file` (an entry of [`tree`](Self::tree) at `commit`) in the cache's snapshot of
    /// `commit`, downloaded like a model's files when it is not there: its path, and the
    /// body bytes received (0 when it was cached).
    pub async fn fetch_file(
        &self,
        repo: &str,
        commit: &str,
        file: &RepoFile,
    ) -> Result<(PathBuf, u64), HubError> {
        check_repo_id(repo)?;
        let cache = RepoCache::new(self.cache_dir(), repo);
        let at = cache.snapshot(commit).join(&file.path);
        if blob_is_whole(&at, file.size) {
            return Ok((at, 0));
        }
        let received = self.download(&cache, commit, file, &Silent).await?;
        Ok((at, received))
    }

    /// Downloads one file into its blob (resuming a partial one) and links it into the
    /// snapshot; the body bytes this call received.
    async fn download(
        &self,
        cache: &RepoCache,
        commit: &str,
        file: &RepoFile,
        observer: &dyn FetchObserver,
    ) -> Result<u64, HubError> {
        let name = file.blob_name().to_owned();
        // One writer per blob, across processes (the Python client takes the same lock).
        let lock = {
            let cache = cache.clone();
            let name = name.clone();
            tokio::task::spawn_blocking(move || cache.lock(&name))
                .await
                .map_err(|e| HubError::Setup(format!("cache lock task failed: {e}")))??
        };
        let blob = cache.blob(&name);
        if blob_is_whole(&blob, file.size) {
            drop(lock);
            cache.link(commit, &file.path, &name)?;
            observer.progress(&file.path, file.size, file.size);
            return Ok(0);
        }
        let partial = cache.partial(&name);
        let mut offset = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if offset > file.size {
            offset = 0;
        }
        let mut hasher = Sha256::new();
        if offset > 0 && file.lfs_sha256.is_some() {
            offset = hash_prefix(&partial, offset, &mut hasher)?;
        }
        // Always a range (`bytes=offset-`): a resumed file asks for the rest, and a stalled or
        // cut-off transfer looks the same to the server either way.
        let (announced, mut stream) = if offset == file.size {
            (Some(0), None)
        } else {
            let (n, s) = self
                .stream(cache.repo(), commit, &file.path, Some(offset..file.size))
                .await?;
            (n, Some(s))
        };
        // A server that ignores the range sends the whole file: start over.
        if offset > 0 && announced == Some(file.size) {
            offset = 0;
            hasher = Sha256::new();
        }
        if let Some(dir) = partial.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial)
            .map_err(|e| HubError::io(&partial, e))?;
        out.set_len(offset).map_err(|e| HubError::io(&partial, e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, {
            use std::io::Seek;
            let mut f = out;
            f.seek(std::io::SeekFrom::Start(offset))
                .map_err(|e| HubError::io(&partial, e))?;
            f
        });
        let mut done = offset;
        let mut received = 0u64;
        observer.progress(&file.path, done, file.size);
        if let Some(stream) = stream.as_mut() {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| HubError::Truncated {
                    repo: cache.repo().to_owned(),
                    file: file.path.clone(),
                    detail: format!(
                        "the transfer broke off after {done} of {} B ({e}); run again to resume",
                        file.size
                    ),
                })?;
                out.write_all(&chunk)
                    .map_err(|e| HubError::io(&partial, e))?;
                hasher.update(&chunk);
                done += chunk.len() as u64;
                received += chunk.len() as u64;
                observer.progress(&file.path, done, file.size);
            }
        }
        let out = out
            .into_inner()
            .map_err(|e| HubError::io(&partial, e.into_error()))?;
        out.sync_all().map_err(|e| HubError::io(&partial, e))?;
        drop(out);
        if done != file.size {
            if done > file.size {
                let _ = std::fs::remove_file(&partial);
            }
            return Err(HubError::Truncated {
                repo: cache.repo().to_owned(),
                file: file.path.clone(),
                detail: format!(
                    "got {done} B, the listing says {} B; run again to resume",
                    file.size
                ),
            });
        }
        if let Some(expected) = &file.lfs_sha256 {
            let actual = hex(&hasher.finalize());
            if &actual != expected {
                let _ = std::fs::remove_file(&partial);
                return Err(HubError::Integrity {
                    repo: cache.repo().to_owned(),
                    file: file.path.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        std::fs::rename(&partial, &blob).map_err(|e| HubError::io(&blob, e))?;
        drop(lock);
        cache.link(commit, &file.path, &name)?;
        Ok(received)
    }
}

fn check_repo_id(repo: &str) -> Result<(), HubError> {
    let mut parts = repo.split('/');
    let ok = matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty() && a != ".." && b != ".." && a != "." && b != "."
            && repo.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c)));
    if ok {
        Ok(())
    } else {
        Err(HubError::InvalidRepoId(repo.to_owned()))
    }
}

fn state_of(cache: &RepoCache, commit: &str, file: &RepoFile) -> FileState {
    let linked = cache.snapshot(commit).join(&file.path);
    if blob_is_whole(&linked, file.size) || blob_is_whole(&cache.blob(file.blob_name()), file.size)
    {
        return FileState::Cached;
    }
    match std::fs::metadata(cache.partial(file.blob_name())) {
        Ok(m) if m.len() > 0 && m.len() <= file.size => FileState::Partial(m.len()),
        _ => FileState::Missing,
    }
}

fn blob_is_whole(path: &Path, size: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Hashes the first `len` bytes of `path` into `hasher`; the length actually read.
fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> Result<u64, HubError> {
    let mut f = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    while read < len {
        let want = buf.len().min((len - read) as usize);
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| HubError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    Ok(read)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Free bytes on the filesystem that holds (or will hold) `dir`.
fn free_space(dir: &Path) -> Result<u64, HubError> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    fs4::available_space(at).map_err(|e| HubError::io(at, e))
}

/// The needed files as an earlier download left them, without the network.
fn cached_snapshot(
    cache: &RepoCache,
    repo: &str,
    revision: &str,
    selection: &FileSelection,
    why: &str,
) -> Result<Snapshot, HubError> {
    let offline = |missing: String| HubError::Offline {
        repo: repo.to_owned(),
        cause: why.to_owned(),
        missing,
    };
    let commit = if is_commit(revision) {
        revision.to_owned()
    } else {
        cache
            .read_ref(revision)
            .ok_or_else(|| offline(format!("commit for revision `{revision}`")))?
    };
    let dir = cache.snapshot(&commit);
    let mut files = Vec::new();
    walk(&dir, "", &mut files);
    let paths: Vec<&str> = files.iter().map(String::as_str).collect();
    if let Some(pattern) = selection.unmatched(&paths).first() {
        return Err(offline(format!("copy of `{pattern}` at {commit}")));
    }
    let needed: Vec<String> = files
        .iter()
        .filter(|p| {
            let size = std::fs::metadata(dir.join(p)).map(|m| m.len()).unwrap_or(0);
            selection.wants(p, size)
        })
        .cloned()
        .collect();
    Ok(Snapshot {
        repo: repo.to_owned(),
        commit,
        dir,
        cached_files: needed.len(),
        files: needed,
        downloaded_bytes: 0,
        offline: Some(why.to_owned()),
    })
}

/// Every readable file under `dir` (links followed), as `/`-separated paths.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        if path.is_dir() {
            walk(&path, &rel, out);
        } else if path.is_file() {
            out.push(rel);
        }
    }
    out.sort();
}
