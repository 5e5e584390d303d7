//! The NAT lab matrix on the real kernel: every ordered pair of router kinds (public, full cone,
//! address-restricted, home, home + UPnP, carrier-grade double NAT, symmetric with random and
//! with sequential ports), the real `shipworm` binary (`listen` on B, `connect` on A) through the
//! real rendezvous. Wherever theory allows a direct path, data crosses intact both ways, and a
//! site with a UPnP router is reached through its port mapping where nothing else would work;
//! where no direct path is possible, `connect` says why within 10 s and exits 3.
//!
//! The same matrix with the rendezvous's relay role on (`shipworm rendezvous --relay`): the pairs
//! no punching can join connect through the relay, data intact, and every other pair still ends
//! on a direct path (a pair whose punching outlasts the relay's one second starts relayed and
//! must move to direct before its transfer ends). By default the rows that are not direct
//! without a relay and a selection of direct ones run ([`relay_row`]);
//! `SHIPWORM_LAB_RELAY_ALL=1` runs all 64.
//!
//! `SHIPWORM_LAB_WRITE=1 cargo test -p shipworm --test lab_matrix -- --nocapture` (as root)
//! also rewrites the results tables in `docs/lab.md`. `SHIPWORM_LAB_PAIRS="home/symmetric,..."`
//! runs only the named ordered pairs, for debugging (refused in CI, where every pair runs);
//! `SHIPWORM_LAB_LOGS=1` prints every row's logs, not only a failed row's.

use std::path::Path;
use std::time::Duration;

use shipworm_tests::lab::{can_run, direct_possible, line, Lab, Pipe, RouterKind, NODE_PORT, V6};

struct Row {
    a: RouterKind,
    b: RouterKind,
    expected: Expect,
    outcome: String,
    path: String,
    connect_ms: String,
    ok: bool,
}

/// What a row must end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A direct path (with a relay, perhaps after starting on it).
    Direct,
    /// A relayed path: no direct one is possible.
    Relayed,
    /// `connect` fails with "no direct path possible" within 10 s.
    Error,
}

