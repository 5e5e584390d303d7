//! The `shipworm` binary as a user runs it.

use std::process::Command;

use shipworm_tests::scratch::Scratch;

fn shipworm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shipworm"));
    // These run in the host's namespace: no mDNS onto its real networks.
    c.env("SHIPWORM_NO_MDNS", "true");
    c
}

fn tempdir(tag: &str) -> Scratch {
    Scratch::new(&format!("shipworm-cli-{tag}-"))
}

#[test]
fn demo_runs_end_to_end_and_exits_zero() {
    let out = shipworm().arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("checksum matches"), "{text}");
    assert!(text.contains("path        direct "), "{text}");
    assert!(
        text.contains("forwarded 1 introduction(s) and no data"),
        "{text}"
    );
}

#[test]
fn id_creates_a_private_identity_once_and_prints_a_ticket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir("id");
    let path = dir.join("identity");
    let run = || {
        let out = shipworm()
            .args(["--json", "--rendezvous", "192.0.2.1:3478", "--identity"])
            .arg(&path)
            .arg("id")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(run(), first, "the same identity on the second run");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ticket = first
        .split("\"ticket\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let ticket: shipworm::Ticket = ticket.parse().unwrap();
    assert_eq!(ticket.rendezvous()[0].to_string(), "192.0.2.1:3478");
    assert!(first.contains(&format!("\"node_id\":\"{}\"", ticket.node_id())));
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir("perm");
    let path = dir.join("identity");
    shipworm::Identity::generate().save(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = shipworm()
        .arg("--identity")
        .arg(&path)
        .arg("id")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn a_bad_rendezvous_address_is_named() {
    let out = shipworm()
        .args(["--rendezvous", "nope", "id"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`nope`: expected HOST:PORT"), "{err}");
}
