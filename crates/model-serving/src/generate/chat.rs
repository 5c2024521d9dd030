//! Chat templates: a model's prompt format, as the Jinja `chat_template` of its
//! `tokenizer_config.json` (or a GGUF file's `tokenizer.chat_template`) renders a conversation
//! with `add_generation_prompt=True`. Templates are rendered by minijinja, set up as Hugging
//! Face's `apply_chat_template` sets up Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls,
//! `raise_exception`, Python string and dict methods such as `.strip()` and `.items()`), and
//! compiled once, when the [`ChatTemplate`] is built; a request only renders.
//!
//! The registry's generators take their template from their spec's `chat_template` fact
//! ([`ChatTemplate::from_spec_name`]): the four formats it names are Jinja sources kept beside
//! this module (`templates/*.jinja`). A checkpoint outside the registry is served with the
//! template its own files carry ([`ChatTemplate::from_checkpoint`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use candle_core::quantized::gguf_file::Value as GgufValue;
use minijinja::{AutoEscape, Environment, context};
use model_runtime::GgufFile;

use crate::error::ServeError;

/// Who said something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person asking.
    User,
    /// The model's earlier answers.
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Why a chat template cannot be read, compiled or rendered; each names the template (the
/// caller adds the model).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The source is not a template minijinja can compile.
    #[error("chat template `{template}` does not compile: {message}")]
    Syntax {
        /// The template's name.
        template: String,
        /// The syntax error, with its line.
        message: String,
    },
    /// The template refused the conversation through `raise_exception` (roles that do not
    /// alternate, a system message where it takes none …).
    #[error("chat template `{template}` refuses the conversation: {message}")]
    Raised {
        /// The template's name.
        template: String,
        /// The template's own message.
        message: String,
    },
    /// Rendering failed otherwise (an unknown filter or function, a type error …).
    #[error("chat template `{template}` failed to render: {message}")]
    Render {
        /// The template's name.
        template: String,
        /// What failed, with its line.
        message: String,
    },
    /// The checkpoint's files could not be read for their template.
    #[error("the chat template of {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl TemplateError {
    /// The serving error of a request to `model` that this error stopped: a conversation the
    /// template refuses is an invalid request (its `messages`), any other failure a problem of
    /// the model's configuration.
    pub fn for_model(self, model: &str) -> ServeError {
        match self {
            TemplateError::Raised { .. } => {
                ServeError::invalid_field(model, "messages", self.to_string())
            }
            other => ServeError::Config {
                model: model.to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

/// A model's prompt format: a Jinja chat template, compiled, with the special tokens it is
/// rendered with and the tokens that end the assistant's turn. Cloning is cheap (shared).
#[derive(Clone)]
pub struct ChatTemplate(Arc<Compiled>);

#[derive(Clone)]
struct Compiled {
    name: String,
    source: String,
    bos_token: String,
    eos_token: String,
    end_tokens: Vec<String>,
    env: Environment<'static>,
}

/// One message as templates see it: `{role, content}`.
#[derive(serde::Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: &'a str,
}

/// The marker `raise_exception` puts on its error, to tell a template's refusal from a
/// failure.
#[derive(Debug)]
struct Raised;

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for Raised {}

/// `raise_exception(message)`, as Hugging Face templates call it: rendering fails with
/// `message`.
fn raise_exception(message: String) -> Result<minijinja::Value, minijinja::Error> {
    Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message).with_source(Raised))
}

/// A minijinja error with its location and causes, on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if !s.is::<Raised>() {
            out.push_str(": ");
            out.push_str(&s.to_string());
        }
        source = s.source();
    }
    out
}

/// End-of-turn markers of common chat formats: a template from a checkpoint's files ends the
/// answer at those its source writes, besides its end-of-sequence token.
const END_OF_TURN_MARKERS: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
];

