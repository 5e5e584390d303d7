//! IPv4 NAT models in RFC 4787 vocabulary ([`NatModel`]: [`Mapping`], [`Filtering`], port
//! preservation, [`PortAllocation`], hairpinning, idle timeout), and one NAT's state: its
//! mappings, allocation of external ports, and the inbound filter.
//!
//! A NAT may sit in front of several hosts (a LAN, [`super::SiteConfig::behind`]): their
//! mappings share its external ports, so two hosts asking for the same preserved port collide
//! and the second gets another port from the allocator, as real NATs do.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::Rng;

/// How a NAT maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One external port per internal socket, whatever the destination.
    EndpointIndependent,
    /// A new external port per destination (a "symmetric" NAT).
    PerDestination,
}

/// How a NAT filters inbound packets on a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Anyone may send to a mapped port ("full cone").
    Open,
    /// Only addresses the host has sent to (within the timeout).
    Address,
    /// Only address-and-port pairs the host has sent to (within the timeout).
    AddressAndPort,
}

/// How a NAT picks the external port of a new mapping (when port preservation does not apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortAllocation {
    /// Uniformly at random among free ports 1024–65535 (what the birthday formula assumes).
    Random,
    /// The next free port after the last one allocated, NAT-wide, `stride` apart: what many
    /// carrier NATs do. `others_per_sec` other subscribers' mappings are allocated from the
    /// same counter every second (0: this NAT's hosts are alone), so a host sees gaps.
    Sequential {
        /// Distance between consecutive allocations.
        stride: u16,
        /// Mappings of other subscribers per second, drawn between our allocations.
        others_per_sec: u32,
    },
    /// Each internal host owns blocks of `size` ports (the next free block, NAT-wide, when it
    /// first needs one; up to [`MAX_BLOCKS_PER_HOST`]); inside its blocks, allocation is
    /// sequential or random. Port preservation does not apply (the block decides).
    PortBlock {
        /// Ports per block.
        size: u16,
        /// Sequential inside the block (else random).
        sequential: bool,
    },
}

/// The lowest port a NAT allocates.
pub const FIRST_PORT: u16 = 1024;
/// Ports a NAT can allocate (1024–65535).
const PORTS: u32 = 65536 - FIRST_PORT as u32;
/// Most port blocks one host gets from a port-block NAT; beyond, its new mappings fail.
pub const MAX_BLOCKS_PER_HOST: usize = 4;

/// An IPv4 NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatModel {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Keep the internal port as the external port when free.
    pub port_preservation: bool,
    /// How other external ports are chosen.
    pub allocation: PortAllocation,
    /// A packet from inside to the NAT's own external address goes back inside, translated
    /// (RFC 4787 REQ-9); without it, such packets are dropped.
    pub hairpinning: bool,
    /// Idle time (no outbound packet) after which a mapping is gone; a remote's permission
    /// through the filter lapses likewise, each on its own clock.
    pub timeout: Duration,
}

impl NatModel {
    /// Endpoint-independent mapping, open filtering, random ports.
    pub fn full_cone() -> Self {
        Self {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::Open,
            port_preservation: false,
            allocation: PortAllocation::Random,
            hairpinning: false,
            timeout: Duration::from_secs(60),
        }
    }
    /// Endpoint-independent mapping, address-restricted filtering.
    pub fn restricted() -> Self {
        Self {
            filtering: Filtering::Address,
            ..Self::full_cone()
        }
    }
    /// Endpoint-independent mapping, address-and-port filtering: a typical home router.
    pub fn port_restricted() -> Self {
        Self {
            filtering: Filtering::AddressAndPort,
            ..Self::full_cone()
        }
    }
    /// Per-destination mapping, address-and-port filtering.
    pub fn symmetric() -> Self {
        Self {
            mapping: Mapping::PerDestination,
            filtering: Filtering::AddressAndPort,
            ..Self::full_cone()
        }
    }
    /// A symmetric carrier NAT that allocates ports one after the other, alone on its counter.
    pub fn symmetric_sequential() -> Self {
        Self {
            allocation: PortAllocation::Sequential {
                stride: 1,
                others_per_sec: 0,
            },
            ..Self::symmetric()
        }
    }
    /// A symmetric carrier NAT with port blocks of 512 per host.
    pub fn symmetric_port_block(sequential: bool) -> Self {
        Self {
            allocation: PortAllocation::PortBlock {
                size: 512,
                sequential,
            },
            ..Self::symmetric()
        }
    }
}

