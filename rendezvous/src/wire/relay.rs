//! The relay role's two messages: RELAY and RELAYED (`docs/protocol.md` §"Relaying").
//!
//! ```text
//! RELAY (0xC9), 91 to 1542 bytes:
//! 0        10             42           58                    90
//! | header | node id (32) | token (16) | target node id (32) | tunnel packet (1..=1452) |
//!
//! RELAYED (0xCA), 43 to 1494 bytes:
//! 0        10                    42
//! | header | sender node id (32) | tunnel packet (1..=1452) |
//! ```
//!
//! RELAY has INTRODUCE's layout: the sender proves its registration with the token the server
//! handed to its registered address. The transaction id is not used (0). RELAYED is always
//! 48 bytes shorter than the RELAY it forwards, so a relay never sends more than it received.
//! The packet is an end-to-end authenticated tunnel datagram: the relay reads none of it.

use shipworm_tunnel::identity::NODE_ID_LEN;
use shipworm_tunnel::wire::Reader;

use super::header::HEADER_LEN;
use super::register::TOKEN_LEN;
use super::{ParseError, RawNodeId};

/// Largest tunnel packet a relay carries: a full-size transport frame of a 1400-byte inner MTU
/// with room to spare, so that RELAY stays within 1542 bytes.
pub const MAX_RELAY_PAYLOAD: usize = 1452;

fn packet<'a>(
    r: Reader<'a>,
    name: &'static str,
    expected: &'static str,
) -> Result<&'a [u8], ParseError> {
    super::payload(r, MAX_RELAY_PAYLOAD, name, expected)
}

/// RELAY (0xC9): carry this tunnel packet to that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay<'a> {
    /// Transaction id (unused: 0).
    pub tx: u64,
    /// The sender.
    pub node: RawNodeId,
    /// The sender's token (from REGISTERED at this address).
    pub token: [u8; TOKEN_LEN],
    /// Whom the packet is for.
    pub target: RawNodeId,
    /// The tunnel packet.
    pub packet: &'a [u8],
}

impl<'a> Relay<'a> {
    /// Offset of the packet; also the length without it.
    pub const FIXED_LEN: usize = HEADER_LEN + NODE_ID_LEN + TOKEN_LEN + NODE_ID_LEN;

    /// Reads the body (the reader stands after a header carrying `tx`); the packet is the rest.
    pub fn parse(tx: u64, mut r: Reader<'a>) -> Result<Self, ParseError> {
        Ok(Self {
            tx,
            node: r.array("RELAY node id")?,
            token: r.array("RELAY token")?,
            target: r.array("RELAY target")?,
            packet: packet(r, "RELAY", "91 to 1542")?,
        })
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node);
        out.extend_from_slice(&self.token);
        out.extend_from_slice(&self.target);
        out.extend_from_slice(self.packet);
    }
}

/// RELAYED (0xCA): a tunnel packet from that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed<'a> {
    /// Transaction id (0).
    pub tx: u64,
    /// The sender, as the relay authenticated it (its registration).
    pub from: RawNodeId,
    /// The tunnel packet.
    pub packet: &'a [u8],
}

impl<'a> Relayed<'a> {
    /// Offset of the packet; also the length without it.
    pub const FIXED_LEN: usize = HEADER_LEN + NODE_ID_LEN;

    /// Reads the body (the reader stands after a header carrying `tx`); the packet is the rest.
    pub fn parse(tx: u64, mut r: Reader<'a>) -> Result<Self, ParseError> {
        Ok(Self {
            tx,
            from: r.array("RELAYED sender")?,
            packet: packet(r, "RELAYED", "43 to 1494")?,
        })
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.from);
        out.extend_from_slice(self.packet);
    }
}
