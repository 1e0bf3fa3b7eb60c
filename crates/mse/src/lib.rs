//! BitTorrent Message Stream Encryption (MSE, also "Protocol Encryption"), sans-IO.
//!
//! The handshake, as the spec numbers it (A initiates, B responds):
//!
//! 1. A→B: Ya, PadA
//! 2. B→A: Yb, PadB
//! 3. A→B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!    ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4. B→A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
//! 5. A→B: ENCRYPT2(payload stream)
//!
//! Y are 768-bit Diffie-Hellman public keys (96 bytes, big-endian), S the shared secret, SKEY the
//! info-hash of the torrent, VC eight zero bytes, HASH SHA-1. ENCRYPT is RC4 keyed with
//! HASH('keyA', S, SKEY) from A and HASH('keyB', S, SKEY) from B, its first 1024 bytes dropped.
//! ENCRYPT2 is the same RC4 stream continued if rc4 (0x02) was selected, or nothing if plaintext
//! (0x01) was; IA, the initial payload (A's BitTorrent handshake), is always RC4.
//!
//! [`Handshake`] runs either side: feed received bytes with [`Handshake::handle_input`], send what
//! [`Handshake::poll_transmit`] returns, and take the [`Done`] outcome from
//! [`Handshake::poll_done`]. It does no I/O and draws no randomness: [`Secrets`] carries the
//! private key and paddings. Every length a peer sends is checked before a byte of what it
//! announces is buffered; at most [`MAX_BUFFERED`] bytes are ever held.
//!
//! On a socket: write what `poll_transmit` gives, read and `handle_input` until `poll_done`
//! (under a timeout: the spec suggests 30 s for each public key), then hand the peer layer
//! `Done::leftover` first and the socket after. With a [`Cipher`], decrypt every read in place
//! after it and encrypt a copy of every write before it; [`Cipher::split`] gives the two
//! directions to a separate reader and writer. A responder's own BitTorrent handshake goes
//! through the cipher like any later message (the spec has no IA from B). Incoming
//! connections: [`detect`] on the first bytes, then the same bytes to the wire decoder or a
//! responder.

mod cipher;
pub mod dh;

use std::collections::HashMap;

pub use cipher::{Cipher, Rc4Stream, DISCARD};
use dh::{KEY_LEN, PRIVATE_KEY_LEN};

/// Longest PadA, PadB, PadC or PadD the spec allows (and we accept).
pub const MAX_PAD: usize = 512;

/// Longest initial payload (IA) we send or accept. The spec allows 65535; the payload is a
/// BitTorrent handshake (68 bytes), and libtorrent refuses more than 68.
pub const MAX_IA_LEN: usize = 512;

/// The verification constant.
pub const VC: [u8; 8] = [0; 8];

/// crypto_provide/crypto_select bit: payload stream in plaintext after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// crypto_provide/crypto_select bit: payload stream in RC4.
pub const CRYPTO_RC4: u32 = 0x02;

/// Bytes after Yb in which the initiator must find ENCRYPT(VC): PadB plus VC.
pub const SYNC_VC_WINDOW: usize = MAX_PAD + VC.len();
/// Bytes after Ya in which the responder must find HASH('req1', S): PadA plus the hash.
pub const SYNC_REQ1_WINDOW: usize = MAX_PAD + 20;

/// Most bytes a [`Handshake`] ever holds between calls (the initial payload and the bytes past
/// the handshake are handed over in [`Done`], not held).
pub const MAX_BUFFERED: usize = max(
    SYNC_REQ1_WINDOW,
    max(SYNC_VC_WINDOW, max(MAX_PAD + 2, MAX_IA_LEN)),
);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// What the handshake accepts: the `--encryption prefer|require` policies, plus plaintext-only
/// (the obfuscated handshake, then plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Initiator offers rc4 and plaintext; responder selects rc4 when offered, else plaintext.
    Prefer,
    /// rc4 only.
    Require,
    /// plaintext only (the handshake itself is still obfuscated).
    Plaintext,
}

