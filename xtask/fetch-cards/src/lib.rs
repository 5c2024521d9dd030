//! `cargo xtask fetch-cards` (this crate, run by xtask): model specs and cards from the Hub.
//!
//! For each model in `model-cards/models.toml` it resolves the revision to a commit, lists the
//! repo, downloads the small files (README, configs, indexes) into the hub cache, reads weight
//! headers by byte range (never the weights), and writes `<capability>/<slug>.toml` (facts,
//! provenance `fetched`, the commit pinned) and `<capability>/<SLUG>.md` (the card). Files are
//! written only once everything for a model was read, each by temp file + rename, so a failed or
//! interrupted fetch leaves the previous files as they were.
//!
//! The Hub client is the workspace's one, [`model_hub::HubClient`] (configured by
//! [`HubOptions`]; its failures are [`HubError`]s inside [`FetchError::Hub`]); [`hub`] adds the
//! synchronous facade, the fallback to the cache and the metadata cache fetch-cards keeps.

pub mod error;
pub mod facts;
pub mod gguf;
pub mod hub;
pub mod layout;
pub mod progress;
pub mod readme;
pub mod render;
pub mod repo;
pub mod safetensors;

pub use error::FetchError;
pub use hub::{HubOptions, Transfer};
pub use model_hub::HubError;
pub use progress::Log;

use facts::Facts;
use layout::Planned;
use model_spec::shapes::{self, TensorDesc};
use model_spec::spec::{InventoryRow, Weights};
use model_spec::{
    Component, Fact, Family, Format, LIST_FILE, ModelEntry, ModelSpec, check_repo_id, load_list,
};
use repo::RepoCtx;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where the cards link to: the public Hub, whatever endpoint the facts were read from, so a
/// card does not change with the mirror or fixture it was fetched through.
pub use model_spec::card::HUB_URL;
/// The card markdown beside a spec (`text_embedding/all-minilm-l6-v2.toml` →
/// `text_embedding/ALL-MINILM-L6-V2.md`).
pub use model_spec::card::card_path;

/// What to fetch and where to write it.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The model-cards folder holding `models.toml` (and the previous specs).
    pub cards: PathBuf,
    /// Where to write; `None` = `cards`.
    pub out: Option<PathBuf>,
    /// Registry keys to fetch; empty = every model in the list.
    pub models: Vec<String>,
    /// Overrides each entry's `revision` (default `main`).
    pub revision: Option<String>,
    /// Write nothing; report files that differ from what would be written.
    pub check: bool,
    pub hub: HubOptions,
}

/// What happened to a model's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
    /// `--check` found them different from a fresh fetch.
    Stale,
}

/// One component's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentReport {
    pub name: String,
    pub family: Family,
    pub files: Vec<String>,
    pub inventory: Vec<InventoryRow>,
}

/// One model's result.
#[derive(Debug, Clone)]
pub struct ModelReport {
    pub key: String,
    pub sha: String,
    pub spec_path: PathBuf,
    pub card_path: PathBuf,
    pub outcome: Outcome,
    pub components: Vec<ComponentReport>,
    /// Σ inventory bytes (the weights the headers describe).
    pub weight_bytes: u64,
    pub transfer: Transfer,
    pub est_memory_allocation_mb: u64,
}

impl ModelReport {
    /// Header bytes transferred as a fraction of the weight bytes, in percent.
    pub fn header_percent(&self) -> f64 {
        100.0 * self.transfer.range_bytes as f64 / self.weight_bytes.max(1) as f64
    }
}

#[derive(Debug)]
pub struct ModelFailure {
    pub key: String,
    pub error: FetchError,
}

#[derive(Debug, Default)]
pub struct RunReport {
    pub models: Vec<ModelReport>,
    pub failures: Vec<ModelFailure>,
    /// Set when the run read only the cache, with the reason.
    pub offline: Option<String>,
}

