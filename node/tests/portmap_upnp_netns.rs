//! Port mapping on a UPnP-only gateway: miniupnpd with NAT-PMP and PCP off, so the node's
//! PCP/NAT-PMP attempt finds nobody and the mapping is made through UPnP IGD (igd-next). What the
//! node does is checked on the gateway itself: its port-mapping table, listed by a UPnP client
//! (`upnpc -l`), and the DNAT rule miniupnpd put in its nftables chain. A peer on the public side
//! is given only the mapped address, and the node never learns the peer's address before the
//! peer's first packet arrives (no rendezvous): connecting proves that packet came in through the
//! mapping. Needs root, miniupnpd and upnpc (Debian `miniupnpd-nftables`, `miniupnpc`).
//!
//! Error 725 (permanent leases only) is not here: miniupnpd never answers it; a fake IGD in
//! `node/src/io/portmap.rs`'s tests covers it.

use std::process::Command;
use std::time::{Duration, Instant};

use shipworm::{NodeId, Ticket};
use shipworm_tests::lab::{
    can_run, cannot_run, has_tool, home_router, upnp_router, Lab, Miniupnpd,
};

/// The lab's internet: 5.7.0.0/16; the UPnP router's WAN (external) address.
const NET: &str = "5.7";
const EXTERNAL: &str = "5.7.1.2";
/// The node's UDP port, which it asks the gateway for outside as well.
const PORT: u16 = 51820;

struct Upnp {
    lab: Lab,
    /// The UPnP router, the node's host, a public host (no NAT) for the peer.
    router: String,
    host: String,
    public: String,
    /// miniupnpd's HTTP port.
    http: u16,
}

/// Whether this machine can run these tests (and, in CI, that it must).
fn runnable() -> bool {
    if !can_run() {
        return false;
    }
    for (tool, package) in [("miniupnpd", "miniupnpd-nftables"), ("upnpc", "miniupnpc")] {
        if !has_tool(tool) {
            return cannot_run(&format!(
                "{tool} is not installed (Debian package {package}; .ci/run installs it)"
            ));
        }
    }
    true
}

/// The node's host behind a UPnP-only gateway (miniupnpd, NAT-PMP and PCP off), a public host
/// for the peer. `second_lan`: also a second LAN segment 192.168.3.0/24 on the router, with a
/// host 192.168.3.2 in namespace returned beside, which miniupnpd serves too.
fn build(tag: &str, second_lan: bool) -> (Upnp, Option<String>) {
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), tag);
    // miniupnpd refuses reserved and documentation ranges as its external address.
    let sites = lab.two_sites(NET);
    let [aw, al, bw, bl] = sites.ifaces.clone();
    lab.nft(&sites.ra, &upnp_router(&aw, &al));
    lab.nft(&sites.rb, &home_router(&bw, &bl));
    let mut options = Miniupnpd::upnp_only(&aw, &al, "192.168.1.0/24");
    let other = second_lan.then(|| {
        let ns = lab.ns("h2");
        let (r_if, h_if) = (format!("a2{}", lab.tag), format!("h2{}", lab.tag));
        lab.link_named(
            &sites.ra,
            &r_if,
            "192.168.3.1/24",
            &ns,
            &h_if,
            "192.168.3.2/24",
        );
        lab.exec(
            &ns,
            &["ip", "route", "add", "default", "via", "192.168.3.1"],
        );
        options.lans.push(r_if);
        options.allow.push("192.168.3.0/24".into());
        ns
    });
    let router = sites.ra.clone();
    let http = lab.start_miniupnpd_with(&router, "miniupnpd", &options);
    assert!(
        !lab.log("miniupnpd").contains("NAT-PMP/PCP"),
        "miniupnpd serves NAT-PMP/PCP though told not to: {}",
        lab.log("miniupnpd")
    );
    let upnp = Upnp {
        lab,
        router,
        host: sites.ha.clone(),
        public: sites.rdv.clone(),
        http,
    };
    (upnp, other)
}

/// One entry of the gateway's UDP port-mapping table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    external: u16,
    internal: String,
    description: String,
    /// Seconds left (0: permanent).
    lease_left: u64,
}

