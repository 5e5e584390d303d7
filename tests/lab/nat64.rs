//! An IPv6-only site behind a real NAT64 ([`Nat64Sites`], [`Lab::nat64_sites`]): its router runs
//! tayga (a userspace stateless NAT64 on a TUN device) and masquerades tayga's IPv4 pool to its
//! one public IPv4 address, so the pair is the stateful NAT64 of RFC 6146 that carriers run;
//! optionally a DNS64 answer for `ipv4only.arpa` (RFC 7050) from a tiny responder on the router.
//! The other site and the rendezvous are IPv4 only.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::routers::home_router;
use super::{can_run, cannot_run, has_tool, nat_ruleset, Filtering, Lab};

/// Whether the NAT64 lab can run here (the lab's own tools, and tayga).
pub fn can_run_nat64() -> bool {
    can_run() && (has_tool("tayga") || cannot_run("tayga is not installed (.ci/run installs it)"))
}

/// The namespaces and addresses of [`Lab::nat64_sites`].
pub struct Nat64Sites {
    /// The rendezvous host (IPv4 only).
    pub rdv: String,
    /// `IPv4:port` of the rendezvous.
    pub rendezvous: String,
    /// The NAT64 router of the IPv6-only site (tayga, masquerade, the DNS64 responder).
    pub nat64_router: String,
    /// The IPv6-only host (`2001:db8:1::2`, no IPv4 address or route).
    pub v6_host: String,
    /// The IPv4-only site's home router (public `{net}.2.2`).
    pub v4_router: String,
    /// The IPv4-only host (`192.168.2.2`).
    pub v4_host: String,
    /// The NAT64 prefix tayga translates.
    pub prefix: String,
    /// The IPv6-only host's `/etc/netns/NAME`, removed on drop.
    _etc: EtcNetns,
}

/// A namespace's `/etc/netns/NAME` (what `ip netns exec` mounts over `/etc`), removed on drop,
/// also when setting the lab up fails halfway.
struct EtcNetns(PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A DNS responder for one name: AAAA `ipv4only.arpa` gets the addresses in argv[2..] (the
/// synthesis of 192.0.0.170 and .171), A gets 192.0.0.170 and .171, anything else NXDOMAIN.
const DNS64: &str = r#"
import ipaddress, socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("dns64 ready", flush=True, file=sys.stderr)
aaaa = [ipaddress.IPv6Address(a).packed for a in sys.argv[2:]]
a = [ipaddress.IPv4Address(x).packed for x in ("192.0.0.170", "192.0.0.171")]
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 12:
        continue
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace").lower())
        i += 1 + q[i]
    i += 1
    if i + 4 > len(q):
        continue
    qtype = struct.unpack("!H", q[i:i + 2])[0]
    question = q[12:i + 4]
    rdatas = []
    if ".".join(labels) == "ipv4only.arpa":
        rdatas = {28: aaaa, 1: a}.get(qtype, [])
        rcode = 0
    else:
        rcode = 3
    head = q[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, len(rdatas), 0, 0)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(r)) + r for r in rdatas
    )
    print("answered", ".".join(labels), qtype, len(rdatas), flush=True, file=sys.stderr)
    s.sendto(head + question + answers, peer)
"#;

impl Lab {
    /// The internet `{net}.0.0/16`; an IPv4-only rendezvous at `{net}.0.2:3478` (started); an
    /// IPv6-only site (`2001:db8:1::/64`) whose router (public `{net}.1.2`) runs tayga with
    /// `prefix` (a /96) and masquerades its pool; an IPv4-only site behind a home router
    /// (public `{net}.2.2`, host `192.168.2.2`). With `dns64`, the IPv6-only host's resolver
    /// (its `/etc/netns/NAME/resolv.conf`) is a responder on the router that answers
    /// `ipv4only.arpa` with `prefix` + 192.0.0.170 and .171; without, the resolver it names
    /// does not exist (nothing listens on port 53), so RFC 7050 discovery fails at once.
    pub fn nat64_sites(&mut self, net: &str, prefix: &str, dns64: bool) -> Nat64Sites {
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
        for (peer, n, ip) in [(&rdv, 0, 2), (&ra, 1, 2), (&rb, 2, 2)] {
            self.link_named(
                &wan,
                &name(&format!("w{n}")),
                &format!("{net}.{n}.1/24"),
                peer,
                &name(&format!("x{n}")),
                &format!("{net}.{n}.{ip}/24"),
            );
            self.exec(
                peer,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("{net}.{n}.1"),
                ],
            );
        }
        self.link_named(
            &rb,
            &name("bl"),
            "192.168.2.1/24",
            &hb,
            &name("bh"),
            "192.168.2.2/24",
        );
        self.exec(
            &hb,
            &["ip", "route", "add", "default", "via", "192.168.2.1"],
        );
        self.nft(&rb, &home_router(&name("x2"), &name("bl")));

