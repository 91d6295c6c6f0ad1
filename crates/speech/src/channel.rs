//! gRPC channels to Google (TLS with webpki roots) or to a local stand-in (plaintext h2c), and
//! the interceptor that attaches `authorization: Bearer <self-signed JWT>`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::credentials::{GoogleCredentials, TokenSource};
use crate::error::SpeechError;

/// Google answers HTTP/2 pings more frequent than this with GOAWAY.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazily connecting channel plus the interceptor that authorizes its requests.
pub(crate) fn connect_lazy(
    variable: &'static str,
    endpoint: &str,
    credentials: Option<Arc<GoogleCredentials>>,
) -> Result<(Channel, Authorizer), SpeechError> {
    let invalid = |problem: String| SpeechError::InvalidEndpoint {
        variable,
        endpoint: endpoint.to_owned(),
        problem,
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|error: http::uri::InvalidUri| invalid(error.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host".to_owned()))?
        .to_owned();
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(invalid("the scheme must be http or https".to_owned())),
    };
    if tls && credentials.is_none() {
        return Err(SpeechError::MissingCredentials {
            endpoint: endpoint.to_owned(),
        });
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SpeechError::NoRuntime);
    }
    let mut builder = Endpoint::from(uri.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(false)
        .tcp_nodelay(true);
    if tls {
        let tls_config = ClientTlsConfig::new().with_webpki_roots().domain_name(host);
        builder = builder
            .tls_config(tls_config)
            .map_err(|error| invalid(error.to_string()))?;
    }
    let audience = audience_for(&uri);
    let tokens = credentials.map(|credentials| Arc::new(TokenSource::new(credentials, audience)));
    Ok((builder.connect_lazy(), Authorizer { tokens }))
}

/// `aud` claim for self-signed JWTs: the service URL with a trailing slash, e.g.
/// `https://speech.googleapis.com/`.
fn audience_for(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri
        .authority()
        .map(|authority| authority.as_str())
        .unwrap_or_default();
    format!("{scheme}://{authority}/")
}

/// Adds `authorization: Bearer <jwt>` to every request when credentials are configured.
#[derive(Clone, Debug)]
pub(crate) struct Authorizer {
    tokens: Option<Arc<TokenSource>>,
}

impl Interceptor for Authorizer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(tokens) = &self.tokens {
            let bearer = tokens
                .bearer(SystemTime::now())
                .map_err(|error| tonic::Status::unauthenticated(error.to_string()))?;
            let value = MetadataValue::try_from(bearer).map_err(|_| {
                tonic::Status::unauthenticated("minted token is not a valid header value")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_is_the_service_url() {
        let uri: http::Uri = "https://speech.googleapis.com".parse().unwrap();
        assert_eq!(audience_for(&uri), "https://speech.googleapis.com/");
        let uri: http::Uri = "http://127.0.0.1:5000".parse().unwrap();
        assert_eq!(audience_for(&uri), "http://127.0.0.1:5000/");
    }
}
