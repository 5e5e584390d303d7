//! The two-site topology: an internet namespace, a rendezvous host, and two sites each with a
//! router and a host ([`Sites`], [`Lab::two_sites`]; rulesets are the caller's); and two hosts
//! behind one NAT ([`SharedNat`], [`Lab::shared_nat`]).

use std::time::Duration;

use super::routers::{hairpin_router, nat_ruleset, Filtering};
use super::Lab;

/// The namespaces and interface names of a two-site topology.
pub struct Sites {
    /// Rendezvous host, router A, router B, host A, host B.
    pub rdv: String,
    /// Router A.
    pub ra: String,
    /// Router B.
    pub rb: String,
    /// Host A.
    pub ha: String,
    /// Host B.
    pub hb: String,
    /// The routers' WAN and LAN interface names: (A wan, A lan, B wan, B lan).
    pub ifaces: [String; 4],
    /// The rendezvous' address.
    pub rendezvous: String,
}

impl Lab {
    /// The internet (`{net}.0.0/16`, routed by namespace "w"), a rendezvous host at
    /// `{net}.0.2`, router A at `{net}.1.2` and router B at `{net}.2.2`, each with a host on
    /// `192.168.{1,2}.2/24`. Routers forward; rulesets are the caller's.
    pub fn two_sites(&mut self, net: &str) -> Sites {
        let t = self.tag.clone();
        let name = |s: &str| format!("{s}{t}");
        let (wan, rdv, ra, rb, ha, hb) = (
            self.ns("w"),
            self.ns("r"),
            self.ns("ra"),
            self.ns("rb"),
            self.ns("ha"),
            self.ns("hb"),
        );
        self.link_named(
            &wan,
            &name("w0"),
            &format!("{net}.0.1/24"),
            &rdv,
            &name("r0"),
            &format!("{net}.0.2/24"),
        );
        self.link_named(
            &wan,
            &name("w1"),
            &format!("{net}.1.1/24"),
            &ra,
            &name("aw"),
            &format!("{net}.1.2/24"),
        );
        self.link_named(
            &wan,
            &name("w2"),
            &format!("{net}.2.1/24"),
            &rb,
            &name("bw"),
            &format!("{net}.2.2/24"),
        );
        self.link_named(
            &ra,
            &name("al"),
            "192.168.1.1/24",
            &ha,
            &name("ah"),
            "192.168.1.2/24",
        );
        self.link_named(
            &rb,
            &name("bl"),
            "192.168.2.1/24",
            &hb,
            &name("bh"),
            "192.168.2.2/24",
        );
        for ns in [&wan, &ra, &rb] {
            self.exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        let routes = [
            (&rdv, format!("{net}.0.1")),
            (&ra, format!("{net}.1.1")),
            (&rb, format!("{net}.2.1")),
            (&ha, "192.168.1.1".to_string()),
            (&hb, "192.168.2.1".to_string()),
        ];
        for (ns, via) in routes {
            self.exec(ns, &["ip", "route", "add", "default", "via", &via]);
        }
        Sites {
            rendezvous: format!("{net}.0.2:3478"),
            ifaces: [name("aw"), name("al"), name("bw"), name("bl")],
            rdv,
            ra,
            rb,
            ha,
            hb,
        }
    }

    /// Starts `shipworm rendezvous` on the sites' rendezvous host and waits until it serves.
    pub fn start_rendezvous(&mut self, sites: &Sites) {
        self.start_rendezvous_at(&sites.rdv.clone(), &sites.rendezvous.clone());
    }

    /// Starts `shipworm rendezvous` in namespace `rdv` on `addr` (port 3478, STUN also on 3479)
    /// and waits until it serves.
    pub fn start_rendezvous_at(&mut self, rdv: &str, addr: &str) {
        let alt = addr.replace(":3478", ":3479");
        let bin = self.bin.to_string_lossy().into_owned();
        self.spawn(
            rdv,
            "rendezvous",
            &[&bin, "rendezvous", "--listen", addr, "--alt-listen", &alt],
        );
        assert!(
            self.wait_log("rendezvous", "rendezvous on", Duration::from_secs(10)),
            "{}",
            self.log("rendezvous")
        );
    }
}

/// Two hosts behind one NAT router ([`Lab::shared_nat`]), and a rendezvous on the internet.
pub struct SharedNat {
    /// The rendezvous host.
    pub rdv: String,
    /// `host:port` of the rendezvous.
    pub rendezvous: String,
    /// The router.
    pub router: String,
    /// Its public address.
    pub public_ip: String,
    /// The two hosts' namespaces.
    pub hosts: [String; 2],
    /// The two hosts' addresses.
    pub host_ips: [String; 2],
}

impl Lab {
    /// Two hosts behind one home NAT at `{net}.1.2` on the internet `{net}.0.0/16`, with a
    /// rendezvous at `{net}.0.2` (started). With `same_lan` the hosts share one LAN (a bridge on
    /// the router, `192.168.1.2` and `.3`); without, each has its own segment (`192.168.1.2`,
    /// `192.168.3.2`) and the router forwards nothing between them, so only hairpinning through
    /// the public address could join them. `hairpin` makes the router hairpin.
    pub fn shared_nat(&mut self, net: &str, same_lan: bool, hairpin: bool) -> SharedNat {
        let t = self.tag.clone();
        let name = |s: &str| format!("{s}{t}");
        let (wan, rdv, router) = (self.ns("w"), self.ns("r"), self.ns("n"));
        let hosts = [self.ns("h1"), self.ns("h2")];
        let public_ip = format!("{net}.1.2");
        self.link_named(
            &wan,
            &name("w0"),
            &format!("{net}.0.1/24"),
            &rdv,
            &name("r0"),
            &format!("{net}.0.2/24"),
        );
        let wan_if = name("nw");
        self.link_named(
            &wan,
            &name("w1"),
            &format!("{net}.1.1/24"),
            &router,
            &wan_if,
            &format!("{public_ip}/24"),
        );
        let (lans, host_ips) = if same_lan {
            let br = name("br");
            self.exec(&router, &["ip", "link", "add", &br, "type", "bridge"]);
            self.exec(
                &router,
                &["ip", "addr", "add", "192.168.1.1/24", "dev", &br],
            );
            self.exec(&router, &["ip", "link", "set", &br, "up"]);
            let ips = ["192.168.1.2".to_string(), "192.168.1.3".to_string()];
            for (k, (host, ip)) in hosts.iter().zip(&ips).enumerate() {
                let (port, h_if) = (name(&format!("p{k}")), name(&format!("q{k}")));
                crate::lab::sh(&[
                    "ip", "link", "add", &port, "type", "veth", "peer", "name", &h_if,
                ]);
                crate::lab::sh(&["ip", "link", "set", &port, "netns", &router]);
                crate::lab::sh(&["ip", "link", "set", &h_if, "netns", host]);
                self.exec(&router, &["ip", "link", "set", &port, "master", &br]);
                self.exec(&router, &["ip", "link", "set", &port, "up"]);
                self.exec(
                    host,
                    &["ip", "addr", "add", &format!("{ip}/24"), "dev", &h_if],
                );
                self.exec(host, &["ip", "link", "set", &h_if, "up"]);
                self.exec(
                    host,
                    &["ip", "route", "add", "default", "via", "192.168.1.1"],
                );
            }
            (vec![br], ips)
        } else {
            let mut lans = Vec::new();
            let mut ips = Vec::new();
            for (k, (host, seg)) in hosts.iter().zip([1, 3]).enumerate() {
                let l = name(&format!("l{k}"));
                self.link_named(
                    &router,
                    &l,
                    &format!("192.168.{seg}.1/24"),
                    host,
                    &name(&format!("q{k}")),
                    &format!("192.168.{seg}.2/24"),
                );
                self.exec(
                    host,
                    &[
                        "ip",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("192.168.{seg}.1"),
                    ],
                );
                lans.push(l);
                ips.push(format!("192.168.{seg}.2"));
            }
            (lans, [ips[0].clone(), ips[1].clone()])
        };
        for ns in [&wan, &router] {
            self.exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
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
        self.exec(
            &router,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{net}.1.1"),
            ],
        );
        let lans: Vec<&str> = lans.iter().map(String::as_str).collect();
        let rules = if hairpin {
            hairpin_router(&wan_if, &lans, &public_ip)
        } else {
            nat_ruleset(
                &wan_if,
                &lans,
                &format!("oifname \"{wan_if}\" masquerade"),
                Filtering::AddressAndPort,
                None,
            )
        };
        self.nft(&router, &rules);
        let rendezvous = format!("{net}.0.2:3478");
        self.start_rendezvous_at(&rdv, &rendezvous);
        SharedNat {
            rendezvous,
            rdv,
            router,
            public_ip,
            hosts,
            host_ips,
        }
    }
}