        // The IPv6-only LAN: no IPv4 on the host at all, addresses usable at once (no DAD).
        let (al, ah) = (name("al"), name("ah"));
        crate::lab::sh(&[
            "ip", "link", "add", &al, "type", "veth", "peer", "name", &ah,
        ]);
        for (ns, dev, addr) in [
            (&ra, &al, "2001:db8:1::1/64"),
            (&ha, &ah, "2001:db8:1::2/64"),
        ] {
            crate::lab::sh(&["ip", "link", "set", dev, "netns", ns]);
            self.exec(ns, &["ip", "addr", "add", addr, "dev", dev, "nodad"]);
            self.exec(ns, &["ip", "link", "set", dev, "up"]);
        }
        self.exec(
            &ha,
            &[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:1::1",
            ],
        );
        for ns in [&wan, &ra, &rb] {
            self.exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        self.exec(&ra, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);

        // tayga: the IPv6 side of `prefix` in, its dynamic pool out (RFC 6145 translation);
        // the router masquerades the pool like any home router, so the pair is a stateful NAT64.
        let conf = self.dir.join("tayga.conf");
        std::fs::write(
            &conf,
            format!(
                "tun-device nat64\nipv4-addr 192.168.255.1\nipv6-addr 2001:db8:1:ffff::1\n\
                 prefix {prefix}\ndynamic-pool 192.168.255.0/24\n"
            ),
        )
        .unwrap();
        let conf = conf.to_string_lossy().into_owned();
        self.exec(&ra, &["tayga", "-c", &conf, "--mktun"]);
        self.exec(&ra, &["ip", "link", "set", "nat64", "up"]);
        self.exec(
            &ra,
            &["ip", "route", "add", "192.168.255.0/24", "dev", "nat64"],
        );
        self.exec(&ra, &["ip", "-6", "route", "add", prefix, "dev", "nat64"]);
        self.exec(
            &ra,
            &[
                "ip",
                "-6",
                "route",
                "add",
                "2001:db8:1:ffff::1",
                "dev",
                "nat64",
            ],
        );
        self.nft(
            &ra,
            &nat_ruleset(
                &name("x1"),
                &["nat64"],
                &format!(
                    "oifname \"{}\" ip saddr 192.168.255.0/24 masquerade",
                    name("x1")
                ),
                Filtering::AddressAndPort,
                None,
            ),
        );
        // `-d`: in the foreground, logging to stdout (into the lab's log here).
        self.spawn(
            &ra,
            "tayga",
            &["sh", "-c", &format!("exec tayga -c {conf} -d >&2")],
        );

        let etc = EtcNetns(PathBuf::from(format!("/etc/netns/{ha}")));
        std::fs::create_dir_all(&etc.0).unwrap();
        std::fs::write(
            etc.0.join("resolv.conf"),
            "nameserver 2001:db8:1::1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        if dns64 {
            let p = prefix.split('/').next().unwrap_or_default().to_string();
            let (a170, a171) = (format!("{p}192.0.0.170"), format!("{p}192.0.0.171"));
            self.spawn(
                &ra,
                "dns64",
                &["python3", "-c", DNS64, "2001:db8:1::1", &a170, &a171],
            );
            assert!(
                self.wait_log("dns64", "dns64 ready", Duration::from_secs(10)),
                "{}",
                self.log("dns64")
            );
        }
        // tayga is up once the IPv6-only host reaches the rendezvous host through it.
        let target = format!("{}{net}.0.2", prefix.split('/').next().unwrap_or_default());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Command::new("ip")
            .args([
                "netns", "exec", &ha, "ping", "-6", "-n", "-c", "1", "-W", "1", &target,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "no ping through tayga to {target}:\n{}",
                self.log("tayga")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let rendezvous = format!("{net}.0.2:3478");
        self.start_rendezvous_at(&rdv, &rendezvous);
        Nat64Sites {
            rdv,
            rendezvous,
            nat64_router: ra,
            v6_host: ha,
            v4_router: rb,
            v4_host: hb,
            prefix: prefix.to_string(),
            _etc: etc,
        }
    }
}
