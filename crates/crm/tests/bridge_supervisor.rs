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
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let supervisor = BridgeSupervisor::spawn(
        &format!("echo $$ > {}; exec sleep 600", pid_file.display()),
        quick(),
    );
    let mut stats = supervisor.watch_stats();
    tokio::time::timeout(GUARD, stats.wait_for(|s| s.running))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(GUARD, supervisor.shutdown())
        .await
        .unwrap();
    let s = stats.borrow().clone();
    assert!(!s.running);
    assert_eq!((s.starts, s.exits), (1, 0), "a stop is not a crash");
    // The process is gone (it may take a moment to be reaped; kill -0 then fails).
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let alive = std::process::Command::new("kill")
        .args(["-0", pid.trim()])
        .status()
        .unwrap()
        .success();
    assert!(!alive, "bridge pid {pid} still alive");
}
