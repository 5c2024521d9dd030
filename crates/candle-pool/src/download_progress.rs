//! Download progress on stderr: an indicatif bar per file on a terminal, plain lines
//! otherwise (one when a file starts, one per tenth of a large file, one when it is done).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use model_serving::{FetchObserver, FetchPlan};

/// Shows each file of a Hub download as it goes.
pub struct TerminalProgress {
    bars: Option<MultiProgress>,
    files: Mutex<HashMap<String, FileLine>>,
}

struct FileLine {
    bar: Option<ProgressBar>,
    /// Tenths of the file reported so far (plain lines).
    tenths: u64,
    /// Whether a plain line said the file is downloading (cached files get none).
    announced: bool,
}

impl TerminalProgress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        TerminalProgress {
            bars,
            files: Mutex::new(HashMap::new()),
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl FetchObserver for TerminalProgress {
    fn planned(&self, plan: &FetchPlan) {
        let missing = plan.missing_bytes();
        let line = if missing == 0 {
            format!(
                "{} at {}: all {} files in the Hugging Face cache",
                plan.repo,
                &plan.commit[..plan.commit.len().min(12)],
                plan.files.len()
            )
        } else {
            format!(
                "{} at {}: downloading {} of {} ({} files) into the Hugging Face cache",
                plan.repo,
                &plan.commit[..plan.commit.len().min(12)],
                mb(missing),
                mb(plan.total_bytes()),
                plan.files.iter().filter(|f| f.missing_bytes() > 0).count()
            )
        };
        match &self.bars {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn progress(&self, file: &str, done: u64, total: u64) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        // Called for every chunk received: the file's line is made (and its name copied) once.
        if !files.contains_key(file) {
            let bar = self.bars.as_ref().map(|m| {
                let bar = m.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(file.to_owned());
                bar
            });
            let announced = bar.is_none() && done < total;
            if announced {
                eprintln!("downloading {file} ({})", mb(total));
            }
            files.insert(
                file.to_owned(),
                FileLine {
                    bar,
                    tenths: 0,
                    announced,
                },
            );
        }
        let Some(entry) = files.get_mut(file) else {
            return;
        };
        match &entry.bar {
            Some(bar) => bar.set_position(done),
            None if total >= 10 << 20 => {
                let tenths = done * 10 / total;
                if tenths > entry.tenths && tenths < 10 {
                    entry.tenths = tenths;
                    eprintln!("  {file}: {}% ({} of {})", tenths * 10, mb(done), mb(total));
                }
            }
            None => {}
        }
    }

    fn finished(&self, file: &str) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(line) = files.remove(file) {
            match line.bar {
                Some(bar) => bar.finish(),
                None if line.announced => eprintln!("  {file}: done"),
                None => {}
            }
        }
    }
}
