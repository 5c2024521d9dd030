//! Progress: a bar on a terminal, plain log lines otherwise (CI logs, pipes, tests).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

pub struct Log {
    bar: Option<ProgressBar>,
    sink: Box<dyn Write + Send>,
}

impl Log {
    /// A bar when stderr is a terminal, else plain lines on stderr.
    pub fn auto(models: usize) -> Log {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(models as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Log {
                bar: Some(bar),
                sink: Box::new(std::io::stderr()),
            }
        } else {
            Log::to_writer(Box::new(std::io::stderr()))
        }
    }

    /// Plain lines into `sink`.
    pub fn to_writer(sink: Box<dyn Write + Send>) -> Log {
        Log { bar: None, sink }
    }

    /// Plain lines into a shared buffer (for tests).
    pub fn captured() -> (Log, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (Log::to_writer(Box::new(Shared(buf.clone()))), buf)
    }

    /// A transient step: the bar's message, or a plain line.
    pub fn step(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_owned()),
            None => {
                let _ = writeln!(self.sink, "  {msg}");
            }
        }
    }

    /// A line that stays.
    pub fn line(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => {
                let _ = writeln!(self.sink, "{msg}");
            }
        }
    }

    pub fn model_done(&mut self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let _ = self.sink.flush();
    }
}

struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
