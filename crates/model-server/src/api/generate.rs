//! `POST /v1/chat/completions` and `POST /v1/completions`: one generation each, answered whole
//! or streamed as server-sent events (`data: {chunk}` per token, then the finish reason, the
//! usage when `stream_options.include_usage`, and `data: [DONE]`).
//!
//! Chat messages are `system` (or `developer`), `user` and `assistant` turns, rendered with the
//! model's chat template; content is a string or an array of `text` and `image_url` parts, the
//! latter a data URL (LLaVA takes one image per request, placed in the first user turn).
//! Options: `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop` (a
//! string or an array), `stream`, `stream_options.include_usage`, `n` (1 only); extensions
//! `top_k` and `repetition_penalty`. Text completions take a raw `prompt` (no template), the
//! same options, `echo`, and default to 16 new tokens as OpenAI's do; chat completions default
//! to the rest of the context (capped at the model's output limit).
//!
//! A client that disconnects mid-stream drops the stream, which cancels the generation: the
//! worker stops before its next token and returns the lease and the KV reservation.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use image::DynamicImage;
use model_serving::generate::FinishReason;
use model_serving::{ChatMessage, GenerateRequest, Role, TokenStream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Timer, data_url_image, response_id, unix_now};
use crate::error::ApiError;
use crate::extract::{Body, parse};
use crate::server::AppState;

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// The options chat and text completions share.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// Most new tokens.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Most new tokens (chat; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// 0 – 2; 0 is greedy.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Stream options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Choices: 1 only.
    #[serde(default)]
    pub n: Option<u32>,
    /// Extension: top-k sampling.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Extension: repetition penalty (> 0, 1 is none).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
}

/// A chat message's content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, as a data URL.
    ImageUrl {
        /// `{"url": "data:image/png;base64,…"}`.
        image_url: ImageUrl,
    },
}

/// `image_url`.
#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    /// The data URL.
    pub url: String,
}

/// A message's content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<Part>),
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The content (`null` for an empty assistant turn).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
}

/// `prompt`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One prompt.
    One(String),
    /// Prompts (one only).
    Many(Vec<String>),
    /// Token ids: refused.
    Tokens(Vec<serde_json::Value>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The model.
    pub model: String,
    /// The raw prompt.
    pub prompt: PromptInput,
    /// Put the prompt in front of the answer.
    #[serde(default)]
    pub echo: Option<bool>,
}

/// Which API a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completion,
}

impl Api {
    fn endpoint(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completion => "/v1/completions",
        }
    }

    fn input(self) -> &'static str {
        match self {
            Api::Chat => "messages",
            Api::Completion => "prompt",
        }
    }
}

/// One generation to run.
struct Job {
    api: Api,
    model: String,
    request: GenerateRequest,
    image: Option<DynamicImage>,
    stream: bool,
    include_usage: bool,
    echo: Option<String>,
}

/// The request and its options, each parsed from the body on its own so that an error names
/// its field (`serde(flatten)` would lose the path).
fn parse_with_options<T: DeserializeOwned>(body: &[u8]) -> Result<(T, Options), ApiError> {
    Ok((parse(body)?, parse(body)?))
}

/// The chat handler.
pub async fn chat(State(state): State<AppState>, Body(body): Body) -> Response {
    handle::<ChatRequest>(state, Api::Chat, &body, |r| &r.model, chat_job).await
}

/// The text-completion handler.
pub async fn completions(State(state): State<AppState>, Body(body): Body) -> Response {
    handle::<CompletionRequest>(state, Api::Completion, &body, |r| &r.model, completion_job).await
}

