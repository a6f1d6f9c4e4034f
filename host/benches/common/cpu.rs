//! CPU time of the bench process and of its store writer, from `/proc` (Linux; zero
//! elsewhere): on a shared machine it moves less than rates do.

#![allow(dead_code)] // Each bench uses its own part.

use std::time::Duration;

/// CPU time spent by the process (every thread, user and system) and by the store writer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// Every thread of the process.
    pub process: Duration,
    /// The store's writer thread.
    pub writer: Duration,
}

impl Cpu {
    /// Now, from `/proc` (Linux; zero elsewhere).
    pub fn now() -> Self {
        Self {
            process: process_cpu().unwrap_or_default(),
            writer: thread_cpu("store-writer").unwrap_or_default(),
        }
    }

    /// The time spent since `start`.
    pub fn since(self, start: Self) -> Self {
        Self {
            process: self.process.saturating_sub(start.process),
            writer: self.writer.saturating_sub(start.writer),
        }
    }
}

/// Time on CPU of every live thread of the process (nanoseconds, from their `schedstat`).
/// Threads that ended are not counted: the runtime's blocking threads outlive a run.
fn process_cpu() -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        total += task_cpu(&task.path()).unwrap_or_default();
    }
    Some(total)
}

/// Time on CPU of the thread named `name`.
pub fn thread_cpu(name: &str) -> Option<Duration> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .and_then(|task| task_cpu(&task.path()))
}

fn task_cpu(task: &std::path::Path) -> Option<Duration> {
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let nanos = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}
