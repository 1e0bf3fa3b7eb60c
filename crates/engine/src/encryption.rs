//! Message Stream Encryption on a peer connection: the `mse` crate's handshake driven over a
//! [`PeerStream`], and the stream it leaves behind (RC4 per direction).
//!
//! Outgoing ([`outgoing`]): `off` sends the plaintext BitTorrent handshake; `require` and `prefer`
//! run the MSE handshake offering rc4 only, our BitTorrent handshake riding in it as the initial
//! payload (no extra round trip). Offering rc4 only under `prefer` is what qBittorrent configures
//! libtorrent to do (`allowed_enc_level = pe_rc4`) and what Transmission's "preferred" does:
//! offering plaintext as well would let a libtorrent responder with its default settings
//! (`prefer_rc4` off, which keeps the lowest common bit) pick plaintext, an obfuscated handshake
//! over a plaintext stream. As libtorrent does under `pe_enabled`, a peer that closes the
//! connection (or says nothing) during the MSE handshake is dialled once more in plaintext:
//! [`retry_in_plaintext`].
//!
//! Incoming ([`respond`]): the first bytes tell a plaintext handshake from an MSE one
//! (`mse::detect`); the responder finds the torrent by HASH('req2', SKEY) among those served and
//! selects rc4 when offered (plaintext only if the initiator offers nothing else and the policy
//! is `prefer`). The gate in `conns.rs` bounds its time and slots.
//!
//! The encrypted stream: the read half decrypts in place what the socket gives it (after handing
//! out, first, what arrived with the handshake); the write half encrypts into one reused buffer
//! of at most [`WRITE_CHUNK`] bytes and writes from it. A write the socket takes only partly
//! leaves the rest encrypted in that buffer, reported as not yet written: like every byte stream,
//! the caller's next write must start with those same bytes (`write_all` and the peer writer's
//! vectored loop do), and it is then taken from the buffer without encrypting again.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use mse::{Cipher, Detected, Handshake as MseHandshake, Rc4Stream, SkeyLookup};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use wire::{Handshake, HANDSHAKE_LEN};

use crate::transport::{PeerStream, ReadHalf, WriteHalf};

/// Largest run of plaintext the write half encrypts at once (its buffer's size).
pub const WRITE_CHUNK: usize = 64 * 1024;
/// Bytes read from the socket per step of an MSE handshake: what the handshake hands over past
/// its end (the peer's first messages) is at most this.
const HANDSHAKE_READ: usize = 1024;

/// The `--encryption` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Dial with MSE (rc4), falling back once to plaintext; accept both.
    #[default]
    Prefer,
    /// MSE with rc4 only, both ways; plaintext peers are refused.
    Require,
    /// Plaintext only, both ways; MSE peers are refused.
    Off,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
            Encryption::Off => "off",
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encryption must be prefer, require or off, not {0:?}")]
pub struct BadEncryption(String);

impl FromStr for Encryption {
    type Err = BadEncryption;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            "off" => Ok(Encryption::Off),
            _ => Err(BadEncryption(s.to_string())),
        }
    }
}

/// How an MSE handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MseFailure {
    #[error("peer closed the connection during the encryption handshake")]
    Closed,
    #[error("peer answered the encryption handshake with a plaintext one")]
    PlaintextAnswer,
    #[error("no encryption handshake within {0:?}")]
    Timeout(Duration),
    #[error("encryption handshake: {0}")]
    Protocol(#[from] mse::MseError),
    #[error("encryption handshake: {0}")]
    Io(io::Error),
    #[error("no randomness for the encryption handshake: {0}")]
    Random(io::Error),
}

impl From<io::Error> for MseFailure {
    fn from(e: io::Error) -> Self {
        use io::ErrorKind::*;
        match e.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => MseFailure::Closed,
            _ => MseFailure::Io(e),
        }
    }
}

/// Whether an outgoing MSE attempt that failed so is worth one plaintext connection: under
/// `prefer`, when the peer hung up or stayed silent (what a plaintext-only client does with bytes
/// that are not a BitTorrent handshake), as libtorrent's `pe_enabled` reconnects, or answered with
/// a plaintext handshake of its own. A peer that spoke MSE wrongly, or a policy of `require`, gets
/// no second try.
pub(crate) fn retry_in_plaintext(policy: Encryption, failure: &MseFailure) -> bool {
    policy == Encryption::Prefer
        && matches!(
            failure,
            MseFailure::Closed | MseFailure::Timeout(_) | MseFailure::PlaintextAnswer
        )
}

/// Most peers [`PlaintextPeers`] remembers; past it the record starts over.
pub const MAX_PLAINTEXT_PEERS: usize = 4096;

/// Peers dialled under `prefer` that took only plaintext, as libtorrent keeps `pe_support` per
/// peer: dialled in plaintext straight away next time instead of failing the MSE handshake again
/// (which for a silent peer costs the whole handshake timeout).
#[derive(Debug, Default)]
pub(crate) struct PlaintextPeers(std::collections::HashSet<std::net::SocketAddr>);

