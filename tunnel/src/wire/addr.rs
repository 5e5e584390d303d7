//! The one wire encoding of a UDP socket address, shared by tickets and every protocol message
//! (`docs/protocol.md` §"Addresses").
//!
//! ```text
//! IPv4:  0x04 | port (u16 BE) | address (4 bytes)    7 bytes
//! IPv6:  0x06 | port (u16 BE) | address (16 bytes)  19 bytes
//! ```
//!
//! One byte string per address: an IPv4 address, including an IPv4-mapped IPv6 one
//! (`::ffff:a.b.c.d`, which a dual-stack socket reports for IPv4 peers), is always written in the
//! IPv4 form (see [`normalize`]), and [`parse`] rejects an IPv4-mapped address in the IPv6 form
//! ([`AddrError::Ipv4Mapped`]) rather than quietly reading it as IPv4, so whatever parses
//! re-encodes to the same bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Family byte of an IPv4 address.
pub const FAMILY_V4: u8 = 0x04;
/// Family byte of an IPv6 address.
pub const FAMILY_V6: u8 = 0x06;
/// Encoded length of an IPv4 socket address.
pub const V4_LEN: usize = 7;
/// Encoded length of an IPv6 socket address.
pub const V6_LEN: usize = 19;
/// The longest encoded socket address.
pub const MAX_LEN: usize = V6_LEN;

/// Why an encoded address could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The input ended inside the address.
    #[error("address truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the address needs.
        need: usize,
        /// Bytes that were there.
        have: usize,
    },
    /// The family byte is neither 0x04 nor 0x06.
    #[error("unknown address family 0x{0:02x} (expected 0x04 or 0x06)")]
    Family(u8),
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) in the IPv6 form: its one encoding is the
    /// IPv4 form (family 0x04).
    #[error("IPv4-mapped address {0} in the IPv6 form (it must be sent as IPv4, family 0x04)")]
    Ipv4Mapped(Ipv4Addr),
}

/// Turns an IPv4-mapped IPv6 socket address into the IPv4 one it stands for; leaves others alone.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// The form of `addr` to hand to a dual-stack (`[::]`) socket: IPv4 becomes IPv4-mapped IPv6.
pub fn to_dual_stack(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    }
}

/// Encoded length of `addr` (after [`normalize`]).
pub fn encoded_len(addr: &SocketAddr) -> usize {
    match normalize(*addr) {
        SocketAddr::V4(_) => V4_LEN,
        SocketAddr::V6(_) => V6_LEN,
    }
}

/// The encoding of `addr` (after [`normalize`]) in a stack buffer, and its length.
pub fn encode(addr: &SocketAddr) -> ([u8; MAX_LEN], usize) {
    let addr = normalize(*addr);
    let mut buf = [0u8; MAX_LEN];
    buf[1..3].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            buf[0] = FAMILY_V4;
            buf[3..V4_LEN].copy_from_slice(&ip.octets());
            (buf, V4_LEN)
        }
        IpAddr::V6(ip) => {
            buf[0] = FAMILY_V6;
            buf[3..V6_LEN].copy_from_slice(&ip.octets());
            (buf, V6_LEN)
        }
    }
}

/// Appends the encoding of `addr` (after [`normalize`]) to `out`.
pub fn emit(addr: &SocketAddr, out: &mut Vec<u8>) {
    let (buf, len) = encode(addr);
    out.extend_from_slice(&buf[..len]);
}

