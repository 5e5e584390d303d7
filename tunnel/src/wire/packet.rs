//! The outer tunnel packet: what travels in one UDP datagram (`docs/protocol.md` §"Handshake"
//! for the handshake packets, §"Transport" for TRANSPORT).
//!
//! Every packet starts with a 4-byte header, `type (u8) | version (u8) = 1 | reserved (u16) = 0`:
//!
//! ```text
//! 0xD1 HANDSHAKE_INIT  hdr | sender index (u32) | Noise IK message 1 | mac1 (16) | mac2 (16)
//! 0xD2 HANDSHAKE_RESP  hdr | sender index (u32) | receiver index (u32) | Noise message 2 | mac1 | mac2
//! 0xD3 COOKIE_REPLY    hdr | receiver index (u32) | nonce (24) | sealed cookie (16 + 16)
//! 0xD4 TRANSPORT       hdr | receiver index (u32) | counter (u64) | sealed inner frame (n + 16)
//! ```
//!
//! The MACs of the handshake packets are the last 32 bytes, so their offsets depend on the
//! packet's length ([`mac1_offset`], [`mac2_offset`]). The transport header (the first 16 bytes
//! of a TRANSPORT packet) is the AEAD's associated data. The cryptography that fills the MACs,
//! cookies and sealed parts lives in [`crate::handshake`] and [`crate::session`]; this module
//! only lays out bytes.

use crate::wire::{Reader, Trailing, Truncated};

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

/// Length of the common header (type, version, reserved).
pub const HEADER_LEN: usize = 4;
/// Offset of the type byte.
pub const TYPE: usize = 0;
/// Offset of the version byte.
pub const VERSION_OFFSET: usize = 1;
/// Offset of the first index (sender index of a handshake, receiver index otherwise).
pub const INDEX: usize = HEADER_LEN;
/// Offset of a HANDSHAKE_RESP's receiver index.
pub const RESP_RECEIVER: usize = INDEX + 4;
/// Offset of a TRANSPORT packet's counter.
pub const COUNTER: usize = INDEX + 4;
/// Offset of a COOKIE_REPLY's nonce.
pub const COOKIE_NONCE: usize = INDEX + 4;

/// Length of a MAC field.
pub const MAC_LEN: usize = 16;
/// A MAC field.
pub type Mac = [u8; MAC_LEN];
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Length of the transport header: common header, receiver index, counter.
pub const TRANSPORT_HEADER_LEN: usize = COUNTER + 8;
/// Cookie nonce length (XChaCha20-Poly1305).
pub const COOKIE_NONCE_LEN: usize = 24;
/// Length of a cookie in the clear.
pub const COOKIE_LEN: usize = 16;
/// Length of a sealed cookie: the cookie and its tag.
pub const SEALED_COOKIE_LEN: usize = COOKIE_LEN + TAG_LEN;
/// COOKIE_REPLY length.
pub const COOKIE_REPLY_LEN: usize = COOKIE_NONCE + COOKIE_NONCE_LEN + SEALED_COOKIE_LEN;

/// Whether `bytes` claim to be a tunnel packet (type byte `0xD0..=0xDF`): how a node's one UDP
/// port tells tunnel packets from rendezvous and STUN messages (`docs/protocol.md`
/// §"Demultiplexing one UDP port").
pub fn is_tunnel_packet(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0xD0..=0xDF))
}

/// Why an outer packet is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A field runs past the end of the datagram.
    #[error(transparent)]
    Truncated(#[from] Truncated),
    /// Bytes after the end of a fixed-length packet.
    #[error("{kind}: {trailing}")]
    Trailing {
        /// The packet type's name.
        kind: &'static str,
        /// How many bytes were left.
        trailing: Trailing,
    },
    /// Unknown type byte.
    #[error("unknown packet type 0x{0:02x}")]
    UnknownType(u8),
    /// Another version.
    #[error("unsupported tunnel version {0}")]
    Version(u8),
    /// Reserved bits set.
    #[error("reserved bytes are not zero")]
    Reserved,
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
        mac1: Mac,
        /// MAC with a cookie, or zeros.
        mac2: Mac,
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
        mac1: Mac,
        /// As for Init.
        mac2: Mac,
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

/// Offset of mac1 in a handshake packet of length `len` (at least `2 * MAC_LEN`).
pub fn mac1_offset(len: usize) -> usize {
    len - 2 * MAC_LEN
}

/// Offset of mac2 in a handshake packet of length `len` (at least `MAC_LEN`).
pub fn mac2_offset(len: usize) -> usize {
    len - MAC_LEN
}

/// Reads a Noise message (at least one byte) followed by mac1 and mac2, which end the packet.
fn noise_and_macs<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], Mac, Mac), Truncated> {
    let noise_len = r.remaining().saturating_sub(2 * MAC_LEN).max(1);
    let noise = r.take(noise_len, "Noise message")?;
    let mac1 = r.array("mac1")?;
    let mac2 = r.array("mac2")?;
    Ok((noise, mac1, mac2))
}

