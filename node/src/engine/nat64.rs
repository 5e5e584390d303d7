//! NAT64 (`docs/operations.md` §"NAT64"), sans-IO: IPv4-embedded IPv6 addresses (RFC 6052),
//! the prefix found from the answers to `ipv4only.arpa` (RFC 7050), and the engine's hook that
//! turns a peer's IPv4 candidates into IPv6 ones a host without IPv4 can reach through its
//! network's translator.
//!
//! A host on an IPv6-only network behind NAT64 reaches an IPv4 address `a.b.c.d` at the IPv6
//! address made of the translator's prefix with `a.b.c.d` embedded. The engine is given the
//! prefix ([`super::EngineConfig::nat64`]) only when the host has no IPv4 route of its own; it
//! then replaces every global IPv4 address a peer (or a rendezvous) names by its synthesis.
//! Where the prefix comes from (configured, discovered, the fallback) is the I/O side's business
//! (`crate::io::nat64`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::str::FromStr;

use super::hygiene;

/// The prefix lengths RFC 6052 §2.2 allows.
pub const PREFIX_LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// The well-known prefix `64:ff9b::/96` (RFC 6052 §2.1), the fallback when nothing else is known.
pub const WELL_KNOWN: Nat64Prefix = Nat64Prefix {
    prefix: Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
    len: 96,
};

/// The well-known IPv4 addresses of `ipv4only.arpa` (RFC 7050 §2.2): what a DNS64 answer embeds.
pub const WELL_KNOWN_IPV4: [Ipv4Addr; 2] =
    [Ipv4Addr::new(192, 0, 0, 170), Ipv4Addr::new(192, 0, 0, 171)];

/// Byte 8 of an IPv4-embedded address (bits 64 to 71, the "u" octet) is always zero (RFC 6052
/// §2.2); the embedded IPv4 skips it.
const U_OCTET: usize = 8;

/// A NAT64 prefix: one of the RFC 6052 lengths, no bits set after it, a zero "u" octet, and a
/// unicast address that can be routed off the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nat64Prefix {
    prefix: Ipv6Addr,
    len: u8,
}

/// Why an address and length are no NAT64 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not written as `PREFIX/LEN`.
    #[error("`{0}` is not an IPv6 prefix: write PREFIX/LEN, for example 64:ff9b::/96")]
    Syntax(String),
    /// A length RFC 6052 does not allow.
    #[error("NAT64 prefix length /{0} is not one of RFC 6052's: 32, 40, 48, 56, 64 or 96")]
    Length(u8),
    /// Bits set after the prefix.
    #[error("{0}/{1} has bits set after its first {1}")]
    HostBits(Ipv6Addr, u8),
    /// Bits 64 to 71 set in a /96.
    #[error("{0}/96 sets bits 64 to 71, which RFC 6052 §2.2 requires to be zero")]
    UOctet(Ipv6Addr),
    /// An address no translator could be reached at.
    #[error("{0} cannot be a NAT64 prefix: it is {1}")]
    Unusable(Ipv6Addr, &'static str),
}

impl Nat64Prefix {
    /// The prefix `prefix/len`, checked.
    pub fn new(prefix: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if !PREFIX_LENGTHS.contains(&len) {
            return Err(PrefixError::Length(len));
        }
        let bits = u128::from(prefix);
        if bits & !(u128::MAX << (128 - u32::from(len))) != 0 {
            return Err(PrefixError::HostBits(prefix, len));
        }
        if prefix.octets()[U_OCTET] != 0 {
            return Err(PrefixError::UOctet(prefix));
        }
        let s = prefix.segments();
        let unusable = if prefix.is_unspecified() {
            Some("unspecified")
        } else if prefix.is_multicast() {
            Some("multicast")
        } else if (s[0] & 0xFFC0) == 0xFE80 {
            Some("link-local")
        } else if s[..5] == [0, 0, 0, 0, 0] {
            // ::/80 holds loopback, the IPv4-compatible and the IPv4-mapped addresses.
            Some("loopback, IPv4-compatible or IPv4-mapped space")
        } else if shipworm_tunnel::overlay::is_overlay(&prefix) {
            Some("the overlay")
        } else {
            None
        };
        match unusable {
            Some(what) => Err(PrefixError::Unusable(prefix, what)),
            None => Ok(Self { prefix, len }),
        }
    }

