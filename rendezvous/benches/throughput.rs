//! Rendezvous throughput over loopback next to a bare tokio UDP echo server measured in the same
//! run, and memory per registered node. Run on demand:
//!
//! ```sh
//! cargo bench -p shipworm-rendezvous --bench throughput            # full run
//! cargo bench -p shipworm-rendezvous --bench throughput -- --quick # shorter phases
//! ```
//!
//! Results are written up in `docs/performance.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use shipworm_rendezvous::config::Config;
use shipworm_rendezvous::driver::Rendezvous;
use shipworm_rendezvous::table::{NodeTable, RateLimit};
use shipworm_rendezvous::wire::{self, Introduce, Message, Refresh, Register};
use shipworm_tunnel::Identity;

/// Counts live heap bytes, to measure the node table.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Client sockets (each a distinct source address, as distinct nodes would be).
const SOCKETS: usize = 128;
/// Requests in flight per socket.
const WINDOW: usize = 8;

/// Runs a closed-loop load: every reply of interest triggers the next request on its socket.
/// Returns (replies counted per second, other datagrams per second).
fn load(
    server: SocketAddr,
    sockets: &[UdpSocket],
    duration: Duration,
    mut next: impl FnMut(usize) -> Vec<u8>,
    is_reply: impl Fn(&[u8]) -> bool,
) -> (f64, f64) {
    let mut buf = [0u8; 2048];
    let mut replies = 0u64;
    let mut others = 0u64;
    let mut last_seen = vec![Instant::now(); sockets.len()];
    for (i, s) in sockets.iter().enumerate() {
        for _ in 0..WINDOW {
            let _ = s.send_to(&next(i), server);
        }
    }
    let start = Instant::now();
    while start.elapsed() < duration {
        let now = Instant::now();
        for (i, s) in sockets.iter().enumerate() {
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        if is_reply(&buf[..n]) {
                            replies += 1;
                            last_seen[i] = now;
                            let _ = s.send_to(&next(i), server);
                        } else {
                            others += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
            // Refill a window that lost packets (loopback drops under overload).
            if now.duration_since(last_seen[i]) > Duration::from_millis(50) {
                last_seen[i] = now;
                for _ in 0..WINDOW {
                    let _ = s.send_to(&next(i), server);
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Drain what is still in flight so the next phase starts clean.
    std::thread::sleep(Duration::from_millis(100));
    for s in sockets {
        while s.recv_from(&mut buf).is_ok() {}
    }
    (replies as f64 / secs, others as f64 / secs)
}

fn client_sockets() -> Vec<UdpSocket> {
    (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// A bare tokio UDP echo server, shaped like the rendezvous driver (one task, batched receive).
fn spawn_echo() -> SocketAddr {
    let std = UdpSocket::bind("127.0.0.1:0").unwrap();
    std.set_nonblocking(true).unwrap();
    let addr = std.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::from_std(std).unwrap();
            let mut buf = [0u8; 2048];
            loop {
                sock.readable().await.unwrap();
                for _ in 0..64 {
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if sock.try_send_to(&buf[..n], from).is_err() {
                                let _ = sock.send_to(&buf[..n], from).await;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
        });
    });
    addr
}

fn spawn_rendezvous() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let unlimited = RateLimit {
                per_second: 1000,
                burst: u32::MAX,
            };
            let config = Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                alt_listen: None,
                // Every client is on 127.0.0.1: one source prefix, which the defaults would hold
                // to a few registrations and signature checks a second. This measures the
                // server's ceiling, so those limits are lifted.
                sender_intro_rate: unlimited,
                pair_intro_rate: unlimited,
                target_intro_rate: unlimited,
                register_prefix_rate: unlimited,
                max_registrations_per_prefix: u16::MAX,
                register_load_threshold: u32::MAX,
                ..Config::default()
            };
            let rdv = Rendezvous::bind(config).await.unwrap();
            tx.send(rdv.local_addr()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn unix_ms() -> u64 {
    shipworm_rendezvous::driver::unix_ms()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let phase = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    let n_register = if quick { 30_000 } else { 100_000 };
    let memory_nodes = if quick { 100_000 } else { 1_000_000 };
    println!("shipworm rendezvous throughput: {SOCKETS} client sockets x {WINDOW} in flight, {phase:?} per phase, loopback");

    // Requests of the size of an introduction, so the echo ceiling moves the same bytes.
    let ids: Vec<Identity> = (0..SOCKETS)
        .map(|i| {
            Identity::from_seed(&[
                (i % 251) as u8 + 1,
                (i / 251) as u8,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
            ])
        })
        .collect();
    let payload = vec![0x5au8; 96];
    let intro_len = Introduce::FIXED_LEN + payload.len();

    let echo = spawn_echo();
    let socks = client_sockets();
    let echo_pkt = vec![0xEEu8; intro_len];
    let (echo_rate, _) = load(echo, &socks, phase, |_| echo_pkt.clone(), |_| true);
    println!("echo ceiling ({intro_len}-byte datagrams): {echo_rate:>10.0} replies/s");

    let rdv = spawn_rendezvous();
    let socks = client_sockets();

    // Signed registrations: many distinct keys, pre-signed outside the timed phase.
    let sign_start = Instant::now();
    let ts = unix_ms();
    let mut registers: Vec<Vec<u8>> = (0..n_register)
        .map(|i: u32| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            Message::Register(Register::signed(
                &Identity::from_seed(&seed),
                i as u64,
                ts,
                rdv,
            ))
            .to_vec()
        })
        .collect();
    eprintln!(
        "(pre-signed {n_register} REGISTER in {:?})",
        sign_start.elapsed()
    );
    let registered = |b: &[u8]| b.first() == Some(&wire::kind::REGISTERED);
    let (reg_rate, _) = load(
        rdv,
        &socks,
        phase.min(Duration::from_secs(2)),
        |_| registers.pop().unwrap_or_default(),
        registered,
    );
    println!(
        "signed registrations:               {reg_rate:>10.0} /s   ({:.0} % of echo)",
        100.0 * reg_rate / echo_rate
    );

    // One node per socket, registered from that socket; keep their tokens.
    let mut buf = [0u8; 2048];
    let tokens: Vec<[u8; 16]> = socks
        .iter()
        .zip(&ids)
        .map(|(s, id)| {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            // A transaction id no reply of the registration phase can carry.
            let tx = u64::MAX - 1;
            let mut ts = unix_ms();
            loop {
                ts += 1;
                s.send_to(
                    &Message::Register(Register::signed(id, tx, ts, rdv)).to_vec(),
                    rdv,
                )
                .unwrap();
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    if let Ok(Message::Registered(r)) = Message::parse(&buf[..n]) {
                        if r.tx == tx {
                            s.set_nonblocking(true).unwrap();
                            return r.token;
                        }
                    }
                }
            }
        })
        .collect();

    let refreshes: Vec<Vec<u8>> = ids
        .iter()
        .zip(&tokens)
        .map(|(id, t)| {
            Message::Refresh(Refresh {
                tx: 2,
                node: *id.node_id().as_bytes(),
                token: *t,
            })
            .to_vec()
        })
        .collect();
    let (refresh_rate, _) = load(rdv, &socks, phase, |i| refreshes[i].clone(), registered);
    println!(
        "token refreshes:                    {refresh_rate:>10.0} /s   ({:.0} % of echo)",
        100.0 * refresh_rate / echo_rate
    );

    let intros: Vec<Vec<u8>> = (0..SOCKETS)
        .map(|i| {
            let target = &ids[(i + 1) % SOCKETS];
            Message::Introduce(Introduce {
                tx: 3,
                node: *ids[i].node_id().as_bytes(),
                token: tokens[i],
                target: *target.node_id().as_bytes(),
                payload: &payload,
            })
            .to_vec()
        })
        .collect();
    assert_eq!(intros[0].len(), intro_len);
    let (intro_rate, fwd_rate) = load(
        rdv,
        &socks,
        phase,
        |i| intros[i].clone(),
        |b| b.first() == Some(&wire::kind::INTRO_ACK),
    );
    println!(
        "introductions (ack + forward each): {intro_rate:>10.0} /s   ({:.0} % of echo; {fwd_rate:.0} forwards/s seen)",
        100.0 * intro_rate / echo_rate
    );

    // Memory per registered node: the table is the only per-node state. The worst point is just
    // after the hash table doubles, so track the maximum over every size from 1000 nodes up.
    let before = LIVE.load(Ordering::Relaxed);
    let mut table = NodeTable::new(memory_nodes);
    let mut worst = (0.0f64, 0usize);
    for i in 0..memory_nodes as u64 {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        key[8..16].copy_from_slice(&i.wrapping_mul(0x9E3779B97F4A7C15).to_le_bytes());
        let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40000));
        table.register(key, addr, 1, 0, 0, 120, true).unwrap();
        if table.len() >= 1000 {
            let per = (LIVE.load(Ordering::Relaxed) - before) as f64 / table.len() as f64;
            if per > worst.0 {
                worst = (per, table.len());
            }
        }
    }
    let bytes = (LIVE.load(Ordering::Relaxed) - before) as f64;
    println!(
        "memory: {} nodes hold {:.1} MB of table = {:.0} bytes per node; worst from 1000 up: {:.0} bytes per node at {} nodes",
        table.len(),
        bytes / 1e6,
        bytes / table.len() as f64,
        worst.0,
        worst.1,
    );
}
