//! The byte stream a peer connection runs over. Whatever carries it (TCP or uTP) and whether it is
//! encrypted (MSE), the handshake and the peer task above see one `PeerStream`: two boxed halves
//! that are read and written independently, as the reader and writer tasks do.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A peer that dialled a session for a magnet link still in its metadata phase: its handshake read,
/// ours not sent yet. The metadata phase answers it and runs it beside the peers it dialled.
pub(crate) struct IncomingPeer {
    pub stream: PeerStream,
    pub addr: std::net::SocketAddr,
    pub theirs: wire::Handshake,
}

/// What carries a peer connection's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    Tcp,
    /// uTP (BEP 29) over UDP, with LEDBAT congestion control.
    Utp,
}

pub(crate) struct PeerStream {
    read: ReadHalf,
    write: WriteHalf,
    carrier: Carrier,
    encrypted: bool,
}

impl PeerStream {
    /// A plaintext TCP connection. Nagle is off: requests and small messages go out at once.
    pub(crate) fn tcp(stream: TcpStream) -> std::io::Result<PeerStream> {
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(PeerStream::from_halves(
            Box::new(read),
            Box::new(write),
            Carrier::Tcp,
            false,
        ))
    }

    /// A uTP connection (plaintext).
    pub(crate) fn utp(stream: utp::UtpStream) -> PeerStream {
        let (read, write) = tokio::io::split(stream);
        PeerStream::from_halves(Box::new(read), Box::new(write), Carrier::Utp, false)
    }

    pub(crate) fn from_halves(
        read: ReadHalf,
        write: WriteHalf,
        carrier: Carrier,
        encrypted: bool,
    ) -> PeerStream {
        PeerStream {
            read,
            write,
            carrier,
            encrypted,
        }
    }

    pub(crate) fn carrier(&self) -> Carrier {
        self.carrier
    }

    pub(crate) fn encrypted(&self) -> bool {
        self.encrypted
    }

    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}
