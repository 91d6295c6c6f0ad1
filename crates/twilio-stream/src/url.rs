//! The server's public base URL, and the callback / stream URLs joined onto it.
//!
//! Twilio must be handed absolute URLs: `https://` for webhooks and callbacks, `wss://` for the
//! Media Stream (with no query string: Twilio strips it, data goes in `<Parameter>`). Joining
//! never produces a double slash, whatever slashes the base and the path carry.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Characters escaped when a string is used as a URL path: everything that would end the path
/// (`?`, `#`) or is not allowed in it. `%` is kept so already-encoded paths pass unchanged.
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not an absolute URL at all.
    #[error(
        "public base URL {input:?} is not an absolute URL ({reason}); expected e.g. https://voice.example.com/"
    )]
    Invalid {
        /// The rejected input.
        input: String,
        /// What the URL parser reported.
        reason: String,
    },
    /// Scheme other than `http`/`https`.
    #[error("public base URL {input:?} must start with https:// (Twilio only streams to wss://)")]
    UnsupportedScheme {
        /// The rejected input.
        input: String,
    },
    /// The base carries `?query` or `#fragment`.
    #[error(
        "public base URL {input:?} must not have a query string or fragment; put only scheme, host and path prefix"
    )]
    QueryOrFragment {
        /// The rejected input.
        input: String,
    },
    /// The base carries `user:password@`.
    #[error("public base URL must not contain credentials (user:password@); remove them")]
    Credentials,
    /// `Host` header unusable for [`PublicBaseUrl::from_forwarded`].
    #[error("Host header {host:?} is not a host[:port]; check the reverse proxy forwards Host")]
    InvalidHost {
        /// The rejected header value.
        host: String,
    },
}

/// Scheme of the public base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// An absolute `http(s)://host[:port][/prefix]` under which the server is reachable from Twilio.
///
/// Construct with [`PublicBaseUrl::parse`] (configuration) or [`PublicBaseUrl::from_forwarded`]
/// (`X-Forwarded-Proto` + `Host` of a request). A default port (`:443`, `:80`) is dropped and the
/// host lower-cased, as the `url` crate normalises them.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicBaseUrl {
    scheme: Scheme,
    /// `host[:port]`.
    authority: String,
    /// Path prefix without trailing slash: `""` or `"/voice"`.
    prefix: String,
}

impl fmt::Debug for PublicBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicBaseUrl")
            .field(&self.to_string())
            .finish()
    }
}

impl fmt::Display for PublicBaseUrl {
    /// The base with a trailing slash: `https://host/` or `https://host/prefix/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}/",
            self.scheme_name(),
            self.authority,
            self.prefix
        )
    }
}

