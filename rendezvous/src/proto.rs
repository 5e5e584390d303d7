//! The rendezvous wire protocol, version 1 (`docs/protocol.md` §"Rendezvous messages").
//!
//! Every message starts with the same 10-byte header:
//!
//! ```text
//! 0        1          2                      10
//! | type   | version  | transaction id (u64 BE) | body ...
//! ```
//!
//! Types live in `0xC0..=0xCF`, so a message can never be mistaken for STUN (whose first two bits
//! are zero) or for a tunnel frame (`0xD0..=0xDF`). All integers are big-endian. A message with a
//! wrong length for its type, or with bytes after its end, is rejected.

use std::net::SocketAddr;

use shipworm_tunnel::identity::{Identity, NodeId, NODE_ID_LEN, SIGNATURE_LEN};
use shipworm_tunnel::wire::addr::{self, AddrError};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 10;
/// Length of the refresh token handed out in [`Registered`].
pub const TOKEN_LEN: usize = 16;
/// Largest introduction payload (a Noise message 1 with candidates fits with room to spare).
/// Chosen so that the forwarded message stays within 1232 bytes, the IPv6 minimum MTU less headers.
pub const MAX_INTRO_PAYLOAD: usize = 1100;
/// Domain separation for REGISTER signatures.
pub const REGISTER_SIGNING_CONTEXT: &[u8] = b"shipworm rendezvous register v1\0";

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
}

/// A raw NodeId as it travels: only REGISTER's signature check proves it is a key.
pub type RawNodeId = [u8; NODE_ID_LEN];

/// Whether `bytes` claim to be a rendezvous message (type byte `0xC0..=0xCF`).
pub fn is_rendezvous_message(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0xC0..=0xCF))
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the header.
    #[error("message shorter than the {HEADER_LEN}-byte header")]
    Short,
    /// Type byte we do not know.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// A version we do not speak.
    #[error("unsupported protocol version {0} (this end speaks {VERSION})")]
    Version(u8),
    /// Wrong length for the type.
    #[error("{name} has a bad length {got} (expected {expected})")]
    Length {
        /// The message type.
        name: &'static str,
        /// What the type allows.
        expected: &'static str,
        /// What arrived.
        got: usize,
    },
    /// A malformed address field.
    #[error("bad address: {0}")]
    Addr(#[from] AddrError),
    /// An enum field holds an unknown value.
    #[error("{field} holds unknown value {value}")]
    Value {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u8,
    },
}

/// A parsed message; payloads borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// See [`Register`].
    Register(Register),
    /// See [`Refresh`].
    Refresh(Refresh),
    /// See [`Registered`].
    Registered(Registered),
    /// See [`Introduce`].
    Introduce(Introduce<'a>),
    /// See [`IntroAck`].
    IntroAck(IntroAck),
    /// See [`IntroFwd`].
    IntroFwd(IntroFwd<'a>),
    /// See [`ErrorMsg`].
    Error(ErrorMsg),
}

/// REGISTER (0xC1), 114 bytes:
/// `header | node id (32) | timestamp ms since Unix epoch (u64) | ed25519 signature (64)`.
/// The signature covers [`REGISTER_SIGNING_CONTEXT`] followed by bytes 0..50.
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
    /// Encoded length.
    pub const LEN: usize = HEADER_LEN + NODE_ID_LEN + 8 + SIGNATURE_LEN;
    const SIGNED_LEN: usize = HEADER_LEN + NODE_ID_LEN + 8;

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

    fn signed_bytes(&self) -> [u8; REGISTER_SIGNING_CONTEXT.len() + Self::SIGNED_LEN] {
        let mut out = [0u8; REGISTER_SIGNING_CONTEXT.len() + Self::SIGNED_LEN];
        let (ctx, rest) = out.split_at_mut(REGISTER_SIGNING_CONTEXT.len());
        ctx.copy_from_slice(REGISTER_SIGNING_CONTEXT);
        rest[0] = kind::REGISTER;
        rest[1] = VERSION;
        rest[2..10].copy_from_slice(&self.tx.to_be_bytes());
        rest[10..42].copy_from_slice(&self.node);
        rest[42..50].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }

    /// Checks the signature; on success returns the proven NodeId.
    pub fn verify(&self) -> Option<NodeId> {
        let node = NodeId::from_bytes(&self.node).ok()?;
        node.verify(&self.signed_bytes(), &self.signature)
            .then_some(node)
    }
}

