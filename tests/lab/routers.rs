//! nftables rulesets for the lab's routers (a NAT with masquerade, and the home, full-cone,
//! symmetric and UPnP routers built on it), and miniupnpd: its configuration and start.

use std::time::Duration;

use super::Lab;

/// A NAT router: `masquerade {options}` on the WAN, and nothing unsolicited comes in, neither
/// to the router itself nor through it, except what `forward` accepts (rules, one per line) and
/// `prerouting` translates.
fn nat_router(wan: &str, lan: &str, options: &str, prerouting: &str, forward: &str) -> String {
    format!(
        r#"table ip nat {{
    chain pre {{
        type nat hook prerouting priority dstnat;
        {prerouting}
    }}
    chain post {{
        type nat hook postrouting priority srcnat;
        oifname "{wan}" masquerade {options}
    }}
}}
table ip filter {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "{wan}" ct state established,related accept
        iifname "{wan}" drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        iifname "{lan}" accept
        iifname "{wan}" ct state established,related accept
        {forward}
    }}
}}
"#
    )
}

/// A home router: masquerade maps endpoint-independently (and keeps ports in practice).
pub fn home_router(wan: &str, lan: &str) -> String {
    nat_router(wan, lan, "", "", "")
}

/// A full-cone router for one host port: the home router plus a static forward of that port
/// (inside the same filter chain: an accept in another table would not override its drop).
pub fn full_cone_router(wan: &str, lan: &str, host: &str, port: u16) -> String {
    nat_router(
        wan,
        lan,
        "",
        &format!("iifname \"{wan}\" udp dport {port} dnat to {host}:{port}"),
        &format!("iifname \"{wan}\" ip daddr {host} udp dport {port} accept"),
    )
}

/// A NAT that maps per destination: masquerade with fully random ports.
pub fn symmetric_router(wan: &str, lan: &str) -> String {
    nat_router(wan, lan, "fully-random", "", "")
}

/// How a lab miniupnpd runs: its interfaces, whom it grants mappings, and which protocols it
/// speaks.
#[derive(Debug, Clone)]
pub struct Miniupnpd {
    /// The WAN interface (its address is the external address).
    pub wan: String,
    /// LAN interfaces it listens on (HTTP, SSDP, NAT-PMP/PCP): one or more.
    pub lans: Vec<String>,
    /// LAN networks whose hosts may map ports 1024-65535 (to themselves: secure mode).
    pub allow: Vec<String>,
    /// NAT-PMP and PCP on (`enable_natpmp`; miniupnpd serves both on one socket). Off, the
    /// router is a UPnP-only gateway.
    pub natpmp: bool,
}

impl Miniupnpd {
    /// UPnP IGD, NAT-PMP and PCP between `wan` and `lan`, for hosts of `lan_net`.
    pub fn new(wan: &str, lan: &str, lan_net: &str) -> Self {
        Self {
            wan: wan.into(),
            lans: vec![lan.into()],
            allow: vec![lan_net.into()],
            natpmp: true,
        }
    }

    /// As [`Miniupnpd::new`], speaking UPnP IGD only (NAT-PMP and PCP off).
    pub fn upnp_only(wan: &str, lan: &str, lan_net: &str) -> Self {
        Self {
            natpmp: false,
            ..Self::new(wan, lan, lan_net)
        }
    }

    /// The configuration file.
    fn conf(&self) -> String {
        let mut c = format!("ext_ifname={}\n", self.wan);
        for lan in &self.lans {
            c += &format!("listening_ip={lan}\n");
        }
        c += &format!(
            "http_port=0\nenable_natpmp={}\nenable_upnp=yes\nsecure_mode=yes\nsystem_uptime=yes\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n",
            if self.natpmp { "yes" } else { "no" }
        );
        for net in &self.allow {
            c += &format!("allow 1024-65535 {net} 1024-65535\n");
        }
        c + "deny 0-65535 0.0.0.0/0 0-65535\n"
    }
}

impl Lab {
    /// Starts miniupnpd (UPnP IGD, NAT-PMP, PCP) in router namespace `ns` between `wan` and
    /// `lan`, granting mappings to hosts of `lan_net`; logs to `log` (also its file names, so
    /// several may run at once). Waits until it listens.
    pub fn start_miniupnpd(&mut self, ns: &str, log: &str, wan: &str, lan: &str, lan_net: &str) {
        self.start_miniupnpd_with(ns, log, &Miniupnpd::new(wan, lan, lan_net));
    }

    /// Starts miniupnpd configured by `options` in router namespace `ns`, logging to `log` (also
    /// its file names, so several may run at once). Waits until it serves HTTP (and, with
    /// NAT-PMP on, NAT-PMP/PCP); returns its HTTP port, for UPnP clients that skip SSDP
    /// (`upnpc -u http://LAN-ADDRESS:PORT/rootDesc.xml`).
    pub fn start_miniupnpd_with(&mut self, ns: &str, log: &str, options: &Miniupnpd) -> u16 {
        let conf = self.dir.join(format!("{log}.conf"));
        std::fs::write(&conf, options.conf()).unwrap();
        let conf = conf.to_string_lossy().into_owned();
        let pid = self
            .dir
            .join(format!("{log}.pid"))
            .to_string_lossy()
            .into_owned();
        self.spawn(ns, log, &["miniupnpd", "-d", "-f", &conf, "-P", &pid]);
        // "HTTP listening on port N" comes first; miniupnpd says it listens for NAT-PMP/PCP only
        // when that is on.
        let ready = if options.natpmp {
            "Listening for NAT-PMP/PCP traffic"
        } else {
            "HTTP listening on port"
        };
        assert!(
            self.wait_log(log, ready, Duration::from_secs(10)),
            "miniupnpd never said {ready:?}: {}",
            self.log(log)
        );
        let text = self.log(log);
        text.split("HTTP listening on port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP port in miniupnpd's log: {text}"))
    }
}

/// A home router whose forwarding and NAT chains leave room for miniupnpd's own chains.
pub fn upnp_router(wan: &str, lan: &str) -> String {
    format!(
        r#"table inet filter {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "{wan}" ct state established,related accept
        iifname "{wan}" drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        iifname "{lan}" accept
        iifname "{wan}" ct state established,related accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        oifname "{wan}" masquerade
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"#
    )
}