impl Policy {
    /// The crypto_provide an initiator sends, or the methods a responder allows.
    pub fn allowed(self) -> u32 {
        match self {
            Policy::Prefer => CRYPTO_PLAINTEXT | CRYPTO_RC4,
            Policy::Require => CRYPTO_RC4,
            Policy::Plaintext => CRYPTO_PLAINTEXT,
        }
    }

    /// The responder's choice among what the initiator provides (unknown bits ignored).
    fn select(self, provided: u32) -> Option<u32> {
        let common = provided & self.allowed();
        if common & CRYPTO_RC4 != 0 {
            Some(CRYPTO_RC4)
        } else if common & CRYPTO_PLAINTEXT != 0 {
            Some(CRYPTO_PLAINTEXT)
        } else {
            None
        }
    }
}

/// Every way a handshake fails. After one, the handshake is dead: further input returns
/// [`MseError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("padding of {len} bytes (at most {MAX_PAD})")]
    PadTooLong { len: usize },
    #[error("initial payload of {len} bytes (at most {MAX_IA_LEN})")]
    InitialPayloadTooLong { len: usize },
    #[error("private key is zero")]
    WeakPrivateKey,
    #[error("peer's Diffie-Hellman public key is degenerate (0, 1, P-1 or not below P)")]
    InvalidPublicKey,
    #[error("no HASH('req1', S) within {SYNC_REQ1_WINDOW} bytes after the public key")]
    NoSyncHash,
    #[error(
        "no encrypted verification constant within {SYNC_VC_WINDOW} bytes after the public key"
    )]
    NoSyncVc,
    #[error("peer asked for a torrent we do not serve")]
    UnknownInfoHash,
    #[error("verification constant is not zero")]
    BadVerificationConstant,
    #[error("no common encryption method: peer provides {provided:#x}, we allow {allowed:#x}")]
    NoCommonMethod { provided: u32, allowed: u32 },
    #[error("peer selected encryption method {select:#x}, we provided {provided:#x}")]
    BadSelect { select: u32, provided: u32 },
    #[error("handshake already failed")]
    Failed,
    #[error("input after the handshake completed")]
    InputAfterDone,
}

/// The random inputs of one side: the 160-bit private key, the padding sent in the clear (PadA
/// or PadB) and the padding sent encrypted (PadC or PadD).
#[derive(Clone)]
pub struct Secrets {
    private_key: [u8; PRIVATE_KEY_LEN],
    clear_pad: Vec<u8>,
    crypt_pad: Vec<u8>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("clear_pad", &self.clear_pad.len())
            .field("crypt_pad", &self.crypt_pad.len())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Explicit values (tests, or a caller with its own RNG). Paddings at most [`MAX_PAD`] bytes.
    pub fn new(
        private_key: [u8; PRIVATE_KEY_LEN],
        clear_pad: Vec<u8>,
        crypt_pad: Vec<u8>,
    ) -> Result<Self, MseError> {
        for pad in [&clear_pad, &crypt_pad] {
            if pad.len() > MAX_PAD {
                return Err(MseError::PadTooLong { len: pad.len() });
            }
        }
        if private_key == [0; PRIVATE_KEY_LEN] {
            return Err(MseError::WeakPrivateKey);
        }
        Ok(Secrets {
            private_key,
            clear_pad,
            crypt_pad,
        })
    }

    /// Everything expanded from 32 bytes the caller draws from a secure source (the OS): the key,
    /// both padding lengths (uniform in 0..=512) and the padding bytes, by SHA-1 in counter mode.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let mut counter = 0u32;
        let mut block = || {
            counter += 1;
            cipher::hash(&[b"spore mse seed", seed, &counter.to_be_bytes()])
        };
        let mut private_key = block();
        if private_key == [0; PRIVATE_KEY_LEN] {
            private_key[PRIVATE_KEY_LEN - 1] = 1;
        }
        let lens = block();
        let len =
            |i: usize| usize::from(u16::from_be_bytes([lens[i], lens[i + 1]])) % (MAX_PAD + 1);
        let (clear_len, crypt_len) = (len(0), len(2));
        let mut bytes = Vec::with_capacity(clear_len + crypt_len + 20);
        while bytes.len() < clear_len + crypt_len {
            bytes.extend_from_slice(&block());
        }
        let crypt_pad = bytes[clear_len..clear_len + crypt_len].to_vec();
        bytes.truncate(clear_len);
        Secrets {
            private_key,
            clear_pad: bytes,
            crypt_pad,
        }
    }
}

