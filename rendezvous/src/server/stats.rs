//! What the server counts: datagrams by [`PacketKind`], requests not served by [`DropReason`],
//! bytes and registrations ([`Stats`]). Counter arrays are sized from the enums, so a new kind or
//! reason gets its counter and its metrics label (an exhaustive match) or fails to compile.

macro_rules! labelled_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $label:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// Every value, in order.
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$v),+];
            /// How many values there are: counter arrays are sized by it.
            pub const COUNT: usize = Self::ALL.len();
            /// The position of this value in [`Self::ALL`], an index into counter arrays.
            pub fn index(self) -> usize {
                self as usize
            }
            /// The metrics label.
            pub fn label(self) -> &'static str {
                match self { $($name::$v => $label),+ }
            }
        }
    };
}

labelled_enum!(
    /// What a received datagram was.
    PacketKind {
        /// REGISTER.
        Register => "register",
        /// REFRESH.
        Refresh => "refresh",
        /// INTRODUCE.
        Introduce => "introduce",
        /// RELAY.
        Relay => "relay",
        /// STUN on the primary port.
        Stun => "stun",
        /// STUN on the alternate port.
        StunAlt => "stun_alt",
        /// Anything else.
        Other => "other",
    }
);

labelled_enum!(
    /// Why a request was not served (some get a small error reply, some are silently dropped).
    DropReason {
        /// Failed to parse.
        Malformed => "malformed",
        /// Not a message the server accepts (unknown type, or a server-to-node type).
        UnexpectedType => "unexpected_type",
        /// Another protocol version.
        UnsupportedVersion => "unsupported_version",
        /// REGISTER signature did not verify.
        BadSignature => "bad_signature",
        /// REGISTER timestamp outside the skew window.
        ClockSkew => "clock_skew",
        /// REGISTER replayed or older than the last.
        StaleTimestamp => "stale_timestamp",
        /// The node table is full.
        TableFull => "table_full",
        /// REFRESH/INTRODUCE from an unregistered node, wrong address or bad token.
        NotRegistered => "not_registered",
        /// Sender over its introduction rate.
        SenderRateLimited => "sender_rate_limited",
        /// Target over its introduction rate.
        TargetRateLimited => "target_rate_limited",
        /// Introduction to a node not registered here.
        UnknownPeer => "unknown_peer",
        /// Malformed STUN.
        StunMalformed => "stun_malformed",
        /// STUN other than a Binding request.
        StunNotBinding => "stun_not_binding",
        /// A reply would have been larger than its request.
        ReplyTooLarge => "reply_too_large",
        /// A rendezvous message on the STUN-only port.
        WrongPort => "wrong_port",
        /// REGISTER signed for an address that is not this server's.
        WrongServer => "wrong_server",
        /// REGISTER from a source prefix that holds its quota of registrations.
        PrefixQuota => "prefix_quota",
        /// REGISTER over its source prefix's rate of signature checks (dropped unanswered).
        RegisterRateLimited => "register_rate_limited",
        /// REGISTER without a valid cookie while under load (answered with RETRY).
        CookieRequired => "cookie_required",
        /// Introduction over the (sender prefix, target) rate.
        PairRateLimited => "pair_rate_limited",
        /// Introduction to a node whose address has not proven it receives (its token has not
        /// come back yet); answered as unknown peer.
        TargetUnconfirmed => "target_unconfirmed",
        /// STUN answer larger than its request, over the per-prefix or global budget, or on the
        /// second port (dropped unanswered).
        StunExcessLimited => "stun_excess_limited",
        /// RELAY to a server without the relay role (dropped unanswered).
        RelayDisabled => "relay_disabled",
        /// RELAY from or to a node not on the relay's allowlist.
        RelayNotAllowed => "relay_not_allowed",
        /// RELAY to a node not registered here, or not confirmed.
        RelayUnknownTarget => "relay_unknown_target",
        /// RELAY that would open a session over the relay's session limits.
        RelaySessionLimit => "relay_session_limit",
        /// RELAY over its sender's byte rate (dropped unanswered).
        RelayRateLimited => "relay_rate_limited",
    }
);

/// Counters since start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received, by [`PacketKind`] (indexed by its position in `ALL`).
    pub received: [u64; PacketKind::COUNT],
    /// Requests not served, by [`DropReason`].
    pub dropped: [u64; DropReason::COUNT],
    /// Bytes received.
    pub received_bytes: u64,
    /// Datagrams emitted.
    pub sent: u64,
    /// Bytes emitted.
    pub sent_bytes: u64,
    /// Datagrams the driver failed to send.
    pub send_errors: u64,
    /// Registrations of nodes that were not registered.
    pub registrations_new: u64,
    /// Registrations extended or moved (REGISTER or REFRESH of a registered node).
    pub registrations_renewed: u64,
    /// Registrations removed by expiry.
    pub registrations_expired: u64,
    /// Introductions forwarded.
    pub introductions_forwarded: u64,
    /// Of those, answers forwarded on a free credit (relayed responses, not charged).
    pub introductions_answered_free: u64,
    /// REGISTER signatures checked (the expensive part of a REGISTER).
    pub signature_checks: u64,
    /// RETRY messages sent (cookies handed out under load).
    pub retries_sent: u64,
    /// Tunnel packets relayed.
    pub relayed_packets: u64,
    /// Bytes of tunnel packets relayed (without the relay's headers).
    pub relayed_bytes: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            received: [0; PacketKind::COUNT],
            dropped: [0; DropReason::COUNT],
            received_bytes: 0,
            sent: 0,
            sent_bytes: 0,
            send_errors: 0,
            registrations_new: 0,
            registrations_renewed: 0,
            registrations_expired: 0,
            introductions_forwarded: 0,
            introductions_answered_free: 0,
            signature_checks: 0,
            retries_sent: 0,
            relayed_packets: 0,
            relayed_bytes: 0,
        }
    }
}

impl Stats {
    /// Received count of one kind.
    pub fn received(&self, kind: PacketKind) -> u64 {
        self.received[kind.index()]
    }

    /// Drop count of one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    pub(crate) fn count_received(&mut self, kind: PacketKind) {
        self.received[kind.index()] += 1;
    }

    pub(crate) fn count_dropped(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }
}
