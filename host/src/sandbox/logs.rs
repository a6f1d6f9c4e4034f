//! The log of one invocation: the logging import, stdout and stderr, under one byte budget.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

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
///
/// Its size is bounded whatever the guest writes: every line costs its text, as stored (JSON
/// escapes included), plus [`LINE_OVERHEAD`] for its framing, against the budget, and at most
/// [`MAX_LINES`] lines are kept. An empty line is not free: a flood of newlines runs out the
/// budget like any other text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Log {
    /// The lines kept, in order.
    pub lines: Vec<LogLine>,
    /// What the kept lines cost against the budget (text as stored, plus framing).
    pub bytes: u64,
    /// Whether lines were dropped (or cut) because the budget ran out.
    pub truncated: bool,
    /// Bytes of text dropped because the budget ran out.
    pub dropped_bytes: u64,
    /// Lines dropped whole because the budget (or the line cap) ran out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_lines: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a line costs on top of its text: about its framing as stored
/// (`{"level":"stderr","message":""},`).
pub const LINE_OVERHEAD: u64 = 32;
/// The most lines one invocation's log keeps.
pub const MAX_LINES: usize = 10_000;
/// Ends a line that was cut because the budget ran out.
const CUT_MARK: &str = "…[truncated]";

/// The length of `text` as a JSON string's content: control characters, quotes and backslashes
/// take their escapes.
fn json_len(text: &str) -> u64 {
    text.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8() as u64,
        })
        .sum()
}

/// The longest prefix of `text` (on a character boundary) whose [`json_len`] is at most `room`.
fn prefix_within(text: &str, room: u64) -> usize {
    let mut used = 0;
    for (index, c) in text.char_indices() {
        used += json_len(c.encode_utf8(&mut [0; 4]));
        if used > room {
            return index;
        }
    }
    text.len()
}

#[derive(Debug)]
struct Inner {
    log: Log,
    budget: u64,
    /// Set once a line did not fit: later lines are only counted.
    full: bool,
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
            full: false,
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
        if inner.full {
            // Nothing more is kept: count what is dropped without splitting it into lines.
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            inner.log.dropped_lines += lines;
            inner.log.dropped_bytes += bytes.len() as u64 - lines;
            return;
        }
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
        let len = message.len() as u64;
        if self.full {
            self.log.dropped_bytes += len;
            self.log.dropped_lines += 1;
            return;
        }
        let left = self.budget.saturating_sub(self.log.bytes);
        let cost = LINE_OVERHEAD + json_len(message);
        if cost <= left && self.log.lines.len() < MAX_LINES {
            self.log.bytes += cost;
            self.log.lines.push(LogLine {
                level,
                message: message.to_owned(),
            });
            return;
        }
        // This line does not fit: keep what of it does, marked, then nothing more.
        self.full = true;
        self.log.truncated = true;
        let room = left.saturating_sub(LINE_OVERHEAD + json_len(CUT_MARK));
        let cut = prefix_within(message, room);
        if cut == 0 || self.log.lines.len() >= MAX_LINES {
            self.log.dropped_bytes += len;
            self.log.dropped_lines += 1;
            return;
        }
        let kept = &message[..cut];
        self.log.bytes += LINE_OVERHEAD + json_len(kept) + json_len(CUT_MARK);
        self.log.dropped_bytes += len - cut as u64;
        self.log.lines.push(LogLine {
            level,
            message: format!("{kept}{CUT_MARK}"),
        });
    }
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

    /// Written straight into the log: no background writer task to hand every chunk to (a
    /// guest writing megabytes would otherwise spend its deadline on task switches).
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// How much a guest may write to stdout or stderr per write call: the log keeps what its
/// budget allows whatever the guest writes, so this only bounds one copy.
const WRITE_PERMIT: usize = 64 * 1024;

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.sink.write_stream(self.level, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
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
        assert_eq!(log.bytes, 10 + 2 * LINE_OVERHEAD);
        assert!(!log.truncated);
    }

    #[test]
    fn cuts_the_line_that_crosses_the_budget_and_counts_the_rest() {
        let mark = json_len(CUT_MARK);
        let sink = LogSink::new(2 * LINE_OVERHEAD + 5 + mark + 3);
        sink.push(LogLevel::Info, "12345");
        sink.push(LogLevel::Info, "abcdefghijklmnopqrstuvwxyz");
        sink.push(LogLevel::Info, "dropped");
        let log = sink.finish();
        assert!(log.truncated);
        assert_eq!(log.lines.len(), 2);
        assert_eq!(log.lines[1].message, "abc…[truncated]");
        assert_eq!(log.dropped_bytes, 23 + 7);
        assert_eq!(log.dropped_lines, 1);
        assert!(log.bytes <= 2 * LINE_OVERHEAD + 5 + mark + 3);
    }

    #[test]
    fn never_cuts_inside_a_character() {
        let sink = LogSink::new(LINE_OVERHEAD + json_len(CUT_MARK) + 3);
        sink.push(LogLevel::Info, "é€€€€€€€€");
        assert_eq!(sink.finish().lines[0].message, "é…[truncated]");
    }

    #[test]
    fn empty_lines_are_not_free() {
        // A flood of newlines: each empty line costs its framing, so the budget ends it.
        let sink = LogSink::new(64 * 1024);
        sink.write_stream(LogLevel::Stdout, &vec![b'\n'; 4 * 1024 * 1024]);
        let log = sink.finish();
        assert_eq!(log.lines.len() as u64, 64 * 1024 / LINE_OVERHEAD);
        assert!(log.truncated);
        assert_eq!(
            log.dropped_lines + log.lines.len() as u64,
            4 * 1024 * 1024,
            "every line is counted"
        );
        let stored = serde_json::to_string(&log).unwrap();
        assert!(stored.len() <= 64 * 1024 + 256, "{} bytes", stored.len());
    }

    #[test]
    fn the_line_cap_holds_with_a_large_budget() {
        let sink = LogSink::new(64 * 1024 * 1024);
        for _ in 0..(MAX_LINES + 10) {
            sink.push(LogLevel::Info, "");
        }
        let log = sink.finish();
        assert_eq!(log.lines.len(), MAX_LINES);
        assert_eq!(log.dropped_lines, 10);
        assert!(log.truncated);
    }

    #[test]
    fn escapes_count_against_the_budget() {
        // Control characters are stored as \u00XX: six bytes each.
        let budget = 16 * 1024;
        let sink = LogSink::new(budget);
        let controls = "\u{1}".repeat(1024);
        for _ in 0..100 {
            sink.push(LogLevel::Info, &controls);
        }
        let log = sink.finish();
        let stored = serde_json::to_string(&log.lines).unwrap();
        assert!(
            stored.len() as u64 <= budget,
            "{} bytes stored for a budget of {budget}",
            stored.len()
        );
        assert!(log.truncated);
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
