//! Keeping a registration: REGISTER, REFRESH, REGISTERED and RETRY (`docs/protocol.md`
//! §"Rendezvous messages (version 2)": the table, and the REGISTER signature, timestamp and token
//! rules below it).
//!
//! ```text
//! REGISTER   (0xC1), 121 or 133 bytes (server address IPv4 or IPv6), 16 more with a cookie:
//! 0        10             42                  50                     50 + a
//! | header | node id (32) | timestamp ms (u64) | server address (a) | ed25519 signature (64) | [cookie (16)] |
//!
//! REFRESH    (0xC2), 58 bytes:
//! 0        10             42           58
//! | header | node id (32) | token (16) |
//!
//! REGISTERED (0xC3), 37 (IPv4) or 49 (IPv6) bytes, one more with flags:
//! 0        10              12                  14           30
//! | header | lifetime s (u16) | alt STUN port (u16) | token (16) | observed address (7 or 19) | [flags (u8)] |
//!
//! The flags byte is present only when a flag is set (one encoding per value: a zero byte is
//! refused); bit 0 ([`REGISTERED_RELAY`]) says the server relays for this node.
//!
//! RETRY      (0xC8), 26 bytes:
//! 0        10           26
//! | header | cookie (16) |
//! ```
//!
//! The server address is the one the node sent the REGISTER to (IPv4-mapped IPv6 written as
//! IPv4); the signature covers it, so a REGISTER signed for one server is worthless at another.
//! The cookie is not signed: it is the server's own return-routability proof (a keyed hash of the
//! source address), handed out in RETRY when the server is under load and appended to the same
//! REGISTER unchanged.

use std::net::SocketAddr;

use shipworm_tunnel::identity::{Identity, NodeId, NODE_ID_LEN, SIGNATURE_LEN};
use shipworm_tunnel::wire::{addr, Reader};

use super::header::{kind, Header, HEADER_LEN};
use super::{ParseError, RawNodeId};

/// Length of the refresh token handed out in [`Registered`].
pub const TOKEN_LEN: usize = 16;
/// REGISTERED flag: this server relays tunnel packets for the registered node (RELAY, RELAYED).
pub const REGISTERED_RELAY: u8 = 0x01;
/// Every REGISTERED flag this version defines.
const REGISTERED_FLAGS: u8 = REGISTERED_RELAY;
/// Length of the return-routability cookie handed out in [`Retry`].
pub const COOKIE_LEN: usize = 16;
/// Domain separation for REGISTER signatures (version 2: the server address is signed).
pub const REGISTER_SIGNING_CONTEXT: &[u8] = b"shipworm rendezvous register v2\0";

/// REGISTER (0xC1): a registration signed by the node's key, for one server address.
/// The signature covers [`REGISTER_SIGNING_CONTEXT`] followed by the bytes before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// Transaction id, echoed in the reply.
    pub tx: u64,
    /// The registering node.
    pub node: RawNodeId,
    /// Sender's wall clock in ms since the Unix epoch; must be fresh and increasing.
    pub timestamp_ms: u64,
    /// The server address this REGISTER is for (normalised: IPv4 as IPv4).
    pub server: SocketAddr,
    /// Signature by `node`.
    pub signature: [u8; SIGNATURE_LEN],
    /// The server's cookie from a [`Retry`], if it asked for one (not signed).
    pub cookie: Option<[u8; COOKIE_LEN]>,
}

/// The longest signed part: context, header, node id, timestamp, IPv6 server address.
const MAX_SIGNED: usize = REGISTER_SIGNING_CONTEXT.len() + Register::SERVER_OFFSET + addr::MAX_LEN;

impl Register {
    /// Offset of the node id.
    pub const NODE_OFFSET: usize = HEADER_LEN;
    /// Offset of the timestamp.
    pub const TIMESTAMP_OFFSET: usize = Self::NODE_OFFSET + NODE_ID_LEN;
    /// Offset of the server address; the signature follows it.
    pub const SERVER_OFFSET: usize = Self::TIMESTAMP_OFFSET + 8;
    /// Shortest encoding (IPv4 server address, no cookie).
    pub const MIN_LEN: usize = Self::SERVER_OFFSET + addr::V4_LEN + SIGNATURE_LEN;
    /// Longest encoding (IPv6 server address and a cookie).
    pub const MAX_LEN: usize = Self::SERVER_OFFSET + addr::V6_LEN + SIGNATURE_LEN + COOKIE_LEN;

