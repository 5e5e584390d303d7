//! [`Message`]: one rendezvous message of any type, parsed from or emitted to a datagram
//! (`docs/protocol.md` §"Rendezvous messages (version 2)"). The [`header`](super::header) says
//! which type; each type's module reads and writes its own body.

use shipworm_tunnel::wire::Reader;

use super::error::ErrorMsg;
use super::header::{kind, Header};
use super::introduce::{IntroAck, IntroFwd, Introduce};
use super::register::{Refresh, Register, Registered, Retry};
use super::relay::{Relay, Relayed};
use super::ParseError;

/// A parsed message; payloads borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// See [`Register`].
    Register(Register),
    /// See [`Refresh`].
    Refresh(Refresh),
    /// See [`Registered`].
    Registered(Registered),
    /// See [`Introduce`].
    Introduce(Introduce<'a>),
    /// See [`IntroAck`].
    IntroAck(IntroAck),
    /// See [`IntroFwd`].
    IntroFwd(IntroFwd<'a>),
    /// See [`ErrorMsg`].
    Error(ErrorMsg),
    /// See [`Retry`].
    Retry(Retry),
    /// See [`Relay`].
    Relay(Relay<'a>),
    /// See [`Relayed`].
    Relayed(Relayed<'a>),
}

impl<'a> Message<'a> {
    /// Parses one message: the whole datagram, nothing after it. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let Header { kind, tx } = Header::parse(&mut r)?;
        Ok(match kind {
            kind::REGISTER => Message::Register(Register::parse(tx, r)?),
            kind::REFRESH => Message::Refresh(Refresh::parse(tx, r)?),
            kind::REGISTERED => Message::Registered(Registered::parse(tx, r)?),
            kind::INTRODUCE => Message::Introduce(Introduce::parse(tx, r)?),
            kind::INTRO_ACK => Message::IntroAck(IntroAck::parse(tx, r)?),
            kind::INTRO_FWD => Message::IntroFwd(IntroFwd::parse(tx, r)?),
            kind::ERROR => Message::Error(ErrorMsg::parse(tx, r)?),
            kind::RETRY => Message::Retry(Retry::parse(tx, r)?),
            kind::RELAY => Message::Relay(Relay::parse(tx, r)?),
            kind::RELAYED => Message::Relayed(Relayed::parse(tx, r)?),
            other => return Err(ParseError::UnknownType(other)),
        })
    }

    /// The message's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Register(_) => kind::REGISTER,
            Message::Refresh(_) => kind::REFRESH,
            Message::Registered(_) => kind::REGISTERED,
            Message::Introduce(_) => kind::INTRODUCE,
            Message::IntroAck(_) => kind::INTRO_ACK,
            Message::IntroFwd(_) => kind::INTRO_FWD,
            Message::Error(_) => kind::ERROR,
            Message::Retry(_) => kind::RETRY,
            Message::Relay(_) => kind::RELAY,
            Message::Relayed(_) => kind::RELAYED,
        }
    }

    /// The transaction id.
    pub fn tx(&self) -> u64 {
        match self {
            Message::Register(m) => m.tx,
            Message::Refresh(m) => m.tx,
            Message::Registered(m) => m.tx,
            Message::Introduce(m) => m.tx,
            Message::IntroAck(m) => m.tx,
            Message::IntroFwd(m) => m.tx,
            Message::Error(m) => m.tx,
            Message::Retry(m) => m.tx,
            Message::Relay(m) => m.tx,
            Message::Relayed(m) => m.tx,
        }
    }

    /// Appends the encoding to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        Header {
            kind: self.kind(),
            tx: self.tx(),
        }
        .emit(out);
        match self {
            Message::Register(m) => m.emit(out),
            Message::Refresh(m) => m.emit(out),
            Message::Registered(m) => m.emit(out),
            Message::Introduce(m) => m.emit(out),
            Message::IntroAck(m) => m.emit(out),
            Message::IntroFwd(m) => m.emit(out),
            Message::Error(m) => m.emit(out),
            Message::Retry(m) => m.emit(out),
            Message::Relay(m) => m.emit(out),
            Message::Relayed(m) => m.emit(out),
        }
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        self.emit(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;
    use proptest::prelude::*;
    use shipworm_tunnel::wire::{addr, Trailing};
    use shipworm_tunnel::Identity;
    use std::net::SocketAddr;

    fn id() -> Identity {
        Identity::from_seed(&[3; 32])
    }

    fn server() -> SocketAddr {
        "192.0.2.10:3478".parse().unwrap()
    }

    #[test]
    fn register_layout_and_signature() {
        let r = Register::signed(&id(), 0x0102030405060708, 1_700_000_000_000, server());
        let bytes = Message::Register(r.clone()).to_vec();
        assert_eq!(bytes.len(), Register::MIN_LEN);
        assert_eq!(bytes.len(), 121);
        assert_eq!(&bytes[..10], &[0xC1, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[10..42], id().node_id().as_bytes());
        assert_eq!(&bytes[42..50], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&bytes[50..57], &[4, 0x0d, 0x96, 192, 0, 2, 10]);
        assert_eq!(r.verify(), Some(id().node_id()));
        // Any change to a signed byte breaks the signature, the server address included.
        let mut tampered = r.clone();
        tampered.timestamp_ms += 1;
        assert_eq!(tampered.verify(), None);
        let mut tampered = r.clone();
        tampered.tx ^= 1;
        assert_eq!(tampered.verify(), None);
        let mut tampered = r.clone();
        tampered.server = "192.0.2.11:3478".parse().unwrap();
        assert_eq!(tampered.verify(), None);
        // An IPv4-mapped server address is the IPv4 one: the same signed bytes.
        let mapped = Register::signed(&id(), 1, 2, "[::ffff:192.0.2.10]:3478".parse().unwrap());
        assert_eq!(mapped, Register::signed(&id(), 1, 2, server()));
        // The cookie is not signed: appending it keeps the signature valid.
        let with = r.clone().with_cookie([9; COOKIE_LEN]);
        assert_eq!(with.verify(), Some(id().node_id()));
        let bytes = Message::Register(with.clone()).to_vec();
        assert_eq!(bytes.len(), 137);
        assert_eq!(Message::parse(&bytes).unwrap(), Message::Register(with));
        let v6 = Register::signed(&id(), 1, 2, "[2001:db8::1]:3478".parse().unwrap())
            .with_cookie([1; COOKIE_LEN]);
        assert_eq!(Message::Register(v6).to_vec().len(), Register::MAX_LEN);
        // RETRY is smaller than any REGISTER.
        let retry = Message::Retry(Retry {
            tx: 5,
            cookie: [7; COOKIE_LEN],
        })
        .to_vec();
        assert_eq!(retry.len(), Retry::LEN);
        const { assert!(Retry::LEN < Register::MIN_LEN) };
        assert_eq!(&retry[..2], &[0xC8, 2]);
    }

    #[test]
    fn fixed_vectors() {
        let m = Message::Registered(Registered {
            tx: 7,
            lifetime_s: 120,
            alt_stun_port: 3479,
            token: [0xAA; 16],
            observed: "192.0.2.1:4000".parse().unwrap(),
            flags: 0,
        });
        let mut want = vec![0xC3, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 120, 0x0d, 0x97];
        want.extend_from_slice(&[0xAA; 16]);
        want.extend_from_slice(&[4, 0x0f, 0xa0, 192, 0, 2, 1]);
        assert_eq!(m.to_vec(), want);
        assert_eq!(Message::parse(&want).unwrap(), m);
        // The relay flag is one byte more; a zero or unknown flags byte is refused (one
        // encoding per value).
        let Message::Registered(mut r) = m else {
            unreachable!()
        };
        r.flags = REGISTERED_RELAY;
        assert!(r.relay());
        let relay = Message::Registered(r);
        let mut with = want.clone();
        with.push(1);
        assert_eq!(relay.to_vec(), with);
        assert_eq!(Message::parse(&with).unwrap(), relay);
        for bad in [0u8, 2, 0x81] {
            *with.last_mut().unwrap() = bad;
            assert!(Message::parse(&with).is_err(), "flags {bad:#x}");
        }

        let relay = Message::Relay(Relay {
            tx: 0,
            node: [1; 32],
            token: [2; 16],
            target: [3; 32],
            packet: &[0xD4, 9],
        });
        let bytes = relay.to_vec();
        assert_eq!(bytes.len(), Relay::FIXED_LEN + 2);
        assert_eq!(&bytes[..2], &[0xC9, 2]);
        assert_eq!(&bytes[58..90], &[3; 32]);
        assert_eq!(Message::parse(&bytes).unwrap(), relay);
        let relayed = Message::Relayed(Relayed {
            tx: 0,
            from: [1; 32],
            packet: &[0xD4, 9],
        });
        let out = relayed.to_vec();
        assert_eq!(out.len(), Relayed::FIXED_LEN + 2);
        assert_eq!(&out[..2], &[0xCA, 2]);
        assert_eq!(Message::parse(&out).unwrap(), relayed);
        // A relay never sends more than it received.
        const { assert!(Relayed::FIXED_LEN < Relay::FIXED_LEN) };

        let e = Message::Error(ErrorMsg {
            tx: 1,
            code: ErrorCode::ClockSkew,
            server_time_ms: 2,
        });
        assert_eq!(
            e.to_vec(),
            [0xC7, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        let a = Message::IntroAck(IntroAck {
            tx: 1,
            status: IntroStatus::UnknownPeer,
            target_addr: None,
        });
        assert_eq!(a.to_vec(), [0xC5, 2, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn rejects_bad_lengths_versions_and_trailing_bytes() {
        let mut reg = Message::Register(Register::signed(&id(), 1, 2, server())).to_vec();
        reg.push(0);
        assert!(Message::parse(&reg).is_err(), "a cookie of 1 byte");
        reg.extend_from_slice(&[0; COOKIE_LEN]);
        assert_eq!(Message::parse(&reg), Err(Trailing(1).into()));
        reg.truncate(Register::MIN_LEN);
        reg[1] = 1;
        assert_eq!(Message::parse(&reg), Err(ParseError::Version(1)));
        assert_eq!(Message::parse(&[0xC1, 1]), Err(ParseError::Short));
        assert_eq!(
            Message::parse(&[0xCF; 20]),
            Err(ParseError::UnknownType(0xCF))
        );
        let intro = |n: usize| {
            let mut v = vec![0xC4, VERSION];
            v.resize(Introduce::FIXED_LEN + n, 0);
            Message::parse(&v).map(|_| ())
        };
        assert!(intro(0).is_err(), "empty payload");
        assert!(intro(1).is_ok());
        assert!(intro(MAX_INTRO_PAYLOAD).is_ok());
        assert!(intro(MAX_INTRO_PAYLOAD + 1).is_err());
        let relayed = |kind: u8, fixed: usize, n: usize| {
            let mut v = vec![kind, VERSION];
            v.resize(fixed + n, 0);
            Message::parse(&v).map(|_| ())
        };
        for (kind, fixed) in [
            (kind::RELAY, Relay::FIXED_LEN),
            (kind::RELAYED, Relayed::FIXED_LEN),
        ] {
            assert!(relayed(kind, fixed, 0).is_err(), "empty packet");
            assert!(relayed(kind, fixed, 1).is_ok());
            assert!(relayed(kind, fixed, MAX_RELAY_PAYLOAD).is_ok());
            assert!(relayed(kind, fixed, MAX_RELAY_PAYLOAD + 1).is_err());
        }
    }

    #[test]
    fn ipv4_mapped_addresses_in_the_ipv6_form_are_rejected() {
        // The fuzzer's find (issue 11): a REGISTERED whose observed address is ::ffff:192.0.2.1
        // in the IPv6 form parsed, then re-encoded as IPv4. Every message with an address
        // refuses that form now, naming it.
        let mapped = "[::ffff:192.0.2.1]:4000".parse::<SocketAddr>().unwrap();
        let v4: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut v6_form = vec![addr::FAMILY_V6, 0x0f, 0xa0];
        v6_form.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
        let want = Err(ParseError::Addr(addr::AddrError::Ipv4Mapped(
            std::net::Ipv4Addr::new(192, 0, 2, 1),
        )));
        let msgs = [
            Message::Registered(Registered {
                tx: 7,
                lifetime_s: 120,
                alt_stun_port: 3479,
                token: [0xAA; 16],
                observed: mapped,
                flags: 0,
            }),
            Message::IntroAck(IntroAck {
                tx: 1,
                status: IntroStatus::Forwarded,
                target_addr: Some(mapped),
            }),
            Message::IntroFwd(IntroFwd {
                tx: 1,
                from: [2; 32],
                from_addr: mapped,
                payload: &[1, 2, 3],
            }),
            Message::Register(Register {
                tx: 1,
                node: [2; 32],
                timestamp_ms: 3,
                server: mapped,
                signature: [4; 64],
                cookie: None,
            }),
        ];
        for m in msgs {
            // The emitter writes the IPv4 form: 7 address bytes, which parse as the IPv4 address.
            let bytes = m.to_vec();
            let at = bytes
                .windows(addr::V4_LEN)
                .position(|w| w == [addr::FAMILY_V4, 0x0f, 0xa0, 192, 0, 2, 1])
                .expect("the address in the IPv4 form");
            let parsed = Message::parse(&bytes).unwrap();
            assert_eq!(parsed.to_vec(), bytes);
            let mut reparsed_addr = Vec::new();
            addr::emit(&v4, &mut reparsed_addr);
            assert_eq!(bytes[at..at + addr::V4_LEN], reparsed_addr[..]);
            // The same message with the IPv6 form of the address is refused.
            let mut other = bytes[..at].to_vec();
            other.extend_from_slice(&v6_form);
            other.extend_from_slice(&bytes[at + addr::V4_LEN..]);
            assert_eq!(Message::parse(&other), want, "{:?}", m.kind());
        }
    }

    #[test]
    fn forwarded_introduction_fits_the_ipv6_minimum_path() {
        let payload = [0u8; MAX_INTRO_PAYLOAD];
        let fwd = Message::IntroFwd(IntroFwd {
            tx: 0,
            from: [0; 32],
            from_addr: "[2001:db8::1]:1".parse().unwrap(),
            payload: &payload,
        });
        assert!(fwd.to_vec().len() <= 1280 - 40 - 8);
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| addr::normalize(SocketAddr::from((ip, p)))),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = Message::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_with_valid_header(ty in 0xC0u8..0xD0, mut bytes in proptest::collection::vec(any::<u8>(), 8..1300)) {
            bytes.insert(0, VERSION);
            bytes.insert(0, ty);
            if let Ok(m) = Message::parse(&bytes) {
                // Whatever parses re-encodes to the same bytes: no trailing garbage accepted.
                prop_assert_eq!(m.to_vec(), bytes);
            }
        }

        #[test]
        fn round_trip(tx: u64, node: [u8; 32], target: [u8; 32], token: [u8; 16], a in arb_addr(),
                      payload in proptest::collection::vec(any::<u8>(), 1..MAX_INTRO_PAYLOAD), n: u16) {
            let msgs = [
                Message::Refresh(Refresh { tx, node, token }),
                Message::Registered(Registered { tx, lifetime_s: n, alt_stun_port: n, token, observed: a, flags: 0 }),
                Message::Registered(Registered { tx, lifetime_s: n, alt_stun_port: n, token, observed: a, flags: REGISTERED_RELAY }),
                Message::Relay(Relay { tx, node, token, target, packet: &payload }),
                Message::Relayed(Relayed { tx, from: node, packet: &payload }),
                Message::Introduce(Introduce { tx, node, token, target, payload: &payload }),
                Message::IntroAck(IntroAck { tx, status: IntroStatus::Forwarded, target_addr: Some(a) }),
                Message::IntroAck(IntroAck { tx, status: IntroStatus::TargetRateLimited, target_addr: None }),
                Message::IntroFwd(IntroFwd { tx, from: node, from_addr: a, payload: &payload }),
                Message::Error(ErrorMsg { tx, code: ErrorCode::NotRegistered, server_time_ms: tx }),
                Message::Error(ErrorMsg { tx, code: ErrorCode::WrongServer, server_time_ms: tx }),
                Message::Error(ErrorMsg { tx, code: ErrorCode::PrefixQuota, server_time_ms: tx }),
                Message::Retry(Retry { tx, cookie: token }),
                Message::Register(Register { tx, node, timestamp_ms: tx, server: a, signature: [n as u8; 64], cookie: None }),
                Message::Register(Register { tx, node, timestamp_ms: tx, server: a, signature: [1; 64], cookie: Some(token) }),
            ];
            for m in msgs {
                let bytes = m.to_vec();
                prop_assert_eq!(Message::parse(&bytes).unwrap(), m);
            }
        }
    }
}
