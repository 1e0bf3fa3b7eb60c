//! RC4 as MSE uses it: keyed with SHA-1('keyA'|'keyB', S, SKEY), first 1024 bytes of keystream dropped.

use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

use crate::dh::KEY_LEN;

/// Keystream bytes every MSE RC4 stream discards before its first use.
pub const DISCARD: usize = 1024;

/// One direction's RC4 keystream (the state after the 1024 discarded bytes).
pub struct Rc4Stream(Rc4);

impl Rc4Stream {
    /// The stream keyed with `key`, its first [`DISCARD`] bytes already dropped.
    pub fn new(key: &[u8; 20]) -> Self {
        // RC4 takes keys of 1..=256 bytes, so a 20-byte key is always accepted; `new_from_slice`
        // is the only constructor taking a 20-byte key.
        let mut rc4 = match Rc4::new_from_slice(key) {
            Ok(rc4) => rc4,
            Err(_) => unreachable!("RC4 accepts 20-byte keys"),
        };
        let mut drop = [0u8; DISCARD];
        rc4.apply_keystream(&mut drop);
        Rc4Stream(rc4)
    }

    /// XOR the next `buf.len()` keystream bytes into `buf` (encryption and decryption are the same).
    pub fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }
}

impl std::fmt::Debug for Rc4Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rc4Stream(..)")
    }
}

/// SHA-1 over the concatenation of `parts`.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut sha = Sha1::new();
    for part in parts {
        sha.update(part);
    }
    sha.finalize().into()
}

/// The two RC4 keys: (A→B, B→A).
pub(crate) fn keys(secret: &[u8; KEY_LEN], skey: &[u8; 20]) -> ([u8; 20], [u8; 20]) {
    (
        hash(&[b"keyA", secret, skey]),
        hash(&[b"keyB", secret, skey]),
    )
}

/// The negotiated RC4 pair of one side of a connection: `encrypt` what it sends, `decrypt` what it
/// receives, both in place. Either half can be split off for a separate reader and writer.
#[derive(Debug)]
pub struct Cipher {
    send: Rc4Stream,
    recv: Rc4Stream,
}

impl Cipher {
    pub(crate) fn new(send: Rc4Stream, recv: Rc4Stream) -> Self {
        Cipher { send, recv }
    }

    /// Encrypt outgoing bytes in place.
    pub fn encrypt(&mut self, buf: &mut [u8]) {
        self.send.apply(buf);
    }

    /// Decrypt incoming bytes in place.
    pub fn decrypt(&mut self, buf: &mut [u8]) {
        self.recv.apply(buf);
    }

    /// The sending and receiving streams, for a writer and a reader that run apart.
    pub fn split(self) -> (Rc4Stream, Rc4Stream) {
        (self.send, self.recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values were computed at test-writing time with an independent RC4 written in
    /// Python 3 (the textbook KSA/PRGA), not with this crate.
    #[test]
    fn keystream_after_discard_known_answer() {
        let key: [u8; 20] = core::array::from_fn(|i| i as u8);
        let mut s = Rc4Stream::new(&key);
        let mut buf = [0u8; 16];
        s.apply(&mut buf);
        assert_eq!(buf, KEY_0_TO_19_AFTER_1024);
    }

    /// Without the discard the same key gives a different stream: the discard is really there.
    #[test]
    fn discard_is_1024_bytes() {
        let key: [u8; 20] = core::array::from_fn(|i| i as u8);
        let mut raw = match Rc4::new_from_slice(&key) {
            Ok(r) => r,
            Err(_) => panic!("20-byte key"),
        };
        let mut first = vec![0u8; DISCARD + 16];
        raw.apply_keystream(&mut first);
        assert_eq!(first[DISCARD..], KEY_0_TO_19_AFTER_1024);
        assert_ne!(first[..16], KEY_0_TO_19_AFTER_1024);
    }

    /// RC4 keyed with the bytes 0..=19: keystream bytes 1024..1040.
    const KEY_0_TO_19_AFTER_1024: [u8; 16] = [
        0xcb, 0x84, 0xe3, 0xc9, 0x5e, 0xde, 0x7b, 0xb7, 0x65, 0x13, 0x90, 0x07, 0x8a, 0xe9, 0x77,
        0x77,
    ];
}
