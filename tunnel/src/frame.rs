//! Tunnel wire formats (`docs/protocol.md` §"Tunnel").
//!
//! Outer packets, all starting `type (u8) | version (u8) = 1 | reserved (u16) = 0`:
//!
//! ```text
//! 0xD1 HANDSHAKE_INIT  hdr | sender index (u32) | Noise IK message 1 | mac1 (16) | mac2 (16)
//! 0xD2 HANDSHAKE_RESP  hdr | sender index (u32) | receiver index (u32) | Noise message 2 | mac1 | mac2
//! 0xD3 COOKIE_REPLY    hdr | receiver index (u32) | nonce (24) | sealed cookie (16 + 16)
//! 0xD4 TRANSPORT       hdr | receiver index (u32) | counter (u64) | sealed inner frame (n + 16)
//! ```
//!
//! The transport header (16 bytes) is the AEAD's associated data. Inner frames (the plaintext of
//! TRANSPORT):
//!
//! ```text
//! (empty)                         keepalive, a Teredo "bubble"
//! first nibble 6                  DATA: exactly one IPv6 packet
//! 0x01 | tx (u64)                 PROBE
//! 0x02 | tx (u64) | address       PROBE_ANSWER: where the probe came from
//! 0x03                            CLOSE
//! 0x04 | flags | n | address*      ADVERT: new flags and candidates, mid-session (trickle)
//! ```

use std::net::SocketAddr;

use crate::wire::addr;

/// Protocol version of tunnel packets.
pub const VERSION: u8 = 1;
/// HANDSHAKE_INIT type byte.
pub const HANDSHAKE_INIT: u8 = 0xD1;
/// HANDSHAKE_RESP type byte.
pub const HANDSHAKE_RESP: u8 = 0xD2;
/// COOKIE_REPLY type byte.
pub const COOKIE_REPLY: u8 = 0xD3;
/// TRANSPORT type byte.
pub const TRANSPORT: u8 = 0xD4;
/// Length of a MAC field.
pub const MAC_LEN: usize = 16;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Length of the transport header.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Cookie nonce length (XChaCha20-Poly1305).
pub const COOKIE_NONCE_LEN: usize = 24;
/// COOKIE_REPLY length.
pub const COOKIE_REPLY_LEN: usize = 8 + COOKIE_NONCE_LEN + 16 + TAG_LEN;

const PROBE: u8 = 0x01;
const PROBE_ANSWER: u8 = 0x02;
const CLOSE: u8 = 0x03;
const ADVERT: u8 = 0x04;

/// Whether `bytes` claim to be a tunnel packet (type byte `0xD0..=0xDF`).
pub fn is_tunnel_packet(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0xD0..=0xDF))
}

