//! A guest that misbehaves on command, for the host's sandbox and contract tests.
//!
//! `handle_webhook` reads the request body: the first line is a command, further lines are its
//! arguments. Each command does exactly one thing (see `run`); an unknown command is a bad
//! request naming it. `handle_poll` always emits one `test.ok` and appends `x` to the cursor.
//!
//! Events that the SDK's builder would refuse (floats, unsafe integers, a type without a dot)
//! are made with the SDK's unchecked constructor: the point is to see the host refuse them.

use std::hint::black_box;

use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Event, EventTypeDecl, PollOutput, PollPage,
    WebhookRequest, log, state,
};
use serde_json::json;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

struct Hostile;

impl Adapter for Hostile {
    fn describe() -> AdapterInfo {
        AdapterInfo::new("hostile", env!("CARGO_PKG_VERSION"), "custom")
            .event_type("test.ok")
            .event_type("probe.result")
            .event_type(EventTypeDecl::new("deal.won").decimal_field("/amount"))
            .event_type(
                EventTypeDecl::new("contact.created")
                    .pii_field("/email")
                    .pii_field("/phones/*"),
            )
    }

    fn handle_webhook(req: &WebhookRequest, _ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        let body = req.body_text()?;
        let mut lines = body.lines();
        let command = lines.next().unwrap_or("").trim();
        let args: Vec<&str> = lines.collect();
        run(command, &args)
    }

    fn handle_poll(page: &PollPage, _ctx: &Context) -> Result<PollOutput, AdapterError> {
        let next = format!("{}x", page.cursor.as_deref().unwrap_or(""));
        // A page whose body is a command (not JSON) runs it, as a webhook does.
        let text = String::from_utf8_lossy(&page.body);
        let mut lines = text.lines();
        let command = lines.next().unwrap_or("").trim();
        let events = if command.is_empty() || command.starts_with(['[', '{']) {
            vec![ok_event()?]
        } else {
            let args: Vec<&str> = lines.collect();
            run(command, &args)?
        };
        Ok(PollOutput::new(events).next_cursor(next))
    }
}

crm_adapter_sdk::export_adapter!(Hostile);

