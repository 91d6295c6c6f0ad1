//! The bridge supervisor with real child processes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crm::whatsapp::{BridgeSupervisor, RestartPolicy};

const GUARD: Duration = Duration::from_secs(20);

fn quick() -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        stable_after: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn crashing_bridge_is_restarted_and_never_takes_us_down() {
    let supervisor = BridgeSupervisor::spawn(
        "echo bridge up; echo 'Unhandled rejection: Connection Closed' >&2; exit 3",
        quick(),
    );
    let mut stats = supervisor.watch_stats();
    tokio::time::timeout(GUARD, stats.wait_for(|s| s.exits >= 3))
        .await
        .unwrap()
        .unwrap();
    let s = supervisor.stats();
    assert!(s.starts >= 3);
    assert!(s.last_exit.as_deref().unwrap().contains('3'), "{s:?}");
    tokio::time::timeout(GUARD, supervisor.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn missing_program_is_reported_and_retried() {
    let supervisor = BridgeSupervisor::spawn("/nonexistent/whatsapp-bridge --serve", quick());
    let mut stats = supervisor.watch_stats();
    tokio::time::timeout(GUARD, stats.wait_for(|s| s.exits >= 2))
        .await
        .unwrap()
        .unwrap();
    // sh reports "not found" with status 127.
    assert!(supervisor.stats().last_exit.unwrap().contains("127"));
    tokio::time::timeout(GUARD, supervisor.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_kills_a_running_bridge() {
    let supervisor = BridgeSupervisor::spawn("exec sleep 600", quick());
    let mut stats = supervisor.watch_stats();
    tokio::time::timeout(GUARD, stats.wait_for(|s| s.running))
        .await
        .unwrap()
        .unwrap();
    let pid = supervisor.stats().pid.unwrap();
    tokio::time::timeout(GUARD, supervisor.shutdown())
        .await
        .unwrap();
    let s = stats.borrow().clone();
    assert!(!s.running);
    assert_eq!((s.starts, s.exits), (1, 0), "a stop is not a crash");
    // shutdown() kills and reaps the child: the pid no longer exists.
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!alive, "bridge pid {pid} still alive");
}
