//! The rendezvous wire formats: the version-2 rendezvous messages and STUN Binding
//! (`docs/protocol.md` §"Rendezvous messages (version 2)" and §"STUN").
//!
//! One module per format, each with its own parse and emit:
//! - [`header`]: the 10-byte header every rendezvous message starts with, and the type bytes;
//! - [`register`]: REGISTER, REFRESH, REGISTERED and RETRY (keeping a registration);
//! - [`introduce`]: INTRODUCE, INTRO_ACK and INTRO_FWD (forwarding one introduction);
//! - [`error`]: ERROR (a refused request);
//! - [`message`]: [`Message`], one parsed message of any type, and the dispatch between them;
//! - [`stun`]: STUN Binding requests and responses (RFC 8489), on the same port.
//!
//! Which format a datagram holds is told by its first byte (`docs/protocol.md`
//! §"Demultiplexing one UDP port"): [`is_rendezvous_message`], [`stun::is_stun`].
//! Parsers read untrusted bytes through [`shipworm_tunnel::wire::Reader`], so a short field is an
//! error naming it and bytes after the end of a message are rejected. Nothing here panics on
//! input. All integers are big-endian.

pub mod error;
pub mod header;
pub mod introduce;
pub mod message;
pub mod register;
pub mod relay;
pub mod stun;

use shipworm_tunnel::identity::NODE_ID_LEN;
use shipworm_tunnel::wire::addr::AddrError;
use shipworm_tunnel::wire::{Trailing, Truncated};

pub use error::{ErrorCode, ErrorMsg};
pub use header::{is_rendezvous_message, kind, peek_tx, Header, HEADER_LEN, VERSION};
pub use introduce::{IntroAck, IntroFwd, IntroStatus, Introduce, MAX_INTRO_PAYLOAD};
pub use message::Message;
pub use register::{
    Refresh, Register, Registered, Retry, COOKIE_LEN, REGISTERED_RELAY, REGISTER_SIGNING_CONTEXT,
    TOKEN_LEN,
};
pub use relay::{Relay, Relayed, MAX_RELAY_PAYLOAD};

/// Reads an opaque payload that ends a message: everything left, 1 to `max` bytes.
pub(crate) fn payload<'a>(
    mut r: shipworm_tunnel::wire::Reader<'a>,
    max: usize,
    name: &'static str,
    expected: &'static str,
) -> Result<&'a [u8], ParseError> {
    let got = r.position() + r.remaining();
    let payload = r.rest();
    if payload.is_empty() || payload.len() > max {
        return Err(ParseError::Length {
            name,
            expected,
            got,
        });
    }
    Ok(payload)
}

/// A raw NodeId as it travels: only REGISTER's signature check proves it is a key.
pub type RawNodeId = [u8; NODE_ID_LEN];

/// Why bytes are not a valid rendezvous message.
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
    /// A fixed field ends past the end of the datagram.
    #[error(transparent)]
    Truncated(#[from] Truncated),
    /// Bytes after the end of the message.
    #[error(transparent)]
    Trailing(#[from] Trailing),
    /// A variable part (payload, optional address) has a length its type does not allow.
    #[error("{name} has a bad length {got} (expected {expected})")]
    Length {
        /// The message type.
        name: &'static str,
        /// What the type allows.
        expected: &'static str,
        /// The datagram's length.
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
