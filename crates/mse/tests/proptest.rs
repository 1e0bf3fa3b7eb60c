//! Property tests: the handshake completes whatever the paddings and however the byte streams are
//! cut, and noise never panics nor makes a side hold more than `MAX_BUFFERED` bytes.

use mse::dh::{public_key, KEY_LEN};
use mse::{
    Done, Handshake, InfoHashes, MseError, Policy, Secrets, CRYPTO_PLAINTEXT, CRYPTO_RC4,
    MAX_BUFFERED, MAX_IA_LEN, MAX_PAD,
};
use proptest::prelude::*;

const SKEY: [u8; 20] = [0x5a; 20];

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Prefer),
        Just(Policy::Require),
        Just(Policy::Plaintext)
    ]
}

fn secrets() -> impl Strategy<Value = Secrets> {
    (any::<[u8; 20]>(), 0..=MAX_PAD, 0..=MAX_PAD, any::<u8>())
        .prop_filter_map("zero key", |(key, a, c, fill)| {
            Secrets::new(key, vec![fill; a], vec![fill.wrapping_add(1); c]).ok()
        })
}

/// Cuts `pipe`'s front into the next chunk, sized by the cycling `sizes`.
fn next_chunk(pipe: &mut Vec<u8>, sizes: &[usize], turn: &mut usize) -> Vec<u8> {
    let n = sizes[*turn % sizes.len()].min(pipe.len());
    *turn += 1;
    pipe.drain(..n).collect()
}

struct Outcome {
    a: Done,
    b: Done,
    /// What A received after its handshake completed, decrypted: `a.leftover` then this.
    a_payload: Vec<u8>,
}

/// Runs both sides over two pipes, delivering chunks of the given sizes. B sends `reply` as soon
/// as it is done, encrypted when rc4 was selected, right behind its last handshake bytes.
fn run(
    mut a: Handshake,
    mut b: Handshake,
    sizes: &[usize],
    reply: &[u8],
) -> Result<Outcome, MseError> {
    let (mut ab, mut ba) = (Vec::new(), Vec::new());
    let (mut a_done, mut b_done) = (None, None);
    let mut turn = 0;
    for _ in 0..100_000 {
        if let Some(bytes) = a.poll_transmit() {
            ab.extend_from_slice(&bytes);
        }
        if let Some(bytes) = b.poll_transmit() {
            ba.extend_from_slice(&bytes);
        }
        if let Some(mut done) = b.poll_done() {
            let mut bytes = reply.to_vec();
            if let Some(c) = &mut done.cipher {
                c.encrypt(&mut bytes);
            }
            ba.extend_from_slice(&bytes);
            b_done = Some(done);
        }
        if let Some(done) = a.poll_done() {
            a_done = Some(done);
        }
        assert!(a.buffered() <= MAX_BUFFERED && b.buffered() <= MAX_BUFFERED);
        if let (Some(_), Some(_)) = (&a_done, &b_done) {
            break;
        }
        if b_done.is_none() && !ab.is_empty() {
            b.handle_input(&next_chunk(&mut ab, sizes, &mut turn))?;
        }
        if a_done.is_none() && !ba.is_empty() {
            a.handle_input(&next_chunk(&mut ba, sizes, &mut turn))?;
        }
    }
    let (Some(mut a), Some(b)) = (a_done, b_done) else {
        panic!("handshake stalled");
    };
    if let Some(c) = &mut a.cipher {
        c.decrypt(&mut ba);
    }
    Ok(Outcome {
        a,
        b,
        a_payload: ba,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any paddings, any initial payload length, any cutting of both streams: the handshake
    /// completes, the outcome matches the policies, and the payload after it arrives intact.
    #[test]
    fn completes_for_any_padding_and_split(
        a_secrets in secrets(),
        b_secrets in secrets(),
        a_policy in policy(),
        b_policy in policy(),
        ia_len in 0..=MAX_IA_LEN,
        sizes in prop::collection::vec(1usize..700, 1..8),
    ) {
        let ia: Vec<u8> = (0..ia_len).map(|i| i as u8).collect();
        let a = Handshake::initiator(SKEY, a_policy, ia.clone(), a_secrets).unwrap();
        let b = Handshake::responder([[1; 20], SKEY].into_iter().collect::<InfoHashes>(), b_policy, b_secrets);
        let common = a_policy.allowed() & b_policy.allowed();
        let reply = b"\x13BitTorrent protocol and then some messages".to_vec();
        match run(a, b, &sizes, &reply) {
            Ok(out) => {
                let want = if common & CRYPTO_RC4 != 0 { CRYPTO_RC4 } else { CRYPTO_PLAINTEXT };
                prop_assert!(common != 0);
                prop_assert_eq!(out.a.selected, want);
                prop_assert_eq!(out.b.selected, want);
                prop_assert_eq!(out.b.initial_payload, ia);
                prop_assert_eq!(out.b.skey, SKEY);
                prop_assert!(out.b.leftover.is_empty());
                prop_assert_eq!([out.a.leftover, out.a_payload].concat(), reply);
            }
            Err(e) => {
                prop_assert_eq!(common, 0);
                let is_no_common = matches!(e, MseError::NoCommonMethod { .. });
                prop_assert!(is_no_common);
            }
        }
    }

    /// Noise to a responder, from the first byte or after a valid Ya, in any chunks: no panic, the
    /// bound holds, and it fails by the end of the sync window at the latest.
    #[test]
    fn responder_survives_noise(
        valid_ya in any::<bool>(),
        noise in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in prop::collection::vec(1usize..700, 1..8),
    ) {
        let mut b = Handshake::responder([SKEY].into_iter().collect::<InfoHashes>(), Policy::Prefer, Secrets::from_seed(&[1; 32]));
        let mut stream = if valid_ya { public_key(&[3; 20]).to_vec() } else { Vec::new() };
        stream.extend_from_slice(&noise);
        let total = stream.len();
        let mut turn = 0;
        let mut failed = false;
        while !stream.is_empty() {
            let chunk = next_chunk(&mut stream, &sizes, &mut turn);
            let r = b.handle_input(&chunk);
            prop_assert!(b.buffered() <= MAX_BUFFERED);
            if failed {
                prop_assert_eq!(r.clone(), Err(MseError::Failed));
            }
            failed |= r.is_err();
        }
        if total >= KEY_LEN + mse::SYNC_REQ1_WINDOW {
            prop_assert!(failed);
        }
    }

    /// Noise to an initiator after a valid Yb: same.
    #[test]
    fn initiator_survives_noise(
        noise in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in prop::collection::vec(1usize..700, 1..8),
        policy in policy(),
    ) {
        let mut a = Handshake::initiator(SKEY, policy, vec![1; 68], Secrets::from_seed(&[2; 32])).unwrap();
        let mut stream = public_key(&[4; 20]).to_vec();
        stream.extend_from_slice(&noise);
        let total = stream.len();
        let mut turn = 0;
        let mut failed = false;
        while !stream.is_empty() {
            let chunk = next_chunk(&mut stream, &sizes, &mut turn);
            let r = a.handle_input(&chunk);
            prop_assert!(a.buffered() <= MAX_BUFFERED);
            failed |= r.is_err();
        }
        if total >= KEY_LEN + mse::SYNC_VC_WINDOW {
            prop_assert!(failed);
        }
    }
}