fn run(command: &str, args: &[&str]) -> Result<Vec<Event>, AdapterError> {
    match command {
        // An optional argument names the entity (load and crash tests use many entities).
        "ok" => match args.first() {
            Some(entity) => Ok(vec![
                Event::new("test.ok", *entity)?.payload(json!({ "ok": true }))?,
            ]),
            None => Ok(vec![ok_event()?]),
        },
        "loop" => spin_forever(),
        "alloc" => allocate_forever(),
        "stack" => {
            let depth = recurse(black_box(0));
            Ok(vec![test_ok(json!({ "depth": depth }))?])
        }
        "panic" => panic!("hostile guest panicked on purpose"),
        "float" => Ok(vec![Event::unchecked(
            "deal.won",
            "deal",
            "1",
            r#"{"amount":"1.00","ratio":12.5}"#,
        )]),
        "big-int" => Ok(vec![Event::unchecked(
            "test.ok",
            "test",
            "1",
            r#"{"n":9007199254740993}"#,
        )]),
        "foreign-org" => Ok(vec![ok_event()?.org("org-not-allowed")]),
        "foreign-tenant" => Ok(vec![test_ok(json!({ "tenant_id": "someone-else" }))?]),
        "no-dot" => Ok(vec![Event::unchecked("nodot", "nodot", "1", "{}")]),
        "undeclared" => Ok(vec![Event::new("ghost.appeared", "1")?]),
        "decimal-number" => Ok(vec![Event::unchecked(
            "deal.won",
            "deal",
            "1",
            r#"{"amount":12.5}"#,
        )]),
        "decimal-bad" => Ok(vec![
            Event::new("deal.won", "1")?.payload(json!({ "amount": "1e3" }))?,
        ]),
        "many-events" => (0..100_000)
            .map(|i| Ok(Event::new("test.ok", i.to_string())?.payload(json!({ "i": i }))?))
            .collect(),
        "huge-payload" => Ok(vec![test_ok(json!({ "blob": "x".repeat(2 * MIB) }))?]),
        "log-flood" => {
            let message = "l".repeat(KIB);
            for _ in 0..10_000 {
                log::info(&message);
            }
            Ok(vec![ok_event()?])
        }
        "file" => Ok(vec![probe_file()?]),
        "env" => Ok(vec![probe_env()?]),
        "socket" => Ok(vec![probe_socket()?]),
        "state-set" => {
            let [key, value] = args_n(command, args)?;
            state::set(key, value)?;
            Ok(vec![ok_event()?])
        }
        "state-get" => {
            let [key] = args_n(command, args)?;
            let value = state::get_string(key)?;
            Ok(vec![test_ok(json!({ "value": value }))?])
        }
        "state-bomb" => state_bomb(),
        "remember" => Ok(vec![remember()?]),
        "bad-request" => Err(AdapterError::bad_request("hostile says no")),
        "ignored" => Err(AdapterError::ignored("not interesting")),
        "fail" => Err(AdapterError::failed("hostile failed")),
        "stderr" => {
            eprintln!("to stderr");
            Ok(vec![ok_event()?])
        }
        // Everything an invocation can observe besides its input: the state (a counter it
        // reads and bumps), the wall and monotonic clocks and the random generator (through
        // std's hash seed). Two runs differ; a replay of one must not. The argument is the org.
        "entropy" => {
            use std::hash::BuildHasher as _;
            let [org] = args_n(command, args)?;
            let count = state::get_string("entropy-count")?
                .and_then(|text| text.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            state::set("entropy-count", count.to_string())?;
            let started = std::time::Instant::now();
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let random = std::collections::hash_map::RandomState::new().hash_one("entropy");
            let elapsed = started.elapsed().as_nanos();
            log::info(&format!("entropy run {count}"));
            Ok(
                vec![Event::new("probe.result", "entropy")?.org(org).payload(json!({
                "probe": "entropy",
                "allowed": true,
                "detail": format!("run {count} at {wall} ns, {elapsed} ns later, hash {random}"),
            }))?],
            )
        }
        // A person (email, phone; then the org to emit it for) that the guest also writes to
        // its log at every level and to stdout and stderr: the host must mask it everywhere
        // but the event.
        "person" => {
            let [email, phone, org] = args_n(command, args)?;
            let line = format!("person {email} reachable at {phone}");
            log::trace(&line);
            log::debug(&line);
            log::info(&line);
            log::warn(&line);
            log::error(&line);
            println!("{line}");
            eprintln!("{line}");
            Ok(vec![
                Event::new("contact.created", "P-1")?
                    .org(org)
                    .payload(json!({
                        "external_source": "hostile",
                        "external_id": "P-1",
                        "name": "Test Person",
                        "email": email,
                        "phones": [phone],
                        "city": "Leeds",
                    }))?,
            ])
        }
        // Blocks in WASI (a clock wait) for the given milliseconds (default 3000): no wasm
        // runs meanwhile, so only the host's watchdog can stop it at the deadline.
        "sleep" => {
            let ms = args
                .first()
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(3000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(vec![ok_event()?])
        }
        // Reads the counter in state, adds one, writes it back, and reports the value it
        // wrote (entity `count-N`): N concurrent deliveries must leave exactly N.
        "count" => {
            let n: u64 = state::get_json("count")?.unwrap_or(0) + 1;
            state::set_json("count", &n)?;
            Ok(vec![
                Event::new("test.ok", format!("count-{n}"))?.payload(json!({ "count": n }))?,
            ])
        }
        // Adds one to the counter under the key given (its own key per entity).
        "count-key" => {
            let key = format!("count/{}", args.first().map_or("", |a| a.trim()));
            let n: u64 = state::get_json(&key)?.unwrap_or(0) + 1;
            state::set_json(&key, &n)?;
            Ok(vec![
                Event::new("test.ok", format!("{key}-{n}"))?.payload(json!({ "count": n }))?,
            ])
        }
        // Writes the given number of bytes (default 4 MiB) of bare newlines to stdout: a
        // flood of empty log lines.
        "newlines" => {
            use std::io::Write as _;
            let n = args
                .first()
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(4 * MIB);
            let mut out = std::io::stdout();
            let _ = out.write_all(&vec![b'\n'; n]);
            let _ = out.flush();
            Ok(vec![ok_event()?])
        }
        // An error whose message is the given number of bytes (default 15 MB).
        "huge-error" => {
            let n = args
                .first()
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(15_000_000);
            Err(AdapterError::failed("e".repeat(n)))
        }
        // `count` events whose payloads are `mib` MiB each: more than the host copies out.
        "copy-bomb" => {
            let [count, mib] = args_n(command, args)?;
            let (count, mib): (usize, usize) = (
                count.trim().parse().unwrap_or(2),
                mib.trim().parse().unwrap_or(9),
            );
            let blob = "x".repeat(mib * MIB - 16);
            (0..count)
                .map(|i| {
                    Ok(Event::unchecked(
                        "test.ok",
                        "test",
                        i.to_string(),
                        format!(r#"{{"b":"{blob}"}}"#),
                    ))
                })
                .collect()
        }
        // Computes for the given milliseconds (second argument, default 0), then takes the
        // given number of MiB (default 200) of memory, touches it, and computes until the
        // deadline: the host's memory use jumps while it runs.
        "hog" => {
            let mib: usize = args
                .first()
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(200);
            let delay_ms: u64 = args.get(1).and_then(|a| a.trim().parse().ok()).unwrap_or(0);
            let until = std::time::Instant::now() + std::time::Duration::from_millis(delay_ms);
            while std::time::Instant::now() < until {
                black_box(0u64);
            }
            let mut chunks = Vec::with_capacity(mib);
            for _ in 0..mib {
                let mut chunk = vec![0u8; MIB];
                for byte in chunk.iter_mut().step_by(4 * KIB) {
                    *byte = 1;
                }
                chunks.push(black_box(chunk));
            }
            black_box(&chunks);
            spin_forever()
        }
        "" => Err(AdapterError::bad_request(
            "empty body: the first line must be a command",
        )),
        other => Err(AdapterError::bad_request(format!(
            "unknown command `{other}`"
        ))),
    }
}

/// `test.ok` about entity "1" with payload `{"ok": true}`.
fn ok_event() -> Result<Event, AdapterError> {
    test_ok(json!({ "ok": true }))
}

fn test_ok(payload: serde_json::Value) -> Result<Event, AdapterError> {
    Ok(Event::new("test.ok", "1")?.payload(payload)?)
}

fn probe(name: &str, allowed: bool, detail: Vec<String>) -> Result<Event, AdapterError> {
    Ok(Event::new("probe.result", "1")?.payload(json!({
        "probe": name,
        "allowed": allowed,
        "detail": detail.join("; "),
    }))?)
}

/// Counts its calls in a static and grows a heap buffer by 64 KiB, then reports both: an
/// instance that started from anything but the component's initial memory would see more than
/// one call and more than 64 KiB.
fn remember() -> Result<Event, AdapterError> {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static HEAP: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let mut heap = HEAP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    heap.extend(std::iter::repeat_n(0xA5_u8, 64 * KIB));
    test_ok(json!({ "calls": calls, "heap_bytes": heap.len() }))
}

/// The first `N` argument lines, or a bad request saying what the command needs.
fn args_n<'a, const N: usize>(
    command: &str,
    args: &[&'a str],
) -> Result<[&'a str; N], AdapterError> {
    args.get(..N)
        .and_then(|a| <[&str; N]>::try_from(a).ok())
        .ok_or_else(|| {
            AdapterError::bad_request(format!(
                "`{command}` needs {N} argument line(s), got {}",
                args.len()
            ))
        })
}

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn allocate_forever() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; MIB];
        // Touch every page so the memory is really used.
        for byte in chunk.iter_mut().step_by(4 * KIB) {
            *byte = 1;
        }
        chunks.push(black_box(chunk));
        black_box(&chunks);
    }
}

