//! Rendezvous throughput over loopback next to a bare tokio UDP echo server measured in the same
//! run, and memory per registered node. Run on demand:
//!
//! ```sh
//! cargo bench -p shipworm-rendezvous --bench throughput            # full run
//! cargo bench -p shipworm-rendezvous --bench throughput -- --quick # shorter phases
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
    let ids: Vec<Identity> = (0..SOCKETS).map(|i| identity(i, 9)).collect();
    let payload = vec![0x5au8; 96];
    let intro_len = Introduce::FIXED_LEN + payload.len();

    let echo = spawn_echo();
    let socks = client_sockets();
    let echo_pkt = vec![0xEEu8; intro_len];
    let (echo_rate, _) = load(echo, &socks, phase, |_| echo_pkt.clone(), |_| true);
    println!("echo ceiling ({intro_len}-byte datagrams): {echo_rate:>10.0} replies/s");

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
        phase.min(Duration::from_secs(2)),
        |_| registers.pop().unwrap_or_default(),
        registered,
    );
    println!(
        "signed registrations:               {reg_rate:>10.0} /s   ({:.0} % of echo)",
        100.0 * reg_rate / echo_rate
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
