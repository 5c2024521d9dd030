//! The token stream: generation runs on a blocking thread under the request's lease and sends
//! tokens through a bounded channel; [`TokenStream`] is the receiving end, an async
//! [`Stream`](futures_core::Stream).
//!
//! Dropping the stream cancels: the worker sees it before its next step, drops the request's
//! KV cache and then its lease, which returns the reserved memory to the governor. The
//! final event is sent only after that, so a stream that has ended has released everything;
//! [`TokenStream::cancel`] waits for the same point.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use image::DynamicImage;
use model_networks::GenerativeModel;
use model_pool::{PoolError, TimeoutPhase};
use model_runtime::BackendError;
use tokio::sync::{mpsc, oneshot};

use super::sampling::Sampler;
use crate::error::ServeError;
use crate::loader::CapabilityLease;

/// One generated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedToken {
    /// Its id.
    pub id: u32,
    /// Text that became final with this token: its own text, plus text held back from earlier
    /// tokens while it could still have begun a stop string, minus text held back now for the
    /// same reason. Concatenating every token's `text` gives the answer.
    pub text: String,
    /// The end-of-sequence token (last in the stream; its own text is not part of the answer).
    pub special: bool,
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    EndOfSequence,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The text reached this stop string (which is not part of the answer).
    Stop(String),
}

/// Counts and timings of one request.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Tokens of the templated prompt (image features included).
    pub prompt_tokens: usize,
    /// Tokens generated (the end-of-sequence token included).
    pub completion_tokens: usize,
    /// Time to run the prompt (and encode the image).
    pub prefill: Duration,
    /// Time to generate after the prompt.
    pub decode: Duration,
    /// KV-cache bytes the request allocated (GGUF backends).
    pub kv_bytes: Option<u64>,
}

impl Usage {
    /// Generated tokens per second after the first one (each needs one decode step).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let steps = self.completion_tokens.saturating_sub(1);
        if steps == 0 || self.decode.is_zero() {
            return 0.0;
        }
        steps as f64 / self.decode.as_secs_f64()
    }
}

/// A finished request, collected.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The answer.
    pub text: String,
    /// Every generated token id.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Counts and timings.
    pub usage: Usage,
}

pub(crate) enum Event {
    Token(GeneratedToken),
    Done(FinishReason, Usage),
    Failed(ServeError),
}

/// The tokens of one request, as they are generated.
///
/// Yields `Ok(token)` for each token, then ends (`None`): [`finish_reason`](Self::finish_reason)
/// and [`usage`](Self::usage) are then set. A failure mid-way (timeout, backend error) is
/// yielded as one `Err` before the end. Dropping the stream cancels the request and frees its
/// KV cache and lease.
pub struct TokenStream {
    model: String,
    rx: mpsc::Receiver<Event>,
    cancel: Arc<AtomicBool>,
    released: Option<oneshot::Receiver<()>>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    prompt_tokens: usize,
    ended: bool,
}

impl TokenStream {
    /// The model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Tokens of the templated prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Why generation stopped, once the stream has ended.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish.as_ref()
    }

    /// Counts and timings, once the stream has ended.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The next token, `None` at the end.
    pub async fn next_token(&mut self) -> Option<Result<GeneratedToken, ServeError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next_token(cx)).await
    }

    /// Reads the stream to its end.
    pub async fn collect(mut self) -> Result<Generation, ServeError> {
        let (mut text, mut tokens) = (String::new(), Vec::new());
        while let Some(t) = self.next_token().await {
            let t = t?;
            text.push_str(&t.text);
            tokens.push(t.id);
        }
        match (self.finish.take(), self.usage) {
            (Some(finish), Some(usage)) => Ok(Generation {
                text,
                tokens,
                finish,
                usage,
            }),
            _ => Err(self.lost()),
        }
    }

    /// Cancels the request and waits until its KV cache and lease are released.
    pub async fn cancel(mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.rx.close();
        if let Some(released) = self.released.take() {
            let _ = released.await;
        }
    }

    fn lost(&self) -> ServeError {
        ServeError::Pool(PoolError::Internal {
            model: self.model.clone(),
            message: "the generation worker ended without a result".into(),
        })
    }

    fn poll_next_token(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<GeneratedToken, ServeError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Event::Token(t))) => Poll::Ready(Some(Ok(t))),
            Poll::Ready(Some(Event::Done(finish, usage))) => {
                self.finish = Some(finish);
                self.usage = Some(usage);
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Event::Failed(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(self.lost())))
            }
        }
    }
}

impl futures_core::Stream for TokenStream {
    type Item = Result<GeneratedToken, ServeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_token(cx)
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("model", &self.model)
            .field("prompt_tokens", &self.prompt_tokens)
            .field("finish", &self.finish)
            .finish()
    }
}

/// One request, ready to run.
pub(crate) struct Job {
    pub lease: CapabilityLease<GenerativeModel>,
    pub prompt: Vec<u32>,
    /// Prompt length with image features in place of the `<image>` token.
    pub prompt_tokens: usize,
    pub image: Option<DynamicImage>,
    pub max_tokens: usize,
    pub sampler: Sampler,
    pub stop: Vec<String>,
    pub prefill_chunk: usize,
    pub deadline: Option<(Instant, Duration)>,
}

