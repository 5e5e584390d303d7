//! The relay role (`--relay`) next to its baselines, measured in the same run. Run on demand:
//!
//! ```sh
//! cargo bench -p shipworm-rendezvous --bench relay            # full run
//! cargo bench -p shipworm-rendezvous --bench relay -- --quick # shorter phases, fewer sessions
//! ```
//!
//! 1. Forwarding over loopback: the rendezvous driver (`driver::Rendezvous`, current-thread
//!    runtime, one thread, as in production) relaying 1200-byte tunnel packets between 64 pairs
//!    of registered fake nodes, next to a bare tokio UDP forwarder with the same receive loop that
//!    sends each datagram to the fixed partner of its source. Rounds alternate; medians compared.
//! 2. The sans-IO cost of one RELAY in `Server::handle_packet` (and its drained forward), next to
//!    a REFRESH and to copying the forwarded bytes once.
//! 3. Memory per relay session: sessions opened one by one through `Server` (the relay role on),
//!    heap measured by a counting allocator.
//!
//! Results are written up in `docs/performance.md`.

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    client_sockets, confirm_from, identity, live_bytes, load, register_from, spawn_forwarder,
    spawn_rendezvous, unlimited_config, SOCKETS, WINDOW,
};
use shipworm_rendezvous::server::{RelayConfig, Server, ServerConfig, Socket};
use shipworm_rendezvous::wire::{self, Message, Refresh, Register, Relay};
use shipworm_tunnel::Identity;

/// The tunnel packet carried: a full transport frame of a 1280-byte inner packet is about this.
const PACKET: usize = 1200;
/// Wall clock handed to the sans-IO server.
const T0_UNIX_MS: u64 = 1_800_000_000_000;

/// Byte rates no benchmark reaches: the ceiling is measured, not the operator's limit.
fn unlimited_relay() -> RelayConfig {
    RelayConfig {
        node_bytes_per_second: 1 << 40,
        node_burst_bytes: 1 << 40,
        ..RelayConfig::default()
    }
}

