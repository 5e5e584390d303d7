//! The Noise IK handshake (`Noise_IK_25519_ChaChaPoly_BLAKE2s`, via `snow`) and the MACs and
//! cookies that guard the responder (`docs/protocol.md` §"Handshake").
//!
//! The packets' layout is [`crate::wire::packet`]'s, the payloads' [`crate::wire::payload`]'s;
//! this module holds the cryptography:
//!
//! - Message 1 (initiator → responder, relayable by the rendezvous, opaque to it) carries an
//!   [`InitPayload`]; message 2 (responder → initiator) the responder's [`Advert`].
//! - `mac1` = BLAKE3-keyed(derive_key(MAC1, responder's X25519 key), packet before mac1)[..16]:
//!   checked before any Diffie-Hellman, it proves the sender knows whom it addresses.
//! - `mac2` = BLAKE3-keyed(derive_key(MAC2, cookie), packet before mac2)[..16], where the cookie is
//!   a keyed hash of the sender's address that the responder hands out under load, sealed in a
//!   COOKIE_REPLY (XChaCha20-Poly1305, key derived from the responder's key, mac1 as AD).
//!
//! Every random draw (Noise ephemeral keys, cookie nonces) comes from the caller's
//! [`crate::rng::Rng`], so a seeded tunnel sends the same bytes every run.

use std::cell::Cell;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::HandshakeState;
use zeroize::Zeroizing;

use crate::identity::{Identity, NodeId};
use crate::rng::{self, Rng, RngCore};
use crate::wire::packet::{self, COOKIE_LEN, COOKIE_NONCE_LEN, MAC_LEN, SEALED_COOKIE_LEN};
use crate::wire::payload::{Advert, InitPayload, PayloadError, MAX_CANDIDATES};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Prologue bound into the handshake hash.
pub const PROLOGUE: &[u8] = b"shipworm tunnel v1";
const MAC1_CONTEXT: &str = "shipworm 2026 tunnel mac1 v1";
const MAC2_CONTEXT: &str = "shipworm 2026 tunnel mac2 v1";
const COOKIE_KEY_CONTEXT: &str = "shipworm 2026 tunnel cookie v1";
const MAX_NOISE_MSG: usize = 1024;

/// A 32-byte transport key from the Noise split, wiped when dropped.
pub type Key = Zeroizing<[u8; 32]>;

/// Why a handshake message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Noise failed (wrong key, tampering, or a message for someone else).
    #[error("noise: {0}")]
    Noise(String),
    /// The payload is malformed.
    #[error("bad handshake payload: {0}")]
    Payload(#[from] PayloadError),
    /// The claimed NodeId does not match the authenticated static key.
    #[error("initiator's NodeId does not match its static key")]
    IdentityMismatch,
    /// A cookie could not be opened.
    #[error("cookie reply does not authenticate")]
    Cookie,
}

fn noise_err(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

/// snow's source of randomness, drawn from ours.
struct NoiseRng(Rng);

impl Random for NoiseRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// snow's default primitives, with randomness (the ephemeral key) from a generator forked from
/// the tunnel's instead of the OS.
struct SeededResolver {
    rng: Cell<Option<Rng>>,
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // snow asks once per handshake state; a second call gets nothing, and building fails
        // rather than falling back to another source.
        let rng = self.rng.take()?;
        Some(Box::new(NoiseRng(rng)))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// A Noise builder whose randomness is forked from `rng`.
fn builder(rng: &mut Rng) -> snow::Builder<'static> {
    let resolver = SeededResolver {
        rng: Cell::new(Some(rng::fork(rng))),
    };
    snow::Builder::with_resolver(
        NOISE_PARAMS.parse().expect("static Noise parameters parse"),
        Box::new(resolver),
    )
}

fn mac(context: &str, key_material: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let key = blake3::derive_key(context, key_material);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&blake3::keyed_hash(&key, data).as_bytes()[..MAC_LEN]);
    out
}

fn ct_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Appends mac1 and mac2 (zeros without a cookie) to a handshake packet.
fn seal_macs(
    packet: &mut Vec<u8>,
    responder: &NodeId,
    cookie: Option<&[u8; COOKIE_LEN]>,
) -> [u8; MAC_LEN] {
    let mac1 = mac(MAC1_CONTEXT, &responder.x25519_public(), packet);
    packet.extend_from_slice(&mac1);
    let mac2 = cookie.map_or([0u8; MAC_LEN], |c| mac(MAC2_CONTEXT, c, packet));
    packet.extend_from_slice(&mac2);
    mac1
}

