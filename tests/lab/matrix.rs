//! The NAT matrix: two sites behind routers of chosen kinds ([`RouterKind`]), optionally with
//! IPv6 ([`V6`]), and a rendezvous on the internet between them ([`Matrix`], [`Lab::matrix`]);
//! loss on the internet, short UDP timeouts and conntrack flushes for the scenarios.

use std::time::Duration;

use super::routers::{
    address_restricted_router, carrier_router, full_cone_router, home_router, sequential_router,
    symmetric_router, upnp_router,
};
use super::Lab;

/// The kinds of router a lab site can have in front of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    /// No NAT: the host's address is routed from the internet (a router that only forwards).
    Public,
    /// Endpoint-independent mapping and filtering: anyone may send to any mapped port.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    AddressRestricted,
    /// A home router: endpoint-independent mapping, address-and-port filtering.
    Home,
    /// A home router running a real UPnP IGD and NAT-PMP/PCP server (miniupnpd).
    HomeUpnp,
    /// Carrier-grade double NAT: a home NAT behind a carrier NAT that shares one public address
    /// among 32 subscribers with deterministic port blocks.
    Cgnat,
    /// Per-destination mapping with random ports ("symmetric").
    Symmetric,
    /// Per-destination mapping with ports allocated one after the other.
    SymmetricSequential,
}

impl RouterKind {
    /// Every kind, in table order.
    pub const ALL: [RouterKind; 8] = [
        RouterKind::Public,
        RouterKind::FullCone,
        RouterKind::AddressRestricted,
        RouterKind::Home,
        RouterKind::HomeUpnp,
        RouterKind::Cgnat,
        RouterKind::Symmetric,
        RouterKind::SymmetricSequential,
    ];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::Public => "public",
            RouterKind::FullCone => "full cone",
            RouterKind::AddressRestricted => "address-restricted",
            RouterKind::Home => "home",
            RouterKind::HomeUpnp => "home + UPnP",
            RouterKind::Cgnat => "CGNAT",
            RouterKind::Symmetric => "symmetric",
            RouterKind::SymmetricSequential => "sequential symmetric",
        }
    }

    /// Maps per destination and holds no port mapping.
    pub fn hard(self) -> bool {
        matches!(
            self,
            RouterKind::Symmetric | RouterKind::SymmetricSequential
        )
    }
}

/// A site's IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V6 {
    /// None.
    None,
    /// A global address behind a stateful firewall: replies come in, nothing else.
    Firewalled,
    /// Outbound works, nothing comes back (the reported one-way failure).
    InboundBlocked,
    /// IPv6 only: a global address behind a stateful firewall, and no IPv4 at all on the host.
    Only,
}

/// Whether theory allows a direct path between sites of these kinds: all but two hard NATs.
pub fn direct_possible(a: RouterKind, b: RouterKind) -> bool {
    !(a.hard() && b.hard())
}

/// The UDP port every matrix node binds.
pub const NODE_PORT: u16 = 51820;

/// Subscribers of a CGNAT site's carrier besides the site's own home router: each a host
/// address on the carrier's other LAN, holding mappings of its own.
pub const CGNAT_NEIGHBOURS: usize = 31;

/// A two-site lab of the given router kinds on an internet `{net}.0.0/16` (use an ordinary
/// public range such as "5.5": miniupnpd refuses reserved ones; the namespaces are isolated).
pub struct Matrix {
    /// The rendezvous host and its address.
    pub rdv: String,
    /// `host:port` of the rendezvous (IPv4).
    pub rendezvous: String,
    /// `[host]:port` of the same rendezvous over IPv6, when a site has IPv6.
    pub rendezvous_v6: Option<String>,
    /// Host namespaces of site A and B.
    pub hosts: [String; 2],
    /// The router next to each site's host (where miniupnpd runs).
    pub routers: [String; 2],
    /// That router's WAN and LAN interface names, per site.
    pub router_ifs: [(String, String); 2],
    /// Every NAT router of each site, innermost first (the carrier NAT after the home router).
    pub nats: [Vec<String>; 2],
    /// The outermost router of each site (where conntrack lives for a flush).
    pub edge: [String; 2],
    /// The public IPv4 address of each site (its edge router's WAN address, or the host's own).
    pub public_ip: [String; 2],
    /// The internet namespace.
    pub wan: String,
    /// The lab child running the rendezvous.
    pub rendezvous_child: usize,
    /// Extra flags of `shipworm rendezvous` (e.g. `--relay`), on every (re)start.
    pub rendezvous_flags: Vec<String>,
}

impl Lab {
    /// Builds sites A and B behind routers of kinds `kinds`, and starts the rendezvous.
    pub fn matrix(&mut self, net: &str, kinds: [RouterKind; 2]) -> Matrix {
        self.matrix_v6(net, kinds, [V6::None, V6::None])
    }

