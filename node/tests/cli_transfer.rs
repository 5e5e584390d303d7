//! The CLI as a user runs it, on one machine with a rendezvous: 100 MB through `listen` /
//! `connect` and through `forward`, `ping`, and the error for an absent peer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shipworm_tests::scratch::Scratch;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shipworm"));
    c.env("RUST_LOG", "error");
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
    Scratch::new(&format!("shipworm-clix-{tag}-"))
}

/// A rendezvous on loopback; returns its address.
fn rendezvous(kill: &mut Kill, d: &Path) -> String {
    rendezvous_with(kill, d, &[])
}

/// A rendezvous on loopback with extra flags; returns its address. It binds port 0 and says
/// which port it got, so no other process can take the port between a choice and the bind.
fn rendezvous_with(kill: &mut Kill, d: &Path, extra: &[&str]) -> String {
    let log = std::fs::File::create(d.join("rdv.log")).unwrap();
    kill.0.push(
        bin()
            .args([
                "rendezvous",
                "--listen",
                "127.0.0.1:0",
                "--alt-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let line = wait_for(&d.join("rdv.log"), "rendezvous on", Duration::from_secs(10));
    line.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .to_string()
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

/// Writes `len` deterministic bytes to `path`; returns their BLAKE3 hash.
fn make_file(path: &Path, len: usize, seed: u8) -> blake3::Hash {
    let mut out = vec![0u8; len];
    blake3::Hasher::new_derive_key("shipworm test data")
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    std::fs::write(path, &out).unwrap();
    blake3::hash(&out)
}

fn hash_file(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
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

#[test]
fn a_hundred_megabytes_through_listen_and_connect_arrive_intact_both_ways() {
    let d = dir("pipe");
    let mut kill = Kill(Vec::new());
    let rdv = rendezvous(&mut kill, &d);
    let to_listener = make_file(&d.join("a.bin"), 100 * 1024 * 1024, 1);
    let to_connector = make_file(&d.join("b.bin"), 1024 * 1024, 2);

    let mut listen = bin()
        .args(["--identity"])
        .arg(d.join("l.key"))
        .args(["--rendezvous", &rdv, "--no-portmap", "listen"])
        .stdin(std::fs::File::open(d.join("b.bin")).unwrap())
        .stdout(std::fs::File::create(d.join("l.out")).unwrap())
        .stderr(std::fs::File::create(d.join("l.log")).unwrap())
        .spawn()
        .unwrap();
    let ticket = wait_for(&d.join("l.log"), "sw1", Duration::from_secs(15))
        .trim()
        .to_string();
    let mut connect = bin()
        .args(["--identity"])
        .arg(d.join("c.key"))
        .args(["--rendezvous", &rdv, "--no-portmap", "connect", &ticket])
        .stdin(std::fs::File::open(d.join("a.bin")).unwrap())
        .stdout(std::fs::File::create(d.join("c.out")).unwrap())
        .stderr(std::fs::File::create(d.join("c.log")).unwrap())
        .spawn()
        .unwrap();
    let c = wait_exit(&mut connect, Duration::from_secs(240));
    let l = wait_exit(&mut listen, Duration::from_secs(30));
    let logs = format!(
        "{}\n{}",
        std::fs::read_to_string(d.join("l.log")).unwrap(),
        std::fs::read_to_string(d.join("c.log")).unwrap()
    );
    assert!(c.success() && l.success(), "exit {c} / {l}:\n{logs}");
    assert_eq!(
        hash_file(&d.join("l.out")),
        to_listener,
        "listener's output differs"
    );
    assert_eq!(
        hash_file(&d.join("c.out")),
        to_connector,
        "connector's output differs"
    );
    assert!(
        logs.contains("connected: ") && logs.contains("direct "),
        "{logs}"
    );
}

#[test]
fn a_hundred_megabytes_through_forward_in_concurrent_connections() {
    let d = dir("fwd");
    let mut kill = Kill(Vec::new());
    let rdv = rendezvous(&mut kill, &d);
    // A TCP service on the peer's side: answers each connection with the BLAKE3 of what it got.
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in service.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut h = blake3::Hasher::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            h.update(&buf[..n]);
                        }
                    }
                }
                let _ = s.write_all(h.finalize().as_bytes());
            });
        }
    });
    let up_log = d.join("up.log");
    kill.0.push(
        bin()
            .args(["--identity"])
            .arg(d.join("u.key"))
            .args([
                "--rendezvous",
                &rdv,
                "--no-portmap",
                "up",
                "--bind",
                "127.0.0.1:0",
                "--allow-any",
                "--forward-port",
                &service_port.to_string(),
            ])
            .stderr(std::fs::File::create(&up_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let ticket = wait_for(&up_log, "ticket ", Duration::from_secs(15))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let fwd_log = d.join("f.log");
    kill.0.push(
        bin()
            .args(["--identity"])
            .arg(d.join("f.key"))
            .args([
                "--rendezvous",
                &rdv,
                "--no-portmap",
                "forward",
                &ticket,
                "--local",
                "127.0.0.1:0",
                "--port",
                &service_port.to_string(),
            ])
            .stderr(std::fs::File::create(&fwd_log).unwrap())
            .spawn()
            .unwrap(),
    );
    // `forward` binds port 0 and says which port it got.
    let line = wait_for(&fwd_log, "forwarding ", Duration::from_secs(15));
    let local: SocketAddr = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no local address in `{line}`"));
    let clients: Vec<_> = (0..4u8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut data = vec![0u8; 25 * 1024 * 1024];
                blake3::Hasher::new()
                    .update(&[i])
                    .finalize_xof()
                    .fill(&mut data);
                let mut s = std::net::TcpStream::connect(local).unwrap();
                s.write_all(&data).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                (blake3::hash(&data), got)
            })
        })
        .collect();
    for c in clients {
        let (want, got) = c.join().unwrap();
        assert_eq!(
            got,
            want.as_bytes(),
            "a forwarded connection lost or changed data:\n{}",
            std::fs::read_to_string(&fwd_log).unwrap()
        );
    }
}

