//! The relay role (`--relay`, `docs/operations.md` §"Running a relay"): which pairs of nodes may
//! exchange tunnel packets through this server, and how much.
//!
//! A *session* is an unordered pair of registered nodes that exchanged a packet through the relay
//! recently. Sessions are bounded in all, per node, and per source prefix of the node that opened
//! them (so that many keys registered from one network cannot take a target's places or the
//! table); each node's sending rate in bytes is a GCRA (token bucket) of its own. State exists only for nodes that proved their key
//! (registration) and named a registered target, so a stranger's flood creates none.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::wire::RawNodeId;

/// The relay's tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Nodes that may use the relay; `None`: every registered node. Both ends of a session must
    /// be allowed.
    pub allow: Option<BTreeSet<RawNodeId>>,
    /// Bytes per second one node may send through the relay (sustained).
    pub node_bytes_per_second: u64,
    /// Bytes one node may send back to back.
    pub node_burst_bytes: u64,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions one node may be part of.
    pub max_sessions_per_node: u16,
    /// Most sessions the nodes of one source prefix (the registration prefix) may open.
    pub max_sessions_per_prefix: u16,
    /// A session without packets for this long ends (and frees its place).
    pub session_idle: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            allow: None,
            // 2 MB/s (16 Mbit/s) a node: enough for interactive use and file copies on a small
            // VPS; an operator with bandwidth to spare raises it.
            node_bytes_per_second: 2_000_000,
            node_burst_bytes: 256 * 1024,
            max_sessions: 10_000,
            max_sessions_per_node: 32,
            // Half a node's share: one network needs several to fill a target's places.
            max_sessions_per_prefix: 16,
            session_idle: Duration::from_secs(60),
        }
    }
}

impl RelayConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_bytes_per_second < 1500 || self.node_burst_bytes < 1500 {
            return Err(
                "relay node_bytes_per_second and node_burst_bytes must be at least 1500 \
                 (one full packet)"
                    .into(),
            );
        }
        if self.max_sessions == 0
            || self.max_sessions_per_node == 0
            || self.max_sessions_per_prefix == 0
        {
            return Err(
                "relay max_sessions, max_sessions_per_node and max_sessions_per_prefix must be \
                 at least 1"
                    .into(),
            );
        }
        if self.session_idle < Duration::from_secs(5) {
            return Err("relay session_idle must be at least 5 seconds".into());
        }
        Ok(())
    }

    /// Whether `node` may use the relay.
    pub fn allows(&self, node: &RawNodeId) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(node))
    }
}

/// Why a packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No room for another session (in all, or for one of the two nodes).
    SessionLimit,
    /// The sender is over its byte rate.
    RateLimited,
}

/// A source prefix (the registration prefix of a node's address), as the server computes it.
pub(crate) type PrefixKey = [u8; 17];

#[derive(Debug, Clone, Copy)]
struct Session {
    /// Last packet, µs since the server started.
    last_us: u64,
    /// The source prefix of the node that opened it (its share is freed when it ends).
    opener: PrefixKey,
}

#[derive(Debug, Clone, Copy, Default)]
struct NodeUse {
    /// GCRA theoretical arrival time of the next byte budget, µs since the server started.
    tat_us: u64,
    /// Sessions the node is part of.
    sessions: u16,
}

/// Relay sessions and per-node budgets.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    sessions: HashMap<(RawNodeId, RawNodeId), Session>,
    nodes: HashMap<RawNodeId, NodeUse>,
    /// Sessions opened from each source prefix.
    prefixes: HashMap<PrefixKey, u16>,
}

fn key(a: &RawNodeId, b: &RawNodeId) -> (RawNodeId, RawNodeId) {
    if a <= b {
        (*a, *b)
    } else {
        (*b, *a)
    }
}

impl Relays {
    /// Sessions open.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Nodes with relay state.
    #[cfg(test)]
    pub(crate) fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Admits `len` bytes from `sender` to `target` at `now_us`, opening their session if needed.
    pub(crate) fn admit(
        &mut self,
        c: &RelayConfig,
        now_us: u64,
        (sender, prefix): (&RawNodeId, PrefixKey),
        target: &RawNodeId,
        len: usize,
    ) -> Result<(), Refusal> {
        let k = key(sender, target);
        let new = !self.sessions.contains_key(&k);
        if new {
            let full = |n: &RawNodeId| {
                self.nodes
                    .get(n)
                    .is_some_and(|u| u.sessions >= c.max_sessions_per_node)
            };
            let prefix_full = self
                .prefixes
                .get(&prefix)
                .is_some_and(|n| *n >= c.max_sessions_per_prefix);
            if self.sessions.len() >= c.max_sessions || full(sender) || full(target) || prefix_full
            {
                return Err(Refusal::SessionLimit);
            }
        }
        // The byte budget is charged before a session is made, so a refused packet opens none.
        let rate = c.node_bytes_per_second.max(1);
        let cost = (len as u64).saturating_mul(1_000_000) / rate;
        let tolerance = c.node_burst_bytes.saturating_mul(1_000_000) / rate;
        let use_ = self.nodes.entry(*sender).or_default();
        let tat = use_.tat_us.max(now_us);
        if tat.saturating_sub(now_us) + cost > tolerance {
            if use_.sessions == 0 && new {
                // Made just now for a packet it could not send: keep no state for it.
                self.nodes.remove(sender);
            }
            return Err(Refusal::RateLimited);
        }
        use_.tat_us = tat + cost;
        let opener = match self.sessions.get(&k) {
            Some(s) => s.opener,
            None => {
                self.nodes.entry(*sender).or_default().sessions += 1;
                if sender != target {
                    self.nodes.entry(*target).or_default().sessions += 1;
                }
                *self.prefixes.entry(prefix).or_default() += 1;
                prefix
            }
        };
        self.sessions.insert(
            k,
            Session {
                last_us: now_us,
                opener,
            },
        );
        Ok(())
    }

