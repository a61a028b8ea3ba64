//! The access-log sink writer: callers hand over finished lines without ever blocking on IO; one
//! background thread per sink (shared by every writer opened on the same path) buffers them,
//! flushes when it runs out of queued lines and at least once a second, and reopens a file sink
//! on request (SIGUSR1 log rotation).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::AccessLogSink;

/// Lines queued per sink before new ones are dropped (and counted).
pub const CHANNEL_CAPACITY: usize = 8_192;
/// Longest a written line may sit in the buffer.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Opening an access-log sink failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("could not open access log file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("could not start the access log writer thread for {sink}: {source}")]
    Spawn { sink: String, source: io::Error },
}

/// The registry key: one writer thread per distinct sink.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SinkKey {
    File(PathBuf),
    Stdout,
    Stderr,
}

impl SinkKey {
    fn describe(&self) -> String {
        match self {
            SinkKey::File(p) => p.display().to_string(),
            SinkKey::Stdout => "/dev/stdout".into(),
            SinkKey::Stderr => "/dev/stderr".into(),
        }
    }
}

pub(super) enum Msg {
    Line(String),
    /// Wakes the thread so it notices a pending reopen.
    Wake,
}

/// State the writer thread and the handles both see.
#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    reopen: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    tx: Option<SyncSender<Msg>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel tells the thread to flush and exit; waiting for it makes "every
        // handle dropped" mean "every line written".
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A cheap, cloneable handle to one sink's writer thread.
#[derive(Clone, Debug)]
pub struct AccessLogWriter {
    shared: Arc<Shared>,
}

fn registry() -> &'static Mutex<HashMap<SinkKey, Weak<Shared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<SinkKey, Weak<Shared>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

fn open_file(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// The writer thread's output.
enum Out {
    File(BufWriter<File>),
    Stdout(BufWriter<io::Stdout>),
    Stderr(BufWriter<io::Stderr>),
}

impl Out {
    /// Room left in the buffer before it must be written out.
    fn spare(&self) -> usize {
        match self {
            Out::File(w) => w.capacity() - w.buffer().len(),
            Out::Stdout(w) => w.capacity() - w.buffer().len(),
            Out::Stderr(w) => w.capacity() - w.buffer().len(),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::File(w) => w,
            Out::Stdout(w) => w,
            Out::Stderr(w) => w,
        }
    }
}

struct Worker {
    key: SinkKey,
    out: Out,
    counters: Arc<Counters>,
    /// Whether the last IO failed, so a failing disk logs once per episode, not per line.
    failing: bool,
}

impl Worker {
    fn note(&mut self, result: io::Result<()>, what: &str) {
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    tracing::warn!(sink = %self.key.describe(), "could not {what} access log: {e}");
                }
                self.failing = true;
            }
        }
    }

    fn write(&mut self, line: &str) {
        // The buffer only ever holds whole lines, and goes out in one `write` to an `O_APPEND`
        // file: lines of two generations sharing the file never interleave mid-line.
        if line.len() > self.out.spare() {
            self.flush();
        }
        let r = self.out.writer().write_all(line.as_bytes());
        self.note(r, "write");
    }

    fn flush(&mut self) {
        let r = self.out.writer().flush();
        self.note(r, "flush");
    }

    fn reopen_if_requested(&mut self) {
        if !self.counters.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        self.flush();
        if let SinkKey::File(path) = &self.key {
            match open_file(path) {
                Ok(f) => self.out = Out::File(BufWriter::new(f)),
                Err(e) => tracing::warn!("{e}; still writing to the previously opened file"),
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        if let Msg::Line(line) = msg {
            self.write(&line);
        }
        self.reopen_if_requested();
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(FLUSH_INTERVAL) {
                Ok(msg) => {
                    let started = Instant::now();
                    self.handle(msg);
                    // Take what is queued without waiting; flush once the queue is momentarily
                    // empty, or every second under a steady stream.
                    loop {
                        match rx.try_recv() {
                            Ok(msg) => {
                                self.handle(msg);
                                if started.elapsed() >= FLUSH_INTERVAL {
                                    break;
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                self.flush();
                                return;
                            }
                        }
                    }
                    self.flush();
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.reopen_if_requested();
                    self.flush();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
        }
    }
}

impl AccessLogWriter {
    /// Opens `sink` (a file is created if needed and appended to). Opening a path that already
    /// has a live writer returns a handle to that writer, so one file never has two threads
    /// interleaving partial lines.
    pub fn open(sink: &AccessLogSink) -> Result<AccessLogWriter, AccessLogError> {
        let key = match sink {
            AccessLogSink::File(p) => SinkKey::File(p.clone()),
            AccessLogSink::Stdout => SinkKey::Stdout,
            AccessLogSink::Stderr => SinkKey::Stderr,
        };
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(shared) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(AccessLogWriter { shared });
        }
        let out = match &key {
            SinkKey::File(p) => Out::File(BufWriter::new(open_file(p)?)),
            SinkKey::Stdout => Out::Stdout(BufWriter::new(io::stdout())),
            SinkKey::Stderr => Out::Stderr(BufWriter::new(io::stderr())),
        };
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let worker = Worker {
            key: key.clone(),
            out,
            counters: Arc::clone(&counters),
            failing: false,
        };
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || worker.run(rx))
            .map_err(|source| AccessLogError::Spawn {
                sink: key.describe(),
                source,
            })?;
        let shared = Arc::new(Shared {
            tx: Some(tx),
            counters,
            thread: Some(thread),
        });
        map.insert(key, Arc::downgrade(&shared));
        Ok(AccessLogWriter { shared })
    }

    /// Queues one finished line (including its newline). Never blocks: when the queue is full the
    /// line is dropped and counted in [`dropped`](Self::dropped).
    pub fn write_line(&self, line: String) {
        let Some(tx) = &self.shared.tx else { return };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Asks the writer thread to reopen a file sink (log rotation); lines queued before the call
    /// may still land in the old file. No effect on stdout/stderr sinks.
    pub fn reopen(&self) {
        self.shared.counters.reopen.store(true, Ordering::Release);
        if let Some(tx) = &self.shared.tx {
            // If the queue is full the thread is busy and checks the flag after each line.
            let _ = tx.try_send(Msg::Wake);
        }
    }

    /// Lines dropped because the queue was full, since this sink was opened.
    pub fn dropped(&self) -> u64 {
        self.shared.counters.dropped.load(Ordering::Relaxed)
    }

    /// Whether two handles feed the same writer thread.
    #[cfg(test)]
    pub(super) fn same_sink(&self, other: &AccessLogWriter) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// A handle whose queue nobody drains (no thread), for exercising the overflow path.
    #[cfg(test)]
    pub(super) fn undrained(capacity: usize) -> (AccessLogWriter, Receiver<Msg>) {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared {
            tx: Some(tx),
            counters: Arc::new(Counters::default()),
            thread: None,
        });
        (AccessLogWriter { shared }, rx)
    }
}
