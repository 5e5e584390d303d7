//! `shipworm/ping/1`: per ping, one stream: 8 bytes out, the same 8 bytes back.

use std::time::{Duration, Instant};

/// Answers pings on `conn` until it closes.
pub async fn serve(conn: quinn::Connection) {
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
pub async fn once(conn: &quinn::Connection, seq: u64) -> Result<Duration, String> {
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
