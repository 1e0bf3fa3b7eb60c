use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// Known answers computed at test-writing time by an independent Python 3 script (pow() for the
// modexp, hashlib.sha1, a textbook RC4), not by this crate. Inputs: Xa = bytes 1..=20,
// Xb = bytes 0x21..=0x34, SKEY = bytes 100..=119, PadA = 5×0xaa, PadB = 3×0xbb, PadC = 4×0xcc,
// PadD = 2×0xdd, crypto_provide 0x03, crypto_select 0x02, IA = the handshake below.
const YA: &str = "96e112dab29e8c5272accb9b17b26887ce54a144a4e3b697c7d159b7a817e556b0918db2b4c658e02a87f7e5fb14b18a553e084cbf3dad2d30f16596ccb982d406258c61b30c5c1dae2ddc60bdbd48d79896312aad63238c39e1a633821eb693";
const YB: &str = "8f9c9f400fe9b3258f3e48598a95c7805cc90c995cd770283322679d132ebdae09b75eeadc01de698ef86945cf38314a95fad08c2ad5641802bd5f658eb3ea0db2712c04aa5efed03deecc5104f75d869d2d197e4336c61f0d71d763bee99416";
const S: &str = "cd8536d5f2c98f01f8f5a648f69f6f2d6a6aafd044666b01fc8beb81f63ddbea0a862b2b6306431f7a308b063f795d181ca711b22ab0602a9c4b5d1c53269837773ff53a4de47d9aace6b6a1b789ea37077507842742eb7581ea180b16748826";
const M3: &str = "361e3668027ecec9d1086d5f839d191781e8de17c8beed3ecf3f6e80c79f6c31a21509457f8bbc8dd2a313381da150769e46ed4d6a1cbd3d428d9f2f744d7e1da5c99ea39b846383b6ff25d7e0cc977e4a396ac0b77cdbb80afab606f6e48b7de3f903a4239686aff2559fafa0c880b8410c18e451af30674c92d2fdb7e4a605";
const M4: &str = "78120533e9df4b335a451831033d2867";
/// "hello" A→B and "world" B→A, the first payload bytes after the handshake.
const A_NEXT: &str = "94887cf2a6";
const B_NEXT: &str = "81fff130fb";

fn xa() -> [u8; 20] {
    core::array::from_fn(|i| i as u8 + 1)
}
fn xb() -> [u8; 20] {
    core::array::from_fn(|i| i as u8 + 0x21)
}
fn skey() -> [u8; 20] {
    core::array::from_fn(|i| i as u8 + 100)
}
fn bt_handshake(skey: &[u8; 20]) -> Vec<u8> {
    let mut h = PLAINTEXT_HEADER.to_vec();
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(skey);
    h.extend_from_slice(b"-SP0001-xxxxxxxxxxxx");
    h
}
fn serving(ih: [u8; 20]) -> InfoHashes {
    [ih].into_iter().collect()
}

#[test]
fn dh_known_answer() {
    assert_eq!(dh::public_key(&xa()).to_vec(), hex(YA));
    assert_eq!(dh::public_key(&xb()).to_vec(), hex(YB));
    let yb: [u8; 96] = hex(YB).try_into().unwrap();
    let ya: [u8; 96] = hex(YA).try_into().unwrap();
    assert_eq!(dh::shared_secret(&xa(), &yb).unwrap().to_vec(), hex(S));
    assert_eq!(dh::shared_secret(&xb(), &ya).unwrap().to_vec(), hex(S));
}