impl Upnp {
    /// `upnpc -u URL ARGS...` in `ns`, the gateway at `gateway_ip`; its stdout.
    fn upnpc(&self, ns: &str, gateway_ip: &str, args: &[&str]) -> String {
        let url = format!("http://{gateway_ip}:{}/rootDesc.xml", self.http);
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "upnpc", "-u", &url])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The gateway's UDP mappings as a UPnP client on the node's LAN lists them (`upnpc -l`).
    /// Lines look like ` 0 UDP 51820->192.168.1.2:51820 'shipworm' '' 3594`.
    fn mappings(&self) -> Vec<Entry> {
        let out = self.upnpc(&self.host, "192.168.1.1", &["-l"]);
        assert!(
            out.contains("leaseTime"),
            "upnpc could not list the gateway's mappings:\n{out}\nminiupnpd: {}",
            self.lab.log("miniupnpd")
        );
        out.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 5 || f[1] != "UDP" || f[0].parse::<u32>().is_err() {
                    return None;
                }
                let (external, internal) = f[2].split_once("->")?;
                Some(Entry {
                    external: external.parse().ok()?,
                    internal: internal.to_string(),
                    description: f[3].trim_matches('\'').to_string(),
                    lease_left: f[f.len() - 1].parse().ok()?,
                })
            })
            .collect()
    }

    /// The gateway's mapping of `external` for the node's host, if listed.
    fn node_mapping(&self, external: u16) -> Option<Entry> {
        let internal = format!("192.168.1.2:{PORT}");
        self.mappings()
            .into_iter()
            .find(|e| e.external == external && e.internal == internal)
    }

    /// miniupnpd's DNAT rules (its nftables chain `prerouting_miniupnpd`).
    fn dnat_rules(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.router, "nft", "list", "chain"])
            .args(["inet", "filter", "prerouting_miniupnpd"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `f` holds (polled), or `within` passes; returns whether it held.
    fn until(&self, within: Duration, mut f: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if f(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `shipworm up` (no TUN, admitting anyone, no rendezvous) on the node's host at port
    /// [`PORT`], with `global` flags; returns its child index and identity.
    fn start_node(&mut self, global: &[&str]) -> (usize, String) {
        let (key, id, _) = self.lab.identity("node");
        let bind = format!("0.0.0.0:{PORT}");
        let mut args = vec!["--identity", key.to_str().unwrap(), "--bind", &bind];
        args.extend_from_slice(global);
        args.extend_from_slice(&["up", "--allow-any"]);
        let bin = self.lab.bin.to_string_lossy().into_owned();
        let mut all = vec![bin.as_str()];
        all.extend_from_slice(&args);
        let host = self.host.clone();
        let i = self.lab.spawn(&host, "node", &all);
        (i, id)
    }

    /// The node's mapping as it reports it: waits for "port mapping: ADDR via PROTOCOL" (or
    /// fails with its "no port mapping: WHY").
    fn reported_mapping(&self) -> (String, String) {
        let line = |log: &str, needle: &str| {
            log.lines().find_map(|l| {
                l.split_once(needle)
                    .map(|(_, rest)| rest.trim().to_string())
            })
        };
        let mut outcome = None;
        self.until(Duration::from_secs(15), |u| {
            let log = u.lab.log("node");
            outcome = match (
                line(&log, "no port mapping: "),
                line(&log, "port mapping: "),
            ) {
                (Some(why), _) => Some(Err(why)),
                (None, Some(made)) => Some(Ok(made)),
                (None, None) => None,
            };
            outcome.is_some()
        });
        let made = match outcome {
            Some(Ok(made)) => made,
            Some(Err(why)) => panic!(
                "the node made no mapping: {why}\nminiupnpd: {}",
                self.lab.log("miniupnpd")
            ),
            None => panic!(
                "the node reported no mapping within 15 s:\n{}",
                self.lab.log("node")
            ),
        };
        let (addr, protocol) = made
            .split_once(" via ")
            .unwrap_or_else(|| panic!("unexpected report: {made}"));
        (addr.to_string(), protocol.to_string())
    }

    /// A peer on the public side, given only `external` in a ticket for `node`, pings the node:
    /// returns `shipworm ping`'s success and output.
    fn ping_through(&mut self, node: &str, external: &str) -> (bool, String) {
        let ticket = Ticket::new(
            node.parse::<NodeId>().unwrap(),
            vec![],
            vec![external.parse().unwrap()],
        )
        .unwrap()
        .to_string();
        let (key, _, _) = self.lab.identity("peer");
        let out = Command::new("ip")
            // A bound on a hang; `ping` itself gives up on an unreachable peer sooner.
            .args(["netns", "exec", &self.public, "timeout", "60"])
            .arg(&self.lab.bin)
            .arg("--identity")
            .arg(&key)
            .args(["--no-portmap", "ping", &ticket, "-c", "2"])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// The node maps its port through IGD (the gateway speaks nothing else), the gateway lists the
/// mapping and holds its DNAT rule, a peer on the public side reaches the node through it, and
/// after a clean stop the gateway no longer lists it.
#[test]
fn a_mapping_made_through_igd_carries_a_public_peer_and_is_removed_on_shutdown() {
    if !runnable() {
        return;
    }
    let (mut u, _) = build("ui", false);
    let (node, id) = u.start_node(&[]);
    let (external, protocol) = u.reported_mapping();
    let want = format!("{EXTERNAL}:{PORT}");
    assert_eq!(
        (external.as_str(), protocol.as_str()),
        (want.as_str(), "UPnP IGD"),
        "{}",
        u.lab.log("node")
    );
    let entry = u
        .node_mapping(PORT)
        .unwrap_or_else(|| panic!("the gateway does not list the mapping: {:?}", u.mappings()));
    assert_eq!(entry.description, "shipworm");
    assert!(
        entry.lease_left > 3000 && entry.lease_left <= 3600,
        "{entry:?}"
    );
    let rules = u.dnat_rules();
    assert!(
        rules.contains(&format!("dport {PORT} dnat ip to 192.168.1.2:{PORT}")),
        "no DNAT rule for the mapping on the gateway:\n{rules}"
    );

    let (ok, out) = u.ping_through(&id, &want);
    assert!(
        ok && out.contains("reply from"),
        "the public peer did not reach the node through its mapping:\n{out}\nnode: {}",
        u.lab.log("node")
    );
    assert!(out.contains(&want), "the path is not the mapping: {out}");

    let (clean, log) = u.lab.stop(node, "node");
    assert!(clean, "the node did not stop cleanly: {log}");
    assert!(
        u.until(Duration::from_secs(5), |u| u.node_mapping(PORT).is_none()),
        "the gateway still lists the mapping after the node stopped: {:?}\nnode: {log}",
        u.mappings()
    );
    assert!(
        !u.dnat_rules().contains("192.168.1.2"),
        "the DNAT rule outlived the mapping:\n{}",
        u.dnat_rules()
    );
}

/// With a 5 s lease, the mapping outlives three lease periods because the node renews it (the
/// gateway's lease never runs out); once the node is killed (SIGKILL: it cannot remove
/// anything), the lease runs out and the gateway drops the mapping.
#[test]
fn a_short_lease_is_renewed_while_the_node_lives_and_runs_out_after_it_dies() {
    if !runnable() {
        return;
    }
    const LEASE: u64 = 5;
    let (mut u, _) = build("ur", false);
    let (node, _) = u.start_node(&["--portmap-lease", &LEASE.to_string()]);
    let (external, protocol) = u.reported_mapping();
    assert_eq!(protocol, "UPnP IGD", "{}", u.lab.log("node"));
    assert_eq!(external, format!("{EXTERNAL}:{PORT}"));

    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(3 * LEASE) {
        let entry = u.node_mapping(PORT).unwrap_or_else(|| {
            panic!(
                "the mapping vanished {:.1} s in, though the node lives: leases seen {seen:?}\n\
                 node: {}\nminiupnpd: {}",
                start.elapsed().as_secs_f64(),
                u.lab.log("node"),
                u.lab.log("miniupnpd")
            )
        });
        assert!(entry.lease_left <= LEASE, "{entry:?}");
        seen.push(entry.lease_left);
        std::thread::sleep(Duration::from_millis(200));
    }

    u.lab.kill_child(node);
    let killed = Instant::now();
    // Still there: the node could not remove it, only the lease's end can.
    assert!(
        u.node_mapping(PORT).is_some(),
        "the mapping went at once with the killed node"
    );
    assert!(
        u.until(Duration::from_secs(LEASE + 10), |u| u
            .node_mapping(PORT)
            .is_none()),
        "the mapping outlived its lease by 10 s after the node died: {:?}",
        u.mappings()
    );
    eprintln!(
        "lease {LEASE} s: seconds left seen while the node lived {seen:?}; gone {:.1} s after \
         SIGKILL",
        killed.elapsed().as_secs_f64()
    );
}

/// Another LAN host already holds the node's port outside (`upnpc -a`): the gateway refuses the
/// node's port (error 718), the node takes another external port, the gateway lists both, and
/// a public peer reaches the node through the new one.
#[test]
fn a_port_taken_outside_by_another_host_gets_the_node_another_external_port() {
    if !runnable() {
        return;
    }
    let (mut u, other) = build("ut", true);
    let other = other.unwrap();
    let port = PORT.to_string();
    let out = u.upnpc(
        &other,
        "192.168.3.1",
        &["-e", "other", "-a", "192.168.3.2", &port, &port, "UDP"],
    );
    let theirs = format!("192.168.3.2:{PORT}");
    assert!(
        u.mappings()
            .iter()
            .any(|e| e.external == PORT && e.internal == theirs),
        "the other host could not take port {PORT}:\n{out}\nminiupnpd: {}",
        u.lab.log("miniupnpd")
    );

    let (_node, id) = u.start_node(&[]);
    let (external, protocol) = u.reported_mapping();
    assert_eq!(protocol, "UPnP IGD", "{}", u.lab.log("node"));
    let (ip, got) = external.rsplit_once(':').unwrap();
    let got: u16 = got.parse().unwrap();
    assert_eq!(ip, EXTERNAL);
    assert_ne!(got, PORT, "the node claims the taken port");
    let table = u.mappings();
    assert!(
        u.node_mapping(got).is_some()
            && table
                .iter()
                .any(|e| e.external == PORT && e.internal == theirs),
        "the gateway should list the other host's {PORT} and the node's {got}: {table:?}"
    );

    let (ok, out) = u.ping_through(&id, &external);
    assert!(
        ok && out.contains("reply from") && out.contains(&external),
        "the public peer did not reach the node through {external}:\n{out}\nnode: {}",
        u.lab.log("node")
    );
}
