//! nftables rulesets for the lab's routers (home, true full cone, address-restricted,
//! symmetric with random or sequential ports, a carrier NAT with deterministic port blocks, a
//! hairpinning home router, and a home router with miniupnpd's chains), and miniupnpd: its
//! configuration and start.
//!
//! Every NAT here maps with the kernel's conntrack (`masquerade`/`snat`), and filters with it
//! (replies to a mapping's flows come in; see [`Filtering`] for what else does). Rulesets that
//! open a mapping to more than its own flows learn, from the outbound packets after translation,
//! which host owns which external port: a dynamic map that forgets an entry after the mapping's
//! idle timeout, exactly what RFC 4787 calls a mapping.

use std::time::Duration;

use super::Lab;

/// Which inbound packets a mapping lets in (RFC 4787 §5), besides replies to its own flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Endpoint-independent: anyone may send to a mapped port ("full cone").
    EndpointIndependent,
    /// Address-dependent: any port of an IP address the mapping has sent to.
    Address,
    /// Address-and-port-dependent: only the exact endpoints it has sent to (conntrack alone).
    AddressAndPort,
}

/// A NAT router between `wan` and the LAN interfaces `lans`: source NAT by `snat` (rules, one per
/// line), inbound by `filtering`, and, with `hairpin` set to the public address, hairpinning: a
/// LAN host sending to a mapped port of that address reaches the port's owner, with the source
/// translated to the public address as the internet would see it.
pub fn nat_ruleset(
    wan: &str,
    lans: &[&str],
    snat: &str,
    filtering: Filtering,
    hairpin: Option<&str>,
) -> String {
    let lan_set = lans
        .iter()
        .map(|l| format!("\"{l}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let lan_set = format!("{{ {lan_set} }}");
    // Traffic within one LAN segment is never filtered (a bridged LAN's frames pass the IP
    // hooks when the kernel's bridge netfilter is loaded).
    let within_lan = lans
        .iter()
        .map(|l| format!("iifname \"{l}\" oifname \"{l}\" accept"))
        .collect::<Vec<_>>()
        .join("\n        ");
    // Learned after translation: the external port (`ct reply proto-dst`), the remote address,
    // and the inside address that owns the mapping.
    let (map_type, learn_key, lookup_key) = match filtering {
        Filtering::EndpointIndependent | Filtering::AddressAndPort => {
            ("inet_service", "ct reply proto-dst", "udp dport")
        }
        Filtering::Address => (
            "ipv4_addr . inet_service",
            "ct original ip daddr . ct reply proto-dst",
            "ip saddr . udp dport",
        ),
    };
    let open_inbound = match filtering {
        Filtering::AddressAndPort => String::new(),
        _ => format!("iifname \"{wan}\" meta l4proto udp dnat ip to {lookup_key} map @owners"),
    };
    // Hairpinning needs the owner of a port whatever the filtering.
    let (hairpin_pre, hairpin_post, hairpin_fwd, owners_by_port) = match hairpin {
        Some(public) => (
            format!(
                "iifname {lan_set} ip daddr {public} meta l4proto udp dnat ip to udp dport map @owners_by_port"
            ),
            format!("iifname {lan_set} oifname {lan_set} ct status dnat snat ip to {public}"),
            format!("oifname \"{wan}\" meta l4proto udp update @owners_by_port {{ ct reply proto-dst : ct original ip saddr }}"),
            format!(
                "map owners_by_port {{\n        type inet_service : ipv4_addr; flags dynamic,timeout; timeout {MAPPING_TIMEOUT}s; size 65536;\n    }}"
            ),
        ),
        None => Default::default(),
    };
    let learn = if open_inbound.is_empty() {
        String::new()
    } else {
        format!(
            "oifname \"{wan}\" meta l4proto udp update @owners {{ {learn_key} : ct original ip saddr }}"
        )
    };
    format!(
        r#"table ip nat {{
    map owners {{
        type {map_type} : ipv4_addr; flags dynamic,timeout; timeout {MAPPING_TIMEOUT}s; size 65536;
    }}
    {owners_by_port}
    chain pre {{
        type nat hook prerouting priority dstnat;
        {open_inbound}
        {hairpin_pre}
    }}
    chain post {{
        type nat hook postrouting priority srcnat;
        {hairpin_post}
        {snat}
    }}
    chain learn {{
        type filter hook postrouting priority srcnat + 10; policy accept;
        {learn}
        {hairpin_fwd}
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
        iifname {lan_set} oifname "{wan}" accept
        {within_lan}
        ct state established,related accept
        ct status dnat accept
    }}
}}
"#
    )
}

/// How long a learned mapping lives without outbound traffic (the kernel's own UDP conntrack
/// timeouts are 30 s, and 120 s for a flow that has seen both directions).
pub const MAPPING_TIMEOUT: u32 = 120;