    /// Ends sessions idle for `idle` and forgets nodes without sessions or debt.
    pub(crate) fn sweep(&mut self, idle: Duration, now_us: u64) {
        let idle = idle.as_micros() as u64;
        let nodes = &mut self.nodes;
        let prefixes = &mut self.prefixes;
        self.sessions.retain(|(a, b), s| {
            let keep = now_us.saturating_sub(s.last_us) < idle;
            if !keep {
                if let Some(n) = prefixes.get_mut(&s.opener) {
                    *n = n.saturating_sub(1);
                }
                for n in [a, b] {
                    if let Some(u) = nodes.get_mut(n) {
                        u.sessions = u.sessions.saturating_sub(1);
                    }
                    if a == b {
                        break;
                    }
                }
            }
            keep
        });
        self.nodes
            .retain(|_, u| u.sessions > 0 || u.tat_us > now_us);
        self.prefixes.retain(|_, n| *n > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PrefixKey = [7; 17];

    fn cfg() -> RelayConfig {
        RelayConfig {
            node_bytes_per_second: 10_000,
            node_burst_bytes: 3_000,
            max_sessions: 3,
            max_sessions_per_node: 2,
            ..RelayConfig::default()
        }
    }

    #[test]
    fn byte_rate_is_per_sender_with_a_burst() {
        let c = cfg();
        let mut r = Relays::default();
        let (a, b) = ([1; 32], [2; 32]);
        assert_eq!(r.admit(&c, 0, (&a, P), &b, 1500), Ok(()));
        assert_eq!(r.admit(&c, 0, (&a, P), &b, 1500), Ok(()));
        assert_eq!(r.admit(&c, 0, (&a, P), &b, 1), Err(Refusal::RateLimited));
        // The other direction has its own budget.
        assert_eq!(r.admit(&c, 0, (&b, P), &a, 1500), Ok(()));
        // 10 000 B/s: 150 ms earn 1500 bytes back.
        assert_eq!(
            r.admit(&c, 149_000, (&a, P), &b, 1500),
            Err(Refusal::RateLimited)
        );
        assert_eq!(r.admit(&c, 150_000, (&a, P), &b, 1500), Ok(()));
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn sessions_are_bounded_in_all_and_per_node_and_expire() {
        let c = cfg();
        let mut r = Relays::default();
        let n = |i: u8| [i; 32];
        assert_eq!(r.admit(&c, 0, (&n(1), P), &n(2), 10), Ok(()));
        assert_eq!(r.admit(&c, 0, (&n(1), P), &n(3), 10), Ok(()));
        // Node 1 is in two sessions: its third is refused, others may still open one.
        assert_eq!(
            r.admit(&c, 0, (&n(1), P), &n(4), 10),
            Err(Refusal::SessionLimit)
        );
        assert_eq!(
            r.admit(&c, 0, (&n(4), P), &n(1), 10),
            Err(Refusal::SessionLimit)
        );
        assert_eq!(r.admit(&c, 0, (&n(4), P), &n(5), 10), Ok(()));
        // Three in all.
        assert_eq!(
            r.admit(&c, 0, (&n(6), P), &n(7), 10),
            Err(Refusal::SessionLimit)
        );
        // A known session goes on.
        assert_eq!(r.admit(&c, 1, (&n(2), P), &n(1), 10), Ok(()));
        r.sweep(Duration::from_secs(60), 60_000_000);
        assert_eq!(r.sessions(), 1, "only the one used at 1 µs is left");
        assert_eq!(r.admit(&c, 60_000_000, (&n(6), P), &n(7), 10), Ok(()));
        r.sweep(Duration::from_secs(60), 200_000_000);
        assert_eq!((r.sessions(), r.nodes()), (0, 0), "nothing is kept");
    }

    #[test]
    fn one_source_prefix_opens_at_most_its_share_of_sessions() {
        let c = RelayConfig {
            max_sessions_per_prefix: 2,
            ..cfg()
        };
        let mut r = Relays::default();
        let n = |i: u8| [i; 32];
        let other: PrefixKey = [8; 17];
        assert_eq!(r.admit(&c, 0, (&n(1), P), &n(9), 10), Ok(()));
        assert_eq!(r.admit(&c, 0, (&n(2), P), &n(9), 10), Ok(()));
        // A third key from the same network is refused; another network is not.
        assert_eq!(
            r.admit(&c, 0, (&n(3), P), &n(8), 10),
            Err(Refusal::SessionLimit)
        );
        assert_eq!(r.admit(&c, 0, (&n(4), other), &n(8), 10), Ok(()));
        // The target answering on an open session does not count again.
        assert_eq!(r.admit(&c, 0, (&n(9), other), &n(1), 10), Ok(()));
        r.sweep(Duration::from_secs(60), 60_000_000);
        assert_eq!(r.admit(&c, 60_000_000, (&n(3), P), &n(8), 10), Ok(()));
    }

    #[test]
    fn a_refused_packet_leaves_no_state() {
        let c = cfg();
        let mut r = Relays::default();
        assert_eq!(
            r.admit(&c, 0, (&[1; 32], P), &[2; 32], 4000),
            Err(Refusal::RateLimited)
        );
        assert_eq!((r.sessions(), r.nodes()), (0, 0));
    }
}