/// Parses the request and its options, turns them into a job and runs it.
async fn handle<T: DeserializeOwned>(
    state: AppState,
    api: Api,
    body: &[u8],
    model: fn(&T) -> &str,
    job: fn(T, &Options) -> Result<Job, ApiError>,
) -> Response {
    let (req, options) = match parse_with_options::<T>(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let timer = Timer::start(&state, api.endpoint(), model(&req));
    match job(req, &options) {
        Ok(job) => run(state, job, timer).await,
        Err(e) => refuse(timer, e),
    }
}

fn refuse(mut timer: Timer, e: ApiError) -> Response {
    timer.finish(e.status.as_u16());
    e.into_response()
}

fn chat_job(req: ChatRequest, options: &Options) -> Result<Job, ApiError> {
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut image = None;
    for (i, m) in req.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!(
                        "role `{other}` is not one of `system`, `developer`, `user`, `assistant`"
                    ),
                ));
            }
        };
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut texts = Vec::new();
                for (k, part) in parts.into_iter().enumerate() {
                    match part {
                        Part::Text { text } => texts.push(text),
                        Part::ImageUrl { image_url } => {
                            let param = format!("messages[{i}].content[{k}].image_url");
                            if image.is_some() {
                                return Err(ApiError::invalid(
                                    param,
                                    "one image per request: LLaVA 1.5 takes exactly one",
                                ));
                            }
                            if role != Role::User {
                                return Err(ApiError::invalid(param, "images go in user messages"));
                            }
                            image = Some(data_url_image(&image_url.url, &param, 0)?);
                        }
                    }
                }
                texts.join("\n")
            }
        };
        messages.push(ChatMessage { role, content });
    }
    let max = options.max_completion_tokens.or(options.max_tokens);
    let (request, stream, include_usage) = request(GenerateRequest::chat(messages), options, max)?;
    Ok(Job {
        api: Api::Chat,
        model: req.model,
        request,
        image,
        stream,
        include_usage,
        echo: None,
    })
}

fn completion_job(req: CompletionRequest, options: &Options) -> Result<Job, ApiError> {
    let prompt = match req.prompt {
        PromptInput::One(p) => p,
        PromptInput::Many(mut ps) if ps.len() == 1 => ps.remove(0),
        PromptInput::Many(ps) => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "{} prompts in one request; send one prompt per request",
                    ps.len()
                ),
            ));
        }
        PromptInput::Tokens(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "token arrays are not accepted; send the prompt text",
            ));
        }
    };
    // OpenAI's completions default to 16 new tokens.
    let max = options.max_tokens.or(Some(16));
    let echo = req.echo.unwrap_or(false).then(|| prompt.clone());
    let (request, stream, include_usage) = request(GenerateRequest::raw(prompt), options, max)?;
    Ok(Job {
        api: Api::Completion,
        model: req.model,
        request,
        image: None,
        stream,
        include_usage,
        echo,
    })
}

/// The pool request for `o`: each value range-checked here so that the error names its field.
fn request(
    mut r: GenerateRequest,
    o: &Options,
    max_tokens: Option<u64>,
) -> Result<(GenerateRequest, bool, bool), ApiError> {
    if let Some(n) = o.n
        && n != 1
    {
        return Err(ApiError::invalid(
            "n",
            format!("n = {n}: one choice per request only"),
        ));
    }
    if let Some(m) = max_tokens {
        if m == 0 {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        r.max_tokens = Some(usize::try_from(m).unwrap_or(usize::MAX));
    }
    if let Some(t) = o.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature = {t} is not in [0, 2]"),
            ));
        }
        r.sampling.temperature = Some(t);
    }
    if let Some(p) = o.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p = {p} is not in (0, 1]"),
            ));
        }
        r.sampling.top_p = Some(p);
    }
    if let Some(k) = o.top_k {
        r.sampling.top_k = Some(k);
    }
    if let Some(p) = o.repetition_penalty {
        if !(p.is_finite() && p > 0.0) {
            return Err(ApiError::invalid(
                "repetition_penalty",
                format!("repetition_penalty = {p} must be > 0"),
            ));
        }
        r.sampling.repetition_penalty = Some(p);
    }
    if let Some(s) = o.seed {
        r.sampling.seed = Some(s as u64);
    }
    r.stop = match &o.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if r.stop.len() > 16 || r.stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop takes at most 16 strings, none empty",
        ));
    }
    let stream = o.stream.unwrap_or(false);
    let include_usage = o.stream_options.as_ref().is_some_and(|s| s.include_usage);
    Ok((r, stream, include_usage))
}