impl<'a> Packet<'a> {
    /// Parses an outer packet. Never panics.
    pub fn parse(b: &'a [u8]) -> Result<Self, PacketError> {
        let mut r = Reader::new(b);
        let kind = r.u8("packet type")?;
        if !matches!(kind, HANDSHAKE_INIT..=TRANSPORT) {
            return Err(PacketError::UnknownType(kind));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        if r.u16("reserved")? != 0 {
            return Err(PacketError::Reserved);
        }
        let packet = match kind {
            HANDSHAKE_INIT => {
                let sender = r.u32("sender index")?;
                let (noise, mac1, mac2) = noise_and_macs(&mut r)?;
                Packet::Init {
                    sender,
                    noise,
                    mac1,
                    mac2,
                }
            }
            HANDSHAKE_RESP => {
                let sender = r.u32("sender index")?;
                let receiver = r.u32("receiver index")?;
                let (noise, mac1, mac2) = noise_and_macs(&mut r)?;
                Packet::Resp {
                    sender,
                    receiver,
                    noise,
                    mac1,
                    mac2,
                }
            }
            COOKIE_REPLY => {
                let receiver = r.u32("receiver index")?;
                let nonce = r.array("cookie nonce")?;
                let sealed = r.take(SEALED_COOKIE_LEN, "sealed cookie")?;
                r.clone()
                    .finish()
                    .map_err(|trailing| PacketError::Trailing {
                        kind: "COOKIE_REPLY",
                        trailing,
                    })?;
                Packet::Cookie {
                    receiver,
                    nonce,
                    sealed,
                }
            }
            _ => {
                let receiver = r.u32("receiver index")?;
                let counter = r.u64("counter")?;
                if r.remaining() < TAG_LEN {
                    r.take(TAG_LEN, "AEAD tag")?;
                }
                // The fields just read, as the AEAD's associated data.
                let header = Reader::new(b).take(TRANSPORT_HEADER_LEN, "transport header")?;
                Packet::Transport {
                    receiver,
                    counter,
                    header,
                    sealed: r.rest(),
                }
            }
        };
        Ok(packet)
    }
}

impl Packet<'_> {
    /// Appends the encoding: the bytes this packet was parsed from (one encoding per packet).
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Init {
                sender,
                noise,
                mac1,
                mac2,
            } => {
                emit_init(*sender, noise, out);
                out.extend_from_slice(mac1);
                out.extend_from_slice(mac2);
            }
            Packet::Resp {
                sender,
                receiver,
                noise,
                mac1,
                mac2,
            } => {
                emit_resp(*sender, *receiver, noise, out);
                out.extend_from_slice(mac1);
                out.extend_from_slice(mac2);
            }
            Packet::Cookie {
                receiver,
                nonce,
                sealed,
            } => {
                emit_header(COOKIE_REPLY, out);
                out.extend_from_slice(&receiver.to_be_bytes());
                out.extend_from_slice(nonce);
                out.extend_from_slice(sealed);
            }
            Packet::Transport {
                receiver,
                counter,
                sealed,
                ..
            } => {
                out.extend_from_slice(&transport_header(*receiver, *counter));
                out.extend_from_slice(sealed);
            }
        }
    }
}

/// Appends the 4-byte common header.
fn emit_header(kind: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[kind, VERSION, 0, 0]);
}

/// Appends a HANDSHAKE_INIT up to its MACs (which [`crate::handshake`] computes over these
/// bytes and appends).
pub fn emit_init(sender: u32, noise: &[u8], out: &mut Vec<u8>) {
    out.reserve(INDEX + 4 + noise.len() + 2 * MAC_LEN);
    emit_header(HANDSHAKE_INIT, out);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(noise);
}

/// Appends a HANDSHAKE_RESP up to its MACs.
pub fn emit_resp(sender: u32, receiver: u32, noise: &[u8], out: &mut Vec<u8>) {
    out.reserve(RESP_RECEIVER + 4 + noise.len() + 2 * MAC_LEN);
    emit_header(HANDSHAKE_RESP, out);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(noise);
}

