// An inline spec whose TOML does not parse: the error names the line inside the spec.
model_registry::candle_model! {
    pub static BROKEN = toml(r#"
schema_version = 1
registry_key = "example/broken
"#);
}

fn main() {}
