//! The NAT matrix: two sites behind routers of chosen kinds ([`RouterKind`]), optionally with
//! IPv6 ([`V6`]), and a rendezvous on the internet between them ([`Matrix`], [`Lab::matrix`]);
//! loss on the internet and conntrack flushes for the scenarios.

use std::time::Duration;

use super::routers::{full_cone_router, home_router, symmetric_router, upnp_router};
use super::Lab;

/// The kinds of router a lab site can have in front of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    /// No NAT: the host's address is routed from the internet (a router that only forwards).
    Public,
    /// Endpoint-independent mapping, and the node's port forwarded to it: anyone may send in.
    FullCone,
    /// A home router: endpoint-independent mapping, address-and-port filtering.
    Home,
    /// Per-destination mapping ("symmetric").
    Symmetric,
    /// A home router running a real UPnP IGD and NAT-PMP/PCP server (miniupnpd).
    HomeUpnp,
    /// Carrier-grade double NAT: a carrier NAT in front of a home NAT.
    Cgnat,
}

impl RouterKind {
    /// Every kind, in table order.
    pub const ALL: [RouterKind; 6] = [
        RouterKind::Public,
        RouterKind::FullCone,
        RouterKind::Home,
        RouterKind::HomeUpnp,
        RouterKind::Cgnat,
        RouterKind::Symmetric,
    ];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::Public => "public",
            RouterKind::FullCone => "full cone",
            RouterKind::Home => "home",
            RouterKind::Symmetric => "symmetric",
            RouterKind::HomeUpnp => "home + UPnP",
            RouterKind::Cgnat => "CGNAT",
        }
    }

    /// Maps per destination and holds no port mapping.
    pub fn hard(self) -> bool {
        self == RouterKind::Symmetric
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
}

/// Whether theory allows a direct path between sites of these kinds: all but two hard NATs.
pub fn direct_possible(a: RouterKind, b: RouterKind) -> bool {
    !(a.hard() && b.hard())
}

/// The UDP port every matrix node binds (the full-cone router forwards it).
pub const NODE_PORT: u16 = 51820;

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
    /// The outermost router of each site (where conntrack lives for a flush).
    pub edge: [String; 2],
    /// The internet namespace.
    pub wan: String,
    /// The lab child running the rendezvous.
    pub rendezvous_child: usize,
}

impl Lab {
    /// Builds sites A and B behind routers of kinds `kinds`, and starts the rendezvous.
    pub fn matrix(&mut self, net: &str, kinds: [RouterKind; 2]) -> Matrix {
        self.matrix_v6(net, kinds, [V6::None, V6::None])
    }

