//! The one place where the wasmtime [`Engine`] is configured.

use std::hash::{Hash, Hasher};
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::PlatformLimits;
use super::{Error, Result};

/// How often the epoch advances: a computing guest checks its deadline (and yields its thread)
/// at every tick, so this is the resolution of every wall-clock deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The most of a linear memory's written pages reset in place when its slot is recycled (only
/// with PAGEMAP_SCAN): a Rust guest of ours runs in 1-2 MiB. Pages written beyond it are
/// returned to the kernel as before. This bounds the memory a slot keeps after its instance.
const MEMORY_KEEP_RESIDENT: usize = 4 * 1024 * 1024;
/// The same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

/// Builds the engine every adapter runs on: component model, epoch interruption, fuel metering,
/// the pooling allocator sized from `platform`, copy-on-write memory initialisation.
pub fn new_engine(platform: &PlatformLimits) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let slots = platform.concurrent_instances;
    // Per component, the pool allows what the platform lets an adapter ask for: a component
    // within its own limits (checked before compiling, then by the store's limiter) is never
    // refused by the pool. The totals are what all slots hold at once: core instances are only
    // counted, while every table slot reserves address space, so tables are sized for the
    // default limit (a Rust component defines one or two, a Python one about ten).
    let defaults = super::Limits::default();
    pool.total_component_instances(slots)
        .max_core_instances_per_component(platform.max_instances)
        .total_core_instances(slots.saturating_mul(defaults.instances))
        .max_memories_per_component(platform.max_memories)
        .total_memories(slots.saturating_mul(platform.max_memories))
        .max_tables_per_component(platform.max_tables)
        .total_tables(slots.saturating_mul(defaults.tables))
        .table_elements(platform.max_table_elements as usize)
        .max_memory_size(platform.max_memory_bytes as usize)
        .total_stacks(slots);
    // A recycled slot must be reset to the component's initial memory. By default that is
    // madvise(DONTNEED) over the whole memory: every reset flushes the TLB of every core the
    // process runs on (an inter-processor interrupt each), and the next instance takes a
    // copy-on-write fault (another flush) on every page it writes again. Where the kernel has
    // the PAGEMAP_SCAN ioctl (Linux 6.7+), the pool finds the pages the instance wrote and
    // copies them back from the image (or zeroes them), up to these sizes, and leaves the rest
    // mapped: no flush, no fault. Without the ioctl, "keep resident" would mean a memset of
    // the whole size at every reset, slower than the default for guests of a few MiB, so the
    // default stays.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(true)
        .memory_init_cow(true)
        .max_wasm_stack(platform.max_wasm_stack_bytes)
        // Enough frames to recognise a recursion (see `classify_trap`), few enough to be cheap.
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))
}

/// A short, stable fingerprint of everything that makes a compiled artifact loadable by
/// `engine` (wasmtime version, target, configuration): the name of the artifact cache's folder.
pub fn compatibility_fingerprint(engine: &Engine) -> String {
    // DefaultHasher's algorithm is fixed within one Rust release; a toolchain change only means
    // one recompilation per adapter.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until the engine is dropped.
///
/// The thread holds only a weak handle, so it never keeps an engine alive and stops by itself.
pub fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    thread::Builder::new()
        .name("adapter-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component instantiating an empty core module `count` times.
    fn with_core_instances(count: usize) -> Vec<u8> {
        let instances = "(core instance (instantiate $m))".repeat(count);
        wat::parse_str(format!("(component (core module $m) {instances})")).unwrap()
    }

    #[test]
    fn the_pool_takes_every_component_within_the_platform_s_instance_limit() {
        let platform = PlatformLimits {
            concurrent_instances: 4,
            ..PlatformLimits::default()
        };
        let engine = new_engine(&platform).unwrap();
        // 38 is what componentize-py makes with --stub-wasi; the pool once refused 17.
        let wasm = with_core_instances(platform.max_instances as usize);
        wasmtime::component::Component::new(&engine, &wasm).unwrap();
        let err = wasmtime::component::Component::new(
            &engine,
            with_core_instances(platform.max_instances as usize + 1),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("core module instances"),
            "{err:#}"
        );
    }
}