static PHI4: LazyLock<ChatTemplate> = LazyLock::new(|| {
    builtin(
        "chatml-phi",
        include_str!("templates/chatml-phi.jinja"),
        &["<|im_end|>", "<|endoftext|>"],
    )
});
static CHATML: LazyLock<ChatTemplate> = LazyLock::new(|| {
    builtin(
        "chatml",
        include_str!("templates/chatml.jinja"),
        &["<|im_end|>", "<|endoftext|>"],
    )
});
static LLAVA15: LazyLock<ChatTemplate> = LazyLock::new(|| {
    builtin(
        "llava-1.5",
        include_str!("templates/llava-1.5.jinja"),
        &["</s>"],
    )
});
static KIMI: LazyLock<ChatTemplate> = LazyLock::new(|| {
    builtin(
        "kimi",
        include_str!("templates/kimi.jinja"),
        &["<|im_end|>"],
    )
});

/// One of the templates shipped with the crate (their compilation is tested): no BOS token,
/// the first end token as the EOS token.
fn builtin(name: &str, source: &'static str, end_tokens: &[&str]) -> ChatTemplate {
    ChatTemplate::new(name, source)
        .unwrap_or_else(|e| panic!("the built-in chat template does not compile: {e}"))
        .with_special_tokens("", end_tokens[0])
        .with_end_tokens(end_tokens.iter().copied())
}

impl ChatTemplate {
    /// Compiles the Jinja template `source`, known as `name` (in errors and in
    /// [`Display`](fmt::Display)), with empty BOS and EOS tokens and no end tokens.
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Result<Self, TemplateError> {
        let (name, source) = (name.into(), source.into());
        let mut env = Environment::new();
        // As `transformers` configures Jinja2 for chat templates.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(name.clone(), source.clone())
            .map_err(|e| TemplateError::Syntax {
                template: name.clone(),
                message: describe(&e),
            })?;
        Ok(ChatTemplate(Arc::new(Compiled {
            name,
            source,
            bos_token: String::new(),
            eos_token: String::new(),
            end_tokens: Vec::new(),
            env,
        })))
    }

