//! Dynamic batching in front of the pool, in the manner of text-embeddings-inference.
//!
//! Each model has one bounded queue and one worker task. The worker takes every request that
//! is waiting, drops those whose caller already gave up, acquires ONE lease from the pool (which
//! loads the model if needed and reserves one batch's working memory), tokenizes, packs the
//! inputs into forward passes under the token budget (`max_batch_tokens` padded tokens and
//! `max_batch_size` inputs each; longest first, so rows of similar length share a pass), runs
//! them and answers every request. Requests that arrive meanwhile wait for the next round and
//! are batched together — under load, batches fill up by themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::image::DynamicImage;
use model_networks::EmbeddingModel;
use model_networks::embed::text::{Encoded, TextMode};
use model_networks::embed::{BatchLimits, pack};
use model_pool::{Pool, PoolError};
use tokio::sync::{mpsc, oneshot};

use crate::error::ServeError;
use crate::loader::{LoadedModel, ServingLoader};

/// What one request asks for.
pub(crate) enum Inputs {
    Texts { texts: Vec<String>, mode: TextMode },
    Images(Vec<DynamicImage>),
}

impl Inputs {
    fn len(&self) -> usize {
        match self {
            Inputs::Texts { texts, .. } => texts.len(),
            Inputs::Images(images) => images.len(),
        }
    }
}

type Answer = Result<Vec<Vec<f32>>, ServeError>;

/// One request's answer with what it cost: the token count of each text and how long the
/// request waited for its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of each text as embedded (after truncation, special tokens included); 0 for
    /// images.
    pub tokens: Vec<usize>,
    /// From queuing the request to its batch holding the lease (a load included).
    pub queued: Duration,
}

struct Job {
    inputs: Inputs,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Embeddings, ServeError>>,
}

/// The queue and worker of one model.
pub(crate) struct Batcher {
    key: String,
    tx: mpsc::Sender<Job>,
    limit: usize,
    last_round: Arc<AtomicU64>,
}

impl Batcher {
    /// Starts the worker on the current runtime.
    pub(crate) fn spawn(
        key: String,
        pool: Arc<Pool<ServingLoader>>,
        limits: BatchLimits,
        timeout: Option<Duration>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(limits.max_queued.max(1));
        let last_round = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            key: key.clone(),
            pool,
            rx,
            limits,
            timeout,
            last_round: Arc::clone(&last_round),
        };
        tokio::spawn(worker.run());
        Batcher {
            key,
            tx,
            limit: limits.max_queued.max(1),
            last_round,
        }
    }

    /// Queues a request and waits for its answer. Dropping the future withdraws it: the worker
    /// skips requests nobody waits for.
    pub(crate) async fn submit(&self, inputs: Inputs) -> Result<Embeddings, ServeError> {
        if inputs.len() == 0 {
            return Err(ServeError::Input {
                model: self.key.clone(),
                source: model_runtime::error::InputError::Empty { index: None },
            });
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job {
                inputs,
                queued_at: Instant::now(),
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ServeError::Busy {
                    model: self.key.clone(),
                    limit: self.limit,
                    retry_after: Duration::from_millis(
                        self.last_round.load(Ordering::Relaxed).max(100),
                    ),
                },
                mpsc::error::TrySendError::Closed(_) => PoolError::ShuttingDown {
                    model: self.key.clone(),
                }
                .into(),
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(PoolError::ShuttingDown {
                model: self.key.clone(),
            }
            .into())
        })
    }
}

struct Worker {
    key: String,
    pool: Arc<Pool<ServingLoader>>,
    rx: mpsc::Receiver<Job>,
    limits: BatchLimits,
    timeout: Option<Duration>,
    last_round: Arc<AtomicU64>,
}

