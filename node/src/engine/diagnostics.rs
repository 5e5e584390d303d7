//! Diagnostics: the candidate and pair table of [`Engine::diagnostics`], for `status`, the API
//! and scripts. The text form is [`fmt::Display`]; the JSON form is the `serde` serialization of
//! these types (one schema, documented in `docs/operations.md` §"Running a node").

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::ser::{Serialize, SerializeSeq, SerializeStruct, Serializer};
use shipworm_tunnel::NodeId;

use super::drops::Drops;
use super::paths::{CandidateKind, PairState};
use super::{Candidate, Engine};

/// The state of the node's connectivity (see [`Engine::diagnostics`]).
///
/// Its `serde` form is the JSON of `status --json` (`docs/operations.md` §"Running a node").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostics {
    /// This node.
    #[serde(serialize_with = "display")]
    pub node: NodeId,
    /// Whether our NAT maps per destination (`None`: not measured yet).
    pub maps_per_destination: Option<bool>,
    /// Whether it maps per destination and allocates its ports sequentially (peers predict
    /// them: `docs/protocol.md` §"Hard NATs, port mappings and extra sockets").
    pub ports_sequential: bool,
    /// Each rendezvous and our address as it sees it.
    #[serde(serialize_with = "registrations")]
    pub registrations: Vec<(SocketAddr, Option<SocketAddr>)>,
    /// Our candidates by kind.
    pub candidates: Vec<Candidate>,
    /// Every peer with its pairs.
    pub peers: Vec<PeerDiagnostics>,
    /// What the engine dropped, by reason.
    pub drops: Drops,
}

/// One peer in [`Diagnostics`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerDiagnostics {
    /// The peer.
    #[serde(serialize_with = "display")]
    pub peer: NodeId,
    /// A session exists.
    pub established: bool,
    /// Its candidate pairs.
    pub pairs: Vec<PairDiagnostics>,
}

/// One candidate pair in [`Diagnostics`]; in JSON, `state` reads `selected` for the selected
/// pair and RTTs are milliseconds (`rtt_ms`, `last_rtt_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairDiagnostics {
    /// Remote address (for a relayed pair, its stand-in in `100::/64`).
    pub remote: SocketAddr,
    /// The relay a relayed pair goes through.
    pub relay: Option<SocketAddr>,
    /// How we learned it.
    pub kind: CandidateKind,
    /// Check state.
    pub state: PairState,
    /// Whether it carries the traffic.
    pub selected: bool,
    /// Smoothed RTT.
    pub rtt: Option<Duration>,
    /// Last RTT sample.
    pub last_rtt: Option<Duration>,
    /// Probes we sent.
    pub probes_sent: u64,
    /// Answers we received.
    pub answers_received: u64,
    /// Probes we received from this address.
    pub probes_received: u64,
    /// Answers we sent to it.
    pub answers_sent: u64,
    /// Bytes we sent to it.
    pub bytes_sent: u64,
    /// Bytes we received from it.
    pub bytes_received: u64,
}

impl Engine {
    /// The candidate and pair table, for `status` and the API (WebRTC's candidate-pair stats).
    /// Peers come in NodeId order.
    pub fn diagnostics(&self) -> Diagnostics {
        let peers = self
            .peers
            .iter()
            .map(|(id, st)| {
                let traffic = self.tunnel.traffic(id);
                let pairs = st
                    .paths
                    .pairs
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let t = traffic
                            .iter()
                            .find(|(a, _)| *a == p.remote)
                            .map(|(_, t)| *t)
                            .unwrap_or_default();
                        PairDiagnostics {
                            remote: p.remote,
                            relay: self.relay_of(&p.remote),
                            kind: p.kind,
                            state: p.state,
                            selected: st.paths.selected == Some(i),
                            rtt: p.rtt,
                            last_rtt: p.last_rtt,
                            probes_sent: p.probes_sent,
                            answers_received: p.answers_received,
                            probes_received: t.probes_in,
                            answers_sent: t.answers_out,
                            bytes_sent: t.bytes_out,
                            bytes_received: t.bytes_in,
                        }
                    })
                    .collect();
                PeerDiagnostics {
                    peer: *id,
                    established: st.established,
                    pairs,
                }
            })
            .collect();
        Diagnostics {
            node: self.me,
            maps_per_destination: self.maps_per_destination,
            ports_sequential: self.ports_sequential(),
            registrations: self.registrations(),
            candidates: self.local.clone(),
            peers,
            drops: self.drops,
        }
    }
}