    /// Sets the `bos_token` and `eos_token` the template is rendered with.
    pub fn with_special_tokens(
        self,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Self {
        let mut c = Arc::unwrap_or_clone(self.0);
        c.bos_token = bos_token.into();
        c.eos_token = eos_token.into();
        ChatTemplate(Arc::new(c))
    }

    /// Sets the tokens that end the assistant's turn.
    pub fn with_end_tokens<S: Into<String>>(self, tokens: impl IntoIterator<Item = S>) -> Self {
        let mut c = Arc::unwrap_or_clone(self.0);
        c.end_tokens = tokens.into_iter().map(Into::into).collect();
        ChatTemplate(Arc::new(c))
    }

    /// Phi-4's format (spec name `chatml-phi`): `<|im_start|>user<|im_sep|>…<|im_end|>`.
    pub fn phi4() -> Self {
        PHI4.clone()
    }

    /// Qwen's ChatML (spec name `chatml`): `<|im_start|>user\n…<|im_end|>\n`.
    pub fn chatml() -> Self {
        CHATML.clone()
    }

    /// LLaVA 1.5 (llava-hf): `USER: <image>\n… ASSISTANT:`.
    pub fn llava15() -> Self {
        LLAVA15.clone()
    }

    /// Kimi K2: `<|im_user|>user<|im_middle|>…<|im_end|>`, with Kimi's default system message
    /// when the conversation has none.
    pub fn kimi() -> Self {
        KIMI.clone()
    }

    /// The template a spec's `chat_template` serving fact names (`chatml-phi`, `chatml`,
    /// `kimi`, or the LLaVA format string itself).
    pub fn from_spec_name(name: &str) -> Option<Self> {
        match name {
            "chatml-phi" => Some(Self::phi4()),
            "chatml" => Some(Self::chatml()),
            "kimi" => Some(Self::kimi()),
            s if s.starts_with("USER: <image>") => Some(Self::llava15()),
            _ => None,
        }
    }

    /// The image placeholder the template puts in the first user turn (LLaVA only).
    pub const IMAGE_PLACEHOLDER: &'static str = "<image>";

    /// The template's name (the spec's format, or the file it came from).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// The `bos_token` the template is rendered with.
    pub fn bos_token(&self) -> &str {
        &self.0.bos_token
    }

    /// The `eos_token` the template is rendered with.
    pub fn eos_token(&self) -> &str {
        &self.0.eos_token
    }

    /// Tokens that end the assistant's turn (looked up in the vocabulary; those it lacks are
    /// ignored).
    pub fn end_tokens(&self) -> &[String] {
        &self.0.end_tokens
    }

    /// Renders `messages` and the start of the assistant's turn, with the variables Hugging
    /// Face templates read: `messages` (`{role, content}`, roles `system`, `user` and
    /// `assistant`), `add_generation_prompt` (true), `bos_token`, `eos_token`, and `tools` and
    /// `documents` as none (what `apply_chat_template` passes without tools). `image` tells
    /// the template that the request carries an image: LLaVA's puts the placeholder in front
    /// of the first user message.
    pub fn render(&self, messages: &[ChatMessage], image: bool) -> Result<String, TemplateError> {
        let c = &*self.0;
        let turns: Vec<Turn<'_>> = messages
            .iter()
            .map(|m| Turn {
                role: role_name(m.role),
                content: &m.content,
            })
            .collect();
        let failed = |e: minijinja::Error| {
            let raised = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                .any(|s| s.is::<Raised>());
            if raised {
                TemplateError::Raised {
                    template: c.name.clone(),
                    message: e.detail().unwrap_or_default().to_owned(),
                }
            } else {
                TemplateError::Render {
                    template: c.name.clone(),
                    message: describe(&e),
                }
            }
        };
        c.env
            .get_template(&c.name)
            .and_then(|t| {
                t.render(context! {
                    messages => turns,
                    add_generation_prompt => true,
                    bos_token => c.bos_token.as_str(),
                    eos_token => c.eos_token.as_str(),
                    tools => (),
                    documents => (),
                    image => image,
                })
            })
            .map_err(failed)
    }

    /// The template a checkpoint's own files carry: a GGUF file's `tokenizer.chat_template`
    /// metadata (with its BOS and EOS tokens looked up in its vocabulary), else, for a GGUF
    /// file the directory beside it and for a checkpoint directory the directory itself,
    /// `tokenizer_config.json`'s `chat_template` (with its `bos_token` and `eos_token`), a
    /// `chat_template.jinja` or a `chat_template.json`. `None` when there is none, or when
    /// `path` does not exist (yet). Its end tokens are its EOS token and the end-of-turn
    /// markers (`<|im_end|>`, `<|eot_id|>`, `<|end|>` …) its source writes.
    pub fn from_checkpoint(path: &Path) -> Result<Option<Self>, TemplateError> {
        if path.is_file() {
            let gguf = GgufFile::open(path).map_err(|e| TemplateError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            if let Some(t) = Self::from_gguf(&gguf)? {
                return Ok(Some(t));
            }
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            return Self::from_dir(dir);
        }
        if path.is_dir() {
            return Self::from_dir(path);
        }
        Ok(None)
    }

    /// The template in a GGUF file's `tokenizer.chat_template` metadata, `None` without one;
    /// `bos_token` and `eos_token` are the vocabulary's entries at
    /// `tokenizer.ggml.bos_token_id` and `tokenizer.ggml.eos_token_id` (empty where the file
    /// does not say).
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Self>, TemplateError> {
        let source = file
            .optional("tokenizer.chat_template", GgufFile::string)
            .map_err(|e| TemplateError::Read {
                path: file.path.clone(),
                message: e.to_string(),
            })?;
        let Some(source) = source else {
            return Ok(None);
        };
        let token = |key: &str| -> Option<String> {
            let id = file.usize(key).ok()?;
            match file.value("tokenizer.ggml.tokens").ok()? {
                GgufValue::Array(tokens) => tokens.get(id)?.to_string().ok().cloned(),
                _ => None,
            }
        };
        let name = format!("{}:tokenizer.chat_template", file.path.display());
        Self::from_file(
            name,
            source,
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        )
        .map(Some)
    }

    /// The template of a checkpoint directory: `tokenizer_config.json`'s `chat_template` (a
    /// string, or a list of `{name, template}` of which the one named `default`), else
    /// `chat_template.jinja`, else `chat_template.json`'s `chat_template`; `bos_token` and
    /// `eos_token` (strings or `{content: …}` objects) from `tokenizer_config.json`. `None`
    /// when the directory has none of them.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, TemplateError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        };
        let json = |path: &Path| -> Result<Option<serde_json::Value>, TemplateError> {
            if !path.is_file() {
                return Ok(None);
            }
            serde_json::from_str(&read(path)?)
                .map(Some)
                .map_err(|e| TemplateError::Read {
                    path: path.to_path_buf(),
                    message: format!("not valid JSON: {e}"),
                })
        };
        let config_path = dir.join("tokenizer_config.json");
        let config = json(&config_path)?;
        let in_config = config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .filter(|t| !t.is_null());
        let (path, source) = match in_config {
            Some(t) => (config_path.clone(), template_source(t, &config_path)?),
            None => {
                let jinja = dir.join("chat_template.jinja");
                let processor = dir.join("chat_template.json");
                if jinja.is_file() {
                    let source = read(&jinja)?;
                    (jinja, source)
                } else if let Some(p) = json(&processor)? {
                    let t = p.get("chat_template").unwrap_or(&serde_json::Value::Null);
                    let source = template_source(t, &processor)?;
                    (processor, source)
                } else {
                    return Ok(None);
                }
            }
        };
        let special = |key: &str| -> Option<String> {
            let v = config.as_ref()?.get(key)?;
            v.as_str()
                .or_else(|| v.get("content")?.as_str())
                .map(str::to_owned)
        };
        let name = path.display().to_string();
        Self::from_file(name, source, special("bos_token"), special("eos_token")).map(Some)
    }

    /// A template from a checkpoint's files: its EOS token and the end-of-turn markers its
    /// source writes end the answer.
    fn from_file(
        name: String,
        source: String,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, TemplateError> {
        let (bos, eos) = (bos_token.unwrap_or_default(), eos_token.unwrap_or_default());
        let mut end: Vec<String> = Vec::new();
        let markers = END_OF_TURN_MARKERS
            .iter()
            .filter(|m| source.contains(*m))
            .map(|m| (*m).to_owned());
        for t in std::iter::once(eos.clone()).chain(markers) {
            if !t.is_empty() && !end.contains(&t) {
                end.push(t);
            }
        }
        Ok(Self::new(name, source)?
            .with_special_tokens(bos, eos)
            .with_end_tokens(end))
    }
}

/// The template in a `chat_template` JSON value: a string, or the `default` of a list of
/// `{name, template}`.
fn template_source(value: &serde_json::Value, path: &Path) -> Result<String, TemplateError> {
    let bad = |message: &str| TemplateError::Read {
        path: path.to_path_buf(),
        message: message.to_owned(),
    };
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_owned)
            .ok_or_else(|| bad("`chat_template` lists templates but none named `default`")),
        _ => Err(bad(
            "`chat_template` is neither a string nor a list of {name, template}",
        )),
    }
}

