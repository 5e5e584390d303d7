//! `listen` / `connect`: one QUIC stream piped to stdin and stdout, like netcat.
//!
//! Each direction ends cleanly on its own: end of input finishes our send side, the peer's
//! finish ends our output. Both ends exit 0 only when both directions ended cleanly and all bytes
//! were written out; anything else is an error naming the cause.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Copies `input` to `send` and `recv` to `output` until both end; returns (bytes out, bytes in).
pub async fn pipe(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> Result<(u64, u64), String> {
    let outbound = async {
        let n = tokio::io::copy(&mut input, &mut send)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        send.finish().map_err(|e| format!("sending: {e}"))?;
        // Wait until the peer has everything (or says it stopped reading).
        match send.stopped().await {
            Ok(None) | Ok(Some(_)) => Ok::<u64, String>(n),
            Err(e) => Err(format!("sending: {e}")),
        }
    };
    let inbound = async {
        let n = tokio::io::copy(&mut recv, &mut output)
            .await
            .map_err(|e| format!("receiving: {e}"))?;
        output
            .flush()
            .await
            .map_err(|e| format!("writing output: {e}"))?;
        Ok::<u64, String>(n)
    };
    tokio::try_join!(outbound, inbound)
}