/// Fetches the selected models. `Err` only when nothing could start (unreadable list, unknown
/// `--models` key, bad endpoint); per-model failures are in [`RunReport::failures`].
pub fn run(opts: &FetchOptions, log: &mut Log) -> Result<RunReport, FetchError> {
    for k in &opts.models {
        check_repo_id(k).map_err(|m| FetchError::InvalidRepoId(format!("--models {m}")))?;
    }
    let list = load_list(&opts.cards.join(LIST_FILE))?;
    let selected: Vec<&ModelEntry> = if opts.models.is_empty() {
        list.models.iter().collect()
    } else {
        let mut v = Vec::new();
        for k in &opts.models {
            let e = list
                .models
                .iter()
                .find(|m| m.key.get_ref() == k)
                .ok_or_else(|| {
                    FetchError::Usage(format!(
                        "`{k}` is not in {}; add a [[model]] entry for it first",
                        opts.cards.join(LIST_FILE).display()
                    ))
                })?;
            v.push(e);
        }
        v
    };
    let hub = hub::Hub::new(&opts.hub)?;
    let out_dir = opts.out.clone().unwrap_or_else(|| opts.cards.clone());
    let mut report = RunReport::default();
    log.line(&format!(
        "fetch-cards: {} model(s) from {}{}",
        selected.len(),
        hub.endpoint(),
        if opts.check { " (check only)" } else { "" }
    ));
    for entry in selected {
        let key = entry.key.get_ref().clone();
        log.step(&format!("{key}: resolving"));
        match fetch_model(&hub, opts, &out_dir, entry, log) {
            Ok(m) => {
                log.line(&summary_line(&m));
                report.models.push(m);
            }
            Err(error) => {
                log.line(&format!("{key}: FAILED: {error}"));
                report.failures.push(ModelFailure { key, error });
            }
        }
        log.model_done();
    }
    report.offline = hub.offline_reason();
    if let Some(r) = &report.offline {
        log.line(&format!("note: read from the hub cache only ({r})"));
    }
    log.finish();
    Ok(report)
}

fn summary_line(m: &ModelReport) -> String {
    let t = &m.transfer;
    let tensors: u64 = m
        .components
        .iter()
        .flat_map(|c| &c.inventory)
        .map(|r| r.tensors)
        .sum();
    format!(
        "{}: {} @ {}: {} component(s), {tensors} tensors, {} weight bytes; transferred {} B of headers in {} range read(s) ({:.5}% of the weights) + {} B in {} small file(s); {} from cache; {} MB estimated",
        m.key,
        match m.outcome {
            Outcome::Written => "written",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "STALE",
        },
        &m.sha[..m.sha.len().min(12)],
        m.components.len(),
        m.weight_bytes,
        t.range_bytes,
        t.range_requests,
        m.header_percent(),
        t.file_bytes,
        t.files_downloaded,
        t.cache_hits,
        m.est_memory_allocation_mb,
    )
}

/// The previous spec (in `out`, else in `cards`), whose names and hand-recorded facts are kept.
fn base_spec(
    opts: &FetchOptions,
    out: &Path,
    entry: &ModelEntry,
    log: &mut Log,
) -> Option<ModelSpec> {
    for dir in [out, opts.cards.as_path()] {
        let p = dir.join(&entry.spec);
        if !p.exists() {
            continue;
        }
        match model_spec::load_spec(&p) {
            Ok(s) => return Some(s.spec),
            Err(e) => {
                log.line(&format!(
                    "warning: ignoring the previous spec, it does not parse: {e}"
                ));
                return None;
            }
        }
    }
    None
}

type GgufMeta = HashMap<String, candle_core::quantized::gguf_file::Value>;

/// Header of one weight file.
enum Header {
    Safetensors(Vec<TensorDesc>),
    Gguf(gguf::GgufHeader),
}

