//! Models fetched from the Hub on demand: a [`ModelSource::Hub`] model's files are downloaded
//! into the Hugging Face cache by its first load (through `model-hub`: resumable,
//! sha256-checked, free disk checked first), then loaded from there like any local folder.
//!
//! The download runs inside the pool's load of the model, so everything the pool does for
//! loads holds for downloads too: a model that can never fit its device's budget is refused
//! before a byte is fetched, and concurrent requests for one model share one download. The
//! load's memory reservation is held while it downloads, and the request's deadline covers the
//! download: a warm model whose waiters all give up stops downloading, and the next request
//! resumes where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use model_hub::{FetchObserver, FetchPlan, FileSelection, HubClient, HubError, Snapshot};
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::ModelSource;
use crate::error::ServeError;

/// How far a model's download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DownloadProgress {
    /// Bytes of the model's files in the cache so far.
    pub bytes_done: u64,
    /// Bytes of all the files it needs.
    pub bytes_total: u64,
}

/// One model's download under way: what `/status` shows, and the caller's observer.
struct ModelDownload {
    done: AtomicU64,
    total: AtomicU64,
    /// Each file's bytes in the cache so far (cached files count whole).
    files: Mutex<BTreeMap<String, u64>>,
    extra: Option<Arc<dyn FetchObserver>>,
}

impl FetchObserver for ModelDownload {
    fn planned(&self, plan: &FetchPlan) {
        self.total.store(plan.total_bytes(), Ordering::Relaxed);
        if let Some(o) = &self.extra {
            o.planned(plan);
        }
    }

    fn progress(&self, file: &str, done: u64, total: u64) {
        // Called for every chunk received: no allocation but the first, no sum over files (the
        // difference wraps when a restarted file goes back, which the wrapping add undoes).
        let mut files = self.files.lock();
        let before = match files.get_mut(file) {
            Some(bytes) => std::mem::replace(bytes, done),
            None => {
                files.insert(file.to_owned(), done);
                0
            }
        };
        drop(files);
        self.done
            .fetch_add(done.wrapping_sub(before), Ordering::Relaxed);
        if let Some(o) = &self.extra {
            o.progress(file, done, total);
        }
    }

    fn finished(&self, file: &str) {
        if let Some(o) = &self.extra {
            o.finished(file);
        }
    }
}

/// The pool's Hub downloads: the one client (made on first use, from the `HF_*` variables),
/// the downloads under way, and an observer the caller added (a progress bar).
#[derive(Default)]
pub struct Downloads {
    client: OnceLock<Result<HubClient, String>>,
    active: Mutex<HashMap<String, Arc<ModelDownload>>>,
    observer: Option<Arc<dyn FetchObserver>>,
}

impl Downloads {
    /// Downloads that also tell `observer` how they go.
    pub fn with_observer(observer: Option<Arc<dyn FetchObserver>>) -> Self {
        Downloads {
            observer,
            ..Downloads::default()
        }
    }

    /// Uses `client` instead of one made from the environment.
    pub fn with_client(self, client: HubClient) -> Self {
        let _ = self.client.set(Ok(client));
        self
    }

    fn client(&self) -> Result<&HubClient, String> {
        self.client
            .get_or_init(|| HubClient::from_env().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// How far `model`'s download is, while one is under way.
    pub fn progress(&self, model: &str) -> Option<DownloadProgress> {
        self.active.lock().get(model).map(|d| DownloadProgress {
            bytes_done: d.done.load(Ordering::Relaxed),
            bytes_total: d.total.load(Ordering::Relaxed),
        })
    }

    /// The folder `source` is loaded from: a [`ModelSource::Hub`] model's snapshot in the
    /// cache, downloaded first where files are missing; any other source as it resolves.
    pub async fn local_source(
        &self,
        model: &str,
        source: &ModelSource,
    ) -> Result<ModelSource, ServeError> {
        let ModelSource::Hub {
            repo,
            revision,
            weights,
        } = source
        else {
            return Ok(source.clone());
        };
        let fail = |e: HubError| ServeError::Download {
            model: model.to_owned(),
            source: Arc::new(e),
        };
        let selection = FileSelection::weights(weights.iter().cloned()).map_err(fail)?;
        let client = self.client().map_err(|e| fail(HubError::Setup(e)))?;
        let download = Arc::new(ModelDownload {
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            files: Mutex::new(BTreeMap::new()),
            extra: self.observer.clone(),
        });
        self.active
            .lock()
            .insert(model.to_owned(), Arc::clone(&download));
        let _done = Finished {
            active: &self.active,
            model,
            download: Arc::clone(&download),
        };
        let snapshot: Snapshot = client
            .snapshot(repo, revision, &selection, download.as_ref())
            .await
            .map_err(fail)?;
        tracing::info!(
            model,
            repo = %snapshot.repo,
            commit = %snapshot.commit,
            downloaded = snapshot.downloaded_bytes,
            cached_files = snapshot.cached_files,
            offline = snapshot.offline.as_deref().unwrap_or("no"),
            "model files ready"
        );
        Ok(ModelSource::Path(snapshot.dir))
    }
}

/// Takes a model's download off the list of those under way when it ends, however it ends
/// (unless a later one for the same model, e.g. `fetch_files` beside a load, took its place).
struct Finished<'a> {
    active: &'a Mutex<HashMap<String, Arc<ModelDownload>>>,
    model: &'a str,
    download: Arc<ModelDownload>,
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let mut active = self.active.lock();
        if active
            .get(self.model)
            .is_some_and(|d| Arc::ptr_eq(d, &self.download))
        {
            active.remove(self.model);
        }
    }
}