/// REFRESH (0xC2), 58 bytes: `header | node id (32) | token (16)`.
///
/// Extends a registration without a signature. The token is bound to the node and the address the
/// server observed, so a refresh from any other address is refused (`docs/protocol.md`).
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
    /// Encoded length.
    pub const LEN: usize = HEADER_LEN + NODE_ID_LEN + TOKEN_LEN;
}

/// REGISTERED (0xC3), 37 or 49 bytes:
/// `header | lifetime s (u16) | alternate STUN port (u16, 0 = none) | token (16) | observed address`.
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

/// INTRODUCE (0xC4), 91 to 1190 bytes:
/// `header | node id (32) | token (16) | target node id (32) | payload (1..=1100)`.
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

impl Introduce<'_> {
    /// Length without the payload.
    pub const FIXED_LEN: usize = HEADER_LEN + NODE_ID_LEN + TOKEN_LEN + NODE_ID_LEN;
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

/// INTRO_ACK (0xC5), 11 bytes, or 18/30 with the target's observed address when forwarded:
/// `header | status (u8) | [target address]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroAck {
    /// Transaction id of the INTRODUCE.
    pub tx: u64,
    /// What happened.
    pub status: IntroStatus,
    /// The target's registered address (with `Forwarded` only).
    pub target_addr: Option<SocketAddr>,
}

/// INTRO_FWD (0xC6): `header | sender node id (32) | sender's observed address | payload`.
/// The transaction id is the sender's, so the target can tell retries apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroFwd<'a> {
    /// The INTRODUCE's transaction id.
    pub tx: u64,
    /// Who introduces itself (unauthenticated here: the payload proves it).
    pub from: RawNodeId,
    /// Its address as the server observes it.
    pub from_addr: SocketAddr,
    /// The payload, unchanged.
    pub payload: &'a [u8],
}

/// Why the server refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// The request's version is not spoken here; the header carries the server's version.
    UnsupportedVersion = 1,
    /// REGISTER timestamp too far from the server's clock; fix the clock.
    ClockSkew = 2,
    /// REGISTER timestamp not newer than the last one accepted (a replay).
    StaleTimestamp = 3,
    /// The node table is full.
    TableFull = 4,
    /// No registration for this node at this address, or a bad token: send REGISTER.
    NotRegistered = 5,
    /// The REGISTER signature does not verify.
    BadSignature = 6,
}

/// ERROR (0xC7), 19 bytes: `header | code (u8) | server time ms since Unix epoch (u64)`.
/// The server time lets a node with a skewed clock tell by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    /// Transaction id of the refused request.
    pub tx: u64,
    /// Why.
    pub code: ErrorCode,
    /// The server's wall clock.
    pub server_time_ms: u64,
}

impl ErrorMsg {
    /// Encoded length.
    pub const LEN: usize = HEADER_LEN + 1 + 8;
}

/// Reads the transaction id of anything with a full header, for replying to what failed to parse.
pub fn peek_tx(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?))
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

fn exact(
    name: &'static str,
    expected: &'static str,
    want: usize,
    got: usize,
) -> Result<(), ParseError> {
    if want == got {
        Ok(())
    } else {
        Err(ParseError::Length {
            name,
            expected,
            got,
        })
    }
}

/// Reads one socket address that must end exactly at the end of `bytes`.
fn addr_to_end(bytes: &[u8], name: &'static str) -> Result<SocketAddr, ParseError> {
    let (a, n) = addr::parse(bytes)?;
    if n != bytes.len() {
        return Err(ParseError::Length {
            name,
            expected: "address then end",
            got: bytes.len(),
        });
    }
    Ok(a)
}