    /// As [`Lab::matrix`], with IPv6 at each site: a global /64 behind the site's router,
    /// `2001:db8:N::2`, routed across the internet namespace.
    pub fn matrix_v6(&mut self, net: &str, kinds: [RouterKind; 2], v6: [V6; 2]) -> Matrix {
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
        self.exec(
            &rdv,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{net}.0.1"),
            ],
        );
        let mut hosts = Vec::new();
        let mut edges = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            let n = i + 1;
            let router = self.ns(&format!("r{n}"));
            let host = self.ns(&format!("h{n}"));
            let (wan_if, lan_if) = (name(&format!("e{n}")), name(&format!("l{n}")));
            let lan_net = format!("192.168.{n}.0/24");
            // The router's WAN side: directly on the internet, or behind a carrier NAT.
            let edge = if kind == RouterKind::Cgnat {
                let carrier = self.ns(&format!("c{n}"));
                let (c_wan, c_lan) = (name(&format!("x{n}")), name(&format!("y{n}")));
                self.link_named(
                    &wan,
                    &name(&format!("w{n}")),
                    &format!("{net}.{n}.1/24"),
                    &carrier,
                    &c_wan,
                    &format!("{net}.{n}.2/24"),
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
                self.exec(
                    &carrier,
                    &[
                        "ip",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{net}.{n}.1"),
                    ],
                );
                self.exec(
                    &router,
                    &[
                        "ip",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("100.64.{n}.1"),
                    ],
                );
                self.nft(&carrier, &home_router(&c_wan, &c_lan));
                carrier
            } else {
                self.link_named(
                    &wan,
                    &name(&format!("w{n}")),
                    &format!("{net}.{n}.1/24"),
                    &router,
                    &wan_if,
                    &format!("{net}.{n}.2/24"),
                );
                self.exec(
                    &router,
                    &[
                        "ip",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{net}.{n}.1"),
                    ],
                );
                router.clone()
            };
            self.link_named(
                &router,
                &lan_if,
                &format!("192.168.{n}.1/24"),
                &host,
                &name(&format!("h{n}")),
                &format!("192.168.{n}.2/24"),
            );
            self.exec(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            self.exec(
                &host,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("192.168.{n}.1"),
                ],
            );
            let host_ip = format!("192.168.{n}.2");
            match kind {
                RouterKind::Public => {
                    // Routed, not translated: the internet reaches the host's address directly.
                    self.exec(
                        &wan,
                        &[
                            "ip",
                            "route",
                            "add",
                            &lan_net,
                            "via",
                            &format!("{net}.{n}.2"),
                        ],
                    );
                }
                RouterKind::FullCone => self.nft(
                    &router,
                    &full_cone_router(&wan_if, &lan_if, &host_ip, NODE_PORT),
                ),
                RouterKind::Home | RouterKind::Cgnat => {
                    self.nft(&router, &home_router(&wan_if, &lan_if))
                }
                RouterKind::Symmetric => self.nft(&router, &symmetric_router(&wan_if, &lan_if)),
                RouterKind::HomeUpnp => {
                    self.nft(&router, &upnp_router(&wan_if, &lan_if));
                    self.start_miniupnpd(
                        &router,
                        &format!("miniupnpd{n}"),
                        &wan_if,
                        &lan_if,
                        &lan_net,
                    );
                }
            }
            if v6[i] != V6::None && kind != RouterKind::Cgnat {
                let (link, lan6) = (format!("2001:db8:{n}00::"), format!("2001:db8:{n}::"));
                for ns in [&wan, &router] {
                    self.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
                }
                let wan_peer = name(&format!("w{n}"));
                self.exec(
                    &wan,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("{link}1/64"),
                        "dev",
                        &wan_peer,
                        "nodad",
                    ],
                );
                self.exec(
                    &router,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("{link}2/64"),
                        "dev",
                        &wan_if,
                        "nodad",
                    ],
                );
                self.exec(
                    &router,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("{lan6}1/64"),
                        "dev",
                        &lan_if,
                        "nodad",
                    ],
                );
                self.exec(
                    &host,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("{lan6}2/64"),
                        "dev",
                        &name(&format!("h{n}")),
                        "nodad",
                    ],
                );
                self.exec(
                    &wan,
                    &[
                        "ip",
                        "-6",
                        "route",
                        "add",
                        &format!("{lan6}/64"),
                        "via",
                        &format!("{link}2"),
                    ],
                );
                self.exec(
                    &router,
                    &[
                        "ip",
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{link}1"),
                    ],
                );
                self.exec(
                    &host,
                    &[
                        "ip",
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{lan6}1"),
                    ],
                );
                // The site's IPv6 firewall: replies only, or nothing at all coming in.
                let inbound = match v6[i] {
                    V6::Firewalled => {
                        format!("iifname \"{wan_if}\" ct state established,related accept")
                    }
                    _ => String::new(),
                };
                self.nft(
                    &router,
                    &format!(
                        "table ip6 fw6 {{\n    chain forward {{\n        type filter hook forward priority 0; policy drop;\n        iifname \"{lan_if}\" accept\n        {inbound}\n    }}\n}}\n"
                    ),
                );
            }
            hosts.push(host);
            edges.push(edge);
        }
        // The rendezvous host is on the IPv6 internet too when a site is.
        let rendezvous_v6 = v6.iter().any(|v| *v != V6::None).then(|| {
            self.exec(&wan, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
            let w0 = name("w0");
            self.exec(
                &wan,
                &["ip", "addr", "add", "2001:db8::1/64", "dev", &w0, "nodad"],
            );
            let r0 = name("r0");
            self.exec(
                &rdv,
                &["ip", "addr", "add", "2001:db8::2/64", "dev", &r0, "nodad"],
            );
            self.exec(
                &rdv,
                &["ip", "-6", "route", "add", "default", "via", "2001:db8::1"],
            );
            "[2001:db8::2]:3478".to_string()
        });
        let mut m = Matrix {
            rendezvous: format!("{net}.0.2:3478"),
            rendezvous_v6,
            rdv,
            hosts: [hosts[0].clone(), hosts[1].clone()],
            edge: [edges[0].clone(), edges[1].clone()],
            wan,
            rendezvous_child: 0,
        };
        m.rendezvous_child = self.start_matrix_rendezvous(&m, "rendezvous");
        m
    }

    /// (Re)starts the matrix's rendezvous, logging to `log`; returns its child index.
    pub fn start_matrix_rendezvous(&mut self, m: &Matrix, log: &str) -> usize {
        let bin = self.bin.to_string_lossy().into_owned();
        let rdv_ns = m.rdv.clone();
        // Dual-stack sockets, as the rendezvous's defaults: IPv4 and IPv6 on the same ports.
        let i = self.spawn(
            &rdv_ns,
            log,
            &[
                &bin,
                "rendezvous",
                "--listen",
                "[::]:3478",
                "--alt-listen",
                "[::]:3479",
            ],
        );
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

    /// Forgets every NAT mapping of router `ns` (a reboot, a conntrack table flush).
    pub fn flush_conntrack(&self, ns: &str) {
        self.exec(ns, &["conntrack", "-F"]);
    }
}
