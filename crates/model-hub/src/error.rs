//! Everything that can go wrong talking to the Hub or writing its cache, each message naming
//! the repository, the file and the fix. The token never appears in any message.

use std::path::PathBuf;

/// A Hub or Hub-cache failure.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "`{repo}`{file}: the Hub refused access (HTTP {status}): the model is gated or private. \
         Accept its terms on the model page, then set HF_TOKEN to a token with read access and run again"
    )]
    Gated {
        repo: String,
        /// ` file `x`` when a file (not the repo) was refused.
        file: String,
        status: u16,
    },

    #[error("{what} was not found on the Hub (HTTP 404){fix}")]
    NotFound { what: String, fix: String },

    #[error(
        "`{repo}`{file}: the Hub kept answering HTTP {status} after {attempts} attempts with backoff; \
         {advice}"
    )]
    Unavailable {
        repo: String,
        file: String,
        status: u16,
        attempts: usize,
        advice: &'static str,
    },

    #[error(
        "`{repo}`: offline ({cause}) and the hub cache has no {missing} for it; run again with network (unset HF_HUB_OFFLINE), or check HF_ENDPOINT"
    )]
    Offline {
        repo: String,
        cause: String,
        missing: String,
    },

    #[error("`{repo}` file `{file}`: truncated body: {detail}")]
    Truncated {
        repo: String,
        file: String,
        detail: String,
    },

    #[error(
        "`{repo}` file `{file}`: the server ignored the byte range (asked for {asked} B, it announced {announced} B); refusing to download weights"
    )]
    RangeIgnored {
        repo: String,
        file: String,
        asked: u64,
        announced: u64,
    },

    #[error(
        "`{repo}` file `{file}`: the downloaded bytes have sha256 {actual}, the Hub lists {expected}; \
         the partial download was removed, run again (a proxy or mirror that rewrites files gives this too)"
    )]
    Integrity {
        repo: String,
        file: String,
        expected: String,
        actual: String,
    },

    #[error(
        "`{repo}`: {need} B still to download but {free} B free in the hub cache {dir}; free some space there \
         (or point HF_HUB_CACHE / HF_HOME at a larger disk) and run again"
    )]
    DiskSpace {
        repo: String,
        dir: PathBuf,
        need: u64,
        free: u64,
    },

    #[error("`{repo}`: no file of the repository at {commit} matches {pattern}; {fix}")]
    NoMatch {
        repo: String,
        commit: String,
        pattern: String,
        fix: String,
    },

    #[error("invalid repository id `{0}`: expected `owner/name`")]
    InvalidRepoId(String),

    #[error("`{repo}`: {source}")]
    Hub {
        repo: String,
        #[source]
        source: Box<hf_hub::HFError>,
    },

    #[error("`{repo}`: {detail}")]
    Protocol { repo: String, detail: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Setup(String),
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }

    /// Maps a Hub client error for `repo` (and `file`, when one was being read) to a message
    /// that names both and says what to do.
    pub fn from_hub(e: hf_hub::HFError, repo: &str, file: Option<&str>, attempts: usize) -> Self {
        use hf_hub::HFError as H;
        let file_part = file.map(|f| format!(" file `{f}`")).unwrap_or_default();
        match e {
            H::AuthRequired { context } | H::Forbidden { context } => HubError::Gated {
                repo: repo.to_owned(),
                file: file_part,
                status: context.status.as_u16(),
            },
            H::RepoNotFound { .. } => repo_not_found(repo),
            // The revision endpoint answers 404 for a missing repo too; its error code tells.
            H::RevisionNotFound { context, .. }
                if context.as_ref().and_then(|c| c.error_code.as_deref())
                    == Some("RepoNotFound") =>
            {
                repo_not_found(repo)
            }
            H::RevisionNotFound { revision, .. } => revision_not_found(repo, &revision),
            H::EntryNotFound { path, .. } => entry_not_found(repo, &path),
            H::RateLimited { context, .. } => {
                HubError::unavailable(repo, file_part, context.status.as_u16(), attempts)
            }
            H::Http { context } if context.status.is_server_error() => {
                HubError::unavailable(repo, file_part, context.status.as_u16(), attempts)
            }
            H::Http { context } if context.status.as_u16() == 404 => match file {
                Some(f) => entry_not_found(repo, f),
                None => repo_not_found(repo),
            },
            H::Request { source, .. } if source.is_body() || source.is_decode() => {
                HubError::Truncated {
                    repo: repo.to_owned(),
                    file: file.unwrap_or("(listing)").to_owned(),
                    detail: format!("the connection ended before the announced length ({source})"),
                }
            }
            other => HubError::Hub {
                repo: repo.to_owned(),
                source: Box::new(other),
            },
        }
    }

    /// The error for an HTTP status answered to a request this crate made itself.
    pub(crate) fn from_status(
        status: u16,
        error_code: Option<&str>,
        repo: &str,
        revision: &str,
        attempts: usize,
    ) -> Self {
        match (status, error_code) {
            (401 | 403, _) => HubError::Gated {
                repo: repo.to_owned(),
                file: String::new(),
                status,
            },
            (404, Some("RevisionNotFound")) => revision_not_found(repo, revision),
            (404, _) => repo_not_found(repo),
            (429 | 408, _) | (500..=599, _) => {
                HubError::unavailable(repo, String::new(), status, attempts)
            }
            _ => HubError::Protocol {
                repo: repo.to_owned(),
                detail: format!("unexpected HTTP {status} from the Hub's file listing"),
            },
        }
    }

    fn unavailable(repo: &str, file: String, status: u16, attempts: usize) -> Self {
        HubError::Unavailable {
            repo: repo.to_owned(),
            file,
            status,
            attempts,
            advice: if status == 429 {
                "the Hub is rate-limiting this client: wait a few minutes (or set HF_TOKEN, which has a higher limit) and run again"
            } else {
                "the Hub has a problem on its side: run again later"
            },
        }
    }

    /// True when the failure means "no network", so a cached copy may stand in.
    pub fn is_unreachable(e: &hf_hub::HFError) -> bool {
        matches!(e, hf_hub::HFError::Request { source, .. }
            if source.is_connect() || (source.is_timeout() && !source.is_body() && !source.is_decode()))
    }
}

fn repo_not_found(repo: &str) -> HubError {
    HubError::NotFound {
        what: format!("repository `{repo}`"),
        fix:
            "; check the model key (`owner/name`; a private repo also answers 404 without HF_TOKEN)"
                .into(),
    }
}

fn revision_not_found(repo: &str, revision: &str) -> HubError {
    HubError::NotFound {
        what: format!("revision `{revision}` of `{repo}`"),
        fix: "; check the revision (the registry's pinned `revision`, or --revision)".into(),
    }
}

fn entry_not_found(repo: &str, path: &str) -> HubError {
    HubError::NotFound {
        what: format!("file `{path}` in `{repo}`"),
        fix: "; the repository has no such file at that revision (check the file names asked for)"
            .into(),
    }
}
