//! Which weight files make up which component: the `files` of a models.toml entry expanded
//! (globs, `*.safetensors.index.json`, Diffusers `model_index.json`, Sentence-Transformers
//! `modules.json`), grouped (shards and multi-part GGUF sets become one component), and matched
//! with the components of the previous spec so names, families and stages stay stable.

use super::error::FetchError;
use super::repo::RepoCtx;
use model_spec::spec::Stage;
use model_spec::{Capability, Family, Format, ModelEntry, ModelSpec};

/// One component to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub name: String,
    /// `None` until the weights say (GGUF `general.architecture`).
    pub family: Option<Family>,
    pub stage: Option<Stage>,
    pub format: Format,
    pub files: Vec<String>,
    /// Tensor-name prefix that selects this component's tensors in a file it shares.
    pub prefix: Option<&'static str>,
    /// Folder of the component's files ("" = repo root): where its config.json lives.
    pub dir: String,
}

/// Matches `pat` against `path`: `*` is any run of characters except `/`, `?` one character.
pub fn glob_match(pat: &str, path: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), path.chars().collect());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' && s[si] != '/' || p[pi] == s[si] && p[pi] != '*') {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star
            && s[ss] != '/'
        {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// `(stem, part, count)` of a `stem-0000N-of-0000M.ext` shard name.
pub fn shard_parts(path: &str) -> Option<(&str, u32, u32)> {
    let base = path
        .strip_suffix(".safetensors")
        .or_else(|| path.strip_suffix(".gguf"))?;
    let (rest, count) = base.rsplit_once("-of-")?;
    let (stem, part) = rest.rsplit_once('-')?;
    let ok = |s: &str| s.len() >= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(part) || !ok(count) {
        return None;
    }
    Some((stem, part.parse().ok()?, count.parse().ok()?))
}

fn weight_map_files(ctx: &mut RepoCtx, index: &str) -> Result<Vec<String>, FetchError> {
    ctx.require(index)?;
    let json = ctx.json(index)?.unwrap_or_default();
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| FetchError::BadFile {
            repo: ctx.repo.clone(),
            file: index.to_owned(),
            detail: "has no `weight_map` object".into(),
        })?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| join(dir_of(index), f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The weights of one folder: its index's shards, else its single weight file.
fn folder_weights(ctx: &mut RepoCtx, dir: &str) -> Result<Vec<String>, FetchError> {
    for stem in ["diffusion_pytorch_model", "model"] {
        let index = join(dir, &format!("{stem}.safetensors.index.json"));
        if ctx.file(&index).is_some() {
            return weight_map_files(ctx, &index);
        }
        let single = join(dir, &format!("{stem}.safetensors"));
        if ctx.file(&single).is_some() {
            return Ok(vec![single]);
        }
    }
    Ok(Vec::new())
}

/// The entry's `files`, expanded to concrete weight files in the repo.
pub fn expand_files(ctx: &mut RepoCtx, entry: &ModelEntry) -> Result<Vec<String>, FetchError> {
    let mut out: Vec<String> = Vec::new();
    for pat in &entry.files {
        let base = pat.rsplit('/').next().unwrap_or(pat);
        let found: Vec<String> = if pat.contains('*') || pat.contains('?') {
            let m: Vec<String> = ctx
                .listing
                .iter()
                .filter(|f| glob_match(pat, &f.path))
                .map(|f| f.path.clone())
                .collect();
            if m.is_empty() {
                return Err(FetchError::not_in_listing(
                    format!(
                        "no file matching `{pat}` in `{}` at {} ({} files listed)",
                        ctx.repo,
                        ctx.sha,
                        ctx.listing.len()
                    ),
                    "; check `files` in model-cards/models.toml",
                ));
            }
            m
        } else if pat.ends_with(".safetensors.index.json") {
            weight_map_files(ctx, pat)?
        } else if base == "model_index.json" {
            ctx.require(pat)?;
            let mi = ctx.json(pat)?.unwrap_or_default();
            let mut v = Vec::new();
            for (k, class) in mi.as_object().into_iter().flatten() {
                let has_lib = class
                    .as_array()
                    .is_some_and(|a| a.first().is_some_and(|l| !l.is_null()));
                if k.starts_with('_') || !has_lib {
                    continue;
                }
                v.extend(folder_weights(ctx, &join(dir_of(pat), k))?);
            }
            v
        } else if base == "modules.json" {
            ctx.require(pat)?;
            let modules = ctx.json(pat)?.unwrap_or_default();
            let mut v = folder_weights(ctx, dir_of(pat))?;
            for m in modules.as_array().into_iter().flatten() {
                let is_dense = m
                    .get("type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.ends_with(".Dense"));
                if let (true, Some(p)) = (is_dense, m.get("path").and_then(|p| p.as_str())) {
                    v.extend(folder_weights(ctx, &join(dir_of(pat), p))?);
                }
            }
            v
        } else {
            ctx.require(pat)?;
            vec![pat.clone()]
        };
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    if out.is_empty() {
        return Err(FetchError::Layout {
            repo: ctx.repo.clone(),
            detail: "`files` in model-cards/models.toml selects no weight file".into(),
        });
    }
    for f in &out {
        ctx.require(f)?;
        let ok = match entry.format {
            Format::Safetensors => f.ends_with(".safetensors"),
            Format::Gguf => f.ends_with(".gguf"),
        };
        if !ok {
            return Err(FetchError::Layout {
                repo: ctx.repo.clone(),
                detail: format!(
                    "`{f}` is not a {:?} file, but models.toml says format = \"{}\"",
                    entry.format,
                    format_name(entry.format)
                ),
            });
        }
    }
    Ok(out)
}

pub use model_spec::card::format_name;

/// `(stem, part count)` naming one set of shards.
type ShardSet = (String, u32);

/// Groups files: the shards of one set (`x-0000N-of-0000M`) are one group, every other file
/// its own. Checks that every shard of a set is there.
pub fn group(repo: &str, files: &[String]) -> Result<Vec<Vec<String>>, FetchError> {
    let mut groups: Vec<(Option<ShardSet>, Vec<String>)> = Vec::new();
    for f in files {
        let key = shard_parts(f).map(|(stem, _, n)| (stem.to_owned(), n));
        match groups.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
            Some((_, v)) => v.push(f.clone()),
            None => groups.push((key, vec![f.clone()])),
        }
    }
    for (key, v) in &mut groups {
        v.sort();
        if let Some((stem, n)) = key {
            for i in 1..=*n {
                let want = v[0].replace(
                    &format!("-{:05}-of-", shard_parts(&v[0]).map_or(0, |p| p.1)),
                    &format!("-{i:05}-of-"),
                );
                if !v.contains(&want) {
                    return Err(FetchError::Layout {
                        repo: repo.to_owned(),
                        detail: format!(
                            "part {i} of {n} of `{stem}` (`{want}`) is not among the selected files; list every part (or a glob) in model-cards/models.toml"
                        ),
                    });
                }
            }
        }
    }
    Ok(groups.into_iter().map(|(_, v)| v).collect())
}

/// Tensor-name prefix of a family inside a single-file checkpoint that holds several
/// components (SD3.x `sd3.5_large_turbo.safetensors`: MMDiT + VAE).
fn shared_prefix(f: Family) -> Option<&'static str> {
    match f {
        Family::Mmdit => Some("model.diffusion_model."),
        Family::Autoencoder16 => Some("first_stage_model."),
        _ => None,
    }
}

pub fn default_stage(f: Family, cap: Capability) -> Stage {
    match (f, cap) {
        (Family::Flux | Family::Mmdit, _) => Stage::Denoiser,
        (Family::Autoencoder16, _) => Stage::Decoder,
        (Family::T5Encoder | Family::ClipText, Capability::TextToImage) => Stage::TextEncoder,
        _ => Stage::Main,
    }
}

fn sanitize(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_');
    // Sentence-Transformers module folders are numbered (`2_Dense_1024`).
    let s = s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    if s.is_empty() {
        "model".into()
    } else {
        s.to_owned()
    }
}

fn new_name(group: &[String], n_groups: usize) -> String {
    let first = &group[0];
    let dir = dir_of(first);
    let stem = shard_parts(first).map_or_else(
        || {
            let b = first.rsplit('/').next().unwrap_or(first);
            b.rsplit_once('.').map_or(b, |(s, _)| s).to_owned()
        },
        |(s, _, _)| s.rsplit('/').next().unwrap_or(s).to_owned(),
    );
    if !dir.is_empty() && (stem == "model" || stem == "diffusion_pytorch_model") {
        return sanitize(dir.rsplit('/').next().unwrap_or(dir));
    }
    if n_groups == 1 || stem == "model" || stem == "diffusion_pytorch_model" {
        return "model".into();
    }
    sanitize(&stem)
}

/// Plans components from the file groups, keeping what the previous spec said about the same
/// files (name, family, stage).
pub fn plan(
    repo: &str,
    entry: &ModelEntry,
    groups: &[Vec<String>],
    base: Option<&ModelSpec>,
) -> Result<Vec<Planned>, FetchError> {
    let mut out: Vec<Planned> = Vec::new();
    let mut used = vec![false; groups.len()];
    for c in base.map(|b| b.components.as_slice()).unwrap_or_default() {
        let mut want = c.files.clone();
        want.sort();
        let Some(gi) = groups.iter().position(|g| *g == want) else {
            continue;
        };
        used[gi] = true;
        out.push(Planned {
            name: c.name.clone(),
            family: Some(c.family),
            stage: Some(c.stage),
            format: entry.format,
            files: groups[gi].clone(),
            prefix: None,
            dir: dir_of(&groups[gi][0]).to_owned(),
        });
    }
    for (gi, g) in groups.iter().enumerate() {
        if used[gi] {
            continue;
        }
        let mut name = new_name(g, groups.len());
        while out.iter().any(|p| p.name == name) {
            name.push_str("_2");
        }
        out.push(Planned {
            name,
            family: None,
            stage: None,
            format: entry.format,
            files: g.clone(),
            prefix: None,
            dir: dir_of(&g[0]).to_owned(),
        });
    }
    // Components that share a file split its tensors by prefix.
    for i in 0..out.len() {
        let sharing = out
            .iter()
            .enumerate()
            .filter(|(j, p)| *j != i && p.files == out[i].files)
            .count();
        if sharing > 0 {
            let fam = out[i].family;
            let prefix = fam.and_then(shared_prefix).ok_or_else(|| FetchError::Layout {
                repo: repo.to_owned(),
                detail: format!(
                    "component `{}` shares {:?} with another component, and family {:?} has no known tensor prefix to split the file by",
                    out[i].name, out[i].files, fam
                ),
            })?;
            out[i].prefix = Some(prefix);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_shards() {
        assert!(glob_match(
            "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-*-of-00013.gguf",
            "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00002-of-00013.gguf"
        ));
        assert!(!glob_match("*.gguf", "Q4_K_M/x.gguf"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "a/c"));
        assert_eq!(
            shard_parts("text_encoder_2/model-00001-of-00002.safetensors"),
            Some(("text_encoder_2/model", 1, 2))
        );
        assert_eq!(shard_parts("model.safetensors"), None);
        let files: Vec<String> = ["a-00002-of-00002.gguf", "b.gguf", "a-00001-of-00002.gguf"]
            .map(String::from)
            .to_vec();
        let g = group("o/r", &files).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0], ["a-00001-of-00002.gguf", "a-00002-of-00002.gguf"]);
        let err = group("o/r", &files[..1]).unwrap_err().to_string();
        assert!(err.contains("part 1 of 2"), "{err}");
    }

    #[test]
    fn names_of_new_components() {
        assert_eq!(sanitize("2_Dense_1024"), "dense_1024");
        assert_eq!(
            new_name(&["text_encoder/model.safetensors".into()], 3),
            "text_encoder"
        );
        assert_eq!(new_name(&["ae.safetensors".into()], 2), "ae");
        assert_eq!(new_name(&["model.safetensors".into()], 2), "model");
    }
}
