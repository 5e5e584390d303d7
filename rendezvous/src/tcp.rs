//! The relay's TCP transport, for networks that block UDP (`docs/protocol.md` §"Relaying over
//! TCP"): one TLS connection per node to the relay's TCP port (443 by default), carrying the
//! same datagrams as UDP, each prefixed by its length:
//!
//! ```text
//! | length (u16 BE, 1..=MAX_FRAME) | datagram (REGISTER, REFRESH, INTRODUCE, RELAY, ... or STUN) |
//! ```
//!
//! TLS is there to look like the HTTPS that such networks let through (ALPN `shipworm-relay`),
//! not to authenticate the server: the client accepts any certificate, and the server presents a
//! self-signed one made at start. Nothing rests on it: a REGISTER is signed for the server's
//! address, and tunnel frames are end-to-end authenticated and encrypted, exactly as over UDP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The ALPN protocol of the relay's TLS.
pub const ALPN: &[u8] = b"shipworm-relay";
/// Largest datagram a frame carries (a RELAY of the largest tunnel packet fits).
pub const MAX_FRAME: usize = 2048;
/// The relay's default TCP port: what networks that block UDP leave open.
pub const DEFAULT_TCP_PORT: u16 = 443;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS acceptor, with a self-signed certificate made now.
pub fn acceptor() -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certified = rcgen::generate_simple_self_signed(vec!["shipworm-relay".to_string()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts any server certificate: see the module docs for why nothing rests on it.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to a relay's TCP port.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects to the relay at `addr` over TCP and TLS, within `timeout`; the error names what
/// failed.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<ClientStream> {
    let timed_out =
        |what: &str| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"));
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("TCP connect"))??;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("shipworm-relay").map_err(io::Error::other)?;
    tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| timed_out("TLS handshake"))?
}

/// Reads one frame into `buf` (its datagram); `Ok(false)` at a clean end of stream. A length of
/// 0 or over [`MAX_FRAME`] is an error: the stream is not ours.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (1 to {MAX_FRAME} allowed)"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

/// Writes one frame (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, datagram: &[u8]) -> io::Result<()> {
    if datagram.is_empty() || datagram.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("datagram of {} bytes cannot be framed", datagram.len()),
        ));
    }
    w.write_all(&(datagram.len() as u16).to_be_bytes()).await?;
    w.write_all(datagram).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        write_frame(&mut a, &[1, 2, 3]).await.unwrap();
        write_frame(&mut a, &[9; MAX_FRAME]).await.unwrap();
        assert!(write_frame(&mut a, &[]).await.is_err());
        assert!(write_frame(&mut a, &[0; MAX_FRAME + 1]).await.is_err());
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        let mut buf = Vec::new();
        assert!(read_frame(&mut b, &mut buf).await.unwrap());
        assert_eq!(buf, [1, 2, 3]);
        assert!(read_frame(&mut b, &mut buf).await.unwrap());
        assert_eq!(buf.len(), MAX_FRAME);
        let e = read_frame(&mut b, &mut buf).await.unwrap_err();
        assert!(e.to_string().contains("frame of 0 bytes"), "{e}");
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0x08, 0x01]).await.unwrap();
        let e = read_frame(&mut b, &mut buf).await.unwrap_err();
        assert!(e.to_string().contains("frame of 2049 bytes"), "{e}");
        drop(a);
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(!read_frame(&mut b, &mut buf).await.unwrap(), "clean end");
    }

    #[tokio::test]
    async fn a_client_and_the_server_speak_tls_with_the_relay_alpn() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
            let mut buf = Vec::new();
            assert!(read_frame(&mut tls, &mut buf).await.unwrap());
            write_frame(&mut tls, &buf).await.unwrap();
            tls.flush().await.unwrap();
        });
        let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
        write_frame(&mut c, b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = Vec::new();
        assert!(read_frame(&mut c, &mut buf).await.unwrap());
        assert_eq!(buf, b"hello");
        server.await.unwrap();
    }
}