impl CandidateKind {
    /// The name used in output.
    pub fn label(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::Reflexive => "reflexive",
            CandidateKind::Mapped => "mapped",
            CandidateKind::PeerReflexive => "peer-reflexive",
            CandidateKind::Advertised => "advertised",
            CandidateKind::Relayed => "relayed",
        }
    }
}

impl PairState {
    /// The name used in output (WebRTC's pair states).
    pub fn label(self) -> &'static str {
        match self {
            PairState::Waiting => "waiting",
            PairState::InProgress => "in-progress",
            PairState::Succeeded => "succeeded",
            PairState::Failed => "failed",
        }
    }
}

impl Diagnostics {
    /// The JSON form: one object, `serde_json` of this type.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("diagnostics serialize to JSON")
    }
}

fn display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// `[{"server": ..., "observed": ...}]`.
fn registrations<S: Serializer>(
    regs: &[(SocketAddr, Option<SocketAddr>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Registration<'a> {
        server: &'a SocketAddr,
        observed: &'a Option<SocketAddr>,
    }
    let mut seq = s.serialize_seq(Some(regs.len()))?;
    for (server, observed) in regs {
        seq.serialize_element(&Registration { server, observed })?;
    }
    seq.end()
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

impl Serialize for PairDiagnostics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut o = s.serialize_struct("PairDiagnostics", 13)?;
        o.serialize_field("remote", &self.remote)?;
        o.serialize_field("relay", &self.relay)?;
        o.serialize_field("kind", &self.kind)?;
        o.serialize_field(
            "state",
            if self.selected {
                "selected"
            } else {
                self.state.label()
            },
        )?;
        o.serialize_field("selected", &self.selected)?;
        o.serialize_field("rtt_ms", &ms(self.rtt))?;
        o.serialize_field("last_rtt_ms", &ms(self.last_rtt))?;
        o.serialize_field("probes_sent", &self.probes_sent)?;
        o.serialize_field("probes_received", &self.probes_received)?;
        o.serialize_field("answers_sent", &self.answers_sent)?;
        o.serialize_field("answers_received", &self.answers_received)?;
        o.serialize_field("bytes_sent", &self.bytes_sent)?;
        o.serialize_field("bytes_received", &self.bytes_received)?;
        o.end()
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{:.0} MB", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.0} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mapping = match self.maps_per_destination {
            Some(true) if self.ports_sequential => {
                "per destination (hard), ports allocated sequentially (peers predict them)"
            }
            Some(true) => "per destination (hard)",
            Some(false) => "independent of destination",
            None => "not measured yet",
        };
        writeln!(f, "node {}\nNAT mapping: {mapping}", self.node)?;
        for (server, observed) in &self.registrations {
            match observed {
                Some(o) => writeln!(f, "registered at {server}, seen as {o}")?,
                None => writeln!(f, "registering at {server} (no answer yet)")?,
            }
        }
        writeln!(f, "candidates:")?;
        for c in &self.candidates {
            writeln!(f, "  {:<15} {}", c.kind.label(), c.addr)?;
        }
        if self.peers.is_empty() {
            writeln!(f, "peers: none")?;
        }
        for p in &self.peers {
            writeln!(
                f,
                "peer {} {}",
                p.peer,
                if p.established {
                    "(session established)"
                } else {
                    "(no session)"
                }
            )?;
            writeln!(
                f,
                "  {:<42} {:<15} {:<11} {:>9} {:>11} {:>11} {:>17}",
                "remote", "kind", "state", "rtt", "probes o/i", "answers i/o", "bytes out/in"
            )?;
            for x in &p.pairs {
                writeln!(
                    f,
                    "  {:<42} {:<15} {:<11} {:>9} {:>11} {:>11} {:>17}",
                    match x.relay {
                        Some(relay) => format!("via relay {relay}"),
                        None => x.remote.to_string(),
                    },
                    x.kind.label(),
                    if x.selected {
                        "SELECTED"
                    } else {
                        x.state.label()
                    },
                    x.rtt
                        .map_or("-".into(), |r| format!("{:.1} ms", r.as_secs_f64() * 1e3)),
                    format!("{}/{}", x.probes_sent, x.probes_received),
                    format!("{}/{}", x.answers_received, x.answers_sent),
                    format!("{}/{}", bytes(x.bytes_sent), bytes(x.bytes_received)),
                )?;
            }
        }
        if self.drops.total() == 0 {
            writeln!(f, "drops: none")?;
        } else {
            writeln!(f, "drops:")?;
            for (reason, n) in self.drops.iter().filter(|(_, n)| *n > 0) {
                writeln!(f, "  {:<32} {n}", reason.label())?;
            }
        }
        Ok(())
    }
}
