//! The `shipworm` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shipworm::{Identity, RendezvousAddr, Ticket};

/// Connect two hosts behind NATs: peer-to-peer, encrypted, with an overlay IPv6 address.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Identity key file (created on first use, mode 0600).
    /// Default: $SHIPWORM_HOME/identity or ~/.config/shipworm/identity.
    #[arg(long, global = true, env = "SHIPWORM_IDENTITY")]
    identity: Option<PathBuf>,
    /// Rendezvous server HOST:PORT (repeatable).
    #[arg(long = "rendezvous", global = true)]
    rendezvous: Vec<RendezvousAddr>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print this node's id, overlay address and ticket.
    Id,
    /// Run the end-to-end demo on this machine (embedded rendezvous, two nodes, loopback).
    Demo,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,stun_types=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shipworm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_identity(path: Option<PathBuf>) -> anyhow::Result<Identity> {
    let path = path
        .or_else(shipworm::paths::default_identity_file)
        .context(
            "no identity file given and no home directory to keep one in: pass --identity FILE",
        )?;
    Ok(Identity::load_or_create(&path)?)
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Id => {
            let id = load_identity(cli.identity)?;
            let node = id.node_id();
            let ticket = if cli.rendezvous.is_empty() {
                None
            } else {
                Some(Ticket::new(node, cli.rendezvous.clone(), vec![])?)
            };
            if cli.json {
                println!(
                    "{{\"node_id\":{},\"overlay_addr\":{},\"ticket\":{}}}",
                    json_str(&node.to_string()),
                    json_str(&node.overlay_addr().to_string()),
                    ticket.map_or("null".into(), |t| json_str(&t.to_string()))
                );
            } else {
                println!("node id       {node}");
                println!("overlay addr  {}", node.overlay_addr());
                match ticket {
                    Some(t) => println!("ticket        {t}"),
                    None => println!("ticket        (give --rendezvous HOST:PORT to make one)"),
                }
            }
            Ok(())
        }
        Command::Demo => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut out = std::io::stdout();
                shipworm::demo::run(&mut out).await.map(|_| ())
            })
        }
    }
}
