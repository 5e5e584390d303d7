//! The rendezvous server as a sans-IO state machine.
//!
//! Feed it datagrams with [`Server::handle_packet`] and time with [`Server::handle_timeout`]; take
//! what to send from [`Server::poll_transmit`]. It owns no socket and reads no clock. Its
//! tunables are a [`ServerConfig`]; what it counts is in [`Stats`]; its node table and refresh
//! tokens are [`crate::table`] and [`crate::token`].
//!
//! **Invariant:** after every `handle_packet`, call `poll_transmit` until it returns `None` before
//! handling the next packet. One packet yields at most two datagrams (an introduction's forward
//! and its acknowledgement); anything not drained is discarded and counted as a send error.
//!
//! Rules that hold for every packet (`docs/protocol.md` §"Server rules"):
//! - No per-sender state exists before a valid REGISTER signature; what limits strangers lives in
//!   fixed arrays of cells ([`limits`]).
//! - A REGISTER is accepted only if signed for one of this server's own addresses.
//! - Signature checks are limited per source prefix, and under load need a cookie (RETRY).
//! - No reply is larger than the packet it answers (STUN Binding on the main port excepted,
//!   within a small per-prefix and global budget; see [`crate::wire::stun`]).
//! - Introductions come only from registered senders at their registered address, go only to
//!   confirmed registrations, and are rate-limited per sender, per (sender prefix, target) and per
//!   target; a target's relayed answer rides on a credit of the introduction it answers.
//! - The node table is bounded, and so is each source prefix's share of it.
//! - Malformed input is dropped and counted; nothing here panics on untrusted bytes.
//! - Every datagram leaves from the local address the packet it answers arrived at, when the
//!   driver says which ([`Server::handle_packet_at`]): a host with several addresses answers from
//!   the one that was asked (`docs/protocol.md` §"Answering from the address that was asked").

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

mod config;
pub mod limits;
mod relay;
mod stats;

pub use config::ServerConfig;
pub use relay::RelayConfig;
pub use stats::{DropReason, PacketKind, Stats};

use crate::table::{NodeTable, RegisterError};
use crate::token::TokenKeys;
use crate::wire::{
    self, stun, ErrorCode, ErrorMsg, IntroAck, IntroFwd, IntroStatus, Message, ParseError,
    Registered, Relayed, Retry, REGISTERED_RELAY,
};
use limits::{Cookies, LoadMeter, Prefix, PrefixCounts, RateCells, ReplyCredits};

/// How often expired registrations are swept out.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Largest datagram the server emits.
pub const MAX_DATAGRAM: usize = 1280;
/// Most datagrams one packet makes the server send (an introduction's forward and its
/// acknowledgement).
pub const MAX_TRANSMITS: usize = 2;

/// Which of the server's sockets a datagram arrived on or leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// The main port: rendezvous protocol and STUN.
    Primary,
    /// The second port: STUN only.
    Alt,
}

/// A datagram to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// From which socket.
    pub socket: Socket,
    /// To whom (IPv4 peers as IPv4, never IPv4-mapped).
    pub dest: SocketAddr,
    /// From which local address: the one the packet it answers arrived at (IPv4 as IPv4). `None`
    /// when the driver did not say, or for a forward to another address family: the OS chooses.
    pub src: Option<IpAddr>,
    /// The bytes.
    pub contents: &'a [u8],
}

/// One queued datagram: socket, source address, destination, bytes.
type Slot = (Socket, Option<IpAddr>, SocketAddr, Vec<u8>);

/// Up to [`MAX_TRANSMITS`] datagrams produced by one packet, in reused buffers.
#[derive(Debug)]
struct Outbox {
    slots: [Slot; MAX_TRANSMITS],
    len: usize,
    next: usize,
    /// The local address the packet being handled arrived at (normalised), if known.
    local: Option<IpAddr>,
}

