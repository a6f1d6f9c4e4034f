//! Per-invocation limits (data, not code paths) and the resource limiter that enforces memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// What one invocation of one adapter may use. Every adapter version has one; the defaults are
/// the production defaults, and overrides must stay within [`PlatformLimits`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline of a webhook invocation, enforced by epoch interruption
    /// (milliseconds).
    pub deadline_ms: u64,
    /// Wall-clock deadline of a poll invocation (`poll-request`, `handle-poll`): a page holds
    /// hundreds of records where a webhook holds a few (milliseconds). Time waiting on the
    /// network is not counted in either.
    pub poll_deadline_ms: u64,
    /// Fuel budget (roughly wasm instructions); `None` means only the deadline bounds CPU.
    pub fuel: Option<u64>,
    /// Linear memory cap, in bytes.
    pub memory_bytes: u64,
    /// Elements in any one table.
    pub table_elements: u32,
    /// Core instances a component may create (a Rust component makes a few; one built by
    /// componentize-py with `--stub-wasi` makes 38): counted before compiling, refused
    /// with this limit's name. At most the platform's `max_instances`.
    pub instances: u32,
    /// Tables a component may create.
    pub tables: u32,
    /// Memories a component may create.
    pub memories: u32,
    /// Largest accepted input (webhook body or poll page), in bytes.
    pub input_bytes: u64,
    /// Total size of the events of one invocation (payloads, ids, types), in bytes.
    pub output_bytes: u64,
    /// Events one invocation may emit.
    pub max_events: u32,
    /// Log bytes kept per invocation (logging import, stdout and stderr together).
    pub log_bytes: u64,
    /// Keys in a connection's state.
    pub state_keys: u32,
    /// Length of one state key, in bytes.
    pub state_key_bytes: u32,
    /// Size of one state value, in bytes.
    pub state_value_bytes: u64,
    /// Size of a connection's whole state (keys and values), in bytes.
    pub state_total_bytes: u64,
    /// Requests one invocation may make through the host (`http.fetch`, 0.2.0), retries of a
    /// request by the host not counted.
    pub http_requests: u32,
    /// Longest the host waits for one answer (connecting, sending, reading), in milliseconds.
    pub http_timeout_ms: u64,
    /// Network time one invocation may spend in all its requests, in milliseconds (the
    /// compute deadline is paused meanwhile).
    pub http_budget_ms: u64,
    /// Largest answer body the host accepts, in bytes.
    pub http_response_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline_ms: 100,
            poll_deadline_ms: 2_000,
            fuel: None,
            memory_bytes: 64 * MIB,
            table_elements: 20_000,
            instances: 32,
            tables: 16,
            memories: 2,
            input_bytes: MIB,
            output_bytes: MIB,
            max_events: 1_000,
            log_bytes: 64 * KIB,
            state_keys: 1_024,
            state_key_bytes: 256,
            state_value_bytes: 64 * KIB,
            state_total_bytes: MIB,
            http_requests: 50,
            http_timeout_ms: 10_000,
            http_budget_ms: 60_000,
            http_response_bytes: 8 * MIB,
        }
    }
}

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// These limits for an invocation on a poll page or for a poll request: the poll
    /// deadline in place of the webhook one.
    pub fn for_polls(&self) -> Self {
        Self {
            deadline_ms: self.poll_deadline_ms,
            ..self.clone()
        }
    }

    /// The most the host copies out of the guest in one go: the events an invocation returns
    /// (its output limit, plus the records and list headers of its events), one log line, one
    /// state value or one request. wasmtime refuses a copy beyond it before allocating, so a
    /// guest cannot make the host hold more than its limits allow.
    pub fn hostcall_bytes(&self) -> usize {
        const PER_EVENT: u64 = 128;
        let output = self
            .output_bytes
            .saturating_add(u64::from(self.max_events).saturating_mul(PER_EVENT));
        let largest = output
            .max(self.state_value_bytes + u64::from(self.state_key_bytes))
            .max(self.log_bytes)
            .saturating_add(64 * KIB);
        usize::try_from(largest).unwrap_or(usize::MAX)
    }

    /// Checks these limits against the platform's maximums; the error names every field that is
    /// out of bounds.
    pub fn validate(&self, platform: &PlatformLimits) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut check = |name: &str, value: u64, max: u64| {
            if value == 0 || value > max {
                problems.push(format!("{name} must be between 1 and {max} (got {value})"));
            }
        };
        check("deadline_ms", self.deadline_ms, platform.max_deadline_ms);
        check(
            "poll_deadline_ms",
            self.poll_deadline_ms,
            platform.max_deadline_ms,
        );
        check("memory_bytes", self.memory_bytes, platform.max_memory_bytes);
        check(
            "table_elements",
            self.table_elements.into(),
            platform.max_table_elements.into(),
        );
        check(
            "instances",
            self.instances.into(),
            platform.max_instances.into(),
        );
        check("tables", self.tables.into(), platform.max_tables.into());
        check(
            "memories",
            self.memories.into(),
            platform.max_memories.into(),
        );
        check("input_bytes", self.input_bytes, platform.max_input_bytes);
        check("output_bytes", self.output_bytes, platform.max_output_bytes);
        check(
            "max_events",
            self.max_events.into(),
            platform.max_events.into(),
        );
        check("log_bytes", self.log_bytes, platform.max_log_bytes);
        check("state_keys", self.state_keys.into(), 100_000);
        check("state_key_bytes", self.state_key_bytes.into(), 4 * KIB);
        check(
            "state_value_bytes",
            self.state_value_bytes,
            platform.max_state_bytes,
        );
        check(
            "state_total_bytes",
            self.state_total_bytes,
            platform.max_state_bytes,
        );
        check(
            "http_requests",
            self.http_requests.into(),
            platform.max_http_requests.into(),
        );
        check(
            "http_timeout_ms",
            self.http_timeout_ms,
            platform.max_http_timeout_ms,
        );
        check(
            "http_budget_ms",
            self.http_budget_ms,
            platform.max_http_budget_ms,
        );
        check(
            "http_response_bytes",
            self.http_response_bytes,
            platform.max_http_response_bytes,
        );
        if let Some(fuel) = self.fuel {
            check("fuel", fuel, u64::MAX / 2);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The ceilings no adapter can exceed, and the size of the instance pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformLimits {
    /// Instances that can be alive at once (the pooling allocator's slots).
    pub concurrent_instances: u32,
    /// The largest deadline an adapter may ask for (milliseconds).
    pub max_deadline_ms: u64,
    /// The largest linear memory an adapter may ask for, in bytes.
    pub max_memory_bytes: u64,
    /// The largest table an adapter may ask for.
    pub max_table_elements: u32,
    /// The most core instances an adapter may ask for (its `instances` limit): also the
    /// pooling allocator's per-component cap, so that no component within its limits is
    /// refused by the pool.
    pub max_instances: u32,
    /// The most tables an adapter may ask for (its `tables` limit), likewise.
    pub max_tables: u32,
    /// The most linear memories an adapter may ask for (its `memories` limit), likewise.
    pub max_memories: u32,
    /// Wasm stack available to a guest, in bytes.
    pub max_wasm_stack_bytes: usize,
    /// The largest input an adapter may accept, in bytes.
    pub max_input_bytes: u64,
    /// The largest output an adapter may produce, in bytes.
    pub max_output_bytes: u64,
    /// The most events an adapter may emit at once.
    pub max_events: u32,
    /// The largest log an adapter may keep, in bytes.
    pub max_log_bytes: u64,
    /// The largest state an adapter may keep, in bytes.
    pub max_state_bytes: u64,
    /// The largest component that can be loaded, in bytes.
    pub max_component_bytes: u64,
    /// The most requests an invocation may make through the host.
    pub max_http_requests: u32,
    /// The longest wait for one answer an adapter may ask for (milliseconds).
    pub max_http_timeout_ms: u64,
    /// The most network time per invocation an adapter may ask for (milliseconds).
    pub max_http_budget_ms: u64,
    /// The largest answer an adapter may ask to accept, in bytes.
    pub max_http_response_bytes: u64,
}

impl Default for PlatformLimits {
    fn default() -> Self {
        Self {
            concurrent_instances: 128,
            max_deadline_ms: 10_000,
            max_memory_bytes: 256 * MIB,
            max_table_elements: 100_000,
            max_instances: 64,
            max_tables: 64,
            max_memories: 2,
            max_wasm_stack_bytes: 512 * KIB as usize,
            max_input_bytes: 16 * MIB,
            max_output_bytes: 16 * MIB,
            max_events: 100_000,
            max_log_bytes: MIB,
            max_state_bytes: 16 * MIB,
            max_component_bytes: 32 * MIB,
            max_http_requests: 1_000,
            max_http_timeout_ms: 60_000,
            max_http_budget_ms: 300_000,
            max_http_response_bytes: 64 * MIB,
        }
    }
}

/// Enforces [`Limits`] on one store and records what the guest asked for.
#[derive(Debug)]
pub struct Limiter {
    memory_cap: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    /// The largest total linear memory the guest has held.
    pub peak_memory_bytes: usize,
    /// Set when a memory growth was refused because of the cap.
    pub memory_refused: Option<usize>,
    memory_now: usize,
}

impl Limiter {
    /// A limiter for one invocation under `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            memory_cap: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: limits.table_elements as usize,
            instances: limits.instances as usize,
            tables: limits.tables as usize,
            memories: limits.memories as usize,
            peak_memory_bytes: 0,
            memory_refused: None,
            memory_now: 0,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The cap applies to all memories of the store together.
        let total = self.memory_now - current.min(self.memory_now) + desired;
        if total > self.memory_cap {
            self.memory_refused = Some(desired);
            return Ok(false);
        }
        self.memory_now = total;
        self.peak_memory_bytes = self.peak_memory_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_the_platform() {
        Limits::default()
            .validate(&PlatformLimits::default())
            .unwrap();
    }

    #[test]
    fn validation_names_every_field_out_of_bounds() {
        let limits = Limits {
            deadline_ms: 0,
            memory_bytes: 4 * 1024 * MIB,
            ..Limits::default()
        };
        let err = limits.validate(&PlatformLimits::default()).unwrap_err();
        assert!(
            err.contains("deadline_ms must be between 1 and 10000 (got 0)"),
            "{err}"
        );
        assert!(
            err.contains("memory_bytes must be between 1 and 268435456"),
            "{err}"
        );
    }

    #[test]
    fn limiter_refuses_growth_past_the_cap_and_records_the_peak() {
        let mut limiter = Limiter::new(&Limits {
            memory_bytes: 10 * MIB,
            ..Limits::default()
        });
        assert!(limiter.memory_growing(0, 2 * MIB as usize, None).unwrap());
        assert!(
            limiter
                .memory_growing(2 * MIB as usize, 8 * MIB as usize, None)
                .unwrap()
        );
        assert!(
            !limiter
                .memory_growing(8 * MIB as usize, 11 * MIB as usize, None)
                .unwrap()
        );
        assert_eq!(limiter.peak_memory_bytes, 8 * MIB as usize);
        assert_eq!(limiter.memory_refused, Some(11 * MIB as usize));
    }
}
