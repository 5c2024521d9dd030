//! A checkpoint outside the registry is served with the chat template its own files carry: a
//! GGUF file's `tokenizer.chat_template` metadata (BOS and EOS tokens from its vocabulary), or
//! the `tokenizer_config.json` beside the weights (a string, or a list with a `default`;
//! `bos_token` and `eos_token` as strings or `{content}` objects). The prompt a request runs is
//! the template's rendering, token for token; a template set explicitly wins; a checkpoint
//! without one keeps its messages joined with newlines; a broken one is an error naming the
//! file, and the model is still served.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{self, Content, Value};
use model_fixtures::decode::{self, Geometry};
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::Backend;
use model_runtime::GgufFile;
use model_serving::generate::chat::TemplateError;
use model_serving::generate::{ChatTemplate, Generation};
use model_serving::{ChatMessage, GenerateRequest, ModelPool, ServedModel};

/// A template in Hugging Face's style: BOS token, Python string methods, the EOS token after
/// the assistant's turns, `raise_exception` for a conversation it refuses.
const TEMPLATE: &str = "{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] == 'system' and not loop.first %}
        {{- raise_exception('the system message must come first') }}
    {%- endif %}
    {{- '<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'].strip() }}
    {%- if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '<|im_end|>' }}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant<|im_sep|>' }}
{%- endif %}
";

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(" Be brief. "),
        ChatMessage::user("the answer is"),
        ChatMessage::assistant("forty two"),
        ChatMessage::user("\nthe answer is\n"),
    ]
}

/// [`TEMPLATE`] rendered on [`conversation`] with `bos` and `eos`.
fn expected(bos: &str, eos: &str) -> String {
    format!(
        "{bos}<|im_start|>system<|im_sep|>Be brief.<|im_end|>\
         <|im_start|>user<|im_sep|>the answer is<|im_end|>\
         <|im_start|>assistant<|im_sep|>forty two{eos}\
         <|im_start|>user<|im_sep|>the answer is<|im_end|>\
         <|im_start|>assistant<|im_sep|>"
    )
}

fn write_gguf(path: &Path, metadata: &[(&str, Value)], tensors: &[(String, QTensor)]) {
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut File::create(path).unwrap(), &md, &ts).unwrap();
}

/// The GGUF at `src` with `extra` metadata added, written to `dst`.
fn with_metadata(src: &Path, dst: &Path, extra: Vec<(&str, Value)>) {
    let mut file = File::open(src).unwrap();
    let content = Content::read(&mut file).unwrap();
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let t = content.tensor(&mut file, name, &Device::Cpu).unwrap();
            (name.clone(), t)
        })
        .collect();
    let mut metadata: Vec<(&str, Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    metadata.extend(extra);
    write_gguf(dst, &metadata, &tensors);
}

/// A tiny Phi-3 GGUF (no template in its metadata) in a fresh directory.
fn tiny_phi3(name: &str) -> PathBuf {
    let path = model_fixtures::scratch(name).join("model.gguf");
    decode::write_phi3(&path, &Geometry::phi3(), 21);
    path
}

/// The checkpoint at `path` as a model outside the registry.
fn served(key: &str, path: &Path) -> ServedModel {
    ServedModel::with_backend(key, path, Backend::Phi3Gguf)
        .unwrap()
        .map_generate(|o| o.context_tokens(512))
        .unwrap()
}

fn template_of(model: &ServedModel) -> Option<ChatTemplate> {
    model.generate_options("generate").unwrap().template.clone()
}

fn pool(models: Vec<ServedModel>) -> ModelPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 * GIB)]).unwrap();
    ModelPool::builder()
        .governor(governor)
        .models(models)
        .build()
        .unwrap()
}

async fn generate(pool: &ModelPool, model: &str, request: GenerateRequest) -> Generation {
    let request = request.greedy().max_tokens(4);
    let stream = pool.generate(model, request).await.unwrap();
    stream.collect().await.unwrap()
}