/// The server state.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    table: NodeTable,
    tokens: TokenKeys,
    /// Registrations per source prefix (the quota).
    prefix_counts: PrefixCounts,
    /// Signature checks per source prefix.
    register_cells: RateCells,
    /// Introductions per (sender prefix, target).
    pair_cells: RateCells,
    /// STUN answers larger than their request, per source prefix, and in all.
    stun_cells: RateCells,
    stun_global: u32,
    /// Free relayed answers of a target toward its introducer.
    credits: ReplyCredits,
    cookies: Cookies,
    load: LoadMeter,
    epoch: Instant,
    next_sweep: Instant,
    last_forced_sweep: Option<Instant>,
    out: Outbox,
    stats: Stats,
    relays: relay::Relays,
}

impl Server {
    /// A server started at `now`. Panics if `config` is invalid; call [`ServerConfig::validate`]
    /// first on anything a user wrote.
    pub fn new(mut config: ServerConfig, now: Instant, mut rng: shipworm_tunnel::rng::Rng) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid rendezvous configuration: {e}");
        }
        config.addresses = normalized(&config.addresses);
        let empty = || {
            (
                Socket::Primary,
                None,
                SocketAddr::from(([0, 0, 0, 0], 0)),
                Vec::with_capacity(MAX_DATAGRAM),
            )
        };
        let now_ms = 0;
        Self {
            table: NodeTable::new(config.max_nodes),
            prefix_counts: PrefixCounts::new(&mut rng),
            register_cells: RateCells::new(&mut rng),
            pair_cells: RateCells::new(&mut rng),
            stun_cells: RateCells::new(&mut rng),
            stun_global: now_ms,
            credits: ReplyCredits::new(&mut rng),
            cookies: Cookies::new(&mut rng),
            load: LoadMeter::default(),
            tokens: TokenKeys::new(rng, now, config.token_rotation),
            epoch: now,
            next_sweep: now + SWEEP_INTERVAL,
            last_forced_sweep: None,
            out: Outbox {
                slots: std::array::from_fn(|_| empty()),
                len: 0,
                next: 0,
                local: None,
            },
            stats: Stats::default(),
            relays: relay::Relays::default(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Replaces the addresses REGISTERs may be signed for (the driver re-reads the interfaces
    /// now and then). An empty list is ignored: a server always knows at least one address.
    pub fn set_addresses(&mut self, addresses: &[SocketAddr]) {
        if !addresses.is_empty() {
            self.config.addresses = normalized(addresses);
        }
    }

    fn prefix(&self, a: SocketAddr) -> Prefix {
        Prefix::of(
            a,
            self.config.registration_prefix_v4,
            self.config.registration_prefix_v6,
        )
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Registered nodes (including expired ones not yet swept, at most [`SWEEP_INTERVAL`] old).
    pub fn registered(&self) -> usize {
        self.table.len()
    }

    /// Relay sessions open (pairs of nodes that exchanged a packet through us recently).
    pub fn relay_sessions(&self) -> usize {
        self.relays.sessions()
    }

    /// Tells the server a datagram it produced could not be sent.
    pub fn record_send_error(&mut self) {
        self.stats.send_errors += 1;
    }

    fn clock(&self, now: Instant) -> (u32, u32) {
        let since = now.saturating_duration_since(self.epoch);
        (since.as_secs() as u32, since.as_millis() as u32)
    }

    /// Handles one datagram that arrived on `socket` from `from` at `now`; `unix_ms` is the wall
    /// clock (ms since the Unix epoch), used only to judge REGISTER timestamps. What it sends
    /// carries no source address (the OS chooses one); a driver that knows the local address the
    /// datagram arrived at calls [`Server::handle_packet_at`].
    pub fn handle_packet(
        &mut self,
        now: Instant,
        unix_ms: u64,
        socket: Socket,
        from: SocketAddr,
        packet: &[u8],
    ) {
        self.handle_packet_at(now, unix_ms, socket, None, from, packet)
    }

    /// As [`Server::handle_packet`], for a datagram that arrived at local address `local` (the
    /// destination address of its IP header, `IP_PKTINFO` / `IPV6_PKTINFO`): every reply carries
    /// it as [`Transmit::src`], and so does an introduction forwarded to a node of the same
    /// address family (the node dialled us at the address its peer's ticket names, which is the
    /// one the peer registered at).
    pub fn handle_packet_at(
        &mut self,
        now: Instant,
        unix_ms: u64,
        socket: Socket,
        local: Option<IpAddr>,
        from: SocketAddr,
        packet: &[u8],
    ) {
        if self.out.next < self.out.len {
            self.stats.send_errors += (self.out.len - self.out.next) as u64;
        }
        self.out.len = 0;
        self.out.next = 0;
        self.out.local = local.map(|ip| ip.to_canonical());
        self.stats.received_bytes += packet.len() as u64;
        let from = shipworm_tunnel::wire::addr::normalize(from);

        if stun::is_stun(packet) {
            let kind = if socket == Socket::Alt {
                PacketKind::StunAlt
            } else {
                PacketKind::Stun
            };
            self.count(kind);
            return self.handle_stun(now, socket, from, packet);
        }
        if socket == Socket::Alt {
            self.count(PacketKind::Other);
            return self.drop(DropReason::WrongPort);
        }
        let msg = match Message::parse(packet) {
            Ok(m) => m,
            Err(e) => {
                self.count(PacketKind::Other);
                return self.handle_parse_error(e, from, packet);
            }
        };
        match msg {
            Message::Register(r) => {
                self.count(PacketKind::Register);
                self.handle_register(now, unix_ms, from, r, packet.len());
            }
            Message::Refresh(r) => {
                self.count(PacketKind::Refresh);
                self.handle_refresh(now, unix_ms, from, r, packet.len());
            }
            Message::Introduce(i) => {
                self.count(PacketKind::Introduce);
                self.handle_introduce(now, unix_ms, from, i, packet.len());
            }
            Message::Relay(r) => {
                self.count(PacketKind::Relay);
                self.handle_relay(now, unix_ms, from, r, packet.len());
            }
            _ => {
                self.count(PacketKind::Other);
                self.drop(DropReason::UnexpectedType);
            }
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        if self.out.next >= self.out.len {
            return None;
        }
        let (socket, src, dest, ref buf) = self.out.slots[self.out.next];
        self.out.next += 1;
        self.stats.sent += 1;
        self.stats.sent_bytes += buf.len() as u64;
        Some(Transmit {
            socket,
            dest,
            src,
            contents: buf,
        })
    }

    /// When [`Server::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_sweep.min(self.tokens.next_rotation()))
    }

    /// Sweeps expired registrations and rotates token secrets when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_sweep {
            let (now_s, now_ms) = self.clock(now);
            self.sweep(now_s);
            self.register_cells.normalize(now_ms);
            self.pair_cells.normalize(now_ms);
            self.stun_cells.normalize(now_ms);
            self.credits.normalize(now_ms);
            if (self.stun_global.wrapping_sub(now_ms) as i32) < 0 {
                self.stun_global = now_ms;
            }
            if let Some(c) = &self.config.relay {
                self.relays.sweep(c.session_idle, micros(self.epoch, now));
            }
            self.next_sweep = now + SWEEP_INTERVAL;
        }
        self.tokens.handle_timeout(now);
    }

    /// Removes expired registrations and their share of their prefix's quota.
    fn sweep(&mut self, now_s: u32) {
        let (v4, v6) = (
            self.config.registration_prefix_v4,
            self.config.registration_prefix_v6,
        );
        let counts = &mut self.prefix_counts;
        let n = self
            .table
            .sweep(now_s, |a| counts.remove(&Prefix::of(a, v4, v6)));
        self.stats.registrations_expired += n as u64;
    }

    fn count(&mut self, kind: PacketKind) {
        self.stats.count_received(kind);
    }

    fn drop(&mut self, reason: DropReason) {
        self.stats.count_dropped(reason);
    }

    /// Queues `msg` to `dest`, unless it is longer than `limit` (the request it answers).
    fn queue(&mut self, socket: Socket, dest: SocketAddr, limit: Option<usize>, msg: &Message<'_>) {
        let src = self.source_for(dest);
        let slot = &mut self.out.slots[self.out.len];
        slot.3.clear();
        msg.emit(&mut slot.3);
        if limit.is_some_and(|limit| slot.3.len() > limit) {
            return self.drop(DropReason::ReplyTooLarge);
        }
        slot.0 = socket;
        slot.1 = src;
        slot.2 = dest;
        self.out.len += 1;
    }

    /// The source address of a datagram to `dest`: the address the packet being handled arrived
    /// at, if it is of `dest`'s family (a forward across families leaves it to the OS).
    fn source_for(&self, dest: SocketAddr) -> Option<IpAddr> {
        self.out
            .local
            .filter(|local| local.is_ipv4() == dest.is_ipv4())
    }

    fn reply(&mut self, to: SocketAddr, request_len: usize, msg: &Message<'_>) {
        self.queue(Socket::Primary, to, Some(request_len), msg);
    }

    fn reply_error(
        &mut self,
        to: SocketAddr,
        request_len: usize,
        tx: u64,
        code: ErrorCode,
        unix_ms: u64,
    ) {
        let msg = Message::Error(ErrorMsg {
            tx,
            code,
            server_time_ms: unix_ms,
        });
        self.reply(to, request_len, &msg);
    }

    fn handle_parse_error(&mut self, e: ParseError, from: SocketAddr, packet: &[u8]) {
        match e {
            ParseError::Version(_) => {
                self.drop(DropReason::UnsupportedVersion);
                if let Some(tx) = wire::peek_tx(packet) {
                    // The reply's header carries our version: that is the answer.
                    self.reply_error(from, packet.len(), tx, ErrorCode::UnsupportedVersion, 0);
                }
            }
            ParseError::UnknownType(_) => self.drop(DropReason::UnexpectedType),
            _ => self.drop(DropReason::Malformed),
        }
    }

    fn handle_stun(&mut self, now: Instant, socket: Socket, from: SocketAddr, packet: &[u8]) {
        let mut buf = [0u8; stun::MAX_RESPONSE_LEN];
        match stun::binding_response(packet, from, &mut buf) {
            Ok(n) => {
                // A standard answer (XOR-MAPPED-ADDRESS, FINGERPRINT only if asked) may exceed a bare
                // request by at most 24 bytes. Strict mode (the default on the second port, which
                // serves shipworm's padded requests) refuses even that; the main port answers bare
                // clients within a per-prefix and a global budget, so a spoofed flood gains at most
                // that budget.
                if n > packet.len() {
                    let strict = match socket {
                        Socket::Primary => self.config.stun_strict_size,
                        Socket::Alt => self.config.alt_stun_strict_size,
                    };
                    if strict {
                        return self.drop(DropReason::ReplyTooLarge);
                    }
                    if !self.admit_stun_excess(now, from) {
                        return self.drop(DropReason::StunExcessLimited);
                    }
                }
                let src = self.source_for(from);
                let slot = &mut self.out.slots[self.out.len];
                slot.0 = socket;
                slot.1 = src;
                slot.2 = from;
                slot.3.clear();
                slot.3.extend_from_slice(&buf[..n]);
                self.out.len += 1;
            }
            Err(stun::StunError::NotBindingRequest) => self.drop(DropReason::StunNotBinding),
            Err(stun::StunError::Malformed(_)) => self.drop(DropReason::StunMalformed),
        }
    }

    /// Charges one larger-than-request STUN answer to `from`'s prefix and to the global budget.
    fn admit_stun_excess(&mut self, now: Instant, from: SocketAddr) -> bool {
        let (_, now_ms) = self.clock(now);
        let prefix = self.prefix(from);
        let cell = self.stun_cells.cell(&[prefix.as_bytes()]);
        // The global budget is looked at first but charged only if the prefix may send: a source
        // over its own budget does not use up everyone's.
        let mut global = self.stun_global;
        if !self
            .config
            .stun_excess_global_rate
            .admit(&mut global, now_ms)
        {
            return false;
        }
        if !self
            .stun_cells
            .admit(cell, &self.config.stun_excess_prefix_rate, now_ms)
        {
            return false;
        }
        self.stun_global = global;
        true
    }

    fn registered_reply(
        &self,
        tx: u64,
        node: &wire::RawNodeId,
        observed: SocketAddr,
    ) -> Message<'static> {
        let relays = self.config.relay.as_ref().is_some_and(|c| c.allows(node));
        Message::Registered(Registered {
            tx,
            lifetime_s: self.config.registration_lifetime.as_secs() as u16,
            alt_stun_port: self.config.alt_stun_port,
            token: self.tokens.issue(node, observed),
            observed,
            flags: if relays { REGISTERED_RELAY } else { 0 },
        })
    }

    fn handle_register(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        r: wire::Register,
        len: usize,
    ) {
        // Cheap checks before the signature, cheapest first; none of them stores anything.
        if !self.config.addresses.contains(&r.server) {
            self.drop(DropReason::WrongServer);
            return self.reply_error(from, len, r.tx, ErrorCode::WrongServer, unix_ms);
        }
        let skew = self.config.max_clock_skew.as_millis() as u64;
        if r.timestamp_ms.abs_diff(unix_ms) > skew {
            self.drop(DropReason::ClockSkew);
            return self.reply_error(from, len, r.tx, ErrorCode::ClockSkew, unix_ms);
        }
        let (now_s, now_ms) = self.clock(now);
        if !self.table.is_fresh(&r.node, r.timestamp_ms, now_s) {
            self.drop(DropReason::StaleTimestamp);
            return self.reply_error(from, len, r.tx, ErrorCode::StaleTimestamp, unix_ms);
        }
        // A valid cookie proves that `from` receives (it was sent there): a hash.
        let proven = r
            .cookie
            .is_some_and(|c| self.cookies.check(from, &c, now_s));
        if !proven
            && self
                .load
                .under_load(now_s, self.config.register_load_threshold)
        {
            // Under load a spoofed source costs one hash and gets a 26-byte RETRY, smaller than
            // the REGISTER it answers; a real node resends at once with the cookie.
            self.drop(DropReason::CookieRequired);
            self.stats.retries_sent += 1;
            let retry = Message::Retry(Retry {
                tx: r.tx,
                cookie: self.cookies.make(from, now_s),
            });
            return self.reply(from, len, &retry);
        }
        let prefix = self.prefix(from);
        let already_here = self
            .table
            .addr_of(&r.node)
            .is_some_and(|a| self.prefix(a) == prefix);
        if !already_here
            && self.prefix_counts.get(&prefix) >= self.config.max_registrations_per_prefix
        {
            // Before a sweep frees the quota of expired entries, force one (at most once a
            // second), as a full table does.
            if self.may_force_sweep(now) {
                self.sweep(now_s);
            }
            if self.prefix_counts.get(&prefix) >= self.config.max_registrations_per_prefix {
                self.drop(DropReason::PrefixQuota);
                return self.reply_error(from, len, r.tx, ErrorCode::PrefixQuota, unix_ms);
            }
        }
        let cell = self.register_cells.cell(&[prefix.as_bytes()]);
        if !self
            .register_cells
            .admit(cell, &self.config.register_prefix_rate, now_ms)
        {
            // Unanswered: an answer would let a flood aim replies at a spoofed victim.
            return self.drop(DropReason::RegisterRateLimited);
        }
        self.load.count(now_s);
        self.stats.signature_checks += 1;
        if r.verify().is_none() {
            self.drop(DropReason::BadSignature);
            return self.reply_error(from, len, r.tx, ErrorCode::BadSignature, unix_ms);
        }
        let lifetime = self.config.registration_lifetime.as_secs() as u32;
        let mut result = self.table.register(
            r.node,
            from,
            r.timestamp_ms,
            now_s,
            now_ms,
            lifetime,
            proven,
        );
        if result == Err(RegisterError::Full) && self.may_force_sweep(now) {
            self.sweep(now_s);
            result = self.table.register(
                r.node,
                from,
                r.timestamp_ms,
                now_s,
                now_ms,
                lifetime,
                proven,
            );
        }
        match result {
            Ok(stored) => {
                // The quota follows the entry: a new one adds to its prefix, a move changes it.
                match stored.replaced.map(|a| self.prefix(a)) {
                    Some(old) if old == prefix => {}
                    Some(old) => {
                        self.prefix_counts.remove(&old);
                        self.prefix_counts.add(&prefix);
                    }
                    None => self.prefix_counts.add(&prefix),
                }
                if stored.new {
                    self.stats.registrations_new += 1;
                } else {
                    self.stats.registrations_renewed += 1;
                }
                let reply = self.registered_reply(r.tx, &r.node, from);
                self.reply(from, len, &reply);
            }
            Err(RegisterError::Full) => {
                self.drop(DropReason::TableFull);
                self.reply_error(from, len, r.tx, ErrorCode::TableFull, unix_ms);
            }
            Err(RegisterError::Stale) => {
                self.drop(DropReason::StaleTimestamp);
                self.reply_error(from, len, r.tx, ErrorCode::StaleTimestamp, unix_ms);
            }
        }
    }

    /// A full table sweeps at most once a second, so a flood of new keys cannot make every
    /// registration cost a scan of the table.
    fn may_force_sweep(&mut self, now: Instant) -> bool {
        match self.last_forced_sweep {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => false,
            _ => {
                self.last_forced_sweep = Some(now);
                true
            }
        }
    }

    fn handle_refresh(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        r: wire::Refresh,
        len: usize,
    ) {
        let (now_s, now_ms) = self.clock(now);
        let lifetime = self.config.registration_lifetime.as_secs() as u32;
        // The token (a keyed hash) is checked before the table is touched; no signature work.
        let entry = match self.tokens.check(&r.node, from, &r.token) {
            true => self.table.live_at(&r.node, from, now_s),
            false => None,
        };
        let Some(entry) = entry else {
            self.drop(DropReason::NotRegistered);
            return self.reply_error(from, len, r.tx, ErrorCode::NotRegistered, unix_ms);
        };
        // The token came back from the address it was sent to: that address receives.
        entry.confirm();
        NodeTable::extend(entry, now_s, now_ms, lifetime);
        self.stats.registrations_renewed += 1;
        let reply = self.registered_reply(r.tx, &r.node, from);
        self.reply(from, len, &reply);
    }

    fn handle_introduce(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        i: wire::Introduce<'_>,
        len: usize,
    ) {
        let (now_s, now_ms) = self.clock(now);
        let entry = match self.tokens.check(&i.node, from, &i.token) {
            true => self.table.live_at(&i.node, from, now_s),
            false => None,
        };
        let Some(sender) = entry else {
            self.drop(DropReason::NotRegistered);
            return self.reply_error(from, len, i.tx, ErrorCode::NotRegistered, unix_ms);
        };
        sender.confirm();
        let ack = |status, target_addr| {
            Message::IntroAck(IntroAck {
                tx: i.tx,
                status,
                target_addr,
            })
        };
        // An answer to a recent introduction from the target (a relayed message 2) rides on the
        // credit that introduction granted: it spends neither side's budgets.
        let free = self.credits.spend(&i.node, &i.target, now_ms);
        if !free && !NodeTable::admit_send(sender, &self.config.sender_intro_rate, now_ms) {
            self.drop(DropReason::SenderRateLimited);
            return self.reply(from, len, &ack(IntroStatus::SenderRateLimited, None));
        }
        let pair = self
            .pair_cells
            .cell(&[self.prefix(from).as_bytes(), &i.target]);
        let Some((confirmed, target_addr)) = self
            .table
            .live(&i.target, now_s)
            .map(|t| (t.confirmed(), t.addr()))
        else {
            self.drop(DropReason::UnknownPeer);
            return self.reply(from, len, &ack(IntroStatus::UnknownPeer, None));
        };
        if !confirmed {
            // Its address has not shown that it receives: it may be a spoofed REGISTER's victim.
            self.drop(DropReason::TargetUnconfirmed);
            return self.reply(from, len, &ack(IntroStatus::UnknownPeer, None));
        }
        if !free {
            // Fair share first: a sender over its own share toward this target does not spend the
            // target's total, which other senders need.
            let mut pair_tat = self.pair_cells.tat(pair);
            if !self.config.pair_intro_rate.admit(&mut pair_tat, now_ms) {
                self.drop(DropReason::PairRateLimited);
                return self.reply(from, len, &ack(IntroStatus::TargetRateLimited, None));
            }
            let admitted = match self.table.live(&i.target, now_s) {
                Some(t) => NodeTable::admit_recv(t, &self.config.target_intro_rate, now_ms),
                None => false,
            };
            if !admitted {
                self.drop(DropReason::TargetRateLimited);
                return self.reply(from, len, &ack(IntroStatus::TargetRateLimited, None));
            }
            self.pair_cells.set_tat(pair, pair_tat);
        }
        let fwd = Message::IntroFwd(IntroFwd {
            // The introducer's transaction id stays with the introducer.
            tx: 0,
            from: i.node,
            from_addr: from,
            payload: i.payload,
        });
        self.queue(Socket::Primary, target_addr, None, &fwd);
        self.stats.introductions_forwarded += 1;
        if free {
            self.stats.introductions_answered_free += 1;
        } else {
            // The target may answer through us once for free.
            self.credits.grant(&i.target, &i.node, now_ms);
        }
        self.reply(from, len, &ack(IntroStatus::Forwarded, Some(target_addr)));
    }
    /// RELAY: a registered node's tunnel packet for another node registered here. Carried only
    /// between nodes that proved their keys to us (a REGISTER signature, then the token from
    /// the registered address), within each node's byte rate and the session limits; the
    /// forward is shorter than the request, and goes only to an address that proved it receives.
    fn handle_relay(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        r: wire::Relay<'_>,
        len: usize,
    ) {
        if self.config.relay.is_none() {
            // Not a relay: no answer, so a relay's clients learn it from REGISTERED only.
            return self.drop(DropReason::RelayDisabled);
        }
        let (now_s, _) = self.clock(now);
        let entry = match self.tokens.check(&r.node, from, &r.token) {
            true => self.table.live_at(&r.node, from, now_s),
            false => None,
        };
        let Some(sender) = entry else {
            self.drop(DropReason::NotRegistered);
            return self.reply_error(from, len, r.tx, ErrorCode::NotRegistered, unix_ms);
        };
        sender.confirm();
        let allowed = |c: &RelayConfig| c.allows(&r.node) && c.allows(&r.target);
        if !self.config.relay.as_ref().is_some_and(allowed) {
            self.drop(DropReason::RelayNotAllowed);
            return self.reply_error(from, len, r.tx, ErrorCode::RelayRefused, unix_ms);
        }
        let target_addr = match self.table.live(&r.target, now_s) {
            Some(t) if t.confirmed() => t.addr(),
            _ => {
                self.drop(DropReason::RelayUnknownTarget);
                return self.reply_error(from, len, r.tx, ErrorCode::RelayRefused, unix_ms);
            }
        };
        let now_us = micros(self.epoch, now);
        let prefix = *self.prefix(from).as_bytes();
        let admitted = match &self.config.relay {
            Some(c) => self
                .relays
                .admit(c, now_us, (&r.node, prefix), &r.target, r.packet.len()),
            None => return,
        };
        match admitted {
            Ok(()) => {}
            Err(relay::Refusal::SessionLimit) => {
                self.drop(DropReason::RelaySessionLimit);
                return self.reply_error(from, len, r.tx, ErrorCode::RelayRefused, unix_ms);
            }
            // Unanswered: the sender's own transport notices loss and slows down.
            Err(relay::Refusal::RateLimited) => return self.drop(DropReason::RelayRateLimited),
        }
        let fwd = Message::Relayed(Relayed {
            tx: 0,
            from: r.node,
            packet: r.packet,
        });
        self.queue(Socket::Primary, target_addr, Some(len), &fwd);
        self.stats.relayed_packets += 1;
        self.stats.relayed_bytes += r.packet.len() as u64;
    }
}

/// Microseconds from `epoch` to `now`.
fn micros(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_micros() as u64
}

/// The addresses, normalised (IPv4-mapped IPv6 as IPv4) and without duplicates.
fn normalized(addresses: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = addresses
        .iter()
        .map(|a| shipworm_tunnel::wire::addr::normalize(*a))
        .collect();
    out.sort();
    out.dedup();
    out
}
