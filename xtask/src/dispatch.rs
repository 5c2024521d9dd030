//! Subcommands that live in crates of their own (`fetch-cards` with the Hub client, `fixtures`
//! with candle): `cargo xtask` builds and runs them only when they are asked for, so the
//! commands xtask implements itself build without their dependency trees.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// A binary of a workspace package that a subcommand hands over to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delegate {
    /// The package (`cargo run -p`).
    pub package: &'static str,
    /// The binary, where the package has more than one or it is not named after the package.
    pub bin: Option<&'static str>,
}

/// The workspace's `Cargo.toml`, so the command works from any folder inside the checkout.
pub fn workspace_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("Cargo.toml")
}

/// `cargo run --quiet -p PACKAGE [--bin BIN] -- ARGS`, with the cargo that runs xtask (`$CARGO`)
/// and the workspace manifest. The child inherits stdin/stdout/stderr, the working folder and
/// the environment (so `CARGO_TARGET_DIR`, `HF_TOKEN` … reach it).
pub fn command(delegate: Delegate, args: &[OsString]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.arg("run")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(workspace_manifest())
        .arg("--package")
        .arg(delegate.package);
    if let Some(bin) = delegate.bin {
        c.arg("--bin").arg(bin);
    }
    c.arg("--").args(args);
    c
}

/// Runs `delegate` with `args` and exits the way it did (its exit status, or failure when it
/// could not be started or was killed by a signal).
pub fn run(delegate: Delegate, args: &[OsString]) -> ExitCode {
    match command(delegate, args).status() {
        Ok(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!(
                    "error: `{}` was stopped by a signal ({status})",
                    delegate.package
                );
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: cannot run cargo for `{}`: {e}", delegate.package);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn forwards_every_argument_after_the_separator() {
        let d = Delegate {
            package: "fetch-cards",
            bin: None,
        };
        let args: Vec<OsString> = ["--check", "--models", "a/b", "--help"]
            .map(OsString::from)
            .to_vec();
        let a = argv(&command(d, &args));
        let manifest = workspace_manifest().to_string_lossy().into_owned();
        assert_eq!(
            a,
            [
                "run",
                "--quiet",
                "--manifest-path",
                manifest.as_str(),
                "--package",
                "fetch-cards",
                "--",
                "--check",
                "--models",
                "a/b",
                "--help"
            ]
        );
        assert!(workspace_manifest().is_file());
    }

    #[test]
    fn names_the_binary_when_given() {
        let d = Delegate {
            package: "model-fixtures",
            bin: Some("write-fixtures"),
        };
        let a = argv(&command(d, &[OsString::from("out")]));
        let sep = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(&a[sep - 2..], ["--bin", "write-fixtures", "--", "out"]);
    }
}
