//! TUN mode on the real kernel: network namespaces joined by veth pairs, a `shipworm up --tun` in
//! each, and `ping -6` between overlay addresses through the encrypted tunnel. Needs root; skips
//! with a message otherwise (CI runs as root).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use shipworm_tests::lab::{can_run, Lab};

#[test]
fn ping6_crosses_the_tunnel_between_two_namespaces_and_strangers_are_kept_out() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "t");
    let (a, b, c) = (lab.ns("a"), lab.ns("b"), lab.ns("c"));
    lab.link(1, &a, "10.77.1.1/24", &b, "10.77.1.2/24");
    lab.link(2, &c, "10.77.2.3/24", &b, "10.77.2.2/24");
    let (a_key, a_id, a_ov) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let (c_key, _c_id, _) = lab.identity("c");
    let tun = |n: &str| format!("s{}{n}", lab.tag);
    let (ta, tb, tc) = (tun("a"), tun("b"), tun("c"));

    // B lists only A. C knows B and tries anyway.
    let ia = lab.up(
        &a,
        &a_key,
        &ta,
        "10.77.1.1:51820",
        &[format!("{b_id}@10.77.1.2:51820")],
    );
    lab.up(
        &b,
        &b_key,
        &tb,
        "[::]:51820",
        &[format!("{a_id}@10.77.1.1:51820")],
    );
    lab.up(
        &c,
        &c_key,
        &tc,
        "10.77.2.3:51820",
        &[format!("{b_id}@10.77.2.2:51820")],
    );

    let (ok, out) = lab.ping(&a, &b_ov, 5);
    assert!(
        ok,
        "ping A -> B through the tunnel failed:\n{out}\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    assert!(out.contains("5 received"), "{out}");
    // And back: B's kernel reaches A's overlay address over the same session.
    let (ok, out) = lab.ping(&b, &a_ov, 2);
    assert!(ok, "ping B -> A failed:\n{out}");

    let (ok, out) = lab.ping(&c, &b_ov, 2);
    assert!(!ok, "C is not on B's allowlist, yet reached B:\n{out}");

    let (clean, log) = lab.stop(ia, &ta);
    assert!(clean, "up exited badly:\n{log}");
    assert!(
        log.contains("down:") && !log.contains("down: 0 packets in"),
        "{log}"
    );
}

/// Receives one TCP connection on `[addr]:port` and prints its length and SHA-256.
const RECEIVER: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    h.update(d)
    n += len(d)
print(n, h.hexdigest(), flush=True)
"#;

/// Sends argv[3] MiB of seeded bytes in large writes (so the kernel hands the interface large
/// segments), and prints their length and SHA-256.
const SENDER: &str = r#"
import hashlib, random, socket, sys, time
data = random.Random(7).randbytes(int(sys.argv[3]) << 20)
deadline = time.time() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.1)
for i in range(0, len(data), 256 << 10):
    c.sendall(data[i:i + (256 << 10)])
c.shutdown(socket.SHUT_WR)
c.recv(1)
c.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// The number after `label` in an `up` log's `down:` line ("down: 12 packets in, ...").
fn down_count(log: &str, label: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.starts_with("down:"))
        .unwrap_or_else(|| panic!("no down: line in\n{log}"));
    let before = line
        .split(label)
        .next()
        .filter(|b| b.len() < line.len())
        .unwrap_or_else(|| panic!("no {label:?} in {line}"));
    before
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?} in {line}"))
}