fn relay_msg(from: &Identity, token: [u8; 16], to: &Identity, packet: &[u8]) -> Vec<u8> {
    Message::Relay(Relay {
        tx: 0,
        node: *from.node_id().as_bytes(),
        token,
        target: *to.node_id().as_bytes(),
        packet,
    })
    .to_vec()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn mbit(rate: f64, bytes: usize) -> f64 {
    rate * bytes as f64 * 8.0 / 1e6
}

/// Part 1: the driver relaying between 64 pairs over loopback, next to the bare forwarder.
fn forwarding(phase: Duration, rounds: usize) {
    let tunnel_packet = {
        let mut p = vec![0x5au8; PACKET];
        p[0] = 0xD4; // a transport frame's type byte; the relay reads none of it
        p
    };
    let relay_len = Relay::FIXED_LEN + PACKET;
    let relayed_len = wire::Relayed::FIXED_LEN + PACKET;

    // The bare forwarder: socket 2k <-> socket 2k+1, the RELAY's size in and out.
    let fwd_socks = client_sockets();
    let pairs = (0..SOCKETS / 2)
        .map(|k| {
            (
                fwd_socks[2 * k].local_addr().unwrap(),
                fwd_socks[2 * k + 1].local_addr().unwrap(),
            )
        })
        .collect();
    let forwarder = spawn_forwarder(pairs);
    let bare = vec![0xD4u8; relay_len];

    // The relay: node 2k <-> node 2k+1, each registered and confirmed from its own socket.
    let config = shipworm_rendezvous::config::Config {
        relay: true,
        relay_node_bytes_per_second: 1 << 40,
        relay_node_burst_bytes: 1 << 40,
        // Every fake node is on 127.0.0.1, one source prefix, whose default share (16
        // sessions) would refuse most of the 64 pairs.
        relay_max_sessions_per_prefix: u16::MAX,
        ..unlimited_config()
    };
    let rdv = spawn_rendezvous(config);
    let socks = client_sockets();
    let ids: Vec<Identity> = (0..SOCKETS).map(|i| identity(i, 11)).collect();
    let tokens: Vec<[u8; 16]> = socks
        .iter()
        .zip(&ids)
        .map(|(s, id)| {
            let t = register_from(s, id, rdv);
            confirm_from(s, id, t, rdv);
            t
        })
        .collect();
    let relays: Vec<Vec<u8>> = (0..SOCKETS)
        .map(|i| relay_msg(&ids[i], tokens[i], &ids[i ^ 1], &tunnel_packet))
        .collect();
    assert_eq!(relays[0].len(), relay_len);

    println!(
        "\n1. forwarding on loopback: {} pairs, {WINDOW} datagrams in flight per socket, {phase:?} per phase; \
         tunnel packets of {PACKET} bytes (RELAY {relay_len} B in, RELAYED {relayed_len} B out; the bare \
         forwarder gets {relay_len}-byte datagrams and sends them on unchanged)",
        SOCKETS / 2
    );
    let (mut bare_rates, mut relay_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (b, _) = load(
            forwarder,
            &fwd_socks,
            phase,
            |_| bare.clone(),
            |d| d.len() == relay_len,
        );
        let (r, other) = load(
            rdv,
            &socks,
            phase,
            |i| relays[i].clone(),
            |d| d.first() == Some(&wire::kind::RELAYED) && d.len() == relayed_len,
        );
        println!(
            "round {round}: bare forwarder {b:>8.0} pkt/s ({:>5.0} Mbit/s) | relay {r:>8.0} pkt/s ({:>5.0} Mbit/s of tunnel packets) = {:>3.0} %{}",
            mbit(b, relay_len),
            mbit(r, PACKET),
            100.0 * r / b,
            if other > 0.0 {
                format!(" ({other:.0}/s other datagrams: refusals?)")
            } else {
                String::new()
            }
        );
        bare_rates.push(b);
        relay_rates.push(r);
        ratios.push(r / b);
    }
    let (b, r) = (median(&mut bare_rates), median(&mut relay_rates));
    println!(
        "median: bare forwarder {b:.0} pkt/s ({:.0} Mbit/s), relay {r:.0} pkt/s ({:.0} Mbit/s of tunnel packets, {:.0} Mbit/s of RELAYED datagrams); median of the rounds' ratios {:.0} %",
        mbit(b, relay_len),
        mbit(r, PACKET),
        mbit(r, relayed_len),
        100.0 * median(&mut ratios)
    );
}

/// A sans-IO server reached at `addr` with the relay role; `sessions` bounds its sessions.
fn sans_io_server(addr: SocketAddr, sessions: usize) -> (Server, Instant) {
    let start = Instant::now();
    let config = ServerConfig {
        // Fresh nodes arrive faster than a real server's load threshold: no cookies here.
        register_load_threshold: u32::MAX,
        relay: Some(RelayConfig {
            max_sessions: sessions,
            ..unlimited_relay()
        }),
        ..ServerConfig::for_addresses(vec![addr])
    };
    let server = Server::new(config, start, shipworm_tunnel::rng::from_seed(1));
    (server, start)
}

/// Feeds one datagram and drains what it produced; returns the bytes sent.
fn feed(server: &mut Server, now: Instant, from: SocketAddr, bytes: &[u8]) -> usize {
    server.handle_packet(now, T0_UNIX_MS, Socket::Primary, from, bytes);
    let mut sent = 0;
    while let Some(t) = server.poll_transmit() {
        sent += black_box(t.contents).len();
    }
    sent
}

/// Registers and confirms `id` from `from`; returns its token.
fn register(
    server: &mut Server,
    now: Instant,
    me: SocketAddr,
    id: &Identity,
    from: SocketAddr,
) -> [u8; 16] {
    let reg = Message::Register(Register::signed(id, 1, T0_UNIX_MS, me)).to_vec();
    server.handle_packet(now, T0_UNIX_MS, Socket::Primary, from, &reg);
    let token = match server.poll_transmit().map(|t| Message::parse(t.contents)) {
        Some(Ok(Message::Registered(r))) => r.token,
        other => panic!("not registered: {other:?}"),
    };
    let refresh = Message::Refresh(Refresh {
        tx: 2,
        node: *id.node_id().as_bytes(),
        token,
    })
    .to_vec();
    assert!(feed(server, now, from, &refresh) > 0, "not confirmed");
    token
}

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40000))
}

