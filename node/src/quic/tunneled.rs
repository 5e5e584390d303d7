//! QUIC inside the tunnel without encrypting twice.
//!
//! Every QUIC packet of the built-in endpoint travels inside a tunnel session, which already
//! encrypts it, authenticates it as coming from exactly one key, and drops replays. QUIC's own
//! 1-RTT packet protection would do all of that a second time, at the cost of about a sixth of
//! a bulk transfer's throughput (`docs/performance.md`).
//!
//! [`TUNNELED_VERSION`] is QUIC version 1 (RFC 9000, RFC 9001) with one difference: 1-RTT
//! packets carry no packet protection (no AEAD, no tag) and no header protection. Initial and
//! Handshake packets, the TLS 1.3 handshake with raw public keys, and everything else are v1's.
//! Why that is as safe as the tunnel, and under which conditions, is in `docs/security.md`
//! §"QUIC inside the tunnel"; the two conditions this module's users must keep are:
//!
//! - the endpoint receives only what the tunnel opened (the overlay socket), and
//! - a connection accepts packets from its peer's overlay address only: servers run with
//!   [`quinn::ServerConfig::migration`] off ([`server_config`] does it), and quinn's clients
//!   never accept a new address.
//!
//! A client dials the tunneled version first and falls back to v1 when the server answers with
//! version negotiation (a node that predates it, or one that keeps QUIC's protection: see
//! [`Protection`]). The version is in every long header, so both ends always agree on it. A
//! peer that answered so is remembered for a while ([`PeerVersions`]): the next connections to it
//! start with v1, without the extra round trip.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::crypto::{self, CryptoError, ExportKeyingMaterialError, KeyPair, Keys};
use quinn::{ConnectError, ConnectionError, ConnectionId, Side};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;

/// QUIC v1 without packet protection on 1-RTT packets, for use inside a tunnel session only.
/// Chosen from the unregistered space; "sw" and 1.
pub const TUNNELED_VERSION: u32 = 0x7377_0001;
/// QUIC version 1.
pub const V1: u32 = 1;

/// Whose packet protection a node's QUIC connections rely on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protection {
    /// The tunnel's alone for 1-RTT packets, where the peer supports it (the default); v1 with
    /// a peer that does not.
    #[default]
    Tunnel,
    /// QUIC's as well: every connection in and out is plain QUIC v1, encrypted twice.
    TunnelAndQuic,
}

impl Protection {
    /// The versions an endpoint speaks, preferred first.
    pub fn versions(self) -> Vec<u32> {
        match self {
            Self::Tunnel => vec![TUNNELED_VERSION, V1],
            Self::TunnelAndQuic => vec![V1],
        }
    }
}

/// Endpoint settings for the versions of `protection`.
pub fn endpoint_config(protection: Protection) -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config.supported_versions(protection.versions());
    config
}

/// A server config for the overlay endpoint: TLS from `tls`, the tunneled version understood,
/// migration off (see the module's conditions).
pub fn server_config(tls: QuicServerConfig) -> quinn::ServerConfig {
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(Tunneled(Arc::new(tls))));
    server.migration(false);
    server
}

/// A client config speaking `version` with TLS from `tls`.
pub fn client_config(tls: Arc<QuicClientConfig>, version: u32) -> quinn::ClientConfig {
    let mut client = quinn::ClientConfig::new(Arc::new(Tunneled(tls)));
    client.version(version);
    client
}

/// How long a peer that answered the tunneled version with version negotiation is dialled with
/// v1 directly. A peer upgraded in the meantime is still served (every node speaks v1), only
/// with QUIC's encryption on, until this runs out.
pub const REMEMBER_V1_FOR: Duration = Duration::from_secs(10 * 60);
/// Peers remembered at most (about 40 bytes each).
pub const MAX_REMEMBERED: usize = 1024;

