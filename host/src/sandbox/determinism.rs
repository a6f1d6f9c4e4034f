//! What makes an invocation repeatable: everything a guest can observe besides its input, its
//! state and its HTTP answers comes from here. Randomness (`wasi:random`, secure and insecure)
//! is drawn from a generator seeded per invocation, and every clock reading (`wasi:clocks`,
//! wall and monotonic) is recorded; a replay gives the guest the same seed and the same
//! readings in the same order, so a deterministic guest computes exactly what it computed.
//!
//! The seed and readings are no secret of the host's: the guest sees what they produce anyway.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// The most readings of each clock recorded per invocation; a guest reading a clock more often
/// than that is still served, but its replay is not exact past this many (and says so).
pub const MAX_CLOCK_READINGS: usize = 4096;

/// The seed and clock readings of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Determinism {
    /// Seeds the secure and insecure generators and the insecure seed (hex of 32 bytes).
    pub seed: String,
    /// Wall-clock readings, nanoseconds since the Unix epoch, in order.
    pub wall_ns: Vec<u64>,
    /// Monotonic-clock readings, nanoseconds, in order.
    pub monotonic_ns: Vec<u64>,
    /// Whether a clock was read more than [`MAX_CLOCK_READINGS`] times (the readings past it
    /// were not recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// How an invocation's randomness and clocks behave: live (a fresh seed, the real clocks,
/// recorded), or replaying a recorded invocation.
#[derive(Debug, Clone)]
pub(super) struct Source {
    seed: [u8; 32],
    replay: Option<Arc<Determinism>>,
    record: Arc<Mutex<Recording>>,
}

#[derive(Debug, Default)]
struct Recording {
    wall: Vec<u64>,
    monotonic: Vec<u64>,
    truncated: bool,
}

impl Source {
    /// A live invocation: a fresh seed from the operating system's generator.
    pub(super) fn live() -> Self {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        Self {
            seed,
            replay: None,
            record: Arc::default(),
        }
    }

    /// A replay of `recorded`; an unreadable seed is a fresh one (the replay will differ).
    pub(super) fn replaying(recorded: Determinism) -> Self {
        let mut seed = [0u8; 32];
        match hex::decode(&recorded.seed) {
            Ok(bytes) if bytes.len() == 32 => seed.copy_from_slice(&bytes),
            _ => rand::fill(&mut seed),
        }
        Self {
            seed,
            replay: Some(Arc::new(recorded)),
            record: Arc::default(),
        }
    }

    /// Gives the WASI context its generators and clocks.
    pub(super) fn install(&self, wasi: &mut WasiCtxBuilder) {
        let derived = |label: u8| {
            let mut seed = self.seed;
            seed[0] ^= label;
            StdRng::from_seed(seed)
        };
        let insecure_seed = u128::from_le_bytes(self.seed[16..].try_into().expect("16 bytes"));
        wasi.secure_random(derived(0))
            .insecure_random(derived(1))
            .insecure_random_seed(insecure_seed)
            .wall_clock(Clock {
                kind: Kind::Wall,
                replay: self.replay_of(Kind::Wall),
                record: Arc::clone(&self.record),
                started: Instant::now(),
            })
            .monotonic_clock(Clock {
                kind: Kind::Monotonic,
                replay: self.replay_of(Kind::Monotonic),
                record: Arc::clone(&self.record),
                started: Instant::now(),
            });
    }

    fn replay_of(&self, kind: Kind) -> Mutex<VecDeque<u64>> {
        let readings = self.replay.as_ref().map(|r| match kind {
            Kind::Wall => r.wall_ns.clone(),
            Kind::Monotonic => r.monotonic_ns.clone(),
        });
        Mutex::new(readings.unwrap_or_default().into())
    }

    /// What the invocation drew on, for its record.
    pub(super) fn finish(&self) -> Determinism {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        Determinism {
            seed: hex::encode(self.seed),
            wall_ns: record.wall.clone(),
            monotonic_ns: record.monotonic.clone(),
            truncated: record.truncated,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Wall,
    Monotonic,
}

/// A clock that records what it answers, or answers what was recorded.
struct Clock {
    kind: Kind,
    /// Readings still to give back, when replaying.
    replay: Mutex<VecDeque<u64>>,
    record: Arc<Mutex<Recording>>,
    started: Instant,
}

impl Clock {
    fn read(&self) -> u64 {
        let replayed = self
            .replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let reading = replayed.unwrap_or_else(|| match self.kind {
            Kind::Wall => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
            }
            Kind::Monotonic => u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        });
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let readings = match self.kind {
            Kind::Wall => &mut record.wall,
            Kind::Monotonic => &mut record.monotonic,
        };
        if readings.len() < MAX_CLOCK_READINGS {
            readings.push(reading);
        } else {
            record.truncated = true;
        }
        reading
    }
}

impl HostWallClock for Clock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.read())
    }
}

impl HostMonotonicClock for Clock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_answers_the_recorded_readings_then_the_live_clock() {
        let live = Source::live();
        let clock = Clock {
            kind: Kind::Wall,
            replay: live.replay_of(Kind::Wall),
            record: Arc::clone(&live.record),
            started: Instant::now(),
        };
        let (first, second) = (clock.read(), clock.read());
        assert!(second >= first);
        let recorded = live.finish();
        assert_eq!(recorded.wall_ns, [first, second]);

        let replay = Source::replaying(recorded.clone());
        let clock = Clock {
            kind: Kind::Wall,
            replay: replay.replay_of(Kind::Wall),
            record: Arc::clone(&replay.record),
            started: Instant::now(),
        };
        assert_eq!((clock.read(), clock.read()), (first, second));
        assert!(clock.read() >= second, "past the recording: the live clock");
        assert_eq!(replay.finish().seed, recorded.seed);
    }

    #[test]
    fn readings_past_the_bound_are_served_but_not_recorded() {
        let live = Source::live();
        let clock = Clock {
            kind: Kind::Monotonic,
            replay: live.replay_of(Kind::Monotonic),
            record: Arc::clone(&live.record),
            started: Instant::now(),
        };
        for _ in 0..=MAX_CLOCK_READINGS {
            clock.read();
        }
        let recorded = live.finish();
        assert_eq!(recorded.monotonic_ns.len(), MAX_CLOCK_READINGS);
        assert!(recorded.truncated);
    }
}
