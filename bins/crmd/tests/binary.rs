//! The real `crmd` binary: configuration errors exit 2 naming the variable; with no cloud
//! credentials it starts on an ephemeral port, logs the start-up lines in order, serves health and
//! version, and exits 0 on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_crmd");

/// A command with a clean environment (no inherited settings, no `.env` from the repo).
fn crmd(dir: &tempfile::TempDir, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .current_dir(dir.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/db/crmd.sqlite", dir.path().display()),
        );
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn run_to_exit(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = crmd(&dir, vars)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("crmd did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let missing_key = dir.path().join("no-such-key.json");
    let missing_key = missing_key.to_str().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "eighty")], "PORT"),
        (&[("EOU_MS", "1000")], "EOU_MS"),
        (&[("LOG_FORMAT", "yaml")], "LOG_FORMAT"),
        (&[("DATABASE_URL", "mysql://db")], "DATABASE_URL"),
        (&[("PUBLIC_BASE_URL", "not a url")], "PUBLIC_BASE_URL"),
        (
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", "/a.json"),
                ("GCP_CREDENTIALS_JSON", "{}"),
            ],
            "GCP_CREDENTIALS_JSON",
        ),
        (
            &[("GOOGLE_APPLICATION_CREDENTIALS", missing_key)],
            "GOOGLE_APPLICATION_CREDENTIALS",
        ),
        (
            &[("GCP_CREDENTIALS_JSON", "{not json")],
            "GCP_CREDENTIALS_JSON",
        ),
        (&[("RUST_LOG", "=[")], "RUST_LOG"),
    ];
    for (vars, variable) in cases {
        let (code, stderr) = run_to_exit(vars);
        assert_eq!(code, Some(2), "{vars:?}: {stderr}");
        assert!(
            stderr.contains(variable),
            "{vars:?}: stderr does not name {variable}: {stderr}"
        );
        assert!(stderr.contains("configuration error"), "{stderr}");
    }
}

#[test]
fn starts_without_cloud_credentials_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = crmd(
        &dir,
        &[
            ("PORT", "0"),
            ("DEPLOY_ID", "binary-test-1"),
            ("TWILIO_AUTH_TOKEN", "tok-SECRET"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    // Read stdout on a thread; collect lines until the summary line arrives.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no 'configuration:' line within 30 s");
        lines.push(line.clone());
        if line.contains("configuration:") {
            let listening = lines
                .iter()
                .find(|l| l.contains("Listening at: http://"))
                .expect("Listening at line");
            let port: u16 = listening
                .rsplit(':')
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            break port;
        }
    };
    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:#?}"))
    };
    let order = [
        position("crmd starting: entry point"),
        position("Listening at: http://0.0.0.0:"),
        position("Health endpoints registered"),
        position("configuration:"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "start-up log order {order:?}: {lines:#?}"
    );
    let summary = &lines[order[3]];
    assert!(
        summary.contains("speech: no Google credentials, calls will get the offline fallback"),
        "{summary}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("SECRET")),
        "secret in logs"
    );
    assert_ne!(port, 0);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let res = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let signature = res.headers()["x-app-signature"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            signature.starts_with(&format!("crmd/{} commit=", env!("CARGO_PKG_VERSION"))),
            "{signature}"
        );
        assert!(signature.ends_with("deploy=binary-test-1"), "{signature}");
        assert_eq!(res.text().await.unwrap(), "ok");
        let version: serde_json::Value = http
            .get(format!("http://127.0.0.1:{port}/version"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(version["deploy_id"], "binary-test-1");
        assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
        let commit = version["git_commit"].as_str().unwrap();
        assert!(
            commit == "unknown"
                || (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "{commit}"
        );
        assert!(!version["marker"].as_str().unwrap().is_empty());
    });

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let code = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(0), "graceful shutdown exits 0");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("shutdown complete")),
        "{rest:#?}"
    );
    assert!(
        dir.path().join("db/crmd.sqlite").exists(),
        "SQLite database created"
    );
}

#[test]
fn json_logs_carry_the_listening_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = crmd(&dir, &[("PORT", "0"), ("LOG_FORMAT", "json")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no Listening line");
        if line.contains("Listening at:") {
            break line;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&listening).unwrap();
    assert!(
        json["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Listening at: http://0.0.0.0:")
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(0)
    );
}
