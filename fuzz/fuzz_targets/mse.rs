#![no_main]
//! The MSE handshake, both sides: arbitrary bytes at every stage (from the first byte, after a valid
//! first message, and as the plaintext under a valid RC4 stream so the length and method fields are
//! reached), in arbitrary chunks. Never a panic, never more than `MAX_BUFFERED` bytes held, and once
//! an error is returned every later input is refused.

use libfuzzer_sys::fuzz_target;
use mse::dh::{public_key, shared_secret, KEY_LEN};
use mse::{Handshake, InfoHashes, MseError, Policy, Rc4Stream, Secrets, MAX_BUFFERED};
use sha1::{Digest, Sha1};
use std::sync::OnceLock;

const SKEY: [u8; 20] = [7; 20];
const XA: [u8; 20] = [0x11; 20];
const XB: [u8; 20] = [0x22; 20];

fn key(name: &[u8], secret: &[u8; KEY_LEN]) -> [u8; 20] {
    let mut sha = Sha1::new();
    sha.update(name);
    sha.update(secret);
    sha.update(SKEY);
    sha.finalize().into()
}

fn policy(b: u8) -> Policy {
    match b % 3 {
        0 => Policy::Prefer,
        1 => Policy::Require,
        _ => Policy::Plaintext,
    }
}

/// Feeds `data` in chunks whose sizes come from `sizes`, checking the invariants.
fn feed(hs: &mut Handshake, data: &[u8], sizes: &[u8]) {
    let mut rest = data;
    // Once an error is returned every later input gets `Failed`; once done, `InputAfterDone`.
    let mut expect: Option<MseError> = None;
    for i in 0.. {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(255)) + 1)
            .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let result = hs.handle_input(chunk);
        assert!(hs.buffered() <= MAX_BUFFERED);
        if let Some(want) = &expect {
            assert_eq!(result.as_ref(), Err(want));
        } else if result.is_err() {
            expect = Some(MseError::Failed);
        } else if hs.is_done() {
            expect = Some(MseError::InputAfterDone);
        }
        let _ = hs.poll_transmit();
        if let Some(done) = hs.poll_done() {
            assert!(done.initial_payload.len() <= mse::MAX_IA_LEN);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&sizes_len, rest)) = rest.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(sizes_len % 8).min(rest.len()));
    let a_secrets = Secrets::new(XA, vec![0xaa; 3], vec![0xcc; 2]).ok();
    let b_secrets = Secrets::new(XB, vec![0xbb; 4], vec![0xdd; 1]).ok();
    let (Some(a_secrets), Some(b_secrets)) = (a_secrets, b_secrets) else {
        return;
    };
    let responder = || {
        Handshake::responder(
            [SKEY].into_iter().collect::<InfoHashes>(),
            policy(mode >> 3),
            b_secrets.clone(),
        )
    };
    let initiator =
        || Handshake::initiator(SKEY, policy(mode >> 3), b"IA".to_vec(), a_secrets.clone()).ok();
    // The modexps are the slow part: computed once, not per input.
    static KEYS: OnceLock<Option<([u8; KEY_LEN], [u8; KEY_LEN], [u8; KEY_LEN])>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let yb = public_key(&XB);
        Some((public_key(&XA), yb, shared_secret(&XA, &yb)?))
    });
    let Some((ya, yb, secret)) = *keys else {
        return;
    };
    match mode % 6 {
        // A responder from its first byte.
        0 => feed(&mut responder(), stream, sizes),
        // A responder after a valid Ya.
        1 => {
            let mut b = responder();
            let _ = b.handle_input(&ya);
            feed(&mut b, stream, sizes);
        }
        // A responder after Ya and the two hashes: the fuzzer writes the plaintext under keyA.
        2 | 3 => {
            let mut b = responder();
            let _ = b.handle_input(&ya);
            let mut head = Vec::new();
            let req = |name: &[u8]| -> [u8; 20] {
                let mut sha = Sha1::new();
                sha.update(name);
                sha.update(secret);
                sha.finalize().into()
            };
            head.extend_from_slice(&req(b"req1"));
            let mut sha = Sha1::new();
            sha.update(b"req2");
            sha.update(SKEY);
            let req2: [u8; 20] = sha.finalize().into();
            head.extend(req2.iter().zip(req(b"req3")).map(|(x, y)| x ^ y));
            let _ = b.handle_input(&head);
            let mut plain = stream.to_vec();
            if mode % 6 == 3 && plain.len() >= 8 {
                plain[..8].fill(0); // a valid VC, to reach the fields behind it more often
            }
            Rc4Stream::new(&key(b"keyA", &secret)).apply(&mut plain);
            feed(&mut b, &plain, sizes);
        }
        // An initiator after a valid Yb.
        4 => {
            let Some(mut a) = initiator() else { return };
            let _ = a.handle_input(&yb);
            feed(&mut a, stream, sizes);
        }
        // An initiator after Yb: the fuzzer writes the plaintext under keyB, after a valid VC.
        _ => {
            let Some(mut a) = initiator() else { return };
            let _ = a.handle_input(&yb);
            let mut plain = vec![0u8; 8];
            plain.extend_from_slice(stream);
            Rc4Stream::new(&key(b"keyB", &secret)).apply(&mut plain);
            feed(&mut a, &plain, sizes);
        }
    }
});