/// A bulk TCP transfer through the tunnel, with and without TUN offloads: the bytes arrive
/// intact either way; with offloads the sender's interface hands over large segments (split by
/// us) and the receiver's kernel gets far fewer writes than the tunnel opened packets (coalesced),
/// without them one read and one write per packet.
#[test]
fn bulk_tcp_through_the_tun_is_intact_with_and_without_offloads() {
    if !can_run() {
        return;
    }
    for offload in [true, false] {
        let tag = if offload { "o" } else { "n" };
        let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), tag);
        let (a, b) = (lab.ns("a"), lab.ns("b"));
        lab.link(1, &a, "10.78.1.1/24", &b, "10.78.1.2/24");
        let (a_key, a_id, _) = lab.identity("a");
        let (b_key, b_id, b_ov) = lab.identity("b");
        let (ta, tb) = (format!("s{}a", lab.tag), format!("s{}b", lab.tag));
        let extra: &[&str] = if offload { &[] } else { &["--no-offload"] };
        let ia = lab.up_with_args(
            &a,
            &a_key,
            &ta,
            "10.78.1.1:51820",
            &[format!("{b_id}@10.78.1.2:51820")],
            &[],
            extra,
        );
        let ib = lab.up_with_args(
            &b,
            &b_key,
            &tb,
            "10.78.1.2:51820",
            &[format!("{a_id}@10.78.1.1:51820")],
            &[],
            extra,
        );
        let (ok, out) = lab.ping(&a, &b_ov, 3);
        assert!(
            ok,
            "ping through the tunnel failed:\n{out}\n{}",
            lab.log(&ta)
        );

        let mut receiver = Command::new("ip")
            .args([
                "netns", "exec", &b, "python3", "-c", RECEIVER, &b_ov, "5999",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "listening");
        let sent = Command::new("ip")
            .args([
                "netns", "exec", &a, "python3", "-c", SENDER, &b_ov, "5999", "24",
            ])
            .output()
            .unwrap();
        assert!(
            sent.status.success(),
            "sender failed: {}\nA: {}\nB: {}",
            String::from_utf8_lossy(&sent.stderr),
            lab.log(&ta),
            lab.log(&tb)
        );
        let got = lines.next().unwrap().unwrap();
        let _ = receiver.wait();
        let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
        assert_eq!(
            got, sent,
            "the bytes changed on the way (offload {offload})"
        );
        assert!(sent.starts_with(&(24u64 << 20).to_string()), "{sent}");

        // Writes the receiver's kernel got from us, read before the interface goes away.
        let rx = Command::new("ip")
            .args(["netns", "exec", &b, "cat"])
            .arg(format!("/sys/class/net/{tb}/statistics/rx_packets"))
            .output()
            .unwrap();
        let writes: u64 = String::from_utf8_lossy(&rx.stdout).trim().parse().unwrap();
        let (_, a_log) = lab.stop(ia, &ta);
        let (_, b_log) = lab.stop(ib, &tb);
        let large_reads = down_count(&a_log, "large segments split");
        let in_place = down_count(&a_log, "packets sealed in place");
        let a_out = down_count(&a_log, "out,");
        let opened = down_count(&b_log, "packets in");
        let written_in_place = down_count(&b_log, "packets written in place");
        eprintln!(
            "offload {offload}: {large_reads} large reads, {in_place} of {a_out} packets sealed in place; {writes} writes for {opened} packets opened, {written_in_place} written from the buffers they were opened in"
        );
        assert!(opened > 10_000, "too few packets for 24 MiB: {b_log}");
        // Written from the buffers the tunnel opened them in: with offloads, all but the first
        // packet of each flow in a batch (the head a segment is coalesced into, copied into a
        // large buffer); without, every one.
        let at_least = if offload { opened * 8 / 10 } else { opened };
        assert!(
            written_in_place >= at_least,
            "{written_in_place} of {opened} packets written from the buffers they were opened in\n{b_log}"
        );
        if offload {
            assert!(
                large_reads > 0,
                "no large segment came from the interface:\n{a_log}"
            );
            // A 64 KiB segment is about fifty packets, of which only the first is copied.
            assert!(
                in_place * 10 > a_out * 8,
                "{in_place} of {a_out} packets sealed in place: the split packets were copied\n{a_log}"
            );
            assert!(
                writes * 2 < opened,
                "the receiver wrote {writes} times for {opened} packets: not coalesced\n{b_log}"
            );
        } else {
            assert_eq!(large_reads, 0, "{a_log}");
            assert_eq!(
                in_place, 0,
                "one packet a read is sealed from a copy: {a_log}"
            );
            assert!(
                writes * 10 >= opened * 9,
                "{writes} writes for {opened} packets"
            );
        }
    }
}
