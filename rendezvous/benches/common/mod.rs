//! What the rendezvous benches share: a counting allocator, a closed-loop load generator over
//! loopback sockets, the server on its own thread, and bare baselines (an echo server, a
//! forwarder) made of the driver's own socket, receive loop and batched sends.

// Each bench binary uses its own part of this module.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use shipworm_rendezvous::config::Config;
use shipworm_rendezvous::driver::Rendezvous;
use shipworm_rendezvous::table::RateLimit;
use shipworm_rendezvous::wire::{Message, Refresh, Register};
use shipworm_tunnel::Identity;

/// Counts live heap bytes.
pub struct Counting;

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

/// Live heap bytes now.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Client sockets (each a distinct source address, as distinct nodes would be).
pub const SOCKETS: usize = 128;
/// Requests in flight per socket.
pub const WINDOW: usize = 8;

/// Runs a closed-loop load: every reply of interest on a socket triggers the next request from
/// that socket. Returns (replies counted per second, other datagrams per second).
pub fn load(
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

/// [`SOCKETS`] non-blocking client sockets on loopback.
pub fn client_sockets() -> Vec<UdpSocket> {
    (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// A bare UDP echo server, the ceiling of the throughput bench: [`spawn_bare`] sending every
/// datagram back to its sender.
pub fn spawn_echo() -> SocketAddr {
    spawn_bare(Some)
}

/// A bare UDP forwarder, the baseline of the relay bench: [`spawn_bare`] sending a datagram from
/// `pairs[k].0` to `pairs[k].1` and back (a fixed table looked up by source address).
pub fn spawn_forwarder(pairs: Vec<(SocketAddr, SocketAddr)>) -> SocketAddr {
    let mut table = std::collections::HashMap::new();
    for (a, b) in pairs {
        table.insert(a, b);
        table.insert(b, a);
    }
    spawn_bare(move |from| table.get(&from).copied())
}

/// A bare UDP server with the rendezvous driver's socket and loop minus the server, on a
/// current-thread runtime of its own thread: the same socket setup (`udp::bind_udp_with_buffer`
/// with the server's receive buffer), the same receives (`udp::RecvBatch`: `recvmmsg` batches of
/// `udp::RECV_BATCH` through quinn-udp, up to `driver::RECV_ROUNDS` a wake-up) and the same sends
/// (`udp::SendBatch`: every datagram a batch produced in `sendmmsg` calls, each from the local
/// address its request arrived at, as the driver answers). Each datagram goes on unchanged to
/// `route(its source)`, if that names anyone; nothing else is done.
pub fn spawn_bare(route: impl Fn(SocketAddr) -> Option<SocketAddr> + Send + 'static) -> SocketAddr {
    use shipworm_rendezvous::driver::RECV_ROUNDS;
    use shipworm_rendezvous::udp::{self, RecvBatch, SendBatch};

    let bound = udp::bind_udp_with_buffer(server_bind(), udp::SERVER_RECV_BUFFER).unwrap();
    let addr = bound.socket.local_addr().unwrap();
    on_own_runtime("bare-udp", async move {
        let state = quinn_udp::UdpSocketState::new((&bound.socket).into()).unwrap();
        let sock = tokio::net::UdpSocket::from_std(bound.socket).unwrap();
        let mut batch = RecvBatch::new(&state);
        let mut out = SendBatch::new();
        loop {
            sock.readable().await.unwrap();
            for _ in 0..RECV_ROUNDS {
                if batch.try_recv(&sock, &state).is_err() {
                    break;
                }
                for (m, datagram) in batch.datagrams() {
                    let Some(dest) = route(m.addr) else {
                        continue;
                    };
                    if !out.has_room(1, datagram.len()) {
                        out.flush(&sock, &state).await;
                    }
                    let src = m
                        .dst_ip
                        .and_then(|ip| udp::reply_source_on(addr, ip, dest, false));
                    out.push(datagram, dest, src);
                }
                out.flush(&sock, &state).await;
            }
        }
    });
    reachable(addr)
}

/// The server's configuration for a ceiling measurement on loopback: every client is on
/// 127.0.0.1, one source prefix, which the defaults would hold to a few registrations and
/// signature checks a second, so those limits are lifted.
pub fn unlimited_config() -> Config {
    let unlimited = RateLimit {
        per_second: 1000,
        burst: u32::MAX,
    };
    Config {
        listen: server_bind(),
        alt_listen: None,
        sender_intro_rate: unlimited,
        pair_intro_rate: unlimited,
        target_intro_rate: unlimited,
        register_prefix_rate: unlimited,
        max_registrations_per_prefix: u16::MAX,
        register_load_threshold: u32::MAX,
        ..Config::default()
    }
}

/// The address the servers under test (the rendezvous and the bare echo or forwarder) bind:
/// 127.0.0.1, or `SHIPWORM_BENCH_BIND` (`0.0.0.0` measures a wildcard socket, which names the
/// source address of every datagram it sends, as the default `[::]` does).
pub fn server_bind() -> SocketAddr {
    let ip = std::env::var("SHIPWORM_BENCH_BIND").unwrap_or_else(|_| "127.0.0.1".into());
    SocketAddr::new(
        ip.parse().expect("SHIPWORM_BENCH_BIND is an IPv4 address"),
        0,
    )
}

/// Where the clients send to reach a server bound at `bound`: its loopback address when it is
/// bound to a wildcard.
fn reachable(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    }
}

/// The rendezvous driver (`driver::Rendezvous`) on a current-thread runtime of its own thread,
/// as in production; returns its address.
pub fn spawn_rendezvous(config: Config) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    on_own_runtime("rendezvous", async move {
        let rdv = Rendezvous::bind(config).await.unwrap();
        tx.send(reachable(rdv.local_addr())).unwrap();
        std::future::pending::<()>().await;
    });
    rx.recv().unwrap()
}

/// Runs `task` on a current-thread runtime of its own thread named `name` (so a profile tells
/// it from the load generator's `main`), as the driver runs in production.
fn on_own_runtime(name: &str, task: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(task)
        })
        .unwrap();
}

