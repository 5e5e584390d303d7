//! Keeping a registration: REGISTER, REFRESH and REGISTERED (`docs/protocol.md`
//! §"Rendezvous messages (version 1)": the table, and the REGISTER signature, timestamp and token
//! rules below it).
//!
//! ```text
//! REGISTER   (0xC1), 114 bytes:
//! 0        10             42                  50                         114
//! | header | node id (32) | timestamp ms (u64) | ed25519 signature (64)  |
//!
//! REFRESH    (0xC2), 58 bytes:
//! 0        10             42           58
//! | header | node id (32) | token (16) |
//!
//! REGISTERED (0xC3), 37 (IPv4) or 49 (IPv6) bytes:
//! 0        10              12                  14           30
//! | header | lifetime s (u16) | alt STUN port (u16) | token (16) | observed address (7 or 19) |
//! ```

use std::net::SocketAddr;

use shipworm_tunnel::identity::{Identity, NodeId, NODE_ID_LEN, SIGNATURE_LEN};
use shipworm_tunnel::wire::{addr, Reader};

use super::header::{kind, Header, HEADER_LEN};
use super::{ParseError, RawNodeId};

/// Length of the refresh token handed out in [`Registered`].
pub const TOKEN_LEN: usize = 16;
/// Domain separation for REGISTER signatures.
pub const REGISTER_SIGNING_CONTEXT: &[u8] = b"shipworm rendezvous register v1\0";

/// REGISTER (0xC1): a registration signed by the node's key.
/// The signature covers [`REGISTER_SIGNING_CONTEXT`] followed by the bytes before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// Transaction id, echoed in the reply.
    pub tx: u64,
    /// The registering node.
    pub node: RawNodeId,
    /// Sender's wall clock in ms since the Unix epoch; must be fresh and increasing.
    pub timestamp_ms: u64,
    /// Signature by `node`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Register {
    /// Offset of the node id.
    pub const NODE_OFFSET: usize = HEADER_LEN;
    /// Offset of the timestamp.
    pub const TIMESTAMP_OFFSET: usize = Self::NODE_OFFSET + NODE_ID_LEN;
    /// Offset of the signature; the signed bytes are everything before it.
    pub const SIGNATURE_OFFSET: usize = Self::TIMESTAMP_OFFSET + 8;
    /// Encoded length.
    pub const LEN: usize = Self::SIGNATURE_OFFSET + SIGNATURE_LEN;

    /// A REGISTER signed by `identity`.
    pub fn signed(identity: &Identity, tx: u64, timestamp_ms: u64) -> Self {
        let mut r = Self {
            tx,
            node: *identity.node_id().as_bytes(),
            timestamp_ms,
            signature: [0; SIGNATURE_LEN],
        };
        r.signature = identity.sign(&r.signed_bytes());
        r
    }

    /// The signing context followed by the message up to the signature.
    fn signed_bytes(&self) -> [u8; REGISTER_SIGNING_CONTEXT.len() + Self::SIGNATURE_OFFSET] {
        let mut out = [0u8; REGISTER_SIGNING_CONTEXT.len() + Self::SIGNATURE_OFFSET];
        let (ctx, msg) = out.split_at_mut(REGISTER_SIGNING_CONTEXT.len());
        ctx.copy_from_slice(REGISTER_SIGNING_CONTEXT);
        let header = Header {
            kind: kind::REGISTER,
            tx: self.tx,
        };
        msg[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        msg[Self::NODE_OFFSET..Self::TIMESTAMP_OFFSET].copy_from_slice(&self.node);
        msg[Self::TIMESTAMP_OFFSET..Self::SIGNATURE_OFFSET]
            .copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }

    /// Checks the signature; on success returns the proven NodeId.
    pub fn verify(&self) -> Option<NodeId> {
        let node = NodeId::from_bytes(&self.node).ok()?;
        node.verify(&self.signed_bytes(), &self.signature)
            .then_some(node)
    }

    /// Reads the body (the reader stands after a header carrying `tx`); rejects trailing bytes.
    pub fn parse(tx: u64, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let m = Self {
            tx,
            node: r.array("REGISTER node id")?,
            timestamp_ms: r.u64("REGISTER timestamp")?,
            signature: r.array("REGISTER signature")?,
        };
        r.finish()?;
        Ok(m)
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }
}

/// REFRESH (0xC2): extends a registration without a signature. The token is bound to the node and
/// the address the server observed, so a refresh from any other address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// Transaction id.
    pub tx: u64,
    /// The node.
    pub node: RawNodeId,
    /// The token from the last [`Registered`].
    pub token: [u8; TOKEN_LEN],
}

impl Refresh {
    /// Offset of the node id.
    pub const NODE_OFFSET: usize = HEADER_LEN;
    /// Offset of the token.
    pub const TOKEN_OFFSET: usize = Self::NODE_OFFSET + NODE_ID_LEN;
    /// Encoded length.
    pub const LEN: usize = Self::TOKEN_OFFSET + TOKEN_LEN;

    /// Reads the body (the reader stands after a header carrying `tx`); rejects trailing bytes.
    pub fn parse(tx: u64, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let m = Self {
            tx,
            node: r.array("REFRESH node id")?,
            token: r.array("REFRESH token")?,
        };
        r.finish()?;
        Ok(m)
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node);
        out.extend_from_slice(&self.token);
    }
}

/// REGISTERED (0xC3): the registration is accepted; the node's observed address and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Transaction id of the request.
    pub tx: u64,
    /// Seconds until the registration expires unless refreshed.
    pub lifetime_s: u16,
    /// Port of the server's second STUN socket (same IP), for mapping-behaviour checks.
    pub alt_stun_port: u16,
    /// Token for REFRESH and INTRODUCE from this address.
    pub token: [u8; TOKEN_LEN],
    /// The node's address as the server saw it.
    pub observed: SocketAddr,
}

impl Registered {
    /// Offset of the lifetime.
    pub const LIFETIME_OFFSET: usize = HEADER_LEN;
    /// Offset of the alternate STUN port.
    pub const ALT_PORT_OFFSET: usize = Self::LIFETIME_OFFSET + 2;
    /// Offset of the token.
    pub const TOKEN_OFFSET: usize = Self::ALT_PORT_OFFSET + 2;
    /// Offset of the observed address, which ends the message.
    pub const OBSERVED_OFFSET: usize = Self::TOKEN_OFFSET + TOKEN_LEN;

    /// Reads the body (the reader stands after a header carrying `tx`); rejects trailing bytes.
    pub fn parse(tx: u64, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let m = Self {
            tx,
            lifetime_s: r.u16("REGISTERED lifetime")?,
            alt_stun_port: r.u16("REGISTERED alternate STUN port")?,
            token: r.array("REGISTERED token")?,
            observed: r.addr()?,
        };
        r.finish()?;
        Ok(m)
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.lifetime_s.to_be_bytes());
        out.extend_from_slice(&self.alt_stun_port.to_be_bytes());
        out.extend_from_slice(&self.token);
        addr::emit(&self.observed, out);
    }
}
