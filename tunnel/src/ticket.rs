//! Tickets: one copy-pasteable string that says how to reach a node (`docs/protocol.md`
//! §"Tickets").
//!
//! Text: `sw1` followed by lowercase unpadded base32 of
//!
//! ```text
//! node id (32) | n_rendezvous (u8) | rendezvous* | n_direct (u8) | socket address* | check (4)
//! rendezvous := socket address (0x04 | 0x06 ...) | 0x64 'd' len (u8) host (len bytes, ASCII) port (u16 BE)
//! check      := first 4 bytes of BLAKE3 over everything before it
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::identity::{base32, NodeId, NODE_ID_LEN};
use crate::wire::addr;

/// Text prefix of a version-1 ticket.
pub const PREFIX: &str = "sw1";
/// Most rendezvous addresses in one ticket.
pub const MAX_RENDEZVOUS: usize = 8;
/// Most direct addresses in one ticket.
pub const MAX_DIRECT: usize = 16;
/// Longest host name of a rendezvous server.
pub const MAX_HOST_LEN: usize = 253;
const KIND_HOST: u8 = 0x64;
const CHECK_LEN: usize = 4;

/// Where a node's rendezvous server is: an address, or a DNS name resolved when used.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum RendezvousAddr {
    /// A literal socket address.
    Ip(SocketAddr),
    /// A host name and port.
    Host(String, u16),
}

impl fmt::Display for RendezvousAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

impl FromStr for RendezvousAddr {
    type Err = TicketError;

    /// `192.0.2.1:3478`, `[2001:db8::1]:3478` or `host.example:3478`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self::Ip(addr::normalize(a)));
        }
        let bad = |why: &str| TicketError::Rendezvous(format!("`{s}`: {why}"));
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("port is not a number from 0 to 65535"))?;
        check_host(host).map_err(|why| bad(&why))?;
        Ok(Self::Host(host.to_ascii_lowercase(), port))
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err(format!("host name must be 1 to {MAX_HOST_LEN} characters"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("host name may hold only letters, digits, '-' and '.'".into());
    }
    Ok(())
}

/// A NodeId with the addresses to reach it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ticket {
    node: NodeId,
    rendezvous: Vec<RendezvousAddr>,
    direct: Vec<SocketAddr>,
}

/// What is wrong with a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Does not start with `sw1`.
    #[error("not a shipworm ticket: it must start with `{PREFIX}`")]
    Prefix,
    /// Characters outside lowercase base32 after the prefix.
    #[error("ticket is damaged: {0} (tickets are lowercase letters and digits 2-7)")]
    Base32(String),
    /// The body ends too early.
    #[error("ticket is truncated: it ends inside the {0} (was it copied whole?)")]
    Truncated(&'static str),
    /// The checksum does not match.
    #[error("ticket is damaged: its checksum does not match (was it copied whole?)")]
    Checksum,
    /// The node id is not a valid key.
    #[error("ticket holds an invalid node id: {0}")]
    NodeId(String),
    /// An address field is malformed.
    #[error("ticket holds a malformed address: {0}")]
    Address(String),
    /// A rendezvous address is malformed.
    #[error("bad rendezvous address {0}")]
    Rendezvous(String),
    /// Too many addresses.
    #[error(
        "a ticket holds at most {MAX_RENDEZVOUS} rendezvous and {MAX_DIRECT} direct addresses"
    )]
    TooMany,
    /// No way to reach the node.
    #[error("ticket names no rendezvous and no direct address: the node cannot be reached")]
    NoAddress,
    /// Bytes after the checksum's place.
    #[error("ticket has {0} unexpected trailing bytes")]
    Trailing(usize),
}

impl Ticket {
    /// A ticket for `node`; it needs at least one rendezvous or direct address.
    pub fn new(
        node: NodeId,
        rendezvous: Vec<RendezvousAddr>,
        direct: Vec<SocketAddr>,
    ) -> Result<Self, TicketError> {
        if rendezvous.is_empty() && direct.is_empty() {
            return Err(TicketError::NoAddress);
        }
        if rendezvous.len() > MAX_RENDEZVOUS || direct.len() > MAX_DIRECT {
            return Err(TicketError::TooMany);
        }
        // Values in their one encoding: IPv4-mapped addresses as IPv4, host names in lowercase
        // (what `from_bytes` accepts), so a ticket compares equal to its own text parsed back.
        let rendezvous = rendezvous
            .into_iter()
            .map(|r| match r {
                RendezvousAddr::Ip(a) => Ok(RendezvousAddr::Ip(addr::normalize(a))),
                RendezvousAddr::Host(h, p) => {
                    check_host(&h)
                        .map_err(|why| TicketError::Rendezvous(format!("`{h}`: {why}")))?;
                    Ok(RendezvousAddr::Host(h.to_ascii_lowercase(), p))
                }
            })
            .collect::<Result<_, TicketError>>()?;
        let direct = direct.into_iter().map(addr::normalize).collect();
        Ok(Self {
            node,
            rendezvous,
            direct,
        })
    }