impl PlaintextPeers {
    /// The policy to dial `addr` with under `policy`.
    pub(crate) fn policy_for(&self, policy: Encryption, addr: std::net::SocketAddr) -> Encryption {
        if policy == Encryption::Prefer && self.0.contains(&addr) {
            Encryption::Off
        } else {
            policy
        }
    }

    /// What a connection dialled under `policy` came to: a `prefer` dial that ended in plaintext
    /// marks the peer; an encrypted one clears it.
    pub(crate) fn dialled(
        &mut self,
        policy: Encryption,
        addr: std::net::SocketAddr,
        encrypted: bool,
    ) {
        if policy != Encryption::Prefer {
            return;
        }
        if encrypted {
            self.0.remove(&addr);
        } else {
            if self.0.len() >= MAX_PLAINTEXT_PEERS {
                self.0.clear();
            }
            self.0.insert(addr);
        }
    }
}

/// Fresh secrets (private key, paddings) from the operating system's random source.
fn secrets() -> io::Result<mse::Secrets> {
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        // SAFETY: getrandom writes at most the given length into the buffer we own.
        let n =
            unsafe { libc::getrandom(seed[filled..].as_mut_ptr().cast(), seed.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(mse::Secrets::from_seed(&seed))
}

/// Runs `hs` over `stream` until it completes: what it has to send goes out before each read. An
/// initiator (`initiator`) whose peer's first bytes are a plaintext BitTorrent handshake header
/// (which a Diffie-Hellman key matches with probability 2^-160) stops at once: the peer speaks
/// plaintext and waits for more than the handshake would ever send it.
async fn drive(
    stream: &mut PeerStream,
    hs: &mut MseHandshake,
    initiator: bool,
) -> Result<mse::Done, MseFailure> {
    let mut buf = [0u8; HANDSHAKE_READ];
    let mut head = [0u8; mse::PLAINTEXT_HEADER.len()];
    let mut seen = 0;
    loop {
        if let Some(out) = hs.poll_transmit() {
            stream.write_all(&out).await?;
        }
        if let Some(done) = hs.poll_done() {
            return Ok(done);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(MseFailure::Closed);
        }
        if initiator && seen < head.len() {
            let take = (head.len() - seen).min(n);
            head[seen..seen + take].copy_from_slice(&buf[..take]);
            seen += take;
            if mse::detect(&head[..seen]) == Detected::Plaintext {
                return Err(MseFailure::PlaintextAnswer);
            }
        }
        hs.handle_input(&buf[..n])?;
    }
}

/// The stream after a handshake: `prefix` (bytes that came with the handshake, already
/// decrypted) is read first; with a cipher, everything after is decrypted and encrypted.
pub(crate) fn secured(stream: PeerStream, cipher: Option<Cipher>, prefix: Vec<u8>) -> PeerStream {
    if cipher.is_none() && prefix.is_empty() {
        return stream;
    }
    let carrier = stream.carrier();
    let (read, write) = stream.into_split();
    match cipher {
        Some(cipher) => {
            let (send, recv) = cipher.split();
            PeerStream::from_halves(
                Box::new(DecryptRead::new(read, Some(recv), prefix)),
                Box::new(EncryptWrite::new(write, send)),
                carrier,
                true,
            )
        }
        None => PeerStream::from_halves(
            Box::new(DecryptRead::new(read, None, prefix)),
            write,
            carrier,
            false,
        ),
    }
}

async fn read_handshake(stream: &mut PeerStream) -> anyhow::Result<Handshake> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut buf).await?;
    Ok(Handshake::decode(&buf)?)
}

/// Our side of a connection we dialled, under `policy`: the handshakes (MSE, then BitTorrent, or
/// BitTorrent alone), each within `timeout`. `connect` opens the connection (twice when a
/// `prefer` attempt is retried in plaintext). Returns the stream and the peer's handshake.
pub(crate) async fn outgoing<F, Fut>(
    policy: Encryption,
    ours: &Handshake,
    timeout: Duration,
    mut connect: F,
) -> anyhow::Result<(PeerStream, Handshake)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<PeerStream>>,
{
    if policy == Encryption::Off {
        return plaintext(connect().await?, ours, timeout).await;
    }
    let stream = connect().await?;
    let attempt = tokio::time::timeout(timeout, initiate(stream, ours)).await;
    let failure = match attempt {
        Ok(Ok(mut stream)) => {
            let theirs = tokio::time::timeout(timeout, read_handshake(&mut stream))
                .await
                .map_err(|_| anyhow::anyhow!("no handshake within {timeout:?}"))??;
            return Ok((stream, theirs));
        }
        Ok(Err(e)) => e,
        Err(_) => MseFailure::Timeout(timeout),
    };
    if !retry_in_plaintext(policy, &failure) {
        return Err(failure.into());
    }
    tracing::debug!("{failure}; dialling again in plaintext");
    plaintext(connect().await?, ours, timeout).await
}