/// Why a tunnel packet or frame is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Too short for its type.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// Unknown type byte.
    #[error("unknown packet type 0x{0:02x}")]
    UnknownType(u8),
    /// Another version.
    #[error("unsupported tunnel version {0}")]
    Version(u8),
    /// Reserved bits set.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// An inner frame kind we do not know.
    #[error("unknown inner frame kind 0x{0:02x}")]
    UnknownFrame(u8),
    /// Bytes after the end of an inner frame.
    #[error("{0} has trailing bytes")]
    Trailing(&'static str),
    /// A malformed address.
    #[error("bad address: {0}")]
    Addr(#[from] addr::AddrError),
}

/// A parsed outer packet; bodies borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Noise message 1 with MACs.
    Init {
        /// Initiator's session index.
        sender: u32,
        /// The Noise message.
        noise: &'a [u8],
        /// MAC over everything before it (proves knowledge of the responder's key).
        mac1: [u8; MAC_LEN],
        /// MAC with a cookie, or zeros.
        mac2: [u8; MAC_LEN],
    },
    /// Noise message 2 with MACs.
    Resp {
        /// Responder's session index.
        sender: u32,
        /// Initiator's session index.
        receiver: u32,
        /// The Noise message.
        noise: &'a [u8],
        /// As for Init.
        mac1: [u8; MAC_LEN],
        /// As for Init.
        mac2: [u8; MAC_LEN],
    },
    /// A cookie for a handshake that came under load.
    Cookie {
        /// The index of the handshake it answers.
        receiver: u32,
        /// XChaCha20 nonce.
        nonce: [u8; COOKIE_NONCE_LEN],
        /// Sealed cookie.
        sealed: &'a [u8],
    },
    /// An encrypted inner frame.
    Transport {
        /// Receiver's session index.
        receiver: u32,
        /// Nonce counter.
        counter: u64,
        /// The 16-byte header (associated data).
        header: &'a [u8],
        /// Ciphertext and tag.
        sealed: &'a [u8],
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn mac_at(b: &[u8], at: usize) -> [u8; MAC_LEN] {
    let mut m = [0u8; MAC_LEN];
    m.copy_from_slice(&b[at..at + MAC_LEN]);
    m
}

/// Offset of mac1 in a handshake packet of length `len`.
pub fn mac1_offset(len: usize) -> usize {
    len - 2 * MAC_LEN
}

/// Offset of mac2 in a handshake packet of length `len`.
pub fn mac2_offset(len: usize) -> usize {
    len - MAC_LEN
}

impl<'a> Packet<'a> {
    /// Parses an outer packet. Never panics.
    pub fn parse(b: &'a [u8]) -> Result<Self, FrameError> {
        if b.len() < 4 {
            return Err(FrameError::Truncated("tunnel header"));
        }
        if !matches!(b[0], HANDSHAKE_INIT..=TRANSPORT) {
            return Err(FrameError::UnknownType(b[0]));
        }
        if b[1] != VERSION {
            return Err(FrameError::Version(b[1]));
        }
        if b[2] != 0 || b[3] != 0 {
            return Err(FrameError::Reserved);
        }
        match b[0] {
            HANDSHAKE_INIT => {
                if b.len() < 8 + 2 * MAC_LEN + 1 {
                    return Err(FrameError::Truncated("HANDSHAKE_INIT"));
                }
                let m1 = mac1_offset(b.len());
                Ok(Packet::Init {
                    sender: u32_at(b, 4),
                    noise: &b[8..m1],
                    mac1: mac_at(b, m1),
                    mac2: mac_at(b, m1 + MAC_LEN),
                })
            }
            HANDSHAKE_RESP => {
                if b.len() < 12 + 2 * MAC_LEN + 1 {
                    return Err(FrameError::Truncated("HANDSHAKE_RESP"));
                }
                let m1 = mac1_offset(b.len());
                Ok(Packet::Resp {
                    sender: u32_at(b, 4),
                    receiver: u32_at(b, 8),
                    noise: &b[12..m1],
                    mac1: mac_at(b, m1),
                    mac2: mac_at(b, m1 + MAC_LEN),
                })
            }
            COOKIE_REPLY => {
                if b.len() != COOKIE_REPLY_LEN {
                    return Err(FrameError::Truncated("COOKIE_REPLY"));
                }
                let mut nonce = [0u8; COOKIE_NONCE_LEN];
                nonce.copy_from_slice(&b[8..8 + COOKIE_NONCE_LEN]);
                Ok(Packet::Cookie {
                    receiver: u32_at(b, 4),
                    nonce,
                    sealed: &b[8 + COOKIE_NONCE_LEN..],
                })
            }
            _ => {
                if b.len() < TRANSPORT_HEADER_LEN + TAG_LEN {
                    return Err(FrameError::Truncated("TRANSPORT"));
                }
                let mut c = [0u8; 8];
                c.copy_from_slice(&b[8..16]);
                Ok(Packet::Transport {
                    receiver: u32_at(b, 4),
                    counter: u64::from_be_bytes(c),
                    header: &b[..TRANSPORT_HEADER_LEN],
                    sealed: &b[TRANSPORT_HEADER_LEN..],
                })
            }
        }
    }
}

/// Writes the 4-byte common header.
pub fn emit_header(kind: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[kind, VERSION, 0, 0]);
}

/// The transport header for `receiver` and `counter`.
pub fn transport_header(receiver: u32, counter: u64) -> [u8; TRANSPORT_HEADER_LEN] {
    let mut h = [0u8; TRANSPORT_HEADER_LEN];
    h[0] = TRANSPORT;
    h[1] = VERSION;
    h[4..8].copy_from_slice(&receiver.to_be_bytes());
    h[8..16].copy_from_slice(&counter.to_be_bytes());
    h
}

/// A decrypted inner frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inner<'a> {
    /// No payload: keepalive / bubble.
    Keepalive,
    /// One IPv6 packet.
    Data(&'a [u8]),
    /// A path probe.
    Probe {
        /// Transaction id.
        tx: u64,
    },
    /// The answer to a probe.
    ProbeAnswer {
        /// The probe's transaction id.
        tx: u64,
        /// The source address the probe arrived from.
        observed: SocketAddr,
    },
    /// The peer closes the session.
    Close,
    /// The peer's flags and candidates changed (late candidates trickle this way).
    Advert(crate::handshake::Advert),
}

impl<'a> Inner<'a> {
    /// Parses a decrypted frame.
    pub fn parse(b: &'a [u8]) -> Result<Self, FrameError> {
        let Some(&first) = b.first() else {
            return Ok(Inner::Keepalive);
        };
        if first >> 4 == 6 {
            return Ok(Inner::Data(b));
        }
        let tx = || -> Result<u64, FrameError> {
            let t = b.get(1..9).ok_or(FrameError::Truncated("probe"))?;
            let mut a = [0u8; 8];
            a.copy_from_slice(t);
            Ok(u64::from_be_bytes(a))
        };
        match first {
            PROBE => {
                let tx = tx()?;
                if b.len() != 9 {
                    return Err(FrameError::Trailing("PROBE"));
                }
                Ok(Inner::Probe { tx })
            }
            PROBE_ANSWER => {
                let tx = tx()?;
                let (observed, n) = addr::parse(&b[9..])?;
                if 9 + n != b.len() {
                    return Err(FrameError::Trailing("PROBE_ANSWER"));
                }
                Ok(Inner::ProbeAnswer { tx, observed })
            }
            CLOSE if b.len() == 1 => Ok(Inner::Close),
            ADVERT => crate::handshake::parse_advert(&b[1..])
                .map(Inner::Advert)
                .map_err(|_| FrameError::Truncated("ADVERT")),
            CLOSE => Err(FrameError::Trailing("CLOSE")),
            other => Err(FrameError::UnknownFrame(other)),
        }
    }

    /// Appends the encoding.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Inner::Keepalive => {}
            Inner::Data(p) => out.extend_from_slice(p),
            Inner::Probe { tx } => {
                out.push(PROBE);
                out.extend_from_slice(&tx.to_be_bytes());
            }
            Inner::ProbeAnswer { tx, observed } => {
                out.push(PROBE_ANSWER);
                out.extend_from_slice(&tx.to_be_bytes());
                addr::emit(observed, out);
            }
            Inner::Close => out.push(CLOSE),
            Inner::Advert(a) => {
                out.push(ADVERT);
                crate::handshake::emit_advert(a, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inner_round_trips_and_vectors() {
        let mut v = Vec::new();
        Inner::ProbeAnswer {
            tx: 1,
            observed: "192.0.2.1:2".parse().unwrap(),
        }
        .emit(&mut v);
        assert_eq!(v, [2, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0, 2, 192, 0, 2, 1]);
        assert_eq!(
            Inner::parse(&v).unwrap(),
            Inner::ProbeAnswer {
                tx: 1,
                observed: "192.0.2.1:2".parse().unwrap()
            }
        );
        assert_eq!(Inner::parse(&[]).unwrap(), Inner::Keepalive);
        assert_eq!(
            Inner::parse(&[0x60, 0, 0]).unwrap(),
            Inner::Data(&[0x60, 0, 0])
        );
        assert_eq!(Inner::parse(&[3]).unwrap(), Inner::Close);
        assert!(Inner::parse(&[3, 0]).is_err());
        assert!(Inner::parse(&[1, 0, 0]).is_err());
        assert_eq!(
            Inner::parse(&[0x45]),
            Err(FrameError::UnknownFrame(0x45)),
            "IPv4 is not carried"
        );
    }

    #[test]
    fn transport_header_layout() {
        let h = transport_header(0x01020304, 5);
        assert_eq!(h, [0xD4, 1, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5]);
        let mut p = h.to_vec();
        p.extend_from_slice(&[0; 16]);
        assert!(matches!(
            Packet::parse(&p).unwrap(),
            Packet::Transport {
                receiver: 0x01020304,
                counter: 5,
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), t in 0xD0u8..0xE0) {
            let _ = Packet::parse(&bytes);
            let _ = Inner::parse(&bytes);
            let mut b = vec![t, VERSION, 0, 0];
            b.extend_from_slice(&bytes);
            let _ = Packet::parse(&b);
        }
    }
}