    /// The node this ticket names.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// Its home rendezvous servers.
    pub fn rendezvous(&self) -> &[RendezvousAddr] {
        &self.rendezvous
    }

    /// Addresses at which the node may be reached directly.
    pub fn direct(&self) -> &[SocketAddr] {
        &self.direct
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(self.node.as_bytes());
        out.push(self.rendezvous.len() as u8);
        for r in &self.rendezvous {
            match r {
                RendezvousAddr::Ip(a) => addr::emit(a, &mut out),
                RendezvousAddr::Host(h, p) => {
                    out.push(KIND_HOST);
                    out.push(h.len() as u8);
                    out.extend_from_slice(h.as_bytes());
                    out.extend_from_slice(&p.to_be_bytes());
                }
            }
        }
        out.push(self.direct.len() as u8);
        for a in &self.direct {
            addr::emit(a, &mut out);
        }
        let check = blake3::hash(&out);
        out.extend_from_slice(&check.as_bytes()[..CHECK_LEN]);
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, TicketError> {
        let body_len = bytes
            .len()
            .checked_sub(CHECK_LEN)
            .filter(|&n| n >= NODE_ID_LEN + 2)
            .ok_or(TicketError::Truncated("node id"))?;
        let (body, check) = bytes.split_at(body_len);
        if blake3::hash(body).as_bytes()[..CHECK_LEN] != *check {
            return Err(TicketError::Checksum);
        }
        let mut r = Reader(body);
        let node = NodeId::from_slice(r.take(NODE_ID_LEN, "node id")?)
            .map_err(|e| TicketError::NodeId(e.to_string()))?;
        let n_rdv = r.take(1, "rendezvous count")?[0] as usize;
        if n_rdv > MAX_RENDEZVOUS {
            return Err(TicketError::TooMany);
        }
        let mut rendezvous = Vec::with_capacity(n_rdv);
        for _ in 0..n_rdv {
            if r.0.first() == Some(&KIND_HOST) {
                r.take(1, "rendezvous address")?;
                let len = r.take(1, "rendezvous host")?[0] as usize;
                let host = std::str::from_utf8(r.take(len, "rendezvous host")?)
                    .map_err(|_| TicketError::Rendezvous("host name is not text".into()))?;
                check_host(host).map_err(TicketError::Rendezvous)?;
                // One encoding per ticket: names are written in lowercase (DNS ignores case).
                if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(TicketError::Rendezvous(format!(
                        "host name `{host}` is not in lowercase (tickets write names in lowercase)"
                    )));
                }
                let p = r.take(2, "rendezvous port")?;
                rendezvous.push(RendezvousAddr::Host(
                    host.into(),
                    u16::from_be_bytes([p[0], p[1]]),
                ));
            } else {
                rendezvous.push(RendezvousAddr::Ip(r.addr()?));
            }
        }
        let n_direct = r.take(1, "direct address count")?[0] as usize;
        if n_direct > MAX_DIRECT {
            return Err(TicketError::TooMany);
        }
        let mut direct = Vec::with_capacity(n_direct);
        for _ in 0..n_direct {
            direct.push(r.addr()?);
        }
        if !r.0.is_empty() {
            return Err(TicketError::Trailing(r.0.len()));
        }
        Self::new(node, rendezvous, direct)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TicketError> {
        if self.0.len() < n {
            return Err(TicketError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn addr(&mut self) -> Result<SocketAddr, TicketError> {
        let (a, n) = addr::parse(self.0).map_err(|e| TicketError::Address(e.to_string()))?;
        self.0 = &self.0[n..];
        Ok(a)
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", base32().encode(&self.to_bytes()))
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(TicketError::Prefix)?;
        let bytes = base32()
            .decode(body.as_bytes())
            .map_err(|e| TicketError::Base32(e.to_string()))?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use proptest::prelude::*;

    fn node() -> NodeId {
        Identity::from_seed(&[7; 32]).node_id()
    }

    #[test]
    fn round_trip_every_kind_of_address() {
        let t = Ticket::new(
            node(),
            vec![
                "192.0.2.10:3478".parse().unwrap(),
                "[2001:db8::10]:3478".parse().unwrap(),
                "rdv.example.net:3478".parse().unwrap(),
            ],
            vec![
                "198.51.100.4:41000".parse().unwrap(),
                "[2001:db8:1::4]:41000".parse().unwrap(),
            ],
        )
        .unwrap();
        let text = t.to_string();
        assert!(text.starts_with("sw1"));
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_eq!(text.parse::<Ticket>().unwrap(), t);
    }

    #[test]
    fn vector() {
        let t = Ticket::new(node(), vec!["192.0.2.10:3478".parse().unwrap()], vec![]).unwrap();
        assert_eq!(t.to_string(), TICKET_VECTOR);
        assert_eq!(TICKET_VECTOR.parse::<Ticket>().unwrap(), t);
    }

    /// Ticket for seed [7; 32] with rendezvous 192.0.2.10:3478, computed independently (Python
    /// `cryptography` + `blake3` from the layout above); pinned against format drift.
    const TICKET_VECTOR: &str =
        "sw15jfgyy7ctrjavpxvkb5rglwf7gkuo5vox27hxescd3vgsfcg2iwacbans3aaaaqkab34l4fb";

    #[test]
    fn malformed_tickets_say_what_is_wrong() {
        let good = Ticket::new(node(), vec!["192.0.2.10:3478".parse().unwrap()], vec![])
            .unwrap()
            .to_string();
        let err = |s: &str| s.parse::<Ticket>().unwrap_err();
        assert_eq!(err("hello"), TicketError::Prefix);
        assert!(matches!(err(&format!("{good}!")), TicketError::Base32(_)));
        assert_eq!(err(&good[..19]), TicketError::Truncated("node id"));
        // One character changed anywhere is caught by the checksum.
        let mut damaged = good.clone().into_bytes();
        let i = damaged.len() / 2;
        damaged[i] = if damaged[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            err(std::str::from_utf8(&damaged).unwrap()),
            TicketError::Checksum
        );
        assert_eq!(
            Ticket::new(node(), vec![], vec![]).unwrap_err().to_string(),
            "ticket names no rendezvous and no direct address: the node cannot be reached"
        );
        // Surrounding whitespace from a copy-paste is forgiven.
        assert!(format!("  {good}\n").parse::<Ticket>().is_ok());
    }

    /// A ticket's text for `body` (node id onward): prefix, base32, and a valid checksum.
    fn text_for(body: &[u8]) -> String {
        let mut bytes = body.to_vec();
        let check = blake3::hash(&bytes);
        bytes.extend_from_slice(&check.as_bytes()[..CHECK_LEN]);
        format!("{PREFIX}{}", base32().encode(&bytes))
    }

    #[test]
    fn non_canonical_forms_are_rejected() {
        // A direct address in the IPv6 form of an IPv4-mapped address.
        let mut body = node().as_bytes().to_vec();
        body.extend_from_slice(&[0, 1, 0x06, 0, 9]);
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
        assert_eq!(
            text_for(&body).parse::<Ticket>(),
            Err(TicketError::Address(
                "IPv4-mapped address 192.0.2.1 in the IPv6 form (it must be sent as IPv4, family 0x04)"
                    .into()
            ))
        );
        // A rendezvous host name with capitals.
        let mut body = node().as_bytes().to_vec();
        body.extend_from_slice(&[1, KIND_HOST, 3]);
        body.extend_from_slice(b"Rdv");
        body.extend_from_slice(&[0x0d, 0x96, 0]);
        assert_eq!(
            text_for(&body).parse::<Ticket>(),
            Err(TicketError::Rendezvous(
                "host name `Rdv` is not in lowercase (tickets write names in lowercase)".into()
            ))
        );
        body[NODE_ID_LEN + 3] = b'r';
        let t = text_for(&body);
        assert_eq!(t.parse::<Ticket>().unwrap().to_string(), t);
        // The emitter never writes either form: it writes IPv4 and lowercase.
        let t = Ticket::new(
            node(),
            vec![
                RendezvousAddr::Host("Rdv".into(), 3478),
                RendezvousAddr::Ip("[::ffff:192.0.2.1]:1".parse().unwrap()),
            ],
            vec!["[::ffff:192.0.2.2]:2".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(
            t.rendezvous(),
            [
                RendezvousAddr::Host("rdv".into(), 3478),
                RendezvousAddr::Ip("192.0.2.1:1".parse().unwrap())
            ]
        );
        assert_eq!(t.direct(), ["192.0.2.2:2".parse().unwrap()]);
        assert_eq!(t.to_string().parse::<Ticket>().unwrap(), t);
    }

    #[test]
    fn rendezvous_addr_parsing() {
        assert_eq!(
            "[::ffff:192.0.2.1]:1".parse::<RendezvousAddr>().unwrap(),
            RendezvousAddr::Ip("192.0.2.1:1".parse().unwrap())
        );
        assert_eq!(
            "RDV.Example.net:3478".parse::<RendezvousAddr>().unwrap(),
            RendezvousAddr::Host("rdv.example.net".into(), 3478)
        );
        assert!("rdv.example.net".parse::<RendezvousAddr>().is_err());
        assert!("rdv.example.net:99999".parse::<RendezvousAddr>().is_err());
        assert!("bad host:1".parse::<RendezvousAddr>().is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "sw1[a-z2-7]{0,200}") {
            let _ = s.parse::<Ticket>();
        }

        #[test]
        fn parse_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Ticket::from_bytes(&bytes);
        }

        #[test]
        fn round_trips(ports in proptest::collection::vec(any::<u16>(), 1..6), host in "[a-z]{1,20}\\.[a-z]{2,5}") {
            let direct = ports.iter().map(|p| SocketAddr::from(([10, 0, 0, 1], *p))).collect();
            let t = Ticket::new(node(), vec![RendezvousAddr::Host(host, ports[0])], direct).unwrap();
            prop_assert_eq!(t.to_string().parse::<Ticket>().unwrap(), t);
        }
    }
}
