//! The spec's Diffie-Hellman group: the 768-bit prime P (Oakley group 1) and generator 2.

use num_bigint::BigUint;

/// Length in bytes of a public key and of the shared secret S (big-endian, zero-padded on the left).
pub const KEY_LEN: usize = 96;

/// Length in bytes of a private key (160 bits, as the spec asks).
pub const PRIVATE_KEY_LEN: usize = 20;

/// P, big-endian.
const PRIME: [u8; KEY_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

fn prime() -> BigUint {
    BigUint::from_bytes_be(&PRIME)
}

fn to_key_bytes(n: &BigUint) -> [u8; KEY_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    // n < P < 2^768, so it always fits; a longer value cannot occur (and would be cut, never panic).
    let take = bytes.len().min(KEY_LEN);
    out[KEY_LEN - take..].copy_from_slice(&bytes[bytes.len() - take..]);
    out
}

/// Our public key: 2^x mod P.
pub fn public_key(private: &[u8; PRIVATE_KEY_LEN]) -> [u8; KEY_LEN] {
    let x = BigUint::from_bytes_be(private);
    to_key_bytes(&BigUint::from(2u32).modpow(&x, &prime()))
}

/// The shared secret S = y^x mod P, or `None` when the peer's public key `y` is degenerate
/// (0, 1, P-1 or not below P), which would make S guessable.
pub fn shared_secret(
    private: &[u8; PRIVATE_KEY_LEN],
    peer_public: &[u8; KEY_LEN],
) -> Option<[u8; KEY_LEN]> {
    let p = prime();
    let y = BigUint::from_bytes_be(peer_public);
    let one = BigUint::from(1u32);
    if y <= one || y >= &p - &one {
        return None;
    }
    let x = BigUint::from_bytes_be(private);
    Some(to_key_bytes(&y.modpow(&x, &p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn prime_is_the_specs() {
        let spec = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
        assert_eq!(PRIME.to_vec(), hex(spec));
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let x = [7u8; PRIVATE_KEY_LEN];
        let mut y = [0u8; KEY_LEN];
        assert!(shared_secret(&x, &y).is_none());
        y[KEY_LEN - 1] = 1;
        assert!(shared_secret(&x, &y).is_none());
        let mut p_minus_1 = PRIME;
        p_minus_1[KEY_LEN - 1] -= 1;
        assert!(shared_secret(&x, &p_minus_1).is_none());
        assert!(shared_secret(&x, &PRIME).is_none());
        assert!(shared_secret(&x, &[0xFF; KEY_LEN]).is_none());
        y[KEY_LEN - 1] = 2;
        assert!(shared_secret(&x, &y).is_some());
    }
}