fn fetch_model(
    hub: &hub::Hub,
    opts: &FetchOptions,
    out_dir: &Path,
    entry: &ModelEntry,
    log: &mut Log,
) -> Result<ModelReport, FetchError> {
    let key = entry.key.get_ref().as_str();
    check_repo_id(key).map_err(FetchError::InvalidRepoId)?;
    let revision = opts
        .revision
        .clone()
        .or_else(|| entry.revision.clone())
        .unwrap_or_else(|| "main".into());
    let sha = hub.resolve(key, &revision)?;
    log.step(&format!("{key}: listing files at {}", &sha[..12]));
    let listing = hub.tree(key, &sha)?;
    let mut ctx = RepoCtx::new(hub, key, &sha, listing);
    let base = base_spec(opts, out_dir, entry, log);

    let files = layout::expand_files(&mut ctx, entry)?;
    let groups = layout::group(key, &files)?;
    let mut planned = layout::plan(key, entry, &groups, base.as_ref())?;

    // Headers, each file once.
    let mut headers: BTreeMap<String, Header> = BTreeMap::new();
    for f in &files {
        log.step(&format!("{key}: reading the header of {f}"));
        let mut remote = ctx.remote(f)?;
        let h = match entry.format {
            Format::Safetensors => {
                Header::Safetensors(safetensors::read_header(&mut remote, &mut ctx.transfer)?)
            }
            Format::Gguf => Header::Gguf(gguf::read_header(&mut remote, &mut ctx.transfer)?),
        };
        remote.finish(&mut ctx.transfer);
        headers.insert(f.clone(), h);
    }

    log.step(&format!("{key}: reading the model card and configs"));
    let readme = ctx.text("README.md")?.map(|t| readme::parse(&t));
    let model_index = ctx.json("model_index.json")?;
    let modules = ctx.json("modules.json")?;

    let separate: Vec<String> = entry
        .profile
        .dequantize_on_load
        .iter()
        .chain(&entry.profile.skip_on_load)
        .cloned()
        .collect();
    let mut components = Vec::new();
    let mut reports = Vec::new();
    let mut dense_out: Option<(String, u64)> = None;
    for p in &mut planned {
        let (tensors, gguf_meta) = component_tensors(key, p, &headers)?;
        if p.family.is_none() {
            p.family = Some(detect_family(
                &mut ctx,
                p,
                gguf_meta,
                model_index.as_ref(),
                modules.as_ref(),
            )?);
        }
        let family = p.family.expect("set above");
        let stage = p
            .stage
            .unwrap_or_else(|| layout::default_stage(family, entry.capability));
        check_index(&mut ctx, p, &tensors)?;

        // Facts: the previous spec's, overlaid with what the Hub says now.
        let base_comp = base
            .as_ref()
            .and_then(|b| b.components.iter().find(|c| c.name == p.name));
        let mut arch: Facts = base_comp
            .map(|c| {
                c.architecture
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                    .collect()
            })
            .unwrap_or_default();
        let cfg_path = join(&p.dir, "config.json");
        if entry.format == Format::Safetensors
            && p.prefix.is_none()
            && let Some(cfg) = ctx.json(&cfg_path)?
        {
            arch.extend(facts::config_facts(family, &cfg, &cfg_path));
        }
        if let Some(m) = gguf_meta {
            arch.extend(facts::gguf_facts(family, m, &p.files[0]));
        }
        let header_src = if p.files.len() == 1 {
            p.files[0].clone()
        } else {
            format!("{} … ({} files)", p.files[0], p.files.len())
        };
        arch.extend(facts::header_facts(
            family,
            &tensors,
            &header_src,
            entry.format == Format::Gguf,
        ));
        if let Some(hd) = facts::derived_head_dim(family, &arch) {
            arch.insert("head_dim".into(), hd);
        }
        let missing: Vec<&str> = family
            .required_keys()
            .iter()
            .copied()
            .filter(|k| !arch.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            return Err(FetchError::Layout {
                repo: key.to_owned(),
                detail: format!(
                    "component `{}` ({family}): the Hub files do not state {}; add them to {} as `recorded` facts with their source, then run again",
                    p.name,
                    missing
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    entry.spec
                ),
            });
        }
        if family == Family::Dense
            && let Some(o) = arch.get("out_features").and_then(|f| f.value.as_integer())
        {
            dense_out = Some((cfg_path.clone(), o as u64));
        }

        let inventory = shapes::inventory(&tensors, &separate);
        let header_bytes: u64 = p
            .files
            .iter()
            .map(|f| match &headers[f] {
                Header::Safetensors(_) => 0,
                Header::Gguf(g) => g.header_len,
            })
            .sum();
        let file_bytes: u64 = p
            .files
            .iter()
            .filter_map(|f| ctx.file(f))
            .map(|f| f.size)
            .sum();
        let kind = match entry.format {
            Format::Safetensors => "safetensors JSON header",
            Format::Gguf => "GGUF metadata + tensor infos",
        };
        let source = format!(
            "{kind} of {}{} read by HTTP byte range at commit {sha}{}",
            p.files.join(", "),
            p.prefix
                .map_or(String::new(), |x| format!(" (tensors under `{x}`)")),
            if header_bytes > 0 {
                format!(" ({header_bytes} B of headers)")
            } else {
                String::new()
            }
        );
        let published_bytes = p.prefix.is_none().then(|| {
            facts::fetched(
                toml::Value::Integer(file_bytes as i64),
                format!(
                    "file listing at commit {sha}: size of {}",
                    p.files.join(" + ")
                ),
            )
        });
        reports.push(ComponentReport {
            name: p.name.clone(),
            family,
            files: p.files.clone(),
            inventory: inventory.clone(),
        });
        components.push(Component {
            name: p.name.clone(),
            family,
            format: p.format,
            files: p.files.clone(),
            stage,
            architecture: arch
                .into_iter()
                .map(|(k, v)| (k, Spanned::new(0..0, v)))
                .collect(),
            weights: Weights {
                provenance: model_spec::Provenance::Fetched,
                source: Some(source),
                formula: None,
                published_bytes,
                inventory,
            },
        });
    }

    // Serving facts.
    let mut serving: Facts = base
        .as_ref()
        .map(|b| {
            b.serving
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect()
        })
        .unwrap_or_default();
    if entry.capability == model_spec::Capability::TextEmbedding {
        let st = ctx.json("sentence_bert_config.json")?;
        let pooling_path = modules.as_ref().and_then(|m| {
            m.as_array()?.iter().find_map(|x| {
                let t = x.get("type")?.as_str()?;
                let path = x.get("path")?.as_str()?;
                t.ends_with(".Pooling").then(|| join(path, "config.json"))
            })
        });
        let pooling = match &pooling_path {
            Some(p) => ctx.json(p)?.map(|j| (p.clone(), j)),
            None => None,
        };
        serving.extend(facts::sentence_transformers_serving(
            st.as_ref(),
            pooling.as_ref().map(|(p, j)| (p.as_str(), j)),
            modules.as_ref(),
            dense_out.as_ref().map(|(p, d)| (p.as_str(), *d)),
        ));
    }
    if let Some(tok) = ctx.file("tokenizer.json") {
        serving.insert(
            "tokenizer_json_bytes".into(),
            facts::fetched(
                toml::Value::Integer(tok.size as i64),
                format!("file listing at commit {sha}: size of tokenizer.json"),
            ),
        );
    }
    if entry.format == Format::Gguf
        && let Some(ctx_len) = components
            .first()
            .and_then(|c| c.arch_u64("max_position_embeddings"))
    {
        serving.insert(
            "max_input_tokens".into(),
            facts::fetched(
                toml::Value::Integer(ctx_len as i64),
                format!("{} GGUF metadata context_length", components[0].files[0]),
            ),
        );
    }

    let (owner, name) = key.split_once('/').unwrap_or(("", key));
    let license = readme
        .as_ref()
        .and_then(|r| r.license())
        .or_else(|| base.as_ref().and_then(|b| b.license.clone()));
    let spec = ModelSpec {
        schema_version: model_spec::spec::SCHEMA_VERSION,
        registry_key: Spanned::new(0..0, key.to_owned()),
        name: base
            .as_ref()
            .map_or_else(|| name.to_owned(), |b| b.name.clone()),
        provider: base
            .as_ref()
            .map_or_else(|| owner.to_owned(), |b| b.provider.clone()),
        capability: entry.capability,
        license,
        revision: Fact {
            value: toml::Value::String(sha.clone()),
            provenance: model_spec::Provenance::Fetched,
            source: Some(format!(
                "commit of revision `{revision}`: GET /api/models/{key}/revision/{revision}"
            )),
            formula: None,
        },
        serving: serving
            .into_iter()
            .map(|(k, v)| (k, Spanned::new(0..0, v)))
            .collect(),
        components,
        memory: None,
    };

    let spec_path = out_dir.join(&entry.spec);
    let text = render::spec_toml(&spec, &sha);
    // Validate exactly what will be written, then let the estimator append `[memory]`.
    model_spec::parse_spec(&spec_path, &text)?;
    let (spec_text, final_spec, estimate) =
        model_spec::specgen::regenerate_spec(&spec_path, &text, entry)?;
    let spec_file = Path::new(&entry.spec)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let card = model_spec::card::card_md(&model_spec::card::CardInputs {
        entry,
        spec: &final_spec,
        estimate: &estimate,
        spec_file: &spec_file,
        overview: &model_spec::card::Overview::Hub {
            commit: sha.clone(),
            text: render::overview(readme.as_ref()),
        },
    });
    let card_path = card_path(&spec_path);

    let current = |p: &Path| std::fs::read_to_string(p).ok();
    let same = current(&spec_path).as_deref() == Some(spec_text.as_str())
        && current(&card_path).as_deref() == Some(card.as_str());
    let outcome = if same {
        Outcome::Unchanged
    } else if opts.check {
        Outcome::Stale
    } else {
        // The spec first: a card never describes facts that are not on disk.
        model_spec::specgen::write_atomic(&spec_path, &spec_text)
            .map_err(|e| FetchError::io(&spec_path, e))?;
        model_spec::specgen::write_atomic(&card_path, &card)
            .map_err(|e| FetchError::io(&card_path, e))?;
        Outcome::Written
    };
    let weight_bytes = reports
        .iter()
        .flat_map(|c| &c.inventory)
        .map(|r| r.bytes)
        .sum();
    Ok(ModelReport {
        key: key.to_owned(),
        sha,
        spec_path,
        card_path,
        outcome,
        components: reports,
        weight_bytes,
        transfer: ctx.transfer,
        est_memory_allocation_mb: estimate.est_memory_allocation_mb,
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The tensors of one component (union over its files, filtered by its prefix) and, for
/// GGUF, the metadata of its first part.
fn component_tensors<'a>(
    repo: &str,
    p: &Planned,
    headers: &'a BTreeMap<String, Header>,
) -> Result<(Vec<TensorDesc>, Option<&'a GgufMeta>), FetchError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut meta = None;
    for f in &p.files {
        let (tensors, m) = match &headers[f] {
            Header::Safetensors(t) => (t, None),
            Header::Gguf(g) => (&g.tensors, Some(g)),
        };
        if let Some(g) = m {
            check_split(repo, f, p, g)?;
            let first = gguf::meta_u64(&g.metadata, "split.no").unwrap_or(0) == 0;
            if meta.is_none()
                || first && gguf::meta_str(&g.metadata, "general.architecture").is_some()
            {
                meta = Some(&g.metadata);
            }
        }
        for t in tensors {
            if let Some(px) = p.prefix
                && !t.name.starts_with(px)
            {
                continue;
            }
            if !seen.insert(t.name.clone()) {
                return Err(FetchError::BadFile {
                    repo: repo.to_owned(),
                    file: f.clone(),
                    detail: format!(
                        "tensor `{}` appears in more than one file of component `{}`",
                        t.name, p.name
                    ),
                });
            }
            out.push(t.clone());
        }
    }
    if out.is_empty() {
        return Err(FetchError::Layout {
            repo: repo.to_owned(),
            detail: format!("component `{}` has no tensors in {:?}", p.name, p.files),
        });
    }
    Ok((out, meta))
}

/// A multi-part GGUF part must agree with the set it was listed in.
fn check_split(
    repo: &str,
    file: &str,
    p: &Planned,
    g: &gguf::GgufHeader,
) -> Result<(), FetchError> {
    let count = gguf::meta_u64(&g.metadata, "split.count");
    match count {
        Some(n) if n != p.files.len() as u64 => Err(FetchError::BadFile {
            repo: repo.to_owned(),
            file: file.to_owned(),
            detail: format!(
                "GGUF metadata split.count = {n}, but the set has {} part(s)",
                p.files.len()
            ),
        }),
        None if p.files.len() > 1 => Err(FetchError::BadFile {
            repo: repo.to_owned(),
            file: file.to_owned(),
            detail: "is listed as a part of a multi-part GGUF but has no split.count metadata"
                .into(),
        }),
        _ => Ok(()),
    }
}

fn detect_family(
    ctx: &mut RepoCtx,
    p: &Planned,
    gguf_meta: Option<&GgufMeta>,
    model_index: Option<&serde_json::Value>,
    modules: Option<&serde_json::Value>,
) -> Result<Family, FetchError> {
    let repo = ctx.repo.clone();
    let unknown = |why: String| FetchError::Layout {
        repo: repo.clone(),
        detail: format!(
            "cannot tell the architecture family of component `{}` ({}): {why}; supported: bert, jina_bert, qwen2, nv_embed, clip, llava, dense, t5_encoder, clip_text, flux, mmdit, autoencoder16 (safetensors) and phi3, qwen3moe, deepseek2 (GGUF)",
            p.name,
            p.files.join(", ")
        ),
    };
    if let Some(m) = gguf_meta {
        let arch = gguf::meta_str(m, "general.architecture").unwrap_or("(none)");
        return facts::family_from_gguf(arch)
            .ok_or_else(|| unknown(format!("GGUF general.architecture is `{arch}`")));
    }
    let is_dense = modules.and_then(|m| m.as_array()).is_some_and(|m| {
        m.iter().any(|x| {
            x.get("path").and_then(|v| v.as_str()) == Some(p.dir.as_str())
                && !p.dir.is_empty()
                && x.get("type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.ends_with(".Dense"))
        })
    });
    if is_dense {
        return Ok(Family::Dense);
    }
    let class = model_index
        .and_then(|mi| mi.get(&p.dir))
        .and_then(|v| v.as_array())
        .and_then(|a| a.get(1))
        .and_then(|c| c.as_str())
        .map(str::to_owned);
    let cfg_path = join(&p.dir, "config.json");
    let cfg = ctx.json(&cfg_path)?;
    facts::family_from_config(cfg.as_ref(), class.as_deref()).ok_or_else(|| {
        unknown(match &cfg {
            Some(c) => format!(
                "{cfg_path} has model_type {} and architectures {}",
                c.get("model_type")
                    .map_or("(none)".into(), |v| v.to_string()),
                c.get("architectures")
                    .map_or("(none)".into(), |v| v.to_string())
            ),
            None => format!("there is no {cfg_path}"),
        })
    })
}

/// Shards must agree with the index that lists them: same tensor names, each in its file.
fn check_index(ctx: &mut RepoCtx, p: &Planned, tensors: &[TensorDesc]) -> Result<(), FetchError> {
    let Some((stem, _, _)) = layout::shard_parts(&p.files[0]) else {
        return Ok(());
    };
    if p.format != Format::Safetensors || p.prefix.is_some() {
        return Ok(());
    }
    let index = format!("{stem}.safetensors.index.json");
    let Some(json) = ctx.json(&index)? else {
        return Ok(());
    };
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return Ok(());
    };
    let listed: BTreeSet<&str> = map.keys().map(String::as_str).collect();
    let found: BTreeSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let missing: Vec<&&str> = listed.difference(&found).take(3).collect();
    let extra: Vec<&&str> = found.difference(&listed).take(3).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(FetchError::BadFile {
            repo: ctx.repo.clone(),
            file: index,
            detail: format!(
                "does not match the shard headers: listed but not found {missing:?}, found but not listed {extra:?}"
            ),
        });
    }
    Ok(())
}

/// `cargo xtask fetch-cards`: runs, prints, and turns the report into an exit code.
pub fn cli(opts: &FetchOptions) -> std::process::ExitCode {
    let n = if opts.models.is_empty() {
        12
    } else {
        opts.models.len()
    };
    let mut log = Log::auto(n);
    match run(opts, &mut log) {
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
        Ok(r) => {
            let stale: Vec<&ModelReport> = r
                .models
                .iter()
                .filter(|m| m.outcome == Outcome::Stale)
                .collect();
            for m in &stale {
                eprintln!(
                    "{} and {} are stale: run `cargo xtask fetch-cards --models {}` and commit",
                    m.spec_path.display(),
                    m.card_path.display(),
                    m.key
                );
            }
            for f in &r.failures {
                eprintln!("error: {}: {}", f.key, f.error);
            }
            let total: u64 = r.models.iter().map(|m| m.transfer.total()).sum();
            println!(
                "fetch-cards: {} fetched, {} failed, {} B transferred",
                r.models.len(),
                r.failures.len(),
                total
            );
            if r.failures.is_empty() && stale.is_empty() {
                if r.models.iter().any(|m| m.outcome == Outcome::Written) && !opts.check {
                    println!("next: run `cargo xtask gen-memory-specs` to refresh MEMORY_SPECS.md");
                }
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
