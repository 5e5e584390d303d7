//! ERROR (0xC7), a refused request (`docs/protocol.md` §"Rendezvous messages (version 2)", which
//! lists the codes), 19 bytes:
//!
//! ```text
//! 0        10          11                                     19
//! | header | code (u8) | server time ms since Unix epoch (u64) |
//! ```
//!
//! The server time lets a node with a skewed clock tell by how much.

use shipworm_tunnel::wire::Reader;

use super::header::HEADER_LEN;
use super::ParseError;

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
    /// The REGISTER was signed for an address that is not this server's (another server, or an
    /// address the operator did not declare with `--public-addr`).
    WrongServer = 7,
    /// Too many nodes are registered from the sender's network prefix (the per-prefix quota).
    PrefixQuota = 8,
    /// The relay refused a RELAY: the sender or the target is not on its allowlist, the target
    /// is not registered here (or has not confirmed its address), or no session is free. (A
    /// server without the relay role drops RELAY unanswered.)
    RelayRefused = 9,
}

impl ErrorCode {
    fn from_u8(value: u8) -> Result<Self, ParseError> {
        Ok(match value {
            1 => Self::UnsupportedVersion,
            2 => Self::ClockSkew,
            3 => Self::StaleTimestamp,
            4 => Self::TableFull,
            5 => Self::NotRegistered,
            6 => Self::BadSignature,
            7 => Self::WrongServer,
            8 => Self::PrefixQuota,
            9 => Self::RelayRefused,
            value => {
                return Err(ParseError::Value {
                    field: "ERROR code",
                    value,
                })
            }
        })
    }
}

/// ERROR (0xC7): a request was refused.
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
    /// Offset of the code.
    pub const CODE_OFFSET: usize = HEADER_LEN;
    /// Offset of the server time.
    pub const TIME_OFFSET: usize = Self::CODE_OFFSET + 1;
    /// Encoded length.
    pub const LEN: usize = Self::TIME_OFFSET + 8;

    /// Reads the body (the reader stands after a header carrying `tx`); rejects trailing bytes.
    pub fn parse(tx: u64, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let m = Self {
            tx,
            code: ErrorCode::from_u8(r.u8("ERROR code")?)?,
            server_time_ms: r.u64("ERROR server time")?,
        };
        r.finish()?;
        Ok(m)
    }

    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.code as u8);
        out.extend_from_slice(&self.server_time_ms.to_be_bytes());
    }
}
