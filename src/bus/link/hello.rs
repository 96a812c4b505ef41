//! The handshake of a direct link: who the dialer is, and proof on both sides that they hold
//! the cluster's key.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a dialer says after the listener's nonce.
#[derive(Serialize, Deserialize)]
pub(super) struct Hello {
    /// The dialer's node name.
    pub(super) from: String,
    /// The node it meant to reach.
    pub(super) to: String,
    /// The dialer's process (the stamp on its frames).
    pub(super) boot: u64,
    /// The HMAC, hex.
    pub(super) mac: String,
    /// The dialer's own random nonce, hex: the listener proves it holds the key too
    /// ([`listener_mac`]) before the dialer writes it a frame or believes its acknowledgements.
    pub(super) nonce: String,
}

/// Bytes of each side's nonce.
pub(super) const NONCE: usize = 16;

/// What the listener answers a genuine hello with: proof that it holds the key, bound to both
/// nonces, so that whoever took the node's address (or answers in its place) cannot pose as it.
pub(super) fn listener_mac(
    key: &[u8; 32],
    nonces: (&[u8], &[u8]),
    from: &str,
    to: &str,
    boot: u64,
) -> Hmac<Sha256> {
    let mut m = mac(key, nonces.0, from, to, boot);
    m.update(b"\0listener\0");
    m.update(nonces.1);
    m
}

/// The MAC of a hello for `nonce`.
pub(super) fn mac(key: &[u8; 32], nonce: &[u8], from: &str, to: &str, boot: u64) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    m.update(b"roulette-link\0");
    m.update(nonce);
    m.update(from.as_bytes());
    m.update(b"\0");
    m.update(to.as_bytes());
    m.update(b"\0");
    m.update(&boot.to_be_bytes());
    m
}

/// The key of the links: the cluster's shared key, for this use alone.
pub(super) fn derive(shared: &[u8; 32]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(shared).expect("HMAC takes any key");
    m.update(b"roulette node link key");
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_is_bound_to_its_nonce_sender_recipient_and_process() {
        let key = derive(&[7; 32]);
        let tag = mac(&key, b"nonce", "a", "b", 1).finalize().into_bytes();
        assert!(mac(&key, b"nonce", "a", "b", 1).verify_slice(&tag).is_ok());
        for other in [
            mac(&key, b"nonce2", "a", "b", 1),
            mac(&key, b"nonce", "ab", "", 1),
            mac(&key, b"nonce", "a", "c", 1),
            mac(&key, b"nonce", "a", "b", 2),
            mac(&derive(&[8; 32]), b"nonce", "a", "b", 1),
        ] {
            assert!(other.verify_slice(&tag).is_err());
        }
        assert_ne!(derive(&[7; 32]), [7; 32], "not the pids' key itself");
    }

    #[test]
    fn the_listeners_proof_is_bound_to_both_nonces_and_is_not_a_dialers_hello() {
        let key = derive(&[7; 32]);
        let tag = listener_mac(&key, (b"n1", b"n2"), "a", "b", 1)
            .finalize()
            .into_bytes();
        let ok = |m: Hmac<Sha256>| m.verify_slice(&tag).is_ok();
        assert!(ok(listener_mac(&key, (b"n1", b"n2"), "a", "b", 1)));
        assert!(!ok(listener_mac(&key, (b"n1", b"n3"), "a", "b", 1)));
        assert!(!ok(listener_mac(&key, (b"n0", b"n2"), "a", "b", 1)));
        assert!(!ok(listener_mac(
            &derive(&[8; 32]),
            (b"n1", b"n2"),
            "a",
            "b",
            1
        )));
        // A dialer's hello for the same nonce cannot stand in for it.
        assert!(!ok(mac(&key, b"n1", "a", "b", 1)));
    }

    #[test]
    fn hex_from_a_peer_never_panics() {
        // What the listener decodes a hello's `mac` and `nonce` with.
        assert_eq!(
            hex::decode(hex::encode([0, 0xab, 0xff])).ok(),
            Some(vec![0, 0xab, 0xff])
        );
        for bad in ["a", "zz", "é1", "1é", "0é"] {
            assert!(hex::decode(bad).is_err(), "{bad}");
        }
    }
}