/// A COOKIE_REPLY ([`COOKIE_REPLY_LEN`] bytes).
pub fn cookie_reply(
    receiver: u32,
    nonce: &[u8; COOKIE_NONCE_LEN],
    sealed: &[u8; SEALED_COOKIE_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(COOKIE_REPLY_LEN);
    emit_header(COOKIE_REPLY, &mut out);
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(sealed);
    out
}

/// The transport header for `receiver` and `counter`.
pub fn transport_header(receiver: u32, counter: u64) -> [u8; TRANSPORT_HEADER_LEN] {
    let mut h = [0u8; TRANSPORT_HEADER_LEN];
    h[TYPE] = TRANSPORT;
    h[VERSION_OFFSET] = VERSION;
    h[INDEX..COUNTER].copy_from_slice(&receiver.to_be_bytes());
    h[COUNTER..TRANSPORT_HEADER_LEN].copy_from_slice(&counter.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn handshake_and_cookie_layouts() {
        let mut init = Vec::new();
        emit_init(0x0A0B0C0D, &[0xEE; 3], &mut init);
        init.extend_from_slice(&[1; MAC_LEN]);
        init.extend_from_slice(&[2; MAC_LEN]);
        assert_eq!(
            &init[..10],
            &[0xD1, 1, 0, 0, 0x0A, 0x0B, 0x0C, 0x0D, 0xEE, 0xEE]
        );
        assert_eq!(mac1_offset(init.len()), 11);
        assert_eq!(
            Packet::parse(&init).unwrap(),
            Packet::Init {
                sender: 0x0A0B0C0D,
                noise: &[0xEE; 3],
                mac1: [1; MAC_LEN],
                mac2: [2; MAC_LEN],
            }
        );

        let mut resp = Vec::new();
        emit_resp(7, 9, &[0xEE], &mut resp);
        resp.extend_from_slice(&[0; 2 * MAC_LEN]);
        assert_eq!(&resp[..13], &[0xD2, 1, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9, 0xEE]);
        assert!(matches!(
            Packet::parse(&resp).unwrap(),
            Packet::Resp {
                sender: 7,
                receiver: 9,
                ..
            }
        ));

        let reply = cookie_reply(5, &[3; COOKIE_NONCE_LEN], &[4; SEALED_COOKIE_LEN]);
        assert_eq!(reply.len(), 64);
        assert_eq!(&reply[..8], &[0xD3, 1, 0, 0, 0, 0, 0, 5]);
        assert_eq!(
            Packet::parse(&reply).unwrap(),
            Packet::Cookie {
                receiver: 5,
                nonce: [3; COOKIE_NONCE_LEN],
                sealed: &[4; SEALED_COOKIE_LEN],
            }
        );
    }

    #[test]
    fn truncation_and_trailing_bytes_name_the_field() {
        let mut init = Vec::new();
        emit_init(1, &[], &mut init);
        init.extend_from_slice(&[0; 2 * MAC_LEN]);
        // A Noise message of one byte at least: 32 bytes after the index are only the MACs.
        assert_eq!(
            Packet::parse(&init),
            Err(PacketError::Truncated(Truncated {
                field: "mac2",
                need: MAC_LEN,
                have: MAC_LEN - 1
            }))
        );
        assert_eq!(
            Packet::parse(&[0xD1, 1, 0, 0, 0, 0]),
            Err(PacketError::Truncated(Truncated {
                field: "sender index",
                need: 4,
                have: 2
            }))
        );
        let mut reply = cookie_reply(5, &[3; COOKIE_NONCE_LEN], &[4; SEALED_COOKIE_LEN]);
        reply.push(0);
        assert_eq!(
            Packet::parse(&reply),
            Err(PacketError::Trailing {
                kind: "COOKIE_REPLY",
                trailing: Trailing(1)
            })
        );
        reply.truncate(COOKIE_REPLY_LEN - 1);
        assert!(matches!(
            Packet::parse(&reply),
            Err(PacketError::Truncated(Truncated {
                field: "sealed cookie",
                ..
            }))
        ));
        let short = transport_header(1, 1);
        assert!(matches!(
            Packet::parse(&short),
            Err(PacketError::Truncated(Truncated {
                field: "AEAD tag",
                ..
            }))
        ));
        assert_eq!(
            Packet::parse(&[0xD4, 2, 0, 0]),
            Err(PacketError::Version(2))
        );
        assert_eq!(Packet::parse(&[0xD4, 1, 0, 1]), Err(PacketError::Reserved));
        assert_eq!(Packet::parse(&[0xD5]), Err(PacketError::UnknownType(0xD5)));
    }

    proptest! {
        #[test]
        fn whatever_parses_re_encodes_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), t in 0xD0u8..0xE0) {
            let mut b = vec![t, VERSION, 0, 0];
            b.extend_from_slice(&bytes);
            for input in [&bytes, &b] {
                if let Ok(p) = Packet::parse(input) {
                    let mut out = Vec::new();
                    p.emit(&mut out);
                    prop_assert_eq!(&out, input);
                }
            }
        }
    }
}
