//! Errors that name the file, the line, the field and the fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error in a spec file or in `models.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The file, as given to the parser (relative paths stay relative).
    pub file: PathBuf,
    /// 1-based line, when the error can be located.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `component[0].architecture.hidden_size`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": field `{}`: {}", self.field, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

impl SpecError {
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_path_buf(),
            line: None,
            field: field.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// 1-based line number of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns a TOML/serde error into a located [`SpecError`].
pub(crate) fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> SpecError {
    let line = err.span().map(|s| line_of(text, s.start));
    let message = err.message().trim().to_owned();
    // serde names the offending field in backticks ("missing field `x`", "unknown field `x`").
    // serde names the field itself only in "missing field" / "unknown field" messages; for
    // others (unknown variant, invalid type) the key on the reported line is the field.
    let names_field = message.starts_with("missing field") || message.starts_with("unknown field");
    let field = message
        .split('`')
        .nth(1)
        .filter(|f| names_field && !f.contains(' '))
        .map(str::to_owned)
        .or_else(|| {
            // Otherwise take the key on the reported line, if any.
            let l = line?;
            let src = text.lines().nth(l - 1)?;
            let key = src
                .split('=')
                .next()?
                .trim()
                .trim_matches(|c| c == '[' || c == ']');
            (!key.is_empty()).then(|| key.to_owned())
        })
        .unwrap_or_else(|| "(document)".to_owned());
    SpecError::new(file, field, message).at(line)
}
