//! The application protocols the `shipworm` CLI speaks over QUIC, one ALPN each
//! (`docs/protocol.md` §"Applications").
//!
//! - `shipworm/pipe/1`: one bidirectional stream of raw bytes (`listen` / `connect`).
//! - `shipworm/forward/1`: per TCP connection, one stream: the client sends the target port
//!   (u16), the server answers one status byte (0 connected, 1 port not allowed, 2 connection
//!   refused), then raw bytes both ways.
//! - `shipworm/ping/1`: per ping, one stream: 8 bytes out, the same 8 bytes back.

pub mod forward;
pub mod pipe;

use std::time::{Duration, Instant};

/// ALPN of the netcat-like pipe.
pub const PIPE_ALPN: &[u8] = b"shipworm/pipe/1";
/// ALPN of TCP port forwarding.
pub const FORWARD_ALPN: &[u8] = b"shipworm/forward/1";
/// ALPN of ping.
pub const PING_ALPN: &[u8] = b"shipworm/ping/1";

/// Answers pings on `conn` until it closes.
pub async fn serve_ping(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 8];
            if recv.read_exact(&mut buf).await.is_ok() {
                let _ = send.write_all(&buf).await;
                let _ = send.finish();
            }
        });
    }
}

/// One ping on `conn`; returns the round-trip time through QUIC and the tunnel.
pub async fn ping_once(conn: &quinn::Connection, seq: u64) -> Result<Duration, String> {
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&seq.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let mut buf = [0u8; 8];
    recv.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    if buf != seq.to_be_bytes() {
        return Err("ping answer does not match".into());
    }
    Ok(start.elapsed())
}