/// `masquerade {options}` out of `wan`.
fn masquerade(wan: &str, options: &str) -> String {
    format!("oifname \"{wan}\" masquerade {options}")
}

/// A home router: endpoint-independent mapping (masquerade keeps ports when it can),
/// address-and-port-dependent filtering.
pub fn home_router(wan: &str, lan: &str) -> String {
    nat_ruleset(
        wan,
        &[lan],
        &masquerade(wan, ""),
        Filtering::AddressAndPort,
        None,
    )
}

/// A true full-cone router: endpoint-independent mapping and endpoint-independent filtering for
/// every mapping of every host behind it (RFC 4787 §5): once a host has sent from a port, anyone
/// may send to that port.
pub fn full_cone_router(wan: &str, lan: &str) -> String {
    nat_ruleset(
        wan,
        &[lan],
        &masquerade(wan, ""),
        Filtering::EndpointIndependent,
        None,
    )
}

/// An address-restricted router: endpoint-independent mapping, and a mapping accepts packets
/// from any port of an IP address it has sent to.
pub fn address_restricted_router(wan: &str, lan: &str) -> String {
    nat_ruleset(wan, &[lan], &masquerade(wan, ""), Filtering::Address, None)
}

/// A home router with several LAN segments `lans` that hairpins: a host sending to the public
/// address `public` reaches the host owning that mapped port.
pub fn hairpin_router(wan: &str, lans: &[&str], public: &str) -> String {
    nat_ruleset(
        wan,
        lans,
        &masquerade(wan, ""),
        Filtering::AddressAndPort,
        Some(public),
    )
}

/// A NAT that maps per destination: masquerade with fully random ports.
pub fn symmetric_router(wan: &str, lan: &str) -> String {
    nat_ruleset(
        wan,
        &[lan],
        &masquerade(wan, "fully-random"),
        Filtering::AddressAndPort,
        None,
    )
}

/// A NAT that maps per destination and allocates ports sequentially, as many carrier NATs do:
/// every new UDP flow takes the next port of one counter over `first..first + count`. (The
/// counter goes through a map to ports: `numgen` alone yields host byte order, which as a port
/// would step by 256.)
pub fn sequential_router(wan: &str, lan: &str, wan_ip: &str, first: u16, count: u16) -> String {
    let ports = (0..count)
        .map(|k| format!("{k} : {}", u32::from(first) + u32::from(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let snat = format!(
        "oifname \"{wan}\" meta l4proto udp snat ip to {wan_ip} : numgen inc mod {count} map {{ {ports} }}"
    );
    nat_ruleset(
        wan,
        &[lan],
        &format!("{snat}\n        {}", masquerade(wan, "")),
        Filtering::AddressAndPort,
        None,
    )
}

/// Ports per subscriber of [`carrier_router`].
pub const PORT_BLOCK: u16 = 1024;

/// A carrier-grade NAT with deterministic port blocks (RFC 7422): subscriber `i` of
/// `subscribers` owns ports `1024 (i + 1) .. 1024 (i + 2)` of the one public address `public`,
/// and a subscriber's port keeps its low ten bits inside its block, so mapping is
/// endpoint-independent (RFC 6888 REQ-1) and never preserves the port; filtering is
/// address-and-port dependent.
pub fn carrier_router(wan: &str, lans: &[&str], public: &str, subscribers: &[String]) -> String {
    let mut rules = String::new();
    for (i, sub) in subscribers.iter().enumerate() {
        let base = usize::from(PORT_BLOCK) * (i + 1);
        rules.push_str(&format!(
            "oifname \"{wan}\" ip saddr {sub} meta l4proto udp \
             snat ip to {public} : udp sport & {} | {base}\n        ",
            PORT_BLOCK - 1
        ));
    }
    rules.push_str(&masquerade(wan, ""));
    nat_ruleset(wan, lans, &rules, Filtering::AddressAndPort, None)
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

/// A home router whose forwarding and NAT chains leave room for miniupnpd's own chains; it
/// counts the packets of flows that came in through a port mapping ([`Lab::mapped_packets`]).
pub fn upnp_router(wan: &str, lan: &str) -> String {
    format!(
        r#"table inet filter {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "{wan}" ct state established,related accept
        iifname "{wan}" meta l4proto ipv6-icmp accept comment "neighbour discovery"
        iifname "{wan}" drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct status dnat counter comment "through a port mapping"
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

impl Lab {
    /// Packets forwarded by the UPnP router in `ns` on flows a port mapping let in (the counter
    /// of [`upnp_router`]).
    pub fn mapped_packets(&self, ns: &str) -> u64 {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", ns, "nft", "list", "chain", "inet", "filter", "forward",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains("through a port mapping"))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no port-mapping counter in {ns}:\n{text}"))
    }
}
