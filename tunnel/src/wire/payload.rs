//! The handshake payloads, carried inside Noise (`docs/protocol.md` §"Handshake").
//!
//! ```text
//! advert           flags (u8) | candidate count (u8, ≤ 16) | address*      (addresses: wire::addr)
//! message 1        initiator NodeId (32) | timestamp ms (u64) | advert
//! message 2        advert
//! ADVERT frame     0x04 | advert                                            (wire::frame)
//! ```
//!
//! The [`Advert`] is what a node says about itself: its `FLAG_*` bits and where it may be
//! reached. Message 1 adds the initiator's NodeId (checked against the Noise static key) and a
//! timestamp that must increase per initiator (a replayed message 1 gets no answer).

use std::net::SocketAddr;

use crate::identity::{NodeId, NODE_ID_LEN};
use crate::wire::{addr, Reader, Trailing, Truncated};

/// Flag: this node's NAT maps per destination (a "hard" NAT), as its STUN checks found.
pub const FLAG_MAPS_PER_DESTINATION: u8 = 0x01;
/// Flag: this node holds a port mapping on its gateway (UPnP IGD, NAT-PMP or PCP).
pub const FLAG_HAS_PORT_MAPPING: u8 = 0x02;
/// Flag: this node has measured its mapping behaviour (without it, `FLAG_MAPS_PER_DESTINATION`
/// means nothing).
pub const FLAG_MAPPING_KNOWN: u8 = 0x04;
/// Flag: this node runs AES-GCM in hardware and offers AES-256-GCM for the session's transport
/// packets (set by the tunnel itself; see [`crate::session::Cipher::agree`]).
pub const FLAG_AES_GCM: u8 = 0x08;
/// Flag: this node's NAT maps per destination and allocates its ports one after the other (its
/// two mappings toward a rendezvous' two ports lie a few ports apart, the second above the
/// first): a peer probing for it tries the ports just above the address the rendezvous saw
/// first (`docs/protocol.md` §"Hard NATs, port mappings and extra sockets").
pub const FLAG_PORTS_SEQUENTIAL: u8 = 0x10;

/// Most candidates in one advert.
pub const MAX_CANDIDATES: usize = 16;

/// Why a handshake payload or advert is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A field runs past the end.
    #[error(transparent)]
    Truncated(#[from] Truncated),
    /// Bytes after the last candidate.
    #[error("advert: {0}")]
    Trailing(#[from] Trailing),
    /// More candidates than [`MAX_CANDIDATES`].
    #[error("{0} candidates, at most {MAX_CANDIDATES} allowed")]
    TooManyCandidates(u8),
    /// A malformed candidate address.
    #[error("bad candidate: {0}")]
    Candidate(#[from] addr::AddrError),
    /// The initiator's NodeId is not a valid key.
    #[error("initiator NodeId is not a valid key")]
    NodeId,
    /// Message 1's padding holds something other than zeros (one encoding per payload).
    #[error("message 1 padding is not all zeros")]
    Padding,
}

/// What a node says about itself in a handshake: flags and where it may be reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advert {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Candidate addresses (at most [`MAX_CANDIDATES`]; more are not sent).
    pub candidates: Vec<SocketAddr>,
}

impl Advert {
    /// Parses an advert that ends the input.
    pub fn parse(b: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(b);
        let advert = Self::read(&mut r)?;
        r.finish()?;
        Ok(advert)
    }

    /// Reads an advert from `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, PayloadError> {
        let flags = r.u8("flags")?;
        let n = r.u8("candidate count")?;
        if usize::from(n) > MAX_CANDIDATES {
            return Err(PayloadError::TooManyCandidates(n));
        }
        let candidates = (0..n).map(|_| r.addr()).collect::<Result<_, _>>()?;
        Ok(Self { flags, candidates })
    }

    /// Appends the encoding: the first [`MAX_CANDIDATES`] candidates only.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let c = &self.candidates[..self.candidates.len().min(MAX_CANDIDATES)];
        out.push(self.flags);
        out.push(c.len() as u8);
        for a in c {
            addr::emit(a, out);
        }
    }
}

