//! One repo at one commit: its file listing and the small files read from it.

use super::error::FetchError;
use super::hub::{Hub, RemoteFile, RepoFile, Transfer};
use std::collections::BTreeMap;

/// Small files larger than this are not downloaded (a README or config is kilobytes).
pub const SMALL_FILE_LIMIT: u64 = 16 * 1024 * 1024;

pub struct RepoCtx<'h> {
    pub hub: &'h Hub,
    pub repo: String,
    pub sha: String,
    pub listing: Vec<RepoFile>,
    small: BTreeMap<String, Vec<u8>>,
    pub transfer: Transfer,
}

impl<'h> RepoCtx<'h> {
    pub fn new(hub: &'h Hub, repo: &str, sha: &str, listing: Vec<RepoFile>) -> Self {
        RepoCtx {
            hub,
            repo: repo.to_owned(),
            sha: sha.to_owned(),
            listing,
            small: BTreeMap::new(),
            transfer: Transfer::default(),
        }
    }

    pub fn file(&self, path: &str) -> Option<&RepoFile> {
        self.listing.iter().find(|f| f.path == path)
    }

    pub fn require(&self, path: &str) -> Result<&RepoFile, FetchError> {
        self.file(path).ok_or_else(|| {
            FetchError::not_in_listing(
                format!("file `{path}` in `{}` at {}", self.repo, self.sha),
                "; check `files` in model-cards/models.toml against the repo's file list",
            )
        })
    }

    /// A small file's bytes, downloaded once; `None` when the repo has no such file.
    pub fn small(&mut self, path: &str) -> Result<Option<&[u8]>, FetchError> {
        if !self.small.contains_key(path) {
            let Some(f) = self.file(path).cloned() else {
                return Ok(None);
            };
            if f.size > SMALL_FILE_LIMIT {
                return Err(FetchError::BadFile {
                    repo: self.repo.clone(),
                    file: path.to_owned(),
                    detail: format!(
                        "is {} B, more than the {SMALL_FILE_LIMIT} B read for a metadata file",
                        f.size
                    ),
                });
            }
            let bytes = self
                .hub
                .small_file(&self.repo, &self.sha, &f, &mut self.transfer)?;
            self.small.insert(path.to_owned(), bytes);
        }
        Ok(self.small.get(path).map(Vec::as_slice))
    }

    /// A small JSON file, parsed; `None` when the repo has no such file.
    pub fn json(&mut self, path: &str) -> Result<Option<serde_json::Value>, FetchError> {
        let repo = self.repo.clone();
        let Some(bytes) = self.small(path)? else {
            return Ok(None);
        };
        serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| FetchError::BadFile {
                repo,
                file: path.to_owned(),
                detail: format!("is not valid JSON: {e}"),
            })
    }

    /// A small text file (lossy UTF-8); `None` when absent.
    pub fn text(&mut self, path: &str) -> Result<Option<String>, FetchError> {
        Ok(self
            .small(path)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    pub fn remote(&self, path: &str) -> Result<RemoteFile<'h>, FetchError> {
        let f = self.require(path)?.clone();
        Ok(self.hub.remote_file(&self.repo, &self.sha, &f))
    }
}
