//! Writes the hand-made seeds of every fuzz target's corpus into `fuzz/corpus/TARGET/`: valid
//! inputs of every message type, so a fuzz run starts with coverage deep inside each parser.
//!
//! ```sh
//! cargo run -p shipworm-tests --example fuzz_seeds
//! ```
//!
//! Run it after adding a message type, then fuzz and minimise (`docs/lab.md` §"Fuzzing"); the
//! minimised corpus is what the repository keeps. Each seed is named `seed-WHAT`, and the inputs
//! the fuzzers once found are kept as `regression-WHAT`; running it again rewrites the same files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use shipworm_rendezvous::wire::stun;
use shipworm_rendezvous::wire::{
    ErrorCode, ErrorMsg, IntroAck, IntroFwd, IntroStatus, Introduce, Message, Refresh, Register,
    Registered, Relay, Relayed, Retry, COOKIE_LEN, MAX_INTRO_PAYLOAD,
};
use shipworm_tunnel::wire::addr;
use shipworm_tunnel::wire::frame::Frame;
use shipworm_tunnel::wire::packet::{self, MAC_LEN};
use shipworm_tunnel::wire::payload::Advert;
use shipworm_tunnel::{Identity, RendezvousAddr, Ticket};

/// The rendezvous server's address and clock in the `rendezvous_server` target.
const SERVER: &str = "198.51.100.1:3478";
const SERVER_NOW_MS: u64 = 1_800_000_000_000;

/// Named inputs of one target.
type Seeds = Vec<(String, Vec<u8>)>;

