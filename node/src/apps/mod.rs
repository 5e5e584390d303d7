//! The application protocols the `shipworm` CLI speaks over QUIC between nodes, one ALPN each
//! (`docs/protocol.md` §"QUIC and applications").
//!
//! - `shipworm/pipe/1`: one bidirectional stream of raw bytes (`listen` / `connect`).
//! - `shipworm/forward/1`: per TCP connection, one stream: the client sends the target port
//!   (u16), the server answers one status byte (0 connected, 1 port not allowed, 2 connection
//!   refused), then raw bytes both ways.
//! - `shipworm/ping/1`: per ping, one stream: 8 bytes out, the same 8 bytes back.

pub mod forward;
pub mod ping;
pub mod pipe;

/// ALPN of the netcat-like pipe.
pub const PIPE_ALPN: &[u8] = b"shipworm/pipe/1";
/// ALPN of TCP port forwarding.
pub const FORWARD_ALPN: &[u8] = b"shipworm/forward/1";
/// ALPN of ping.
pub const PING_ALPN: &[u8] = b"shipworm/ping/1";