impl Expect {
    fn of(a: RouterKind, b: RouterKind, relay: bool) -> Self {
        match (direct_possible(a, b), relay) {
            (true, _) => Expect::Direct,
            (false, true) => Expect::Relayed,
            (false, false) => Expect::Error,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Expect::Direct => "direct",
            Expect::Relayed => "relayed",
            Expect::Error => "impossible",
        }
    }
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

fn run_pair(a: RouterKind, b: RouterKind, i: usize, relay: bool) -> Row {
    let tag = format!("{}{i}", if relay { "mr" } else { "m" });
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), &tag);
    let flags: &[&str] = if relay { &["--relay"] } else { &[] };
    let m = lab.matrix_with("5.5", [a, b], [V6::None, V6::None], flags);
    let expected = Expect::of(a, b, relay);
    let rdv = m.rendezvous.as_str();
    let mut pipe = Pipe::new([&m.hosts[0], &m.hosts[1]], [rdv, rdv], 1 << 20);
    pipe.bind = format!("0.0.0.0:{NODE_PORT}");
    if relay && expected == Expect::Direct {
        // Long enough on a relay (2 MB/s a node) for punching to finish: a pair that starts
        // relayed must have moved to its direct path when the transfer ends.
        pipe.to_b = 8 << 20;
    }
    let started = lab.start_pipe(&pipe);
    let status = lab.wait_child(started.connector, Duration::from_secs(40));
    let took = started.at.elapsed();
    let log = lab.log("a");
    let connected_line = line(&log, "connected: ").to_string();
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
        (Expect::Direct | Expect::Relayed, Some(s)) if s.success() => {
            let l = lab.wait_child(started.listener, Duration::from_secs(15));
            let lb = lab.log("b");
            let intact = started.b_intact() && started.a_intact();
            let relayed_at_first = connected_line.contains("(relayed via ");
            let direct_later = log
                .lines()
                .any(|l| l.starts_with("path to ") && l.contains(" is now direct "));
            let (path_ok, how) = match expected {
                Expect::Direct if connected_line.contains("(direct ") => (true, "direct"),
                Expect::Direct if relayed_at_first && direct_later => {
                    (true, "relayed at first, then direct")
                }
                Expect::Direct if relayed_at_first => {
                    (false, "relayed, and not yet direct when the transfer ended")
                }
                Expect::Relayed => {
                    let b_relayed = line(&lb, "connected: ").contains("(relayed via ");
                    (relayed_at_first && b_relayed, "relayed")
                }
                _ => (false, "neither direct nor relayed"),
            };
            // Every UPnP side made its mapping; where it was needed, flows came in through it.
            let mut mapping = String::new();
            let mut mapped_ok = true;
            for (side, kind, log) in [(0, a, &log), (1, b, &lb)] {
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
            let good = intact && path_ok && mapped_ok && l.is_some_and(|s| s.success());
            (
                if good {
                    format!("{how}, data intact{mapping}")
                } else {
                    format!("BROKEN (intact {intact}, path: {how}, listener {l:?}{mapping})")
                },
                good,
            )
        }
        (Expect::Error, Some(s))
            if s.code() == Some(3) && log.contains("no direct path possible") =>
        {
            (
                format!("clear error in {:.1} s", took.as_secs_f64()),
                took <= Duration::from_secs(10),
            )
        }
        (_, s) => {
            let said = log.lines().rfind(|l| l.starts_with("shipworm: "));
            (
                format!("UNEXPECTED: exit {s:?} ({})", said.unwrap_or("no error")),
                false,
            )
        }
    };
    if !ok || std::env::var_os("SHIPWORM_LAB_LOGS").is_some() {
        eprintln!(
            "---- {} x {}{}: {outcome}\nA:\n{log}\nB:\n{}\nrendezvous:\n{}",
            a.name(),
            b.name(),
            if relay { " (relay on)" } else { "" },
            lab.log("b"),
            lab.log("rendezvous")
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

/// The rows of the relay matrix that run by default: every pair that has no direct path, every
/// birthday pair (a per-destination NAT against a port-filtering one: the pairs whose punching
/// may outlast the relay's second), the port mappings against a random symmetric NAT, and a few
/// easy pairs.
fn relay_row(a: RouterKind, b: RouterKind) -> bool {
    use RouterKind::*;
    let port_filtering = |k| matches!(k, Home | Cgnat);
    !direct_possible(a, b)
        || (a.hard() && port_filtering(b))
        || (b.hard() && port_filtering(a))
        || matches!(
            (a, b),
            (HomeUpnp, Symmetric)
                | (Symmetric, HomeUpnp)
                | (Public, Public)
                | (Home, Home)
                | (FullCone, Symmetric)
                | (SymmetricSequential, AddressRestricted)
        )
}

/// Runs the ordered pairs `run` selects (and `SHIPWORM_LAB_PAIRS` allows), the rendezvous
/// relaying or not; prints their table, writes it into `docs/lab.md` between
/// `<!-- MARKER:begin -->` and `<!-- MARKER:end -->` with `SHIPWORM_LAB_WRITE` (stamped with
/// `how` it ran), and fails listing every row that did not hold.
/// One matrix at a time: the birthday rows (256 sockets and a paced spray per pair) are timed
/// against the machine's load, and two matrices at once on two cores have made one miss.
static ONE_MATRIX: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_matrix(relay: bool, run: impl Fn(RouterKind, RouterKind) -> bool, marker: &str, how: &str) {
    let _one = ONE_MATRIX.lock().unwrap_or_else(|e| e.into_inner());
    let only = std::env::var("SHIPWORM_LAB_PAIRS").ok();
    assert!(
        only.is_none() || std::env::var_os("CI").is_none(),
        "SHIPWORM_LAB_PAIRS is for debugging: CI runs every pair"
    );
    let wanted = |a: RouterKind, b: RouterKind| {
        run(a, b)
            && only.as_deref().is_none_or(|o| {
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
                rows.push(run_pair(a, b, i, relay));
            }
        }
    }
    if rows.is_empty() {
        // Only a debugging filter naming none of this matrix's rows leaves it empty.
        eprintln!("SHIPWORM_LAB_PAIRS named no pair of this matrix: {only:?}");
        return;
    }
    let mut table = String::from(
        "| A | B | theory | outcome | path chosen by A | connect (ms) |\n|---|---|---|---|---|---:|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.a.name(),
            r.b.name(),
            r.expected.name(),
            r.outcome,
            r.path,
            r.connect_ms
        ));
    }
    println!("{table}");
    if std::env::var_os("SHIPWORM_LAB_WRITE").is_some() && only.is_none() {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/lab.md");
        let text = std::fs::read_to_string(&doc).unwrap();
        let (start, end) = (
            format!("<!-- {marker}:begin -->"),
            format!("<!-- {marker}:end -->"),
        );
        let (a, b) = (
            text.find(&start).unwrap() + start.len(),
            text.find(&end).unwrap(),
        );
        let stamp = format!("\nLast run: {} ({how}, as root)\n\n", chrono_free_date());
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

#[test]
fn every_ordered_pair_of_router_kinds_connects_directly_where_theory_allows_and_says_why_where_not()
{
    if !can_run() {
        return;
    }
    run_matrix(
        false,
        |_, _| true,
        "lab-matrix",
        "`SHIPWORM_LAB_WRITE=1 cargo test -p shipworm --test lab_matrix -- --nocapture`",
    );
}

#[test]
fn with_the_relay_on_every_pair_connects_directly_where_theory_allows_and_relayed_where_not() {
    if !can_run() {
        return;
    }
    let all = std::env::var_os("SHIPWORM_LAB_RELAY_ALL").is_some();
    run_matrix(
        true,
        |a, b| all || relay_row(a, b),
        "lab-relay-matrix",
        if all {
            "`SHIPWORM_LAB_RELAY_ALL=1 SHIPWORM_LAB_WRITE=1 cargo test -p shipworm --test \
             lab_matrix with_the_relay -- --nocapture`: all 64 pairs"
        } else {
            "`SHIPWORM_LAB_WRITE=1 cargo test -p shipworm --test lab_matrix -- --nocapture`: \
             the default rows"
        },
    );
}

/// Today's date from the system clock, without a date library.
fn chrono_free_date() -> String {
    let out = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
