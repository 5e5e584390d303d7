//! The rendezvous service on real loopback sockets: the embedded driver and its metrics endpoint,
//! the binary, and a real STUN client. (Nodes registering and introducing themselves through the
//! service are tested with the node's own engine, in the workspace's `tests/rendezvous_service.rs`.)

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shipworm_rendezvous::config::Config;
use shipworm_rendezvous::driver::{unix_ms, Rendezvous};
use shipworm_rendezvous::server::DropReason;
use shipworm_rendezvous::wire::{stun, ErrorCode, Message, Register};
use shipworm_tunnel::Identity;
use tokio::net::UdpSocket;

/// Asks `server` for our address over STUN from `sock`: one request, one second to answer.
async fn stun_binding(sock: &UdpSocket, server: SocketAddr) -> Option<SocketAddr> {
    let (request, tx) = stun::binding_request();
    sock.send_to(&request, server).await.ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    stun::parse_binding_response(&buf[..n], tx).ok()
}

async fn http(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn metric(text: &str, line_start: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test]
async fn both_stun_ports_reflect_the_sender_and_the_metrics_endpoint_counts_it() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        alt_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();

    // Both STUN ports reflect the same address for this (un-NATed) socket.
    assert_eq!(stun_binding(&sock, rdv.local_addr()).await, Some(local));
    assert_eq!(
        stun_binding(&sock, rdv.alt_addr().unwrap()).await,
        Some(local)
    );

    // A signed REGISTER gets REGISTERED with our address; garbage is dropped and counted.
    let id = Identity::from_seed(&[9; 32]);
    let register =
        Message::Register(Register::signed(&id, 7, unix_ms(), rdv.local_addr())).to_vec();
    sock.send_to(&register, rdv.local_addr()).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    match Message::parse(&buf[..n]).unwrap() {
        Message::Registered(r) => {
            assert_eq!((r.tx, r.observed), (7, local));
            assert_eq!(Some(r.alt_stun_port), rdv.alt_addr().map(|a| a.port()));
        }
        other => panic!("expected REGISTERED, got {other:?}"),
    }
    sock.send_to(&[0xC1, 1, 0], rdv.local_addr()).await.unwrap();

    // The snapshot the endpoint reads refreshes twice a second: wait until it holds the last
    // packet sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = http(
            rdv.metrics_addr().unwrap(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        if metric(&text, "shipworm_rendezvous_packets_total{type=\"other\"} ") == Some(1) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never showed the last packet:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    for (line, want) in [
        ("shipworm_rendezvous_registered_nodes ", 1),
        ("shipworm_rendezvous_max_nodes ", 1_000_000),
        ("shipworm_rendezvous_packets_total{type=\"stun\"} ", 1),
        ("shipworm_rendezvous_packets_total{type=\"stun_alt\"} ", 1),
        ("shipworm_rendezvous_packets_total{type=\"register\"} ", 1),
        ("shipworm_rendezvous_packets_total{type=\"other\"} ", 1),
        ("shipworm_rendezvous_drops_total{reason=\"malformed\"} ", 1),
        (
            "shipworm_rendezvous_drops_total{reason=\"bad_signature\"} ",
            0,
        ),
        ("shipworm_rendezvous_registrations_total{kind=\"new\"} ", 1),
        (
            "shipworm_rendezvous_registrations_total{kind=\"renewed\"} ",
            0,
        ),
        ("shipworm_rendezvous_sent_packets_total ", 3),
        ("shipworm_rendezvous_introductions_forwarded_total ", 0),
        ("shipworm_rendezvous_signature_checks_total ", 1),
        ("shipworm_rendezvous_retries_sent_total ", 0),
        ("shipworm_rendezvous_introductions_answered_free_total ", 0),
        (
            "shipworm_rendezvous_drops_total{reason=\"register_rate_limited\"} ",
            0,
        ),
        ("shipworm_rendezvous_send_errors_total ", 0),
    ] {
        assert_eq!(metric(&text, line), Some(want), "{line}in\n{text}");
    }
    assert_eq!(rdv.snapshot().stats.dropped(DropReason::Malformed), 1);
    assert!(
        text.contains("# TYPE shipworm_rendezvous_drops_total counter"),
        "{text}"
    );

    let text = http(
        rdv.metrics_addr().unwrap(),
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    let text = http(
        rdv.metrics_addr().unwrap(),
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");

    let metrics = rdv.metrics_addr().unwrap();
    let last = rdv.shutdown().await;
    assert_eq!(last.registered, 1);
    assert!(
        tokio::net::TcpStream::connect(metrics).await.is_err(),
        "the metrics endpoint stops with the server"
    );
}

/// The rendezvous binary, killed when dropped.
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One datagram to `to` from `sock`; the answer and the address it came from (two seconds).
async fn ask(sock: &UdpSocket, to: SocketAddr, request: &[u8]) -> (Vec<u8>, SocketAddr) {
    sock.send_to(request, to).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer to a request sent to {to}"))
        .unwrap();
    (buf[..n].to_vec(), from)
}

#[tokio::test]
async fn a_dual_stack_server_answers_from_the_loopback_address_that_was_asked() {
    // Linux routes all of 127/8 to `lo`: 127.0.0.2 is a second local address that nothing
    // configures, and a reply to 127.0.0.1 from a socket that lets the kernel choose leaves from
    // 127.0.0.1. The client socket is unconnected, so a reply from the wrong address still
    // arrives and the assertion names it.
    let config = Config {
        listen: "[::]:0".parse().unwrap(),
        alt_listen: Some("[::]:0".parse().unwrap()),
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await.unwrap();
    let (port, alt_port) = (rdv.local_addr().port(), rdv.alt_addr().unwrap().port());
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let id = Identity::from_seed(&[3; 32]);
    for (k, ip) in ["127.0.0.2", "127.0.0.1", "127.0.0.2"]
        .into_iter()
        .enumerate()
    {
        let ip: IpAddr = ip.parse().unwrap();
        for server in [SocketAddr::new(ip, port), SocketAddr::new(ip, alt_port)] {
            let (request, tx) = stun::binding_request();
            let (answer, from) = ask(&sock, server, &request).await;
            assert_eq!(from, server, "the STUN answer to {server} came from {from}");
            assert_eq!(
                stun::parse_binding_response(&answer, tx).ok(),
                Some(sock.local_addr().unwrap())
            );
        }
        // A REGISTER is answered from the same address: REGISTERED where it is signed for the
        // address asked (127.0.0.1 is an interface address), ERROR (wrong server) at 127.0.0.2,
        // which no interface lists.
        let server = SocketAddr::new(ip, port);
        let register =
            Message::Register(Register::signed(&id, k as u64, unix_ms(), server)).to_vec();
        let (answer, from) = ask(&sock, server, &register).await;
        assert_eq!(
            from, server,
            "the answer to a REGISTER to {server} came from {from}"
        );
        let signed_for_an_interface = ip == IpAddr::from([127, 0, 0, 1]);
        match (Message::parse(&answer).unwrap(), signed_for_an_interface) {
            (Message::Registered(r), true) => assert_eq!(r.tx, k as u64),
            (Message::Error(e), false) => {
                assert_eq!((e.tx, e.code), (k as u64, ErrorCode::WrongServer))
            }
            (other, _) => panic!("unexpected answer from {server}: {other:?}"),
        }
    }
    assert_eq!(rdv.shutdown().await.stats.send_errors, 0);
}

#[tokio::test]
async fn requests_to_two_addresses_in_one_receive_batch_are_each_answered_from_the_address_asked() {
    // As above, but all at once: 96 STUN requests from 48 sockets, to 127.0.0.1 and 127.0.0.2
    // in turn, wait in the server's socket before it runs (it shares this thread), so each of
    // its receive batches holds both addresses and its answers leave in `sendmmsg` calls that
    // mix two source addresses.
    let config = Config {
        listen: "[::]:0".parse().unwrap(),
        alt_listen: None,
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await.unwrap();
    let port = rdv.local_addr().port();
    let servers: Vec<SocketAddr> = ["127.0.0.1", "127.0.0.2"]
        .iter()
        .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
        .collect();
    let mut asked = Vec::new();
    for _ in 0..48 {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut txs = Vec::new();
        for server in &servers {
            let (request, tx) = stun::binding_request();
            sock.send_to(&request, server).unwrap();
            txs.push((tx, *server));
        }
        sock.set_nonblocking(true).unwrap();
        asked.push((UdpSocket::from_std(sock).unwrap(), txs));
    }
    for (sock, txs) in &asked {
        let mut pending = txs.clone();
        let mut buf = [0u8; 512];
        while !pending.is_empty() {
            let (n, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
                .await
                .expect("an answer is missing")
                .unwrap();
            let k = pending
                .iter()
                .position(|(tx, _)| stun::parse_binding_response(&buf[..n], *tx).is_ok())
                .expect("an answer to a request of this socket");
            let (_, server) = pending.swap_remove(k);
            assert_eq!(from, server, "the STUN answer to {server} came from {from}");
        }
    }
    assert_eq!(rdv.shutdown().await.stats.send_errors, 0);
}

/// Starts the binary with `args` (which should bind port 0: it names the ports it got, so no
/// other process can take a port between a test's choice and the bind). Returns it with its
/// main and second addresses, once it has said where it listens.
fn start_binary(args: &[&str]) -> (Binary, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shipworm-rendezvous"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let bin = Binary(child);
    let rest = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the binary never said where it listens");
    let main: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let alt = rest
        .split("second STUN port ")
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .and_then(|a| a.parse().ok());
    (bin, main, alt)
}

async fn wait_until_serving(addr: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if stun_binding(&sock, addr).await.is_some() {
            return;
        }
    }
    panic!("rendezvous binary never answered on {addr}");
}

/// Whether a required external tool is present; in CI its absence is a failure.
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} must be installed in CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: {name} is not installed (Debian package coturn); .ci/run installs it");
    }
    found
}

#[tokio::test]
async fn a_real_stun_client_gets_its_mapped_address_from_the_binary() {
    if !tool("turnutils_stunclient") {
        return;
    }
    let (_bin, main, alt) =
        start_binary(&["--listen", "127.0.0.1:0", "--alt-listen", "127.0.0.1:0"]);
    let (port, alt) = (main.port(), alt.expect("a second port").port());
    wait_until_serving(main).await;
    // The main port answers ordinary (bare) requests; the second port only requests at least as
    // large as the answer (shipworm's padded ones), so a bare client gets nothing there.
    for (p, answered) in [(port, true), (alt, false)] {
        let out = Command::new("timeout")
            .args([
                if answered { "10" } else { "3" },
                "turnutils_stunclient",
                "-p",
                &p.to_string(),
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if !answered {
            assert!(!text.contains("UDP reflexive addr: "), "{text}");
            continue;
        }
        let mapped: SocketAddr = text
            .lines()
            .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
            .unwrap_or_else(|| panic!("no reflexive address in turnutils output: {text}"))
            .trim()
            .parse()
            .unwrap();
        assert_eq!(mapped.ip(), std::net::Ipv4Addr::LOCALHOST);
        assert_ne!(mapped.port(), 0);
        assert_ne!(mapped.port(), p, "the client's own port, not the server's");
    }
}

#[test]
fn the_binary_names_the_bad_config_key_and_exits_nonzero() {
    let dir = tempfile::Builder::new()
        .prefix("shipworm-cfg-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "listen = \"[::]:3478\"\nmax_node = 10\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shipworm-rendezvous"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `max_node`") && err.contains("bad.toml"),
        "{err}"
    );

    std::fs::write(&path, "listen = \"127.0.0.1:3478\"\nmax_nodes = 10\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shipworm-rendezvous"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_nodes: 10"));
}

#[tokio::test]
async fn the_binary_shuts_down_cleanly_on_sigterm() {
    let (mut bin, main, alt) = start_binary(&["--listen", "127.0.0.1:0", "--alt-listen", "off"]);
    assert_eq!(alt, None);
    wait_until_serving(main).await;
    let pid = bin.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = bin.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
