//! The NAT lab matrix on the real kernel: every ordered pair of router kinds (public, full cone,
//! address-restricted, home, home + UPnP, carrier-grade double NAT, symmetric with random and
//! with sequential ports), the real `shipworm` binary (`listen` on B, `connect` on A) through the
//! real rendezvous. Wherever theory allows a direct path, data crosses intact both ways, and a
//! site with a UPnP router is reached through its port mapping where nothing else would work;
//! where no direct path is possible, `connect` says why within 10 s and exits 3.
//!
//! `SHIPWORM_LAB_WRITE=1 cargo test -p shipworm --test lab_matrix -- --nocapture` (as root)
//! also rewrites the results table in `docs/lab.md`. `SHIPWORM_LAB_PAIRS="home/symmetric,..."`
//! runs only the named ordered pairs, for debugging (refused in CI, where every pair runs).

use std::path::Path;
use std::time::{Duration, Instant};

use shipworm_tests::lab::{can_run, direct_possible, Lab, RouterKind, NODE_PORT};

struct Row {
    a: RouterKind,
    b: RouterKind,
    expected: bool,
    outcome: String,
    path: String,
    connect_ms: String,
    ok: bool,
}

/// What a row must show beyond intact data: the UPnP side's port mapping carried the
/// connection, which nothing else could have: the other side maps per destination at random, so
/// only a mapping lets its probes in (a peer with a mapping gets no birthday sockets). Against a
/// sequential NAT the port prediction may win the race instead (the easy side probes the ports
/// just above the peer's observed one at once), so there the mapping is made but not required.
fn needs_mapping(a: RouterKind, b: RouterKind) -> bool {
    let random = |k| k == RouterKind::Symmetric;
    (a == RouterKind::HomeUpnp && random(b)) || (b == RouterKind::HomeUpnp && random(a))
}

fn make_file(path: &Path, len: usize, seed: u8) -> blake3::Hash {
    let mut out = vec![0u8; len];
    blake3::Hasher::new_derive_key("shipworm lab")
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    std::fs::write(path, &out).unwrap();
    blake3::hash(&out)
}

fn run_pair(a: RouterKind, b: RouterKind, i: usize) -> Row {
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), &format!("m{i}"));
    let m = lab.matrix("5.5", [a, b]);
    let (to_b, to_a) = (lab.dir.join("to_b.bin"), lab.dir.join("to_a.bin"));
    let (hash_to_b, hash_to_a) = (make_file(&to_b, 1 << 20, 1), make_file(&to_a, 1 << 20, 2));
    let (a_key, b_key) = (lab.dir.join("a.key"), lab.dir.join("b.key"));
    let bind = format!("0.0.0.0:{NODE_PORT}");
    let common = |key: &Path| -> Vec<String> {
        vec![
            "--identity".into(),
            key.to_string_lossy().into_owned(),
            "--rendezvous".into(),
            m.rendezvous.clone(),
            "--bind".into(),
            bind.clone(),
        ]
    };
    let mut listen_args = common(&b_key);
    listen_args.push("listen".into());
    let listen_args: Vec<&str> = listen_args.iter().map(String::as_str).collect();
    let (out_b, out_a) = (lab.dir.join("b.out"), lab.dir.join("a.out"));
    let listener = lab.run_cli(&m.hosts[1], "b", &listen_args, Some(&to_a), Some(&out_b));
    let ticket = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(t) = lab.log("b").lines().find(|l| l.starts_with("sw1")) {
                break t.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{} x {}: no ticket from listen:\n{}",
                a.name(),
                b.name(),
                lab.log("b")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut connect_args = common(&a_key);
    connect_args.extend(["connect".to_string(), ticket]);
    let connect_args: Vec<&str> = connect_args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let connector = lab.run_cli(&m.hosts[0], "a", &connect_args, Some(&to_b), Some(&out_a));
    let expected = direct_possible(a, b);
    let status = lab.wait_child(connector, Duration::from_secs(40));
    let took = started.elapsed();
    let log = lab.log("a");
    let connected_line = log
        .lines()
        .find(|l| l.starts_with("connected: "))
        .unwrap_or("")
        .to_string();
    let (connect_ms, path) = match connected_line.split_once(" in ") {
        Some((_, rest)) => {
            let ms = rest.split(" ms").next().unwrap_or("?").to_string();
            let path = rest
                .split_once('(')
                .map_or(String::new(), |(_, p)| p.trim_end_matches(')').to_string());
            (ms, path)
        }
        None => ("-".into(), "-".into()),
    };
    let (outcome, ok) = match (expected, status) {
        (true, Some(s)) if s.success() => {
            let l = lab.wait_child(listener, Duration::from_secs(15));
            let intact = blake3::hash(&std::fs::read(&out_b).unwrap()) == hash_to_b
                && blake3::hash(&std::fs::read(&out_a).unwrap()) == hash_to_a;
            let direct = connected_line.contains("(direct ");
            // Every UPnP side made its mapping; where it was needed, flows came in through it.
            let mut mapping = String::new();
            let mut mapped_ok = true;
            for (side, kind, log) in [(0, a, &log), (1, b, &lab.log("b"))] {
                if kind == RouterKind::HomeUpnp {
                    let made = log.contains("port mapping: ");
                    let used = lab.mapped_packets(&m.routers[side]);
                    mapped_ok &= made && (used > 0 || !needs_mapping(a, b));
                    mapping = if made {
                        format!(", {used} packets through the port mapping")
                    } else {
                        ", NO PORT MAPPING".to_string()
                    };
                }
            }
            let good = intact && direct && mapped_ok && l.is_some_and(|s| s.success());
            (
                if good {
                    format!("direct, data intact{mapping}")
                } else {
                    format!("BROKEN (intact {intact}, direct {direct}, listener {l:?}{mapping})")
                },
                good,
            )
        }
        (false, Some(s)) if s.code() == Some(3) && log.contains("no direct path possible") => (
            format!("clear error in {:.1} s", took.as_secs_f64()),
            took <= Duration::from_secs(10),
        ),
        (_, s) => (format!("UNEXPECTED: exit {s:?}"), false),
    };
    if !ok {
        eprintln!(
            "---- {} x {}: {outcome}\nA:\n{log}\nB:\n{}",
            a.name(),
            b.name(),
            lab.log("b")
        );
    }
    Row {
        a,
        b,
        expected,
        outcome,
        path,
        connect_ms,
        ok,
    }
}