/// Reads one address from the front of `bytes`; returns it and the number of bytes it took.
pub fn parse(bytes: &[u8]) -> Result<(SocketAddr, usize), AddrError> {
    let Some(&family) = bytes.first() else {
        return Err(AddrError::Truncated { need: 1, have: 0 });
    };
    let need = match family {
        FAMILY_V4 => V4_LEN,
        FAMILY_V6 => V6_LEN,
        other => return Err(AddrError::Family(other)),
    };
    let Some(field) = bytes.get(..need) else {
        return Err(AddrError::Truncated {
            need,
            have: bytes.len(),
        });
    };
    let port = u16::from_be_bytes([field[1], field[2]]);
    let ip = if family == FAMILY_V4 {
        let mut o = [0u8; 4];
        o.copy_from_slice(&field[3..7]);
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&field[3..19]);
        let ip = Ipv6Addr::from(o);
        // One encoding per address: the mapped form has an IPv4 one, which emitters always use.
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Err(AddrError::Ipv4Mapped(v4));
        }
        IpAddr::V6(ip)
    };
    Ok((SocketAddr::new(ip, port), need))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectors() {
        let mut out = Vec::new();
        emit(&"192.0.2.1:3478".parse().unwrap(), &mut out);
        assert_eq!(out, [0x04, 0x0d, 0x96, 192, 0, 2, 1]);
        out.clear();
        emit(&"[2001:db8::1]:443".parse().unwrap(), &mut out);
        assert_eq!(
            out,
            [0x06, 0x01, 0xbb, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn mapped_is_reported_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:198.51.100.7]:9".parse().unwrap();
        assert_eq!(normalize(mapped), "198.51.100.7:9".parse().unwrap());
        assert_eq!(encoded_len(&mapped), V4_LEN);
        assert_eq!(to_dual_stack(normalize(mapped)), mapped);
    }

    #[test]
    fn errors_name_the_cause() {
        assert_eq!(parse(&[]), Err(AddrError::Truncated { need: 1, have: 0 }));
        assert_eq!(parse(&[5, 0, 0]), Err(AddrError::Family(5)));
        assert_eq!(
            parse(&[6, 0, 0, 1]),
            Err(AddrError::Truncated { need: 19, have: 4 })
        );
    }

    #[test]
    fn mapped_address_in_the_ipv6_form_is_rejected() {
        // [::ffff:198.51.100.7]:9 written as IPv6: one address, a second encoding.
        let mut v6_form = vec![0x06, 0, 9];
        v6_form.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 7]);
        assert_eq!(
            parse(&v6_form),
            Err(AddrError::Ipv4Mapped(Ipv4Addr::new(198, 51, 100, 7)))
        );
        assert_eq!(
            AddrError::Ipv4Mapped(Ipv4Addr::new(198, 51, 100, 7)).to_string(),
            "IPv4-mapped address 198.51.100.7 in the IPv6 form (it must be sent as IPv4, family 0x04)"
        );
        // Its emitters write the IPv4 form, which parses to the IPv4 address.
        let mut out = Vec::new();
        emit(&"[::ffff:198.51.100.7]:9".parse().unwrap(), &mut out);
        assert_eq!(out, [0x04, 0, 9, 198, 51, 100, 7]);
        assert_eq!(parse(&out), Ok(("198.51.100.7:9".parse().unwrap(), V4_LEN)));
        // Neighbours of the mapped prefix are ordinary IPv6 addresses and round-trip.
        for neighbour in [
            "[::198.51.100.7]:9",
            "[::fffe:c633:6407]:9",
            "[64:ff9b::c633:6407]:9",
        ] {
            let a: SocketAddr = neighbour.parse().unwrap();
            out.clear();
            emit(&a, &mut out);
            assert_eq!(out.len(), V6_LEN, "{neighbour}");
            assert_eq!(parse(&out), Ok((a, V6_LEN)), "{neighbour}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(ip in any::<[u8; 16]>(), port: u16, v4: bool) {
            let addr = if v4 {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])), port)
            } else {
                normalize(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
            };
            let mut out = Vec::new();
            emit(&addr, &mut out);
            prop_assert_eq!(out.len(), encoded_len(&addr));
            prop_assert_eq!(parse(&out), Ok((addr, out.len())));
        }

        #[test]
        fn whatever_parses_re_encodes_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok((a, n)) = parse(&bytes) {
                let mut out = Vec::new();
                emit(&a, &mut out);
                prop_assert_eq!(&out[..], &bytes[..n]);
            }
        }

        #[test]
        fn mapped_ipv6_form_never_parses(v4 in any::<[u8; 4]>(), port: u16) {
            let mut b = vec![FAMILY_V6];
            b.extend_from_slice(&port.to_be_bytes());
            b.extend_from_slice(&Ipv4Addr::from(v4).to_ipv6_mapped().octets());
            prop_assert_eq!(parse(&b), Err(AddrError::Ipv4Mapped(Ipv4Addr::from(v4))));
        }
    }
}
