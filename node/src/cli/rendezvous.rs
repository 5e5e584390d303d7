//! `shipworm rendezvous`: an embedded rendezvous server with default settings (the
//! `shipworm-rendezvous` binary serves a configured deployment).

use std::net::SocketAddr;

use shipworm::rendezvous::{config::Config, driver::Rendezvous};

/// Arguments of `rendezvous`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Main UDP address.
    #[arg(long, default_value = "[::]:3478")]
    listen: SocketAddr,
    /// Second STUN port address.
    #[arg(long, default_value = "[::]:3479")]
    alt_listen: Option<SocketAddr>,
    /// An address nodes reach this server at that is not one of its interfaces' (a 1:1 NAT's
    /// public address, as on most cloud VMs), with the port. Repeatable: REGISTERs are signed
    /// for the address a node dials, and refused for any other.
    #[arg(long = "public-addr", value_name = "ADDR")]
    public_addr: Vec<SocketAddr>,
    /// Turn on the relay role: carry end-to-end encrypted tunnel packets between registered
    /// nodes that no direct path joins.
    #[arg(long)]
    relay: bool,
    /// The relay's TCP listener (TLS) for nodes whose UDP is blocked, or "off" (with --relay).
    #[arg(long, value_name = "ADDR", default_value = "[::]:443")]
    relay_tcp: String,
}

/// Serves until interrupted.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        listen: args.listen,
        alt_listen: args.alt_listen,
        public_addrs: args.public_addr,
        relay: args.relay,
        relay_tcp: shipworm::rendezvous::config::parse_optional_addr(&args.relay_tcp)
            .map_err(|e| anyhow::anyhow!("--relay-tcp: {e}"))?,
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await?;
    let relay = match (args.relay, rdv.relay_tcp_addr()) {
        (false, _) => "off".to_string(),
        (true, None) => "on, UDP only".to_string(),
        (true, Some(tcp)) => format!("on, TCP {tcp}"),
    };
    eprintln!(
        "rendezvous on {} (second STUN port {:?}, relay {relay})",
        rdv.local_addr(),
        rdv.alt_addr().map(|a| a.port())
    );
    crate::common::shutdown().await;
    rdv.shutdown().await;
    Ok(())
}
