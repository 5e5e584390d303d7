//! Inner frames: the plaintext a TRANSPORT packet seals (`docs/protocol.md` §"Transport").
//!
//! ```text
//! (empty)                          keepalive, a Teredo "bubble"
//! first nibble 6                   DATA: exactly one IPv6 packet
//! 0x01 | tx (u64) | 19 zero bytes   PROBE (padded: never smaller than its answer)
//! 0x02 | tx (u64) | address        PROBE_ANSWER: where the probe came from (wire::addr)
//! 0x03                             CLOSE
//! 0x04 | advert                    ADVERT: new flags and candidates, mid-session (trickle;
//!                                  the advert as in wire::payload)
//! ```

use std::net::SocketAddr;

use crate::wire::payload::{Advert, PayloadError};
use crate::wire::{addr, Reader, Trailing, Truncated};

/// PROBE kind byte.
pub const PROBE: u8 = 0x01;
/// PROBE_ANSWER kind byte.
pub const PROBE_ANSWER: u8 = 0x02;
/// Zero bytes after a PROBE's transaction id: as many as the longest address a PROBE_ANSWER
/// carries, so an answer is never larger than the probe it answers (a probe from a spoofed
/// source reflects no more bytes than it cost).
pub const PROBE_PADDING: usize = addr::MAX_LEN;
/// CLOSE kind byte.
pub const CLOSE: u8 = 0x03;
/// ADVERT kind byte.
pub const ADVERT: u8 = 0x04;
/// The version nibble that marks a DATA frame (the IPv6 packet's own first nibble).
pub const DATA_VERSION: u8 = 6;

