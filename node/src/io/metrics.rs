//! Prometheus metrics of a running node (`shipworm up --metrics-listen ADDR`), served by the
//! rendezvous' endpoint ([`shipworm_rendezvous::metrics::serve`]); the names are listed in
//! `docs/operations.md` §"Node metrics".
//!
//! A task ([`publish`]) takes a [`Snapshot`] of the node twice a second; a scrape encodes the
//! latest one, so scraping never waits on the node's driver.

use std::time::Duration;

use shipworm_rendezvous::metrics::prometheus_client::collector::Collector;
use shipworm_rendezvous::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use shipworm_rendezvous::metrics::prometheus_client::metrics::counter::ConstCounter;
use shipworm_rendezvous::metrics::prometheus_client::metrics::gauge::ConstGauge;
use shipworm_rendezvous::metrics::prometheus_client::metrics::MetricType;
use shipworm_rendezvous::metrics::prometheus_client::registry::Registry;
use shipworm_rendezvous::metrics::{counters, single};
use tokio::sync::watch;

use crate::api::{Counters, Node};
use crate::engine::paths::CandidateKind;
use crate::engine::{Diagnostics, DropReason};

/// The prefix of every node metric.
pub const PREFIX: &str = "shipworm_node";
/// How often [`publish`] takes a snapshot.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// The node's state at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Peers, pairs, registrations, engine drops.
    pub diagnostics: Diagnostics,
    /// The driver's local drops and the tunnel's counters.
    pub counters: Counters,
}

/// The node's metrics, read from the latest [`Snapshot`] at each scrape.
#[derive(Debug)]
pub struct NodeCollector {
    snapshot: watch::Receiver<Option<Snapshot>>,
}

/// A registry holding the node's metrics under [`PREFIX`].
pub fn registry(snapshot: watch::Receiver<Option<Snapshot>>) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(NodeCollector { snapshot }));
    registry
}

/// Publishes a snapshot of `node` every [`PUBLISH_INTERVAL`] until the node stops.
pub async fn publish(node: &Node, snapshots: watch::Sender<Option<Snapshot>>) {
    loop {
        let (Ok(diagnostics), Ok(counters)) = (node.status().await, node.counters().await) else {
            return;
        };
        let _ = snapshots.send(Some(Snapshot {
            diagnostics,
            counters,
        }));
        tokio::time::sleep(PUBLISH_INTERVAL).await;
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(snap) = self.snapshot.borrow().clone() else {
            return Ok(());
        };
        let d = &snap.diagnostics;
        let (local, tunnel) = &snap.counters;
        let gauge = |n: usize| ConstGauge::new(n as i64);
        let established = d.peers.iter().filter(|p| p.established).count();
        let selected: Vec<_> = d
            .peers
            .iter()
            .filter_map(|p| p.pairs.iter().find(|x| x.selected))
            .collect();
        single(
            &mut e,
            "peers",
            "Peers with an established session.",
            gauge(established),
        )?;
        single(
            &mut e,
            "connected_peers",
            "Peers with a selected two-way path.",
            gauge(selected.len()),
        )?;
        single(
            &mut e,
            "registrations",
            "Rendezvous servers that confirmed our registration.",
            gauge(d.registrations.iter().filter(|(_, o)| o.is_some()).count()),
        )?;
        let mut paths = e.encode_descriptor(
            "paths",
            "Selected paths by the kind of the remote candidate.",
            None,
            MetricType::Gauge,
        )?;
        for kind in CandidateKind::ALL {
            let n = selected.iter().filter(|x| x.kind == kind).count();
            gauge(n).encode(paths.encode_family(&[("kind", kind.label())])?)?;
        }
        let bytes = |f: fn(&crate::engine::PairDiagnostics) -> u64| -> u64 {
            d.peers.iter().flat_map(|p| &p.pairs).map(f).sum()
        };
        counters(
            &mut e,
            "bytes",
            "Underlay bytes exchanged with peers, by direction.",
            "direction",
            [
                ("sent", bytes(|x| x.bytes_sent)),
                ("received", bytes(|x| x.bytes_received)),
            ],
        )?;
        single(
            &mut e,
            "handshakes",
            "Sessions established.",
            ConstCounter::new(tunnel.handshakes_completed),
        )?;
        counters(
            &mut e,
            "tunnel",
            "The tunnel's counters: packets through it and drops by reason.",
            "counter",
            tunnel.fields(),
        )?;
        counters(
            &mut e,
            "engine_drops",
            "Messages, datagrams and queued items the engine dropped, by reason.",
            "reason",
            DropReason::ALL.map(|r| (r.label(), d.drops.get(r))),
        )?;
        single(
            &mut e,
            "tun_large_reads",
            "TUN reads that brought one large segment (segmentation offload), split into packets.",
            ConstCounter::new(local.tun_large_reads),
        )?;
        single(
            &mut e,
            "tun_sealed_in_place",
            "Packets read from the TUN that the tunnel sealed in their read buffers, without a copy.",
            ConstCounter::new(local.tun_sealed_in_place),
        )?;
        single(
            &mut e,
            "tun_written_in_place",
            "Packets written to the TUN from the buffers the tunnel opened them in, without a copy.",
            ConstCounter::new(local.tun_written_in_place),
        )?;
        counters(
            &mut e,
            "local_drops",
            "Local packets the driver could not pass on, by reason.",
            "reason",
            local.fields(),
        )?;
        Ok(())
    }
}
