//! `shipworm connect NODEID` as `docs/discovery.md` describes it: a private DHT of
//! `shipworm dht-node`s on loopback, a `listen`er publishing its record with `--publish dht`, and
//! a `connect` that knows only the NodeId and `--dht-bootstrap`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shipworm_tests::scratch::Scratch;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shipworm"));
    c.env("RUST_LOG", "error,shipworm::discovery=info");
    // These run in the host's namespace: no mDNS onto its real networks.
    c.env("SHIPWORM_NO_MDNS", "true");
    c
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn dir(tag: &str) -> Scratch {
    Scratch::new(&format!("shipworm-cldz-{tag}-"))
}

fn wait_for(log: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a process with its stderr in `d/name.log`; returns the log's path.
fn start(kill: &mut Kill, d: &Path, name: &str, args: &[&str]) -> PathBuf {
    let log = d.join(format!("{name}.log"));
    kill.0.push(
        bin()
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    log
}

/// The address a server printed after `needle` ("dht node on ADDR", "rendezvous on ADDR").
fn served_at(log: &Path, needle: &str) -> String {
    let line = wait_for(log, needle, Duration::from_secs(10));
    line.split(needle)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .to_string()
}

/// Three DHT nodes on loopback; the first one's address (the others bootstrap from it).
fn private_dht(kill: &mut Kill, d: &Path) -> String {
    let first = start(kill, d, "dht0", &["dht-node", "--listen", "127.0.0.1:0"]);
    let boot = served_at(&first, "dht node on ");
    for k in 1..3 {
        let log = start(
            kill,
            d,
            &format!("dht{k}"),
            &[
                "--dht-bootstrap",
                &boot,
                "dht-node",
                "--listen",
                "127.0.0.1:0",
            ],
        );
        served_at(&log, "dht node on ");
    }
    boot
}

fn node_id(d: &Path, key: &str) -> String {
    let out = bin()
        .arg("--identity")
        .arg(d.join(key))
        .args(["--json", "id"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\"node_id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string()
}

#[test]
fn connect_by_node_id_alone_through_a_private_dht() {
    let d = dir("pipe");
    let mut kill = Kill(Vec::new());
    let boot = private_dht(&mut kill, &d);
    let rdv_log = start(
        &mut kill,
        &d,
        "rdv",
        &[
            "rendezvous",
            "--listen",
            "127.0.0.1:0",
            "--alt-listen",
            "127.0.0.1:0",
        ],
    );
    let rdv = served_at(&rdv_log, "rendezvous on ");
    std::fs::write(d.join("to_connector"), b"from the listener\n").unwrap();
    std::fs::write(d.join("to_listener"), b"from the connector\n").unwrap();
    let id = node_id(&d, "l.key");
    let mut listen = bin()
        .arg("--identity")
        .arg(d.join("l.key"))
        .args(["--rendezvous", &rdv, "--no-portmap"])
        .args(["--publish", "dht", "--dht-bootstrap", &boot, "listen"])
        .stdin(std::fs::File::open(d.join("to_connector")).unwrap())
        .stdout(std::fs::File::create(d.join("l.out")).unwrap())
        .stderr(std::fs::File::create(d.join("l.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        &d.join("l.log"),
        "published our record to the DHT",
        Duration::from_secs(30),
    );
    // No ticket, no rendezvous: the NodeId and the private DHT only.
    let mut connect = bin()
        .arg("--identity")
        .arg(d.join("c.key"))
        .args(["--no-portmap", "--dht-bootstrap", &boot, "connect", &id])
        .stdin(std::fs::File::open(d.join("to_listener")).unwrap())
        .stdout(std::fs::File::create(d.join("c.out")).unwrap())
        .stderr(std::fs::File::create(d.join("c.log")).unwrap())
        .spawn()
        .unwrap();
    let c = wait_exit(&mut connect, Duration::from_secs(60));
    let l = wait_exit(&mut listen, Duration::from_secs(30));
    let logs = format!(
        "{}\n{}",
        std::fs::read_to_string(d.join("l.log")).unwrap(),
        std::fs::read_to_string(d.join("c.log")).unwrap()
    );
    assert!(c.success() && l.success(), "exit {c} / {l}:\n{logs}");
    assert_eq!(
        std::fs::read(d.join("l.out")).unwrap(),
        b"from the connector\n"
    );
    assert_eq!(
        std::fs::read(d.join("c.out")).unwrap(),
        b"from the listener\n"
    );
}

#[test]
fn a_node_id_nobody_published_exits_3_saying_what_to_do() {
    let d = dir("absent");
    let mut kill = Kill(Vec::new());
    let boot = private_dht(&mut kill, &d);
    let nobody = node_id(&d, "nobody.key");
    let out = bin()
        .arg("--identity")
        .arg(d.join("c.key"))
        .args(["--no-portmap", "--dht-bootstrap", &boot, "ping", &nobody])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "no record for {nobody} in the DHT: is the peer running with --publish dht?"
        )),
        "{err}"
    );
}