/// Starts `job` on a blocking thread.
pub(crate) fn spawn(job: Job) -> TokenStream {
    let model = job.lease.key().to_owned();
    let prompt_tokens = job.prompt_tokens;
    let (tx, rx) = mpsc::channel(64);
    let cancel = Arc::new(AtomicBool::new(false));
    let (released_tx, released_rx) = oneshot::channel();
    let flag = Arc::clone(&cancel);
    let key = model.clone();
    tokio::task::spawn_blocking(move || {
        // The job (lease included) is dropped inside, by `run` or by unwinding, before the
        // final event and the release signal go out.
        let last = match std::panic::catch_unwind(AssertUnwindSafe(|| run(job, &tx, &flag))) {
            Ok(last) => last,
            Err(panic) => Some(Event::Failed(ServeError::Pool(
                PoolError::RequestPanicked {
                    model: key,
                    message: model_runtime::error::panic_message(panic.as_ref()),
                },
            ))),
        };
        let _ = released_tx.send(());
        if let Some(event) = last {
            let _ = tx.blocking_send(event);
        }
    });
    TokenStream {
        model,
        rx,
        cancel,
        released: Some(released_rx),
        finish: None,
        usage: None,
        prompt_tokens,
        ended: false,
    }
}

/// Runs the request; returns the final event (none when cancelled). The lease is released
/// before returning.
fn run(job: Job, tx: &mpsc::Sender<Event>, cancel: &AtomicBool) -> Option<Event> {
    let Job {
        lease,
        prompt,
        prompt_tokens,
        image,
        max_tokens,
        mut sampler,
        stop,
        prefill_chunk,
        deadline,
    } = job;
    let key = lease.key().to_owned();
    let outcome = generate(
        &lease,
        &prompt,
        prompt_tokens,
        image.as_ref(),
        max_tokens,
        &mut sampler,
        &stop,
        prefill_chunk,
        deadline,
        tx,
        cancel,
    );
    // The session (KV cache) is gone with `generate`'s frame; now the lease and its memory.
    drop(lease);
    match outcome {
        Ok(Some((finish, usage))) => Some(Event::Done(finish, usage)),
        Ok(None) => None,
        Err(Failure::Backend(m)) => Some(Event::Failed(ServeError::backend(&key, m))),
        Err(Failure::Timeout(waited)) => {
            Some(Event::Failed(ServeError::Pool(PoolError::Timeout {
                model: key,
                phase: TimeoutPhase::Running,
                waited,
            })))
        }
    }
}

enum Failure {
    Backend(BackendError),
    Timeout(Duration),
}

impl From<candle_core::Error> for Failure {
    fn from(e: candle_core::Error) -> Self {
        Failure::Backend(e.into())
    }
}

#[allow(clippy::too_many_arguments)]
fn generate(
    model: &GenerativeModel,
    prompt: &[u32],
    prompt_tokens: usize,
    image: Option<&DynamicImage>,
    max_tokens: usize,
    sampler: &mut Sampler,
    stop: &[String],
    prefill_chunk: usize,
    deadline: Option<(Instant, Duration)>,
    tx: &mpsc::Sender<Event>,
    cancel: &AtomicBool,
) -> Result<Option<(FinishReason, Usage)>, Failure> {
    let check = || -> Result<bool, Failure> {
        if cancel.load(Ordering::Relaxed) || tx.is_closed() {
            return Ok(false);
        }
        if let Some((at, timeout)) = deadline
            && Instant::now() >= at
        {
            return Err(Failure::Timeout(timeout));
        }
        Ok(true)
    };
    let started = Instant::now();
    let mut session = model
        .session(prompt_tokens + max_tokens)
        .map_err(Failure::Backend)?;
    if !check()? {
        return Ok(None);
    }
    let mut logits = session.prefill(prompt, image, prefill_chunk)?;
    let prefill = started.elapsed();
    let decode_start = Instant::now();
    let mut context: Vec<u32> = prompt.to_vec();
    // Text as it becomes final: `DecodeStream` keeps the ids since the last emitted boundary
    // and holds back a multi-byte character (or byte-fallback sequence) until it is whole.
    let mut text = model.tokenizer().decode_stream(true);
    let mut stops = StopMatcher::new(stop);
    let mut generated = 0;
    let finish = loop {
        if !check()? {
            return Ok(None);
        }
        let next = sampler.sample(&logits, &context);
        generated += 1;
        if model.end_ids().contains(&next) {
            let tail = stops.finish();
            send(
                tx,
                GeneratedToken {
                    id: next,
                    text: tail,
                    special: true,
                },
            );
            break FinishReason::EndOfSequence;
        }
        context.push(next);
        let delta = text
            .step(next)
            .map_err(|e| Failure::Backend(BackendError::Tokenizer(e.to_string())))?
            .unwrap_or_default();
        let (mut emit, matched) = stops.push(&delta);
        let last = generated == max_tokens;
        if last && matched.is_none() {
            emit.push_str(&stops.finish());
        }
        if !send(
            tx,
            GeneratedToken {
                id: next,
                text: emit,
                special: false,
            },
        ) {
            return Ok(None);
        }
        if let Some(s) = matched {
            break FinishReason::Stop(s);
        }
        if last {
            break FinishReason::MaxTokens;
        }
        logits = session.step(next)?;
    };
    let usage = Usage {
        prompt_tokens,
        completion_tokens: generated,
        prefill,
        decode: decode_start.elapsed(),
        kv_bytes: session.kv_bytes(),
    };
    Ok(Some((finish, usage)))
}