/// HASH('req2', SKEY): what a responder's lookup is keyed by.
pub fn req2_hash(skey: &[u8; 20]) -> [u8; 20] {
    cipher::hash(&[b"req2", skey])
}

/// How a responder finds SKEY: given HASH('req2', SKEY), the SKEY (info-hash) it serves, if any.
pub trait SkeyLookup: Send {
    fn find(&self, req2: &[u8; 20]) -> Option<[u8; 20]>;
}

impl<F: Fn(&[u8; 20]) -> Option<[u8; 20]> + Send> SkeyLookup for F {
    fn find(&self, req2: &[u8; 20]) -> Option<[u8; 20]> {
        self(req2)
    }
}

/// The info-hashes a responder serves, indexed by HASH('req2', info-hash). For a v2 or hybrid
/// torrent insert the SHA-256 info-hash truncated to 20 bytes as well as (or instead of) the v1 one.
#[derive(Debug, Clone, Default)]
pub struct InfoHashes(HashMap<[u8; 20], [u8; 20]>);

impl InfoHashes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, info_hash: [u8; 20]) {
        self.0.insert(req2_hash(&info_hash), info_hash);
    }

    pub fn remove(&mut self, info_hash: &[u8; 20]) {
        self.0.remove(&req2_hash(info_hash));
    }
}

impl FromIterator<[u8; 20]> for InfoHashes {
    fn from_iter<I: IntoIterator<Item = [u8; 20]>>(iter: I) -> Self {
        let mut set = InfoHashes::new();
        for ih in iter {
            set.insert(ih);
        }
        set
    }
}

impl SkeyLookup for InfoHashes {
    fn find(&self, req2: &[u8; 20]) -> Option<[u8; 20]> {
        self.0.get(req2).copied()
    }
}

/// A finished handshake.
#[derive(Debug)]
pub struct Done {
    /// The RC4 pair when rc4 was selected; `None` for plaintext (the stream goes on unencrypted).
    pub cipher: Option<Cipher>,
    /// The method selected: [`CRYPTO_RC4`] or [`CRYPTO_PLAINTEXT`].
    pub selected: u32,
    /// The SKEY (info-hash) the connection is for.
    pub skey: [u8; 20],
    /// Responder: the initiator's IA, decrypted (its BitTorrent handshake, may be empty).
    /// Initiator: empty (the spec has no IA from B; its handshake comes in `leftover`).
    pub initial_payload: Vec<u8>,
    /// Bytes received past the end of the handshake, already decrypted when rc4 was selected:
    /// the start of the peer's payload stream.
    pub leftover: Vec<u8>,
}

/// Which side, and what it needs.
enum Role {
    Initiator {
        skey: [u8; 20],
        provide: u32,
        ia: Vec<u8>,
    },
    Responder {
        lookup: Box<dyn SkeyLookup>,
        policy: Policy,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    // initiator
    ReadYb,
    SyncVc,
    ReadSelect,
    ReadPadD(usize),
    // responder
    ReadYa,
    SyncReq1,
    ReadSkey,
    ReadProvide,
    ReadPadC(usize),
    ReadIa(usize),
    // both
    Done,
    Failed,
}

/// Step result: the step consumed its bytes and moved on, or needs more.
enum Step {
    Advanced,
    NeedMore,
}

/// One side of an MSE handshake. See the crate documentation.
pub struct Handshake {
    role: Role,
    secrets: Secrets,
    state: State,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Responder: HASH('req1', S), the sync point. Initiator: ENCRYPT(VC), its sync point.
    sync: Vec<u8>,
    /// Responder: HASH('req3', S), to unmask the SKEY hash.
    req3: [u8; 20],
    secret: [u8; KEY_LEN],
    send: Option<Rc4Stream>,
    recv: Option<Rc4Stream>,
    selected: u32,
    skey: [u8; 20],
    ia: Vec<u8>,
    done: Option<Done>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// The connecting side, for the torrent `skey`, sending `initial_payload` (its BitTorrent
    /// handshake) inside step 3. Step 1 (Ya, PadA) is ready in [`Handshake::poll_transmit`] at once.
    pub fn initiator(
        skey: [u8; 20],
        policy: Policy,
        initial_payload: Vec<u8>,
        secrets: Secrets,
    ) -> Result<Self, MseError> {
        if initial_payload.len() > MAX_IA_LEN {
            return Err(MseError::InitialPayloadTooLong {
                len: initial_payload.len(),
            });
        }
        let mut hs = Self::new(
            Role::Initiator {
                skey,
                provide: policy.allowed(),
                ia: initial_payload,
            },
            secrets,
            State::ReadYb,
        );
        hs.queue_public_key();
        Ok(hs)
    }