pub fn unix_ms() -> u64 {
    shipworm_rendezvous::driver::unix_ms()
}

/// The `i`-th of a bench's identities (distinct for every `i` below 16 million and `salt`).
pub fn identity(i: usize, salt: u8) -> Identity {
    let mut seed = [salt; 32];
    seed[0] = (i % 251) as u8 + 1;
    seed[1] = (i / 251) as u8;
    seed[2] = salt ^ (i / (251 * 256)) as u8;
    Identity::from_seed(&seed)
}

/// Registers `id` from `socket` at the driver at `rdv` (a signed REGISTER, resent until
/// answered) and returns its token; leaves the socket non-blocking.
pub fn register_from(socket: &UdpSocket, id: &Identity, rdv: SocketAddr) -> [u8; 16] {
    let mut buf = [0u8; 2048];
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A transaction id no reply of a load phase carries.
    let tx = u64::MAX - 1;
    let mut ts = unix_ms();
    loop {
        ts += 1;
        socket
            .send_to(
                &Message::Register(Register::signed(id, tx, ts, rdv)).to_vec(),
                rdv,
            )
            .unwrap();
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Ok(Message::Registered(r)) = Message::parse(&buf[..n]) {
                if r.tx == tx {
                    socket.set_nonblocking(true).unwrap();
                    return r.token;
                }
            }
        }
    }
}

/// Confirms `id`'s registration from `socket` with one REFRESH (as a node does after its first
/// REGISTERED: only confirmed nodes are sent introductions or relayed packets).
pub fn confirm_from(socket: &UdpSocket, id: &Identity, token: [u8; 16], rdv: SocketAddr) {
    let mut buf = [0u8; 2048];
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = u64::MAX - 2;
    let refresh = Message::Refresh(Refresh {
        tx,
        node: *id.node_id().as_bytes(),
        token,
    })
    .to_vec();
    loop {
        socket.send_to(&refresh, rdv).unwrap();
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Ok(Message::Registered(r)) = Message::parse(&buf[..n]) {
                if r.tx == tx {
                    socket.set_nonblocking(true).unwrap();
                    return;
                }
            }
        }
    }
}