async fn run(state: AppState, job: Job, mut timer: Timer) -> Response {
    let pool = &state.pool;
    let input = job.api.input();
    let start = async {
        match job.image {
            Some(image) => {
                pool.describe_image_with(&job.model, image, job.request)
                    .await
            }
            None => pool.generate(&job.model, job.request).await,
        }
    };
    let tokens = match state.run(start).await {
        Err(e) => return refuse(timer, e),
        Ok(Err(e)) => return refuse(timer, ApiError::from_serve(&e, input, pool)),
        Ok(Ok(t)) => t,
    };
    state
        .metrics
        .queue_wait(&job.model, timer.started.elapsed());
    let answer = Answer {
        api: job.api,
        id: response_id(match job.api {
            Api::Chat => "chatcmpl",
            Api::Completion => "cmpl",
        }),
        created: unix_now(),
        model: job.model,
        echo: job.echo,
    };
    if job.stream {
        let live = Live {
            state: state.clone(),
            tokens,
            answer,
            timer,
            first_token: None,
            phase: Phase::Start,
            include_usage: job.include_usage,
        };
        return Sse::new(events(live))
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    collect(&state, tokens, answer, &mut timer).await
}

/// The answer's identity.
struct Answer {
    api: Api,
    id: String,
    created: u64,
    model: String,
    echo: Option<String>,
}

fn finish_name(f: Option<&FinishReason>) -> &'static str {
    match f {
        Some(FinishReason::MaxTokens) => "length",
        _ => "stop",
    }
}

#[derive(Serialize, Clone, Copy)]
struct UsageOut {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

fn usage_of(t: &TokenStream) -> UsageOut {
    let u = t.usage().unwrap_or_default();
    UsageOut {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens + u.completion_tokens,
    }
}

/// Records a finished generation's speed and logs it.
fn finished(
    state: &AppState,
    answer: &Answer,
    tokens: &TokenStream,
    first: Option<Instant>,
    started: Instant,
) {
    let usage = tokens.usage().unwrap_or_default();
    let rate = usage.decode_tokens_per_second();
    state.metrics.tokens_per_second(&answer.model, rate);
    tracing::info!(
        target: "model_server::access",
        model = %answer.model,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        finish = finish_name(tokens.finish_reason()),
        ttft_ms = first.map(|f| (f - started).as_secs_f64() * 1e3),
        tokens_per_s = rate,
        "generation finished"
    );
}

async fn collect(
    state: &AppState,
    mut tokens: TokenStream,
    answer: Answer,
    timer: &mut Timer,
) -> Response {
    let mut text = answer.echo.clone().unwrap_or_default();
    let mut first = None;
    loop {
        match state.run(tokens.next_token()).await {
            Err(e) => return refuse_in_place(timer, e),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return refuse_in_place(
                    timer,
                    ApiError::from_serve(&e, answer.api.input(), &state.pool),
                );
            }
            Ok(Some(Ok(t))) => {
                if first.is_none() {
                    let now = Instant::now();
                    state
                        .metrics
                        .first_token(&answer.model, now - timer.started);
                    first = Some(now);
                }
                text.push_str(&t.text);
            }
        }
    }
    finished(state, &answer, &tokens, first, timer.started);
    let finish_reason = finish_name(tokens.finish_reason());
    let usage = usage_of(&tokens);
    let body = match answer.api {
        Api::Chat => serde_json::json!({
            "id": answer.id,
            "object": "chat.completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage,
        }),
        Api::Completion => serde_json::json!({
            "id": answer.id,
            "object": "text_completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [{
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage,
        }),
    };
    timer.finish(200);
    axum::Json(body).into_response()
}

fn refuse_in_place(timer: &mut Timer, e: ApiError) -> Response {
    timer.finish(e.status.as_u16());
    e.into_response()
}

