//! Per-connection protocol state: who chokes whom, who is interested, and which messages a peer may send
//! when. The engine feeds received messages in and gets events (or a reason to drop the peer) out, and
//! asks this state machine to build the messages it sends so the flags stay true.

use std::collections::HashSet;

use bytes::Bytes;

use crate::{BlockRef, Handshake, Message, PieceIndex};

/// Largest block a peer may request: 16 KiB is the norm, some clients ask for up to 128 KiB.
pub const MAX_REQUEST: u32 = 128 * 1024;

/// What a received message means, once it has passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    KeepAlive,
    Choked,
    Unchoked,
    Interested,
    NotInterested,
    Have(PieceIndex),
    /// The peer's piece bitfield (exactly the right length, spare bits clear).
    Bitfield(Bytes),
    HaveAll,
    HaveNone,
    /// A request we may serve (we are not choking the peer, or the piece is allowed-fast).
    Request(BlockRef),
    /// A request made while we choke the peer: with the fast extension the engine answers with a reject.
    RequestWhileChoked(BlockRef),
    Cancel(BlockRef),
    Block {
        index: PieceIndex,
        begin: u32,
        data: Bytes,
    },
    Rejected(BlockRef),
    Suggest(PieceIndex),
    AllowedFast(PieceIndex),
    DhtPort(u16),
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// BEP 52 merkle-tree hashes: a request, an answer, a refusal.
    HashRequest(crate::HashRange),
    Hashes {
        range: crate::HashRange,
        hashes: Vec<[u8; 32]>,
    },
    HashReject(crate::HashRange),
}

/// Protocol violations: the engine drops (and may ban) the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("bitfield of {got} bytes, expected {expected}")]
    BitfieldLength { got: usize, expected: usize },
    #[error("bitfield has spare bits set")]
    BitfieldSpareBits,
    #[error("fast-extension message from a peer that did not negotiate it")]
    FastNotNegotiated,
    #[error("extension message from a peer that did not negotiate it")]
    ExtensionsNotNegotiated,
    #[error("piece index {0} out of range")]
    PieceOutOfRange(PieceIndex),
    #[error("request for {0} bytes")]
    BadRequestLength(u32),
}

pub struct Connection {
    num_pieces: u32,
    fast: bool,
    extensions: bool,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Pieces we let this peer request while choked (BEP 6).
    allowed_fast_out: HashSet<PieceIndex>,
}

impl Connection {
    /// State after both handshakes: extensions are on when both sides set their bits.
    pub fn new(num_pieces: u32, ours: &Handshake, theirs: &Handshake) -> Connection {
        Connection {
            num_pieces,
            fast: ours.supports_fast() && theirs.supports_fast(),
            extensions: ours.supports_extensions() && theirs.supports_extensions(),
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            allowed_fast_out: HashSet::new(),
        }
    }

    pub fn fast(&self) -> bool {
        self.fast
    }

    pub fn extensions(&self) -> bool {
        self.extensions
    }

    /// Bitfield length in bytes for this torrent.
    pub fn bitfield_len(&self) -> usize {
        (self.num_pieces as usize).div_ceil(8)
    }

    fn piece(&self, index: PieceIndex) -> Result<PieceIndex, ConnectionError> {
        if index.get() < self.num_pieces {
            Ok(index)
        } else {
            Err(ConnectionError::PieceOutOfRange(index))
        }
    }

    fn need_fast(&self) -> Result<(), ConnectionError> {
        if self.fast {
            Ok(())
        } else {
            Err(ConnectionError::FastNotNegotiated)
        }
    }

    /// Checks a received message against the protocol and updates the peer's flags.
    pub fn receive(&mut self, message: Message) -> Result<Event, ConnectionError> {
        // BEP 3 puts the bitfield first, but real clients do otherwise: libtorrent sends its extension
        // handshake first, and aria2 sends have-none and later a full bitfield in the middle of the
        // connection. So a bitfield, have-all or have-none is accepted at any time and replaces what the
        // peer had announced.
        Ok(match message {
            Message::KeepAlive => Event::KeepAlive,
            Message::Choke => {
                self.peer_choking = true;
                Event::Choked
            }
            Message::Unchoke => {
                self.peer_choking = false;
                Event::Unchoked
            }
            Message::Interested => {
                self.peer_interested = true;
                Event::Interested
            }
            Message::NotInterested => {
                self.peer_interested = false;
                Event::NotInterested
            }
            Message::Have(i) => Event::Have(self.piece(i)?),
            Message::Bitfield(bits) => {
                if bits.len() != self.bitfield_len() {
                    return Err(ConnectionError::BitfieldLength {
                        got: bits.len(),
                        expected: self.bitfield_len(),
                    });
                }
                let spare = (8 - self.num_pieces % 8) % 8;
                if spare > 0 {
                    let mask = (1u8 << spare) - 1;
                    if bits.last().is_some_and(|b| b & mask != 0) {
                        return Err(ConnectionError::BitfieldSpareBits);
                    }
                }
                Event::Bitfield(bits)
            }
            Message::HaveAll | Message::HaveNone => {
                self.need_fast()?;
                if matches!(message, Message::HaveAll) {
                    Event::HaveAll
                } else {
                    Event::HaveNone
                }
            }
            Message::Request(b) => {
                self.piece(b.index)?;
                if b.length == 0 || b.length > MAX_REQUEST {
                    return Err(ConnectionError::BadRequestLength(b.length));
                }
                if self.am_choking && !self.allowed_fast_out.contains(&b.index) {
                    Event::RequestWhileChoked(b)
                } else {
                    Event::Request(b)
                }
            }
            Message::Cancel(b) => Event::Cancel(b),
            Message::Piece { index, begin, data } => Event::Block {
                index: self.piece(index)?,
                begin,
                data,
            },
            Message::Port(p) => Event::DhtPort(p),
            Message::Suggest(i) => {
                self.need_fast()?;
                Event::Suggest(self.piece(i)?)
            }
            Message::Reject(b) => {
                self.need_fast()?;
                Event::Rejected(b)
            }
            Message::AllowedFast(i) => {
                self.need_fast()?;
                Event::AllowedFast(self.piece(i)?)
            }
            Message::Extended { id, payload } => {
                if !self.extensions {
                    return Err(ConnectionError::ExtensionsNotNegotiated);
                }
                Event::Extended { id, payload }
            }
            Message::HashRequest(range) => Event::HashRequest(range),
            Message::Hashes { range, hashes } => Event::Hashes { range, hashes },
            Message::HashReject(range) => Event::HashReject(range),
        })
    }

    /// The message to send to change our choke state, or `None` if it already is so.
    pub fn set_choking(&mut self, choke: bool) -> Option<Message> {
        if self.am_choking == choke {
            return None;
        }
        self.am_choking = choke;
        Some(if choke {
            Message::Choke
        } else {
            Message::Unchoke
        })
    }

    /// The message to send to change our interest, or `None` if it already is so.
    pub fn set_interested(&mut self, interested: bool) -> Option<Message> {
        if self.am_interested == interested {
            return None;
        }
        self.am_interested = interested;
        Some(if interested {
            Message::Interested
        } else {
            Message::NotInterested
        })
    }

    /// Lets the peer request `piece` while choked (BEP 6); `None` without the fast extension.
    pub fn allow_fast(&mut self, piece: PieceIndex) -> Option<Message> {
        if !self.fast || piece.get() >= self.num_pieces {
            return None;
        }
        self.allowed_fast_out
            .insert(piece)
            .then_some(Message::AllowedFast(piece))
    }
}
