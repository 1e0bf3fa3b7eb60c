//! Incoming uTP peers: the UDP side of a listener, bound beside the TCP one on the same port, whose
//! connections go through the same pre-handshake gate (per-IP waiting slots, the timeout, the
//! listener's cap) and then the same `answer_incoming` as TCP ones.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use ids::InfoHash;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpListener;

use crate::conns::HandshakeGate;
use crate::encryption::Encryption;
use crate::torrent::Shared;
use crate::transport::PeerStream;
use crate::utp_transport::{Transports, UtpEndpoint};

/// Attempts at finding a port free for both TCP and UDP when any port will do.
const PORT_ATTEMPTS: usize = 16;

/// Binds the TCP listener (when TCP is on) and the uTP socket (when uTP is on) on `addr`, both on
/// one port. With port 0, a port free on both is looked for. A uTP socket that cannot have the port
/// (something else holds it on UDP) is left out with a warning when TCP is on, an error otherwise.
pub(crate) fn bind_pair(
    addr: SocketAddr,
    transports: Transports,
) -> io::Result<(TcpListener, Option<UtpEndpoint>)> {
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS {
        let listener = crate::peer::listen(addr)?;
        if !transports.utp {
            return Ok((listener, None));
        }
        let port = listener.local_addr()?.port();
        match UtpEndpoint::bind(SocketAddr::new(addr.ip(), port)) {
            Ok(endpoint) => return Ok((listener, Some(endpoint))),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return no_utp(listener, port, e, transports),
        }
    }
    let listener = crate::peer::listen(addr)?;
    let port = listener.local_addr()?.port();
    no_utp(
        listener,
        port,
        last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()),
        transports,
    )
}

fn no_utp(
    listener: TcpListener,
    port: u16,
    e: io::Error,
    transports: Transports,
) -> io::Result<(TcpListener, Option<UtpEndpoint>)> {
    if !transports.tcp {
        return Err(io::Error::new(
            e.kind(),
            format!("cannot listen for uTP on UDP port {port}: {e}"),
        ));
    }
    tracing::warn!("no uTP: UDP port {port} is not free ({e}); peers connect over TCP only");
    Ok((listener, None))
}

/// Where an accepted connection goes once its handshake names a torrent: a torrent's own listener,
/// or a session's, which finds the torrent by info-hash (plaintext) or by HASH('req2', info-hash)
/// (MSE) and says which encryption incoming peers may use.
pub(crate) enum Route {
    One(Arc<Shared>),
    Many(Arc<dyn SessionRoute>),
}

/// Where a session hands a peer whose handshake it read: a running torrent, or a magnet link's
/// metadata phase.
pub(crate) enum Destination {
    Torrent(Arc<Shared>),
    Metadata(tokio::sync::mpsc::UnboundedSender<crate::transport::IncomingPeer>),
}

impl Destination {
    /// Answers the peer: the torrent's handshake and its peer task, or to the metadata phase.
    pub(crate) async fn hand_over(
        self,
        stream: PeerStream,
        addr: std::net::SocketAddr,
        theirs: wire::Handshake,
    ) -> anyhow::Result<()> {
        match self {
            Destination::Torrent(shared) => {
                crate::peer::answer_incoming(shared, stream, addr, theirs).await
            }
            Destination::Metadata(phase) => phase
                .send(crate::transport::IncomingPeer {
                    stream,
                    addr,
                    theirs,
                })
                .map_err(|_| anyhow::anyhow!("the metadata phase is over")),
        }
    }
}

/// What a session's uTP listener asks of the session.
pub(crate) trait SessionRoute: Send + Sync {
    fn find(&self, id: &InfoHash) -> Option<Destination>;
    fn lookup(&self) -> Box<dyn mse::SkeyLookup>;
    fn encryption(&self) -> Encryption;
}

/// A boxed lookup as the MSE responder takes one.
struct BoxedLookup(Box<dyn mse::SkeyLookup>);

impl mse::SkeyLookup for BoxedLookup {
    fn find(&self, req2: &[u8; 20]) -> Option<[u8; 20]> {
        self.0.find(req2)
    }
}

/// Reads what has arrived already, without waiting: `WouldBlock` when nothing has.
fn try_read_now(stream: &mut utp::UtpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut rb = ReadBuf::new(buf);
    match Pin::new(stream).poll_read(&mut cx, &mut rb) {
        Poll::Ready(Ok(())) => Ok(rb.filled().len()),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// Accepts uTP connections until `stop` resolves, each through `gate` to its torrent.
pub(crate) async fn accept_loop(
    endpoint: UtpEndpoint,
    route: Route,
    gate: Arc<HandshakeGate>,
    stop: impl Future<Output = ()>,
) {
    let route = Arc::new(route);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = endpoint.accept() => a,
            () = &mut stop => return,
        };
        let Ok((mut stream, addr)) = accepted else {
            return;
        };
        let addr = crate::peer::canonical(addr);
        if let Route::One(shared) = &*route {
            if shared.state.lock().core.is_banned(addr.ip()) {
                continue;
            }
        }
        let Some(admitted) =
            crate::conns::admit_reading(&gate, addr.ip(), |buf| try_read_now(&mut stream, buf))
        else {
            continue;
        };
        let route = route.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let stream = PeerStream::utp(stream);
            let result = match &*route {
                Route::One(shared) => {
                    crate::peer::incoming(shared.clone(), stream, addr, &gate, admitted).await
                }
                Route::Many(session) => {
                    let lookup = BoxedLookup(session.lookup());
                    let encryption = session.encryption();
                    async {
                        let (stream, theirs) = crate::conns::finish_handshake(
                            &gate, stream, admitted, addr, encryption, lookup,
                        )
                        .await?;
                        let to = session.find(&theirs.info_hash).ok_or_else(|| {
                            anyhow::anyhow!("handshake for a torrent we do not have")
                        })?;
                        to.hand_over(stream, addr, theirs).await
                    }
                    .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("incoming uTP {addr}: {e:#}");
            }
        });
    }
}