/// Why an inner frame is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A field runs past the end of the frame.
    #[error(transparent)]
    Truncated(#[from] Truncated),
    /// Bytes after the end of a frame.
    #[error("{kind}: {trailing}")]
    Trailing {
        /// The frame kind's name.
        kind: &'static str,
        /// How many bytes were left.
        trailing: Trailing,
    },
    /// An inner frame kind we do not know.
    #[error("unknown inner frame kind 0x{0:02x}")]
    UnknownFrame(u8),
    /// A malformed address.
    #[error("bad address: {0}")]
    Addr(#[from] addr::AddrError),
    /// A malformed ADVERT.
    #[error("bad ADVERT: {0}")]
    Advert(#[from] PayloadError),
    /// A PROBE whose padding is not all zeros (one encoding per frame).
    #[error("PROBE padding is not all zeros")]
    ProbePadding,
}

/// A decrypted inner frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// No payload: keepalive / bubble.
    Keepalive,
    /// One IPv6 packet.
    Data(&'a [u8]),
    /// A path probe.
    Probe {
        /// Transaction id.
        tx: u64,
    },
    /// The answer to a probe.
    ProbeAnswer {
        /// The probe's transaction id.
        tx: u64,
        /// The source address the probe arrived from.
        observed: SocketAddr,
    },
    /// The peer closes the session.
    Close,
    /// The peer's flags and candidates changed (late candidates trickle this way).
    Advert(Advert),
}

fn end(r: Reader<'_>, kind: &'static str) -> Result<(), FrameError> {
    r.finish()
        .map_err(|trailing| FrameError::Trailing { kind, trailing })
}

impl<'a> Frame<'a> {
    /// Parses a decrypted frame. Never panics.
    pub fn parse(b: &'a [u8]) -> Result<Self, FrameError> {
        let Some(&first) = b.first() else {
            return Ok(Frame::Keepalive);
        };
        if first >> 4 == DATA_VERSION {
            return Ok(Frame::Data(b));
        }
        let mut r = Reader::new(b);
        let kind = r.u8("frame kind")?;
        let frame = match kind {
            PROBE => {
                let tx = r.u64("probe tx")?;
                if r.take(PROBE_PADDING, "probe padding")?
                    .iter()
                    .any(|&b| b != 0)
                {
                    return Err(FrameError::ProbePadding);
                }
                end(r, "PROBE")?;
                Frame::Probe { tx }
            }
            PROBE_ANSWER => {
                let tx = r.u64("probe tx")?;
                let observed = r.addr()?;
                end(r, "PROBE_ANSWER")?;
                Frame::ProbeAnswer { tx, observed }
            }
            CLOSE => {
                end(r, "CLOSE")?;
                Frame::Close
            }
            ADVERT => {
                let advert = Advert::read(&mut r)?;
                end(r, "ADVERT")?;
                Frame::Advert(advert)
            }
            other => return Err(FrameError::UnknownFrame(other)),
        };
        Ok(frame)
    }

    /// Appends the encoding.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Keepalive => {}
            Frame::Data(p) => out.extend_from_slice(p),
            Frame::Probe { tx } => {
                out.push(PROBE);
                out.extend_from_slice(&tx.to_be_bytes());
                out.extend_from_slice(&[0; PROBE_PADDING]);
            }
            Frame::ProbeAnswer { tx, observed } => {
                out.push(PROBE_ANSWER);
                out.extend_from_slice(&tx.to_be_bytes());
                addr::emit(observed, out);
            }
            Frame::Close => out.push(CLOSE),
            Frame::Advert(a) => {
                out.push(ADVERT);
                a.emit(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inner_round_trips_and_vectors() {
        let mut v = Vec::new();
        Frame::ProbeAnswer {
            tx: 1,
            observed: "192.0.2.1:2".parse().unwrap(),
        }
        .emit(&mut v);
        assert_eq!(v, [2, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0, 2, 192, 0, 2, 1]);
        assert_eq!(
            Frame::parse(&v).unwrap(),
            Frame::ProbeAnswer {
                tx: 1,
                observed: "192.0.2.1:2".parse().unwrap()
            }
        );
        assert_eq!(Frame::parse(&[]).unwrap(), Frame::Keepalive);
        assert_eq!(
            Frame::parse(&[0x60, 0, 0]).unwrap(),
            Frame::Data(&[0x60, 0, 0])
        );
        assert_eq!(Frame::parse(&[3]).unwrap(), Frame::Close);
        assert!(Frame::parse(&[3, 0]).is_err());
        assert!(Frame::parse(&[1, 0, 0]).is_err());
        assert_eq!(
            Frame::parse(&[0x45]),
            Err(FrameError::UnknownFrame(0x45)),
            "IPv4 is not carried"
        );
    }

    #[test]
    fn advert_frame_vector() {
        let advert = Advert {
            flags: 0x05,
            candidates: vec!["192.0.2.1:2".parse().unwrap()],
        };
        let mut v = Vec::new();
        Frame::Advert(advert.clone()).emit(&mut v);
        assert_eq!(v, [4, 5, 1, 4, 0, 2, 192, 0, 2, 1]);
        assert_eq!(Frame::parse(&v), Ok(Frame::Advert(advert)));
    }

    #[test]
    fn truncation_and_trailing_bytes_name_the_field() {
        assert_eq!(
            Frame::parse(&[1, 0, 0]),
            Err(FrameError::Truncated(Truncated {
                field: "probe tx",
                need: 8,
                have: 2
            }))
        );
        let mut probe = vec![1, 0, 0, 0, 0, 0, 0, 0, 7];
        assert_eq!(
            Frame::parse(&probe),
            Err(FrameError::Truncated(Truncated {
                field: "probe padding",
                need: PROBE_PADDING,
                have: 0
            }))
        );
        probe.extend_from_slice(&[0; PROBE_PADDING]);
        assert_eq!(Frame::parse(&probe), Ok(Frame::Probe { tx: 7 }));
        let mut out = Vec::new();
        Frame::Probe { tx: 7 }.emit(&mut out);
        assert_eq!(out, probe);
        let v6: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let mut answer = Vec::new();
        Frame::ProbeAnswer {
            tx: 7,
            observed: v6,
        }
        .emit(&mut answer);
        assert!(
            answer.len() <= probe.len(),
            "an answer never outgrows its probe"
        );
        probe[12] = 1;
        assert_eq!(Frame::parse(&probe), Err(FrameError::ProbePadding));
        probe[12] = 0;
        probe.push(0);
        assert_eq!(
            Frame::parse(&probe),
            Err(FrameError::Trailing {
                kind: "PROBE",
                trailing: Trailing(1)
            })
        );
        assert_eq!(
            Frame::parse(&[3, 0]),
            Err(FrameError::Trailing {
                kind: "CLOSE",
                trailing: Trailing(1)
            })
        );
        assert!(matches!(
            Frame::parse(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0]),
            Err(FrameError::Addr(_))
        ));
        assert_eq!(
            Frame::parse(&[4, 0]),
            Err(FrameError::Advert(PayloadError::Truncated(Truncated {
                field: "candidate count",
                need: 1,
                have: 0
            })))
        );
        assert_eq!(
            Frame::parse(&[4, 0, 0, 9]),
            Err(FrameError::Trailing {
                kind: "ADVERT",
                trailing: Trailing(1)
            })
        );
    }

    #[test]
    fn ipv4_mapped_address_in_the_ipv6_form_is_rejected() {
        let mut mapped = vec![PROBE_ANSWER, 0, 0, 0, 0, 0, 0, 0, 1, addr::FAMILY_V6, 0, 2];
        mapped.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
        let want = addr::AddrError::Ipv4Mapped(std::net::Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(Frame::parse(&mapped), Err(FrameError::Addr(want)));
        let mut advert = vec![ADVERT, 0, 1];
        advert.extend_from_slice(&mapped[9..]);
        assert_eq!(
            Frame::parse(&advert),
            Err(FrameError::Advert(PayloadError::Candidate(want)))
        );
        // The emitter writes such an address as IPv4, and that round-trips exactly.
        let mut out = Vec::new();
        Frame::ProbeAnswer {
            tx: 1,
            observed: "[::ffff:192.0.2.1]:2".parse().unwrap(),
        }
        .emit(&mut out);
        assert_eq!(out, [2, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0, 2, 192, 0, 2, 1]);
        let parsed = Frame::parse(&out).unwrap();
        let mut again = Vec::new();
        parsed.emit(&mut again);
        assert_eq!(again, out);
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(frame) = Frame::parse(&bytes) {
                let mut out = Vec::new();
                frame.emit(&mut out);
                // One encoding per frame: whatever parses re-encodes to the same bytes.
                prop_assert_eq!(out, bytes);
            }
        }
    }
}