    /// As [`Lab::matrix`], with IPv6 at each site: a global /64 behind the site's router,
    /// `2001:db8:N::2`, routed across the internet namespace (and across the carrier of a CGNAT
    /// site, which routes IPv6 natively, as carriers do).
    pub fn matrix_v6(&mut self, net: &str, kinds: [RouterKind; 2], v6: [V6; 2]) -> Matrix {
        self.matrix_with(net, kinds, v6, &[])
    }

    /// As [`Lab::matrix_v6`], the rendezvous started with `rendezvous_flags` (`["--relay"]`: with
    /// the relay role).
    pub fn matrix_with(
        &mut self,
        net: &str,
        kinds: [RouterKind; 2],
        v6: [V6; 2],
        rendezvous_flags: &[&str],
    ) -> Matrix {
        let t = self.tag.clone();
        let name = |s: &str| format!("{s}{t}");
        let wan = self.ns("w");
        let rdv = self.ns("r");
        self.link_named(
            &wan,
            &name("w0"),
            &format!("{net}.0.1/24"),
            &rdv,
            &name("r0"),
            &format!("{net}.0.2/24"),
        );
        self.exec(&wan, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        self.default_route(&rdv, &format!("{net}.0.1"));
        let mut sites = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            sites.push(self.site(net, i + 1, kind, v6[i], &wan));
        }
        // The rendezvous host is on the IPv6 internet too when a site is.
        let rendezvous_v6 = v6.iter().any(|v| *v != V6::None).then(|| {
            self.exec(&wan, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
            self.addr6(&wan, &name("w0"), "2001:db8::1/64");
            self.addr6(&rdv, &name("r0"), "2001:db8::2/64");
            self.exec(
                &rdv,
                &["ip", "-6", "route", "add", "default", "via", "2001:db8::1"],
            );
            "[2001:db8::2]:3478".to_string()
        });
        let [a, b]: [Site; 2] = sites.try_into().ok().unwrap();
        // A public site has no NAT: its edge is its (forwarding) router.
        let edge = [&a, &b].map(|s| s.nats.last().unwrap_or(&s.router).clone());
        let mut m = Matrix {
            rendezvous: format!("{net}.0.2:3478"),
            rendezvous_v6,
            rdv,
            hosts: [a.host, b.host],
            routers: [a.router, b.router],
            router_ifs: [a.ifs, b.ifs],
            edge,
            nats: [a.nats, b.nats],
            public_ip: [a.public_ip, b.public_ip],
            wan,
            rendezvous_child: 0,
            rendezvous_flags: rendezvous_flags.iter().map(|f| f.to_string()).collect(),
        };
        m.rendezvous_child = self.start_matrix_rendezvous(&m, "rendezvous");
        m
    }

    /// Site `n` (1 or 2) of kind `kind`: its routers and host, linked to the internet `wan`.
    fn site(&mut self, net: &str, n: usize, kind: RouterKind, v6: V6, wan: &str) -> Site {
        let t = self.tag.clone();
        let name = |s: &str| format!("{s}{t}");
        let router = self.ns(&format!("r{n}"));
        let host = self.ns(&format!("h{n}"));
        let (wan_if, lan_if, host_if) = (
            name(&format!("e{n}")),
            name(&format!("l{n}")),
            name(&format!("h{n}")),
        );
        let site_public = format!("{net}.{n}.2");
        // The links from the internet inward, as (outer ns, outer if, inner ns, inner if).
        let mut hops = Vec::new();
        let mut nats = Vec::new();
        if kind == RouterKind::Cgnat {
            let carrier = self.ns(&format!("c{n}"));
            let (c_wan, c_lan) = (name(&format!("x{n}")), name(&format!("y{n}")));
            self.link_named(
                wan,
                &name(&format!("w{n}")),
                &format!("{net}.{n}.1/24"),
                &carrier,
                &c_wan,
                &format!("{site_public}/24"),
            );
            self.link_named(
                &carrier,
                &c_lan,
                &format!("100.64.{n}.1/24"),
                &router,
                &wan_if,
                &format!("100.64.{n}.2/24"),
            );
            self.exec(&carrier, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            self.default_route(&carrier, &format!("{net}.{n}.1"));
            self.default_route(&router, &format!("100.64.{n}.1"));
            let (nb, neighbours) = self.cgnat_neighbours(n, &carrier);
            let mut subscribers = neighbours[..15].to_vec();
            subscribers.push(format!("100.64.{n}.2"));
            subscribers.extend_from_slice(&neighbours[15..]);
            let lans = [c_lan.as_str(), &name(&format!("z{n}"))];
            self.nft(
                &carrier,
                &carrier_router(&c_wan, &lans, &site_public, &subscribers),
            );
            self.neighbours_send(&nb, &neighbours, &format!("{net}.0.1"));
            hops.push((
                wan.to_string(),
                name(&format!("w{n}")),
                carrier.clone(),
                c_wan,
            ));
            hops.push((carrier.clone(), c_lan, router.clone(), wan_if.clone()));
            nats.push(carrier);
        } else {
            self.link_named(
                wan,
                &name(&format!("w{n}")),
                &format!("{net}.{n}.1/24"),
                &router,
                &wan_if,
                &format!("{site_public}/24"),
            );
            self.default_route(&router, &format!("{net}.{n}.1"));
            hops.push((
                wan.to_string(),
                name(&format!("w{n}")),
                router.clone(),
                wan_if.clone(),
            ));
        }
        self.link_named(
            &router,
            &lan_if,
            &format!("192.168.{n}.1/24"),
            &host,
            &host_if,
            &format!("192.168.{n}.2/24"),
        );
        hops.push((
            router.clone(),
            lan_if.clone(),
            host.clone(),
            host_if.clone(),
        ));
        self.exec(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        self.default_route(&host, &format!("192.168.{n}.1"));
        let ruleset = match kind {
            RouterKind::Public => {
                // Routed, not translated: the internet reaches the host's address directly.
                self.exec(
                    wan,
                    &[
                        "ip",
                        "route",
                        "add",
                        &format!("192.168.{n}.0/24"),
                        "via",
                        &site_public,
                    ],
                );
                None
            }
            RouterKind::FullCone => Some(full_cone_router(&wan_if, &lan_if)),
            RouterKind::AddressRestricted => Some(address_restricted_router(&wan_if, &lan_if)),
            RouterKind::Home | RouterKind::Cgnat => Some(home_router(&wan_if, &lan_if)),
            RouterKind::Symmetric => Some(symmetric_router(&wan_if, &lan_if)),
            RouterKind::SymmetricSequential => Some(sequential_router(
                &wan_if,
                &lan_if,
                &site_public,
                20000,
                1024,
            )),
            RouterKind::HomeUpnp => Some(upnp_router(&wan_if, &lan_if)),
        };
        if let Some(ruleset) = ruleset {
            self.nft(&router, &ruleset);
            nats.insert(0, router.clone());
        }
        if kind == RouterKind::HomeUpnp {
            self.start_miniupnpd(
                &router,
                &format!("miniupnpd{n}"),
                &wan_if,
                &lan_if,
                &format!("192.168.{n}.0/24"),
            );
        }
        if v6 != V6::None {
            self.site_v6(n, &hops, v6);
        }
        if v6 == V6::Only {
            // No IPv4 on the host at all: its address and every IPv4 route go.
            self.exec(&host, &["ip", "-4", "addr", "flush", "dev", &host_if]);
        }
        let public_ip = if kind == RouterKind::Public {
            format!("192.168.{n}.2")
        } else {
            site_public
        };
        Site {
            host,
            router,
            ifs: (wan_if, lan_if),
            nats,
            public_ip,
        }
    }

    /// IPv6 for site `n` along `hops` (internet side first): a /64 per link, the host's
    /// `2001:db8:N::2/64` on the last, routes both ways, and the firewall `v6` on the router
    /// next to the host.
    fn site_v6(&self, n: usize, hops: &[(String, String, String, String)], v6: V6) {
        let last = hops.len() - 1;
        let prefix = |k: usize| {
            if k == last {
                format!("2001:db8:{n}::")
            } else {
                format!("2001:db8:{n}0{k}::")
            }
        };
        let lan6 = prefix(last);
        for (k, (outer, outer_if, inner, inner_if)) in hops.iter().enumerate() {
            let p = prefix(k);
            self.exec(outer, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
            self.addr6(outer, outer_if, &format!("{p}1/64"));
            self.addr6(inner, inner_if, &format!("{p}2/64"));
            // The inner side's default route points out; the outer side routes the site's LAN
            // inward (the last hop's LAN is on-link already).
            self.exec(
                inner,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("{p}1"),
                ],
            );
            if k != last {
                self.exec(
                    outer,
                    &[
                        "ip",
                        "-6",
                        "route",
                        "add",
                        &format!("{lan6}/64"),
                        "via",
                        &format!("{p}2"),
                    ],
                );
            }
        }
        // The site's IPv6 firewall: replies only, or nothing at all coming in.
        let (router, lan_if) = (&hops[last].0, &hops[last].1);
        let wan_if = &hops[last - 1].3;
        let inbound = match v6 {
            V6::Firewalled | V6::Only => {
                format!("iifname \"{wan_if}\" ct state established,related accept")
            }
            _ => String::new(),
        };
        self.nft(
            router,
            &format!(
                "table ip6 fw6 {{\n    chain forward {{\n        type filter hook forward priority 0; policy drop;\n        iifname \"{lan_if}\" accept\n        {inbound}\n    }}\n}}\n"
            ),
        );
    }

    /// The other subscribers of CGNAT site `n`'s carrier: `CGNAT_NEIGHBOURS` addresses on one
    /// host namespace behind the carrier's second LAN interface.
    fn cgnat_neighbours(&mut self, n: usize, carrier: &str) -> (String, Vec<String>) {
        let t = self.tag.clone();
        let nb = self.ns(&format!("b{n}"));
        let nb_if = format!("q{n}{t}");
        self.link_named(
            carrier,
            &format!("z{n}{t}"),
            &format!("100.65.{n}.1/24"),
            &nb,
            &nb_if,
            &format!("100.65.{n}.10/24"),
        );
        self.default_route(&nb, &format!("100.65.{n}.1"));
        let addrs: Vec<String> = (0..CGNAT_NEIGHBOURS)
            .map(|k| format!("100.65.{n}.{}", 10 + k))
            .collect();
        for a in &addrs[1..] {
            self.exec(
                &nb,
                &["ip", "addr", "add", &format!("{a}/24"), "dev", &nb_if],
            );
        }
        (nb, addrs)
    }

    /// Every neighbour (in namespace `nb`) of a CGNAT site sends a datagram to `sink` from a few ports, the node
    /// port among them, so the carrier holds mappings for all of them when the node starts.
    fn neighbours_send(&self, nb: &str, neighbours: &[String], sink: &str) {
        let script = format!(
            "import socket\nfor a in {neighbours:?}:\n    for p in ({NODE_PORT}, {NODE_PORT} + 1, 40000):\n        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n        s.bind((a, p))\n        s.sendto(b'neighbour', ('{sink}', 9))\n        s.close()\n"
        );
        self.exec(nb, &["python3", "-c", &script]);
    }

    fn default_route(&self, ns: &str, via: &str) {
        self.exec(ns, &["ip", "route", "add", "default", "via", via]);
    }

    fn addr6(&self, ns: &str, dev: &str, addr: &str) {
        self.exec(ns, &["ip", "addr", "add", addr, "dev", dev, "nodad"]);
    }

    /// (Re)starts the matrix's rendezvous, logging to `log`; returns its child index.
    pub fn start_matrix_rendezvous(&mut self, m: &Matrix, log: &str) -> usize {
        let bin = self.bin.to_string_lossy().into_owned();
        let rdv_ns = m.rdv.clone();
        // Dual-stack sockets, as the rendezvous's defaults: IPv4 and IPv6 on the same ports.
        let mut args = vec![
            bin.as_str(),
            "rendezvous",
            "--listen",
            "[::]:3478",
            "--alt-listen",
            "[::]:3479",
        ];
        args.extend(m.rendezvous_flags.iter().map(String::as_str));
        let i = self.spawn(&rdv_ns, log, &args);
        assert!(
            self.wait_log(log, "rendezvous on", Duration::from_secs(10)),
            "{}",
            self.log(log)
        );
        i
    }

    /// Drops `percent` % of the datagrams the internet namespace of `m` forwards, both ways
    /// (nftables `numgen`; `tc netem` does not exist on these machines).
    pub fn internet_loss(&self, m: &Matrix, percent: u8) {
        self.nft(
            &m.wan,
            &format!(
                "table inet loss {{\n    chain forward {{\n        type filter hook forward priority -10; policy accept;\n        meta l4proto udp numgen random mod 100 < {percent} drop\n    }}\n}}\n"
            ),
        );
    }

    /// Sets the UDP conntrack timeouts of every NAT router of `m` to `secs` (a mapping idle
    /// that long is gone; the kernel's defaults are 30 s, and 120 s once both ways were seen).
    pub fn udp_timeouts(&self, m: &Matrix, secs: u32) {
        for ns in m.nats.iter().flatten() {
            for key in [
                "nf_conntrack_udp_timeout",
                "nf_conntrack_udp_timeout_stream",
            ] {
                self.exec(
                    ns,
                    &["sysctl", "-qw", &format!("net.netfilter.{key}={secs}")],
                );
            }
        }
    }

    /// Forgets every NAT mapping of router `ns` (a reboot, a conntrack table flush).
    pub fn flush_conntrack(&self, ns: &str) {
        self.exec(ns, &["conntrack", "-F"]);
    }
}

/// One built site of a [`Matrix`].
struct Site {
    host: String,
    router: String,
    ifs: (String, String),
    nats: Vec<String>,
    public_ip: String,
}

impl Lab {
    /// `conntrack -L` in `ns` with `filter` (e.g. `-p udp -d ADDR`): the NAT's mappings.
    pub fn conntrack(&self, ns: &str, filter: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "conntrack", "-L"])
            .args(filter)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
