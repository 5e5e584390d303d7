//! TUN mode on the real kernel: network namespaces joined by veth pairs, a `shipworm up --tun` in
//! each, and `ping -6` between overlay addresses through the encrypted tunnel. Needs root; skips
//! with a message otherwise (CI runs as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sh(args: &[&str]) {
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

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("SKIPPED: TUN and network namespace tests need root (CI runs them as root)");
        return false;
    }
    for tool in ["ip", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} must be installed in CI (.ci/run installs it)"
            );
            eprintln!(
                "SKIPPED: {tool} is not installed (.ci/run installs iproute2 and iputils-ping)"
            );
            return false;
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "/dev/net/tun is missing in CI"
        );
        eprintln!("SKIPPED: /dev/net/tun is missing");
        return false;
    }
    true
}

/// Namespaces, links and processes of one test; all removed on drop.
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("shipworm-tun-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            tag,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        }
    }

    fn ns(&mut self, name: &str) -> String {
        let ns = format!("sw{}{name}", self.tag);
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// A veth pair between two namespaces with an IPv4 address on each end.
    fn link(&self, n: u8, a: &str, a_ip: &str, b: &str, b_ip: &str) {
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

    fn identity(&self, name: &str) -> (PathBuf, String, String) {
        let path = self.dir.join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_shipworm"))
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

    fn up(
        &mut self,
        ns: &str,
        identity: &Path,
        tun: &str,
        listen: &str,
        peers: &[String],
    ) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{tun}.log"))).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_shipworm"),
            "--identity",
        ])
        .arg(identity)
        .args(["up", "--tun", "--tun-name", tun, "--listen", listen]);
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

    fn log(&self, tun: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{tun}.log"))).unwrap_or_default()
    }

    fn ping(&self, ns: &str, dst: &str, count: u32) -> (bool, String) {
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
    fn stop(&mut self, i: usize, tun: &str) -> (bool, String) {
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

#[test]
fn ping6_crosses_the_tunnel_between_two_namespaces_and_strangers_are_kept_out() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("t");
    let (a, b, c) = (lab.ns("a"), lab.ns("b"), lab.ns("c"));
    lab.link(1, &a, "10.77.1.1/24", &b, "10.77.1.2/24");
    lab.link(2, &c, "10.77.2.3/24", &b, "10.77.2.2/24");
    let (a_key, a_id, a_ov) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let (c_key, _c_id, _) = lab.identity("c");
    let tun = |n: &str| format!("s{}{n}", lab.tag);
    let (ta, tb, tc) = (tun("a"), tun("b"), tun("c"));

    // B lists only A. C knows B and tries anyway.
    let ia = lab.up(
        &a,
        &a_key,
        &ta,
        "10.77.1.1:51820",
        &[format!("{b_id}@10.77.1.2:51820")],
    );
    lab.up(
        &b,
        &b_key,
        &tb,
        "[::]:51820",
        &[format!("{a_id}@10.77.1.1:51820")],
    );
    lab.up(
        &c,
        &c_key,
        &tc,
        "10.77.2.3:51820",
        &[format!("{b_id}@10.77.2.2:51820")],
    );

    let (ok, out) = lab.ping(&a, &b_ov, 5);
    assert!(
        ok,
        "ping A -> B through the tunnel failed:\n{out}\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    assert!(out.contains("5 received"), "{out}");
    // And back: B's kernel reaches A's overlay address over the same session.
    let (ok, out) = lab.ping(&b, &a_ov, 2);
    assert!(ok, "ping B -> A failed:\n{out}");

    let (ok, out) = lab.ping(&c, &b_ov, 2);
    assert!(!ok, "C is not on B's allowlist, yet reached B:\n{out}");

    let (clean, log) = lab.stop(ia, &ta);
    assert!(clean, "up exited badly:\n{log}");
    assert!(
        log.contains("down:") && !log.contains("down: 0 packets in"),
        "{log}"
    );
}