/// Recurses until the stack runs out; the work after the call keeps it from being a tail call.
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1).wrapping_add(black_box(frame)[31])
}

fn state_bomb() -> Result<Vec<Event>, AdapterError> {
    let value = vec![b'b'; 64 * KIB];
    for i in 0u64.. {
        if let Err(err) = state::set(&format!("bomb-{i:08}"), &value) {
            return Err(AdapterError::Failed(err.to_string()));
        }
    }
    unreachable!("u64 keys ran out")
}

fn probe_file() -> Result<Event, AdapterError> {
    let mut allowed = false;
    let mut detail = Vec::new();
    match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => {
            allowed = true;
            detail.push(format!("read /etc/passwd: ok ({} bytes)", text.len()));
        }
        Err(e) => detail.push(format!("read /etc/passwd: {e}")),
    }
    match std::fs::read_dir(".") {
        Ok(entries) => {
            allowed = true;
            detail.push(format!("read_dir .: ok ({} entries)", entries.count()));
        }
        Err(e) => detail.push(format!("read_dir .: {e}")),
    }
    match std::fs::File::create("escape.txt") {
        Ok(_) => {
            allowed = true;
            detail.push("create escape.txt: ok".into());
        }
        Err(e) => detail.push(format!("create escape.txt: {e}")),
    }
    probe("file", allowed, detail)
}

fn probe_env() -> Result<Event, AdapterError> {
    let vars = std::env::vars().count();
    let home = std::env::var("HOME");
    let args = std::env::args().count();
    let allowed = vars > 0 || home.is_ok() || args > 0;
    let detail = vec![
        format!("vars: {vars}"),
        match home {
            Ok(home) => format!("HOME: {home}"),
            Err(e) => format!("HOME: {e}"),
        },
        format!("args: {args}"),
    ];
    probe("env", allowed, detail)
}

