//! What the engine drops, counted by reason instead of logged per packet (the way the tunnel's
//! `Stats` and the rendezvous server's `DropReason` count theirs).
//!
//! The reasons are declared once, in `drop_reasons!`: the enum, its labels, [`DropReason::ALL`]
//! and [`DropReason::COUNT`] (which sizes the counter array) all come from that one list, so a new
//! reason cannot be left out of the counters.

use serde::ser::{Serialize, SerializeMap, Serializer};

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $v:ident => $label:literal),+ $(,)?) => {
        /// Why the engine dropped a datagram, a message or a queued item.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropReason { $($(#[$m])* $v),+ }

        impl DropReason {
            /// Every reason, in declaration order (the index of a reason's counter).
            pub const ALL: [DropReason; [$(DropReason::$v),+].len()] = [$(DropReason::$v),+];
            /// How many reasons there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The name used in output and metrics.
            pub fn label(self) -> &'static str {
                match self { $(DropReason::$v => $label),+ }
            }
        }
    };
}

drop_reasons! {
    /// RELAYED from a server that does not relay for us, or while we refuse relays.
    RelayUnused => "relay_unused",
    /// RELAYED naming no valid key, or carrying no tunnel packet.
    RelayMalformed => "relay_malformed",
    /// RELAYED or a relayed path with no room left for its stand-in address.
    RelayRoutesFull => "relay_routes_full",
    /// A datagram for a relayed path whose relay is gone (or not registered yet).
    RelayNoRoute => "relay_no_route",
    /// A datagram too large to relay.
    RelayTooLarge => "relay_too_large",
    /// The relay refused a RELAY (ERROR `RelayRefused`).
    RelayRefused => "relay_refused",
    /// A rendezvous message that failed to parse.
    MalformedRendezvous => "malformed_rendezvous",
    /// A rendezvous message from an address that is none of our servers.
    RendezvousFromStranger => "rendezvous_from_stranger",
    /// A rendezvous message a node never receives (REGISTER, INTRODUCE...).
    UnexpectedRendezvous => "unexpected_rendezvous",
    /// REGISTERED, ERROR or INTRO_ACK with a transaction id we are not waiting for.
    UnknownRendezvousTransaction => "unknown_rendezvous_transaction",
    /// An INTRO_FWD whose sender id is not a valid key, or whose payload is no handshake.
    BadIntroduction => "bad_introduction",
    /// A STUN message that failed to parse or is no Binding success.
    MalformedStun => "malformed_stun",
    /// A STUN answer with a transaction id we are not waiting for.
    UnknownStunTransaction => "unknown_stun_transaction",
    /// A STUN answer from another address than the one asked.
    StunFromWrongServer => "stun_from_wrong_server",
    /// A datagram that is no tunnel frame, no STUN and no rendezvous message.
    Unrecognized => "unrecognized",
    /// A datagram other than a tunnel frame on an extra (birthday) socket.
    NotTunnelOnExtraSocket => "not_tunnel_on_extra_socket",
    /// A probe answer for a probe we did not send (or forgot).
    UnknownProbeAnswer => "unknown_probe_answer",
    /// A probe answer from another peer, address or socket than the probe went to.
    MismatchedProbeAnswer => "mismatched_probe_answer",
    /// The transmit queue was full.
    TransmitQueueFull => "transmit_queue_full",
    /// The event queue was full.
    EventQueueFull => "event_queue_full",
    /// An introduction waiting for a registration was pushed out by newer ones.
    WaitingIntroductionEvicted => "waiting_introduction_evicted",
    /// An introduction payload larger than the rendezvous forwards.
    IntroductionTooLarge => "introduction_too_large",
    /// A probe not sent: the table of outstanding probes was full.
    ProbeTableFull => "probe_table_full",
    /// A STUN request not sent: the table of outstanding requests was full.
    StunTableFull => "stun_table_full",
    /// A local candidate beyond the limit.
    LocalCandidatesFull => "local_candidates_full",
    /// A rendezvous server beyond the limit.
    RendezvousServersFull => "rendezvous_servers_full",
    /// A datagram to an unverified address over its (or its IP's) budget.
    UnverifiedAddressBudget => "unverified_address_budget",
    /// A datagram to an unverified address over the budget of all of them.
    UnverifiedGlobalBudget => "unverified_global_budget",
    /// A datagram to an unverified address refused: the gate's tables are full.
    GateTableFull => "gate_table_full",
    /// A datagram to an unverified address beyond what its peer sent us (amplification ≤ 1).
    NoCredit => "no_credit",
    /// A tunnel datagram to an unverified address that belongs to no peer we keep.
    UnattributedTransmit => "unattributed_transmit",
    /// A peer's candidate that may not become a pair (not global and not on our subnets, or
    /// beyond the peer's share).
    CandidateRefused => "candidate_refused",
    /// An ADVERT frame over the peer's rate.
    AdvertRateLimited => "advert_rate_limited",
    /// An INTRO_FWD whose handshake proves another key than the one it names.
    IntroducerMismatch => "introducer_mismatch",
    /// No room for another peer's state.
    PeerTableFull => "peer_table_full",
    /// A probe not sent: the peer's share of the probe table is used up.
    PeerProbeShare => "peer_probe_share",
    /// Birthday probing not started: the global limit of concurrent runs is reached.
    BirthdayBusy => "birthday_busy",
    /// Birthday probing not started: no rendezvous has told us where the peer registered from
    /// (its INTRO_ACK was lost); a fresh introduction asks again (at most twice).
    BirthdayNoObservation => "birthday_no_observation",
}

/// Counters by [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drops([u64; DropReason::COUNT]);

impl Default for Drops {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl Drops {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Drops for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// All drops so far.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Every reason with its count, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// One JSON object, `{"label": count, ...}`, every reason included.
impl Serialize for Drops {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(DropReason::COUNT))?;
        for (reason, n) in self.iter() {
            map.serialize_entry(reason.label(), &n)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_label() {
        let mut d = Drops::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            d.count(*r);
        }
        assert_eq!(d.total(), DropReason::COUNT as u64);
        let labels: std::collections::BTreeSet<_> =
            DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DropReason::COUNT);
    }
}