/// Every byte both sides send, against the independent computation.
#[test]
fn handshake_byte_for_byte() {
    let a_secrets = Secrets::new(xa(), vec![0xaa; 5], vec![0xcc; 4]).unwrap();
    let b_secrets = Secrets::new(xb(), vec![0xbb; 3], vec![0xdd; 2]).unwrap();
    let mut a =
        Handshake::initiator(skey(), Policy::Prefer, bt_handshake(&skey()), a_secrets).unwrap();
    let mut b = Handshake::responder(serving(skey()), Policy::Prefer, b_secrets);

    let m1 = a.poll_transmit().unwrap();
    assert_eq!(m1, [hex(YA), vec![0xaa; 5]].concat());
    assert!(b.poll_transmit().is_none());
    b.handle_input(&m1).unwrap();
    let m2 = b.poll_transmit().unwrap();
    assert_eq!(m2, [hex(YB), vec![0xbb; 3]].concat());
    a.handle_input(&m2).unwrap();
    let m3 = a.poll_transmit().unwrap();
    assert_eq!(m3, hex(M3));
    b.handle_input(&m3).unwrap();
    let m4 = b.poll_transmit().unwrap();
    assert_eq!(m4, hex(M4));
    let b_done = b.poll_done().unwrap();
    assert_eq!(b_done.initial_payload, bt_handshake(&skey()));
    assert_eq!(b_done.skey, skey());
    assert_eq!(b_done.selected, CRYPTO_RC4);
    assert!(b_done.leftover.is_empty());
    a.handle_input(&m4).unwrap();
    let a_done = a.poll_done().unwrap();
    assert_eq!(a_done.selected, CRYPTO_RC4);

    let mut a_cipher = a_done.cipher.unwrap();
    let mut b_cipher = b_done.cipher.unwrap();
    let mut hello = *b"hello";
    a_cipher.encrypt(&mut hello);
    assert_eq!(hello.to_vec(), hex(A_NEXT));
    b_cipher.decrypt(&mut hello);
    assert_eq!(&hello, b"hello");
    let mut world = *b"world";
    b_cipher.encrypt(&mut world);
    assert_eq!(world.to_vec(), hex(B_NEXT));
    a_cipher.decrypt(&mut world);
    assert_eq!(&world, b"world");
}

/// Shuttles bytes between the two sides (each message split at `split`) until both are done or
/// one fails.
pub(crate) fn run(
    a: &mut Handshake,
    b: &mut Handshake,
) -> (Result<Done, MseError>, Result<Done, MseError>) {
    let mut a_res = None;
    let mut b_res = None;
    for _ in 0..10 {
        if let Some(bytes) = a.poll_transmit() {
            if b_res.is_none() {
                if let Err(e) = b.handle_input(&bytes) {
                    b_res = Some(Err(e));
                }
            }
        }
        if let Some(bytes) = b.poll_transmit() {
            if a_res.is_none() {
                if let Err(e) = a.handle_input(&bytes) {
                    a_res = Some(Err(e));
                }
            }
        }
        if a_res.is_none() {
            a_res = a.poll_done().map(Ok);
        }
        if b_res.is_none() {
            b_res = b.poll_done().map(Ok);
        }
        if a_res.is_some() && b_res.is_some() {
            break;
        }
        // A side that failed closes the connection: the other learns nothing more.
        if matches!(a_res, Some(Err(_))) || matches!(b_res, Some(Err(_))) {
            break;
        }
    }
    (
        a_res.unwrap_or(Err(MseError::Failed)),
        b_res.unwrap_or(Err(MseError::Failed)),
    )
}

fn pair(a_policy: Policy, b_policy: Policy, seed: u8) -> (Handshake, Handshake) {
    let a = Handshake::initiator(
        skey(),
        a_policy,
        bt_handshake(&skey()),
        Secrets::from_seed(&[seed; 32]),
    )
    .unwrap();
    let b = Handshake::responder(
        serving(skey()),
        b_policy,
        Secrets::from_seed(&[seed ^ 0xff; 32]),
    );
    (a, b)
}