/// Message 1's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPayload {
    /// The initiator (checked against the Noise static key).
    pub initiator: NodeId,
    /// Initiator's clock, ms since the Unix epoch; must increase per initiator.
    pub timestamp_ms: u64,
    /// Flags and candidates.
    pub advert: Advert,
}

impl InitPayload {
    /// Parses message 1's payload.
    pub fn parse(b: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(b);
        let id = r.array::<NODE_ID_LEN>("initiator NodeId")?;
        let initiator = NodeId::from_bytes(&id).map_err(|_| PayloadError::NodeId)?;
        let timestamp_ms = r.u64("timestamp")?;
        let advert = Advert::read(&mut r)?;
        // Zero padding may follow (see `handshake::MESSAGE_1_LEN`).
        if r.rest().iter().any(|&b| b != 0) {
            return Err(PayloadError::Padding);
        }
        Ok(Self {
            initiator,
            timestamp_ms,
            advert,
        })
    }

    /// Appends the encoding.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.initiator.as_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        self.advert.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    fn advert() -> Advert {
        Advert {
            flags: FLAG_HAS_PORT_MAPPING,
            candidates: vec![
                "192.0.2.1:1".parse().unwrap(),
                "[2001:db8::1]:2".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn advert_vector_and_round_trip() {
        let mut v = Vec::new();
        advert().emit(&mut v);
        assert_eq!(&v[..9], &[2, 2, 4, 0, 1, 192, 0, 2, 1]);
        assert_eq!(v.len(), 2 + 7 + 19);
        assert_eq!(Advert::parse(&v), Ok(advert()));
        assert_eq!(Advert::parse(&[0, 0]), Ok(Advert::default()));
    }

    #[test]
    fn at_most_sixteen_candidates_are_sent_and_accepted() {
        let many = Advert {
            flags: 0,
            candidates: (0..20)
                .map(|p| SocketAddr::from(([192, 0, 2, 1], p)))
                .collect(),
        };
        let mut v = Vec::new();
        many.emit(&mut v);
        assert_eq!(v[1], 16);
        assert_eq!(Advert::parse(&v).unwrap().candidates.len(), 16);
        v[1] = 17;
        assert_eq!(Advert::parse(&v), Err(PayloadError::TooManyCandidates(17)));
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused() {
        let mut v = Vec::new();
        advert().emit(&mut v);
        assert!(matches!(
            Advert::parse(&v[..v.len() - 1]),
            Err(PayloadError::Candidate(_))
        ));
        assert_eq!(
            Advert::parse(&[1]),
            Err(PayloadError::Truncated(Truncated {
                field: "candidate count",
                need: 1,
                have: 0
            }))
        );
        v.push(0);
        assert_eq!(Advert::parse(&v), Err(PayloadError::Trailing(Trailing(1))));

        let init = InitPayload {
            initiator: Identity::from_seed(&[1; 32]).node_id(),
            timestamp_ms: 0x0102,
            advert: advert(),
        };
        let mut m = Vec::new();
        init.emit(&mut m);
        assert_eq!(&m[32..40], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(InitPayload::parse(&m), Ok(init.clone()));
        assert_eq!(
            InitPayload::parse(&m[..36]),
            Err(PayloadError::Truncated(Truncated {
                field: "timestamp",
                need: 8,
                have: 4
            }))
        );
        let padded_len = m.len() + 40;
        let mut padded = m.clone();
        padded.resize(padded_len, 0);
        assert_eq!(
            InitPayload::parse(&padded),
            Ok(init),
            "zero padding is ignored"
        );
        m.push(9);
        assert_eq!(InitPayload::parse(&m), Err(PayloadError::Padding));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = InitPayload::parse(&bytes);
            if let Ok(a) = Advert::parse(&bytes) {
                let mut out = Vec::new();
                a.emit(&mut out);
                // One encoding per advert: whatever parses re-encodes to the same bytes.
                prop_assert_eq!(out, bytes);
            }
        }
    }
}
