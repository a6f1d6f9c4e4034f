//! An invocation's wall-clock deadline, enforced two ways.
//!
//! - While the guest computes, the epoch callback (every [`EPOCH_TICK`](super::EPOCH_TICK))
//!   traps it with `Trap::Interrupt` once the deadline has passed.
//! - While the guest is blocked in a host call (a WASI `poll` on a clock, a sleep), no wasm runs
//!   and no epoch check happens: [`Deadline::passed`] resolves at the deadline and the invocation
//!   future, with the blocked call in it, is dropped (wasmtime unwinds the guest's fiber).
//!
//! Time spent in the host's own `http.fetch` is paused: network waits are bounded by the
//! fetch's own limits, not by the adapter's compute deadline.

use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
struct State {
    at: Instant,
    paused: bool,
}

/// The deadline of one invocation, shared by the store (for the epoch callback and fetch) and
/// the watchdog.
#[derive(Debug, Clone)]
pub(super) struct Deadline {
    state: std::sync::Arc<watch::Sender<State>>,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub fn starting_now(budget: Duration) -> Self {
        let (state, _) = watch::channel(State {
            at: Instant::now() + budget,
            paused: false,
        });
        Self {
            state: std::sync::Arc::new(state),
        }
    }

    /// Whether the deadline has passed (never while paused).
    pub fn expired(&self) -> bool {
        let state = *self.state.borrow();
        !state.paused && Instant::now() >= state.at
    }

    /// Stops the clock (a host call that waits on the network); returns when it stopped.
    pub fn pause(&self) -> Instant {
        self.state.send_modify(|s| s.paused = true);
        Instant::now()
    }

    /// Starts the clock again, moving the deadline by the time it was stopped.
    pub fn resume(&self, paused_at: Instant) {
        let stopped = paused_at.elapsed();
        self.state.send_modify(|s| {
            s.at += stopped;
            s.paused = false;
        });
    }

    /// Resolves once the deadline has passed outside any pause.
    pub async fn passed(&self) {
        let mut changes = self.state.subscribe();
        loop {
            let state = *changes.borrow_and_update();
            if state.paused {
                // A pause ends with a change; a sender never goes away while we hold `self`.
                let _ = changes.changed().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep_until(state.at.into()) => {
                    if self.expired() {
                        return;
                    }
                }
                _ = changes.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_at_the_deadline_and_not_during_a_pause() {
        let started = Instant::now();
        let deadline = Deadline::starting_now(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let paused_at = deadline.pause();
        let watch = {
            let deadline = deadline.clone();
            tokio::spawn(async move { deadline.passed().await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!deadline.expired());
        assert!(!watch.is_finished(), "a paused deadline never passes");
        deadline.resume(paused_at);
        watch.await.unwrap();
        // 50 ms of budget, 20 used before a pause of 200: it passes at about 250 ms.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(245), "{elapsed:?}");
        assert!(deadline.expired());
    }
}
