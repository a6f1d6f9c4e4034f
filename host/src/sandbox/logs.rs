//! The log of one invocation: the logging import, stdout and stderr, under one byte budget.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Where a log line came from and how serious it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Fine-grained tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// A failure.
    Error,
    /// Written to the guest's standard output.
    Stdout,
    /// Written to the guest's standard error (panic messages land here).
    Stderr,
}

impl LogLevel {
    /// The level's name as shown to tenants.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One line of an invocation's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Its level or stream.
    pub level: LogLevel,
    /// Its text (lossily decoded when the guest wrote invalid UTF-8).
    pub message: String,
}

/// The log of one invocation, as kept for the tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Log {
    /// The lines kept, in order.
    pub lines: Vec<LogLine>,
    /// Bytes kept.
    pub bytes: u64,
    /// Whether lines were dropped (or cut) because the budget ran out.
    pub truncated: bool,
    /// Bytes dropped because the budget ran out.
    pub dropped_bytes: u64,
}

#[derive(Debug)]
struct Inner {
    log: Log,
    budget: u64,
    /// Unterminated text written to stdout/stderr, completed by a later write.
    partial: [Vec<u8>; 2],
}

/// A shared, bounded log writer. Clones write to the same log.
#[derive(Debug, Clone)]
pub struct LogSink(Arc<Mutex<Inner>>);

/// Longest unterminated stdout/stderr line kept before it is flushed as a line of its own.
const MAX_PARTIAL_LINE: usize = 4096;

impl LogSink {
    /// A log that keeps at most `budget` bytes of message text.
    pub fn new(budget: u64) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            log: Log::default(),
            budget,
            partial: [Vec::new(), Vec::new()],
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-write; the log is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a line, cutting it (and marking the log truncated) when the budget runs out.
    pub fn push(&self, level: LogLevel, message: &str) {
        self.lock().push(level, message);
    }

    /// Appends raw bytes written to stdout or stderr, one log line per text line.
    fn write_stream(&self, level: LogLevel, bytes: &[u8]) {
        let mut inner = self.lock();
        let slot = usize::from(level == LogLevel::Stderr);
        let mut partial = std::mem::take(&mut inner.partial[slot]);
        for &byte in bytes {
            if byte == b'\n' {
                inner.push(level, &String::from_utf8_lossy(&partial));
                partial.clear();
            } else {
                partial.push(byte);
                if partial.len() >= MAX_PARTIAL_LINE {
                    inner.push(level, &String::from_utf8_lossy(&partial));
                    partial.clear();
                }
            }
        }
        inner.partial[slot] = partial;
    }

    /// The log so far, with any unterminated stdout/stderr text as final lines.
    pub fn finish(&self) -> Log {
        let mut inner = self.lock();
        for (slot, level) in [(0, LogLevel::Stdout), (1, LogLevel::Stderr)] {
            let partial = std::mem::take(&mut inner.partial[slot]);
            if !partial.is_empty() {
                inner.push(level, &String::from_utf8_lossy(&partial));
            }
        }
        inner.log.clone()
    }

    /// A stdout or stderr stream for the guest that writes into this log.
    pub fn stream(&self, level: LogLevel) -> GuestOutput {
        GuestOutput {
            sink: self.clone(),
            level,
        }
    }
}

impl Inner {
    fn push(&mut self, level: LogLevel, message: &str) {
        let left = self.budget.saturating_sub(self.log.bytes);
        let len = message.len() as u64;
        if len <= left {
            self.log.bytes += len;
            self.log.lines.push(LogLine {
                level,
                message: message.to_owned(),
            });
            return;
        }
        self.log.truncated = true;
        self.log.dropped_bytes += len - left;
        if left > 0 {
            let cut = floor_char_boundary(message, left as usize);
            self.log.bytes += cut as u64;
            self.log.dropped_bytes += left - cut as u64;
            self.log.lines.push(LogLine {
                level,
                message: format!("{}…[truncated]", &message[..cut]),
            });
            // Nothing more fits: later lines are only counted.
            self.log.bytes = self.budget;
        }
    }
}

fn floor_char_boundary(s: &str, index: usize) -> usize {
    (0..=index.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// The guest's stdout or stderr: every byte is accepted (so a chatty guest never traps on a full
/// pipe) and lands in the bounded log.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    sink: LogSink,
    level: LogLevel,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.sink.write_stream(self.level, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_within_budget() {
        let sink = LogSink::new(100);
        sink.push(LogLevel::Info, "hello");
        sink.push(LogLevel::Warn, "world");
        let log = sink.finish();
        assert_eq!(log.lines.len(), 2);
        assert_eq!(log.bytes, 10);
        assert!(!log.truncated);
    }

    #[test]
    fn cuts_the_line_that_crosses_the_budget_and_counts_the_rest() {
        let sink = LogSink::new(8);
        sink.push(LogLevel::Info, "12345");
        sink.push(LogLevel::Info, "abcdef");
        sink.push(LogLevel::Info, "dropped");
        let log = sink.finish();
        assert!(log.truncated);
        assert_eq!(log.lines.len(), 2);
        assert_eq!(log.lines[1].message, "abc…[truncated]");
        assert_eq!(log.dropped_bytes, 3 + 7);
    }

    #[test]
    fn never_cuts_inside_a_character() {
        let sink = LogSink::new(2);
        sink.push(LogLevel::Info, "é€");
        assert_eq!(sink.finish().lines[0].message, "é…[truncated]");
    }

    #[test]
    fn splits_stream_writes_into_lines() {
        let sink = LogSink::new(1000);
        sink.write_stream(LogLevel::Stderr, b"thread panicked at\nsrc/lib.rs:1");
        sink.write_stream(LogLevel::Stderr, b": boom\n");
        sink.write_stream(LogLevel::Stdout, b"no newline");
        let log = sink.finish();
        let lines: Vec<_> = log
            .lines
            .iter()
            .map(|l| (l.level, l.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (LogLevel::Stderr, "thread panicked at"),
                (LogLevel::Stderr, "src/lib.rs:1: boom"),
                (LogLevel::Stdout, "no newline"),
            ]
        );
    }
}
