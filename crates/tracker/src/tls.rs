//! The HTTPS front end's TLS: the certificate and key from PEM files, and a listener that hands axum
//! only connections whose handshake finished.
//!
//! Handshakes run in their own tasks, not in `accept`: axum calls `accept` in one loop, so a client
//! that stalls its handshake there would stop everyone else from getting in.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::http_limits::{LimitedListener, LimitedStream, RemoteAddr};
use crate::metrics::Counters;

/// A TLS acceptor for the certificate chain in `cert` and the private key in `key` (both PEM), on the
/// ring provider.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, crate::Error> {
    use crate::Error::Tls;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| {
            Tls(format!(
                "cannot read the TLS certificate {}: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Tls(format!("no certificate in {}", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Tls(format!("cannot read the TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Tls(format!("TLS settings: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            Tls(format!(
                "the TLS certificate {} and key {} do not go together: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Finished handshakes waiting for axum; small, since axum takes them as fast as they come.
const READY_QUEUE: usize = 64;

/// Accepts TCP connections within the HTTP limits, runs each TLS handshake under a deadline in its
/// own task, and yields the connections that completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<LimitedStream>, SocketAddr)>,
    local: io::Result<SocketAddr>,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        mut inner: LimitedListener,
        acceptor: TlsAcceptor,
        handshake_timeout: Duration,
        state: Arc<crate::State>,
    ) -> TlsListener {
        let local = inner.local_addr();
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (stream, addr) = inner.accept().await;
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    // Held here rather than moved into the timeout, so a connection given up on is
                    // counted before it closes (what a client sees comes after what /metrics says).
                    let mut handshake = acceptor.accept(stream);
                    match tokio::time::timeout(handshake_timeout, &mut handshake).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            Counters::add(&state.counters.tls_failed);
                            tracing::debug!("TLS handshake from {addr} failed: {e}");
                        }
                        Err(_) => {
                            Counters::add(&state.counters.tls_failed);
                            tracing::debug!("TLS handshake from {addr} timed out");
                        }
                    }
                });
            }
        });
        TlsListener {
            ready,
            local,
            acceptor_task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // axum drops the listener at shutdown; stop taking connections with it.
        self.acceptor_task.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<LimitedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop never ends on its own; if it was aborted, nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for RemoteAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        RemoteAddr(*stream.remote_addr())
    }
}