/// A chat request to `model` runs exactly the prompt `rendered`: the same prompt tokens, and
/// (greedy) the same answer as the rendered text sent raw.
async fn runs_the_rendered_prompt(pool: &ModelPool, model: &str, gguf: &Path, rendered: &str) {
    let chat = generate(pool, model, GenerateRequest::chat(conversation())).await;
    let raw = generate(pool, model, GenerateRequest::raw(rendered)).await;
    let tokens = GgufFile::open(gguf)
        .unwrap()
        .tokenizer(None)
        .unwrap()
        .encode(rendered, true)
        .unwrap()
        .get_ids()
        .len();
    assert_eq!(chat.usage.prompt_tokens, tokens, "{model}");
    assert_eq!(raw.usage.prompt_tokens, tokens, "{model}");
    assert_eq!(chat.tokens, raw.tokens, "{model}");
}

#[test]
fn a_gguf_file_carries_its_template_and_special_tokens() {
    let path = model_fixtures::scratch("chat-template-gguf").join("vocab-only.gguf");
    let tokens = [
        "<s>",
        "</s>",
        "<|im_start|>",
        "<|im_sep|>",
        "<|im_end|>",
        "a",
    ];
    write_gguf(
        &path,
        &[
            ("general.architecture", Value::String("phi3".into())),
            ("tokenizer.chat_template", Value::String(TEMPLATE.into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(tokens.iter().map(|t| Value::String((*t).into())).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(0)),
            ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ],
        &[],
    );
    let t = ChatTemplate::from_checkpoint(&path).unwrap().unwrap();
    assert_eq!(
        t.name(),
        format!("{}:tokenizer.chat_template", path.display())
    );
    assert_eq!((t.bos_token(), t.eos_token()), ("<s>", "</s>"));
    assert_eq!(t.source(), TEMPLATE);
    // The EOS token, and the end-of-turn marker the template writes.
    assert_eq!(t.end_tokens(), ["</s>", "<|im_end|>"]);
    assert_eq!(
        t.render(&conversation(), false).unwrap(),
        expected("<s>", "</s>")
    );
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(ChatTemplate::from_gguf(&file).unwrap(), Some(t.clone()));

    // The template refuses what it refuses, naming itself.
    let refused = t
        .render(
            &[ChatMessage::user("hi"), ChatMessage::system("late")],
            false,
        )
        .unwrap_err();
    assert!(
        matches!(&refused, TemplateError::Raised { message, .. } if message == "the system message must come first"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains(t.name()), "{refused}");

    // Without the metadata and with nothing beside the file: no template.
    let bare = path.with_file_name("bare.gguf");
    write_gguf(
        &bare,
        &[("general.architecture", Value::String("phi3".into()))],
        &[],
    );
    assert_eq!(ChatTemplate::from_checkpoint(&bare).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outside_the_registry_is_prompted_with_its_own_template() {
    // The template in the GGUF's metadata.
    let plain = tiny_phi3("own-template-plain");
    let in_gguf = model_fixtures::scratch("own-template-gguf").join("model.gguf");
    with_metadata(
        &plain,
        &in_gguf,
        vec![("tokenizer.chat_template", Value::String(TEMPLATE.into()))],
    );
    // The template in a tokenizer_config.json beside the weights: one of a list, the tokens
    // as an AddedToken object and a string.
    let beside = tiny_phi3("own-template-config");
    let config = serde_json::json!({
        "bos_token": {"content": "<|endoftext|>", "lstrip": false, "special": true},
        "eos_token": "<|im_end|>",
        "chat_template": [
            {"name": "tool_use", "template": "{{ raise_exception('not this one') }}"},
            {"name": "default", "template": TEMPLATE},
        ],
    });
    std::fs::write(
        beside.with_file_name("tokenizer_config.json"),
        config.to_string(),
    )
    .unwrap();

    let from_gguf = served("tiny/gguf-template", &in_gguf);
    let from_config = served("tiny/config-template", &beside);
    let without = served("tiny/no-template", &plain);

    let t = template_of(&from_gguf).expect("the GGUF's template");
    assert_eq!(
        t.name(),
        format!("{}:tokenizer.chat_template", in_gguf.display())
    );
    // The tiny vocabulary's BOS and EOS tokens.
    assert_eq!(
        (t.bos_token(), t.eos_token()),
        ("<|endoftext|>", "<|im_end|>")
    );
    assert_eq!(t.end_tokens(), ["<|im_end|>"]);
    let c = template_of(&from_config).expect("tokenizer_config.json's template");
    assert_eq!(
        c.name(),
        beside
            .with_file_name("tokenizer_config.json")
            .display()
            .to_string()
    );
    assert_eq!(
        (c.bos_token(), c.eos_token()),
        ("<|endoftext|>", "<|im_end|>")
    );
    assert_eq!(template_of(&without), None);

    // A template set explicitly wins over the file's.
    let explicit = served("x", &in_gguf)
        .map_generate(|o| o.template(ChatTemplate::chatml()))
        .unwrap();
    assert_eq!(template_of(&explicit), Some(ChatTemplate::chatml()));

    let rendered = expected("<|endoftext|>", "<|im_end|>");
    assert_eq!(t.render(&conversation(), false).unwrap(), rendered);
    let p = pool(vec![from_gguf, from_config, without]);
    runs_the_rendered_prompt(&p, "tiny/gguf-template", &in_gguf, &rendered).await;
    runs_the_rendered_prompt(&p, "tiny/config-template", &beside, &rendered).await;
    // Without a template the messages are joined with newlines, as before.
    let joined = conversation()
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    runs_the_rendered_prompt(&p, "tiny/no-template", &plain, &joined).await;

    // A conversation the template refuses is an invalid request naming model and template.
    let err = p
        .generate(
            "tiny/gguf-template",
            GenerateRequest::chat(vec![ChatMessage::user("a"), ChatMessage::system("b")]),
        )
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("model `tiny/gguf-template`: invalid request: chat template `")
            && message.ends_with("refuses the conversation: the system message must come first"),
        "{message}"
    );
}

#[test]
fn checkpoint_directories_missing_files_and_broken_templates() {
    // A path that is not there (yet): no template, no error.
    let missing = std::env::temp_dir().join("no-such-checkpoint-dir/model.gguf");
    assert_eq!(ChatTemplate::from_checkpoint(&missing).unwrap(), None);

    // A directory with a chat_template.jinja and the tokens in tokenizer_config.json.
    let dir = model_fixtures::scratch("chat-template-dir");
    std::fs::write(dir.join("chat_template.jinja"), TEMPLATE).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": null}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_checkpoint(&dir).unwrap().unwrap();
    assert_eq!(
        t.name(),
        dir.join("chat_template.jinja").display().to_string()
    );
    assert_eq!(
        t.render(&conversation(), false).unwrap(),
        expected("<s>", "</s>")
    );
    assert_eq!(t.end_tokens(), ["</s>", "<|im_end|>"]);

    // A processor's chat_template.json.
    let processor = model_fixtures::scratch("chat-template-processor");
    std::fs::write(
        processor.join("chat_template.json"),
        serde_json::json!({ "chat_template": TEMPLATE }).to_string(),
    )
    .unwrap();
    let t = ChatTemplate::from_dir(&processor).unwrap().unwrap();
    assert_eq!(t.render(&conversation(), false).unwrap(), expected("", ""));

    // A list of templates without a `default`.
    let listed = model_fixtures::scratch("chat-template-listed");
    let config = listed.join("tokenizer_config.json");
    std::fs::write(
        &config,
        r#"{"chat_template": [{"name": "rag", "template": "x"}]}"#,
    )
    .unwrap();
    let err = ChatTemplate::from_dir(&listed).unwrap_err();
    assert!(
        matches!(&err, TemplateError::Read { path, .. } if *path == config),
        "{err:?}"
    );
    assert!(err.to_string().contains("none named `default`"), "{err}");

    // A template that does not compile: an error naming the file; the model is still served,
    // its messages joined with newlines, and a template can be set for it.
    let gguf = tiny_phi3("chat-template-broken");
    let config = gguf.with_file_name("tokenizer_config.json");
    std::fs::write(
        &config,
        r#"{"chat_template": "{% for m in messages %}{{ m.content }}"}"#,
    )
    .unwrap();
    let err = ChatTemplate::from_checkpoint(&gguf).unwrap_err();
    assert!(
        matches!(&err, TemplateError::Syntax { template, .. } if *template == config.display().to_string()),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not compile"), "{err}");
    let model = served("tiny/broken-template", &gguf);
    assert_eq!(template_of(&model), None);
    let fixed = model
        .map_generate(|o| o.template(ChatTemplate::phi4()))
        .unwrap();
    assert_eq!(template_of(&fixed), Some(ChatTemplate::phi4()));
}