#[test]
fn every_ordered_pair_of_router_kinds_connects_directly_where_theory_allows_and_says_why_where_not()
{
    if !can_run() {
        return;
    }
    let only = std::env::var("SHIPWORM_LAB_PAIRS").ok();
    assert!(
        only.is_none() || std::env::var_os("CI").is_none(),
        "SHIPWORM_LAB_PAIRS is for debugging: CI runs every pair"
    );
    let wanted = |a: RouterKind, b: RouterKind| {
        only.as_deref().is_none_or(|o| {
            o.split(',')
                .any(|p| p.trim() == format!("{}/{}", a.name(), b.name()))
        })
    };
    let mut rows = Vec::new();
    let mut i = 0;
    for a in RouterKind::ALL {
        for b in RouterKind::ALL {
            i += 1;
            if wanted(a, b) {
                rows.push(run_pair(a, b, i));
            }
        }
    }
    assert!(
        !rows.is_empty(),
        "SHIPWORM_LAB_PAIRS named no pair: {only:?}"
    );
    let mut table = String::from("| A | B | theory | outcome | path chosen by A | connect (ms) |\n|---|---|---|---|---|---:|\n");
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.a.name(),
            r.b.name(),
            if r.expected { "direct" } else { "impossible" },
            r.outcome,
            r.path,
            r.connect_ms
        ));
    }
    println!("{table}");
    if std::env::var_os("SHIPWORM_LAB_WRITE").is_some() && only.is_none() {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/lab.md");
        let text = std::fs::read_to_string(&doc).unwrap();
        let (start, end) = ("<!-- lab-matrix:begin -->", "<!-- lab-matrix:end -->");
        let (a, b) = (
            text.find(start).unwrap() + start.len(),
            text.find(end).unwrap(),
        );
        let stamp = format!("\nLast run: {} (`SHIPWORM_LAB_WRITE=1 cargo test -p shipworm --test lab_matrix -- --nocapture`, as root)\n\n", chrono_free_date());
        std::fs::write(
            &doc,
            format!("{}{stamp}{table}\n{}", &text[..a], &text[b..]),
        )
        .unwrap();
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} x {}: {}", r.a.name(), r.b.name(), r.outcome))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Today's date from the system clock, without a date library.
fn chrono_free_date() -> String {
    let out = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
