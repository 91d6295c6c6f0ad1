//! [`BridgeSupervisor`]: runs `WHATSAPP_BRIDGE_CMD` (a WhatsApp Web bridge, typically Node +
//! Baileys) as a separate process, logs its output and crashes, and restarts it with capped
//! exponential back-off. The bridge's failures stay in the bridge: crmd never exits because
//! of them, and the child runs in its own process group so a terminal's Ctrl-C reaches crmd,
//! which then stops the bridge itself.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Restart back-off of the supervised bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Wait before the first restart.
    pub initial_backoff: Duration,
    /// Longest wait between restarts.
    pub max_backoff: Duration,
    /// A run at least this long counts as healthy and resets the back-off.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// What the supervisor has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupervisorStats {
    /// Times the process was started.
    pub starts: u64,
    /// Times it exited on its own or could not be started.
    pub exits: u64,
    /// How the last run ended (`exit status: 3`, `signal: 9`, `spawn failed: …`).
    pub last_exit: Option<String>,
    /// A process is running now.
    pub running: bool,
    /// Process id of the running (or last) bridge.
    pub pid: Option<u32>,
}

/// Handle to the supervisor task. Dropping it stops the bridge (the child is killed on drop).
#[derive(Debug)]
pub struct BridgeSupervisor {
    stats: watch::Receiver<SupervisorStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl BridgeSupervisor {
    /// Starts supervising `sh -c <command>`. Must be called inside a tokio runtime.
    pub fn spawn(command: &str, policy: RestartPolicy) -> BridgeSupervisor {
        let (stats_tx, stats) = watch::channel(SupervisorStats::default());
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(command.to_owned(), policy, stats_tx, stop_rx));
        BridgeSupervisor {
            stats,
            stop: Some(stop),
            task,
        }
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> SupervisorStats {
        self.stats.borrow().clone()
    }

    /// A receiver that sees every change (metrics, tests).
    #[must_use]
    pub fn watch_stats(&self) -> watch::Receiver<SupervisorStats> {
        self.stats.clone()
    }

    /// Stops the bridge (kills it) and waits for the supervisor to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::error!(error = %e, "WhatsApp bridge supervisor task failed");
        }
    }
}

async fn supervise(
    command: String,
    policy: RestartPolicy,
    stats: watch::Sender<SupervisorStats>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = policy.initial_backoff;
    loop {
        let started = Instant::now();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let outcome = match cmd.spawn() {
            Err(e) => format!("spawn failed: {e}"),
            Ok(mut child) => {
                let pid = child.id();
                stats.send_modify(|s| {
                    s.starts += 1;
                    s.running = true;
                    s.pid = pid;
                });
                tracing::info!(pid = child.id(), "WhatsApp bridge started");
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(forward_lines(out, false));
                }
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(forward_lines(err, true));
                }
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) => status.to_string(),
                        Err(e) => format!("wait failed: {e}"),
                    },
                    _ = &mut stop => {
                        if let Err(e) = child.kill().await {
                            tracing::warn!(error = %e, "could not kill the WhatsApp bridge");
                        }
                        stats.send_modify(|s| s.running = false);
                        tracing::info!("WhatsApp bridge stopped");
                        return;
                    }
                }
            }
        };
        let ran_for = started.elapsed();
        if ran_for >= policy.stable_after {
            backoff = policy.initial_backoff;
        }
        tracing::error!(exit = %outcome, ran_for_ms = ran_for.as_millis() as u64,
            restart_in_ms = backoff.as_millis() as u64, "WhatsApp bridge exited; crmd keeps running and will restart it");
        stats.send_modify(|s| {
            s.exits += 1;
            s.running = false;
            s.last_exit = Some(outcome);
        });
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

/// Logs the bridge's output line by line (long lines cut at 2000 characters).
async fn forward_lines(stream: impl AsyncRead + Unpin, is_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line: String = line.chars().take(2000).collect();
        if is_stderr {
            tracing::warn!(target: "whatsapp_bridge", "{line}");
        } else {
            tracing::info!(target: "whatsapp_bridge", "{line}");
        }
    }
}