fn send(tx: &mpsc::Sender<Event>, token: GeneratedToken) -> bool {
    tx.blocking_send(Event::Token(token)).is_ok()
}

/// Cuts the text at the first stop string, holding back any tail that could still become one.
struct StopMatcher<'a> {
    stops: &'a [String],
    pending: String,
}

impl<'a> StopMatcher<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopMatcher {
            stops,
            pending: String::new(),
        }
    }

    /// Adds `delta`; returns the text now final and the stop string reached, if any.
    fn push(&mut self, delta: &str) -> (String, Option<String>) {
        self.pending.push_str(delta);
        if self.stops.is_empty() {
            return (std::mem::take(&mut self.pending), None);
        }
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, s)) = hit {
            let emit = self.pending[..at].to_owned();
            self.pending.clear();
            return (emit, Some(s.clone()));
        }
        // Hold back the longest suffix that is a proper prefix of a stop string.
        let mut keep = 0;
        for s in self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > keep && self.pending.ends_with(&s[..i]) {
                    keep = i;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let emit = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        (emit, None)
    }

    /// Releases whatever is held back.
    fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_across_tokens_and_release_false_starts() {
        let stops = vec!["</end>".to_owned(), "STOP".to_owned()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("hello <"), ("hello ".into(), None));
        assert_eq!(m.push("/e"), (String::new(), None));
        // Not a stop string after all: released.
        assert_eq!(m.push("x"), ("</ex".into(), None));
        assert_eq!(m.push(" ST"), (" ".into(), None));
        assert_eq!(m.push("OP and more"), (String::new(), Some("STOP".into())));
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("a</"), ("a".into(), None));
        assert_eq!(m.finish(), "</");
    }

    /// Streams `ids` through the decoder the worker uses; the pieces, in order.
    fn stream(tokenizer: &tokenizers::Tokenizer, ids: &[u32]) -> Vec<String> {
        let mut d = tokenizer.decode_stream(true);
        ids.iter().filter_map(|&id| d.step(id).unwrap()).collect()
    }

    /// Multi-byte characters split over several tokens, in both kinds of vocabulary: each
    /// piece streamed is whole text (no replacement character), and the pieces add up to the
    /// decoding of all the ids at once.
    #[test]
    fn streamed_text_equals_the_whole_decoding() {
        // SentencePiece-style byte fallback: "€" is the three tokens <0xE2> <0x82> <0xAC>.
        let fallback = tokenizer(
            r#"{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}"#,
            r#"{"<unk>":0,"<0xE2>":1,"<0x82>":2,"<0xAC>":3,"▁Hello":4,"▁w":5,"ö":6,"rld":7,"!":8,"▁":9,"<0xF0>":10,"<0x9F>":11,"<0x98>":12,"<0x80>":13}"#,
            "null",
        );
        // Byte-level BPE: "é" is Ã ©, "😀" is ð Ł ĺ Ģ.
        let byte_level = tokenizer(
            r#"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}"#,
            r#"{"H":0,"i":1,"Ġ":2,"Ã":3,"©":4,"Ġcaf":5,"ðŁ":6,"ĺ":7,"Ģ":8,"!":9}"#,
            r#"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}"#,
        );
        let cases: [(&tokenizers::Tokenizer, &[u32], &str); 4] = [
            (&fallback, &[4, 1, 2, 3, 5, 6, 7, 8], "Hello€ wörld!"),
            (&fallback, &[9, 10, 11, 12, 13, 4, 1, 2, 3], "😀 Hello€"),
            (&byte_level, &[0, 1, 5, 3, 4, 2, 6, 7, 8, 9], "Hi café 😀!"),
            (&byte_level, &[6, 7, 8, 3, 4], "😀é"),
        ];
        for (tok, ids, want) in cases {
            let pieces = stream(tok, ids);
            assert_eq!(tok.decode(ids, true).unwrap(), want);
            assert_eq!(pieces.concat(), want, "{pieces:?}");
            assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        }
    }

    fn tokenizer(decoder: &str, vocab: &str, pre_tokenizer: &str) -> tokenizers::Tokenizer {
        let json = format!(
            r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{pre_tokenizer},"post_processor":null,"decoder":{decoder},"model":{{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":true,"ignore_merges":false,"vocab":{vocab},"merges":[]}}}}"#
        );
        json.parse().unwrap()
    }

    #[test]
    fn usage_counts_decode_steps() {
        let u = Usage {
            completion_tokens: 11,
            decode: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(u.decode_tokens_per_second(), 5.0);
    }
}
