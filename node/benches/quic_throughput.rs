//! QUIC through the tunnel versus plain quinn over the same loopback path, in the same run; and
//! time from `connect` to the first byte. Run on demand:
//!
//! ```sh
//! cargo bench -p shipworm --bench quic_throughput
//! ```
//!
//! Three sides per round: plain quinn; shipworm as it runs by default (QUIC's 1-RTT packets
//! encrypted once, by the tunnel: `quic::tunneled`); shipworm with QUIC's own protection kept
//! (`Protection::TunnelAndQuic`, what a peer without the tunneled version gets). Written up in
//! `docs/performance.md`. `SHIPWORM_BENCH_ONLY=quinn` (or `shipworm`, `shipworm+v1`) runs one
//! side alone, for a profiler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shipworm::quic::tls;
use shipworm::quic::tunneled::Protection;
use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::{Identity, Node, RendezvousAddr};

const ALPN: &[u8] = b"bench/1";
const BYTES: u64 = 200 * 1024 * 1024;
/// Rounds of each, alternating (the machines are shared: the median of several is the figure).
const ROUNDS: usize = 7;

/// Sends `BYTES` on one stream; returns Mbit/s measured at the receiver's end of stream.
async fn transfer(
    conn: quinn::Connection,
    incoming: tokio::task::JoinHandle<quinn::Connection>,
) -> f64 {
    let receiver = tokio::spawn(async move {
        let conn = incoming.await.unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while let Some(k) = recv.read(&mut buf).await.unwrap() {
            n += k as u64;
        }
        (n, Instant::now(), conn)
    });
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut send = conn.open_uni().await.unwrap();
    let mut sent = 0;
    while sent < BYTES {
        send.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    send.finish().unwrap();
    let (n, end, _keep) = receiver.await.unwrap();
    assert_eq!(n, BYTES);
    BYTES as f64 * 8.0 / end.duration_since(start).as_secs_f64() / 1e6
}

async fn plain_quinn() -> (f64, Duration) {
    let (a_id, b_id) = (Identity::generate(), Identity::generate());
    let server = tls::server_config(&b_id, &[ALPN.to_vec()]).unwrap();
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server).unwrap(),
    ));
    server.transport_config(shipworm::quic::transport_config(1280));
    let b = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let b_addr = b.local_addr().unwrap();
    let client = tls::client_config(&a_id, b_id.node_id(), ALPN).unwrap();
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap(),
    ));
    client.transport_config(shipworm::quic::transport_config(1280));
    let mut a = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    a.set_default_client_config(client);
    let b2 = b.clone();
    let incoming = tokio::spawn(async move { b2.accept().await.unwrap().await.unwrap() });
    let t = Instant::now();
    let conn = a.connect(b_addr, "x").unwrap().await.unwrap();
    let connect = t.elapsed();
    let rate = transfer(conn, incoming).await;
    a.close(0u32.into(), b"");
    b.close(0u32.into(), b"");
    (rate, connect)
}

/// Two nodes on loopback, each with `protection` for its QUIC connections.
async fn through_tunnel(rdv: SocketAddr, protection: Protection) -> (f64, Duration) {
    let b = Arc::new(
        Node::builder()
            .rendezvous(RendezvousAddr::Ip(rdv))
            .portmap(false)
            .quic_protection(protection)
            .alpn(ALPN)
            .bind("127.0.0.1:0".parse().unwrap())
            .spawn()
            .await
            .unwrap(),
    );
    let a = Node::builder()
        .rendezvous(RendezvousAddr::Ip(rdv))
        .portmap(false)
        .quic_protection(protection)
        .bind("127.0.0.1:0".parse().unwrap())
        .spawn()
        .await
        .unwrap();
    assert!(
        b.registered(Duration::from_secs(5)).await && a.registered(Duration::from_secs(5)).await
    );
    let ticket = b.ticket().await.unwrap();
    let b2 = b.clone();
    let incoming = tokio::spawn(async move { b2.accept().await.unwrap().1 });
    let t = Instant::now();
    let conn = a.connect(ticket, ALPN).await.unwrap();
    let connect = t.elapsed();
    let rate = transfer(conn, incoming).await;
    a.close().await;
    b.close().await;
    (rate, connect)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Config { listen: "127.0.0.1:0".parse().unwrap(), alt_listen: None, ..Config::default() };
        let rdv = Rendezvous::bind(config).await.unwrap();
        println!("{} MiB over one QUIC stream on loopback, {ROUNDS} rounds of each, alternating", BYTES >> 20);
        println!("shipworm: QUIC encrypted once, by the tunnel (the default); shipworm+v1: QUIC's own 1-RTT protection kept too");
        // For profiling one side alone: SHIPWORM_BENCH_ONLY=quinn, shipworm or shipworm+v1.
        let only = std::env::var("SHIPWORM_BENCH_ONLY").unwrap_or_default();
        let skip = |side: &str| !only.is_empty() && only != side;
        let none = (f64::NAN, Duration::ZERO);
        let (mut rates, mut ratios) = ([Vec::new(), Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for round in 0..ROUNDS {
            let p = if skip("quinn") { none } else { plain_quinn().await };
            let s = if skip("shipworm") { none } else { through_tunnel(rdv.local_addr(), Protection::Tunnel).await };
            let d = if skip("shipworm+v1") { none } else { through_tunnel(rdv.local_addr(), Protection::TunnelAndQuic).await };
            println!(
                "round {round}: plain quinn {:>5.0} Mbit/s (connect {:>4.1} ms) | shipworm {:>5.0} Mbit/s (connect by ticket {:>4.1} ms) = {:>3.0} % | shipworm+v1 {:>5.0} Mbit/s = {:>3.0} %",
                p.0,
                p.1.as_secs_f64() * 1e3,
                s.0,
                s.1.as_secs_f64() * 1e3,
                100.0 * s.0 / p.0,
                d.0,
                100.0 * d.0 / p.0,
            );
            for (v, x) in rates.iter_mut().zip([p.0, s.0, d.0]) {
                v.push(x);
            }
            ratios[0].push(s.0 / p.0);
            ratios[1].push(d.0 / p.0);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let [p, s, d] = rates.map(|mut v| med(&mut v));
        let [rs, rd] = ratios.map(|mut v| med(&mut v));
        println!(
            "median: plain quinn {p:.0} Mbit/s, shipworm {s:.0} Mbit/s, shipworm+v1 {d:.0} Mbit/s; median of the rounds' ratios: shipworm {:.0} % (target >= 90 %), shipworm+v1 {:.0} %",
            100.0 * rs,
            100.0 * rd
        );
        rdv.shutdown().await;
    });
}