#[test]
fn policies_negotiate() {
    use Policy::*;
    let cases = [
        (Prefer, Prefer, CRYPTO_RC4),
        (Prefer, Require, CRYPTO_RC4),
        (Require, Prefer, CRYPTO_RC4),
        (Require, Require, CRYPTO_RC4),
        (Prefer, Plaintext, CRYPTO_PLAINTEXT),
        (Plaintext, Prefer, CRYPTO_PLAINTEXT),
        (Plaintext, Plaintext, CRYPTO_PLAINTEXT),
    ];
    for (seed, (ap, bp, want)) in cases.into_iter().enumerate() {
        let (mut a, mut b) = pair(ap, bp, seed as u8);
        let (a_done, b_done) = run(&mut a, &mut b);
        let (a_done, b_done) = (a_done.unwrap(), b_done.unwrap());
        assert_eq!(
            (a_done.selected, b_done.selected),
            (want, want),
            "{ap:?} → {bp:?}"
        );
        assert_eq!(a_done.cipher.is_some(), want == CRYPTO_RC4);
        assert_eq!(b_done.cipher.is_some(), want == CRYPTO_RC4);
        assert_eq!(b_done.initial_payload, bt_handshake(&skey()));
        assert_eq!(a_done.skey, skey());
        assert_eq!(b_done.skey, skey());
    }
}

#[test]
fn plaintext_initiator_refused_by_requiring_responder() {
    let (mut a, mut b) = pair(Policy::Plaintext, Policy::Require, 1);
    let (a_res, b_res) = run(&mut a, &mut b);
    assert_eq!(
        b_res.unwrap_err(),
        MseError::NoCommonMethod {
            provided: CRYPTO_PLAINTEXT,
            allowed: CRYPTO_RC4
        }
    );
    assert!(a_res.is_err());
    // The error is final.
    assert_eq!(b.handle_input(&[0]), Err(MseError::Failed));
}

#[test]
fn requiring_initiator_refused_by_plaintext_responder() {
    let (mut a, mut b) = pair(Policy::Require, Policy::Plaintext, 2);
    let (_, b_res) = run(&mut a, &mut b);
    assert_eq!(
        b_res.unwrap_err(),
        MseError::NoCommonMethod {
            provided: CRYPTO_RC4,
            allowed: CRYPTO_PLAINTEXT
        }
    );
}

#[test]
fn wrong_skey_is_unknown() {
    let mut a =
        Handshake::initiator(skey(), Policy::Prefer, vec![], Secrets::from_seed(&[3; 32])).unwrap();
    let mut b = Handshake::responder(
        serving([9; 20]),
        Policy::Prefer,
        Secrets::from_seed(&[4; 32]),
    );
    let (_, b_res) = run(&mut a, &mut b);
    assert_eq!(b_res.unwrap_err(), MseError::UnknownInfoHash);
}

#[test]
fn lookup_by_closure() {
    let mut a =
        Handshake::initiator(skey(), Policy::Prefer, vec![], Secrets::from_seed(&[5; 32])).unwrap();
    let want = req2_hash(&skey());
    let lookup = move |req2: &[u8; 20]| (*req2 == want).then(skey);
    let mut b = Handshake::responder(lookup, Policy::Prefer, Secrets::from_seed(&[6; 32]));
    let (a_res, b_res) = run(&mut a, &mut b);
    assert!(a_res.is_ok());
    assert!(b_res.unwrap().initial_payload.is_empty());
}

/// The responder's reply and its first payload bytes in one packet: the initiator hands the
/// payload back decrypted.
#[test]
fn leftover_is_decrypted_payload() {
    for (policy, sel) in [
        (Policy::Prefer, CRYPTO_RC4),
        (Policy::Plaintext, CRYPTO_PLAINTEXT),
    ] {
        let (mut a, mut b) = pair(Policy::Prefer, policy, 7);
        b.handle_input(&a.poll_transmit().unwrap()).unwrap();
        a.handle_input(&b.poll_transmit().unwrap()).unwrap();
        b.handle_input(&a.poll_transmit().unwrap()).unwrap();
        let mut b_done = b.poll_done().unwrap();
        let mut reply = b.poll_transmit().unwrap();
        let mut payload = bt_handshake(&skey());
        if let Some(c) = &mut b_done.cipher {
            c.encrypt(&mut payload);
        }
        reply.extend_from_slice(&payload);
        a.handle_input(&reply).unwrap();
        let a_done = a.poll_done().unwrap();
        assert_eq!(a_done.selected, sel);
        assert_eq!(a_done.leftover, bt_handshake(&skey()));
        assert_eq!(a.handle_input(&[1]), Err(MseError::InputAfterDone));
    }
}

