//! Transport sessions: an AEAD (ChaCha20-Poly1305, or AES-256-GCM where both ends have AES
//! instructions) with explicit counter nonces and a replay window.
//!
//! Keys come from the Noise IK handshake's split (`docs/protocol.md` §"Transport"). The nonce is the
//! Noise nonce (32 zero bits, then the 64-bit counter little-endian); the 16-byte transport
//! header (type, version, receiver index, counter) is authenticated as associated data.

use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

use crate::replay::ReplayWindow;
use crate::wire::packet::{transport_header, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::wire::payload::FLAG_AES_GCM;

/// The AEAD of a session's transport packets, agreed in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439): fast everywhere, constant time without special hardware.
    ChaCha20Poly1305,
    /// AES-256-GCM: several times faster where the CPU has AES and carry-less multiply
    /// instructions; used only when both ends say they have them.
    Aes256Gcm,
}

impl Cipher {
    /// Whether this CPU runs AES-GCM in hardware (AES-NI and PCLMULQDQ, or the ARMv8 crypto
    /// extensions); only then does a node offer it.
    pub fn hardware_aes() -> bool {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }

    /// The cipher for a session whose ends sent `ours` and `theirs` as handshake flags: AES-256-GCM
    /// only when both offered it. Both ends compute the same answer from the same two
    /// authenticated payloads, so it cannot be steered by anyone in between.
    pub fn agree(ours: u8, theirs: u8) -> Self {
        if ours & theirs & FLAG_AES_GCM != 0 {
            Cipher::Aes256Gcm
        } else {
            Cipher::ChaCha20Poly1305
        }
    }

    /// Most packets one key may seal. ChaCha20-Poly1305 with unique nonces has no practical
    /// limit; for AES-GCM the bound keeps the confidentiality advantage near 2^-57 for
    /// 1400-byte packets (2^36 blocks under one key).
    pub fn message_limit(self) -> u64 {
        match self {
            Cipher::ChaCha20Poly1305 => u64::MAX,
            Cipher::Aes256Gcm => 1 << 29,
        }
    }

    /// The name used in diagnostics.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "ChaCha20-Poly1305",
            Cipher::Aes256Gcm => "AES-256-GCM",
        }
    }

    fn key(self, k: &[u8; 32]) -> LessSafeKey {
        let alg = match self {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        };
        LessSafeKey::new(UnboundKey::new(alg, k).expect("both ciphers take 32-byte keys"))
    }
}

/// Why a packet could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The counter was seen before or is behind the window.
    #[error("replayed or too old")]
    Replayed,
    /// Authentication failed.
    #[error("authentication failed")]
    Decrypt,
}

