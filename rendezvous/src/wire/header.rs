//! The header every rendezvous message starts with (`docs/protocol.md`
//! §"Rendezvous messages (version 2)"):
//!
//! ```text
//! 0        1          2                          10
//! | type   | version  | transaction id (u64 BE)  | body ...
//! ```
//!
//! Types live in `0xC0..=0xCF`, so a message can never be mistaken for STUN (whose first two bits
//! are zero) or for a tunnel frame (`0xD0..=0xDF`); see §"Demultiplexing one UDP port".

use shipworm_tunnel::wire::Reader;

use super::ParseError;

/// The protocol version this crate speaks. Version 2 (issue 10): REGISTER signs the server
/// address and may carry a cookie, RETRY exists, INTRO_FWD no longer carries the introducer's
/// transaction id. A version-1 REGISTER is answered with ERROR `UnsupportedVersion`.
pub const VERSION: u8 = 2;
/// Offset of the type byte.
pub const KIND_OFFSET: usize = 0;
/// Offset of the version byte.
pub const VERSION_OFFSET: usize = 1;
/// Offset of the transaction id.
pub const TX_OFFSET: usize = 2;
/// Length of the header; the body starts here.
pub const HEADER_LEN: usize = TX_OFFSET + 8;

/// Message type bytes.
pub mod kind {
    /// Node → server: signed registration.
    pub const REGISTER: u8 = 0xC1;
    /// Node → server: cheap refresh with the token of an earlier registration.
    pub const REFRESH: u8 = 0xC2;
    /// Server → node: registration accepted; observed address and token.
    pub const REGISTERED: u8 = 0xC3;
    /// Node → server: forward this payload to that node.
    pub const INTRODUCE: u8 = 0xC4;
    /// Server → node: what became of an INTRODUCE.
    pub const INTRO_ACK: u8 = 0xC5;
    /// Server → node: an introduction from another node.
    pub const INTRO_FWD: u8 = 0xC6;
    /// Server → node: a request was refused.
    pub const ERROR: u8 = 0xC7;
    /// Server → node: under load; send the REGISTER again with this cookie.
    pub const RETRY: u8 = 0xC8;
    /// Node → relay: carry this tunnel packet to that node (the relay role, `--relay`).
    pub const RELAY: u8 = 0xC9;
    /// Relay → node: a tunnel packet from that node.
    pub const RELAYED: u8 = 0xCA;

    /// The type bytes of version 2.
    pub(crate) const KNOWN: std::ops::RangeInclusive<u8> = REGISTER..=RELAYED;
}

/// Whether `bytes` claim to be a rendezvous message (type byte `0xC0..=0xCF`).
pub fn is_rendezvous_message(bytes: &[u8]) -> bool {
    matches!(bytes.get(KIND_OFFSET), Some(0xC0..=0xCF))
}

/// Reads the transaction id of anything with a full header, for replying to what failed to parse.
pub fn peek_tx(bytes: &[u8]) -> Option<u64> {
    let tx = bytes.get(TX_OFFSET..HEADER_LEN)?;
    Reader::new(tx).u64("transaction id").ok()
}

/// A header of a version-2 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The type byte ([`kind`]).
    pub kind: u8,
    /// Transaction id: chosen by the requester, echoed in the reply.
    pub tx: u64,
}

impl Header {
    /// Reads the header. Checked in this order: length, type, version (so a type this version
    /// does not define is reported as unknown whatever version the packet claims).
    pub fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        if r.remaining() < HEADER_LEN {
            return Err(ParseError::Short);
        }
        let kind = r.u8("type")?;
        if !kind::KNOWN.contains(&kind) {
            return Err(ParseError::UnknownType(kind));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(ParseError::Version(version));
        }
        Ok(Self {
            kind,
            tx: r.u64("transaction id")?,
        })
    }

    /// Appends the header (with [`VERSION`]) to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        out.push(VERSION);
        out.extend_from_slice(&self.tx.to_be_bytes());
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[KIND_OFFSET] = self.kind;
        out[VERSION_OFFSET] = VERSION;
        out[TX_OFFSET..HEADER_LEN].copy_from_slice(&self.tx.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_order_of_checks() {
        let h = Header {
            kind: kind::REFRESH,
            tx: 0x0102030405060708,
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes, [0xC2, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut v = Vec::new();
        h.emit(&mut v);
        assert_eq!(v, bytes);
        assert_eq!(Header::parse(&mut Reader::new(&bytes)), Ok(h));
        assert_eq!(peek_tx(&bytes), Some(0x0102030405060708));
        assert_eq!(peek_tx(&bytes[..9]), None);
        assert_eq!(
            Header::parse(&mut Reader::new(&bytes[..9])),
            Err(ParseError::Short)
        );
        let mut other = bytes;
        other[VERSION_OFFSET] = 1;
        assert_eq!(
            Header::parse(&mut Reader::new(&other)),
            Err(ParseError::Version(1))
        );
        other[KIND_OFFSET] = 0xCF;
        assert_eq!(
            Header::parse(&mut Reader::new(&other)),
            Err(ParseError::UnknownType(0xCF))
        );
        assert!(is_rendezvous_message(&other) && !is_rendezvous_message(&[0xD0]));
    }
}