impl std::str::FromStr for PublicBaseUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for PublicBaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PublicBaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl PublicBaseUrl {
    /// Parse a configured base URL such as `https://voice.example.com/` or
    /// `https://example.com/crmd` (trailing slash optional).
    ///
    /// `http://` is accepted for local tests and simulators; [`PublicBaseUrl::wss`] then yields
    /// `ws://`, which real Twilio refuses (error 31922).
    ///
    /// # Errors
    /// [`UrlError`] for a relative or unparsable URL, another scheme, a query string or fragment,
    /// or embedded credentials.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let trimmed = input.trim();
        let parsed = url::Url::parse(trimmed).map_err(|err| UrlError::Invalid {
            input: input.to_owned(),
            reason: err.to_string(),
        })?;
        let scheme = match parsed.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            _ => {
                return Err(UrlError::UnsupportedScheme {
                    input: input.to_owned(),
                });
            }
        };
        // `Url` drops an empty `?`/`#`; look at the raw text too so "https://h/?" is refused.
        if parsed.query().is_some() || parsed.fragment().is_some() || trimmed.contains(['?', '#']) {
            return Err(UrlError::QueryOrFragment {
                input: input.to_owned(),
            });
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(UrlError::Credentials);
        }
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err(UrlError::Invalid {
                input: input.to_owned(),
                reason: "no host".to_owned(),
            });
        };
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut prefix = String::new();
        for segment in parsed.path().split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(segment);
        }
        Ok(Self {
            scheme,
            authority,
            prefix,
        })
    }

    /// Rebuild the public base from a request's `X-Forwarded-Proto` (first value when a proxy
    /// chain sent a list; `https` when absent) and `Host` header.
    ///
    /// # Errors
    /// [`UrlError::InvalidHost`] when `host` is empty or holds anything besides `host[:port]`;
    /// [`UrlError::UnsupportedScheme`] for a protocol other than `http`/`https`.
    pub fn from_forwarded(proto: Option<&str>, host: &str) -> Result<Self, UrlError> {
        let proto = proto
            .and_then(|p| p.split(',').next())
            .map(str::trim)
            .filter(|p| !p.is_empty());
        let proto = proto.unwrap_or("https").to_ascii_lowercase();
        if proto != "https" && proto != "http" {
            return Err(UrlError::UnsupportedScheme {
                input: format!("{proto}://{host}/"),
            });
        }
        let host = host.trim();
        let host_is_plain = !host.is_empty()
            && !host.contains(|c: char| {
                c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\' | '?' | '#' | '@')
            });
        if !host_is_plain {
            return Err(UrlError::InvalidHost {
                host: host.to_owned(),
            });
        }
        Self::parse(&format!("{proto}://{host}/")).map_err(|_| UrlError::InvalidHost {
            host: host.to_owned(),
        })
    }

    /// `true` for an `https://` base.
    #[must_use]
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// `host[:port]` (default port omitted).
    #[must_use]
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `https://host/prefix/path` (`http://` for an `http` base). `path` is a path only: `?` and
    /// `#` in it are percent-encoded, runs of slashes collapse to one.
    #[must_use]
    pub fn https(&self, path: &str) -> String {
        self.join(self.scheme_name(), path)
    }

    /// `wss://host/prefix/path` (`ws://` for an `http` base), never with a query string: `?` and
    /// `#` in `path` are percent-encoded.
    #[must_use]
    pub fn wss(&self, path: &str) -> String {
        let scheme = match self.scheme {
            Scheme::Https => "wss",
            Scheme::Http => "ws",
        };
        self.join(scheme, path)
    }

    /// The full URL of a received request, for signature checks: base + `path_and_query`
    /// exactly as received (query kept byte for byte; slashes joined without doubling).
    #[must_use]
    pub fn request_url(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.find('?') {
            Some(at) => path_and_query.split_at(at),
            None => (path_and_query, ""),
        };
        let mut url = String::with_capacity(
            self.authority.len() + self.prefix.len() + path_and_query.len() + 10,
        );
        url.push_str(self.scheme_name());
        url.push_str("://");
        url.push_str(&self.authority);
        push_joined_path(&mut url, &self.prefix, path);
        url.push_str(query);
        url
    }

    fn scheme_name(&self) -> &'static str {
        match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }

    fn join(&self, scheme: &str, path: &str) -> String {
        let encoded = utf8_percent_encode(path, PATH_ESCAPES).to_string();
        let mut url = String::with_capacity(
            scheme.len() + 3 + self.authority.len() + self.prefix.len() + encoded.len() + 1,
        );
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(&self.authority);
        push_joined_path(&mut url, &self.prefix, &encoded);
        url
    }
}

/// Append `/prefix/path` with exactly one slash between non-empty segments; a trailing slash of
/// `path` is kept (some routes care), an empty path yields `prefix/`.
fn push_joined_path(url: &mut String, prefix: &str, path: &str) {
    url.push_str(prefix);
    let mut wrote_any = false;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        url.push('/');
        url.push_str(segment);
        wrote_any = true;
    }
    if !wrote_any || path.ends_with('/') {
        url.push('/');
    }
}
