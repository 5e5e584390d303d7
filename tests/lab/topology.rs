//! The two-site topology: an internet namespace, a rendezvous host, and two sites each with a
//! router and a host ([`Sites`], [`Lab::two_sites`]); rulesets are the caller's.

use std::time::Duration;

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
        let alt = sites.rendezvous.replace(":3478", ":3479");
        let rdv = sites.rdv.clone();
        let bin = self.bin.to_string_lossy().into_owned();
        self.spawn(
            &rdv,
            "rendezvous",
            &[
                &bin,
                "rendezvous",
                "--listen",
                &sites.rendezvous,
                "--alt-listen",
                &alt,
            ],
        );
        assert!(
            self.wait_log("rendezvous", "rendezvous on", Duration::from_secs(10)),
            "{}",
            self.log("rendezvous")
        );
    }
}
