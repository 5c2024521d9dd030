//! Everything that can go wrong while fetching a model card, each with the thing, the cause and
//! the fix in its message. The token is never part of any message.
//!
//! Hub failures (gated, not found, unavailable, offline, truncated, range ignored …) are
//! model-hub's [`HubError`], the workspace's one Hub client's errors; the rest is specific to
//! fetch-cards (bad headers and files, layouts, specs).

use model_hub::HubError;
use std::path::PathBuf;

/// A fetch-cards failure.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    InvalidRepoId(String),

    /// Talking to the Hub or reading its cache failed.
    #[error(transparent)]
    Hub(#[from] HubError),

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

    /// A file (or glob) the entry in `model-cards/models.toml` names is not in the repo's
    /// listing: the Hub's "not found", with the fix in the model list.
    pub(crate) fn not_in_listing(what: String, fix: &str) -> Self {
        FetchError::Hub(HubError::NotFound {
            what,
            fix: fix.to_owned(),
        })
    }
}