    /// The accepting side: `lookup` finds the torrent the initiator asks for, `policy` says what
    /// it may select. It answers (Yb, PadB) once Ya has arrived.
    pub fn responder(lookup: impl SkeyLookup + 'static, policy: Policy, secrets: Secrets) -> Self {
        Self::new(
            Role::Responder {
                lookup: Box::new(lookup),
                policy,
            },
            secrets,
            State::ReadYa,
        )
    }

    fn new(role: Role, secrets: Secrets, state: State) -> Self {
        Handshake {
            role,
            secrets,
            state,
            buf: Vec::new(),
            out: Vec::new(),
            sync: Vec::new(),
            req3: [0; 20],
            secret: [0; KEY_LEN],
            send: None,
            recv: None,
            selected: 0,
            skey: [0; 20],
            ia: Vec::new(),
            done: None,
        }
    }

    /// Bytes to send to the peer, if any are waiting.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// The outcome, once: after the handshake completed, the cipher, payloads and leftover bytes.
    /// Send what [`Handshake::poll_transmit`] holds before anything encrypted with the cipher.
    pub fn poll_done(&mut self) -> Option<Done> {
        self.done.take()
    }

    /// Whether the handshake has completed (the outcome may already have been taken).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes held from the peer, waiting for more to complete a step (at most [`MAX_BUFFERED`]).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feed bytes received from the peer. An error is final: the connection should be closed.
    pub fn handle_input(&mut self, mut input: &[u8]) -> Result<(), MseError> {
        match self.state {
            State::Failed => return Err(MseError::Failed),
            State::Done => return Err(MseError::InputAfterDone),
            _ => {}
        }
        loop {
            if self.state == State::Done {
                self.finish(input);
                return Ok(());
            }
            let need = self.need();
            if self.buf.len() < need {
                let take = (need - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..take]);
                input = &input[take..];
            }
            match self.step() {
                Ok(Step::Advanced) => continue,
                Ok(Step::NeedMore) => return Ok(()),
                Err(e) => {
                    self.state = State::Failed;
                    self.buf = Vec::new();
                    self.out.clear();
                    return Err(e);
                }
            }
        }
    }

    /// How many bytes the current step wants in `buf` (for the sync scans, the whole window).
    fn need(&self) -> usize {
        match self.state {
            State::ReadYb | State::ReadYa => KEY_LEN,
            State::SyncVc => SYNC_VC_WINDOW,
            State::SyncReq1 => SYNC_REQ1_WINDOW,
            State::ReadSelect => 4 + 2,
            State::ReadPadD(len) => len,
            State::ReadSkey => 20,
            State::ReadProvide => VC.len() + 4 + 2,
            State::ReadPadC(len) => len + 2,
            State::ReadIa(len) => len,
            State::Done | State::Failed => 0,
        }
    }

    fn queue_public_key(&mut self) {
        self.out
            .extend_from_slice(&dh::public_key(&self.secrets.private_key));
        self.out.extend_from_slice(&self.secrets.clear_pad);
    }

    /// Takes `n` bytes off the front of `buf`, decrypted with the receiving stream.
    fn take_decrypted(&mut self, n: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.buf.drain(..n).collect();
        if let Some(recv) = &mut self.recv {
            recv.apply(&mut bytes);
        }
        bytes
    }

