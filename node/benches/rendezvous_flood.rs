//! Flood benchmark of the rendezvous (issue 10, item 14): the real `shipworm-rendezvous` binary
//! on loopback, flooded from this process at the machine's packet ceiling with one kind of packet
//! at a time, while honest nodes (the node library through its own I/O driver) register and
//! connect ten times through it. Only loopback addresses (127.0.0.0/8) are ever sent to.
//!
//! ```sh
//! cargo build --release -p shipworm-rendezvous
//! cargo bench -p shipworm --bench rendezvous_flood            # 20 s per flood
//! cargo bench -p shipworm --bench rendezvous_flood -- 10      # seconds per flood
//! ```
//!
//! `SHIPWORM_RENDEZVOUS_BIN` names the binary if it is not next to the bench's target directory.
//! Per flood kind it prints the honest success rate, the median and worst connect time against the
//! quiet baseline of the same run, the packets per second sent and the signature checks per second
//! the server spent (from its metrics endpoint). Results are written up in
//! `docs/security.md`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shipworm::rendezvous::wire::{stun, Introduce, Message, Register};
use shipworm::{Identity, Node, RendezvousAddr, Ticket};

const ALPN: &[u8] = b"bench/flood";
/// Honest rounds per flood kind.
const ROUNDS: usize = 10;
/// The honest nodes' addresses: each 127.0.0.x is its own /32, apart from the flooders'.
const LISTENER_IP: [u8; 4] = [127, 0, 0, 2];
const DIALLER_IP: [u8; 4] = [127, 0, 0, 3];
/// The single-source flooder.
const FLOODER_IP: [u8; 4] = [127, 0, 0, 9];
/// Sources of the many-source REGISTER flood: 127.0.0.10 and up, one /32 each.
const MANY_SOURCES: u8 = 64;
/// Honest mapping checks (STUN to the second port) that got no answer within 2 s.
static STUN_CHECKS_LOST: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flood {
    Quiet,
    JunkIntroduce,
    BareStun,
    BadSignatureRegister,
    ManySourceRegister,
}

impl Flood {
    fn name(self) -> &'static str {
        match self {
            Flood::Quiet => "none (baseline)",
            Flood::JunkIntroduce => "junk INTRODUCE",
            Flood::BareStun => "bare STUN",
            Flood::BadSignatureRegister => "fresh-key bad-signature REGISTER",
            Flood::ManySourceRegister => "same, from 64 source addresses",
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The datagrams one flood kind cycles through (rebuilt every few seconds: fresh timestamps).
fn packets(kind: Flood, server: SocketAddr, keys: &[Identity]) -> Vec<Vec<u8>> {
    match kind {
        Flood::Quiet => Vec::new(),
        Flood::JunkIntroduce => (0..256u32)
            .map(|i| {
                let b = i.to_le_bytes();
                let fill = |x: u8| -> [u8; 32] {
                    let mut a = [x; 32];
                    a[..4].copy_from_slice(&b);
                    a
                };
                Message::Introduce(Introduce {
                    tx: i as u64,
                    node: fill(1),
                    token: [7; 16],
                    target: fill(2),
                    payload: &[0x5a; 100],
                })
                .to_vec()
            })
            .collect(),
        Flood::BareStun => (0..256u32)
            .map(|i| {
                [
                    &[0u8, 1, 0, 0][..],
                    &stun::MAGIC_COOKIE,
                    &[0; 8],
                    &i.to_be_bytes(),
                ]
                .concat()
            })
            .collect(),
        Flood::BadSignatureRegister | Flood::ManySourceRegister => {
            let ts = unix_ms();
            keys.iter()
                .enumerate()
                .map(|(i, k)| {
                    let mut r = Register::signed(k, i as u64, ts, server);
                    r.signature[0] ^= 1;
                    Message::Register(r).to_vec()
                })
                .collect()
        }
    }
}

/// Floods `server` until `stop`, counting datagrams sent.
fn flood(
    kind: Flood,
    server: SocketAddr,
    keys: Arc<Vec<Identity>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if kind == Flood::Quiet {
            return;
        }
        let sockets: Vec<UdpSocket> = match kind {
            Flood::ManySourceRegister => (0..MANY_SOURCES)
                .map(|i| UdpSocket::bind(SocketAddr::from(([127, 0, 0, 10 + i], 0))).unwrap())
                .collect(),
            _ => vec![UdpSocket::bind(SocketAddr::from((FLOODER_IP, 0))).unwrap()],
        };
        let mut n = 0u64;
        let mut built = Instant::now();
        let mut pkts = packets(kind, server, &keys);
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..1024 {
                let i = n as usize;
                // Replies are never read: to the server, these sources might as well be spoofed.
                let _ = sockets[i % sockets.len()].send_to(&pkts[i % pkts.len()], server);
                n += 1;
            }
            sent.store(n, Ordering::Relaxed);
            if built.elapsed() > Duration::from_secs(5) {
                pkts = packets(kind, server, &keys);
                built = Instant::now();
            }
        }
    })
}

/// The binary, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SHIPWORM_RENDEZVOUS_BIN") {
        return p.into();
    }
    // target/release/deps/rendezvous_flood-… → target/release/shipworm-rendezvous
    let exe = std::env::current_exe().expect("the bench knows its own path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the bench runs from target/<profile>/deps");
    dir.join("shipworm-rendezvous")
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let text = shipworm_tests::metrics::scrape(metrics).await;
    shipworm_tests::metrics::sample(&text, name).unwrap_or(0)
}