#[test]
fn junk_fails_within_the_sync_window() {
    // Responder: a valid-looking Ya then junk: refused exactly when the window is full.
    let mut b = Handshake::responder(
        serving(skey()),
        Policy::Prefer,
        Secrets::from_seed(&[8; 32]),
    );
    let junk: Vec<u8> = (0..2000u32).map(|i| (i * 7 + 3) as u8).collect();
    b.handle_input(&junk[..KEY_LEN + SYNC_REQ1_WINDOW - 1])
        .unwrap();
    assert!(b.buffered() <= MAX_BUFFERED);
    assert_eq!(
        b.handle_input(&junk[KEY_LEN + SYNC_REQ1_WINDOW - 1..]),
        Err(MseError::NoSyncHash)
    );

    // Initiator: Yb then junk.
    let mut a =
        Handshake::initiator(skey(), Policy::Prefer, vec![], Secrets::from_seed(&[9; 32])).unwrap();
    a.handle_input(&junk[..KEY_LEN + SYNC_VC_WINDOW - 1])
        .unwrap();
    assert_eq!(
        a.handle_input(&junk[KEY_LEN + SYNC_VC_WINDOW - 1..][..1]),
        Err(MseError::NoSyncVc)
    );
}

#[test]
fn degenerate_public_key_refused() {
    let mut b = Handshake::responder(
        serving(skey()),
        Policy::Prefer,
        Secrets::from_seed(&[8; 32]),
    );
    let mut one = [0u8; KEY_LEN];
    one[KEY_LEN - 1] = 1;
    assert_eq!(b.handle_input(&one), Err(MseError::InvalidPublicKey));
}

/// A hand-built initiator, to send what ours never would.
struct RawA {
    secret: [u8; KEY_LEN],
    send: Rc4Stream,
}

impl RawA {
    /// Runs steps 1 and 2 against `b`, returns the state for step 3.
    fn start(b: &mut Handshake) -> RawA {
        let x = xa();
        b.handle_input(&dh::public_key(&x)).unwrap();
        let m2 = b.poll_transmit().unwrap();
        let yb: [u8; KEY_LEN] = m2[..KEY_LEN].try_into().unwrap();
        let secret = dh::shared_secret(&x, &yb).unwrap();
        let (key_a, _) = cipher::keys(&secret, &skey());
        RawA {
            secret,
            send: Rc4Stream::new(&key_a),
        }
    }

    fn step3_head(&self) -> Vec<u8> {
        let mut m = cipher::hash(&[b"req1", &self.secret]).to_vec();
        let req3 = cipher::hash(&[b"req3", &self.secret]);
        m.extend(req2_hash(&skey()).iter().zip(req3).map(|(a, b)| a ^ b));
        m
    }

    fn encrypted(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut v = plain.to_vec();
        self.send.apply(&mut v);
        v
    }
}

#[test]
fn bad_lengths_and_constants_refused_before_buffering() {
    // PadC longer than 512: refused on its length field alone.
    let mut b = Handshake::responder(
        serving(skey()),
        Policy::Prefer,
        Secrets::from_seed(&[10; 32]),
    );
    let mut a = RawA::start(&mut b);
    let mut m3 = a.step3_head();
    m3.extend(a.encrypted(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0x02, 0x01]));
    assert_eq!(b.handle_input(&m3), Err(MseError::PadTooLong { len: 513 }));

    // IA longer than the cap: refused on its length field.
    let mut b = Handshake::responder(
        serving(skey()),
        Policy::Prefer,
        Secrets::from_seed(&[11; 32]),
    );
    let mut a = RawA::start(&mut b);
    let mut m3 = a.step3_head();
    m3.extend(a.encrypted(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0xff, 0xff]));
    assert_eq!(
        b.handle_input(&m3),
        Err(MseError::InitialPayloadTooLong { len: 65535 })
    );

    // A non-zero verification constant.
    let mut b = Handshake::responder(
        serving(skey()),
        Policy::Prefer,
        Secrets::from_seed(&[12; 32]),
    );
    let mut a = RawA::start(&mut b);
    let mut m3 = a.step3_head();
    m3.extend(a.encrypted(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0]));
    assert_eq!(b.handle_input(&m3), Err(MseError::BadVerificationConstant));
}

