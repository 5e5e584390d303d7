//! Publishing and resolving a record through a local Mainline DHT testnet: times (p50, p99) and
//! the bytes one publication and one resolve put on the wire. Written up in
//! `docs/performance.md` §"Discovery".
//!
//! ```sh
//! cargo bench -p shipworm --bench discovery            # needs root: bytes are counted by nftables
//! ```
//!
//! The bench moves itself into a network namespace of its own (nothing else's traffic is
//! counted, and nothing leaves the machine), runs a seeded testnet of `NODES` DHT server nodes on
//! loopback, publishes `N` records from `N` identities through one client and resolves each once
//! (cold: never from a cache) through another. nftables counters on the two clients' ports count
//! every IPv4 packet (IP and UDP headers included) each sends and receives.
//!
//! This is a LAN-speed DHT: no latency, no lost or slow nodes, 20 nodes instead of millions. The
//! public DHT's figures are another matter (see the docs).

use std::process::Command;
use std::time::Instant;

use shipworm::discovery::{Dht, DhtOptions, Record};
use shipworm::Identity;

const NODES: usize = 20;
const N: usize = 100;
const PUBLISHER_PORT: u16 = 41001;
const RESOLVER_PORT: u16 = 41002;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bytes counted by the rule commented `name`.
fn counted(name: &str) -> u64 {
    let out = sh(&["nft", "-a", "list", "table", "inet", "dzbench"]);
    out.lines()
        .find(|l| l.contains(&format!("comment \"{name}\"")))
        .and_then(|l| l.split("bytes ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in:\n{out}"))
}

fn main() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("SKIPPED: the discovery bench counts bytes with nftables in its own network namespace: run it as root");
        return;
    }
    // A network namespace of our own, before any thread exists (unshare moves this thread only).
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    sh(&["ip", "link", "set", "lo", "up"]);
    let mut rules =
        String::from("table inet dzbench {\n chain out {\n  type filter hook output priority 0;\n");
    for (name, port) in [("publisher", PUBLISHER_PORT), ("resolver", RESOLVER_PORT)] {
        rules += &format!("  udp sport {port} counter comment \"{name}-out\"\n");
        rules += &format!("  udp dport {port} counter comment \"{name}-in\"\n");
    }
    rules += " }\n}\n";
    std::fs::write("/tmp/dzbench.nft", &rules).unwrap();
    sh(&["nft", "-f", "/tmp/dzbench.nft"]);

    let net = mainline::Testnet::builder(NODES).build().unwrap();
    let bootstrap: Vec<_> = net.bootstrap.iter().map(|b| b.parse().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = |port| DhtOptions {
            bootstrap: Some(bootstrap.clone()),
            publish: false,
            port: Some(port),
        };
        let publisher = Dht::start(&options(PUBLISHER_PORT)).unwrap();
        let resolver = Dht::start(&options(RESOLVER_PORT)).unwrap();
        let record = Record {
            rendezvous: vec![
                "rdv.example.net:3478".parse().unwrap(),
                "[2001:db8::1]:3478".parse().unwrap(),
            ],
        };
        let ids: Vec<Identity> = (0..N).map(|_| Identity::generate()).collect();
        // One warm-up each way: the clients' routing tables fill from the bootstrap nodes.
        let warm = Identity::generate();
        publisher.publish(&warm, &record).await.unwrap();
        resolver.resolve(warm.node_id()).await.unwrap();

        let before = counted("publisher-out") + counted("publisher-in");
        let mut publish_ms = Vec::new();
        for id in &ids {
            let t = Instant::now();
            publisher.publish(id, &record).await.unwrap();
            publish_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let publish_bytes = counted("publisher-out") + counted("publisher-in") - before;

        let before = counted("resolver-out") + counted("resolver-in");
        let mut resolve_ms = Vec::new();
        for id in &ids {
            let t = Instant::now();
            let got = resolver.resolve(id.node_id()).await.unwrap();
            resolve_ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(got, record);
        }
        let resolve_bytes = counted("resolver-out") + counted("resolver-in") - before;
        // A cached resolve, for comparison: no traffic at all.
        let cached_before = counted("resolver-out");
        let t = Instant::now();
        resolver.resolve(ids[0].node_id()).await.unwrap();
        let cached_us = t.elapsed().as_secs_f64() * 1e6;
        assert_eq!(
            counted("resolver-out"),
            cached_before,
            "a cached resolve sent packets"
        );

        println!("local Mainline DHT testnet: {NODES} nodes on loopback, {N} records");
        println!(
            "publish: p50 {:.1} ms, p99 {:.1} ms; {} bytes on the wire per publication",
            percentile(&mut publish_ms, 0.5),
            percentile(&mut publish_ms, 0.99),
            publish_bytes / N as u64
        );
        println!(
            "resolve (cold): p50 {:.1} ms, p99 {:.1} ms; {} bytes on the wire per resolve",
            percentile(&mut resolve_ms, 0.5),
            percentile(&mut resolve_ms, 0.99),
            resolve_bytes / N as u64
        );
        println!("resolve (cached): {cached_us:.1} µs, no packets");
    });
}