/// Whether a handshake packet's mac1 is right for us (the responder or initiator receiving it).
pub fn check_mac1(packet: &[u8], us: &NodeId) -> bool {
    if packet.len() < 2 * MAC_LEN {
        return false;
    }
    let at = packet::mac1_offset(packet.len());
    let mut got = [0u8; MAC_LEN];
    got.copy_from_slice(&packet[at..at + MAC_LEN]);
    ct_eq(&mac(MAC1_CONTEXT, &us.x25519_public(), &packet[..at]), &got)
}

/// Whether a handshake packet's mac2 is right for `cookie`.
pub fn check_mac2(packet: &[u8], cookie: &[u8; COOKIE_LEN]) -> bool {
    if packet.len() < 2 * MAC_LEN {
        return false;
    }
    let at = packet::mac2_offset(packet.len());
    let mut got = [0u8; MAC_LEN];
    got.copy_from_slice(&packet[at..]);
    ct_eq(&mac(MAC2_CONTEXT, cookie, &packet[..at]), &got)
}

/// An initiator waiting for message 2.
pub struct Initiator {
    state: HandshakeState,
    /// Our session index.
    pub local_index: u32,
    /// The responder.
    pub peer: NodeId,
    /// The packet without MACs, to re-MAC when a cookie arrives.
    unmaced: Vec<u8>,
    /// The mac1 of the last sent packet (AD of a cookie reply).
    pub last_mac1: [u8; MAC_LEN],
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("local_index", &self.local_index)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Builds message 1 to `peer` with an ephemeral key drawn from `rng`; returns the state and
    /// the HANDSHAKE_INIT packet.
    pub fn start(
        rng: &mut Rng,
        identity: &Identity,
        peer: &NodeId,
        local_index: u32,
        payload: &InitPayload,
        cookie: Option<&[u8; COOKIE_LEN]>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::start_padded(
            rng,
            identity,
            peer,
            local_index,
            payload,
            cookie,
            MESSAGE_1_LEN,
        )
    }

    /// As [`Initiator::start`], padding message 1 to at least `pad_to` bytes instead of
    /// [`MESSAGE_1_LEN`] (0: no padding).
    pub fn start_padded(
        rng: &mut Rng,
        identity: &Identity,
        peer: &NodeId,
        local_index: u32,
        payload: &InitPayload,
        cookie: Option<&[u8; COOKIE_LEN]>,
        pad_to: usize,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let secret = identity.x25519_secret();
        let remote = peer.x25519_public();
        let mut state = builder(rng)
            .local_private_key(&secret[..])
            .and_then(|b| b.remote_public_key(&remote))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_initiator())
            .map_err(noise_err)?;
        let mut noise = [0u8; MAX_NOISE_MSG];
        let mut body = Vec::with_capacity(MESSAGE_1_LEN);
        payload.emit(&mut body);
        // Zero padding up to `pad_to`: the responder's credit (see MESSAGE_1_LEN).
        body.resize(
            body.len().max(
                pad_to
                    .min(MAX_NOISE_MSG - 96)
                    .saturating_sub(MESSAGE_1_OVERHEAD),
            ),
            0,
        );
        let n = state.write_message(&body, &mut noise).map_err(noise_err)?;
        let mut unmaced = Vec::new();
        packet::emit_init(local_index, &noise[..n], &mut unmaced);
        let mut packet = unmaced.clone();
        let last_mac1 = seal_macs(&mut packet, peer, cookie);
        Ok((
            Self {
                state,
                local_index,
                peer: *peer,
                unmaced,
                last_mac1,
            },
            packet,
        ))
    }

    /// The same message 1 with MACs recomputed for `cookie` (after a COOKIE_REPLY).
    pub fn remac(&mut self, cookie: Option<&[u8; COOKIE_LEN]>) -> Vec<u8> {
        let mut packet = self.unmaced.clone();
        self.last_mac1 = seal_macs(&mut packet, &self.peer, cookie);
        packet
    }

    /// Reads message 2; returns `(send key, receive key, responder's advert)`.
    pub fn finish(mut self, noise: &[u8]) -> Result<(Key, Key, Advert), HandshakeError> {
        let mut payload = [0u8; MAX_NOISE_MSG];
        let n = self
            .state
            .read_message(noise, &mut payload)
            .map_err(noise_err)?;
        let advert = Advert::parse(&payload[..n])?;
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok((Zeroizing::new(i2r), Zeroizing::new(r2i), advert))
    }
}

