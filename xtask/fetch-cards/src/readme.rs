//! A model card README: YAML front matter (license, tags …) and the overview text after it.

use serde_json::Value as Json;
use yaml_rust2::{Yaml, YamlLoader};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Card {
    /// The front matter as JSON (`Null` when the card has none).
    pub front_matter: Json,
    /// A front matter that would not parse, with the reason (the card text is still used).
    pub front_matter_error: Option<String>,
    /// The text after the front matter.
    pub body: String,
}

impl Card {
    pub fn license(&self) -> Option<String> {
        let s = |k: &str| self.front_matter.get(k).and_then(Json::as_str);
        match s("license")? {
            "other" => s("license_name")
                .map(|n| format!("other ({n})"))
                .or(Some("other".into())),
            l => Some(l.to_owned()),
        }
    }

    /// A front-matter value as display text (lists joined).
    pub fn field(&self, key: &str) -> Option<String> {
        match self.front_matter.get(key)? {
            Json::String(s) => Some(s.clone()),
            Json::Array(a) => Some(
                a.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Json::Null => None,
            v => Some(v.to_string()),
        }
    }

    /// The card's opening section: the text up to its second heading, at most `max_lines`
    /// lines, headings demoted below the generated card's own.
    pub fn overview(&self, max_lines: usize) -> String {
        let mut out = Vec::new();
        let mut headings = 0;
        let mut in_code = false;
        for line in self.body.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if !in_code && line.starts_with('#') {
                headings += 1;
                if headings > 1
                    && out
                        .iter()
                        .any(|l: &String| !l.trim().is_empty() && !l.starts_with('#'))
                {
                    break;
                }
                out.push(format!("##{line}"));
                continue;
            }
            if out.is_empty() && line.trim().is_empty() {
                continue;
            }
            out.push(line.to_owned());
            if out.len() >= max_lines {
                break;
            }
        }
        if in_code {
            out.push("```".into());
        }
        while out.last().is_some_and(|l| l.trim().is_empty()) {
            out.pop();
        }
        out.join("\n")
    }
}

fn yaml_to_json(y: &Yaml) -> Json {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Json::String(s.clone()), Json::Number),
        Yaml::Integer(i) => Json::from(*i),
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Boolean(b) => Json::Bool(*b),
        Yaml::Array(a) => Json::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Json::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => yaml_to_json(other).to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Json::Null,
    }
}

/// Splits a README into front matter and body.
pub fn parse(text: &str) -> Card {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != "---" {
        return Card {
            front_matter: Json::Null,
            front_matter_error: None,
            body: text.to_owned(),
        };
    }
    let mut yaml = String::new();
    let mut consumed = first.len();
    let mut closed = false;
    for l in lines {
        consumed += l.len();
        if l.trim_end() == "---" {
            closed = true;
            break;
        }
        yaml.push_str(l);
    }
    if !closed {
        return Card {
            front_matter: Json::Null,
            front_matter_error: Some("the front matter has no closing `---`".into()),
            body: text.to_owned(),
        };
    }
    let body = text[consumed..].to_owned();
    match YamlLoader::load_from_str(&yaml) {
        Ok(docs) => Card {
            front_matter: docs.first().map_or(Json::Null, yaml_to_json),
            front_matter_error: None,
            body,
        },
        Err(e) => Card {
            front_matter: Json::Null,
            front_matter_error: Some(format!("the front matter is not valid YAML: {e}")),
            body,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_and_overview() {
        let c = parse(
            "---\nlicense: apache-2.0\ntags:\n- a\n- b\n---\n\n# Title\nText one.\n\n## Usage\nmore\n",
        );
        assert_eq!(c.license().as_deref(), Some("apache-2.0"));
        assert_eq!(c.field("tags").as_deref(), Some("a, b"));
        assert_eq!(c.overview(10), "### Title\nText one.");
        let none = parse("# Just text\n");
        assert_eq!(none.front_matter, Json::Null);
        let bad = parse("---\nlicense: [unclosed\n---\nbody\n");
        assert!(bad.front_matter_error.is_some());
        assert_eq!(bad.body, "body\n");
    }
}