/// One direction pair of keys with counters.
pub struct Session {
    /// Our index: peers address packets for this session to it.
    pub local_index: u32,
    /// The peer's index for this session.
    pub remote_index: u32,
    /// When the handshake completed.
    pub created: Instant,
    /// Whether we initiated the handshake.
    pub initiator: bool,
    /// The AEAD agreed in the handshake.
    pub cipher: Cipher,
    send: LessSafeKey,
    recv: LessSafeKey,
    send_counter: u64,
    replay: ReplayWindow,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("sent", &self.send_counter)
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Session {
    /// A session from split keys.
    pub fn new(
        local_index: u32,
        remote_index: u32,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        created: Instant,
        initiator: bool,
        cipher: Cipher,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            created,
            initiator,
            cipher,
            send: cipher.key(send_key),
            recv: cipher.key(recv_key),
            send_counter: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// Packets sealed so far (the next counter).
    pub fn sent(&self) -> u64 {
        self.send_counter
    }

    /// Moves the send counter on as if `n` packets had been sealed (tests of the limits only:
    /// reaching 2^28 for real would take hours).
    #[cfg(test)]
    pub(crate) fn skip_sent(&mut self, n: u64) {
        self.send_counter += n;
    }

    /// Seals `inner` into a TRANSPORT packet written to `out` (cleared first).
    pub fn seal(&mut self, inner: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(TRANSPORT_HEADER_LEN + inner.len() + TAG_LEN);
        out.resize(TRANSPORT_HEADER_LEN, 0);
        out.extend_from_slice(inner);
        self.seal_in_place(out);
    }

    /// Seals a TRANSPORT packet in place: `out` holds room for the header (its first
    /// [`TRANSPORT_HEADER_LEN`] bytes, overwritten) and then the inner frame; the tag is
    /// appended. Saves copying a frame built straight into the datagram's buffer.
    pub fn seal_in_place(&mut self, out: &mut Vec<u8>) {
        assert!(
            out.len() >= TRANSPORT_HEADER_LEN,
            "no room for the transport header"
        );
        let counter = self.send_counter;
        self.send_counter += 1;
        let header = transport_header(self.remote_index, counter);
        out[..TRANSPORT_HEADER_LEN].copy_from_slice(&header);
        let tag = self
            .send
            .seal_in_place_separate_tag(
                nonce(counter),
                Aad::from(header),
                &mut out[TRANSPORT_HEADER_LEN..],
            )
            .expect("both ciphers seal any datagram-sized input");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens a TRANSPORT packet's sealed part into `buf`; checks and then records the counter.
    pub fn open<'b>(
        &mut self,
        header: &[u8],
        counter: u64,
        sealed: &[u8],
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], OpenError> {
        self.open_after(0, header, counter, sealed, buf)
    }

    /// As [`Session::open`], with the plaintext after `room` bytes of `buf` (zeroed), for a
    /// writer that puts a header of its own in front (a TUN interface's virtio-net header).
    /// Returns the plaintext alone.
    pub fn open_after<'b>(
        &mut self,
        room: usize,
        header: &[u8],
        counter: u64,
        sealed: &[u8],
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], OpenError> {
        if !self.replay.check(counter) {
            return Err(OpenError::Replayed);
        }
        let Some(body_len) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(OpenError::Decrypt);
        };
        buf.clear();
        buf.resize(room, 0);
        buf.extend_from_slice(sealed);
        let plain_len = self
            .recv
            .open_in_place(nonce(counter), Aad::from(header), &mut buf[room..])
            .map_err(|_| OpenError::Decrypt)?
            .len();
        debug_assert_eq!(plain_len, body_len);
        buf.truncate(room + plain_len);
        // Only an authentic packet moves the window.
        if !self.replay.update(counter) {
            return Err(OpenError::Replayed);
        }
        Ok(&buf[room..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packet::Packet;

    fn pair() -> (Session, Session) {
        let now = Instant::now();
        (
            Session::new(
                1,
                2,
                &[7; 32],
                &[8; 32],
                now,
                true,
                Cipher::ChaCha20Poly1305,
            ),
            Session::new(
                2,
                1,
                &[8; 32],
                &[7; 32],
                now,
                false,
                Cipher::ChaCha20Poly1305,
            ),
        )
    }

    fn open(s: &mut Session, pkt: &[u8]) -> Result<Vec<u8>, OpenError> {
        let Packet::Transport {
            counter,
            header,
            sealed,
            receiver,
        } = Packet::parse(pkt).unwrap()
        else {
            panic!()
        };
        assert_eq!(receiver, s.local_index);
        let mut buf = Vec::new();
        s.open(header, counter, sealed, &mut buf)
            .map(|b| b.to_vec())
    }

    #[test]
    fn seal_open_replay_and_tamper() {
        let (mut a, mut b) = pair();
        let mut p = Vec::new();
        a.seal(b"\x60hello", &mut p);
        assert_eq!(p.len(), 16 + 6 + 16);
        assert_eq!(open(&mut b, &p).unwrap(), b"\x60hello");
        assert_eq!(open(&mut b, &p), Err(OpenError::Replayed));
        let mut q = Vec::new();
        a.seal(b"x", &mut q);
        let mut tampered = q.clone();
        tampered[10] ^= 1; // the counter, part of the associated data
        assert!(open(&mut b, &tampered).is_err());
        let last = q.len() - 1;
        q[last] ^= 1;
        assert_eq!(open(&mut b, &q), Err(OpenError::Decrypt));
        // A forged packet does not burn its counter: the real one still opens.
        q[last] ^= 1;
        assert_eq!(open(&mut b, &q).unwrap(), b"x");
    }

    #[test]
    fn frames_are_standard_ietf_chacha20_poly1305_with_the_noise_nonce() {
        // An independent implementation (RustCrypto) opens what we seal.
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let (mut a, _) = pair();
        let mut p = Vec::new();
        a.seal(b"interop", &mut p);
        let Packet::Transport {
            counter,
            header,
            sealed,
            ..
        } = Packet::parse(&p).unwrap()
        else {
            panic!()
        };
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        let plain = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into())
            .decrypt(
                &n.into(),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .unwrap();
        assert_eq!(plain, b"interop");
    }

    #[test]
    fn aes_sessions_are_standard_aes_256_gcm_with_the_same_nonce_and_header() {
        // An independent implementation (RustCrypto) opens what we seal with AES-256-GCM.
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let now = Instant::now();
        let mut a = Session::new(1, 2, &[7; 32], &[8; 32], now, true, Cipher::Aes256Gcm);
        let mut b = Session::new(2, 1, &[8; 32], &[7; 32], now, false, Cipher::Aes256Gcm);
        let mut p = Vec::new();
        a.seal(b"interop", &mut p);
        a.seal(b"interop", &mut p);
        let Packet::Transport {
            counter,
            header,
            sealed,
            ..
        } = Packet::parse(&p).unwrap()
        else {
            panic!()
        };
        assert_eq!(counter, 1);
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        let plain = aes_gcm::Aes256Gcm::new(&[7u8; 32].into())
            .decrypt(
                &n.into(),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .unwrap();
        assert_eq!(plain, b"interop");
        // And the two ciphers never open each other's packets.
        assert_eq!(open(&mut b, &p).unwrap(), b"interop");
        let mut c = Session::new(
            2,
            1,
            &[8; 32],
            &[7; 32],
            now,
            false,
            Cipher::ChaCha20Poly1305,
        );
        assert_eq!(open(&mut c, &p), Err(OpenError::Decrypt));
    }

    #[test]
    fn the_cipher_is_aes_only_when_both_flags_offer_it() {
        use crate::wire::payload::{FLAG_AES_GCM, FLAG_MAPPING_KNOWN};
        let aes = FLAG_AES_GCM | FLAG_MAPPING_KNOWN;
        assert_eq!(Cipher::agree(aes, FLAG_AES_GCM), Cipher::Aes256Gcm);
        assert_eq!(
            Cipher::agree(aes, FLAG_MAPPING_KNOWN),
            Cipher::ChaCha20Poly1305
        );
        assert_eq!(Cipher::agree(0, aes), Cipher::ChaCha20Poly1305);
        assert!(Cipher::Aes256Gcm.message_limit() < Cipher::ChaCha20Poly1305.message_limit());
    }

    #[test]
    fn reordered_packets_open() {
        let (mut a, mut b) = pair();
        let pkts: Vec<Vec<u8>> = (0..100u8)
            .map(|i| {
                let mut p = Vec::new();
                a.seal(&[i], &mut p);
                p
            })
            .collect();
        for p in pkts.iter().rev() {
            assert!(open(&mut b, p).is_ok());
        }
    }
}
