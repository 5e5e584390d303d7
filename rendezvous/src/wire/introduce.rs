//! Forwarding one introduction: INTRODUCE, INTRO_ACK and INTRO_FWD (`docs/protocol.md`
//! §"Rendezvous messages (version 2)", and rule 3 of §"Server rules").
//!
//! ```text
//! INTRODUCE (0xC4), 91 to 1190 bytes:
//! 0        10             42           58                    90
//! | header | node id (32) | token (16) | target node id (32) | payload (1..=1100) |
//!
//! INTRO_ACK (0xC5), 11 bytes, or 18 / 30 with the target's address when forwarded:
//! 0        10            11
//! | header | status (u8) | [target's observed address (7 or 19)] |
//!
//! INTRO_FWD (0xC6), 50 + address + payload:
//! 0        10                        42
//! | header | introducer node id (32) | introducer's observed address | payload (1..=1100) |
//! ```

use std::net::SocketAddr;

use shipworm_tunnel::identity::NODE_ID_LEN;
use shipworm_tunnel::wire::{addr, Reader};

use super::header::HEADER_LEN;
use super::register::TOKEN_LEN;
use super::{ParseError, RawNodeId};

/// Largest introduction payload (a Noise message 1 with candidates fits with room to spare).
/// Chosen so that the forwarded message stays within 1232 bytes, the IPv6 minimum MTU less headers.
pub const MAX_INTRO_PAYLOAD: usize = 1100;

fn payload<'a>(
    r: Reader<'a>,
    name: &'static str,
    expected: &'static str,
) -> Result<&'a [u8], ParseError> {
    super::payload(r, MAX_INTRO_PAYLOAD, name, expected)
}

/// INTRODUCE (0xC4): forward this payload to that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduce<'a> {
    /// Transaction id.
    pub tx: u64,
    /// The sender.
    pub node: RawNodeId,
    /// The sender's token.
    pub token: [u8; TOKEN_LEN],
    /// Whom to introduce the sender to.
    pub target: RawNodeId,
    /// Opaque to the server (a Noise message 1).
    pub payload: &'a [u8],
}

impl<'a> Introduce<'a> {
    /// Offset of the sender's node id.
    pub const NODE_OFFSET: usize = HEADER_LEN;
    /// Offset of the sender's token.
    pub const TOKEN_OFFSET: usize = Self::NODE_OFFSET + NODE_ID_LEN;
    /// Offset of the target's node id.
    pub const TARGET_OFFSET: usize = Self::TOKEN_OFFSET + TOKEN_LEN;
    /// Offset of the payload; also the length without it.
    pub const FIXED_LEN: usize = Self::TARGET_OFFSET + NODE_ID_LEN;

    /// Reads the body (the reader stands after a header carrying `tx`); the payload is the rest.
    pub fn parse(tx: u64, mut r: Reader<'a>) -> Result<Self, ParseError> {
        Ok(Self {
            tx,
            node: r.array("INTRODUCE node id")?,
            token: r.array("INTRODUCE token")?,
            target: r.array("INTRODUCE target")?,
            payload: payload(r, "INTRODUCE", "91 to 1190")?,
        })
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node);
        out.extend_from_slice(&self.token);
        out.extend_from_slice(&self.target);
        out.extend_from_slice(self.payload);
    }
}

/// What the server did with an INTRODUCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IntroStatus {
    /// Forwarded once to the target's registered address.
    Forwarded = 0,
    /// The target is not registered here.
    UnknownPeer = 1,
    /// The sender sent too many introductions; retry later.
    SenderRateLimited = 2,
    /// The target received too many introductions; retry later.
    TargetRateLimited = 3,
}

impl IntroStatus {
    fn from_u8(value: u8) -> Result<Self, ParseError> {
        Ok(match value {
            0 => Self::Forwarded,
            1 => Self::UnknownPeer,
            2 => Self::SenderRateLimited,
            3 => Self::TargetRateLimited,
            value => {
                return Err(ParseError::Value {
                    field: "INTRO_ACK status",
                    value,
                })
            }
        })
    }
}

/// INTRO_ACK (0xC5): what became of an INTRODUCE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroAck {
    /// Transaction id of the INTRODUCE.
    pub tx: u64,
    /// What happened.
    pub status: IntroStatus,
    /// The target's registered address (with `Forwarded` only).
    pub target_addr: Option<SocketAddr>,
}

impl IntroAck {
    /// Offset of the status byte.
    pub const STATUS_OFFSET: usize = HEADER_LEN;
    /// Offset of the optional target address, which ends the message.
    pub const TARGET_OFFSET: usize = Self::STATUS_OFFSET + 1;

    /// Reads the body (the reader stands after a header carrying `tx`); rejects trailing bytes.
    pub fn parse(tx: u64, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let status = IntroStatus::from_u8(r.u8("INTRO_ACK status")?)?;
        let target_addr = match (status, r.remaining()) {
            (_, 0) => None,
            (IntroStatus::Forwarded, _) => Some(r.addr()?),
            (_, _) => {
                return Err(ParseError::Length {
                    name: "INTRO_ACK",
                    expected: "11 unless forwarded",
                    got: r.position() + r.remaining(),
                })
            }
        };
        r.finish()?;
        Ok(Self {
            tx,
            status,
            target_addr,
        })
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.status as u8);
        if let Some(a) = &self.target_addr {
            addr::emit(a, out);
        }
    }
}

/// INTRO_FWD (0xC6): an introduction from another node. Its transaction id is always 0: a
/// transaction id reaches only the node that chose it (it is what authenticates the replies to
/// that node), so the introducer's is never passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroFwd<'a> {
    /// Transaction id: 0 (the server never passes on the introducer's).
    pub tx: u64,
    /// Who introduces itself (unauthenticated here: the payload proves it).
    pub from: RawNodeId,
    /// Its address as the server observes it.
    pub from_addr: SocketAddr,
    /// The payload, unchanged.
    pub payload: &'a [u8],
}

impl<'a> IntroFwd<'a> {
    /// Offset of the introducer's node id.
    pub const FROM_OFFSET: usize = HEADER_LEN;
    /// Offset of the introducer's address; the payload follows it.
    pub const FROM_ADDR_OFFSET: usize = Self::FROM_OFFSET + NODE_ID_LEN;

    /// Reads the body (the reader stands after a header carrying `tx`); the payload is the rest.
    pub fn parse(tx: u64, mut r: Reader<'a>) -> Result<Self, ParseError> {
        Ok(Self {
            tx,
            from: r.array("INTRO_FWD node id")?,
            from_addr: r.addr()?,
            payload: payload(r, "INTRO_FWD", "payload of 1 to 1100")?,
        })
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.from);
        addr::emit(&self.from_addr, out);
        out.extend_from_slice(self.payload);
    }
}