#[test]
fn ping_status_netcheck_and_an_absent_peer_exits_3() {
    let d = dir("ping");
    let mut kill = Kill(Vec::new());
    let rdv = rendezvous(&mut kill, &d);
    let up_log = d.join("up.log");
    kill.0.push(
        bin()
            .args(["--identity"])
            .arg(d.join("u.key"))
            .args([
                "--rendezvous",
                &rdv,
                "--no-portmap",
                "up",
                "--bind",
                "127.0.0.1:0",
                "--allow-any",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .stderr(std::fs::File::create(&up_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let ticket = wait_for(&up_log, "ticket ", Duration::from_secs(15))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let out = bin()
        .args(["--identity"])
        .arg(d.join("p.key"))
        .args([
            "--rendezvous",
            &rdv,
            "--no-portmap",
            "--json",
            "ping",
            "-c",
            "2",
            &ticket,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"rtt_ms\":[") && text.matches(',').count() >= 3 && text.contains("direct "),
        "{text}"
    );

    // `up --metrics-listen` counts the pinging peer's session.
    let metrics = wait_for(&up_log, "metrics on http://", Duration::from_secs(5));
    let addr = metrics
        .trim()
        .trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics");
    // A scrape sees the snapshot of up to half a second ago.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (handshakes, scraped) = loop {
        let mut http = std::net::TcpStream::connect(addr).unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut scraped = String::new();
        http.read_to_string(&mut scraped).unwrap();
        let handshakes: f64 = scraped
            .lines()
            .find_map(|l| l.strip_prefix("shipworm_node_handshakes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no handshake counter:\n{scraped}"));
        if handshakes >= 1.0 || Instant::now() > deadline {
            break (handshakes, scraped);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(handshakes >= 1.0, "{scraped}");

    // `status` asks the running node on its control socket: the pinging peer and its pair.
    let out = bin()
        .args(["--identity"])
        .arg(d.join("u.key"))
        .args(["--json", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"state\":\"selected\"") && text.contains("\"maps_per_destination\":false"),
        "{text}"
    );
    let out = bin()
        .args(["--identity"])
        .arg(d.join("u.key"))
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SELECTED") && text.contains("NAT mapping: independent of destination"),
        "{text}"
    );

    // `netcheck` against the same rendezvous.
    let out = bin()
        .args(["--identity"])
        .arg(d.join("n.key"))
        .args(["--rendezvous", &rdv, "--no-portmap", "--json", "netcheck"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"registered\":true") && text.contains("\"maps_per_destination\":false"),
        "{text}"
    );

    // A node that never registered: the rendezvous says so, and the exit code is 3.
    let ghost = shipworm::Identity::generate().node_id();
    let ticket = shipworm::Ticket::new(ghost, vec![rdv.parse().unwrap()], vec![])
        .unwrap()
        .to_string();
    let started = Instant::now();
    let out = bin()
        .args(["--identity"])
        .arg(d.join("p.key"))
        .args(["--no-portmap", "connect", &ticket])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("peer is not registered at {rdv}")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The node id in the ticket `listen` prints with this home directory and these extra flags.
fn listen_node_id(d: &Path, rdv: &str, tag: &str, extra: &[&str]) -> String {
    let mut kill = Kill(Vec::new());
    let log = d.join(format!("{tag}.log"));
    kill.0.push(
        bin()
            .env("SHIPWORM_HOME", d.join("home"))
            .env_remove("SHIPWORM_IDENTITY")
            .args(["--rendezvous", rdv, "--no-portmap", "listen"])
            .args(extra)
            .stdin(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let line = wait_for(&log, "sw1", Duration::from_secs(15));
    let ticket: shipworm::Ticket = line.trim().parse().unwrap();
    ticket.node_id().to_string()
}

#[test]
fn listen_runs_under_a_fresh_identity_unless_told_to_keep_one() {
    let d = dir("fresh");
    let mut kill = Kill(Vec::new());
    let rdv = rendezvous(&mut kill, &d);
    let first = listen_node_id(&d, &rdv, "f1", &[]);
    let second = listen_node_id(&d, &rdv, "f2", &[]);
    assert_ne!(first, second, "each run of listen has its own key");
    assert!(
        !d.join("home").join("identity").exists(),
        "a fresh key is never written to disk"
    );
    let kept = listen_node_id(&d, &rdv, "k1", &["--keep-identity"]);
    assert_eq!(
        listen_node_id(&d, &rdv, "k2", &["--keep-identity"]),
        kept,
        "--keep-identity uses the identity file"
    );
    let id = bin()
        .env("SHIPWORM_HOME", d.join("home"))
        .env_remove("SHIPWORM_IDENTITY")
        .args(["--json", "id"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&id.stdout).contains(&kept),
        "the kept key is the one `id` shows"
    );
    assert!(![first, second].contains(&kept));
}

/// A UDP relay in front of a rendezvous that drops everything until `open` is set: a server that
/// does not answer yet, then does.
fn gated_relay(
    front: UdpSocket,
    server: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let (f2, b2, c2) = (
        front.try_clone().unwrap(),
        back.try_clone().unwrap(),
        client.clone(),
    );
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            if open.load(Ordering::SeqCst) {
                *client.lock().unwrap() = Some(from);
                let _ = back.send_to(&buf[..n], server);
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = b2.recv_from(&mut buf) {
            if let Some(c) = *c2.lock().unwrap() {
                let _ = f2.send_to(&buf[..n], c);
            }
        }
    });
}

#[test]
fn listen_prints_no_ticket_before_a_rendezvous_confirms_it_and_keeps_trying() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = dir("noreg");
    let mut kill = Kill(Vec::new());
    // The node signs its REGISTER for the address it sends to, the relay's: the server is told
    // that this address is its own, as an operator behind a 1:1 NAT would.
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    let front = relay.local_addr().unwrap().to_string();
    let rdv: SocketAddr = rendezvous_with(&mut kill, &d, &["--public-addr", &front])
        .parse()
        .unwrap();
    let open = std::sync::Arc::new(AtomicBool::new(false));
    gated_relay(relay, rdv, open.clone());
    let log = d.join("l.log");
    kill.0.push(
        bin()
            .args(["--identity"])
            .arg(d.join("l.key"))
            .args(["--rendezvous", &front, "--no-portmap", "listen"])
            .stdin(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(&log, "still registering at", Duration::from_secs(15));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("sw1"),
        "a ticket before registering:\n{text}"
    );
    open.store(true, Ordering::SeqCst);
    let line = wait_for(&log, "sw1", Duration::from_secs(30));
    let ticket: shipworm::Ticket = line.trim().parse().unwrap();
    assert_eq!(ticket.rendezvous()[0].to_string(), front);
}
