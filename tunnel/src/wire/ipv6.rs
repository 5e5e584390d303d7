//! The IPv6 packets the tunnel carries, and the overlay rules they obey (`docs/protocol.md`
//! §"Transport").
//!
//! Each tunnel frame carries exactly one IPv6 packet whose addresses lie in the overlay
//! `fd5b:7a1e:9c03::/48` ([`crate::overlay`]). This module holds the checks made on those inner
//! packets and the one message the tunnel itself originates:
//!
//! - [`parse_header`]: the fixed 40-byte IPv6 header, with the payload length required to match
//!   the frame exactly;
//! - [`check_inbound`]: a packet received on a peer's authenticated session must come from that
//!   peer's overlay address and be addressed to ours (the address is self-certifying, so this is
//!   what stops one peer from spoofing another);
//! - [`packet_too_big`]: the ICMPv6 Packet Too Big message returned for a packet larger than the
//!   tunnel's inner MTU ([`DEFAULT_MTU`]).
//!
//! Nothing here panics on arbitrary input.

use std::net::Ipv6Addr;

use etherparse::{Icmpv6Type, PacketBuilder};
use thiserror::Error;

use crate::wire::Reader;

/// The tunnel's inner MTU: 1280 bytes, the IPv6 minimum link MTU (RFC 8200 §5).
pub const DEFAULT_MTU: usize = 1280;

/// Length of the fixed IPv6 header (RFC 8200 §3).
const HEADER_LEN: usize = 40;
/// Offset of the byte whose high nibble is the version (then 8 bits of traffic class and 20 of flow label).
const VERSION: usize = 0;
/// Offset of the 16-bit Payload Length (bytes after the fixed header, extension headers included).
const PAYLOAD_LEN: usize = 4;
/// Offset of the 8-bit Next Header.
const NEXT_HEADER: usize = 6;
/// Offset of the 128-bit Source Address.
const SRC: usize = 8;
/// Offset of the 128-bit Destination Address.
const DST: usize = 24;
/// Length of an IPv6 address.
const ADDR_LEN: usize = 16;

/// Next Header value of ICMPv6 (RFC 4443 §1).
const NEXT_HEADER_ICMPV6: u8 = 58;
/// ICMPv6 types below this are error messages (RFC 4443 §2.1).
const ICMPV6_FIRST_INFORMATIONAL: u8 = 128;
/// The hop limit of the Packet Too Big messages we originate.
const PTB_HOP_LIMIT: u8 = 255;
/// An ICMPv6 error message must not exceed the minimum IPv6 MTU (RFC 4443 §2.4 (c)).
const ICMPV6_ERROR_MAX: usize = 1280;
/// Length of the ICMPv6 Packet Too Big header: type, code, checksum, MTU (RFC 4443 §3.2).
const PTB_HEADER_LEN: usize = 8;

/// The fields of the fixed IPv6 header that the tunnel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Source Address.
    pub src: Ipv6Addr,
    /// Destination Address.
    pub dst: Ipv6Addr,
    /// Next Header: the first extension header's or the upper-layer protocol's number.
    pub next_header: u8,
    /// Payload Length: the bytes after the 40-byte fixed header.
    pub payload_len: u16,
}

/// Why bytes are not one well-formed IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Ipv6Error {
    /// Shorter than the 40-byte fixed IPv6 header.
    #[error("packet shorter than the 40-byte IPv6 header")]
    Truncated,
    /// The version nibble is not 6.
    #[error("IP version {version}, not 6")]
    NotIpv6 {
        /// The version nibble found.
        version: u8,
    },
    /// The header's Payload Length does not account for exactly the bytes of the packet.
    #[error("IPv6 header says the packet is {header} bytes, but it is {actual}")]
    LengthMismatch {
        /// The total length the header claims: 40 + Payload Length.
        header: usize,
        /// The length of the packet as received.
        actual: usize,
    },
}

/// Parses the fixed 40-byte IPv6 header (RFC 8200 §3) of `packet`, which must be exactly one
/// IPv6 packet.
///
/// Layout (offsets in bytes): version (high nibble of 0), traffic class and flow label (rest of
/// 0..4), Payload Length (4..6), Next Header (6), Hop Limit (7), Source Address (8..24),
/// Destination Address (24..40).
///
/// Checks that the packet holds the header ([`Ipv6Error::Truncated`]), that the version is 6
/// ([`Ipv6Error::NotIpv6`]), and that 40 + Payload Length is exactly `packet.len()`
/// ([`Ipv6Error::LengthMismatch`]). A Payload Length of 0 with bytes after the header (a
/// jumbogram, RFC 2675) is rejected as a mismatch: the tunnel's MTU is far below 65,535.
pub fn parse_header(packet: &[u8]) -> Result<Ipv6Header, Ipv6Error> {
    let header = parse_fixed(packet)?;
    let claimed = HEADER_LEN + usize::from(header.payload_len);
    if claimed != packet.len() {
        return Err(Ipv6Error::LengthMismatch {
            header: claimed,
            actual: packet.len(),
        });
    }
    Ok(header)
}

