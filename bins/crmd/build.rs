//! Embeds the git commit and the build time so `/version` and `X-App-Signature` can prove which
//! build answers. Both fall back to "unknown" (no git, not a checkout, no clock).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let build_time = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    println!("cargo:rustc-env=CRMD_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=CRMD_BUILD_TIME={build_time}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Re-run when HEAD moves (checkout, commit) so the embedded commit stays true.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/refs/heads");
        println!("cargo:rerun-if-changed={git_dir}/packed-refs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
