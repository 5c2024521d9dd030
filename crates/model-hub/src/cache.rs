//! The Hub cache's layout, as the Python `huggingface_hub` client and `hf-hub` write it, so a
//! model fetched by either is found by the other:
//!
//! ```text
//! <cache>/models--owner--name/refs/<revision>          the commit a branch or tag named
//! <cache>/models--owner--name/blobs/<sha256 or git oid> the content
//! <cache>/models--owner--name/blobs/<…>.incomplete      a download under way (resumed from)
//! <cache>/models--owner--name/snapshots/<commit>/<path> a relative link to the blob
//! <cache>/.locks/models--owner--name/<blob>.lock       held while a blob is written
//! ```
//!
//! hf-hub keeps its helpers for this layout private, and its own file download neither resumes
//! nor checks sha256, so the downloader writes the layout itself (the same names).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::HubError;

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    cache: PathBuf,
    repo: String,
    folder: String,
}

impl RepoCache {
    /// The folder of model repository `repo` (`owner/name`) under `cache`.
    pub fn new(cache: &Path, repo: &str) -> RepoCache {
        RepoCache {
            cache: cache.to_path_buf(),
            repo: repo.to_owned(),
            folder: format!("models--{}", repo.replace('/', "--")),
        }
    }

    /// The repository id (`owner/name`).
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The cache root.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// `<cache>/models--owner--name`.
    pub fn dir(&self) -> PathBuf {
        self.cache.join(&self.folder)
    }

    /// The snapshot folder of `commit`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir().join("snapshots").join(commit)
    }

    /// The blob named `name`.
    pub fn blob(&self, name: &str) -> PathBuf {
        self.dir().join("blobs").join(name)
    }

    /// Where the blob named `name` is written while it downloads.
    pub fn partial(&self, name: &str) -> PathBuf {
        self.dir().join("blobs").join(format!("{name}.incomplete"))
    }

    /// The commit `revision` names, as recorded by an earlier download.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir().join("refs").join(revision)).ok()?;
        let sha = text.trim();
        crate::client::is_commit(sha).then(|| sha.to_owned())
    }

    /// Records that `revision` names `commit` (temp file, then rename).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        write_atomically(&self.dir().join("refs").join(revision), commit.as_bytes())
    }

    /// Takes the lock of blob `name` (waits while another process or task writes it); it is
    /// released when the returned file is dropped.
    pub fn lock(&self, name: &str) -> Result<File, HubError> {
        let path = self
            .cache
            .join(".locks")
            .join(&self.folder)
            .join(format!("{name}.lock"));
        create_parent(&path)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HubError::io(&path, e))?;
        file.lock().map_err(|e| HubError::io(&path, e))?;
        Ok(file)
    }

    /// Points `snapshots/<commit>/<path>` at blob `name` with a relative link (a copy where
    /// the filesystem has no links).
    pub fn link(&self, commit: &str, path: &str, name: &str) -> Result<PathBuf, HubError> {
        let at = self.snapshot(commit).join(path);
        create_parent(&at)?;
        let depth = path.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth + 2 {
            target.push("..");
        }
        target.push("blobs");
        target.push(name);
        let tmp = at.with_file_name(format!(
            ".{}.{}.link",
            at.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink(&target, &tmp);
        #[cfg(not(unix))]
        let made = std::fs::copy(self.blob(name), &tmp).map(|_| ());
        made.map_err(|e| HubError::io(&tmp, e))?;
        std::fs::rename(&tmp, &at).map_err(|e| HubError::io(&at, e))?;
        Ok(at)
    }
}

fn create_parent(path: &Path) -> Result<(), HubError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temp file and a rename: no reader sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    create_parent(path)?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| HubError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        HubError::io(path, e)
    })
}