fn a(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// The rendezvous messages: every type, every status and code, both address families.
fn rendezvous_messages() -> Seeds {
    let id = Identity::from_seed(&[3; 32]);
    let node = *id.node_id().as_bytes();
    let target = *Identity::from_seed(&[4; 32]).node_id().as_bytes();
    let payload = [0x5A; 120];
    let big = [0xA5; MAX_INTRO_PAYLOAD];
    let mut m: Vec<(String, Message<'_>)> = Vec::new();
    for (fam, server) in [("v4", a(SERVER)), ("v6", a("[2001:db8::1]:3478"))] {
        let r = Register::signed(&id, 1, SERVER_NOW_MS, server);
        m.push((format!("register-{fam}"), Message::Register(r.clone())));
        m.push((
            format!("register-{fam}-cookie"),
            Message::Register(r.with_cookie([7; COOKIE_LEN])),
        ));
        m.push((
            format!("registered-{fam}"),
            Message::Registered(Registered {
                tx: 1,
                lifetime_s: 120,
                alt_stun_port: 3479,
                token: [9; 16],
                observed: server,
                flags: 0,
            }),
        ));
        m.push((
            format!("registered-relay-{fam}"),
            Message::Registered(Registered {
                tx: 1,
                lifetime_s: 120,
                alt_stun_port: 3479,
                token: [9; 16],
                observed: server,
                flags: shipworm_rendezvous::wire::REGISTERED_RELAY,
            }),
        ));
        m.push((
            format!("intro-ack-forwarded-{fam}"),
            Message::IntroAck(IntroAck {
                tx: 2,
                status: IntroStatus::Forwarded,
                target_addr: Some(server),
            }),
        ));
        m.push((
            format!("intro-fwd-{fam}"),
            Message::IntroFwd(IntroFwd {
                tx: 3,
                from: node,
                from_addr: server,
                payload: &payload,
            }),
        ));
    }
    m.push((
        "relay".into(),
        Message::Relay(Relay {
            tx: 0,
            node,
            token: [9; 16],
            target: [4; 32],
            packet: &payload,
        }),
    ));
    m.push((
        "relayed".into(),
        Message::Relayed(Relayed {
            tx: 0,
            from: node,
            packet: &payload,
        }),
    ));
    m.push((
        "refresh".into(),
        Message::Refresh(Refresh {
            tx: 4,
            node,
            token: [9; 16],
        }),
    ));
    for (name, p) in [("introduce", &payload[..]), ("introduce-max", &big[..])] {
        m.push((
            name.into(),
            Message::Introduce(Introduce {
                tx: 5,
                node,
                token: [9; 16],
                target,
                payload: p,
            }),
        ));
    }
    for status in [
        IntroStatus::Forwarded,
        IntroStatus::UnknownPeer,
        IntroStatus::SenderRateLimited,
        IntroStatus::TargetRateLimited,
    ] {
        m.push((
            format!("intro-ack-{status:?}"),
            Message::IntroAck(IntroAck {
                tx: 6,
                status,
                target_addr: None,
            }),
        ));
    }
    for code in [
        ErrorCode::UnsupportedVersion,
        ErrorCode::ClockSkew,
        ErrorCode::StaleTimestamp,
        ErrorCode::TableFull,
        ErrorCode::NotRegistered,
        ErrorCode::BadSignature,
        ErrorCode::WrongServer,
        ErrorCode::PrefixQuota,
    ] {
        m.push((
            format!("error-{code:?}"),
            Message::Error(ErrorMsg {
                tx: 7,
                code,
                server_time_ms: SERVER_NOW_MS,
            }),
        ));
    }
    m.push((
        "retry".into(),
        Message::Retry(Retry {
            tx: 8,
            cookie: [7; COOKIE_LEN],
        }),
    ));
    m.into_iter()
        .map(|(name, msg)| (name.to_lowercase(), msg.to_vec()))
        .collect()
}

/// Datagrams a stranger may send the server (split at 0xFF by the target). None may register:
/// the REGISTERs are signed for another server or at another time.
fn server_datagrams() -> Seeds {
    let id = Identity::from_seed(&[5; 32]);
    let mut out = Vec::new();
    let wrong_server = Register::signed(&id, 1, SERVER_NOW_MS, a("198.51.100.2:3478"));
    let skewed = Register::signed(&id, 2, SERVER_NOW_MS - 3_600_000, a(SERVER));
    out.push((
        "register-wrong-server".into(),
        Message::Register(wrong_server).to_vec(),
    ));
    out.push((
        "register-clock-skew".into(),
        Message::Register(skewed).to_vec(),
    ));
    for (name, bytes) in rendezvous_messages() {
        if !name.starts_with("register") {
            out.push((name, bytes));
        }
    }
    out.push((
        "stun-request".into(),
        stun::binding_request_with_id(7u128.into()).0,
    ));
    let mut bare = stun::binding_request_with_id(8u128.into()).0;
    bare.truncate(stun::HEADER_LEN);
    bare[stun::LENGTH_OFFSET..stun::LENGTH_OFFSET + 2].copy_from_slice(&[0, 0]);
    out.push(("stun-bare-request".into(), bare));
    // Several datagrams in one input: a refresh, then an introduction, then a STUN request.
    let joined = ["refresh", "introduce", "stun-request"]
        .iter()
        .filter_map(|n| out.iter().find(|(name, _)| name == n))
        .map(|(_, b)| b.clone())
        .collect::<Vec<_>>()
        .join(&0xFF);
    out.push(("several-datagrams".into(), joined));
    out
}

/// STUN: our own padded request, a bare RFC 5389 request, and things that are not requests.
fn stun_messages() -> Seeds {
    let (request, _) = stun::binding_request_with_id(0x0102_0304_0506_0708_090a_0b0cu128.into());
    let mut bare = request.clone();
    bare.truncate(stun::HEADER_LEN);
    bare[stun::LENGTH_OFFSET..stun::LENGTH_OFFSET + 2].copy_from_slice(&[0, 0]);
    let mut response = [0u8; stun::MAX_RESPONSE_LEN];
    let n = stun::binding_response(&request, a("[2001:db8::7]:9"), &mut response)
        .expect("our own request is answered");
    let mut indication = bare.clone();
    indication[1] = 0x11; // Binding indication
    vec![
        ("request".into(), request),
        ("bare-request".into(), bare),
        ("response".into(), response[..n].to_vec()),
        ("indication".into(), indication),
    ]
}

/// Tickets with every kind of address, and one with the whitespace a copy-paste brings.
fn tickets() -> Seeds {
    let node = Identity::from_seed(&[7; 32]).node_id();
    let rdv = |s: &str| {
        s.parse::<RendezvousAddr>()
            .expect("literal rendezvous address")
    };
    let t = |r: Vec<RendezvousAddr>, d: Vec<SocketAddr>| {
        Ticket::new(node, r, d).expect("valid ticket").to_string()
    };
    let direct: Vec<SocketAddr> = (0..16)
        .map(|p| SocketAddr::from(([10, 0, 0, 1], 40000 + p)))
        .collect();
    let all = t(
        vec![
            rdv("192.0.2.10:3478"),
            rdv("[2001:db8::10]:3478"),
            rdv("rdv.example.net:3478"),
        ],
        vec![a("198.51.100.4:41000"), a("[2001:db8:1::4]:41000")],
    );
    vec![
        (
            "rendezvous-v4".into(),
            t(vec![rdv("192.0.2.10:3478")], vec![]),
        ),
        (
            "host-only".into(),
            t(vec![rdv("rdv.example.net:3478")], vec![]),
        ),
        ("direct-only".into(), t(vec![], vec![a("[2001:db8::4]:1")])),
        ("every-kind".into(), all.clone()),
        ("max-direct".into(), t(vec![rdv("192.0.2.10:3478")], direct)),
        ("whitespace".into(), format!("  {all}\n")),
    ]
    .into_iter()
    .map(|(n, s): (String, String)| (n, s.into_bytes()))
    .collect()
}

/// Outer tunnel packets of every type and inner frames of every kind.
fn tunnel_packets() -> Seeds {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut init = Vec::new();
    packet::emit_init(1, &[0xEE; 96], &mut init);
    init.extend_from_slice(&[1; 2 * MAC_LEN]);
    out.push(("init".into(), init));
    let mut resp = Vec::new();
    packet::emit_resp(2, 1, &[0xEE; 64], &mut resp);
    resp.extend_from_slice(&[2; 2 * MAC_LEN]);
    out.push(("resp".into(), resp));
    out.push((
        "cookie-reply".into(),
        packet::cookie_reply(
            1,
            &[3; packet::COOKIE_NONCE_LEN],
            &[4; packet::SEALED_COOKIE_LEN],
        ),
    ));
    let mut transport = packet::transport_header(1, 5).to_vec();
    transport.extend_from_slice(&[0x77; 48]);
    out.push(("transport".into(), transport));

    // An IPv6/UDP packet: version 6, payload length 8, next header UDP, hop limit 64.
    let mut ipv6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    ipv6.extend_from_slice(&[0xfd, 0x53, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ipv6.extend_from_slice(&[0xfd, 0x53, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    ipv6.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    let advert = Advert {
        flags: 0x0F,
        candidates: vec![a("192.0.2.1:2"), a("[2001:db8::1]:2")],
    };
    let frames = [
        ("frame-data", Frame::Data(&ipv6)),
        ("frame-probe", Frame::Probe { tx: 9 }),
        (
            "frame-probe-answer-v4",
            Frame::ProbeAnswer {
                tx: 9,
                observed: a("192.0.2.1:2"),
            },
        ),
        (
            "frame-probe-answer-v6",
            Frame::ProbeAnswer {
                tx: 9,
                observed: a("[2001:db8::1]:2"),
            },
        ),
        ("frame-close", Frame::Close),
        ("frame-advert", Frame::Advert(advert)),
        ("frame-advert-empty", Frame::Advert(Advert::default())),
    ];
    for (name, f) in frames {
        let mut v = Vec::new();
        f.emit(&mut v);
        out.push((name.into(), v));
    }
    out
}

/// `bytes` with its one IPv4 address `v4` (wire form) replaced by the IPv6 form of the IPv4-mapped
/// address: an input every parser must refuse (`docs/protocol.md` §"One encoding per value").
fn with_mapped_ipv6_form(bytes: &[u8], v4: SocketAddr) -> Vec<u8> {
    let mut v4_form = Vec::new();
    addr::emit(&v4, &mut v4_form);
    let at = bytes
        .windows(v4_form.len())
        .position(|w| w == v4_form)
        .expect("the message holds the address");
    let SocketAddr::V4(v4) = v4 else {
        panic!("{v4} is not IPv4")
    };
    let mut out = bytes[..at].to_vec();
    out.push(addr::FAMILY_V6);
    out.extend_from_slice(&v4.port().to_be_bytes());
    out.extend_from_slice(&v4.ip().to_ipv6_mapped().octets());
    out.extend_from_slice(&bytes[at + v4_form.len()..]);
    out
}

/// Inputs the fuzzers found (issue 11), kept so the corpus test fails if they are accepted again.
fn regressions() -> [(&'static str, Seeds); 2] {
    let observed = a("192.0.2.1:4000");
    let registered = Message::Registered(Registered {
        tx: 1,
        lifetime_s: 120,
        alt_stun_port: 3479,
        token: [9; 16],
        observed,
        flags: 0,
    })
    .to_vec();
    let mut answer = Vec::new();
    Frame::ProbeAnswer { tx: 9, observed }.emit(&mut answer);
    [
        (
            "rendezvous_message",
            vec![(
                "registered-mapped-ipv6-form".into(),
                with_mapped_ipv6_form(&registered, observed),
            )],
        ),
        (
            "tunnel_packet",
            vec![(
                "frame-probe-answer-mapped-ipv6-form".into(),
                with_mapped_ipv6_form(&answer, observed),
            )],
        ),
    ]
}

fn write(dir: &Path, seeds: Seeds) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    write(&corpus.join("rendezvous_message"), rendezvous_messages())?;
    write(&corpus.join("rendezvous_server"), server_datagrams())?;
    write(&corpus.join("stun_binding"), stun_messages())?;
    write(&corpus.join("ticket"), tickets())?;
    write(&corpus.join("tunnel_packet"), tunnel_packets())?;
    for (target, inputs) in regressions() {
        std::fs::create_dir_all(corpus.join(target))?;
        for (name, bytes) in inputs {
            std::fs::write(
                corpus.join(target).join(format!("regression-{name}")),
                bytes,
            )?;
        }
    }
    Ok(())
}