/// Part 2: nanoseconds per RELAY in the sans-IO server, next to a REFRESH and a bare copy.
fn sans_io_cost(iterations: u32, rounds: usize) {
    let me: SocketAddr = "198.51.100.250:3478".parse().unwrap();
    let (mut server, start) = sans_io_server(me, 16);
    let (a, b) = (identity(0, 12), identity(1, 12));
    let (a_at, b_at) = (node_addr(1), node_addr(2));
    let ta = register(&mut server, start, me, &a, a_at);
    let tb = register(&mut server, start, me, &b, b_at);
    let packet = vec![0xD4u8; PACKET];
    let ab = relay_msg(&a, ta, &b, &packet);
    let ba = relay_msg(&b, tb, &a, &packet);
    let refresh = Message::Refresh(Refresh {
        tx: 3,
        node: *a.node_id().as_bytes(),
        token: ta,
    })
    .to_vec();
    let relayed_len = wire::Relayed::FIXED_LEN + PACKET;
    println!(
        "\n2. sans-IO Server::handle_packet + poll_transmit, {iterations} datagrams a measurement, one core"
    );
    let mut best = [f64::MAX; 3];
    let mut copy_buf: Vec<u8> = Vec::with_capacity(2048);
    let src = vec![0xD4u8; relayed_len];
    // The virtual clock moves 1 µs a datagram, across rounds.
    let mut tick = 0u64;
    let mut clock = || {
        tick += 1;
        start + Duration::from_micros(tick)
    };
    for round in 0..rounds {
        // RELAY, both directions alternating.
        let t = Instant::now();
        let mut sent = 0usize;
        for i in 0..iterations {
            let now = clock();
            let (from, msg) = if i % 2 == 0 { (a_at, &ab) } else { (b_at, &ba) };
            sent += feed(&mut server, now, from, msg);
        }
        let relay_ns = t.elapsed().as_nanos() as f64 / iterations as f64;
        assert_eq!(
            sent,
            relayed_len * iterations as usize,
            "every RELAY forwarded"
        );
        // REFRESH: a token check, a table lookup, a 37-byte answer.
        let t = Instant::now();
        for _ in 0..iterations {
            let now = clock();
            feed(&mut server, now, a_at, &refresh);
        }
        let refresh_ns = t.elapsed().as_nanos() as f64 / iterations as f64;
        // The floor of any forwarder that builds its datagram: one copy of the bytes it sends.
        let t = Instant::now();
        for _ in 0..iterations {
            copy_buf.clear();
            copy_buf.extend_from_slice(black_box(&src));
            black_box(&copy_buf);
        }
        let copy_ns = t.elapsed().as_nanos() as f64 / iterations as f64;
        println!(
            "round {round}: RELAY {relay_ns:>6.0} ns | REFRESH {refresh_ns:>6.0} ns | copy of {relayed_len} bytes {copy_ns:>5.0} ns"
        );
        for (b, v) in best.iter_mut().zip([relay_ns, refresh_ns, copy_ns]) {
            *b = b.min(v);
        }
    }
    println!(
        "best: RELAY {:.0} ns ({:.2} M/s, {:.1} Gbit/s of tunnel packets), REFRESH {:.0} ns, copy {:.0} ns",
        best[0],
        1e3 / best[0],
        1e3 / best[0] * PACKET as f64 * 8.0 / 1e3,
        best[1],
        best[2]
    );
}

/// Part 3: heap per relay session, sessions between distinct pairs of nodes (the most node
/// state a session can bring).
fn memory(sessions: usize) {
    let me: SocketAddr = "198.51.100.250:3478".parse().unwrap();
    let (mut server, start) = sans_io_server(me, sessions);
    let signing = Instant::now();
    let ids: Vec<Identity> = (0..2 * sessions).map(|i| identity(i, 13)).collect();
    let tokens: Vec<[u8; 16]> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| register(&mut server, start, me, id, node_addr(i)))
        .collect();
    eprintln!(
        "(registered {} nodes in {:?})",
        ids.len(),
        signing.elapsed()
    );
    println!(
        "\n3. memory per relay session: {sessions} sessions, each between its own two nodes (node i <-> node i+1)"
    );
    let before = live_bytes();
    let mut worst = (0.0f64, 0usize);
    for k in 0..sessions {
        let (a, b) = (2 * k, 2 * k + 1);
        let msg = relay_msg(&ids[a], tokens[a], &ids[b], &[0xD4]);
        let sent = feed(&mut server, start, node_addr(a), &msg);
        drop(msg);
        assert!(sent > 0, "session {k} refused");
        let n = server.relay_sessions();
        if n >= 1000 {
            let per = (live_bytes() - before) as f64 / n as f64;
            if per > worst.0 {
                worst = (per, n);
            }
        }
    }
    assert_eq!(server.relay_sessions(), sessions);
    let bytes = (live_bytes() - before) as f64;
    println!(
        "memory: {sessions} sessions hold {:.2} MB = {:.0} bytes per session; worst from 1000 up: {:.0} bytes per session at {} sessions",
        bytes / 1e6,
        bytes / sessions as f64,
        worst.0,
        worst.1
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (phase, rounds, iterations, sessions) = if quick {
        (Duration::from_secs(1), 3, 200_000, 10_000)
    } else {
        (Duration::from_secs(3), 5, 2_000_000, 100_000)
    };
    println!("shipworm relay benchmark");
    forwarding(phase, rounds);
    sans_io_cost(iterations, rounds);
    memory(sessions);
    // Sizing at the default bound as well.
    if !quick {
        memory(RelayConfig::default().max_sessions);
    }
}
