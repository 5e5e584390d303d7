//! Rendezvous throughput over loopback next to a bare UDP echo server with the driver's own socket,
//! receive loop and batched sends (`common::spawn_echo`), measured in the same run, in rounds;
//! and memory per registered node. Run on demand:
//!
//! ```sh
//! cargo bench -p shipworm-rendezvous --bench throughput            # full run
//! cargo bench -p shipworm-rendezvous --bench throughput -- --quick # shorter phases
//! cargo bench -p shipworm-rendezvous --bench throughput -- --quick --only introductions # 10 s
//! SHIPWORM_BENCH_BIND=0.0.0.0 cargo bench -p shipworm-rendezvous --bench throughput # wildcard
//! ```
//!
//! Results are written up in `docs/performance.md`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    client_sockets, identity, live_bytes, load, register_from, spawn_echo, spawn_rendezvous,
    unix_ms, unlimited_config, SOCKETS, WINDOW,
};
use shipworm_rendezvous::table::NodeTable;
use shipworm_rendezvous::wire::{self, Introduce, Message, Refresh, Register};
use shipworm_tunnel::Identity;

/// CPU time this process has used, in seconds (user and system, all threads; Linux), or 0.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    // USER_HZ is 100 on every Linux architecture the bench runs on.
    ticks / 100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Short phases in many rounds: the two cores are shared, and what other work leaves us
    // drifts over seconds, so each rate is compared with the echo of its own round.
    let (phase, rounds) = if quick {
        (Duration::from_millis(500), 4)
    } else {
        (Duration::from_secs(1), 15)
    };
    let n_register = if quick { 30_000 } else { 100_000 };
    let memory_nodes = if quick { 100_000 } else { 1_000_000 };
    println!("shipworm rendezvous throughput: {SOCKETS} client sockets x {WINDOW} in flight, {rounds} rounds of {phase:?} per phase, loopback");

    // Requests of the size of an introduction, so the echo ceiling moves the same bytes.
    let ids: Vec<Identity> = (0..SOCKETS).map(|i| identity(i, 9)).collect();
    let payload = vec![0x5au8; 96];
    let intro_len = Introduce::FIXED_LEN + payload.len();

    let echo = spawn_echo();
    let echo_socks = client_sockets();
    let echo_pkt = vec![0xEEu8; intro_len];
    let echo_load = || load(echo, &echo_socks, phase, |_| echo_pkt.clone(), |_| true).0;
    let first_echo = echo_load();

    let rdv = spawn_rendezvous(unlimited_config());
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
        Duration::from_secs(2),
        |_| registers.pop().unwrap_or_default(),
        registered,
    );
    let echo_after = echo_load();
    println!(
        "signed registrations: {reg_rate:.0} /s ({:.0} % of the echo just before and after, {first_echo:.0} and {echo_after:.0} replies/s)",
        200.0 * reg_rate / (first_echo + echo_after)
    );

    // One node per socket, registered from that socket; keep their tokens.
    let tokens: Vec<[u8; 16]> = socks
        .iter()
        .zip(&ids)
        .map(|(s, id)| register_from(s, id, rdv))
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

    let intro_load = |d| {
        load(
            rdv,
            &socks,
            d,
            |i| intros[i].clone(),
            |b| b.first() == Some(&wire::kind::INTRO_ACK),
        )
    };

    // `--only echo|refreshes|introductions`: that phase alone for ten seconds, then exit; for a
    // profiler or a syscall count attached to the process meanwhile.
    if let Some(only) = std::env::args().skip_while(|a| a != "--only").nth(1) {
        let ten = Duration::from_secs(10);
        let (rate, _) = match only.as_str() {
            "echo" => load(echo, &echo_socks, ten, |_| echo_pkt.clone(), |_| true),
            "refreshes" => load(rdv, &socks, ten, |i| refreshes[i].clone(), registered),
            _ => intro_load(ten),
        };
        println!("{only} alone: {rate:.0} /s");
        return;
    }

    // Rounds of echo, refreshes and introductions, the order turning from round to round. Each
    // line also says how much CPU the process got (generator and server threads together; two
    // cores would be 200 %): a phase that got less than the others of its round was squeezed by
    // other work, and its ratio means little.
    println!("echo: {intro_len}-byte datagrams; ratios against the echo of the same round");
    let (mut refresh_ratios, mut intro_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut rates = [(0.0, 0.0, 0.0); 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            let (cpu, wall) = (cpu_seconds(), Instant::now());
            let (rate, fwd) = match which {
                0 => (echo_load(), 0.0),
                1 => load(rdv, &socks, phase, |i| refreshes[i].clone(), registered),
                _ => intro_load(phase),
            };
            // Over the phase and the drain that follows it (`load` waits 100 ms for what is in
            // flight, the threads mostly idle).
            let share = (cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
            rates[which] = (rate, fwd, share);
        }
        let [(echo, _, echo_cpu), (refresh, _, refresh_cpu), (intro, fwd, intro_cpu)] = rates;
        refresh_ratios.push(refresh / echo);
        intro_ratios.push(intro / echo);
        println!(
            "round {round:>2}: echo {echo:>6.0}/s (cpu {:>3.0} %) | refreshes {refresh:>6.0}/s (cpu {:>3.0} %) = {:>3.0} % \
             | introductions {intro:>6.0}/s (cpu {:>3.0} %) = {:>3.0} %, {fwd:.0} forwards/s",
            100.0 * echo_cpu,
            100.0 * refresh_cpu,
            100.0 * refresh / echo,
            100.0 * intro_cpu,
            100.0 * intro / echo,
        );
    }
    println!(
        "median of {rounds} rounds, against the echo: token refreshes {:.0} %, introductions (ack + forward each) {:.0} %",
        100.0 * median(&mut refresh_ratios),
        100.0 * median(&mut intro_ratios),
    );

    // Memory per registered node: the table is the only per-node state. The worst point is just
    // after the hash table doubles, so track the maximum over every size from 1000 nodes up.
    let before = live_bytes();
    let mut table = NodeTable::new(memory_nodes);
    let mut worst = (0.0f64, 0usize);
    for i in 0..memory_nodes as u64 {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        key[8..16].copy_from_slice(&i.wrapping_mul(0x9E3779B97F4A7C15).to_le_bytes());
        let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40000));
        table.register(key, addr, 1, 0, 0, 120, true).unwrap();
        if table.len() >= 1000 {
            let per = (live_bytes() - before) as f64 / table.len() as f64;
            if per > worst.0 {
                worst = (per, table.len());
            }
        }
    }
    let bytes = (live_bytes() - before) as f64;
    println!(
        "memory: {} nodes hold {:.1} MB of table = {:.0} bytes per node; worst from 1000 up: {:.0} bytes per node at {} nodes",
        table.len(),
        bytes / 1e6,
        bytes / table.len() as f64,
        worst.0,
        worst.1,
    );
}
