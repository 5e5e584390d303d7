//! STUN Binding (RFC 8489) on the rendezvous ports, through the `stun-types` codec
//! (`docs/protocol.md` §"STUN").
//!
//! ```text
//! 0                   2                  4                      8                        20
//! | 00 + type (u16)   | length (u16)     | magic cookie 2112A442 | transaction id (96 bits) | attributes
//! ```
//!
//! The server answers Binding requests with XOR-MAPPED-ADDRESS, plus FINGERPRINT when the request
//! carried one. Classic RFC 3489 requests (no magic cookie) and every other method are ignored.
//! On reply size see `docs/protocol.md` §"STUN": the mandatory XOR-MAPPED-ADDRESS makes the
//! answer to a bare 20-byte request 32 (IPv4) or 44 (IPv6) bytes, the one place where a reply may
//! exceed its request; the server answers those only within a small rate budget. shipworm's own
//! requests ([`binding_request`]) are padded with a SOFTWARE attribute to [`REQUEST_LEN`], the size
//! of the largest answer, so an answer to them is never larger than the request.

use std::net::SocketAddr;

use stun_types::attribute::{Fingerprint, Software, XorMappedAddress};
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWriteMutSlice, MessageWriteVec, TransactionId,
    BINDING,
};
use stun_types::prelude::*;

use shipworm_tunnel::wire::{addr, Reader};

/// RFC 8489 magic cookie.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Offset of the message length (attributes only, a multiple of 4), RFC 8489 §5.
pub const LENGTH_OFFSET: usize = 2;
/// Offset of the magic cookie.
pub const COOKIE_OFFSET: usize = 4;
/// Offset of the 96-bit transaction id.
pub const TRANSACTION_ID_OFFSET: usize = 8;
/// Length of the header; attributes follow.
pub const HEADER_LEN: usize = TRANSACTION_ID_OFFSET + 12;
/// The first two bits of every STUN message are zero (RFC 8489 §5); they tell STUN apart from the
/// rendezvous messages and tunnel frames on the same port.
const TYPE_TOP_BITS: u8 = 0xC0;
/// Largest Binding response we write (IPv6 XOR-MAPPED-ADDRESS and FINGERPRINT).
pub const MAX_RESPONSE_LEN: usize = HEADER_LEN + 24 + 8;
/// The SOFTWARE value of our requests: exactly as long as needed for [`REQUEST_LEN`].
const SOFTWARE: &str = "shipworm stun pad v1";
/// Length of shipworm's own Binding requests: header, SOFTWARE (4 + 20), FINGERPRINT (8), as
/// long as the largest answer, so no answer to them is larger than the request.
pub const REQUEST_LEN: usize = HEADER_LEN + 4 + SOFTWARE.len() + 8;

/// Whether `bytes` look like an RFC 8489 STUN message (first two bits zero, magic cookie).
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN
        && bytes[0] & TYPE_TOP_BITS == 0
        && bytes[COOKIE_OFFSET..TRANSACTION_ID_OFFSET] == MAGIC_COOKIE
}

/// Why a STUN message was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a well-formed STUN message.
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    /// Well-formed, but not a Binding request.
    #[error("STUN message is not a Binding request")]
    NotBindingRequest,
}

/// Writes the Binding success response to `request` (from `from`) into `out`; returns its length.
pub fn binding_response(
    request: &[u8],
    from: SocketAddr,
    out: &mut [u8; MAX_RESPONSE_LEN],
) -> Result<usize, StunError> {
    // Header checks first: the codec logs a warning on some malformed input, and a log line per
    // hostile packet is what we never want.
    if !is_stun(request) {
        return Err(StunError::Malformed("not an RFC 8489 STUN header".into()));
    }
    let declared = Reader::new(&request[LENGTH_OFFSET..])
        .u16("STUN length")
        .map_err(|e| StunError::Malformed(e.to_string()))? as usize;
    if declared % 4 != 0 || request.len() != HEADER_LEN + declared {
        return Err(StunError::Malformed(
            "length field does not match the datagram".into(),
        ));
    }
    let msg = Message::from_bytes(request).map_err(|e| StunError::Malformed(e.to_string()))?;
    if !(msg.has_class(MessageClass::Request) && msg.has_method(BINDING)) {
        return Err(StunError::NotBindingRequest);
    }
    let with_fingerprint = msg.has_attribute(Fingerprint::TYPE);
    let from = addr::normalize(from);
    let mut w = Message::builder_success(&msg, MessageWriteMutSlice::new(&mut out[..]));
    let write_err = |e: stun_types::message::StunWriteError| StunError::Malformed(e.to_string());
    w.add_attribute(&XorMappedAddress::new(from, msg.transaction_id()))
        .map_err(write_err)?;
    if with_fingerprint {
        w.add_fingerprint().map_err(write_err)?;
    }
    Ok(w.finish())
}

/// A Binding request (SOFTWARE padding, FINGERPRINT; [`REQUEST_LEN`] bytes) and its transaction
/// id, drawn from the OS, for clients.
pub fn binding_request() -> (Vec<u8>, TransactionId) {
    binding_request_with_id(TransactionId::generate())
}

