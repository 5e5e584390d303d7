//! TLS 1.3 with RFC 7250 raw public keys: a node's certificate is its ed25519 key, so connecting
//! to a NodeId authenticates exactly that key (rustls 0.23, ring provider).
//!
//! Both sides present their key. The client checks the server's against the NodeId it dialled;
//! the server accepts any valid key and reads the client's NodeId from it (who may *reach* us is
//! the tunnel's allowlist; the QUIC layer then knows who is talking).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    verify_tls13_signature_with_raw_key, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use shipworm_tunnel::{Identity, NodeId};

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410 §4): the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The raw public key (SubjectPublicKeyInfo DER) of `node`.
pub fn spki_of(node: &NodeId) -> Vec<u8> {
    let mut v = ED25519_SPKI_PREFIX.to_vec();
    v.extend_from_slice(node.as_bytes());
    v
}

/// The NodeId in a raw public key, if it is an ed25519 key.
pub fn node_of_spki(spki: &[u8]) -> Option<NodeId> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    NodeId::from_slice(key).ok().filter(|_| key.len() == 32)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(identity: &Identity) -> Result<Arc<CertifiedKey>, rustls::Error> {
    // A borrow of our wiped-on-drop buffer: the provider's `load_private_key` would take an owned
    // copy of the seed and free it unwiped.
    let pkcs8 = identity.pkcs8_der();
    let key = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(&pkcs8[..]))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki_of(&identity.node_id()))],
        key,
    )))
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        algs,
    )
}

/// Accepts exactly one server key.
#[derive(Debug)]
struct ExpectNode {
    expected: NodeId,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ExpectNode {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match node_of_spki(end_entity) {
            Some(got) if got == self.expected => Ok(ServerCertVerified::assertion()),
            Some(got) => Err(rustls::Error::General(format!(
                "peer key mismatch: dialled {}, but the peer authenticated as {got}",
                self.expected
            ))),
            None => Err(rustls::Error::General(
                "peer presented no ed25519 raw public key".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Accepts any ed25519 client key (the tunnel already decided who may reach us).
#[derive(Debug)]
struct AnyNode {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyNode {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_of_spki(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or_else(|| {
                rustls::Error::General("client presented no ed25519 raw public key".into())
            })
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Client config dialling `peer` with `alpn`, presenting `identity`.
pub fn client_config(
    identity: &Identity,
    peer: NodeId,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let key = certified_key(identity)?;
    let verifier = Arc::new(ExpectNode {
        expected: peer,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(key),
        ));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Server config presenting `identity`, accepting `alpns`.
pub fn server_config(
    identity: &Identity,
    alpns: &[Vec<u8>],
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = provider();
    let key = certified_key(identity)?;
    let verifier = Arc::new(AnyNode {
        algs: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(key),
        ));
    config.alpn_protocols = alpns.to_vec();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trip_and_rejects() {
        let id = Identity::from_seed(&[9; 32]).node_id();
        let spki = spki_of(&id);
        assert_eq!(spki.len(), 44);
        assert_eq!(node_of_spki(&spki), Some(id));
        let mut bad = spki.clone();
        bad[7] ^= 1; // not the ed25519 OID
        assert_eq!(node_of_spki(&bad), None);
        assert_eq!(node_of_spki(&spki[..40]), None);
    }

    #[test]
    fn configs_build_for_a_real_key() {
        let id = Identity::from_seed(&[9; 32]);
        assert!(client_config(&id, id.node_id(), b"x").is_ok());
        assert!(server_config(&id, &[b"x".to_vec()]).is_ok());
    }
}