/// Where a stream is.
enum Phase {
    Start,
    Tokens,
    Usage,
    Done,
    End,
}

/// A streaming answer: owns the token stream, so dropping it (the client went away) cancels
/// the generation.
struct Live {
    state: AppState,
    tokens: TokenStream,
    answer: Answer,
    timer: Timer,
    first_token: Option<Instant>,
    phase: Phase,
    include_usage: bool,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Chunk<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

impl Live {
    /// A chunk with `text` (and the role, first) or the finish reason.
    fn chunk(&self, role: bool, text: Option<&str>, finish: Option<&'static str>) -> Event {
        let a = &self.answer;
        let json = match a.api {
            Api::Chat => serde_json::to_string(&Chunk {
                id: &a.id,
                object: "chat.completion.chunk",
                created: a.created,
                model: &a.model,
                choices: vec![ChatChoice {
                    index: 0,
                    delta: Delta {
                        role: role.then_some("assistant"),
                        content: text,
                    },
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage: None,
            }),
            Api::Completion => serde_json::to_string(&Chunk {
                id: &a.id,
                object: "text_completion",
                created: a.created,
                model: &a.model,
                choices: vec![TextChoice {
                    text: text.unwrap_or(""),
                    index: 0,
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage: None,
            }),
        };
        Event::default().data(json.unwrap_or_default())
    }

    fn usage_chunk(&self) -> Event {
        let a = &self.answer;
        let object = match a.api {
            Api::Chat => "chat.completion.chunk",
            Api::Completion => "text_completion",
        };
        let json = serde_json::to_string(&Chunk::<()> {
            id: &a.id,
            object,
            created: a.created,
            model: &a.model,
            choices: Vec::new(),
            usage: Some(usage_of(&self.tokens)),
        });
        Event::default().data(json.unwrap_or_default())
    }

    fn error(&mut self, e: ApiError) -> Event {
        self.timer.finish(e.status.as_u16());
        self.phase = Phase::End;
        let json = serde_json::to_string(&serde_json::json!({ "error": e.detail() }));
        Event::default().data(json.unwrap_or_default())
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.phase {
                Phase::Start => {
                    self.phase = Phase::Tokens;
                    match (self.answer.api, self.answer.echo.take()) {
                        (Api::Chat, _) => return Some(self.chunk(true, Some(""), None)),
                        (Api::Completion, Some(echo)) => {
                            return Some(self.chunk(false, Some(&echo), None));
                        }
                        (Api::Completion, None) => {}
                    }
                }
                Phase::Tokens => match self.state.run(self.tokens.next_token()).await {
                    Err(e) => return Some(self.error(e)),
                    Ok(Some(Ok(t))) => {
                        if self.first_token.is_none() {
                            let now = Instant::now();
                            self.state
                                .metrics
                                .first_token(&self.answer.model, now - self.timer.started);
                            self.first_token = Some(now);
                        }
                        if !t.text.is_empty() {
                            return Some(self.chunk(false, Some(&t.text), None));
                        }
                    }
                    Ok(Some(Err(e))) => {
                        let e = ApiError::from_serve(&e, self.answer.api.input(), &self.state.pool);
                        return Some(self.error(e));
                    }
                    Ok(None) => {
                        finished(
                            &self.state,
                            &self.answer,
                            &self.tokens,
                            self.first_token,
                            self.timer.started,
                        );
                        self.phase = if self.include_usage {
                            Phase::Usage
                        } else {
                            Phase::Done
                        };
                        let finish = finish_name(self.tokens.finish_reason());
                        return Some(self.chunk(false, None, Some(finish)));
                    }
                },
                Phase::Usage => {
                    self.phase = Phase::Done;
                    return Some(self.usage_chunk());
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    self.timer.finish(200);
                    return Some(Event::default().data("[DONE]"));
                }
                Phase::End => return None,
            }
        }
    }
}

fn events(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(live, |mut live| async move {
        live.next_event().await.map(|e| (Ok(e), live))
    })
}