/// A responder that has authenticated message 1 and may answer it.
pub struct Responder {
    state: HandshakeState,
    /// What the initiator said.
    pub payload: InitPayload,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Reads the Noise part of message 1 (after mac checks). Costs the DH operations. The
    /// ephemeral key of the answer will be drawn from `rng`.
    pub fn read(rng: &mut Rng, identity: &Identity, noise: &[u8]) -> Result<Self, HandshakeError> {
        let secret = identity.x25519_secret();
        let mut state = builder(rng)
            .local_private_key(&secret[..])
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_responder())
            .map_err(noise_err)?;
        let mut payload = [0u8; MAX_NOISE_MSG];
        let n = state.read_message(noise, &mut payload).map_err(noise_err)?;
        let payload = InitPayload::parse(&payload[..n])?;
        let rs = state
            .get_remote_static()
            .ok_or(HandshakeError::IdentityMismatch)?;
        if rs != payload.initiator.x25519_public() {
            return Err(HandshakeError::IdentityMismatch);
        }
        Ok(Self { state, payload })
    }

    /// Writes message 2; returns `(HANDSHAKE_RESP packet, send key, receive key)`.
    pub fn answer(
        mut self,
        local_index: u32,
        remote_index: u32,
        advert: &Advert,
    ) -> Result<(Vec<u8>, Key, Key), HandshakeError> {
        let mut body = Vec::with_capacity(2 + MAX_CANDIDATES * crate::wire::addr::MAX_LEN);
        advert.emit(&mut body);
        let mut noise = [0u8; MAX_NOISE_MSG];
        let n = self
            .state
            .write_message(&body, &mut noise)
            .map_err(noise_err)?;
        let mut out = Vec::new();
        packet::emit_resp(local_index, remote_index, &noise[..n], &mut out);
        seal_macs(&mut out, &self.payload.initiator, None);
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok((out, Zeroizing::new(r2i), Zeroizing::new(i2r)))
    }
}

/// Message 1 is padded (zeros inside its encrypted payload) to at least this many bytes. The
/// responder may send on the initiator's behalf, to addresses that have not proved themselves,
/// no more bytes than the initiator sent it (the engine's send gate), and an answer to a
/// relayed message 1 has to open the way with message 2 copies and the first probes: the
/// initiator, who wants the connection, pays for them up front, as a QUIC client pads its first
/// Initial to 1200 bytes for the server's anti-amplification limit.
pub const MESSAGE_1_LEN: usize = 512;

/// The bytes of a HANDSHAKE_INIT besides its payload: header, sender index, Noise message 1's
/// ephemeral key, encrypted static key and payload tag, mac1 and mac2.
pub const MESSAGE_1_OVERHEAD: usize =
    packet::INDEX + 4 + 32 + (32 + packet::TAG_LEN) + packet::TAG_LEN + 2 * MAC_LEN;

/// The bytes of a HANDSHAKE_RESP besides its advert: header, both indices, Noise message 2's
/// ephemeral key and tag, mac1 and mac2.
pub const RESP_OVERHEAD: usize = packet::RESP_RECEIVER + 4 + 32 + packet::TAG_LEN + 2 * MAC_LEN;

/// Drops candidates from the end of `advert` until a message 2 carrying it is at most
/// `limit` bytes (the size of the message 1 it answers); returns whether any were dropped.
pub fn fit_response(advert: &mut Advert, limit: usize) -> bool {
    let mut dropped = false;
    loop {
        let mut body = Vec::new();
        advert.emit(&mut body);
        if RESP_OVERHEAD + body.len() <= limit || advert.candidates.is_empty() {
            return dropped;
        }
        advert.candidates.pop();
        dropped = true;
    }
}

