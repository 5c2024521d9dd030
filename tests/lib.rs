//! Shared helpers for the workspace-level tests.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The checked-in `model-cards/` folder.
pub fn model_cards() -> PathBuf {
    workspace_root().join("model-cards")
}

/// A throwaway copy of `model-cards/` (named `model-cards` too, so messages read the same),
/// for editing a spec by hand the way a user would.
pub struct CardsCopy {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl CardsCopy {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("model-cards");
        copy_dir(&model_cards(), &root);
        CardsCopy { _dir: dir, root }
    }

    /// The copy's model-cards folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Replaces the one occurrence of `from` in `file` (relative to the cards folder).
    pub fn edit(&self, file: &str, from: &str, to: &str) -> &Self {
        let path = self.root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` must occur exactly once in {file}"
        );
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        self
    }

    /// Cuts `file` at the line starting with `marker`.
    pub fn truncate_at(&self, file: &str, marker: &str) -> &Self {
        let path = self.root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("`{marker}` in {file}"));
        std::fs::write(&path, &text[..at]).unwrap();
        self
    }

    /// Appends `text` to `file`.
    pub fn append(&self, file: &str, text: &str) -> &Self {
        let path = self.root.join(file);
        let mut all = std::fs::read_to_string(&path).unwrap();
        all.push_str(text);
        std::fs::write(&path, all).unwrap();
        self
    }
}

impl Default for CardsCopy {
    fn default() -> Self {
        Self::new()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