    fn step(&mut self) -> Result<Step, MseError> {
        let need = self.need();
        let scanning = matches!(self.state, State::SyncVc | State::SyncReq1);
        if !scanning && self.buf.len() < need {
            return Ok(Step::NeedMore);
        }
        match self.state {
            State::ReadYb | State::ReadYa => {
                let mut y = [0u8; KEY_LEN];
                y.copy_from_slice(&self.buf[..KEY_LEN]);
                self.buf.drain(..KEY_LEN);
                self.secret = dh::shared_secret(&self.secrets.private_key, &y)
                    .ok_or(MseError::InvalidPublicKey)?;
                if self.state == State::ReadYb {
                    self.send_step3();
                    self.state = State::SyncVc;
                } else {
                    self.sync = cipher::hash(&[b"req1", &self.secret]).to_vec();
                    self.req3 = cipher::hash(&[b"req3", &self.secret]);
                    self.queue_public_key();
                    self.state = State::SyncReq1;
                }
            }
            State::SyncVc | State::SyncReq1 => {
                let found = self
                    .buf
                    .windows(self.sync.len())
                    .position(|w| w == self.sync.as_slice());
                match found {
                    Some(at) => {
                        self.buf.drain(..at + self.sync.len());
                        self.state = if self.state == State::SyncVc {
                            State::ReadSelect
                        } else {
                            State::ReadSkey
                        };
                    }
                    None if self.buf.len() >= need => {
                        return Err(if self.state == State::SyncVc {
                            MseError::NoSyncVc
                        } else {
                            MseError::NoSyncHash
                        })
                    }
                    None => return Ok(Step::NeedMore),
                }
            }
            State::ReadSelect => {
                let b = self.take_decrypted(6);
                let select = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let pad = usize::from(u16::from_be_bytes([b[4], b[5]]));
                let provided = match &self.role {
                    Role::Initiator { provide, .. } => *provide,
                    Role::Responder { .. } => 0,
                };
                if !(select == CRYPTO_RC4 || select == CRYPTO_PLAINTEXT) || select & provided == 0 {
                    return Err(MseError::BadSelect { select, provided });
                }
                if pad > MAX_PAD {
                    return Err(MseError::PadTooLong { len: pad });
                }
                self.selected = select;
                self.state = State::ReadPadD(pad);
            }
            State::ReadPadD(len) => {
                self.take_decrypted(len);
                self.state = State::Done;
            }
            State::ReadSkey => {
                let mut req2 = [0u8; 20];
                for (i, r) in req2.iter_mut().enumerate() {
                    *r = self.buf[i] ^ self.req3[i];
                }
                self.buf.drain(..20);
                let skey = match &self.role {
                    Role::Responder { lookup, .. } => lookup.find(&req2),
                    Role::Initiator { .. } => None,
                };
                self.skey = skey.ok_or(MseError::UnknownInfoHash)?;
                let (key_a, key_b) = cipher::keys(&self.secret, &self.skey);
                self.recv = Some(Rc4Stream::new(&key_a));
                self.send = Some(Rc4Stream::new(&key_b));
                self.state = State::ReadProvide;
            }
            State::ReadProvide => {
                let b = self.take_decrypted(14);
                if b[..8] != VC {
                    return Err(MseError::BadVerificationConstant);
                }
                let provided = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
                let pad = usize::from(u16::from_be_bytes([b[12], b[13]]));
                let policy = match &self.role {
                    Role::Responder { policy, .. } => *policy,
                    Role::Initiator { .. } => Policy::Require,
                };
                let select = policy.select(provided).ok_or(MseError::NoCommonMethod {
                    provided,
                    allowed: policy.allowed(),
                })?;
                if pad > MAX_PAD {
                    return Err(MseError::PadTooLong { len: pad });
                }
                self.selected = select;
                self.send_step4();
                self.state = State::ReadPadC(pad);
            }
            State::ReadPadC(len) => {
                let b = self.take_decrypted(len + 2);
                let ia_len = usize::from(u16::from_be_bytes([b[len], b[len + 1]]));
                if ia_len > MAX_IA_LEN {
                    return Err(MseError::InitialPayloadTooLong { len: ia_len });
                }
                self.state = if ia_len == 0 {
                    State::Done
                } else {
                    State::ReadIa(ia_len)
                };
            }
            State::ReadIa(len) => {
                self.ia = self.take_decrypted(len);
                self.state = State::Done;
            }
            State::Done | State::Failed => return Ok(Step::NeedMore),
        }
        Ok(Step::Advanced)
    }