/// A hand-built responder answering ours with a bad crypto_select or PadD length.
#[test]
fn bad_select_refused() {
    for (select, pad, want) in [
        (
            CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            0u16,
            MseError::BadSelect {
                select: 3,
                provided: CRYPTO_RC4,
            },
        ),
        (
            0,
            0,
            MseError::BadSelect {
                select: 0,
                provided: CRYPTO_RC4,
            },
        ),
        (
            CRYPTO_PLAINTEXT,
            0,
            MseError::BadSelect {
                select: 1,
                provided: CRYPTO_RC4,
            },
        ),
        (CRYPTO_RC4, 600, MseError::PadTooLong { len: 600 }),
    ] {
        let mut a = Handshake::initiator(
            skey(),
            Policy::Require,
            vec![],
            Secrets::from_seed(&[13; 32]),
        )
        .unwrap();
        let m1 = a.poll_transmit().unwrap();
        let ya: [u8; KEY_LEN] = m1[..KEY_LEN].try_into().unwrap();
        a.handle_input(&dh::public_key(&xb())).unwrap();
        let secret = dh::shared_secret(&xb(), &ya).unwrap();
        let (_, key_b) = cipher::keys(&secret, &skey());
        let mut send = Rc4Stream::new(&key_b);
        let mut m4 = VC.to_vec();
        m4.extend_from_slice(&select.to_be_bytes());
        m4.extend_from_slice(&pad.to_be_bytes());
        send.apply(&mut m4);
        assert_eq!(a.handle_input(&m4), Err(want));
    }
}

#[test]
fn construction_checks() {
    assert_eq!(
        Secrets::new(xa(), vec![0; 513], vec![]).unwrap_err(),
        MseError::PadTooLong { len: 513 }
    );
    assert_eq!(
        Secrets::new(xa(), vec![], vec![0; 513]).unwrap_err(),
        MseError::PadTooLong { len: 513 }
    );
    assert_eq!(
        Secrets::new([0; 20], vec![], vec![]).unwrap_err(),
        MseError::WeakPrivateKey
    );
    assert_eq!(
        Handshake::initiator(
            skey(),
            Policy::Prefer,
            vec![0; MAX_IA_LEN + 1],
            Secrets::from_seed(&[0; 32])
        )
        .unwrap_err(),
        MseError::InitialPayloadTooLong {
            len: MAX_IA_LEN + 1
        }
    );
    // Seeds spread the paddings over 0..=512 and differ in keys.
    let lens: Vec<usize> = (0..=255u8)
        .map(|s| Secrets::from_seed(&[s; 32]).clear_pad.len())
        .collect();
    assert!(lens.iter().all(|&l| l <= MAX_PAD));
    assert!(lens.iter().any(|&l| l > 400) && lens.iter().any(|&l| l < 100));
    assert_ne!(
        Secrets::from_seed(&[1; 32]).private_key,
        Secrets::from_seed(&[2; 32]).private_key
    );
}

#[test]
fn detect_plaintext_or_mse() {
    assert_eq!(detect(b""), Detected::NeedMore);
    assert_eq!(detect(b"\x13"), Detected::NeedMore);
    assert_eq!(detect(b"\x13BitTorrent prot"), Detected::NeedMore);
    assert_eq!(detect(PLAINTEXT_HEADER), Detected::Plaintext);
    assert_eq!(detect(&bt_handshake(&skey())), Detected::Plaintext);
    assert_eq!(detect(b"\x13BitTorrent Protocol"), Detected::Encrypted);
    assert_eq!(detect(b"\x12"), Detected::Encrypted);
    assert_eq!(detect(&dh::public_key(&xa())), Detected::Encrypted);
}

/// The engine runs a handshake inside a task and hands the cipher halves to its reader and writer.
#[test]
fn handshake_and_cipher_are_send() {
    fn send<T: Send>() {}
    send::<Handshake>();
    send::<Cipher>();
    send::<Rc4Stream>();
    send::<Done>();
}
