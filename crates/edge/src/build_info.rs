//! Which build is answering: version, git commit and build time embedded by the binary's
//! `build.rs`, plus the `DEPLOY_ID` of this deployment.

use axum::http::HeaderValue;

/// Facts about the running build, handed to the edge by the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Crate version of the binary (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Full git commit hash, or `unknown` when built outside a git checkout.
    pub git_commit: String,
    /// Build time, RFC 3339 UTC, or `unknown`.
    pub build_time: String,
    /// The path of the binary's entry point (for the start-up log).
    pub entry_point: String,
}

impl BuildInfo {
    /// A build marker unique per build: `VERSION+COMMIT12.BUILD_TIME`.
    pub fn marker(&self) -> String {
        let commit: String = self.git_commit.chars().take(12).collect();
        let time: String = self
            .build_time
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!("{}+{}.{}", self.version, commit, time)
    }

    /// The `X-App-Signature` value: `crmd/VERSION commit=COMMIT12 deploy=DEPLOY_ID`.
    pub fn app_signature(&self, deploy_id: Option<&str>) -> HeaderValue {
        let commit: String = self.git_commit.chars().take(12).collect();
        let value = format!(
            "crmd/{} commit={} deploy={}",
            self.version,
            commit,
            deploy_id.unwrap_or("unset")
        );
        // Config validation keeps DEPLOY_ID to visible ASCII; the other parts come from the build.
        // Should anything else slip through, fall back to a constant rather than failing.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("crmd"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_signature_identify_the_build() {
        let info = BuildInfo {
            version: "0.1.0".into(),
            git_commit: "0123456789abcdef0123".into(),
            build_time: "2026-11-24T06:00:00Z".into(),
            entry_point: "bins/crmd/src/main.rs".into(),
        };
        assert_eq!(info.marker(), "0.1.0+0123456789ab.20261124T060000Z");
        assert_eq!(
            info.app_signature(Some("deploy-42")),
            "crmd/0.1.0 commit=0123456789ab deploy=deploy-42"
        );
        assert_eq!(
            info.app_signature(None),
            "crmd/0.1.0 commit=0123456789ab deploy=unset"
        );
    }
}