impl<'a> Message<'a> {
    /// Parses one message. Never panics.
    pub fn parse(b: &'a [u8]) -> Result<Self, ParseError> {
        if b.len() < HEADER_LEN {
            return Err(ParseError::Short);
        }
        let ty = b[0];
        if !(0xC1..=0xC7).contains(&ty) {
            return Err(ParseError::UnknownType(ty));
        }
        if b[1] != VERSION {
            return Err(ParseError::Version(b[1]));
        }
        let tx = u64::from_be_bytes(arr(&b[2..10]));
        let body = &b[HEADER_LEN..];
        Ok(match ty {
            kind::REGISTER => {
                exact("REGISTER", "114", Register::LEN, b.len())?;
                Message::Register(Register {
                    tx,
                    node: arr(&body[0..32]),
                    timestamp_ms: u64::from_be_bytes(arr(&body[32..40])),
                    signature: arr(&body[40..104]),
                })
            }
            kind::REFRESH => {
                exact("REFRESH", "58", Refresh::LEN, b.len())?;
                Message::Refresh(Refresh {
                    tx,
                    node: arr(&body[0..32]),
                    token: arr(&body[32..48]),
                })
            }
            kind::REGISTERED => {
                if body.len() < 2 + 2 + TOKEN_LEN {
                    return Err(ParseError::Length {
                        name: "REGISTERED",
                        expected: "37 or 49",
                        got: b.len(),
                    });
                }
                Message::Registered(Registered {
                    tx,
                    lifetime_s: u16::from_be_bytes(arr(&body[0..2])),
                    alt_stun_port: u16::from_be_bytes(arr(&body[2..4])),
                    token: arr(&body[4..20]),
                    observed: addr_to_end(&body[20..], "REGISTERED")?,
                })
            }
            kind::INTRODUCE => {
                let payload = &b[Introduce::FIXED_LEN.min(b.len())..];
                if b.len() <= Introduce::FIXED_LEN || payload.len() > MAX_INTRO_PAYLOAD {
                    return Err(ParseError::Length {
                        name: "INTRODUCE",
                        expected: "91 to 1190",
                        got: b.len(),
                    });
                }
                Message::Introduce(Introduce {
                    tx,
                    node: arr(&body[0..32]),
                    token: arr(&body[32..48]),
                    target: arr(&body[48..80]),
                    payload,
                })
            }
            kind::INTRO_ACK => {
                let Some((&status, rest)) = body.split_first() else {
                    return Err(ParseError::Length {
                        name: "INTRO_ACK",
                        expected: "11, 18 or 30",
                        got: b.len(),
                    });
                };
                let status = match status {
                    0 => IntroStatus::Forwarded,
                    1 => IntroStatus::UnknownPeer,
                    2 => IntroStatus::SenderRateLimited,
                    3 => IntroStatus::TargetRateLimited,
                    value => {
                        return Err(ParseError::Value {
                            field: "INTRO_ACK status",
                            value,
                        })
                    }
                };
                let target_addr = match (status, rest.is_empty()) {
                    (IntroStatus::Forwarded, false) => Some(addr_to_end(rest, "INTRO_ACK")?),
                    (_, true) => None,
                    _ => {
                        return Err(ParseError::Length {
                            name: "INTRO_ACK",
                            expected: "11 unless forwarded",
                            got: b.len(),
                        })
                    }
                };
                Message::IntroAck(IntroAck {
                    tx,
                    status,
                    target_addr,
                })
            }
            kind::INTRO_FWD => {
                if body.len() < NODE_ID_LEN {
                    return Err(ParseError::Length {
                        name: "INTRO_FWD",
                        expected: "at least 50",
                        got: b.len(),
                    });
                }
                let (from_addr, n) = addr::parse(&body[32..])?;
                let payload = &body[32 + n..];
                if payload.is_empty() || payload.len() > MAX_INTRO_PAYLOAD {
                    return Err(ParseError::Length {
                        name: "INTRO_FWD",
                        expected: "payload of 1 to 1100",
                        got: b.len(),
                    });
                }
                Message::IntroFwd(IntroFwd {
                    tx,
                    from: arr(&body[0..32]),
                    from_addr,
                    payload,
                })
            }
            _ => {
                exact("ERROR", "19", ErrorMsg::LEN, b.len())?;
                let code = match body[0] {
                    1 => ErrorCode::UnsupportedVersion,
                    2 => ErrorCode::ClockSkew,
                    3 => ErrorCode::StaleTimestamp,
                    4 => ErrorCode::TableFull,
                    5 => ErrorCode::NotRegistered,
                    6 => ErrorCode::BadSignature,
                    value => {
                        return Err(ParseError::Value {
                            field: "ERROR code",
                            value,
                        })
                    }
                };
                Message::Error(ErrorMsg {
                    tx,
                    code,
                    server_time_ms: u64::from_be_bytes(arr(&body[1..9])),
                })
            }
        })
    }