/// One external port in use.
#[derive(Debug)]
pub(super) struct PortEntry {
    /// The internal socket it maps.
    pub(super) internal: SocketAddr,
    /// Remotes sent to from it, and when last: the filter's permissions.
    pub(super) remotes: HashMap<SocketAddr, Instant>,
    /// Last outbound packet.
    pub(super) last: Instant,
}

#[derive(Debug)]
pub(super) struct NatState {
    pub(super) model: NatModel,
    pub(super) external: Ipv4Addr,
    /// The LAN behind it: `192.168.lan.0/24`.
    pub(super) lan: u8,
    /// (internal, destination if per-destination) → external port.
    pub(super) mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// external port → what it maps.
    pub(super) ports: HashMap<u16, PortEntry>,
    /// Sequential allocation: the last port allocated and when (other subscribers' share).
    last_allocated: Option<(u16, Instant)>,
    /// Port-block allocation: each host's blocks (first port, next port inside), and the next
    /// block index to hand out.
    blocks: HashMap<IpAddr, Vec<(u16, u16)>>,
    next_block: Option<u32>,
    /// New mappings refused (port-block NAT out of blocks for a host).
    pub(super) refused: u64,
}

/// `p` moved `by` ports up, wrapping inside 1024–65535.
fn advance(p: u16, by: u32) -> u16 {
    let off = (u32::from(p.max(FIRST_PORT)) - u32::from(FIRST_PORT) + by) % PORTS;
    (u32::from(FIRST_PORT) + off) as u16
}

impl NatState {
    pub(super) fn new(model: NatModel, external: Ipv4Addr, lan: u8) -> Self {
        Self {
            model,
            external,
            lan,
            mappings: HashMap::new(),
            ports: HashMap::new(),
            last_allocated: None,
            blocks: HashMap::new(),
            next_block: None,
            refused: 0,
        }
    }

    fn live(&self, p: u16, now: Instant) -> bool {
        self.ports
            .get(&p)
            .is_some_and(|e| now.saturating_duration_since(e.last) < self.model.timeout)
    }