fn probe_socket() -> Result<Event, AdapterError> {
    let mut detail = Vec::new();
    let connected = match std::net::TcpStream::connect("127.0.0.1:4222") {
        Ok(_) => {
            detail.push("tcp connect 127.0.0.1:4222: ok".into());
            true
        }
        Err(e) => {
            detail.push(format!("tcp connect 127.0.0.1:4222: {e}"));
            false
        }
    };
    match std::net::UdpSocket::bind("0.0.0.0:0") {
        Ok(_) => detail.push("udp bind 0.0.0.0:0: ok".into()),
        Err(e) => detail.push(format!("udp bind 0.0.0.0:0: {e}")),
    }
    probe("socket", connected, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_adapter_sdk::testing;

    fn call(body: &str) -> Result<Vec<Event>, AdapterError> {
        Hostile::handle_webhook(&testing::webhook(body), &testing::context())
    }

    #[test]
    fn well_behaved_commands_do_what_they_say() {
        let events = call("ok").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (
                events[0].event_type(),
                events[0].entity_id(),
                events[0].payload_json().as_str()
            ),
            ("test.ok", "1", r#"{"ok":true}"#)
        );
        assert_eq!(
            call("bad-request"),
            Err(AdapterError::bad_request("hostile says no"))
        );
        assert_eq!(
            call("ignored"),
            Err(AdapterError::ignored("not interesting"))
        );
        assert_eq!(call("fail"), Err(AdapterError::failed("hostile failed")));
        assert_eq!(
            call("nope\n"),
            Err(AdapterError::bad_request("unknown command `nope`"))
        );
    }

    #[test]
    fn misbehaving_events_are_the_ones_the_host_must_refuse() {
        let info = Hostile::describe();
        let ctx = testing::context().with_org("org-1");
        for command in [
            "float",
            "big-int",
            "foreign-org",
            "foreign-tenant",
            "no-dot",
            "undeclared",
            "decimal-number",
            "decimal-bad",
        ] {
            let events = call(command).unwrap();
            assert!(
                testing::check_events(&info, &ctx, &events).is_err(),
                "`{command}` should break a contract"
            );
        }
        let events = call("ok").unwrap();
        assert_eq!(testing::check_events(&info, &ctx, &events), Ok(()));
        assert_eq!(
            call("float").unwrap()[0].payload_json(),
            r#"{"amount":"1.00","ratio":12.5}"#
        );
        assert_eq!(
            call("big-int").unwrap()[0].payload_json(),
            r#"{"n":9007199254740993}"#
        );
    }

    #[test]
    fn volume_commands_produce_their_volume() {
        assert_eq!(call("many-events").unwrap().len(), 100_000);
        let huge = call("huge-payload").unwrap();
        assert!(huge[0].payload_json().len() > 2 * MIB);
        call("log-flood").unwrap();
        let logs = testing::logs();
        assert_eq!(logs.len(), 10_000);
        assert!(logs.iter().all(|l| l.message.len() == KIB));
    }

    #[test]
    fn state_commands_use_the_connection_state() {
        call("state-set\ncursor\nc_1").unwrap();
        let events = call("state-get\ncursor").unwrap();
        assert_eq!(events[0].payload_json(), r#"{"value":"c_1"}"#);
        let events = call("state-get\nmissing").unwrap();
        assert_eq!(events[0].payload_json(), r#"{"value":null}"#);
        assert!(matches!(
            call("state-set\nonly-key"),
            Err(AdapterError::BadRequest(_))
        ));
        match call("state-bomb") {
            Err(AdapterError::Failed(message)) => assert!(message.contains("state"), "{message}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_counter_adds_one_per_call() {
        for n in 1..=3 {
            let events = call("count").unwrap();
            assert_eq!(events[0].entity_id(), format!("count-{n}"));
        }
        assert_eq!(testing::state()["count"], b"3");
    }

    #[test]
    fn floods_and_bombs_produce_their_volume() {
        match call("huge-error\n1000") {
            Err(AdapterError::Failed(message)) => assert_eq!(message.len(), 1000),
            other => panic!("unexpected {other:?}"),
        }
        let events = call("copy-bomb\n2\n1").unwrap();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.payload_json().len() >= MIB - 16));
    }

    #[test]
    fn poll_appends_x_to_the_cursor() {
        let ctx = testing::context();
        let out = Hostile::handle_poll(&testing::poll_page("{}"), &ctx).unwrap();
        assert_eq!(out.next_cursor.as_deref(), Some("x"));
        assert_eq!(out.events.len(), 1);
        let out = Hostile::handle_poll(&testing::poll_page("{}").with_cursor("abc"), &ctx).unwrap();
        assert_eq!(out.next_cursor.as_deref(), Some("abcx"));
    }
}
