//! Running `adapter-host serve` as a child process on a loopback port, for the tests that need
//! the real binary (real HTTP, real signals).

#![allow(dead_code)] // Each test crate uses its own part.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `adapter-host serve` with `config` and `data` on `127.0.0.1:port`, logging only
/// errors, with the extra environment `env`.
pub fn spawn_host(config: &Path, data: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    spawn_host_limited(config, data, port, env, None)
}

/// [`spawn_host`], under a file-descriptor limit of `nofile` when given (a shell's `ulimit -n`
/// before it execs the host).
pub fn spawn_host_limited(
    config: &Path,
    data: &Path,
    port: u16,
    env: &[(&str, &str)],
    nofile: Option<u32>,
) -> Child {
    let binary = env!("CARGO_BIN_EXE_adapter-host");
    let mut command = match nofile {
        Some(limit) => {
            let mut shell = Command::new("bash");
            shell
                .arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(binary);
            shell
        }
        None => Command::new(binary),
    };
    command
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("ADAPTER_HOST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting adapter-host serve")
}

/// [`spawn_host`], its log (at the level `ADAPTER_HOST_LOG` in `env` says) appended to `log`.
pub fn spawn_host_logged(
    config: &Path,
    data: &Path,
    port: u16,
    env: &[(&str, &str)],
    log: &Path,
) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening the log file");
    Command::new(env!("CARGO_BIN_EXE_adapter-host"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("ADAPTER_HOST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("starting adapter-host serve")
}

/// [`wait_ready`], showing the host's log (written by [`spawn_host_logged`]) if it never is.
#[allow(dead_code)]
pub async fn wait_ready_logged(client: &reqwest::Client, port: u16, log: &Path) {
    if !is_ready(client, port).await {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the host did not become ready; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

/// Waits (up to 30 s) until the host on `port` answers `/readyz`.
pub async fn wait_ready(client: &reqwest::Client, port: u16) {
    if !is_ready(client, port).await {
        panic!("the host did not become ready");
    }
}

async fn is_ready(client: &reqwest::Client, port: u16) -> bool {
    for _ in 0..600 {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && response.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
