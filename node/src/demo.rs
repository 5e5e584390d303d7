//! The end-to-end demo on one machine: an embedded rendezvous and two nodes on loopback.
//!
//! What it shows today: both nodes register (signed), learn their observed address from REGISTERED
//! and from STUN on both rendezvous ports (equal addresses mean the mapping does not depend on the
//! destination), and node A's introduction reaches node B through the rendezvous, forwarded once,
//! with A's observed address attached.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shipworm_rendezvous::client::{self, Client, Incoming};
use shipworm_rendezvous::config::Config;
use shipworm_rendezvous::driver::Rendezvous;
use shipworm_rendezvous::proto::IntroStatus;
use shipworm_tunnel::{Identity, RendezvousAddr, Ticket};
use tokio::net::UdpSocket;

/// What the demo observed.
#[derive(Debug, Clone)]
pub struct Report {
    /// The embedded rendezvous.
    pub rendezvous: SocketAddr,
    /// Node A's observed address (REGISTERED).
    pub a_observed: SocketAddr,
    /// Node B's observed address.
    pub b_observed: SocketAddr,
    /// Whether STUN on the second port saw the same address as on the first (per node).
    pub mapping_independent: [bool; 2],
    /// The payload B received, as introduced by A.
    pub delivered: Vec<u8>,
    /// The address the rendezvous attached to the introduction.
    pub introducer_addr: SocketAddr,
    /// Time from A's INTRODUCE to B holding the payload.
    pub introduction_latency: Duration,
    /// B's ticket.
    pub b_ticket: Ticket,
}

/// Runs the demo, narrating to `out`.
pub async fn run(out: &mut (dyn Write + Send)) -> anyhow::Result<Report> {
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        alt_listen: Some("127.0.0.1:0".parse()?),
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config)
        .await
        .context("starting the embedded rendezvous")?;
    let server = rdv.local_addr();
    let alt = rdv.alt_addr().context("alternate STUN port")?;
    writeln!(
        out,
        "rendezvous   listening on {server} (second STUN port {})",
        alt.port()
    )?;

    let mut nodes = Vec::new();
    let mut mapping = [false; 2];
    for (i, name) in ["A", "B"].iter().enumerate() {
        let id = Identity::generate();
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let mut c = Client::new(sock.clone(), server, id.clone());
        let t = Instant::now();
        let reg = c
            .register()
            .await
            .with_context(|| format!("node {name} registering"))?;
        let primary = client::stun_binding(&sock, server).await?;
        let secondary = client::stun_binding(&sock, alt).await?;
        mapping[i] = primary == secondary && primary == reg.observed;
        writeln!(
            out,
            "node {name}       {}  overlay {}\n             registered in {:.1} ms, observed {}; STUN {} / {} -> mapping {}",
            id.node_id(),
            id.node_id().overlay_addr(),
            t.elapsed().as_secs_f64() * 1e3,
            reg.observed,
            primary,
            secondary,
            if mapping[i] { "independent of destination" } else { "per destination" },
        )?;
        nodes.push((id, c, reg.observed));
    }
    let (b_id, mut b, b_observed) = nodes.pop().expect("two nodes");
    let (a_id, mut a, a_observed) = nodes.pop().expect("two nodes");
    let b_ticket = Ticket::new(
        b_id.node_id(),
        vec![RendezvousAddr::Ip(server)],
        vec![b_observed],
    )?;
    writeln!(out, "ticket B     {b_ticket}")?;

    let payload = b"hello from A: this would be a Noise IK message 1".to_vec();
    let t = Instant::now();
    let ack = a.introduce(&b_id.node_id(), &payload).await?;
    if ack.status != IntroStatus::Forwarded {
        bail!("introduction not forwarded: {:?}", ack.status);
    }
    let incoming = tokio::time::timeout(Duration::from_secs(5), b.next_incoming())
        .await
        .context("B never received the introduction")??;
    let latency = t.elapsed();
    let Incoming::Introduction {
        from,
        from_addr,
        payload: delivered,
    } = incoming
    else {
        bail!("B received something other than the introduction: {incoming:?}");
    };
    if from != a_id.node_id() {
        bail!("introduction names the wrong sender");
    }
    writeln!(
        out,
        "introduce    A -> rendezvous -> B in {:.2} ms: {} bytes, B learns A is at {from_addr}; A learns B is at {}",
        latency.as_secs_f64() * 1e3,
        delivered.len(),
        ack.target_addr.map_or("?".into(), |a| a.to_string()),
    )?;
    let snap = rdv.shutdown().await;
    writeln!(
        out,
        "rendezvous   {} nodes registered, {} introduction forwarded, {} datagrams sent; stopped",
        snap.registered, snap.stats.introductions_forwarded, snap.stats.sent
    )?;
    writeln!(out, "next         hole punching, the encrypted tunnel and QUIC are not built yet (see the issues)")?;
    Ok(Report {
        rendezvous: server,
        a_observed,
        b_observed,
        mapping_independent: mapping,
        delivered,
        introducer_addr: from_addr,
        introduction_latency: latency,
        b_ticket,
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_demo_introduces_a_to_b_through_the_embedded_rendezvous() {
        let mut out = Vec::new();
        let r = super::run(&mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(r.introducer_addr, r.a_observed);
        assert_eq!(
            r.delivered,
            b"hello from A: this would be a Noise IK message 1"
        );
        assert_eq!(r.mapping_independent, [true, true], "loopback has no NAT");
        assert_eq!(r.b_ticket.direct(), &[r.b_observed]);
        assert!(text.contains("introduce    A -> rendezvous -> B"), "{text}");
    }
}
