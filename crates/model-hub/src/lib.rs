//! The workspace's one Hugging Face Hub client.
//!
//! - [`HubClient`] talks to the Hub (or a mirror, `HF_ENDPOINT`) through `hf-hub`, with the
//!   token (`HF_TOKEN`, never logged), retries with backoff and timeouts on every request;
//!   `cargo xtask fetch-cards` reads repo info, listings and weight headers through it.
//! - [`HubClient::snapshot`] downloads a model's files into the standard Hub cache
//!   (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`), the layout the Python
//!   `huggingface_hub` uses, so a model fetched by one is reused by the other. It checks free
//!   disk space against the bytes still missing before the first byte, resumes interrupted
//!   files, checks LFS files against their sha256, and never leaves a partial file at a final
//!   path. With `HF_HUB_OFFLINE=1` it reads the cache only.

pub mod cache;
mod client;
mod error;
mod fetch;

pub use client::{HubClient, HubOptions, RepoFile, is_commit};
pub use error::HubError;
pub use fetch::{
    FetchObserver, FetchPlan, FileSelection, FileState, PlannedFile, Silent, Snapshot,
};
