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

/// HTTP/2 connections to one endpoint, opened as concurrent streams need them.
///
/// Google's front ends cap the concurrent streams of one HTTP/2 connection (100 is the usual
/// figure): past the cap a new request waits for another to end. The pool hands out the first
/// connection with fewer than `per_connection` streams in use, opening another (lazily
/// connecting) when all are full. A [`ConnectionLease`] holds the place until it is dropped.
pub(crate) struct ConnectionPool<S> {
    /// `"STT"` or `"TTS"`, for logs.
    service: &'static str,
    variable: &'static str,
    endpoint: String,
    credentials: Option<Arc<GoogleCredentials>>,
    per_connection: usize,
    make: fn(Channel, Authorizer) -> S,
    connections: std::sync::Mutex<Vec<PooledConnection<S>>>,
}

struct PooledConnection<S> {
    client: S,
    streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S> std::fmt::Debug for ConnectionPool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .field("per_connection", &self.per_connection)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

/// A request's or stream's place on a pooled connection, given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionLease {
    streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for ConnectionLease {
    fn drop(&mut self) {
        self.streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<S: Clone> ConnectionPool<S> {
    /// A pool with its first connection (which validates the endpoint and credentials).
    pub(crate) fn new(
        service: &'static str,
        variable: &'static str,
        endpoint: &str,
        credentials: Option<Arc<GoogleCredentials>>,
        per_connection: usize,
        make: fn(Channel, Authorizer) -> S,
    ) -> Result<Self, SpeechError> {
        let (channel, authorizer) = connect_lazy(variable, endpoint, credentials.clone())?;
        Ok(ConnectionPool {
            service,
            variable,
            endpoint: endpoint.to_owned(),
            credentials,
            per_connection: per_connection.max(1),
            make,
            connections: std::sync::Mutex::new(vec![PooledConnection {
                client: make(channel, authorizer),
                streams: Arc::default(),
            }]),
        })
    }

    /// A client on a connection with room for one more stream: the first one under the cap,
    /// or a new one. If a new one cannot be made (it was made once with the same settings, so
    /// this is not expected), the least used is shared.
    pub(crate) fn checkout(&self, log_id: &str) -> (S, ConnectionLease) {
        use std::sync::atomic::Ordering;
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let free = connections
            .iter()
            .position(|c| c.streams.load(Ordering::Relaxed) < self.per_connection);
        let index = match free {
            Some(index) => index,
            None => match connect_lazy(self.variable, &self.endpoint, self.credentials.clone()) {
                Ok((channel, authorizer)) => {
                    connections.push(PooledConnection {
                        client: (self.make)(channel, authorizer),
                        streams: Arc::default(),
                    });
                    tracing::info!(
                        service = self.service,
                        connections = connections.len(),
                        streams_per_connection = self.per_connection,
                        "another HTTP/2 connection opened for more concurrent requests"
                    );
                    connections.len() - 1
                }
                Err(error) => {
                    tracing::warn!(service = self.service, call_id = %log_id, %error,
                        "could not open another connection; sharing the least used one");
                    connections
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| c.streams.load(Ordering::Relaxed))
                        .map_or(0, |(index, _)| index)
                }
            },
        };
        let connection = &connections[index];
        connection.streams.fetch_add(1, Ordering::Relaxed);
        (
            connection.client.clone(),
            ConnectionLease {
                streams: Arc::clone(&connection.streams),
            },
        )
    }
}

impl<S> ConnectionPool<S> {
    /// HTTP/2 connections opened so far.
    pub(crate) fn connection_count(&self) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}