/// Seals `cookie` for the sender of a handshake whose mac1 was `mac1`, under a nonce drawn
/// from `rng`; we are `us`. Returns the COOKIE_REPLY packet.
pub fn cookie_reply(
    rng: &mut Rng,
    us: &NodeId,
    receiver_index: u32,
    mac1: &[u8; MAC_LEN],
    cookie: &[u8; COOKIE_LEN],
) -> Vec<u8> {
    let key = blake3::derive_key(COOKIE_KEY_CONTEXT, &us.x25519_public());
    let mut nonce = [0u8; COOKIE_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let sealed = XChaCha20Poly1305::new(&key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: cookie,
                aad: mac1,
            },
        )
        .expect("sealing 16 bytes cannot fail");
    let sealed: [u8; SEALED_COOKIE_LEN] = sealed
        .try_into()
        .expect("a sealed cookie is the cookie and its tag");
    packet::cookie_reply(receiver_index, &nonce, &sealed)
}

/// Opens a cookie sent by `responder` in answer to our handshake whose mac1 was `mac1`.
pub fn open_cookie(
    responder: &NodeId,
    mac1: &[u8; MAC_LEN],
    nonce: &[u8; COOKIE_NONCE_LEN],
    sealed: &[u8],
) -> Result<[u8; COOKIE_LEN], HandshakeError> {
    let key = blake3::derive_key(COOKIE_KEY_CONTEXT, &responder.x25519_public());
    let plain = XChaCha20Poly1305::new(&key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: mac1,
            },
        )
        .map_err(|_| HandshakeError::Cookie)?;
    plain.try_into().map_err(|_| HandshakeError::Cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packet::Packet;
    use crate::wire::payload::{FLAG_HAS_PORT_MAPPING, FLAG_MAPS_PER_DESTINATION};
    use std::net::SocketAddr;

    #[test]
    fn ik_handshake_yields_matching_keys_and_carries_candidates() {
        let (a, b) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let cands: Vec<SocketAddr> = vec![
            "192.0.2.1:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
        ];
        let payload = InitPayload {
            initiator: a.node_id(),
            timestamp_ms: 42,
            advert: Advert {
                flags: FLAG_MAPS_PER_DESTINATION,
                candidates: cands.clone(),
            },
        };
        let (init, m1) =
            Initiator::start(&mut rng::from_seed(1), &a, &b.node_id(), 7, &payload, None).unwrap();
        assert_eq!(m1.len(), MESSAGE_1_LEN, "padded");
        assert!(check_mac1(&m1, &b.node_id()));
        assert!(
            !check_mac1(&m1, &a.node_id()),
            "mac1 is bound to the responder"
        );
        let Packet::Init { sender, noise, .. } = Packet::parse(&m1).unwrap() else {
            panic!()
        };
        assert_eq!(sender, 7);
        let resp = Responder::read(&mut rng::from_seed(2), &b, noise).unwrap();
        assert_eq!(resp.payload, payload);
        let theirs = Advert {
            flags: FLAG_HAS_PORT_MAPPING,
            candidates: cands[..1].to_vec(),
        };
        let (m2, b_send, b_recv) = resp.answer(9, 7, &theirs).unwrap();
        assert!(check_mac1(&m2, &a.node_id()));
        let mut advert_bytes = Vec::new();
        theirs.emit(&mut advert_bytes);
        assert_eq!(m2.len(), RESP_OVERHEAD + advert_bytes.len());
        let mut fitted = theirs.clone();
        assert!(!fit_response(&mut fitted, m2.len()));
        assert!(fit_response(&mut fitted, m2.len() - 1));
        assert!(fitted.candidates.is_empty());
        let Packet::Resp {
            sender,
            receiver,
            noise,
            ..
        } = Packet::parse(&m2).unwrap()
        else {
            panic!()
        };
        assert_eq!((sender, receiver), (9, 7));
        let (a_send, a_recv, got) = init.finish(noise).unwrap();
        assert_eq!(got, theirs);
        assert_eq!((&a_send, &a_recv), (&b_recv, &b_send));
        assert_ne!(a_send, a_recv);
    }

    /// Our copies of the Noise split keys and of the static secret wipe themselves when
    /// dropped (a bound checked by the compiler: this stops compiling if one of them becomes a
    /// bare array again).
    #[test]
    fn split_keys_and_secrets_are_wiped_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let (a, b) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let payload = InitPayload {
            initiator: a.node_id(),
            timestamp_ms: 1,
            advert: Advert::default(),
        };
        let (init, m1) =
            Initiator::start(&mut rng::from_seed(1), &a, &b.node_id(), 7, &payload, None).unwrap();
        let Packet::Init { noise, .. } = Packet::parse(&m1).unwrap() else {
            panic!()
        };
        let resp = Responder::read(&mut rng::from_seed(2), &b, noise).unwrap();
        let (m2, b_send, b_recv) = resp.answer(9, 7, &Advert::default()).unwrap();
        wiped(&b_send);
        wiped(&b_recv);
        let Packet::Resp { noise, .. } = Packet::parse(&m2).unwrap() else {
            panic!()
        };
        let (a_send, a_recv, _) = init.finish(noise).unwrap();
        wiped(&a_send);
        wiped(&a_recv);
        wiped(&a.x25519_secret());
        wiped(&a.secret_seed());
        wiped(&a);
    }

    #[test]
    fn message_1_is_opaque_to_everyone_but_the_responder() {
        let (a, b, c) = (
            Identity::from_seed(&[1; 32]),
            Identity::from_seed(&[2; 32]),
            Identity::from_seed(&[3; 32]),
        );
        let payload = InitPayload {
            initiator: a.node_id(),
            timestamp_ms: 1,
            advert: Advert::default(),
        };
        let (_, m1) =
            Initiator::start(&mut rng::from_seed(1), &a, &b.node_id(), 1, &payload, None).unwrap();
        let Packet::Init { noise, .. } = Packet::parse(&m1).unwrap() else {
            panic!()
        };
        assert!(Responder::read(&mut rng::from_seed(2), &c, noise).is_err());
        // The initiator's NodeId never appears in clear.
        assert!(!m1.windows(32).any(|w| w == a.node_id().as_bytes()));
    }

    #[test]
    fn a_payload_claiming_another_identity_is_refused() {
        let (a, b, c) = (
            Identity::from_seed(&[1; 32]),
            Identity::from_seed(&[2; 32]),
            Identity::from_seed(&[3; 32]),
        );
        let lie = InitPayload {
            initiator: c.node_id(),
            timestamp_ms: 1,
            advert: Advert::default(),
        };
        let (_, m1) =
            Initiator::start(&mut rng::from_seed(1), &a, &b.node_id(), 1, &lie, None).unwrap();
        let Packet::Init { noise, .. } = Packet::parse(&m1).unwrap() else {
            panic!()
        };
        assert_eq!(
            Responder::read(&mut rng::from_seed(2), &b, noise).unwrap_err(),
            HandshakeError::IdentityMismatch
        );
    }

    #[test]
    fn one_seed_one_message_1() {
        let (a, b) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let payload = InitPayload {
            initiator: a.node_id(),
            timestamp_ms: 1,
            advert: Advert::default(),
        };
        let m1 = |seed| {
            let start = Initiator::start(
                &mut rng::from_seed(seed),
                &a,
                &b.node_id(),
                1,
                &payload,
                None,
            );
            start.unwrap().1
        };
        assert_eq!(m1(5), m1(5), "the ephemeral key comes from the seed");
        assert_ne!(m1(5), m1(6));
    }

    #[test]
    fn cookie_round_trip_and_mac2() {
        let (a, b) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let payload = InitPayload {
            initiator: a.node_id(),
            timestamp_ms: 1,
            advert: Advert::default(),
        };
        let (mut init, m1) =
            Initiator::start(&mut rng::from_seed(1), &a, &b.node_id(), 5, &payload, None).unwrap();
        let cookie = [9u8; COOKIE_LEN];
        assert!(!check_mac2(&m1, &cookie));
        let reply = cookie_reply(
            &mut rng::from_seed(3),
            &b.node_id(),
            5,
            &init.last_mac1,
            &cookie,
        );
        assert!(reply.len() < m1.len(), "a cookie reply never amplifies");
        let Packet::Cookie {
            receiver,
            nonce,
            sealed,
        } = Packet::parse(&reply).unwrap()
        else {
            panic!()
        };
        assert_eq!(receiver, 5);
        let got = open_cookie(&b.node_id(), &init.last_mac1, &nonce, sealed).unwrap();
        assert_eq!(got, cookie);
        assert!(open_cookie(&a.node_id(), &init.last_mac1, &nonce, sealed).is_err());
        let m1b = init.remac(Some(&got));
        assert!(check_mac1(&m1b, &b.node_id()));
        assert!(check_mac2(&m1b, &cookie));
    }
}