/// The fixed header of `packet` without the length check: for a packet that may be cut short or
/// padded (such as the one a Packet Too Big answers).
fn parse_fixed(packet: &[u8]) -> Result<Ipv6Header, Ipv6Error> {
    let h: [u8; HEADER_LEN] = Reader::new(packet)
        .array("IPv6 header")
        .map_err(|_| Ipv6Error::Truncated)?;
    let version = h[VERSION] >> 4;
    if version != 6 {
        return Err(Ipv6Error::NotIpv6 { version });
    }
    Ok(Ipv6Header {
        src: addr_at(&h, SRC),
        dst: addr_at(&h, DST),
        next_header: h[NEXT_HEADER],
        payload_len: u16::from_be_bytes([h[PAYLOAD_LEN], h[PAYLOAD_LEN + 1]]),
    })
}

/// The address at `offset` of a fixed header; `offset` is [`SRC`] or [`DST`], both in bounds.
fn addr_at(h: &[u8; HEADER_LEN], offset: usize) -> Ipv6Addr {
    let mut octets = [0u8; ADDR_LEN];
    for (i, o) in octets.iter_mut().enumerate() {
        *o = h.get(offset + i).copied().unwrap_or_default();
    }
    Ipv6Addr::from(octets)
}

/// What to do with a packet received on a peer's authenticated session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundVerdict {
    /// Well-formed, from the peer's overlay address, to ours: deliver it.
    Accept,
    /// The source is not the peer's overlay address (spoofed): drop it.
    WrongSource,
    /// The destination is not our overlay address: drop it (the tunnel does not forward).
    WrongDestination,
    /// Not one well-formed IPv6 packet: drop it.
    Malformed(Ipv6Error),
}

/// Judges a packet received from the peer whose session authenticated `peer_overlay`.
///
/// It is accepted only if it parses ([`parse_header`]), its source is exactly `peer_overlay`
/// and its destination exactly `our_overlay`. Overlay addresses are derived from the node's key
/// ([`crate::overlay::address_of`]), so the source check is what binds a packet to the key that
/// authenticated the session. The checks are made in that order, so a packet wrong in both
/// addresses is [`InboundVerdict::WrongSource`].
pub fn check_inbound(
    packet: &[u8],
    peer_overlay: Ipv6Addr,
    our_overlay: Ipv6Addr,
) -> InboundVerdict {
    match parse_header(packet) {
        Err(e) => InboundVerdict::Malformed(e),
        Ok(h) if h.src != peer_overlay => InboundVerdict::WrongSource,
        Ok(h) if h.dst != our_overlay => InboundVerdict::WrongDestination,
        Ok(_) => InboundVerdict::Accept,
    }
}

