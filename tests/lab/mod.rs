//! The network-namespace lab: namespaces, veth links, nftables routers, and `shipworm` processes
//! inside them, all removed when the [`Lab`] is dropped. Root only; [`can_run`] says whether this
//! machine can (and, in CI, insists).
//!
//! This file holds the lab's core: whether the lab can run here, and [`Lab`] itself (namespaces,
//! links, the processes it starts and their logs). Beside it:
//! - `routers.rs`: nftables rulesets of the NAT routers (home, full cone, symmetric, UPnP) and
//!   miniupnpd with its options ([`Miniupnpd`]: LAN interfaces, allowed networks, NAT-PMP/PCP);
//! - `topology.rs`: the two-site topology ([`Sites`]);
//! - `matrix.rs`: the NAT matrix ([`Matrix`], [`RouterKind`], [`V6`]);
//! - `nat64.rs`: an IPv6-only site behind tayga, a real NAT64 ([`Nat64Sites`]);
//! - `transfer.rs`: `listen` / `connect` transfers with checksums ([`Pipe`]).

mod matrix;
mod nat64;
mod routers;
mod topology;
mod transfer;

pub use matrix::{direct_possible, Matrix, RouterKind, CGNAT_NEIGHBOURS, NODE_PORT, V6};
pub use nat64::{can_run_nat64, Nat64Sites};
pub use routers::{
    address_restricted_router, carrier_router, full_cone_router, hairpin_router, home_router,
    nat_ruleset, sequential_router, symmetric_router, upnp_router, Filtering, Miniupnpd,
    MAPPING_TIMEOUT, PORT_BLOCK,
};
pub use topology::{SharedNat, Sites};
pub use transfer::{line, make_file, tail, Pipe, Started};

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
    for tool in ["ip", "ping", "nft", "conntrack", "python3"] {
        if !has_tool(tool) {
            return cannot_run(&format!(
                "{tool} is not installed (.ci/run installs iproute2, iputils-ping, nftables, \
                 conntrack and python3)"
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
