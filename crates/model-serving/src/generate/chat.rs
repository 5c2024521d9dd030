//! Chat templates: each model's own prompt format, as its `tokenizer_config.json`
//! `chat_template` renders a conversation with `add_generation_prompt=True`, written out in
//! Rust (the templates are short and fixed; no Jinja engine is needed to serve these models).

use std::fmt;

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

/// A model's prompt format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatTemplate {
    /// Phi-4: `<|im_start|>user<|im_sep|>…<|im_end|>` (spec name `chatml-phi`).
    Phi4,
    /// Qwen: `<|im_start|>user\n…<|im_end|>\n` (spec name `chatml`).
    ChatMl,
    /// LLaVA 1.5 (llava-hf): `USER: <image>\n… ASSISTANT:`.
    Llava15,
    /// Kimi K2: `<|im_user|>user<|im_middle|>…<|im_end|>`.
    Kimi,
}

impl ChatTemplate {
    /// The template a spec's `chat_template` serving fact names (`chatml-phi`, `chatml`,
    /// `kimi`, or the LLaVA format string itself).
    pub fn from_spec_name(name: &str) -> Option<Self> {
        match name {
            "chatml-phi" => Some(ChatTemplate::Phi4),
            "chatml" => Some(ChatTemplate::ChatMl),
            "kimi" => Some(ChatTemplate::Kimi),
            s if s.starts_with("USER: <image>") => Some(ChatTemplate::Llava15),
            _ => None,
        }
    }

    /// The image placeholder the template puts in the first user turn (LLaVA only).
    pub const IMAGE_PLACEHOLDER: &'static str = "<image>";

    /// Renders `messages` and the start of the assistant's turn. With `image`, the
    /// placeholder goes in front of the first user message (LLaVA).
    pub fn render(self, messages: &[ChatMessage], image: bool) -> String {
        let mut out = String::new();
        let mut image_pending = image;
        let im_start = |_: Role| "<|im_start|>";
        match self {
            ChatTemplate::Phi4 => im_turns(&mut out, messages, im_start, "<|im_sep|>", ""),
            ChatTemplate::ChatMl => im_turns(&mut out, messages, im_start, "\n", "\n"),
            ChatTemplate::Llava15 => {
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
            ChatTemplate::Kimi => {
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

    /// Tokens that end the assistant's turn (looked up in the vocabulary; those it lacks are
    /// ignored).
    pub fn end_tokens(self) -> &'static [&'static str] {
        match self {
            ChatTemplate::Phi4 | ChatTemplate::ChatMl => &["<|im_end|>", "<|endoftext|>"],
            ChatTemplate::Llava15 => &["</s>"],
            ChatTemplate::Kimi => &["<|im_end|>"],
        }
    }
}

/// ChatML-style turns: `{open}{role}{sep}{content}<|im_end|>{end}` for each message, `open`
/// being the opening tag of its role, then the assistant's `{open}assistant{sep}`.
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

impl fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChatTemplate::Phi4 => "chatml-phi",
            ChatTemplate::ChatMl => "chatml",
            ChatTemplate::Llava15 => "llava-1.5",
            ChatTemplate::Kimi => "kimi",
        })
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

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello."),
            ChatMessage::user("Sum 2+2"),
        ]
    }

    #[test]
    fn each_model_gets_its_own_format() {
        assert_eq!(
            ChatTemplate::Phi4.render(&conversation(), false),
            "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>\
             <|im_start|>assistant<|im_sep|>Hello.<|im_end|><|im_start|>user<|im_sep|>Sum 2+2<|im_end|>\
             <|im_start|>assistant<|im_sep|>"
        );
        assert_eq!(
            ChatTemplate::ChatMl.render(&[ChatMessage::user("Hi")], false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::Llava15.render(&[ChatMessage::user("What is shown?")], true),
            "USER: <image>\nWhat is shown? ASSISTANT:"
        );
        let kimi = ChatTemplate::Kimi.render(&[ChatMessage::user("Hi")], false);
        assert!(kimi.starts_with("<|im_system|>system<|im_middle|>You are Kimi"));
        assert!(kimi.ends_with(
            "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
        ));
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
}