    /// The message's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Register(_) => kind::REGISTER,
            Message::Refresh(_) => kind::REFRESH,
            Message::Registered(_) => kind::REGISTERED,
            Message::Introduce(_) => kind::INTRODUCE,
            Message::IntroAck(_) => kind::INTRO_ACK,
            Message::IntroFwd(_) => kind::INTRO_FWD,
            Message::Error(_) => kind::ERROR,
        }
    }

    fn tx(&self) -> u64 {
        match self {
            Message::Register(m) => m.tx,
            Message::Refresh(m) => m.tx,
            Message::Registered(m) => m.tx,
            Message::Introduce(m) => m.tx,
            Message::IntroAck(m) => m.tx,
            Message::IntroFwd(m) => m.tx,
            Message::Error(m) => m.tx,
        }
    }

    /// Appends the encoding to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.kind());
        out.push(VERSION);
        out.extend_from_slice(&self.tx().to_be_bytes());
        match self {
            Message::Register(m) => {
                out.extend_from_slice(&m.node);
                out.extend_from_slice(&m.timestamp_ms.to_be_bytes());
                out.extend_from_slice(&m.signature);
            }
            Message::Refresh(m) => {
                out.extend_from_slice(&m.node);
                out.extend_from_slice(&m.token);
            }
            Message::Registered(m) => {
                out.extend_from_slice(&m.lifetime_s.to_be_bytes());
                out.extend_from_slice(&m.alt_stun_port.to_be_bytes());
                out.extend_from_slice(&m.token);
                addr::emit(&m.observed, out);
            }
            Message::Introduce(m) => {
                out.extend_from_slice(&m.node);
                out.extend_from_slice(&m.token);
                out.extend_from_slice(&m.target);
                out.extend_from_slice(m.payload);
            }
            Message::IntroAck(m) => {
                out.push(m.status as u8);
                if let Some(a) = &m.target_addr {
                    addr::emit(a, out);
                }
            }
            Message::IntroFwd(m) => {
                out.extend_from_slice(&m.from);
                addr::emit(&m.from_addr, out);
                out.extend_from_slice(m.payload);
            }
            Message::Error(m) => {
                out.push(m.code as u8);
                out.extend_from_slice(&m.server_time_ms.to_be_bytes());
            }
        }
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        self.emit(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> Identity {
        Identity::from_seed(&[3; 32])
    }

    #[test]
    fn register_layout_and_signature() {
        let r = Register::signed(&id(), 0x0102030405060708, 1_700_000_000_000);
        let bytes = Message::Register(r.clone()).to_vec();
        assert_eq!(bytes.len(), Register::LEN);
        assert_eq!(&bytes[..10], &[0xC1, 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[10..42], id().node_id().as_bytes());
        assert_eq!(&bytes[42..50], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(r.verify(), Some(id().node_id()));
        // Any change to a signed byte breaks the signature.
        let mut tampered = r.clone();
        tampered.timestamp_ms += 1;
        assert_eq!(tampered.verify(), None);
        let mut tampered = r;
        tampered.tx ^= 1;
        assert_eq!(tampered.verify(), None);
    }

    #[test]
    fn fixed_vectors() {
        let m = Message::Registered(Registered {
            tx: 7,
            lifetime_s: 120,
            alt_stun_port: 3479,
            token: [0xAA; 16],
            observed: "192.0.2.1:4000".parse().unwrap(),
        });
        let mut want = vec![0xC3, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 120, 0x0d, 0x97];
        want.extend_from_slice(&[0xAA; 16]);
        want.extend_from_slice(&[4, 0x0f, 0xa0, 192, 0, 2, 1]);
        assert_eq!(m.to_vec(), want);
        assert_eq!(Message::parse(&want).unwrap(), m);

        let e = Message::Error(ErrorMsg {
            tx: 1,
            code: ErrorCode::ClockSkew,
            server_time_ms: 2,
        });
        assert_eq!(
            e.to_vec(),
            [0xC7, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        let a = Message::IntroAck(IntroAck {
            tx: 1,
            status: IntroStatus::UnknownPeer,
            target_addr: None,
        });
        assert_eq!(a.to_vec(), [0xC5, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn rejects_bad_lengths_versions_and_trailing_bytes() {
        let mut reg = Message::Register(Register::signed(&id(), 1, 2)).to_vec();
        reg.push(0);
        assert!(matches!(
            Message::parse(&reg),
            Err(ParseError::Length {
                name: "REGISTER",
                ..
            })
        ));
        reg.pop();
        reg[1] = 2;
        assert_eq!(Message::parse(&reg), Err(ParseError::Version(2)));
        assert_eq!(Message::parse(&[0xC1, 1]), Err(ParseError::Short));
        assert_eq!(
            Message::parse(&[0xCF; 20]),
            Err(ParseError::UnknownType(0xCF))
        );
        let intro = |n: usize| {
            let mut v = vec![0xC4, 1];
            v.resize(Introduce::FIXED_LEN + n, 0);
            Message::parse(&v).map(|_| ())
        };
        assert!(intro(0).is_err(), "empty payload");
        assert!(intro(1).is_ok());
        assert!(intro(MAX_INTRO_PAYLOAD).is_ok());
        assert!(intro(MAX_INTRO_PAYLOAD + 1).is_err());
    }

    #[test]
    fn forwarded_introduction_fits_the_ipv6_minimum_path() {
        let payload = [0u8; MAX_INTRO_PAYLOAD];
        let fwd = Message::IntroFwd(IntroFwd {
            tx: 0,
            from: [0; 32],
            from_addr: "[2001:db8::1]:1".parse().unwrap(),
            payload: &payload,
        });
        assert!(fwd.to_vec().len() <= 1280 - 40 - 8);
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| addr::normalize(SocketAddr::from((ip, p)))),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = Message::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_with_valid_header(ty in 0xC0u8..0xD0, mut bytes in proptest::collection::vec(any::<u8>(), 8..1300)) {
            bytes.insert(0, VERSION);
            bytes.insert(0, ty);
            if let Ok(m) = Message::parse(&bytes) {
                // Whatever parses re-encodes to the same bytes: no trailing garbage accepted.
                prop_assert_eq!(m.to_vec(), bytes);
            }
        }

        #[test]
        fn round_trip(tx: u64, node: [u8; 32], target: [u8; 32], token: [u8; 16], a in arb_addr(),
                      payload in proptest::collection::vec(any::<u8>(), 1..MAX_INTRO_PAYLOAD), n: u16) {
            let msgs = [
                Message::Refresh(Refresh { tx, node, token }),
                Message::Registered(Registered { tx, lifetime_s: n, alt_stun_port: n, token, observed: a }),
                Message::Introduce(Introduce { tx, node, token, target, payload: &payload }),
                Message::IntroAck(IntroAck { tx, status: IntroStatus::Forwarded, target_addr: Some(a) }),
                Message::IntroAck(IntroAck { tx, status: IntroStatus::TargetRateLimited, target_addr: None }),
                Message::IntroFwd(IntroFwd { tx, from: node, from_addr: a, payload: &payload }),
                Message::Error(ErrorMsg { tx, code: ErrorCode::NotRegistered, server_time_ms: tx }),
            ];
            for m in msgs {
                let bytes = m.to_vec();
                prop_assert_eq!(Message::parse(&bytes).unwrap(), m);
            }
        }
    }
}