impl PartialEq for ChatTemplate {
    /// Equal when the name, the source and the tokens are.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&*self.0, &*other.0);
        Arc::ptr_eq(&self.0, &other.0)
            || (a.name == b.name
                && a.source == b.source
                && a.bos_token == b.bos_token
                && a.eos_token == b.eos_token
                && a.end_tokens == b.end_tokens)
    }
}

impl Eq for ChatTemplate {}

impl std::hash::Hash for ChatTemplate {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
        self.0.source.hash(state);
    }
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.0.name)
            .field("source_bytes", &self.0.source.len())
            .field("bos_token", &self.0.bos_token)
            .field("eos_token", &self.0.eos_token)
            .field("end_tokens", &self.0.end_tokens)
            .finish()
    }
}

impl fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formats as they were written in Rust before the templates were Jinja: the
    /// reference the Jinja sources must reproduce byte for byte.
    mod reference {
        use super::super::{ChatMessage, Role, role_name};

        #[derive(Debug, Clone, Copy)]
        pub enum Format {
            Phi4,
            ChatMl,
            Llava15,
            Kimi,
        }

        pub fn render(format: Format, messages: &[ChatMessage], image: bool) -> String {
            let mut out = String::new();
            let mut image_pending = image;
            let im_start = |_: Role| "<|im_start|>";
            match format {
                Format::Phi4 => im_turns(&mut out, messages, im_start, "<|im_sep|>", ""),
                Format::ChatMl => im_turns(&mut out, messages, im_start, "\n", "\n"),
                Format::Llava15 => {
                    for m in messages {
                        match m.role {
                            Role::System => {}
                            Role::User => out.push_str("USER: "),
                            Role::Assistant => out.push_str("ASSISTANT: "),
                        }
                        if m.role == Role::User && std::mem::take(&mut image_pending) {
                            out.push_str("<image>\n");
                        }
                        out.push_str(&m.content);
                        out.push(' ');
                    }
                    out.push_str("ASSISTANT:");
                }
                Format::Kimi => {
                    if !messages.iter().any(|m| m.role == Role::System) {
                        out.push_str("<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>");
                    }
                    let open = |role: Role| match role {
                        Role::System => "<|im_system|>",
                        Role::User => "<|im_user|>",
                        Role::Assistant => "<|im_assistant|>",
                    };
                    im_turns(&mut out, messages, open, "<|im_middle|>", "");
                }
            }
            out
        }

        /// ChatML-style turns: `{open}{role}{sep}{content}<|im_end|>{end}` for each message,
        /// `open` being the opening tag of its role, then the assistant's `{open}assistant{sep}`.
        fn im_turns(
            out: &mut String,
            messages: &[ChatMessage],
            open: fn(Role) -> &'static str,
            sep: &str,
            end: &str,
        ) {
            for m in messages {
                let (tag, role) = (open(m.role), role_name(m.role));
                out.push_str(&format!("{tag}{role}{sep}{}<|im_end|>{end}", m.content));
            }
            out.push_str(&format!("{}assistant{sep}", open(Role::Assistant)));
        }
    }

    use reference::Format;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello."),
            ChatMessage::user("Sum 2+2"),
        ]
    }

    /// Conversations the golden test renders: with and without a system message, one user
    /// message, several turns, system messages later on, and content that looks like Jinja,
    /// quotes, newlines, markers, unicode, spaces and nothing at all.
    fn conversations() -> Vec<Vec<ChatMessage>> {
        vec![
            conversation(),
            vec![ChatMessage::user("Hi")],
            vec![ChatMessage::system("Only a system message.")],
            vec![
                ChatMessage::user("What is 2+2?"),
                ChatMessage::assistant("4"),
                ChatMessage::user("And 3+3?"),
                ChatMessage::assistant("6"),
                ChatMessage::user("Thanks!"),
            ],
            vec![
                ChatMessage::user("first"),
                ChatMessage::system("A system message later on."),
                ChatMessage::user("second"),
                ChatMessage::system("And another."),
            ],
            vec![
                ChatMessage::assistant("An assistant speaks first."),
                ChatMessage::user("ok"),
            ],
            vec![
                ChatMessage::system("{{ raise_exception('no') }} {% if x %}y{% endif %} {# c #}"),
                ChatMessage::user(
                    "Quotes: 'single' \"double\" `back`\nline two\r\n\ttabbed\\n {{ bos_token }}",
                ),
                ChatMessage::assistant("<|im_end|><|im_start|>user<image></s>USER: ASSISTANT:"),
                ChatMessage::user("Unicode: héllo — 日本語 🚀 \u{0}\u{200b} ⟨{{⟩ }}"),
            ],
            vec![
                ChatMessage::user("  padded  \n\n"),
                ChatMessage::assistant(""),
                ChatMessage::user(""),
            ],
        ]
    }

    #[test]
    fn the_jinja_templates_render_the_rust_formats_byte_for_byte() {
        let formats = [
            (Format::Phi4, ChatTemplate::phi4()),
            (Format::ChatMl, ChatTemplate::chatml()),
            (Format::Llava15, ChatTemplate::llava15()),
            (Format::Kimi, ChatTemplate::kimi()),
        ];
        for (format, template) in formats {
            for (i, messages) in conversations().iter().enumerate() {
                for image in [false, true] {
                    let want = reference::render(format, messages, image);
                    let got = template.render(messages, image).unwrap();
                    assert_eq!(
                        got, want,
                        "{format:?} ({template}), conversation {i}, image {image}"
                    );
                }
            }
        }
    }

    #[test]
    fn each_model_gets_its_own_format() {
        assert_eq!(
            ChatTemplate::phi4().render(&conversation(), false).unwrap(),
            "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>\
             <|im_start|>assistant<|im_sep|>Hello.<|im_end|><|im_start|>user<|im_sep|>Sum 2+2<|im_end|>\
             <|im_start|>assistant<|im_sep|>"
        );
        assert_eq!(
            ChatTemplate::chatml()
                .render(&[ChatMessage::user("Hi")], false)
                .unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::llava15()
                .render(&[ChatMessage::user("What is shown?")], true)
                .unwrap(),
            "USER: <image>\nWhat is shown? ASSISTANT:"
        );
        assert_eq!(
            ChatTemplate::llava15()
                .render(&[ChatMessage::user("What is shown?")], false)
                .unwrap(),
            "USER: What is shown? ASSISTANT:"
        );
        let kimi = ChatTemplate::kimi()
            .render(&[ChatMessage::user("Hi")], false)
            .unwrap();
        assert!(kimi.starts_with("<|im_system|>system<|im_middle|>You are Kimi"));
        assert!(kimi.ends_with(
            "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
        ));
        let kimi = ChatTemplate::kimi()
            .render(
                &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
                false,
            )
            .unwrap();
        assert!(!kimi.contains("You are Kimi"), "{kimi}");
    }

    #[test]
    fn every_registry_generator_names_a_known_template() {
        use model_registry::Capability;
        for m in model_registry::ALL
            .iter()
            .filter(|m| matches!(m.capability, Capability::TextToText | Capability::Vision))
        {
            let name = m.serving.chat_template.unwrap_or_default();
            assert!(
                ChatTemplate::from_spec_name(name).is_some(),
                "{}: spec says `{name}`",
                m.registry_key
            );
        }
    }

    #[test]
    fn spec_names_pick_the_shipped_templates_with_their_end_tokens() {
        let pick = |name| ChatTemplate::from_spec_name(name).unwrap();
        assert_eq!(pick("chatml-phi"), ChatTemplate::phi4());
        assert_eq!(pick("chatml"), ChatTemplate::chatml());
        assert_eq!(pick("kimi"), ChatTemplate::kimi());
        assert_eq!(
            pick("USER: <image>\\n{prompt} ASSISTANT:"),
            ChatTemplate::llava15()
        );
        assert_eq!(ChatTemplate::from_spec_name("alpaca"), None);
        assert_ne!(ChatTemplate::phi4(), ChatTemplate::chatml());
        let names: Vec<String> = [
            ChatTemplate::phi4(),
            ChatTemplate::chatml(),
            ChatTemplate::llava15(),
            ChatTemplate::kimi(),
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        assert_eq!(names, ["chatml-phi", "chatml", "llava-1.5", "kimi"]);
        assert_eq!(
            ChatTemplate::phi4().end_tokens(),
            ["<|im_end|>", "<|endoftext|>"]
        );
        assert_eq!(
            ChatTemplate::chatml().end_tokens(),
            ["<|im_end|>", "<|endoftext|>"]
        );
        assert_eq!(ChatTemplate::llava15().end_tokens(), ["</s>"]);
        assert_eq!(ChatTemplate::kimi().end_tokens(), ["<|im_end|>"]);
        assert_eq!(ChatTemplate::chatml().eos_token(), "<|im_end|>");
        // A built-in template is compiled once and shared.
        assert!(Arc::ptr_eq(
            &ChatTemplate::chatml().0,
            &ChatTemplate::chatml().0
        ));
    }

    #[test]
    fn hugging_face_template_features_work() {
        // Python string and dict methods, loop controls, `tojson`, the special tokens and
        // `tools` as none, as Hugging Face templates use them.
        let source = "{{- bos_token }}\
            {%- if tools is not none %}{{ raise_exception('tools') }}{% endif %}\
            {%- for message in messages %}\
            {%- if message['role'] == 'system' %}{% continue %}{% endif %}\
            {%- if message.role.startswith('u') %}[{{ message['content'].strip().upper() }}]\
            {%- else %}({{ message.content | trim }}){{ eos_token }}{% endif %}\
            {%- if loop.last %}{% break %}{% endif %}\
            {%- endfor %}\
            {%- for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}\
            {{- {'k': 'v'} | tojson }}\
            {%- if add_generation_prompt %}>{% endif %}";
        let t = ChatTemplate::new("hf-style", source)
            .unwrap()
            .with_special_tokens("<s>", "</s>");
        let messages = [
            ChatMessage::system("ignored"),
            ChatMessage::user("  hi  "),
            ChatMessage::assistant(" yo "),
        ];
        assert_eq!(
            t.render(&messages, false).unwrap(),
            "<s>[HI](yo)</s>a=1{\"k\":\"v\"}>"
        );
        assert_eq!((t.bos_token(), t.eos_token()), ("<s>", "</s>"));
        assert_eq!(t.name(), "hf-style");
        assert_eq!(t.source(), source);
    }

    #[test]
    fn template_errors_name_the_template_and_never_panic() {
        let strict = ChatTemplate::new(
            "alternating",
            "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}\
             {{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}\
             {{ m.content }}{% endfor %}",
        )
        .unwrap();
        assert_eq!(
            strict.render(&[ChatMessage::user("a")], false).unwrap(),
            "a"
        );
        let err = strict
            .render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
            .unwrap_err();
        assert_eq!(
            err,
            TemplateError::Raised {
                template: "alternating".into(),
                message: "Conversation roles must alternate user/assistant".into()
            }
        );
        let serve = err.for_model("my/model");
        assert!(
            matches!(
                &serve,
                ServeError::InvalidRequest {
                    param: Some("messages"),
                    ..
                }
            ),
            "{serve:?}"
        );
        assert_eq!(
            serve.to_string(),
            "model `my/model`: invalid request: chat template `alternating` refuses the \
             conversation: Conversation roles must alternate user/assistant"
        );

        let syntax =
            ChatTemplate::new("broken", "{% for m in messages %}{{ m.content }}").unwrap_err();
        assert!(matches!(&syntax, TemplateError::Syntax { template, .. } if template == "broken"));
        assert!(
            syntax
                .to_string()
                .starts_with("chat template `broken` does not compile: syntax error"),
            "{syntax}"
        );

        let unknown = ChatTemplate::new("unknown-filter", "{{ messages | no_such_filter }}");
        let err = match unknown {
            Ok(t) => t.render(&[ChatMessage::user("a")], false).unwrap_err(),
            Err(e) => e,
        };
        assert!(err.to_string().contains("`unknown-filter`"), "{err}");
        let serve = err.for_model("my/model");
        assert!(
            serve
                .to_string()
                .starts_with("model `my/model`: chat template `unknown-filter`"),
            "{serve}"
        );
    }
}
