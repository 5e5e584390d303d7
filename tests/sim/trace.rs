//! The datagram record: every datagram the simulator delivered or dropped, with its fate, once
//! [`Sim::record_datagrams`] turned recording on; the packet trace one seed must reproduce.

use std::net::SocketAddr;
use std::time::Duration;

use super::Sim;

/// What became of a datagram (see [`Sim::record_datagrams`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Handed to a node's engine or to the rendezvous server.
    Delivered,
    /// Lost to the site's loss rate.
    Lost,
    /// Refused by a NAT's or a firewall's filter (or by a NAT that does not hairpin).
    Filtered,
    /// No route: an unknown destination, a closed socket, no address of the family.
    Unroutable,
}

/// One datagram the simulator delivered or dropped: when, between which addresses as seen on
/// the wire at that point, its bytes, and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TracedDatagram {
    /// Virtual time since the start.
    pub at: Duration,
    /// Source address.
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Delivered or why not.
    pub fate: Fate,
}

impl Sim {
    /// Records every datagram delivered or dropped from now on, in [`Sim::datagrams`]: the
    /// packet trace that one seed must reproduce.
    pub fn record_datagrams(&mut self) {
        self.datagrams.get_or_insert_with(Vec::new);
    }

    pub(super) fn note(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8], fate: Fate) {
        let at = self.elapsed();
        if let Some(d) = self.datagrams.as_mut() {
            d.push(TracedDatagram {
                at,
                from,
                to,
                bytes: bytes.to_vec(),
                fate,
            });
        }
    }
}
