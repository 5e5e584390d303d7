//! Text and JSON forms of [`Diagnostics`] for `status` and scripts.

use std::fmt::{self, Write as _};

use super::paths::{CandidateKind, PairState};
use super::Diagnostics;

impl CandidateKind {
    /// The name used in output.
    pub fn label(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::Reflexive => "reflexive",
            CandidateKind::Mapped => "mapped",
            CandidateKind::PeerReflexive => "peer-reflexive",
            CandidateKind::Advertised => "advertised",
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

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn ms(d: Option<std::time::Duration>) -> String {
    d.map_or("null".into(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
}

impl Diagnostics {
    /// One JSON object (no dependencies on a JSON library; the shape is documented in
    /// `docs/operations.md`).
    pub fn to_json(&self) -> String {
        let mut o = String::new();
        let _ = write!(o, "{{\"node\":{},", json_str(&self.node.to_string()));
        let _ = write!(
            o,
            "\"maps_per_destination\":{},",
            self.maps_per_destination
                .map_or("null".into(), |b| b.to_string())
        );
        let regs: Vec<String> = self
            .registrations
            .iter()
            .map(|(s, obs)| {
                format!(
                    "{{\"server\":{},\"observed\":{}}}",
                    json_str(&s.to_string()),
                    obs.map_or("null".into(), |a| json_str(&a.to_string()))
                )
            })
            .collect();
        let _ = write!(o, "\"registrations\":[{}],", regs.join(","));
        let cands: Vec<String> = self
            .candidates
            .iter()
            .map(|c| {
                format!(
                    "{{\"addr\":{},\"kind\":{}}}",
                    json_str(&c.addr.to_string()),
                    json_str(c.kind.label())
                )
            })
            .collect();
        let _ = write!(o, "\"candidates\":[{}],", cands.join(","));
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|p| {
                let pairs: Vec<String> = p
                    .pairs
                    .iter()
                    .map(|x| {
                        format!(
                            "{{\"remote\":{},\"kind\":{},\"state\":{},\"selected\":{},\"rtt_ms\":{},\"last_rtt_ms\":{},\
                             \"probes_sent\":{},\"probes_received\":{},\"answers_sent\":{},\"answers_received\":{},\
                             \"bytes_sent\":{},\"bytes_received\":{}}}",
                            json_str(&x.remote.to_string()),
                            json_str(x.kind.label()),
                            json_str(if x.selected { "selected" } else { x.state.label() }),
                            x.selected,
                            ms(x.rtt),
                            ms(x.last_rtt),
                            x.probes_sent,
                            x.probes_received,
                            x.answers_sent,
                            x.answers_received,
                            x.bytes_sent,
                            x.bytes_received
                        )
                    })
                    .collect();
                format!(
                    "{{\"peer\":{},\"established\":{},\"pairs\":[{}]}}",
                    json_str(&p.peer.to_string()),
                    p.established,
                    pairs.join(",")
                )
            })
            .collect();
        let _ = write!(o, "\"peers\":[{}]}}", peers.join(","));
        o
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
                    x.remote.to_string(),
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
        Ok(())
    }
}
