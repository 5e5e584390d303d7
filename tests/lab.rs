//! The network-namespace lab: namespaces, veth links, nftables routers, and `shipworm` processes
//! inside them, all removed when the [`Lab`] is dropped. Root only; [`can_run`] says whether this
//! machine can (and, in CI, insists).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the root-only lab tests can run here. When they cannot, the test skips with the reason
/// on a developer's machine, and fails with it in CI (`CI` set), where everything must run.
pub fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return cannot_run("TUN and network namespace tests need root (CI runs them as root)");
    }
    for tool in ["ip", "ping", "nft"] {
        if !has_tool(tool) {
            return cannot_run(&format!(
                "{tool} is not installed (.ci/run installs iproute2, iputils-ping and nftables)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return cannot_run("/dev/net/tun is missing");
    }
    true
}

/// Whether `tool` is on the PATH.
pub fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A test that cannot run here: skipped with `why`, or, in CI, failed with it.
pub fn cannot_run(why: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "this test cannot run in CI: {why}"
    );
    eprintln!("SKIPPED: {why}");
    false
}

/// Namespaces, links and processes of one test; all removed on drop.
pub struct Lab {
    /// The `shipworm` binary the lab runs.
    pub bin: PathBuf,
    /// A short tag unique to this lab, part of every name it makes.
    pub tag: String,
    namespaces: Vec<String>,
    pub children: Vec<Child>,
    pub dir: PathBuf,
}

impl Lab {
    /// A lab running the `shipworm` binary at `bin`.
    pub fn new(bin: impl Into<PathBuf>, tag: &str) -> Self {
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("shipworm-tun-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            bin: bin.into(),
            tag,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        }
    }

    pub fn ns(&mut self, name: &str) -> String {
        let ns = format!("sw{}{name}", self.tag);
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// A veth pair between two namespaces with an IPv4 address on each end.
    pub fn link(&self, n: u8, a: &str, a_ip: &str, b: &str, b_ip: &str) {
        let (va, vb) = (format!("v{}{n}a", self.tag), format!("v{}{n}b", self.tag));
        sh(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ]);
        for (v, ns, ip) in [(&va, a, a_ip), (&vb, b, b_ip)] {
            sh(&["ip", "link", "set", v, "netns", ns]);
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", v]);
            sh(&["ip", "-n", ns, "link", "set", v, "up"]);
        }
    }

    pub fn identity(&self, name: &str) -> (PathBuf, String, String) {
        let path = self.dir.join(name);
        let out = Command::new(&self.bin)
            .arg("--identity")
            .arg(&path)
            .args(["--json", "id"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |k: &str| {
            text.split(&format!("\"{k}\":\""))
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string()
        };
        (path, field("node_id"), field("overlay_addr"))
    }

    pub fn up(
        &mut self,
        ns: &str,
        identity: &Path,
        tun: &str,
        listen: &str,
        peers: &[String],
    ) -> usize {
        self.up_with(ns, identity, tun, listen, peers, &[])
    }

    /// `shipworm --identity F [global...] up --tun ...` in `ns`; waits for the interface.
    pub fn up_with(
        &mut self,
        ns: &str,
        identity: &Path,
        tun: &str,
        listen: &str,
        peers: &[String],
        global: &[&str],
    ) -> usize {
        self.up_with_args(ns, identity, tun, listen, peers, global, &[])
    }

    /// As [`Lab::up_with`], with extra arguments for `up`.
    #[allow(clippy::too_many_arguments)]
    pub fn up_with_args(
        &mut self,
        ns: &str,
        identity: &Path,
        tun: &str,
        listen: &str,
        peers: &[String],
        global: &[&str],
        extra: &[&str],
    ) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{tun}.log"))).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&self.bin)
            .arg("--identity")
            .arg(identity)
            .args(global)
            .args(["up", "--tun", "--tun-name", tun, "--bind", listen])
            .args(extra);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.children.push(child);
        // Wait for the interface to carry its overlay address.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("ip")
                .args(["-n", ns, "-6", "addr", "show", "dev", tun])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("fd5b:7a1e:9c03:") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{tun} never came up: {}",
                self.log(tun)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.children.len() - 1
    }

    pub fn log(&self, tun: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{tun}.log"))).unwrap_or_default()
    }

    pub fn ping(&self, ns: &str, dst: &str, count: u32) -> (bool, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "ping",
                "-6",
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "2",
                dst,
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// SIGTERM to one `up`; returns its exit success and log.
    pub fn stop(&mut self, i: usize, tun: &str) -> (bool, String) {
        let pid = self.children[i].id().to_string();
        sh(&["kill", "-TERM", &pid]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.children[i].try_wait().unwrap() {
                return (status.success(), self.log(tun));
            }
            assert!(Instant::now() < deadline, "up did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// Runs a command inside `ns`, checked.
    pub fn exec(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// Loads an nftables ruleset into `ns`.
    pub fn nft(&self, ns: &str, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft in {ns}: {}\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A veth pair with chosen interface names.
    pub fn link_named(&self, a: &str, a_if: &str, a_ip: &str, b: &str, b_if: &str, b_ip: &str) {
        sh(&[
            "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if,
        ]);
        for (v, ns, ip) in [(a_if, a, a_ip), (b_if, b, b_ip)] {
            sh(&["ip", "link", "set", v, "netns", ns]);
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", v]);
            sh(&["ip", "-n", ns, "link", "set", v, "up"]);
        }
    }

    /// Starts a long-running process in `ns` with its stderr in the lab's log `name`.
    pub fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits until log `name` contains `needle`.
    pub fn wait_log(&self, name: &str, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log(name).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

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

    /// Stops child `i` (SIGKILL) and waits for it.
    pub fn kill_child(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// Starts `shipworm [global...] COMMAND...` in `ns` with stdin from `input` and stdout to
    /// `output` (files in the lab directory), stderr to the log `name`.
    pub fn run_cli(
        &mut self,
        ns: &str,
        name: &str,
        args: &[&str],
        input: Option<&Path>,
        output: Option<&Path>,
    ) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&self.bin)
            .args(args)
            .stderr(log);
        cmd.stdin(match input {
            Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
            None => Stdio::null(),
        });
        cmd.stdout(match output {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::null(),
        });
        self.children.push(cmd.spawn().unwrap());
        self.children.len() - 1
    }

    /// Waits for child `i` to exit; `None` if it is still running after `within`.
    pub fn wait_child(&mut self, i: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.children[i].try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