/// The peers that do not speak the tunneled version, by overlay address, each until a deadline.
///
/// What it holds is a peer's claim about itself: the version negotiation reached our endpoint
/// only through that peer's tunnel session, which delivers nothing whose inner source is not
/// that peer's overlay address. So no one else can make us dial a peer with v1, and a peer that
/// does only gets QUIC's encryption, which is more, not less.
#[derive(Debug)]
pub struct PeerVersions {
    remember_for: Duration,
    v1_only: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Default for PeerVersions {
    fn default() -> Self {
        Self::new(REMEMBER_V1_FOR)
    }
}

impl PeerVersions {
    /// Remembers each peer for `remember_for`.
    pub fn new(remember_for: Duration) -> Self {
        Self {
            remember_for,
            v1_only: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        // A panic elsewhere while holding it leaves a map that is still valid.
        self.v1_only.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `peer` answered the tunneled version with version negotiation within the time
    /// remembered.
    pub fn is_v1_only(&self, peer: SocketAddr, now: Instant) -> bool {
        let mut map = self.lock();
        match map.get(&peer) {
            Some(until) if *until > now => true,
            Some(_) => {
                map.remove(&peer);
                false
            }
            None => false,
        }
    }

    fn remember_v1_only(&self, peer: SocketAddr, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&peer) {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_REMEMBERED {
                // Full of live entries: the one due to run out first makes room.
                if let Some(first) = map.iter().min_by_key(|(_, until)| **until).map(|(p, _)| *p) {
                    map.remove(&first);
                }
            }
        }
        map.insert(peer, now + self.remember_for);
    }

    /// Peers remembered (some perhaps past their time, dropped when next looked at).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// None remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Connects to `to` with the first of `protection`'s versions the server speaks: `config` makes
/// the client config for a version. A server without the tunneled version answers the first
/// Initial with version negotiation, which costs one round trip before v1 is tried; `peers`
/// remembers that, and the next connections to `to` start with v1.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    protection: Protection,
    peers: &PeerVersions,
    to: SocketAddr,
    server_name: &str,
    config: impl Fn(u32) -> quinn::ClientConfig,
) -> Result<quinn::Connection, ConnectFailed> {
    let skip_tunneled = peers.is_v1_only(to, Instant::now());
    let mut versions = protection
        .versions()
        .into_iter()
        .filter(|v| !(skip_tunneled && *v == TUNNELED_VERSION))
        .peekable();
    while let Some(version) = versions.next() {
        let connecting = endpoint
            .connect_with(config(version), to, server_name)
            .map_err(ConnectFailed::Start)?;
        match connecting.await {
            Err(ConnectionError::VersionMismatch) if versions.peek().is_some() => {
                tracing::debug!(target: "shipworm::quic", "{to} does not speak QUIC version {version:#x}; trying the next");
                if version == TUNNELED_VERSION {
                    peers.remember_v1_only(to, Instant::now());
                }
            }
            other => return other.map_err(ConnectFailed::Connection),
        }
    }
    Err(ConnectFailed::Connection(ConnectionError::VersionMismatch))
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub enum ConnectFailed {
    /// The endpoint refused to start the attempt.
    Start(ConnectError),
    /// The connection failed.
    Connection(ConnectionError),
}

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(e) => e.fmt(f),
            Self::Connection(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectFailed {}

/// rustls' QUIC crypto, told v1 for the tunneled version, its sessions' 1-RTT keys replaced.
struct Tunneled<C>(C);

/// The version rustls is told: the tunneled version is v1 in everything it sees.
fn tls_version(version: u32) -> u32 {
    match version {
        TUNNELED_VERSION => V1,
        v => v,
    }
}

fn session(inner: Box<dyn crypto::Session>, version: u32) -> Box<dyn crypto::Session> {
    match version {
        TUNNELED_VERSION => Box::new(Unprotected1Rtt {
            inner,
            key_changes: 0,
        }),
        _ => inner,
    }
}

impl crypto::ClientConfig for Tunneled<Arc<QuicClientConfig>> {
    fn start_session(
        self: Arc<Self>,
        version: u32,
        server_name: &str,
        params: &TransportParameters,
    ) -> Result<Box<dyn crypto::Session>, ConnectError> {
        let inner = self
            .0
            .clone()
            .start_session(tls_version(version), server_name, params)?;
        Ok(session(inner, version))
    }
}

impl crypto::ServerConfig for Tunneled<Arc<QuicServerConfig>> {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, crypto::UnsupportedVersion> {
        self.0.initial_keys(tls_version(version), dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.0.retry_tag(tls_version(version), orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        let inner = self.0.clone().start_session(tls_version(version), params);
        session(inner, version)
    }
}

/// A TLS session whose 1-RTT keys are [`NoProtection`]. TLS 1.3 changes keys twice, in this
/// order on both sides: to the Handshake keys, then to the 1-RTT keys; Initial keys come from
/// `initial_keys` and are v1's.
struct Unprotected1Rtt {
    inner: Box<dyn crypto::Session>,
    key_changes: u8,
}

impl crypto::Session for Unprotected1Rtt {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.inner.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.inner.handshake_data()
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn crypto::PacketKey>)> {
        // No 0-RTT: the node never offers it (no session tickets are kept), and 0-RTT keys
        // would be v1's anyway.
        self.inner.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        self.inner.read_handshake(buf)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.inner.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        let keys = self.inner.write_handshake(buf)?;
        self.key_changes = self.key_changes.saturating_add(1);
        if self.key_changes == 1 {
            return Some(keys); // the Handshake keys
        }
        Some(Keys {
            header: KeyPair {
                local: Box::new(NoProtection),
                remote: Box::new(NoProtection),
            },
            packet: no_packet_protection(),
        })
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn crypto::PacketKey>>> {
        // A key update changes nothing here; the TLS secrets still advance.
        self.inner.next_1rtt_keys().map(|_| no_packet_protection())
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

fn no_packet_protection() -> KeyPair<Box<dyn crypto::PacketKey>> {
    KeyPair {
        local: Box::new(NoProtection),
        remote: Box::new(NoProtection),
    }
}

/// The 1-RTT "keys" of the tunneled version: the payload and header are left as they are.
struct NoProtection;

impl crypto::PacketKey for NoProtection {
    fn encrypt(&self, _packet: u64, _buf: &mut [u8], _header_len: usize) {}

    fn decrypt(
        &self,
        _packet: u64,
        _header: &[u8],
        _payload: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        Ok(())
    }

    fn tag_len(&self) -> usize {
        0
    }

    fn confidentiality_limit(&self) -> u64 {
        u64::MAX
    }

    fn integrity_limit(&self) -> u64 {
        u64::MAX
    }
}

impl crypto::HeaderKey for NoProtection {
    fn decrypt(&self, _pn_offset: usize, _packet: &mut [u8]) {}

    fn encrypt(&self, _pn_offset: usize, _packet: &mut [u8]) {}

    fn sample_size(&self) -> usize {
        // v1's sample size keeps v1's minimum packet sizes (quinn pads short packets to it).
        16
    }
}

#[cfg(test)]
mod tests {
    //! Plain quinn endpoints on loopback UDP, the client's datagrams through a recording proxy:
    //! what the version puts on the wire, what a server accepts from another address, and the
    //! fallback to v1. (Through the overlay, the same endpoints sit on the tunnel; the node's
    //! tests cover that path.)

    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use shipworm_tunnel::Identity;
    use tokio::net::UdpSocket;

    use super::*;
    use crate::quic::{tls, transport_config};

    const ALPN: &[u8] = b"test/1";
    /// Bytes an application sends, easy to find on the wire.
    const MARKER: &[u8] = b"<plaintext marker of the tunneled version test>";
    const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    struct Server {
        endpoint: quinn::Endpoint,
        id: Identity,
        /// Connections the server accepted, in order (accepting runs from the start: a
        /// handshake goes on only once the application takes the incoming connection).
        accepted: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<quinn::Connection>>,
    }

    impl Server {
        fn new(endpoint: quinn::Endpoint, id: Identity) -> Self {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let e = endpoint.clone();
            tokio::spawn(async move {
                while let Some(incoming) = e.accept().await {
                    if let Ok(conn) = incoming.await {
                        let _ = tx.send(conn);
                    }
                }
            });
            Self {
                endpoint,
                id,
                accepted: tokio::sync::Mutex::new(rx),
            }
        }

        async fn next(&self) -> quinn::Connection {
            let next = async { self.accepted.lock().await.recv().await.unwrap() };
            tokio::time::timeout(Duration::from_secs(10), next)
                .await
                .expect("the server accepts a connection in time")
        }
    }

    fn server(protection: Protection) -> Server {
        let id = Identity::generate();
        let tls = tls::server_config(&id, &[ALPN.to_vec()]).unwrap();
        let mut config = server_config(QuicServerConfig::try_from(tls).unwrap());
        config.transport_config(transport_config(1280));
        let socket = std::net::UdpSocket::bind(LOOPBACK).unwrap();
        let endpoint = quinn::Endpoint::new(
            endpoint_config(protection),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        Server::new(endpoint, id)
    }

    /// A v1-only server as a node before the tunneled version ran it: quinn's default crypto.
    fn old_server() -> Server {
        let id = Identity::generate();
        let tls = tls::server_config(&id, &[ALPN.to_vec()]).unwrap();
        let mut config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
        config.transport_config(transport_config(1280));
        let endpoint = quinn::Endpoint::server(config, LOOPBACK).unwrap();
        Server::new(endpoint, id)
    }

    /// Datagrams from the client to the server, as the proxy forwarded them.
    type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A UDP proxy in front of `server`: the client talks to its address; it records what the
    /// client sends.
    async fn proxy(server: SocketAddr) -> (SocketAddr, Seen) {
        let front = UdpSocket::bind(LOOPBACK).await.unwrap();
        let back = UdpSocket::bind(LOOPBACK).await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let seen: Seen = Default::default();
        let record = seen.clone();
        tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 2048], vec![0u8; 2048]);
            let mut client = None;
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        record.lock().unwrap().push(up[..n].to_vec());
                        let _ = back.send(&up[..n]).await;
                    }
                    Ok(n) = back.recv(&mut down) => {
                        if let Some(c) = client {
                            let _ = front.send_to(&down[..n], c).await;
                        }
                    }
                }
            }
        });
        (addr, seen)
    }

    async fn dial(server: &Server, to: SocketAddr, protection: Protection) -> quinn::Connection {
        dial_with(server, to, protection, &PeerVersions::default()).await
    }

    async fn dial_with(
        server: &Server,
        to: SocketAddr,
        protection: Protection,
        peers: &PeerVersions,
    ) -> quinn::Connection {
        let client = Identity::generate();
        let tls = tls::client_config(&client, server.id.node_id(), ALPN).unwrap();
        let tls = Arc::new(QuicClientConfig::try_from(tls).unwrap());
        let endpoint = quinn::Endpoint::new(
            endpoint_config(protection),
            None,
            std::net::UdpSocket::bind(LOOPBACK).unwrap(),
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        let conn = connect(&endpoint, protection, peers, to, "x", |version| {
            let mut config = client_config(tls.clone(), version);
            config.transport_config(transport_config(1280));
            config
        });
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("connects in time")
            .expect("connects")
    }

    /// Sends `data` on a new bidirectional stream; the server reads it whole.
    async fn exchange(server: &Server, conn: &quinn::Connection, data: &[u8]) -> Vec<u8> {
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(data).await.unwrap();
        send.finish().unwrap();
        let incoming = async {
            let conn = server.next().await;
            let (_send, mut recv) = conn.accept_bi().await.unwrap();
            let got = recv.read_to_end(1 << 20).await.unwrap();
            (conn, got)
        };
        let (_conn, got) = tokio::time::timeout(Duration::from_secs(10), incoming)
            .await
            .expect("the server reads the stream in time");
        got
    }

    /// Short-header (1-RTT) datagrams among `seen`.
    fn one_rtt(seen: &Seen) -> Vec<Vec<u8>> {
        let seen = seen.lock().unwrap();
        seen.iter().filter(|d| d[0] & 0x80 == 0).cloned().collect()
    }

    fn carries_marker(datagrams: &[Vec<u8>]) -> bool {
        datagrams
            .iter()
            .any(|d| d.windows(MARKER.len()).any(|w| w == MARKER))
    }

    #[tokio::test]
    async fn the_tunneled_version_leaves_1rtt_packets_unencrypted_and_v1_seals_them() {
        for (protection, plain) in [
            (Protection::Tunnel, true),
            (Protection::TunnelAndQuic, false),
        ] {
            let server = server(protection);
            let (front, seen) = proxy(server.endpoint.local_addr().unwrap()).await;
            let conn = dial(&server, front, protection).await;
            assert_eq!(exchange(&server, &conn, MARKER).await, MARKER);
            let packets = one_rtt(&seen);
            assert!(!packets.is_empty(), "1-RTT packets were sent");
            assert_eq!(
                carries_marker(&packets),
                plain,
                "{protection:?}: the application's bytes are {} on the wire",
                if plain { "not" } else { "readable" }
            );
            // Long-header packets (the handshake) are v1's protection in both cases, and
            // carry the version the connection speaks.
            let version = {
                let seen = seen.lock().unwrap();
                let first = seen.first().expect("an Initial").clone();
                u32::from_be_bytes(first[1..5].try_into().unwrap())
            };
            let expected = if plain { TUNNELED_VERSION } else { V1 };
            assert_eq!(version, expected, "{protection:?}");
        }
    }

    /// A 1-RTT packet for a live connection, sent from another address: with migration off the
    /// server drops it. Without that rule, anyone who reaches the endpoint could write into the
    /// connection, since the tunneled version's packets carry no tag.
    #[tokio::test]
    async fn a_packet_for_a_connection_from_another_address_is_dropped() {
        let server = server(Protection::Tunnel);
        let server_addr = server.endpoint.local_addr().unwrap();
        let (front, seen) = proxy(server_addr).await;
        let conn = dial(&server, front, Protection::Tunnel).await;
        // Stream 0, for real: the server accepts the connection and reads it.
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(b"real 0").await.unwrap();
        send.finish().unwrap();
        let accepted = server.next().await;
        let (_s, mut recv) = accepted.accept_bi().await.unwrap();
        assert_eq!(recv.read_to_end(64).await.unwrap(), b"real 0");

        // The forgery: a captured 1-RTT header (the server's connection ID, 8 bytes as quinn
        // issues them), a packet number well ahead, and a STREAM frame opening stream 4 with FIN.
        let template = one_rtt(&seen).pop().expect("a 1-RTT packet was seen");
        let mut forged = vec![(template[0] & 0b0100_0100) | 0b11]; // fixed bit, key phase, 4-byte PN
        forged.extend_from_slice(&template[1..9]);
        forged.extend_from_slice(&100_000u32.to_be_bytes());
        let data = b"injected";
        forged.extend_from_slice(&[0x0b, 0x04, data.len() as u8]);
        forged.extend_from_slice(data);
        forged.resize(forged.len() + 32, 0); // PADDING, beyond the header sample's reach
        let attacker = UdpSocket::bind(LOOPBACK).await.unwrap();
        for _ in 0..3 {
            attacker.send_to(&forged, server_addr).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Stream 4, for real: the server must read this, not the forgery.
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        assert_eq!(
            send.id().index(),
            1,
            "the client's second stream is stream 4"
        );
        send.write_all(b"real 4").await.unwrap();
        send.finish().unwrap();
        let (_s, mut recv) = tokio::time::timeout(Duration::from_secs(10), accepted.accept_bi())
            .await
            .unwrap()
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(64))
            .await
            .unwrap();
        assert_eq!(got.as_deref().ok(), Some(&b"real 4"[..]), "got {got:?}");
    }

    #[tokio::test]
    async fn a_client_falls_back_to_v1_with_a_server_that_does_not_speak_the_tunneled_version() {
        for server in [old_server(), server(Protection::TunnelAndQuic)] {
            let (front, seen) = proxy(server.endpoint.local_addr().unwrap()).await;
            let conn = dial(&server, front, Protection::Tunnel).await;
            assert_eq!(exchange(&server, &conn, MARKER).await, MARKER);
            let seen_now = seen.lock().unwrap().clone();
            let versions: Vec<u32> = seen_now
                .iter()
                .filter(|d| d[0] & 0x80 != 0)
                .map(|d| u32::from_be_bytes(d[1..5].try_into().unwrap()))
                .collect();
            assert_eq!(versions.first(), Some(&TUNNELED_VERSION), "tried first");
            assert_eq!(versions.last(), Some(&V1), "then v1");
            assert!(!carries_marker(&one_rtt(&seen)), "v1 seals 1-RTT packets");
        }
    }

    /// The long-header versions among `seen`, in order.
    fn long_header_versions(seen: &Seen) -> Vec<u32> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|d| d[0] & 0x80 != 0)
            .map(|d| u32::from_be_bytes(d[1..5].try_into().unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn a_peer_without_the_tunneled_version_is_dialled_with_v1_until_the_memory_runs_out() {
        let old = old_server();
        let (front, seen) = proxy(old.endpoint.local_addr().unwrap()).await;
        let peers = PeerVersions::default();
        let first = dial_with(&old, front, Protection::Tunnel, &peers).await;
        assert_eq!(exchange(&old, &first, MARKER).await, MARKER);
        assert_eq!(long_header_versions(&seen)[0], TUNNELED_VERSION);
        assert!(peers.is_v1_only(front, Instant::now()));

        // The next connection starts with v1: no long header of the tunneled version.
        seen.lock().unwrap().clear();
        let second = dial_with(&old, front, Protection::Tunnel, &peers).await;
        assert_eq!(exchange(&old, &second, MARKER).await, MARKER);
        let versions = long_header_versions(&seen);
        assert!(!versions.is_empty());
        assert!(
            versions.iter().all(|v| *v == V1),
            "remembered: v1 straight away, got {versions:x?}"
        );

        // Once the memory runs out, the tunneled version is tried again (the peer may have
        // upgraded). Looked up past its time, the entry goes.
        assert!(peers.is_v1_only(
            front,
            Instant::now() + REMEMBER_V1_FOR - Duration::from_secs(60)
        ));
        assert!(!peers.is_v1_only(front, Instant::now() + REMEMBER_V1_FOR));
        assert!(peers.is_empty());
        seen.lock().unwrap().clear();
        let third = dial_with(&old, front, Protection::Tunnel, &peers).await;
        assert_eq!(exchange(&old, &third, MARKER).await, MARKER);
        assert_eq!(long_header_versions(&seen)[0], TUNNELED_VERSION);

        // A peer that speaks it is never remembered.
        let new = server(Protection::Tunnel);
        let to = new.endpoint.local_addr().unwrap();
        let conn = dial_with(&new, to, Protection::Tunnel, &peers).await;
        assert_eq!(exchange(&new, &conn, MARKER).await, MARKER);
        assert!(!peers.is_v1_only(to, Instant::now()));
    }

    #[test]
    fn the_memory_of_v1_only_peers_is_bounded_and_keeps_the_latest() {
        let peers = PeerVersions::default();
        let t0 = Instant::now();
        let addr = |i: u32| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 4433));
        for i in 0..3 * MAX_REMEMBERED as u32 {
            peers.remember_v1_only(addr(i), t0 + Duration::from_millis(i.into()));
            assert!(peers.len() <= MAX_REMEMBERED);
        }
        let last = 3 * MAX_REMEMBERED as u32 - 1;
        assert!(peers.is_v1_only(addr(last), t0));
        assert!(!peers.is_v1_only(addr(0), t0), "the oldest made room");
    }

    #[tokio::test]
    async fn a_server_keeping_quic_protection_still_serves_v1_clients() {
        let server = server(Protection::Tunnel);
        let (front, seen) = proxy(server.endpoint.local_addr().unwrap()).await;
        let conn = dial(&server, front, Protection::TunnelAndQuic).await;
        assert_eq!(exchange(&server, &conn, MARKER).await, MARKER);
        assert!(!carries_marker(&one_rtt(&seen)));
    }
}