    /// The prefix's address (bits after the length are zero).
    pub fn addr(&self) -> Ipv6Addr {
        self.prefix
    }

    /// Its length.
    pub fn length(&self) -> u8 {
        self.len
    }

    /// Whether this is the well-known prefix 64:ff9b::/96.
    pub fn is_well_known(&self) -> bool {
        *self == WELL_KNOWN
    }

    /// Where the four bytes of an embedded IPv4 address go (RFC 6052 §2.2: after the prefix,
    /// skipping the "u" octet).
    fn positions(len: u8) -> impl Iterator<Item = usize> {
        (usize::from(len) / 8..16).filter(|i| *i != U_OCTET).take(4)
    }

    /// The IPv4-embedded IPv6 address of `v4` (RFC 6052 §2.2); the suffix is zero.
    pub fn synthesize(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let mut o = self.prefix.octets();
        for (i, b) in Self::positions(self.len).zip(v4.octets()) {
            o[i] = b;
        }
        Ipv6Addr::from(o)
    }

    /// The IPv4 address `v6` embeds, if `v6` lies in this prefix with a zero "u" octet
    /// (RFC 6052 §2.3).
    pub fn extract(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        if !hygiene::same_prefix(IpAddr::V6(v6), IpAddr::V6(self.prefix), self.len) {
            return None;
        }
        embedded(v6, self.len)
    }
}

/// The IPv4 address at the place a /`len` prefix puts it, if the "u" octet is zero.
fn embedded(v6: Ipv6Addr, len: u8) -> Option<Ipv4Addr> {
    let o = v6.octets();
    if o[U_OCTET] != 0 {
        return None;
    }
    let mut v4 = [0u8; 4];
    for (b, i) in v4.iter_mut().zip(Nat64Prefix::positions(len)) {
        *b = o[i];
    }
    Some(Ipv4Addr::from(v4))
}

/// The first `len` bits of `v6`.
fn truncate(v6: Ipv6Addr, len: u8) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(v6) & (u128::MAX << (128 - u32::from(len))))
}

impl fmt::Display for Nat64Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.prefix, self.len)
    }
}

impl FromStr for Nat64Prefix {
    type Err = PrefixError;

    /// `PREFIX/LEN`, for example `64:ff9b::/96` or `2001:db8:64::/48`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        Self::new(addr, len)
    }
}

/// Why the answers to `ipv4only.arpa` gave no prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No IPv6 address came back: the resolver does no DNS64.
    #[error("ipv4only.arpa has no IPv6 address here: the resolver does not synthesize (no DNS64)")]
    NoAnswer,
    /// IPv6 addresses came back, none embedding 192.0.0.170 or 192.0.0.171.
    #[error("no IPv6 address of ipv4only.arpa embeds 192.0.0.170 or 192.0.0.171 (answers: {0})")]
    NoWellKnownAddress(String),
    /// The well-known address sits at several places of one answer and the others do not say
    /// which one is the prefix.
    #[error("{0} embeds 192.0.0.170 or .171 at more than one place (lengths {1:?}) and no other answer tells which")]
    Ambiguous(Ipv6Addr, Vec<u8>),
}

