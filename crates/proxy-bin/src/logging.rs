//! Baton's own log (not the access log): a `tracing` fmt subscriber writing Envoy-like lines
//! (timestamp, level, target, message) to stderr or to `--log-path`, and the handle that reopens
//! that file when SIGUSR1 asks for log rotation.
// Wired up by main in the integration commit.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use parking_lot::{Mutex, MutexGuard};
use tracing::Subscriber;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogLevel;

/// Maps Envoy's (spdlog's) level names onto `tracing`'s: `critical` is `ERROR`, `off` is off.
pub fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Critical => LevelFilter::ERROR,
        LogLevel::Off => LevelFilter::OFF,
    }
}

/// Where log lines go.
#[derive(Debug)]
enum Target {
    Stderr,
    File { path: PathBuf, file: Mutex<File> },
}

/// A [`MakeWriter`] over stderr or a reopenable file; clones share the file.
#[derive(Clone, Debug)]
pub struct LogWriter {
    target: Arc<Target>,
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("could not open log file {}", path.display()))
}

impl LogWriter {
    /// Writes to stderr.
    pub fn stderr() -> Self {
        Self {
            target: Arc::new(Target::Stderr),
        }
    }

    /// Appends to `path`, creating it if needed.
    pub fn file(path: &Path) -> anyhow::Result<Self> {
        let file = open_append(path)?;
        Ok(Self {
            target: Arc::new(Target::File {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            }),
        })
    }

    /// Whether lines go to a file (and so must carry no ANSI colour codes).
    pub fn is_file(&self) -> bool {
        matches!(*self.target, Target::File { .. })
    }

    /// Opens the path again and swaps the new file in; lines written after this land in the
    /// file now at that path. A no-op for stderr.
    pub fn reopen(&self) -> anyhow::Result<()> {
        if let Target::File { path, file } = &*self.target {
            let fresh = open_append(path)?;
            let mut current = file.lock();
            // The old file is flushed by the OS on close; File itself does not buffer.
            *current = fresh;
        }
        Ok(())
    }
}

/// One event's writer: holds the file lock for the duration of the event's write.
#[derive(Debug)]
pub enum LogWriterGuard<'a> {
    Stderr(io::Stderr),
    File(MutexGuard<'a, File>),
}

impl Write for LogWriterGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LogWriterGuard::Stderr(s) => s.write(buf),
            LogWriterGuard::File(f) => f.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            LogWriterGuard::Stderr(s) => s.write_all(buf),
            LogWriterGuard::File(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LogWriterGuard::Stderr(s) => s.flush(),
            LogWriterGuard::File(f) => f.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriterGuard<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match &*self.target {
            Target::Stderr => LogWriterGuard::Stderr(io::stderr()),
            Target::File { file, .. } => LogWriterGuard::File(file.lock()),
        }
    }
}

/// Returned by [`init`]; keep it to rotate the log file on SIGUSR1.
#[derive(Clone, Debug)]
pub struct LogHandle {
    writer: LogWriter,
}

impl LogHandle {
    /// Reopens `--log-path` (log rotation); a no-op when logging to stderr.
    pub fn reopen(&self) -> anyhow::Result<()> {
        self.writer.reopen()
    }
}

/// The subscriber [`init`] installs, built separately so tests can scope it.
pub fn subscriber(level: LogLevel, writer: LogWriter) -> impl Subscriber + Send + Sync {
    let ansi = !writer.is_file() && io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_max_level(level_filter(level))
        .with_target(true)
        .with_ansi(ansi)
        .with_writer(writer)
        .finish()
}

/// Installs the global subscriber: stderr, or `path` opened in append mode.
pub fn init(level: LogLevel, path: Option<&Path>) -> anyhow::Result<LogHandle> {
    let writer = match path {
        Some(p) => LogWriter::file(p)?,
        None => LogWriter::stderr(),
    };
    tracing::subscriber::set_global_default(subscriber(level, writer.clone()))
        .context("could not install the log subscriber")?;
    Ok(LogHandle { writer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "baton-logging-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn reopen_after_rename_writes_to_new_file() {
        let dir = temp_dir("reopen");
        let path = dir.join("baton.log");
        let writer = LogWriter::file(&path).expect("open");
        let handle = LogHandle {
            writer: writer.clone(),
        };
        writer
            .make_writer()
            .write_all(b"first line\n")
            .expect("write");
        let rotated = dir.join("baton.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        handle.reopen().expect("reopen");
        writer
            .make_writer()
            .write_all(b"second line\n")
            .expect("write");
        assert_eq!(
            std::fs::read_to_string(&rotated).expect("read"),
            "first line\n"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "second line\n"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn subscriber_writes_plain_lines_at_level() {
        let dir = temp_dir("format");
        let path = dir.join("baton.log");
        let writer = LogWriter::file(&path).expect("open");
        tracing::subscriber::with_default(subscriber(LogLevel::Warning, writer), || {
            tracing::info!(target: "baton::test", "hidden");
            tracing::warn!(target: "baton::test", "shown {}", 42);
        });
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text:?}");
        let line = lines[0];
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("baton::test: shown 42"), "{line}");
        assert!(!line.contains('\u{1b}'), "ANSI in file: {line:?}");
        // RFC 3339 timestamp first: 2026-11-23T05:14:38.123456Z
        assert!(
            line.as_bytes().get(4) == Some(&b'-') && line.contains('T'),
            "{line}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn critical_and_off_map() {
        assert_eq!(level_filter(LogLevel::Critical), LevelFilter::ERROR);
        assert_eq!(level_filter(LogLevel::Off), LevelFilter::OFF);
        assert_eq!(level_filter(LogLevel::Warning), LevelFilter::WARN);
    }
}
