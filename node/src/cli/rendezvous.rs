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
    /// nodes that cannot reach each other directly (off by default, as in
    /// `shipworm-rendezvous --relay`).
    #[arg(long)]
    relay: bool,
}

/// Serves until interrupted.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        listen: args.listen,
        alt_listen: args.alt_listen,
        public_addrs: args.public_addr,
        relay: args.relay,
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await?;
    eprintln!(
        "rendezvous on {} (second STUN port {:?}, relay {})",
        rdv.local_addr(),
        rdv.alt_addr().map(|a| a.port()),
        if args.relay { "on" } else { "off" }
    );
    crate::common::shutdown().await;
    rdv.shutdown().await;
    Ok(())
}