/// A Binding request with the transaction id `tx`, for clients that draw their random numbers
/// from their own generator (a seeded simulation replays exactly). The id must be unpredictable
/// to others (RFC 8489 §5): 96 bits of a CSPRNG.
///
/// It carries SOFTWARE (RFC 8489 §14.14, which servers ignore) only to reach [`REQUEST_LEN`]:
/// then no server answer is larger than the request, and servers that answer only such requests
/// (our second port) cannot be used as amplifiers. FINGERPRINT comes last, as it must.
pub fn binding_request_with_id(tx: TransactionId) -> (Vec<u8>, TransactionId) {
    let request = MessageType::from_class_method(MessageClass::Request, BINDING);
    let mut w = Message::builder(request, tx, MessageWriteVec::new());
    let software = Software::new(SOFTWARE).expect("20 bytes is a valid SOFTWARE value");
    w.add_attribute(&software)
        .expect("an empty request has room for SOFTWARE");
    w.add_fingerprint()
        .expect("an empty request has room for FINGERPRINT");
    (w.finish(), tx)
}

/// Reads the mapped address from a Binding success response to transaction `tx`.
pub fn parse_binding_response(bytes: &[u8], tx: TransactionId) -> Result<SocketAddr, StunError> {
    if !is_stun(bytes) {
        return Err(StunError::Malformed("not a STUN message".into()));
    }
    let msg = Message::from_bytes(bytes).map_err(|e| StunError::Malformed(e.to_string()))?;
    if msg.transaction_id() != tx || !msg.has_class(MessageClass::Success) {
        return Err(StunError::Malformed(
            "not the success response to our request".into(),
        ));
    }
    let xor = msg
        .attribute::<XorMappedAddress>()
        .map_err(|e| StunError::Malformed(format!("no XOR-MAPPED-ADDRESS: {e}")))?;
    Ok(addr::normalize(xor.addr(tx)))
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
    fn header_offsets_agree_with_the_codec() {
        assert_eq!(HEADER_LEN, stun_types::message::MessageHeader::LENGTH);
    }

    #[test]
    fn answers_a_bare_rfc5389_request_like_turnutils_sends() {
        // Captured from `turnutils_stunclient` (coturn 4.6).
        let req = hex("000100002112a4427f47a4301deb7df08f9a3777");
        assert!(is_stun(&req));
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let from: SocketAddr = "192.0.2.33:40000".parse().unwrap();
        let n = binding_response(&req, from, &mut out).unwrap();
        assert_eq!(n, 32, "header + IPv4 XOR-MAPPED-ADDRESS");
        assert_eq!(&out[..2], &[0x01, 0x01], "Binding success");
        assert_eq!(&out[8..20], &req[8..20], "transaction id echoed");
        let tx = Message::from_bytes(&req).unwrap().transaction_id();
        assert_eq!(parse_binding_response(&out[..n], tx), Ok(from));
    }

    #[test]
    fn round_trip_with_fingerprint_over_ipv6_and_mapped_ipv4() {
        let (req, tx) = binding_request();
        assert_eq!(req.len(), REQUEST_LEN);
        assert_eq!(
            REQUEST_LEN, MAX_RESPONSE_LEN,
            "no answer is larger than our request"
        );
        let mut out = [0u8; MAX_RESPONSE_LEN];
        for (from, want, len) in [
            ("[2001:db8::5]:9", "[2001:db8::5]:9", 52),
            ("[::ffff:192.0.2.5]:9", "192.0.2.5:9", 40),
        ] {
            let n = binding_response(&req, from.parse().unwrap(), &mut out).unwrap();
            assert_eq!(n, len);
            assert!(n <= req.len());
            assert_eq!(
                parse_binding_response(&out[..n], tx),
                Ok(want.parse().unwrap())
            );
        }
    }

    #[test]
    fn a_chosen_transaction_id_is_the_one_on_the_wire() {
        let tx = TransactionId::from(0x0102_0304_0506_0708_090a_0b0c_u128);
        let (req, got) = binding_request_with_id(tx);
        assert_eq!(got, tx);
        assert_eq!(
            &req[TRANSACTION_ID_OFFSET..HEADER_LEN],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let from: SocketAddr = "192.0.2.7:7".parse().unwrap();
        let n = binding_response(&req, from, &mut out).unwrap();
        assert_eq!(parse_binding_response(&out[..n], tx), Ok(from));
    }

    #[test]
    fn ignores_what_is_not_a_binding_request() {
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        // RFC 3489 request with CHANGE-REQUEST, as the `stun` client sends: no magic cookie.
        let classic = hex("0001000801fa9829ec0cde2fa1c0563e072549520003000400000000");
        assert!(!is_stun(&classic));
        // A Binding indication.
        let mut ind = hex("001100002112a4427f47a4301deb7df08f9a3777");
        assert_eq!(
            binding_response(&ind, from, &mut out),
            Err(StunError::NotBindingRequest)
        );
        // Length field lies.
        ind[3] = 8;
        assert!(matches!(
            binding_response(&ind, from, &mut out),
            Err(StunError::Malformed(_))
        ));
        // Corrupted fingerprint.
        let (mut req, _) = binding_request();
        let last = req.len() - 1;
        req[last] ^= 1;
        assert!(matches!(
            binding_response(&req, from, &mut out),
            Err(StunError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 20..200)) {
            bytes[0] &= 0x3f;
            bytes[4..8].copy_from_slice(&MAGIC_COOKIE);
            let mut out = [0u8; MAX_RESPONSE_LEN];
            let _ = binding_response(&bytes, "192.0.2.1:1".parse().unwrap(), &mut out);
        }
    }
}