/// Builds the ICMPv6 Packet Too Big message (RFC 4443 §3.2) answering `original`, a packet that
/// does not fit a link of `mtu` bytes.
///
/// The message is sent from `from` to the source of `original` with hop limit 255; it is type 2,
/// code 0, carries `mtu`, then as much of `original` as fits without the whole IPv6 packet
/// exceeding 1280 bytes (RFC 4443 §2.4 (c)), with its checksum over the IPv6 pseudo-header
/// (computed by `etherparse`).
///
/// Returns `None`, and no message must be sent, when:
/// - `original` has no parseable fixed IPv6 header (shorter than 40 bytes or version not 6; its
///   Payload Length is not checked, since the packet may be of any size);
/// - its source is unspecified or multicast (RFC 4443 §2.4 (e.5, e.6));
/// - it is itself an ICMPv6 error message, that is an ICMPv6 type below 128 directly after the
///   fixed header (RFC 4443 §2.4 (e.1)).
pub fn packet_too_big(original: &[u8], mtu: u32, from: Ipv6Addr) -> Option<Vec<u8>> {
    let header = parse_fixed(original).ok()?;
    if header.src.is_unspecified() || header.src.is_multicast() {
        return None;
    }
    if header.next_header == NEXT_HEADER_ICMPV6
        && original
            .get(HEADER_LEN)
            .is_some_and(|&icmp_type| icmp_type < ICMPV6_FIRST_INFORMATIONAL)
    {
        return None;
    }
    let room = ICMPV6_ERROR_MAX - HEADER_LEN - PTB_HEADER_LEN;
    let quoted = original.get(..room).unwrap_or(original);
    let builder = PacketBuilder::ipv6(from.octets(), header.src.octets(), PTB_HOP_LIMIT)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu });
    let mut out = Vec::with_capacity(builder.size(quoted.len()));
    builder.write(&mut out, quoted).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::is_overlay;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn peer() -> Ipv6Addr {
        "fd5b:7a1e:9c03:1111:2222:3333:4444:5555".parse().unwrap()
    }

    fn us() -> Ipv6Addr {
        "fd5b:7a1e:9c03:aaaa:bbbb:cccc:dddd:eeee".parse().unwrap()
    }

    /// A hand-made IPv6 packet: version 6, traffic class 0, flow label 0x12345, UDP, hop limit 64.
    fn packet(src: Ipv6Addr, dst: Ipv6Addr, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x60, 0x01, 0x23, 0x45];
        p.extend_from_slice(&u16::try_from(payload_len).unwrap().to_be_bytes());
        p.push(17);
        p.push(64);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend((0..payload_len).map(|i| i as u8));
        p
    }

    #[test]
    fn parses_hand_made_packet() {
        assert!(is_overlay(&peer()) && is_overlay(&us()));
        let p = packet(peer(), us(), 12);
        assert_eq!(p.len(), 52);
        assert_eq!(
            parse_header(&p),
            Ok(Ipv6Header {
                src: peer(),
                dst: us(),
                next_header: 17,
                payload_len: 12,
            })
        );
        // A header alone (payload length 0) is a packet too.
        assert_eq!(parse_header(&packet(us(), peer(), 0)).unwrap().dst, peer());
    }

    #[test]
    fn truncated() {
        let p = packet(peer(), us(), 0);
        assert_eq!(parse_header(&p[..39]), Err(Ipv6Error::Truncated));
        assert_eq!(parse_header(&[]), Err(Ipv6Error::Truncated));
    }

    #[test]
    fn not_ipv6() {
        let mut p = packet(peer(), us(), 8);
        p[0] = 0x45; // an IPv4 header's first byte
        assert_eq!(parse_header(&p), Err(Ipv6Error::NotIpv6 { version: 4 }));
    }

    #[test]
    fn length_mismatch() {
        let mut p = packet(peer(), us(), 8);
        p.push(0);
        assert_eq!(
            parse_header(&p),
            Err(Ipv6Error::LengthMismatch {
                header: 48,
                actual: 49
            })
        );
        p.truncate(47);
        assert_eq!(
            parse_header(&p),
            Err(Ipv6Error::LengthMismatch {
                header: 48,
                actual: 47
            })
        );
        // A jumbogram (payload length 0, RFC 2675) with bytes after the header.
        let mut jumbo = packet(peer(), us(), 8);
        jumbo[PAYLOAD_LEN..PAYLOAD_LEN + 2].copy_from_slice(&[0, 0]);
        assert_eq!(
            parse_header(&jumbo),
            Err(Ipv6Error::LengthMismatch {
                header: 40,
                actual: 48
            })
        );
    }

    #[test]
    fn inbound_verdicts() {
        let good = packet(peer(), us(), 20);
        assert_eq!(check_inbound(&good, peer(), us()), InboundVerdict::Accept);

        // Another overlay node's address as source: spoofed.
        let other: Ipv6Addr = "fd5b:7a1e:9c03::99".parse().unwrap();
        let spoofed = packet(other, us(), 20);
        assert_eq!(
            check_inbound(&spoofed, peer(), us()),
            InboundVerdict::WrongSource
        );
        // Swapped addresses: the source check comes first.
        assert_eq!(
            check_inbound(&packet(us(), peer(), 0), peer(), us()),
            InboundVerdict::WrongSource
        );

        let elsewhere = packet(peer(), other, 20);
        assert_eq!(
            check_inbound(&elsewhere, peer(), us()),
            InboundVerdict::WrongDestination
        );

        assert_eq!(
            check_inbound(&good[..30], peer(), us()),
            InboundVerdict::Malformed(Ipv6Error::Truncated)
        );
        let mut v4 = good.clone();
        v4[0] = 0x45;
        assert_eq!(
            check_inbound(&v4, peer(), us()),
            InboundVerdict::Malformed(Ipv6Error::NotIpv6 { version: 4 })
        );
        assert_eq!(
            check_inbound(&good[..50], peer(), us()),
            InboundVerdict::Malformed(Ipv6Error::LengthMismatch {
                header: 60,
                actual: 50
            })
        );
    }

    #[test]
    fn packet_too_big_round_trips_through_etherparse() {
        let original = packet(peer(), us(), 1360);
        assert_eq!(original.len(), 1400);
        let mtu = 1280u32;
        let ptb = packet_too_big(&original, mtu, us()).expect("a PTB for a unicast source");
        assert!(ptb.len() <= 1280, "{} bytes", ptb.len());
        assert_eq!(ptb.len(), 1280, "as much of the original as fits");
        // Our own parser agrees with etherparse on the outer header.
        let outer = parse_header(&ptb).unwrap();
        assert_eq!(
            (outer.src, outer.dst, outer.next_header),
            (us(), peer(), 58)
        );

        let sliced = SlicedPacket::from_ip(&ptb).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
            panic!("not IPv6: {:?}", sliced.net)
        };
        let ip = ip.header();
        assert_eq!(ip.source_addr(), us());
        assert_eq!(ip.destination_addr(), peer(), "to the original source");
        assert_eq!(ip.hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(icmp)) = &sliced.transport else {
            panic!("not ICMPv6: {:?}", sliced.transport)
        };
        assert_eq!(icmp.type_u8(), 2);
        assert_eq!(icmp.code_u8(), 0);
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu });
        assert_eq!(icmp.payload(), &original[..1280 - 48]);
        assert!(icmp.is_checksum_valid(us().octets(), peer().octets()));
        let expected = Icmpv6Type::PacketTooBig { mtu }
            .calc_checksum(us().octets(), peer().octets(), icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), expected);
        assert_ne!(icmp.checksum(), 0);
    }

    #[test]
    fn packet_too_big_quotes_a_short_original_whole() {
        // Only the fixed header needs to parse: the original may be cut short.
        let original = packet(peer(), us(), 100);
        let ptb = packet_too_big(&original[..60], 1200, us()).unwrap();
        assert_eq!(ptb.len(), 48 + 60);
        assert_eq!(&ptb[48..], &original[..60]);
        assert_eq!(u32::from_be_bytes(ptb[44..48].try_into().unwrap()), 1200);
    }

    #[test]
    fn packet_too_big_refuses_multicast_and_unspecified_sources() {
        let multicast: Ipv6Addr = "ff02::1".parse().unwrap();
        assert_eq!(
            packet_too_big(&packet(multicast, us(), 1360), 1280, us()),
            None
        );
        assert_eq!(
            packet_too_big(&packet(Ipv6Addr::UNSPECIFIED, us(), 1360), 1280, us()),
            None
        );
        // A multicast destination does not prevent a Packet Too Big (RFC 4443 §2.4 (e.3)).
        assert!(packet_too_big(&packet(peer(), multicast, 1360), 1280, us()).is_some());
    }

    #[test]
    fn packet_too_big_refuses_unparseable_originals() {
        let original = packet(peer(), us(), 1360);
        assert_eq!(packet_too_big(&original[..39], 1280, us()), None);
        let mut v4 = original.clone();
        v4[0] = 0x45;
        assert_eq!(packet_too_big(&v4, 1280, us()), None);
    }

    #[test]
    fn packet_too_big_never_answers_an_icmpv6_error() {
        let mut original = packet(peer(), us(), 1360);
        original[NEXT_HEADER] = 58;
        original[HEADER_LEN] = 1; // Destination Unreachable
        assert_eq!(packet_too_big(&original, 1280, us()), None);
        original[HEADER_LEN] = 128; // Echo Request: informational, answered
        assert!(packet_too_big(&original, 1280, us()).is_some());
    }

    proptest! {
        #[test]
        fn never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..1600),
            force_v6 in any::<bool>(),
            mtu in any::<u32>(),
        ) {
            if force_v6 {
                if let Some(b) = bytes.first_mut() {
                    *b = 0x60 | (*b & 0x0f);
                }
            }
            if let Ok(h) = parse_header(&bytes) {
                prop_assert_eq!(40 + usize::from(h.payload_len), bytes.len());
            }
            let _ = check_inbound(&bytes, peer(), us());
            if let Some(ptb) = packet_too_big(&bytes, mtu, us()) {
                prop_assert!(ptb.len() <= 1280);
                let sliced = SlicedPacket::from_ip(&ptb);
                prop_assert!(sliced.is_ok());
                let Some(TransportSlice::Icmpv6(icmp)) = sliced.unwrap().transport else {
                    return Err(TestCaseError::fail("not ICMPv6"));
                };
                prop_assert!(icmp.is_checksum_valid(us().octets(), icmp_dst(&bytes)));
            }
        }
    }

    /// The source address of a packet whose fixed header parsed.
    fn icmp_dst(original: &[u8]) -> [u8; 16] {
        parse_fixed(original).unwrap().src.octets()
    }
}
