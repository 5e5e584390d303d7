//! `shipworm up --tun`: a long-running node with the overlay on a TUN interface.
//!
//! Today peers are static (`--peer NODEID@HOST:PORT`); finding them through a rendezvous and hole
//! punching come with the node engine. Who may send into the interface: the listed peers, the
//! NodeIds of `--allow-file`, or anyone with `--allow-any`.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;

use shipworm::tunnel::tunnel::Accept;
use shipworm::NodeId;

/// A configured peer: a NodeId and, if known, where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer.
    pub id: NodeId,
    /// Its underlay address.
    pub endpoint: Option<SocketAddr>,
}

impl FromStr for PeerSpec {
    type Err = String;

    /// `NODEID` or `NODEID@HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = match s.split_once('@') {
            Some((id, addr)) => (id, Some(addr)),
            None => (s, None),
        };
        let id: NodeId = id.parse().map_err(|e| format!("peer `{s}`: {e}"))?;
        let endpoint = match addr {
            None => None,
            Some(a) => Some(
                a.to_socket_addrs()
                    .map_err(|e| format!("peer `{s}`: cannot resolve `{a}`: {e}"))?
                    .next()
                    .ok_or_else(|| format!("peer `{s}`: `{a}` resolves to no address"))?,
            ),
        };
        Ok(Self { id, endpoint })
    }
}

/// Reads an allowlist: one NodeId per line; blank lines and `#` comments are ignored.
pub fn read_allow_file(path: &Path) -> Result<HashSet<NodeId>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("allow file {}: {e}", path.display()))?;
    parse_allow_list(&text).map_err(|e| format!("allow file {}: {e}", path.display()))
}

/// Parses allowlist text.
pub fn parse_allow_list(text: &str) -> Result<HashSet<NodeId>, String> {
    let mut out = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.insert(
            line.parse()
                .map_err(|e| format!("line {}: `{line}`: {e}", n + 1))?,
        );
    }
    Ok(out)
}

/// The accept policy: `any`, or the listed peers plus the allow file's NodeIds.
pub fn accept_policy(peers: &[PeerSpec], allowed: HashSet<NodeId>, any: bool) -> Accept {
    if any {
        return Accept::Any;
    }
    let mut set = allowed;
    set.extend(peers.iter().map(|p| p.id));
    Accept::Only(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipworm::Identity;

    #[test]
    fn peer_specs_and_allow_lists() {
        let id = Identity::from_seed(&[4; 32]).node_id();
        let p: PeerSpec = format!("{id}@192.0.2.1:51820").parse().unwrap();
        assert_eq!(
            p,
            PeerSpec {
                id,
                endpoint: Some("192.0.2.1:51820".parse().unwrap())
            }
        );
        assert_eq!(id.to_string().parse::<PeerSpec>().unwrap().endpoint, None);
        let err = "nope@192.0.2.1:1".parse::<PeerSpec>().unwrap_err();
        assert!(err.contains("peer `nope@192.0.2.1:1`"), "{err}");

        let other = Identity::from_seed(&[5; 32]).node_id();
        let list = parse_allow_list(&format!("# team\n{other}\n\n  {id}  # me\n")).unwrap();
        assert_eq!(list, [id, other].into_iter().collect());
        let err = parse_allow_list("abc\n").unwrap_err();
        assert!(err.starts_with("line 1: `abc`"), "{err}");

        match accept_policy(&[p], [other].into_iter().collect(), false) {
            Accept::Only(s) => assert_eq!(s, [id, other].into_iter().collect()),
            Accept::Any => panic!("not any"),
        }
        assert!(matches!(
            accept_policy(&[], HashSet::new(), true),
            Accept::Any
        ));
    }
}
