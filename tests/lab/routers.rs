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

impl Lab {
    /// Starts miniupnpd (UPnP IGD, NAT-PMP, PCP) in router namespace `ns` between `wan` and
    /// `lan`, granting mappings to hosts of `lan_net`; logs to `log` (also its file names, so
    /// several may run at once). Waits until it listens.
    pub fn start_miniupnpd(&mut self, ns: &str, log: &str, wan: &str, lan: &str, lan_net: &str) {
        let conf = self.dir.join(format!("{log}.conf"));
        std::fs::write(&conf, miniupnpd_conf(wan, lan, lan_net)).unwrap();
        let conf = conf.to_string_lossy().into_owned();
        let pid = self
            .dir
            .join(format!("{log}.pid"))
            .to_string_lossy()
            .into_owned();
        self.spawn(ns, log, &["miniupnpd", "-d", "-f", &conf, "-P", &pid]);
        assert!(
            self.wait_log(
                log,
                "Listening for NAT-PMP/PCP traffic",
                Duration::from_secs(10)
            ),
            "{}",
            self.log(log)
        );
    }
}

fn miniupnpd_conf(wan: &str, lan: &str, lan_net: &str) -> String {
    format!(
        "ext_ifname={wan}\nlistening_ip={lan}\nhttp_port=0\nenable_natpmp=yes\nenable_upnp=yes\n\
         secure_mode=yes\nsystem_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
         allow 1024-65535 {lan_net} 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
    )
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