    /// A REGISTER for `server`, signed by `identity`.
    pub fn signed(identity: &Identity, tx: u64, timestamp_ms: u64, server: SocketAddr) -> Self {
        let mut r = Self {
            tx,
            node: *identity.node_id().as_bytes(),
            timestamp_ms,
            server: addr::normalize(server),
            signature: [0; SIGNATURE_LEN],
            cookie: None,
        };
        let (signed, len) = r.signed_bytes();
        r.signature = identity.sign(&signed[..len]);
        r
    }

    /// The same REGISTER carrying `cookie` (the signature stays valid: the cookie is not signed).
    pub fn with_cookie(mut self, cookie: [u8; COOKIE_LEN]) -> Self {
        self.cookie = Some(cookie);
        self
    }

    /// The signing context followed by the message up to the signature, and its length.
    fn signed_bytes(&self) -> ([u8; MAX_SIGNED], usize) {
        let mut out = [0u8; MAX_SIGNED];
        let (ctx, msg) = out.split_at_mut(REGISTER_SIGNING_CONTEXT.len());
        ctx.copy_from_slice(REGISTER_SIGNING_CONTEXT);
        let header = Header {
            kind: kind::REGISTER,
            tx: self.tx,
        };
        msg[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        msg[Self::NODE_OFFSET..Self::TIMESTAMP_OFFSET].copy_from_slice(&self.node);
        msg[Self::TIMESTAMP_OFFSET..Self::SERVER_OFFSET]
            .copy_from_slice(&self.timestamp_ms.to_be_bytes());
        let (server, n) = addr::encode(&self.server);
        msg[Self::SERVER_OFFSET..Self::SERVER_OFFSET + n].copy_from_slice(&server[..n]);
        (
            out,
            REGISTER_SIGNING_CONTEXT.len() + Self::SERVER_OFFSET + n,
        )
    }

    /// Checks the signature; on success returns the proven NodeId.
    pub fn verify(&self) -> Option<NodeId> {
        let node = NodeId::from_bytes(&self.node).ok()?;
        let (signed, len) = self.signed_bytes();
        node.verify(&signed[..len], &self.signature).then_some(node)
    }

    /// Reads the body (the reader stands after a header carrying `tx`); rejects trailing bytes.
    pub fn parse(tx: u64, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let node = r.array("REGISTER node id")?;
        let timestamp_ms = r.u64("REGISTER timestamp")?;
        let server = r.addr()?;
        let signature = r.array("REGISTER signature")?;
        let cookie = match r.remaining() {
            0 => None,
            _ => Some(r.array("REGISTER cookie")?),
        };
        r.finish()?;
        Ok(Self {
            tx,
            node,
            timestamp_ms,
            server,
            signature,
            cookie,
        })
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        addr::emit(&self.server, out);
        out.extend_from_slice(&self.signature);
        if let Some(c) = &self.cookie {
            out.extend_from_slice(c);
        }
    }
}

/// RETRY (0xC8): the server is under load and asks for the REGISTER again with this cookie, which
/// proves that the sender receives at its source address. Never larger than a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Transaction id of the REGISTER.
    pub tx: u64,
    /// The cookie to append.
    pub cookie: [u8; COOKIE_LEN],
}

impl Retry {
    /// Offset of the cookie.
    pub const COOKIE_OFFSET: usize = HEADER_LEN;
    /// Encoded length.
    pub const LEN: usize = Self::COOKIE_OFFSET + COOKIE_LEN;

    /// Reads the body (the reader stands after a header carrying `tx`); rejects trailing bytes.
    pub fn parse(tx: u64, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let m = Self {
            tx,
            cookie: r.array("RETRY cookie")?,
        };
        r.finish()?;
        Ok(m)
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cookie);
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
    /// Flags ([`REGISTERED_RELAY`]); 0 when the byte is absent.
    pub flags: u8,
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
            flags: match r.remaining() {
                0 => 0,
                _ => match r.u8("REGISTERED flags")? {
                    f if f != 0 && f & !REGISTERED_FLAGS == 0 => f,
                    value => {
                        return Err(ParseError::Value {
                            field: "REGISTERED flags",
                            value,
                        })
                    }
                },
            },
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
        if self.flags != 0 {
            out.push(self.flags);
        }
    }

    /// Whether the server relays for us.
    pub fn relay(&self) -> bool {
        self.flags & REGISTERED_RELAY != 0
    }
}
