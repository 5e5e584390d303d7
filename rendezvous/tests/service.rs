//! The rendezvous service on real loopback sockets: the embedded driver, the binary, and a real
//! STUN client.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shipworm_rendezvous::client::{self, Client, Incoming};
use shipworm_rendezvous::config::Config;
use shipworm_rendezvous::driver::Rendezvous;
use shipworm_rendezvous::proto::IntroStatus;
use shipworm_tunnel::Identity;
use tokio::net::UdpSocket;

fn ipv6_loopback_works() -> bool {
    StdUdp::bind("[::1]:0").is_ok()
}

async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn metric(text: &str, line_start: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test]
async fn one_dual_stack_socket_serves_ipv4_and_ipv6_nodes_and_forwards_an_introduction() {
    let v6 = ipv6_loopback_works();
    let config = Config {
        listen: if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap(),
        alt_listen: Some(if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await.unwrap();
    let port = rdv.local_addr().port();

    let a_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let a_local = a_sock.local_addr().unwrap();
    let mut a = Client::new(
        a_sock.clone(),
        SocketAddr::from(([127, 0, 0, 1], port)),
        Identity::from_seed(&[1; 32]),
    );
    let reg = a.register().await.unwrap();
    assert_eq!(
        reg.observed, a_local,
        "an IPv4 peer is reported as IPv4, not IPv4-mapped"
    );
    assert_eq!(Some(reg.alt_stun_port), rdv.alt_addr().map(|a| a.port()));

    let (b_sock, b_server) = if v6 {
        (
            UdpSocket::bind("[::1]:0").await.unwrap(),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        )
    } else {
        eprintln!("note: no IPv6 loopback here; the second node uses IPv4");
        (
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
    };
    let b_local = b_sock.local_addr().unwrap();
    let b_id = Identity::from_seed(&[2; 32]);
    let mut b = Client::new(Arc::new(b_sock), b_server, b_id.clone());
    assert_eq!(b.register().await.unwrap().observed, b_local);

    // Refresh (token path) answers with the same observed address.
    assert_eq!(a.refresh().await.unwrap().observed, a_local);

    // Both STUN ports reflect the same address for this (un-NATed) socket.
    assert_eq!(
        client::stun_binding(&a_sock, SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap(),
        a_local
    );
    let alt = SocketAddr::from(([127, 0, 0, 1], rdv.alt_addr().unwrap().port()));
    assert_eq!(client::stun_binding(&a_sock, alt).await.unwrap(), a_local);

    let ack = a
        .introduce(&b_id.node_id(), b"opaque noise message 1")
        .await
        .unwrap();
    assert_eq!(ack.status, IntroStatus::Forwarded);
    assert_eq!(ack.target_addr, Some(b_local));
    let got = tokio::time::timeout(Duration::from_secs(5), b.next_incoming())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Incoming::Introduction {
            from: Identity::from_seed(&[1; 32]).node_id(),
            from_addr: a_local,
            payload: b"opaque noise message 1".to_vec()
        }
    );

    // Metrics reflect it (the snapshot refreshes twice a second).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let text = scrape(rdv.metrics_addr().unwrap()).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(
        metric(&text, "shipworm_rendezvous_registered_nodes "),
        Some(2),
        "{text}"
    );
    assert_eq!(
        metric(&text, "shipworm_rendezvous_introductions_forwarded_total "),
        Some(1)
    );
    assert_eq!(
        metric(
            &text,
            "shipworm_rendezvous_packets_total{type=\"register\"} "
        ),
        Some(2)
    );
    assert_eq!(
        metric(
            &text,
            "shipworm_rendezvous_packets_total{type=\"stun_alt\"} "
        ),
        Some(1)
    );

    let last = rdv.shutdown().await;
    assert_eq!(last.registered, 2);
    assert_eq!(last.stats.introductions_forwarded, 1);
}

#[tokio::test]
async fn client_re_registers_after_the_rendezvous_restarts() {
    // Its own loopback address and a port below the kernel's ephemeral range (32768 and up), so
    // no other test's socket can take the port between the two processes: a wildcard bind to
    // port 0 elsewhere could take an ephemeral one on every address, this one included.
    let config = Config {
        listen: "127.0.0.77:23478".parse().unwrap(),
        alt_listen: None,
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config.clone()).await.unwrap();
    let server = rdv.local_addr();
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let mut c = Client::new(sock, server, Identity::from_seed(&[5; 32]));
    c.register().await.unwrap();
    rdv.shutdown().await;
    // A child process another test is spawning right now may briefly hold a copy of the old
    // socket (between fork and exec, before close-on-exec applies): retry for a moment.
    let mut tries = 0;
    let rdv = loop {
        match Rendezvous::bind(Config {
            listen: server,
            ..config.clone()
        })
        .await
        {
            Ok(r) => break r,
            Err(e) if tries < 40 && e.to_string().contains("in use") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    // The new process has new token secrets and an empty table: REFRESH is refused and the
    // client falls back to a signed REGISTER by itself.
    c.refresh().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rdv.snapshot().registered, 1);
    assert_eq!(
        rdv.snapshot()
            .stats
            .dropped(shipworm_rendezvous::server::DropReason::NotRegistered),
        1
    );
    rdv.shutdown().await;
}

fn free_udp_port() -> u16 {
    StdUdp::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The rendezvous binary, killed when dropped.
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_binary(args: &[&str]) -> Binary {
    Binary(
        Command::new(env!("CARGO_BIN_EXE_shipworm-rendezvous"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_until_serving(addr: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client::stun_binding(&sock, addr).await.is_ok() {
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
    let port = free_udp_port();
    let alt = free_udp_port();
    let _bin = start_binary(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--alt-listen",
        &format!("127.0.0.1:{alt}"),
    ]);
    wait_until_serving(SocketAddr::from(([127, 0, 0, 1], port))).await;
    for p in [port, alt] {
        let out = Command::new("timeout")
            .args([
                "10",
                "turnutils_stunclient",
                "-p",
                &p.to_string(),
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
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
    let dir = std::env::temp_dir().join(format!("shipworm-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
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
    let port = free_udp_port();
    let mut bin = start_binary(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--alt-listen",
        "off",
    ]);
    wait_until_serving(SocketAddr::from(([127, 0, 0, 1], port))).await;
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
