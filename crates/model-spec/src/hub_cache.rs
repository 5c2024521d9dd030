//! Where the Hugging Face Hub cache is, and how a repository is laid out in it — the one
//! resolver the planner (free disk space) and the runtime (finding a snapshot) share, as
//! `hf-hub` and the Python `huggingface_hub` client resolve it, so that files fetched by one
//! are found by the other.

use std::path::{Path, PathBuf};

/// The Hugging Face hub cache, as `hf-hub` and the Python client resolve it: `HF_HUB_CACHE`,
/// else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(|k| std::env::var_os(k))
}

/// [`cache_dir`] with the environment given as a lookup function (tests).
pub fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("HF_HUB_CACHE") {
        return Some(p);
    }
    if let Some(p) = var("HF_HOME") {
        return Some(p.join("hub"));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Some(p.join("huggingface").join("hub"));
    }
    let home = var("HOME").or_else(|| var("USERPROFILE"))?;
    Some(home.join(".cache").join("huggingface").join("hub"))
}

/// The folder of repository `repo` (`owner/name`) in the cache: `models--owner--name`.
pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_cache_follows_the_hugging_face_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let home: &'static [(&str, &str)] = &[("HOME", "/home/u")];
        assert_eq!(
            cache_dir_from(env(home)),
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        let hf_home: &'static [(&str, &str)] = &[("HOME", "/home/u"), ("HF_HOME", "/data/hf")];
        assert_eq!(
            cache_dir_from(env(hf_home)),
            Some(PathBuf::from("/data/hf/hub"))
        );
        let both: &'static [(&str, &str)] =
            &[("HF_HOME", "/data/hf"), ("HF_HUB_CACHE", "/fast/hub")];
        assert_eq!(cache_dir_from(env(both)), Some(PathBuf::from("/fast/hub")));
        let empty: &'static [(&str, &str)] = &[("HF_HOME", ""), ("XDG_CACHE_HOME", "/xdg")];
        assert_eq!(
            cache_dir_from(env(empty)),
            Some(PathBuf::from("/xdg/huggingface/hub"))
        );
        assert_eq!(cache_dir_from(env(&[])), None);
    }
}
