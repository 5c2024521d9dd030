//! Everything that can go wrong while fetching a model card, each with the thing, the cause and
//! the fix in its message. The token is never part of any message.

use std::path::PathBuf;

/// A fetch-cards failure.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    InvalidRepoId(String),

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
        "`{repo}`: the Hub is unreachable ({cause}) and the hub cache has no {missing} for it; run again with network, or check HF_ENDPOINT"
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

    #[error("`{repo}` file `{file}`: {detail}")]
    BadHeader {
        repo: String,
        file: String,
        detail: String,
    },

    #[error("`{repo}` file `{file}`: {detail}")]
    BadFile {
        repo: String,
        file: String,
        detail: String,
    },

    #[error("model `{repo}`: {detail}")]
    Layout { repo: String, detail: String },

    #[error("`{repo}`: {source}")]
    Hub {
        repo: String,
        #[source]
        source: Box<hf_hub::HFError>,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Spec(#[from] model_spec::SpecError),

    #[error("{0}")]
    Usage(String),
}

impl FetchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FetchError::Io {
            path: path.into(),
            source,
        }
    }

    /// Maps a Hub client error for `repo` (and `file`, when one was being read) to a message
    /// that names both and says what to do.
    pub(crate) fn from_hub(
        e: hf_hub::HFError,
        repo: &str,
        file: Option<&str>,
        attempts: usize,
    ) -> Self {
        use hf_hub::HFError as H;
        let file_part = file.map(|f| format!(" file `{f}`")).unwrap_or_default();
        match e {
            H::AuthRequired { context } | H::Forbidden { context } => FetchError::Gated {
                repo: repo.to_owned(),
                file: file_part,
                status: context.status.as_u16(),
            },
            H::RepoNotFound { .. } => FetchError::NotFound {
                what: format!("repository `{repo}`"),
                fix: "; check the `key` in model-cards/models.toml (a private repo also answers 404 without HF_TOKEN)".into(),
            },
            // The revision endpoint answers 404 for a missing repo too; its error code tells.
            H::RevisionNotFound { context, .. }
                if context
                    .as_ref()
                    .and_then(|c| c.error_code.as_deref())
                    == Some("RepoNotFound") =>
            {
                FetchError::NotFound {
                    what: format!("repository `{repo}`"),
                    fix: "; check the `key` in model-cards/models.toml (a private repo also answers 404 without HF_TOKEN)".into(),
                }
            }
            H::RevisionNotFound { revision, .. } => FetchError::NotFound {
                what: format!("revision `{revision}` of `{repo}`"),
                fix: "; check `revision` in model-cards/models.toml or --revision".into(),
            },
            H::EntryNotFound { path, .. } => FetchError::NotFound {
                what: format!("file `{path}` in `{repo}`"),
                fix: "; check `files` in model-cards/models.toml against the repo's file list".into(),
            },
            H::RateLimited { context, .. } => FetchError::Unavailable {
                repo: repo.to_owned(),
                file: file_part,
                status: context.status.as_u16(),
                attempts,
                advice: "the Hub is rate-limiting this client: wait a few minutes (or set HF_TOKEN, which has a higher limit) and run again",
            },
            H::Http { context } if context.status.is_server_error() => FetchError::Unavailable {
                repo: repo.to_owned(),
                file: file_part,
                status: context.status.as_u16(),
                attempts,
                advice: "the Hub has a problem on its side: run again later",
            },
            H::Http { context } if context.status.as_u16() == 404 => FetchError::NotFound {
                what: match file {
                    Some(f) => format!("file `{f}` in `{repo}`"),
                    None => format!("repository `{repo}`"),
                },
                fix: String::new(),
            },
            H::Request { source, .. } if source.is_body() || source.is_decode() => {
                FetchError::Truncated {
                    repo: repo.to_owned(),
                    file: file.unwrap_or("(listing)").to_owned(),
                    detail: format!("the connection ended before the announced length ({source})"),
                }
            }
            other => FetchError::Hub {
                repo: repo.to_owned(),
                source: Box::new(other),
            },
        }
    }

    /// True when the failure means "no network", so a cached copy may stand in.
    pub(crate) fn is_unreachable(e: &hf_hub::HFError) -> bool {
        matches!(e, hf_hub::HFError::Request { source, .. }
            if source.is_connect() || (source.is_timeout() && !source.is_body() && !source.is_decode()))
    }
}
