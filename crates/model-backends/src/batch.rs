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
use model_pool::{Pool, PoolError};
use tokio::sync::{mpsc, oneshot};

use crate::config::BatchLimits;
use crate::error::EmbedError;
use crate::loader::CandleLoader;
use crate::models::EmbeddingModel;
use crate::text::{Encoded, TextMode};

/// Groups of indices into `items`, each one forward pass within `limits`: sorted by length,
/// longest first, each group's rows × its longest row ≤ `max_batch_tokens`.
pub fn pack(items: &[&Encoded], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].len()));
    let mut groups = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = items[i].len().max(1);
        let fits = current.len() < limits.max_batch_size.max(1)
            && (current.len() + 1) * longest.max(len) <= limits.max_batch_tokens.max(len);
        if !fits {
            groups.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

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

type Answer = Result<Vec<Vec<f32>>, EmbedError>;

struct Job {
    inputs: Inputs,
    reply: oneshot::Sender<Answer>,
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
        pool: Arc<Pool<CandleLoader>>,
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
    pub(crate) async fn submit(&self, inputs: Inputs) -> Answer {
        if inputs.len() == 0 {
            return Err(EmbedError::EmptyInput {
                model: self.key.clone(),
                index: None,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job { inputs, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EmbedError::Busy {
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
    pool: Arc<Pool<CandleLoader>>,
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
            let (work, replies): (Vec<Inputs>, Vec<_>) =
                jobs.into_iter().map(|j| (j.inputs, j.reply)).unzip();
            let outcome = self
                .pool
                .run(&self.key, self.timeout, move |lease| async move {
                    // The lease moves into the blocking task: if the request times out, the
                    // forward pass still finishes and only then returns the lease and memory.
                    tokio::task::spawn_blocking(move || serve(&lease, &work)).await
                })
                .await;
            self.last_round
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let answers: Vec<Answer> = match outcome {
                Ok(Ok(answers)) => answers,
                Ok(Err(join)) => {
                    let message = format!("batch task failed: {join}");
                    replies
                        .iter()
                        .map(|_| {
                            Err(EmbedError::Backend {
                                model: self.key.clone(),
                                message: message.clone(),
                            })
                        })
                        .collect()
                }
                Err(pool) => replies
                    .iter()
                    .map(|_| Err(EmbedError::Pool(pool.clone())))
                    .collect(),
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }
}

/// Runs every request of one round on `model`; one answer per request.
pub(crate) fn serve(model: &EmbeddingModel, work: &[Inputs]) -> Vec<Answer> {
    let mut answers: Vec<Answer> = work.iter().map(|w| Ok(vec![Vec::new(); w.len()])).collect();
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut encoded: Vec<Encoded> = Vec::new();
    let mut images: Vec<(usize, usize)> = Vec::new();
    for (j, inputs) in work.iter().enumerate() {
        match inputs {
            Inputs::Texts { texts, mode } => match model.tokenize(texts, mode) {
                Ok(encs) => {
                    items.extend((0..encs.len()).map(|k| (j, k)));
                    encoded.extend(encs);
                }
                Err(e) => answers[j] = Err(e),
            },
            Inputs::Images(list) => {
                if model.family().embeds_images() {
                    images.extend((0..list.len()).map(|k| (j, k)));
                } else {
                    answers[j] = Err(EmbedError::Unsupported {
                        model: model.key().to_owned(),
                        what: "images",
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
            .map_err(|e| EmbedError::Backend {
                model: model.key().to_owned(),
                message: e.to_string(),
            });
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
        let result = model.forward_images(&batch);
        scatter(&mut answers, chunk.iter().copied(), result);
    }
    answers
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

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize) -> Encoded {
        Encoded {
            ids: vec![1; n],
            pool_from: 0,
            truncated: false,
        }
    }

    #[test]
    fn packing_respects_the_token_budget_and_the_batch_size() {
        let items: Vec<Encoded> = [5, 100, 7, 100, 60, 3, 64].into_iter().map(enc).collect();
        let refs: Vec<&Encoded> = items.iter().collect();
        let limits = BatchLimits {
            max_batch_tokens: 200,
            max_batch_size: 3,
            max_queued: 1,
        };
        let groups = pack(&refs, limits);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..items.len()).collect::<Vec<_>>(),
            "every item exactly once"
        );
        for g in &groups {
            let longest = g.iter().map(|&i| items[i].len()).max().unwrap();
            assert!(g.len() <= 3 && g.len() * longest <= 200, "{g:?}");
        }
        // Longest first: the two 100-token texts share the first pass.
        assert_eq!(groups[0], vec![1, 3]);
    }

    #[test]
    fn an_input_longer_than_the_budget_still_gets_its_own_pass() {
        let items = [enc(300), enc(10)];
        let refs: Vec<&Encoded> = items.iter().collect();
        let groups = pack(
            &refs,
            BatchLimits {
                max_batch_tokens: 100,
                max_batch_size: 8,
                max_queued: 1,
            },
        );
        assert_eq!(groups, vec![vec![0], vec![1]]);
    }
}
