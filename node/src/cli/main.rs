//! The `shipworm` command line: one file per command beside this one; every command that runs a
//! node builds it through the library's [`shipworm::api::Builder`] ([`common::Common::builder`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod common;
mod connect;
mod control;
mod demo;
mod dht_node;
mod files;
mod forward;
mod id;
mod listen;
mod netcheck;
mod ping;
mod rendezvous;
mod status;
mod up;

/// Connect two hosts behind NATs: peer-to-peer, encrypted, with an overlay IPv6 address.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    common: common::Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print this node's id, overlay address and ticket.
    Id,
    /// Run the end-to-end demo on this machine (embedded rendezvous, two nodes, loopback).
    Demo,
    /// Run a long-lived node. With --tun, the overlay goes on a TUN interface (needs root or
    /// CAP_NET_ADMIN) for any program; without, it answers ping and forwards to allowed ports.
    /// Peers are reached through `--rendezvous` introductions and hole punching.
    Up(up::Args),
    /// Print a ticket, accept one peer, and pipe its stream to stdout and stdin to it (netcat).
    /// Runs under a fresh identity each time unless told otherwise: the ticket is the capability.
    Listen(listen::Args),
    /// Connect to a `listen`ing peer (by ticket, or by NodeId through the DHT) and pipe
    /// stdin/stdout.
    Connect(connect::Args),
    /// Forward a local TCP port to a port on the peer (which runs `up --forward-port PORT`).
    Forward(forward::Args),
    /// Show a running node's peers and candidate-pair table (asks `up` on its control socket).
    Status,
    /// Check this host's network: public address, NAT mapping behaviour, port mapping, IPv6.
    Netcheck,
    /// Measure round trips to a peer (running `up`) and show the path they take.
    Ping(ping::Args),
    /// Run a Mainline DHT server node: the bootstrap of a private DHT (no --dht-bootstrap: a new
    /// network), or one more node of one.
    DhtNode(dht_node::Args),
    /// Run an embedded rendezvous server (the same service as `shipworm-rendezvous`, default
    /// settings; use that binary for a configured deployment).
    Rendezvous(rendezvous::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // Port mappings, DHT publications, a NAT64 prefix in use and a move to or from a
                // relay over TCP are news a user wants to see (they decide what connects).
                .unwrap_or_else(|_| {
                    "warn,stun_types=error,shipworm::io::portmap=info,shipworm::discovery=info,\
                     shipworm::io::nat64=info,shipworm::io::relay_tcp=info"
                        .into()
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cli { common, command } = Cli::parse();
    let result = match command {
        Command::Id => id::run(&common),
        Command::Demo => common::block_on(demo::run_command()),
        // With the TUN, the driver is the node's work: one worker keeps it on one thread.
        Command::Up(args) => {
            common::block_on_with(if args.tun { 1 } else { 2 }, up::run(common, args))
        }
        Command::Listen(args) => common::block_on(listen::run(common, args)),
        Command::Connect(args) => common::block_on(connect::run(common, args)),
        Command::Forward(args) => common::block_on(forward::run(common, args)),
        Command::Status => common::block_on(status::run(common)),
        Command::Netcheck => common::block_on(netcheck::run(common)),
        Command::Ping(args) => common::block_on(ping::run(common, args)),
        Command::Rendezvous(args) => common::block_on(rendezvous::run(args)),
        Command::DhtNode(args) => common::block_on(dht_node::run(common, args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shipworm: {e:#}");
            match e.downcast_ref::<common::Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--quic-encryption` reaches the builder; without it, the tunnel alone protects QUIC.
    #[test]
    fn quic_encryption_flag_sets_the_protection() {
        let builder = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            format!(
                "{:?}",
                cli.common
                    .builder_with(shipworm::Identity::from_seed(&[1; 32]), 0)
            )
        };
        let default = builder(&["shipworm", "id"]);
        assert!(default.contains("quic_protection: Tunnel }"), "{default}");
        let kept = builder(&["shipworm", "--quic-encryption", "id"]);
        assert!(kept.contains("quic_protection: TunnelAndQuic }"), "{kept}");
    }
}