async fn node(ip: [u8; 4], server: SocketAddr) -> Node {
    Node::builder()
        .identity(Identity::generate())
        .rendezvous(RendezvousAddr::Ip(server))
        .bind(SocketAddr::from((ip, 0)))
        .portmap(false)
        .alpn(ALPN)
        .spawn()
        .await
        .expect("a node starts")
}

/// One honest round: a listener and a dialler register, and the dialler connects by a ticket
/// that names only the rendezvous. Returns the connect time, or why it failed.
async fn honest_round(server: SocketAddr) -> Result<Duration, String> {
    let b = Arc::new(node(LISTENER_IP, server).await);
    let a = node(DIALLER_IP, server).await;
    let result = async {
        if !b.registered(Duration::from_secs(10)).await {
            return Err("the listener never registered".to_string());
        }
        if !a.registered(Duration::from_secs(10)).await {
            return Err("the dialler never registered".to_string());
        }
        // Both learn their NAT's mapping behaviour (a STUN check to the second port) before A
        // connects, as the demo does: a node that learns it after its handshake runs a fresh one
        // by design (about 250 ms more), which would measure that race instead of the
        // rendezvous. The check is one datagram each way: if a flood lost it, connect anyway
        // after 2 s (and count it).
        for n in [&*b, &a] {
            let deadline = Instant::now() + Duration::from_secs(2);
            while n
                .status()
                .await
                .map_err(|e| e.to_string())?
                .maps_per_destination
                .is_none()
            {
                if Instant::now() > deadline {
                    STUN_CHECKS_LOST.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let accept = {
            let b = b.clone();
            tokio::spawn(async move { b.accept().await.map(|(_, c)| c) })
        };
        let ticket = Ticket::new(b.node_id(), vec![RendezvousAddr::Ip(server)], vec![])
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let conn = tokio::time::timeout(Duration::from_secs(15), a.connect(ticket, ALPN))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let took = start.elapsed();
        conn.close(0u32.into(), b"done");
        accept.abort();
        Ok(took)
    }
    .await;
    a.close().await;
    b.close().await;
    result
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let bin = binary();
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release -p shipworm-rendezvous` first, or set \
         SHIPWORM_RENDEZVOUS_BIN",
        bin.display()
    );
    let port = free_port();
    let alt = free_port();
    let metrics_port = free_port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let _server = Server(
        Command::new(&bin)
            .args([
                "--listen",
                &server.to_string(),
                "--alt-listen",
                &format!("127.0.0.1:{alt}"),
                "--metrics-listen",
                &metrics.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the rendezvous binary starts"),
    );
    let keys: Arc<Vec<Identity>> = Arc::new(
        (0..256u32)
            .map(|i| {
                let mut seed = [3u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                Identity::from_seed(&seed)
            })
            .collect(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Serving once its metrics endpoint answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(metrics).await.is_err() {
            assert!(Instant::now() < deadline, "the rendezvous never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "rendezvous flood: {} honest rounds per kind, floods of at least {secs} s, one flooder thread",
            ROUNDS
        );
        println!(
            "{:<34} {:>8} {:>11} {:>11} {:>7} {:>12} {:>12} {:>10} {:>9}",
            "flood", "honest", "median ms", "worst ms", "x quiet", "sent pkt/s", "sig checks/s", "retries/s", "stun lost"
        );
        let mut quiet_median = f64::NAN;
        for kind in [
            Flood::Quiet,
            Flood::JunkIntroduce,
            Flood::BareStun,
            Flood::BadSignatureRegister,
            Flood::ManySourceRegister,
        ] {
            let lost0 = STUN_CHECKS_LOST.load(Ordering::Relaxed);
            let stop = Arc::new(AtomicBool::new(false));
            let sent = Arc::new(AtomicU64::new(0));
            let flooder = flood(kind, server, keys.clone(), stop.clone(), sent.clone());
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (checks0, retries0, sent0, t0) = (
                metric(metrics, "shipworm_rendezvous_signature_checks_total").await,
                metric(metrics, "shipworm_rendezvous_retries_sent_total").await,
                sent.load(Ordering::Relaxed),
                Instant::now(),
            );
            let mut times = Vec::new();
            let mut failures = Vec::new();
            for _ in 0..ROUNDS {
                match honest_round(server).await {
                    Ok(t) => times.push(t.as_secs_f64() * 1000.0),
                    Err(e) => failures.push(e),
                }
            }
            // The flood lasts at least `secs`, whatever the rounds took.
            let rest = Duration::from_secs(secs).saturating_sub(t0.elapsed());
            tokio::time::sleep(rest).await;
            // The metrics snapshot is refreshed twice a second.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let elapsed = t0.elapsed().as_secs_f64();
            let sent_n = sent.load(Ordering::Relaxed) - sent0;
            let checks = metric(metrics, "shipworm_rendezvous_signature_checks_total").await - checks0;
            let retries = metric(metrics, "shipworm_rendezvous_retries_sent_total").await - retries0;
            stop.store(true, Ordering::Relaxed);
            let _ = flooder.join();
            let worst = times.iter().cloned().fold(f64::NAN, f64::max);
            let med = median(&mut times);
            if kind == Flood::Quiet {
                quiet_median = med;
            }
            println!(
                "{:<34} {:>5}/{:<2} {:>11.1} {:>11.1} {:>7.2} {:>12.0} {:>12.0} {:>10.0} {:>9}",
                kind.name(),
                ROUNDS - failures.len(),
                ROUNDS,
                med,
                worst,
                med / quiet_median,
                sent_n as f64 / elapsed,
                checks as f64 / elapsed,
                retries as f64 / elapsed,
                STUN_CHECKS_LOST.load(Ordering::Relaxed) - lost0,
            );
            for f in failures {
                println!("    failed: {f}");
            }
            // Let the server's receive buffer drain before the next kind.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
