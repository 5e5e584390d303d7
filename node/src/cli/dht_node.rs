//! `shipworm dht-node`: a Mainline DHT server node, for a private DHT (`docs/discovery.md`
//! §"A private DHT"). With no `--dht-bootstrap` it starts a new network that others bootstrap
//! from; with some, it joins that network.

use std::net::SocketAddrV4;

use shipworm::discovery::dht;

use crate::common::Common;

/// Arguments of `dht-node`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// UDP address to serve on (IPv4: the DHT runs over IPv4).
    #[arg(long, default_value_t = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, dht::DHT_PORT))]
    listen: SocketAddrV4,
}

/// Serves until interrupted.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    let bootstrap = dht::resolve_bootstrap(&common.dht_bootstrap).map_err(anyhow::Error::msg)?;
    let node = dht::server(args.listen, &bootstrap)
        .map_err(|e| anyhow::anyhow!("cannot serve the DHT on {}: {e}", args.listen))?;
    let node = node.as_async();
    let info = node.info().await;
    eprintln!(
        "dht node on {} ({})",
        info.local_addr(),
        match bootstrap.is_empty() {
            true => "a new network: give others --dht-bootstrap to this address".to_string(),
            false => format!("joining through {} bootstrap node(s)", bootstrap.len()),
        }
    );
    crate::common::shutdown().await;
    Ok(())
}