/// The NAT64 prefix from the IPv6 addresses `ipv4only.arpa` resolved to (RFC 7050 §3): every
/// place RFC 6052 allows is searched for 192.0.0.170 and 192.0.0.171. An answer with the
/// well-known address at one place gives the prefix; at several (a prefix whose own bits happen
/// to spell it), the place the other answers confirm wins. Several prefixes (several
/// translators): the first answer's.
pub fn discover(answers: &[Ipv6Addr]) -> Result<Nat64Prefix, DiscoveryError> {
    if answers.is_empty() {
        return Err(DiscoveryError::NoAnswer);
    }
    // Each answer's candidates: the prefixes at whose place it embeds a well-known address.
    let found: Vec<(Ipv6Addr, Vec<(Nat64Prefix, Ipv4Addr)>)> = answers
        .iter()
        .map(|a| {
            let c = PREFIX_LENGTHS
                .iter()
                .filter_map(|len| {
                    let v4 = embedded(*a, *len).filter(|v4| WELL_KNOWN_IPV4.contains(v4))?;
                    let p = Nat64Prefix::new(truncate(*a, *len), *len).ok()?;
                    Some((p, v4))
                })
                .collect();
            (*a, c)
        })
        .collect();
    // Seen with both well-known addresses: what RFC 7050 §3 asks the second address for.
    let confirmed = |p: &Nat64Prefix| {
        WELL_KNOWN_IPV4.iter().all(|w| {
            found
                .iter()
                .any(|(_, c)| c.iter().any(|(q, v4)| q == p && v4 == w))
        })
    };
    let mut ambiguous = None;
    for (answer, candidates) in &found {
        match candidates.as_slice() {
            [] => continue,
            [(p, _)] => return Ok(*p),
            several => {
                let sure: Vec<&Nat64Prefix> = several
                    .iter()
                    .map(|(p, _)| p)
                    .filter(|p| confirmed(p))
                    .collect();
                if let [p] = sure.as_slice() {
                    return Ok(**p);
                }
                ambiguous.get_or_insert_with(|| {
                    DiscoveryError::Ambiguous(
                        *answer,
                        several.iter().map(|(p, _)| p.length()).collect(),
                    )
                });
            }
        }
    }
    Err(ambiguous.unwrap_or_else(|| {
        DiscoveryError::NoWellKnownAddress(
            answers
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }))
}

/// How the engine reaches `addr` through `prefix`: a global IPv4 address becomes its synthesis
/// (same port); anything else stays as it is (IPv6 needs no translator, and a private or
/// reserved IPv4 is never synthesized: RFC 6052 §3.1 forbids it for the well-known prefix, and
/// through any translator it would reach hosts near the translator, not the peer).
pub fn reach(prefix: Option<&Nat64Prefix>, addr: SocketAddr) -> SocketAddr {
    let addr = shipworm_tunnel::wire::addr::normalize(addr);
    match (prefix, addr) {
        (Some(p), SocketAddr::V4(v4)) if hygiene::is_global(addr) => {
            SocketAddr::V6(SocketAddrV6::new(p.synthesize(*v4.ip()), v4.port(), 0, 0))
        }
        _ => addr,
    }
}

/// The address a server we reach at `addr` knows itself by: the IPv4 address a synthesis in
/// `prefix` embeds (RFC 6052 §2.3), else `addr`. A REGISTER is signed for the server's address
/// (`shipworm_rendezvous::wire::register`), and through NAT64 the server has only its IPv4 one.
pub fn unsynthesized(prefix: Option<&Nat64Prefix>, addr: SocketAddr) -> SocketAddr {
    match (prefix, addr) {
        (Some(p), SocketAddr::V6(v6)) => match p.extract(*v6.ip()) {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        _ => addr,
    }
}

impl super::Engine {
    /// The address through which we reach `addr`: its NAT64 synthesis when the engine has a
    /// prefix (the host has no IPv4 of its own), else `addr` ([`reach`]).
    pub(super) fn via_nat64(&self, addr: SocketAddr) -> SocketAddr {
        reach(self.config.nat64.as_ref(), addr)
    }

    /// The address a peer's claimed candidate `c` becomes a pair at, if it may (`docs/protocol.md`
    /// §"Candidates"): its NAT64 synthesis, which must pass [`hygiene::acceptable_synthesis`],
    /// or `c` itself, which must pass [`hygiene::acceptable`] against our host addresses.
    pub(super) fn claimed_candidate(
        &self,
        c: SocketAddr,
        hosts: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let c = shipworm_tunnel::wire::addr::normalize(c);
        let to = self.via_nat64(c);
        let ok = if to != c {
            hygiene::acceptable_synthesis(c, to)
        } else {
            hygiene::acceptable(c, hosts.iter().copied())
        };
        ok.then_some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// RFC 6052 §2.4's table: 192.0.2.33 embedded under each prefix length.
    const RFC6052_EXAMPLES: [(&str, u8, &str); 6] = [
        ("2001:db8::", 32, "2001:db8:c000:221::"),
        ("2001:db8:100::", 40, "2001:db8:1c0:2:21::"),
        ("2001:db8:122::", 48, "2001:db8:122:c000:2:2100::"),
        ("2001:db8:122:300::", 56, "2001:db8:122:3c0:0:221::"),
        ("2001:db8:122:344::", 64, "2001:db8:122:344:c0:2:2100:0"),
        ("2001:db8:122:344::", 96, "2001:db8:122:344::192.0.2.33"),
    ];

    #[test]
    fn every_prefix_length_synthesizes_and_extracts_as_rfc_6052_shows() {
        let v4 = Ipv4Addr::new(192, 0, 2, 33);
        for (prefix, len, want) in RFC6052_EXAMPLES {
            let p = Nat64Prefix::new(v6(prefix), len).unwrap();
            assert_eq!(p.synthesize(v4), v6(want), "/{len}");
            assert_eq!(p.extract(v6(want)), Some(v4), "/{len}");
            assert_eq!(p.to_string().parse::<Nat64Prefix>(), Ok(p));
        }
        assert_eq!(
            WELL_KNOWN.synthesize(v4),
            v6("64:ff9b::c000:221"),
            "the well-known prefix"
        );
        // Outside the prefix, or with the "u" octet set: nothing embedded.
        let p = Nat64Prefix::new(v6("2001:db8:122:344::"), 64).unwrap();
        assert_eq!(p.extract(v6("2001:db8:122:345:c0:2:2100:0")), None);
        assert_eq!(p.extract(v6("2001:db8:122:344:1c0:2:2100:0")), None);
    }

    #[test]
    fn junk_prefixes_are_refused_with_their_reason() {
        for (text, why) in [
            ("64:ff9b::", "PREFIX/LEN"),
            ("64:ff9b::/97", "not one of"),
            ("64:ff9b::/x", "PREFIX/LEN"),
            ("1.2.3.4/96", "PREFIX/LEN"),
            ("64:ff9b::1/96", "bits set after"),
            ("2001:db8::/32/1", "PREFIX/LEN"),
            ("2001:db8:0:0:100::/96", "bits 64 to 71"),
            ("ff02::/96", "multicast"),
            ("fe80::/64", "link-local"),
            ("::/96", "unspecified"),
            ("::ffff:0:0/96", "IPv4-mapped"),
            ("fd5b:7a1e:9c03::/48", "overlay"),
        ] {
            let e = text.parse::<Nat64Prefix>().unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn discovery_finds_every_prefix_length_from_the_well_known_addresses() {
        for (prefix, len, _) in RFC6052_EXAMPLES {
            let p = Nat64Prefix::new(v6(prefix), len).unwrap();
            let answers: Vec<Ipv6Addr> = WELL_KNOWN_IPV4.iter().map(|w| p.synthesize(*w)).collect();
            assert_eq!(discover(&answers), Ok(p), "/{len}");
            // One answer (only .170 or only .171) is enough.
            assert_eq!(discover(&answers[1..]), Ok(p), "/{len}, .171 alone");
        }
        assert_eq!(
            discover(&[v6("64:ff9b::192.0.0.170"), v6("64:ff9b::192.0.0.171")]),
            Ok(WELL_KNOWN)
        );
    }

    #[test]
    fn discovery_refuses_answers_without_the_well_known_addresses() {
        assert_eq!(discover(&[]), Err(DiscoveryError::NoAnswer));
        // A real AAAA, or a synthesis of some other IPv4: no DNS64 of ipv4only.arpa.
        for junk in [
            vec![v6("2001:db8::1")],
            vec![v6("64:ff9b::192.0.2.1")],
            vec![v6("64:ff9b::192.0.0.172")],
            // The well-known address in the right place but the "u" octet set.
            vec![v6("2001:db8:122:344:1c0:0:aa00:0")],
            vec![v6("::ffff:192.0.0.170")],
        ] {
            assert!(
                matches!(discover(&junk), Err(DiscoveryError::NoWellKnownAddress(_))),
                "{junk:?}: {:?}",
                discover(&junk)
            );
        }
    }

    #[test]
    fn a_prefix_that_spells_the_well_known_address_is_told_apart_by_the_second_one() {
        // 2001:db8:c000:aa::/64 holds 192.0.0.170 at the /32 place by itself; the real /64
        // place holds it too. .171 settles it: only the /64 place holds both.
        let p = Nat64Prefix::new(v6("2001:db8:c000:aa::"), 64).unwrap();
        let answers: Vec<Ipv6Addr> = WELL_KNOWN_IPV4.iter().map(|w| p.synthesize(*w)).collect();
        assert_eq!(discover(&answers), Ok(p));
        // With one answer alone, nothing tells: refused, naming the answer and the places.
        match discover(&answers[..1]) {
            Err(DiscoveryError::Ambiguous(a, lens)) => {
                assert_eq!(a, answers[0]);
                assert_eq!(lens, vec![32, 64]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_global_ipv4_is_reached_through_the_prefix() {
        let p = Nat64Prefix::new(v6("2001:db8:64::"), 96).unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            reach(Some(&p), a("5.5.2.2:51820")),
            a("[2001:db8:64::505:202]:51820")
        );
        // An IPv4-mapped form is the same IPv4.
        assert_eq!(
            reach(Some(&p), a("[::ffff:5.5.2.2]:51820")),
            a("[2001:db8:64::505:202]:51820")
        );
        for same in ["192.168.2.2:51820", "100.64.1.1:1", "[2001:db8:1::2]:51820"] {
            let want = shipworm_tunnel::wire::addr::normalize(a(same));
            assert_eq!(reach(Some(&p), a(same)), want, "{same}");
        }
        assert_eq!(reach(None, a("5.5.2.2:51820")), a("5.5.2.2:51820"));
        // And back: the address a server reached through the prefix knows itself by.
        let s = a("[2001:db8:64::505:2]:3478");
        assert_eq!(unsynthesized(Some(&p), s), a("5.5.0.2:3478"));
        assert_eq!(unsynthesized(None, s), s);
        assert_eq!(
            unsynthesized(Some(&p), a("[2001:db8::2]:3478")),
            a("[2001:db8::2]:3478")
        );
        assert_eq!(
            unsynthesized(Some(&p), a("5.5.0.2:3478")),
            a("5.5.0.2:3478")
        );
    }

    #[test]
    fn without_ipv4_the_engine_registers_and_connects_through_the_prefix() {
        use shipworm_rendezvous::wire::Message;
        use shipworm_tunnel::Identity;
        const UNIX: u64 = 1_800_000_000_000;
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let p: Nat64Prefix = "2001:db8:64::/96".parse().unwrap();
        let peer = Identity::from_seed(&[8; 32]).node_id();
        let dests = |nat64: Option<Nat64Prefix>| {
            let now = std::time::Instant::now();
            let config = super::super::EngineConfig {
                rendezvous: vec![a("[2001:db8:64::505:2]:3478")],
                nat64,
                ..Default::default()
            };
            let identity = Identity::from_seed(&[7; 32]);
            let mut e = super::super::Engine::new(
                identity,
                config,
                now,
                shipworm_tunnel::rng::from_seed(1),
            );
            e.handle_timeout(now, UNIX);
            let register = e.poll_transmit().expect("a REGISTER");
            assert_eq!(register.dest, a("[2001:db8:64::505:2]:3478"));
            let Ok(Message::Register(r)) = Message::parse(&register.contents) else {
                panic!("not a REGISTER");
            };
            assert!(r.verify().is_some(), "the signature holds");
            e.connect(now, UNIX, peer, &[a("5.5.2.2:51820")]);
            let sent: Vec<SocketAddr> = std::iter::from_fn(|| e.poll_transmit())
                .map(|t| t.dest)
                .collect();
            (r.server, sent)
        };
        // The server knows itself by its IPv4 address, which the REGISTER is signed for; the
        // peer's IPv4 address gets message 1 at its synthesis.
        let (signed_for, sent) = dests(Some(p));
        assert_eq!(signed_for, a("5.5.0.2:3478"));
        assert!(
            sent.contains(&a("[2001:db8:64::505:202]:51820")),
            "{sent:?}"
        );
        assert!(!sent.iter().any(|d| d.is_ipv4()), "{sent:?}");
        // Without a prefix, both stay as they are.
        let (signed_for, sent) = dests(None);
        assert_eq!(signed_for, a("[2001:db8:64::505:2]:3478"));
        assert!(sent.contains(&a("5.5.2.2:51820")), "{sent:?}");
    }
}