    /// The external address of `internal`'s packet to `dst`, making or refreshing its mapping;
    /// `None` if the NAT has no port for it.
    pub(super) fn outbound(
        &mut self,
        internal: SocketAddr,
        dst: SocketAddr,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<SocketAddr> {
        let key = (
            internal,
            (self.model.mapping == Mapping::PerDestination).then_some(dst),
        );
        let live = self
            .mappings
            .get(&key)
            .copied()
            .filter(|p| self.live(*p, now) && self.ports[p].internal == internal);
        let port = match live {
            Some(p) => p,
            None => {
                let Some(p) = self.allocate(internal, now, rng) else {
                    self.refused += 1;
                    return None;
                };
                self.ports.insert(
                    p,
                    PortEntry {
                        internal,
                        remotes: HashMap::new(),
                        last: now,
                    },
                );
                self.mappings.insert(key, p);
                p
            }
        };
        let entry = self.ports.get_mut(&port).expect("mapping just ensured");
        entry.remotes.insert(dst, now);
        entry.last = now;
        Some(SocketAddr::new(IpAddr::V4(self.external), port))
    }

    /// A free external port for a new mapping of `internal`.
    fn allocate(&mut self, internal: SocketAddr, now: Instant, rng: &mut Rng) -> Option<u16> {
        let block = matches!(self.model.allocation, PortAllocation::PortBlock { .. });
        if self.model.port_preservation
            && !block
            && internal.port() >= FIRST_PORT
            && !self.live(internal.port(), now)
        {
            return Some(internal.port());
        }
        match self.model.allocation {
            PortAllocation::Random => {
                // Random draws until a free port (bounded: a full NAT refuses).
                for _ in 0..4 * PORTS {
                    let p = advance(FIRST_PORT, (rng.next_u64() % u64::from(PORTS)) as u32);
                    if !self.live(p, now) {
                        return Some(p);
                    }
                }
                None
            }
            PortAllocation::Sequential {
                stride,
                others_per_sec,
            } => {
                let (mut p, others) = match self.last_allocated {
                    Some((last, at)) => {
                        let others = if others_per_sec == 0 {
                            0
                        } else {
                            // Other subscribers' allocations meanwhile: the expected count,
                            // plus or minus up to half of it at random.
                            let mean = now.saturating_duration_since(at).as_secs_f64()
                                * f64::from(others_per_sec);
                            let spread = (mean / 2.0) as u64;
                            let k = mean as u64 - spread
                                + if spread > 0 {
                                    rng.next_u64() % (2 * spread + 1)
                                } else {
                                    0
                                };
                            k as u32
                        };
                        (last, others)
                    }
                    None => (
                        advance(FIRST_PORT, (rng.next_u64() % u64::from(PORTS)) as u32),
                        0,
                    ),
                };
                let stride = u32::from(stride.max(1));
                p = advance(p, others * stride);
                for _ in 0..PORTS {
                    p = advance(p, stride);
                    if !self.live(p, now) {
                        self.last_allocated = Some((p, now));
                        return Some(p);
                    }
                }
                None
            }
            PortAllocation::PortBlock { size, sequential } => {
                self.allocate_in_block(internal.ip(), size, sequential, now, rng)
            }
        }
    }

    fn allocate_in_block(
        &mut self,
        host: IpAddr,
        size: u16,
        sequential: bool,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<u16> {
        let size = size.max(1);
        let blocks_total = PORTS / u32::from(size);
        let mut owned = self.blocks.remove(&host).unwrap_or_default();
        let mut found = None;
        'blocks: for b in 0..=owned.len() {
            if b == owned.len() {
                if owned.len() >= MAX_BLOCKS_PER_HOST {
                    break;
                }
                let taken: Vec<u16> = self.blocks.values().flatten().map(|(s, _)| *s).collect();
                let mut k = match self.next_block {
                    Some(k) => k,
                    None => (rng.next_u64() % u64::from(blocks_total)) as u32,
                };
                let mut start = None;
                for _ in 0..blocks_total {
                    let s = FIRST_PORT + (k * u32::from(size)) as u16;
                    k = (k + 1) % blocks_total;
                    if !taken.contains(&s) && !owned.iter().any(|(o, _)| *o == s) {
                        start = Some(s);
                        break;
                    }
                }
                self.next_block = Some(k);
                let Some(s) = start else {
                    break;
                };
                owned.push((s, s));
            }
            let (start, next) = owned[b];
            let in_block =
                |i: u32| start + ((u32::from(next - start) + i) % u32::from(size)) as u16;
            for i in 0..u32::from(size) {
                let p = if sequential {
                    in_block(i)
                } else {
                    start + (rng.next_u64() % u64::from(size)) as u16
                };
                if !self.live(p, now) {
                    if sequential {
                        owned[b].1 = start + ((u32::from(p - start) + 1) % u32::from(size)) as u16;
                    }
                    found = Some(p);
                    break 'blocks;
                }
            }
            if !sequential {
                // Random draws kept missing: take the first free port of the block, if any.
                if let Some(p) = (0..size).map(|i| start + i).find(|p| !self.live(*p, now)) {
                    found = Some(p);
                    break 'blocks;
                }
            }
        }
        self.blocks.insert(host, owned);
        found
    }

    /// Where an inbound packet from `src` to external port `port` goes, if the NAT lets it in.
    pub(super) fn inbound(&self, port: u16, src: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let entry = self.ports.get(&port)?;
        let timeout = self.model.timeout;
        if now.saturating_duration_since(entry.last) >= timeout {
            return None;
        }
        let fresh = |(_, t): (&SocketAddr, &Instant)| now.saturating_duration_since(*t) < timeout;
        let allowed = match self.model.filtering {
            Filtering::Open => true,
            Filtering::Address => entry
                .remotes
                .iter()
                .any(|(d, t)| d.ip() == src.ip() && fresh((d, t))),
            Filtering::AddressAndPort => entry.remotes.get_key_value(&src).is_some_and(fresh),
        };
        allowed.then_some(entry.internal)
    }

    /// Whether `ip` lies on the LAN behind this NAT.
    pub(super) fn on_lan(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [192, 168, self.lan])
    }