/// The MSE initiator, rc4 only, with our BitTorrent handshake as the initial payload.
async fn initiate(mut stream: PeerStream, ours: &Handshake) -> Result<PeerStream, MseFailure> {
    let mut hs = MseHandshake::initiator(
        ours.info_hash.0,
        mse::Policy::Require,
        ours.encode().to_vec(),
        secrets().map_err(MseFailure::Random)?,
    )?;
    let done = drive(&mut stream, &mut hs, true).await?;
    Ok(secured(stream, done.cipher, done.leftover))
}

async fn plaintext(
    mut stream: PeerStream,
    ours: &Handshake,
    timeout: Duration,
) -> anyhow::Result<(PeerStream, Handshake)> {
    stream.write_all(&ours.encode()).await?;
    let theirs = tokio::time::timeout(timeout, read_handshake(&mut stream))
        .await
        .map_err(|_| anyhow::anyhow!("no handshake within {timeout:?}"))??;
    Ok((stream, theirs))
}

/// Why an incoming connection is turned away before any torrent sees it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("refused a plaintext connection: encryption is required")]
    PlaintextRequired,
    #[error("refused an encrypted connection: encryption is off")]
    EncryptionOff,
}

/// What an incoming connection's first bytes commit it to under `policy`, or why it is refused.
pub(crate) fn incoming_kind(policy: Encryption, first: &[u8]) -> Result<Detected, Refused> {
    match (mse::detect(first), policy) {
        (Detected::Plaintext, Encryption::Require) => Err(Refused::PlaintextRequired),
        (Detected::Encrypted, Encryption::Off) => Err(Refused::EncryptionOff),
        (kind, _) => Ok(kind),
    }
}

/// The responder's side of an incoming MSE connection whose first bytes (`first`, already read)
/// were not a plaintext handshake, then the peer's BitTorrent handshake (its initial payload, or
/// the first bytes after). The caller bounds the time.
pub(crate) async fn respond(
    mut stream: PeerStream,
    first: &[u8],
    policy: Encryption,
    lookup: impl SkeyLookup + 'static,
) -> anyhow::Result<(PeerStream, Handshake)> {
    let mse_policy = match policy {
        Encryption::Require => mse::Policy::Require,
        Encryption::Prefer => mse::Policy::Prefer,
        Encryption::Off => return Err(Refused::EncryptionOff.into()),
    };
    let mut hs =
        MseHandshake::responder(lookup, mse_policy, secrets().map_err(MseFailure::Random)?);
    hs.handle_input(first).map_err(MseFailure::from)?;
    let done = drive(&mut stream, &mut hs, false).await?;
    let skey = done.skey;
    let mut prefix = done.initial_payload;
    prefix.extend_from_slice(&done.leftover);
    let mut stream = secured(stream, done.cipher, prefix);
    let theirs = read_handshake(&mut stream).await?;
    if theirs.info_hash.0 != skey {
        anyhow::bail!("handshake names another torrent than the encryption handshake");
    }
    Ok((stream, theirs))
}

/// The read half: `prefix` first, then the socket's bytes decrypted in place.
struct DecryptRead {
    inner: ReadHalf,
    recv: Option<Rc4Stream>,
    prefix: Vec<u8>,
    at: usize,
}

impl DecryptRead {
    fn new(inner: ReadHalf, recv: Option<Rc4Stream>, prefix: Vec<u8>) -> Self {
        DecryptRead {
            inner,
            recv,
            prefix,
            at: 0,
        }
    }
}

impl AsyncRead for DecryptRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(recv) = &mut this.recv {
            recv.apply(&mut buf.filled_mut()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

/// The write half: plaintext gathered into `buf` (reused, at most [`WRITE_CHUNK`]), encrypted
/// there, written from there. `buf[sent..]` is encrypted but not yet taken by the socket.
struct EncryptWrite {
    inner: WriteHalf,
    send: Rc4Stream,
    buf: Vec<u8>,
    sent: usize,
}

impl EncryptWrite {
    fn new(inner: WriteHalf, send: Rc4Stream) -> Self {
        EncryptWrite {
            inner,
            send,
            buf: Vec::new(),
            sent: 0,
        }
    }

    fn write_from(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        if self.sent == self.buf.len() {
            // Nothing held: encrypt the next chunk of what is offered.
            self.buf.clear();
            self.sent = 0;
            let mut room = WRITE_CHUNK;
            for b in bufs {
                let take = b.len().min(room);
                self.buf.extend_from_slice(&b[..take]);
                room -= take;
                if room == 0 {
                    break;
                }
            }
            self.send.apply(&mut self.buf);
        }
        // Held bytes are the start of what is offered (the caller continues the stream).
        let end = self.buf.len().min(self.sent + offered);
        if end == self.sent {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..end]))?;
        self.sent += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for EncryptWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_from(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