impl Worker {
    async fn run(mut self) {
        // One round serves at most this many inputs, so a flood cannot hold a lease forever.
        let round_cap = self.limits.max_batch_size.max(1) * 16;
        while let Some(first) = self.rx.recv().await {
            let mut jobs = vec![first];
            let mut inputs = jobs[0].inputs.len();
            while inputs < round_cap {
                match self.rx.try_recv() {
                    Ok(job) => {
                        inputs += job.inputs.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs.retain(|j| !j.reply.is_closed());
            if jobs.is_empty() {
                continue;
            }
            let started = Instant::now();
            let (work, replies): (Vec<Inputs>, Vec<_>) = jobs
                .into_iter()
                .map(|j| (j.inputs, (j.reply, j.queued_at)))
                .unzip();
            let outcome = self
                .pool
                .run(&self.key, self.timeout, move |lease| async move {
                    let leased_at = Instant::now();
                    // The lease moves into the blocking task: if the request times out, the
                    // forward pass still finishes and only then returns the lease and memory.
                    let answers = tokio::task::spawn_blocking(move || match &*lease {
                        LoadedModel::Embedder(model) => serve(model, &work),
                        other => {
                            let e = ServeError::WrongCapability {
                                model: other.key().to_owned(),
                                capability: other.capability(),
                                asked: "embed",
                            };
                            work.iter().map(|_| (Err(e.clone()), Vec::new())).collect()
                        }
                    })
                    .await;
                    answers.map(|a| (a, leased_at))
                })
                .await;
            self.last_round
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let answers: Vec<Result<Embeddings, ServeError>> = match outcome {
                Ok(Ok((answers, leased_at))) => answers
                    .into_iter()
                    .zip(&replies)
                    .map(|((vectors, tokens), (_, queued_at))| {
                        vectors.map(|vectors| Embeddings {
                            vectors,
                            tokens,
                            queued: leased_at.saturating_duration_since(*queued_at),
                        })
                    })
                    .collect(),
                Ok(Err(join)) => {
                    let message = format!("batch task failed: {join}");
                    replies
                        .iter()
                        .map(|_| {
                            Err(ServeError::backend(
                                &self.key,
                                model_runtime::BackendError::config("batch task", &message),
                            ))
                        })
                        .collect()
                }
                Err(pool) => replies
                    .iter()
                    .map(|_| Err(ServeError::Pool(pool.clone())))
                    .collect(),
            };
            for ((reply, _), answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }
}

/// Runs every request of one round on `model`; one answer per request, with the token count
/// of each of its texts.
pub(crate) fn serve(model: &EmbeddingModel, work: &[Inputs]) -> Vec<(Answer, Vec<usize>)> {
    let mut answers: Vec<Answer> = work.iter().map(|w| Ok(vec![Vec::new(); w.len()])).collect();
    let mut tokens: Vec<Vec<usize>> = work.iter().map(|w| vec![0; w.len()]).collect();
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut encoded: Vec<Encoded> = Vec::new();
    let mut images: Vec<(usize, usize)> = Vec::new();
    for (j, inputs) in work.iter().enumerate() {
        match inputs {
            Inputs::Texts { texts, mode } => match model.tokenize(texts, mode) {
                Ok(encs) => {
                    for (count, e) in tokens[j].iter_mut().zip(&encs) {
                        *count = e.len();
                    }
                    items.extend((0..encs.len()).map(|k| (j, k)));
                    encoded.extend(encs);
                }
                Err(source) => {
                    answers[j] = Err(ServeError::Input {
                        model: model.key().to_owned(),
                        source,
                    })
                }
            },
            Inputs::Images(list) => {
                if model.family().embeds_images() {
                    images.extend((0..list.len()).map(|k| (j, k)));
                } else {
                    answers[j] = Err(ServeError::WrongCapability {
                        model: model.key().to_owned(),
                        capability: model_registry::Capability::TextEmbedding,
                        asked: "embed images",
                    });
                }
            }
        }
    }
    let refs: Vec<&Encoded> = encoded.iter().collect();
    for group in pack(&refs, model.batch_limits()) {
        let rows: Vec<&Encoded> = group.iter().map(|&i| refs[i]).collect();
        let result = model
            .forward_tokens(&rows)
            .map_err(|e| ServeError::backend(model.key(), e));
        scatter(&mut answers, group.iter().map(|&i| items[i]), result);
    }
    for chunk in images.chunks(model.batch_limits().max_batch_size.max(1)) {
        let batch: Vec<DynamicImage> = chunk
            .iter()
            .map(|&(j, k)| match &work[j] {
                Inputs::Images(list) => list[k].clone(),
                Inputs::Texts { .. } => unreachable!("image items index image requests"),
            })
            .collect();
        let result = model
            .forward_images(&batch)
            .map_err(|e| ServeError::backend(model.key(), e));
        scatter(&mut answers, chunk.iter().copied(), result);
    }
    answers.into_iter().zip(tokens).collect()
}

/// Puts each row of `result` where it belongs, or fails every request that had a row in it.
fn scatter(answers: &mut [Answer], places: impl Iterator<Item = (usize, usize)>, result: Answer) {
    match result {
        Ok(rows) => {
            for ((j, k), row) in places.zip(rows) {
                if let Ok(out) = &mut answers[j] {
                    out[k] = row;
                }
            }
        }
        Err(e) => {
            for (j, _) in places {
                answers[j] = Err(e.clone());
            }
        }
    }
}