    /// Forgets every mapping (a router reboot or a conntrack flush).
    pub(super) fn flush(&mut self) {
        self.mappings.clear();
        self.ports.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 0, n], port))
    }

    fn dst(n: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], n))
    }

    fn nat(model: NatModel) -> NatState {
        NatState::new(model, Ipv4Addr::new(203, 0, 113, 10), 0)
    }

    #[test]
    fn a_sequential_nat_allocates_one_port_after_the_other_with_its_stride() {
        let t0 = Instant::now();
        let mut rng = Rng::new(1);
        let mut n = nat(NatModel {
            allocation: PortAllocation::Sequential {
                stride: 2,
                others_per_sec: 0,
            },
            ..NatModel::symmetric()
        });
        let ports: Vec<u16> = (1..=5)
            .map(|d| {
                n.outbound(host(2, 4000), dst(d), t0, &mut rng)
                    .unwrap()
                    .port()
            })
            .collect();
        for w in ports.windows(2) {
            assert_eq!(advance(w[0], 2), w[1], "{ports:?}");
        }
        // Another host on the same NAT continues the same counter.
        let other = n
            .outbound(host(3, 4000), dst(1), t0, &mut rng)
            .unwrap()
            .port();
        assert_eq!(other, advance(ports[4], 2));
    }

    #[test]
    fn other_subscribers_leave_gaps_in_a_busy_sequential_nat() {
        let t0 = Instant::now();
        let mut rng = Rng::new(2);
        let mut n = nat(NatModel {
            allocation: PortAllocation::Sequential {
                stride: 1,
                others_per_sec: 100,
            },
            ..NatModel::symmetric()
        });
        let a = n
            .outbound(host(2, 4000), dst(1), t0, &mut rng)
            .unwrap()
            .port();
        let b = n
            .outbound(host(2, 4000), dst(2), t0 + Duration::from_secs(1), &mut rng)
            .unwrap()
            .port();
        let gap = u32::from(b.wrapping_sub(a));
        assert!((51..=151).contains(&gap), "{a} -> {b}");
    }

    #[test]
    fn port_preservation_gives_way_to_the_host_that_holds_the_port() {
        let t0 = Instant::now();
        let mut rng = Rng::new(3);
        let mut n = nat(NatModel {
            port_preservation: true,
            ..NatModel::port_restricted()
        });
        let first = n.outbound(host(2, 41641), dst(1), t0, &mut rng).unwrap();
        let second = n.outbound(host(3, 41641), dst(1), t0, &mut rng).unwrap();
        assert_eq!(first.port(), 41641);
        assert_ne!(
            second.port(),
            41641,
            "the second host collides and gets another"
        );
        // Each host's packets come back to it.
        assert_eq!(n.inbound(41641, dst(1), t0), Some(host(2, 41641)));
        assert_eq!(n.inbound(second.port(), dst(1), t0), Some(host(3, 41641)));
    }

    #[test]
    fn port_blocks_keep_each_host_inside_its_own_block() {
        let t0 = Instant::now();
        let mut rng = Rng::new(4);
        for sequential in [true, false] {
            let mut n = nat(NatModel::symmetric_port_block(sequential));
            let ports = |n: &mut NatState, h: u8, rng: &mut Rng| -> Vec<u16> {
                (1..=100)
                    .map(|d| n.outbound(host(h, 4000), dst(d), t0, rng).unwrap().port())
                    .collect()
            };
            let a = ports(&mut n, 2, &mut rng);
            let b = ports(&mut n, 3, &mut rng);
            let block = |p: u16| (p - FIRST_PORT) / 512;
            assert!(a.iter().all(|p| block(*p) == block(a[0])), "{a:?}");
            assert!(b.iter().all(|p| block(*p) == block(b[0])), "{b:?}");
            assert_ne!(block(a[0]), block(b[0]));
            if sequential {
                assert!(a
                    .windows(2)
                    .all(|w| w[1] == w[0] + 1 || block(w[1]) != block(w[0])));
            }
            // 4 blocks of 512 per host, then the NAT refuses.
            let mut more = 0;
            while n
                .outbound(host(2, 4000), dst(1000 + more), t0, &mut rng)
                .is_some()
            {
                more += 1;
            }
            assert_eq!(usize::from(more) + a.len(), 512 * MAX_BLOCKS_PER_HOST);
        }
    }

    #[test]
    fn a_remote_permission_lapses_on_its_own_clock() {
        let t0 = Instant::now();
        let mut rng = Rng::new(5);
        let mut n = nat(NatModel {
            timeout: Duration::from_secs(30),
            ..NatModel::port_restricted()
        });
        let ext = n.outbound(host(2, 4000), dst(1), t0, &mut rng).unwrap();
        // Traffic to another remote keeps the mapping, not the first remote's permission.
        for s in (10..=60).step_by(10) {
            n.outbound(host(2, 4000), dst(2), t0 + Duration::from_secs(s), &mut rng);
        }
        let later = t0 + Duration::from_secs(60);
        assert_eq!(n.inbound(ext.port(), dst(2), later), Some(host(2, 4000)));
        assert_eq!(n.inbound(ext.port(), dst(1), later), None);
    }
}