    /// Initiator, on Yb: step 3.
    fn send_step3(&mut self) {
        let Role::Initiator { skey, provide, ia } = &mut self.role else {
            return;
        };
        self.skey = *skey;
        let (key_a, key_b) = cipher::keys(&self.secret, skey);
        let mut send = Rc4Stream::new(&key_a);
        let mut recv = Rc4Stream::new(&key_b);
        let mut vc = VC;
        recv.apply(&mut vc);
        self.sync = vc.to_vec();

        self.out
            .extend_from_slice(&cipher::hash(&[b"req1", &self.secret]));
        let req3 = cipher::hash(&[b"req3", &self.secret]);
        let req2 = req2_hash(skey);
        self.out.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));

        let pad = &self.secrets.crypt_pad;
        let start = self.out.len();
        self.out.extend_from_slice(&VC);
        self.out.extend_from_slice(&provide.to_be_bytes());
        // Both lengths were checked against their caps (512) on construction: they fit in u16.
        self.out
            .extend_from_slice(&(pad.len() as u16).to_be_bytes());
        self.out.extend_from_slice(pad);
        self.out.extend_from_slice(&(ia.len() as u16).to_be_bytes());
        self.out.extend_from_slice(ia);
        send.apply(&mut self.out[start..]);
        *ia = Vec::new();

        self.send = Some(send);
        self.recv = Some(recv);
    }

    /// Responder, on crypto_provide: step 4 (ENCRYPT(VC, crypto_select, len(PadD), PadD)).
    fn send_step4(&mut self) {
        let pad = &self.secrets.crypt_pad;
        let start = self.out.len();
        self.out.extend_from_slice(&VC);
        self.out.extend_from_slice(&self.selected.to_be_bytes());
        self.out
            .extend_from_slice(&(pad.len() as u16).to_be_bytes());
        self.out.extend_from_slice(pad);
        if let Some(send) = &mut self.send {
            send.apply(&mut self.out[start..]);
        }
    }

    fn finish(&mut self, rest: &[u8]) {
        let mut leftover = std::mem::take(&mut self.buf);
        leftover.extend_from_slice(rest);
        let cipher = match (self.selected, self.send.take(), self.recv.take()) {
            (CRYPTO_RC4, Some(send), Some(recv)) => {
                let mut cipher = Cipher::new(send, recv);
                cipher.decrypt(&mut leftover);
                Some(cipher)
            }
            _ => None,
        };
        self.done = Some(Done {
            cipher,
            selected: self.selected,
            skey: self.skey,
            initial_payload: std::mem::take(&mut self.ia),
            leftover,
        });
    }
}

/// What the first bytes of an incoming connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// A plaintext BitTorrent handshake (19, "BitTorrent protocol").
    Plaintext,
    /// Anything else: an MSE handshake (a public key) to hand to a responder.
    Encrypted,
    /// The bytes so far are a prefix of the plaintext header: read more (at most 20 in all).
    NeedMore,
}

/// The header of a plaintext BitTorrent handshake.
pub const PLAINTEXT_HEADER: &[u8; 20] = b"\x13BitTorrent protocol";

/// Tells a plaintext BitTorrent handshake from an MSE one, from the first bytes received. Needs at
/// most 20 bytes; feed the same bytes to the wire decoder or the responder afterwards.
pub fn detect(first: &[u8]) -> Detected {
    let n = first.len().min(PLAINTEXT_HEADER.len());
    if first[..n] != PLAINTEXT_HEADER[..n] {
        Detected::Encrypted
    } else if n == PLAINTEXT_HEADER.len() {
        Detected::Plaintext
    } else {
        Detected::NeedMore
    }
}

#[cfg(test)]
mod tests;
