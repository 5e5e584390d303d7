//! `shipworm-rendezvous`: the rendezvous server binary (`docs/operations.md`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use shipworm_rendezvous::config::{parse_optional_addr, Config};
use shipworm_rendezvous::driver::Rendezvous;

/// Registers shipworm nodes, reflects their public addresses (STUN), and forwards one
/// introduction packet per connection attempt.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML config file; flags given here override its values.
    #[arg(long, short = 'c', env = "SHIPWORM_RENDEZVOUS_CONFIG")]
    config: Option<PathBuf>,
    /// Main UDP address. The default [::]:3478 is one dual-stack socket.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Second STUN-only UDP address (lets nodes detect per-destination NAT mapping), or "off".
    #[arg(long, value_parser = maybe_addr)]
    alt_listen: Option<MaybeAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics, or "off".
    #[arg(long, value_parser = maybe_addr)]
    metrics_listen: Option<MaybeAddr>,
    /// Bound on registered nodes (about 150 bytes each).
    #[arg(long)]
    max_nodes: Option<usize>,
    /// An address nodes reach this server at that is not one of its interfaces' (the public
    /// address of a 1:1 NAT, as on most cloud VMs), with the port nodes dial. Repeatable. A
    /// REGISTER is accepted only if signed for one of the server's addresses.
    #[arg(long = "public-addr", value_name = "ADDR")]
    public_addr: Vec<SocketAddr>,
    /// Turn on the relay role: carry end-to-end encrypted tunnel packets between registered
    /// nodes that cannot reach each other directly (off by default).
    #[arg(long)]
    relay: bool,
    /// A NodeId that may use the relay (repeatable); without any, every registered node may.
    #[arg(long = "relay-allow", value_name = "NODEID")]
    relay_allow: Vec<String>,
    /// Bytes per second one node may send through the relay.
    #[arg(long, value_name = "BYTES")]
    relay_rate: Option<u64>,
    /// Most relay sessions (pairs of nodes) at once.
    #[arg(long, value_name = "N")]
    relay_max_sessions: Option<usize>,
    /// The relay's TCP listener (TLS) for nodes whose UDP is blocked, or "off" (default
    /// [::]:443; used only with --relay).
    #[arg(long, value_parser = maybe_addr, value_name = "ADDR")]
    relay_tcp: Option<MaybeAddr>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

/// An address or "off".
#[derive(Debug, Clone, Copy)]
struct MaybeAddr(Option<SocketAddr>);

fn maybe_addr(s: &str) -> Result<MaybeAddr, String> {
    parse_optional_addr(s).map(MaybeAddr)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,stun_types=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shipworm-rendezvous: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
        // A custom main port without an explicit second port moves the second port along.
        if args.alt_listen.is_none() && config.alt_listen == Config::default().alt_listen {
            // Port 0 (any) stays any; the last port has no successor and also takes any free port.
            let alt_port = if l.port() == 0 {
                0
            } else {
                l.port().checked_add(1).unwrap_or(0)
            };
            config.alt_listen = Some(SocketAddr::new(l.ip(), alt_port));
        }
    }
    if let Some(a) = args.alt_listen {
        config.alt_listen = a.0;
    }
    if let Some(m) = args.metrics_listen {
        config.metrics_listen = m.0;
    }
    if let Some(n) = args.max_nodes {
        config.max_nodes = n;
    }
    config.public_addrs.extend(args.public_addr.iter().copied());
    config.relay |= args.relay;
    config.relay_allow.extend(args.relay_allow.iter().cloned());
    if let Some(r) = args.relay_rate {
        config.relay_node_bytes_per_second = r;
        config.relay_node_burst_bytes = config.relay_node_burst_bytes.max(r / 4);
    }
    if let Some(n) = args.relay_max_sessions {
        config.relay_max_sessions = n;
    }
    if let Some(a) = args.relay_tcp {
        config.relay_tcp = a.0;
    }
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    if args.check_config {
        println!("{config:#?}");
        return Ok(());
    }
    let config_relay = config.relay;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut server = Rendezvous::bind(config).await?;
        // Where it really listens (a port of 0 in the configuration becomes a real one here).
        let alt = server.alt_addr().map_or("off".to_string(), |a| a.to_string());
        let metrics = server
            .metrics_addr()
            .map_or("off".to_string(), |a| a.to_string());
        let relay = match (config_relay, server.relay_tcp_addr()) {
            (false, _) => "off".to_string(),
            (true, None) => "on, UDP only".to_string(),
            (true, Some(tcp)) => format!("on, TCP {tcp}"),
        };
        tracing::info!(
            "listening on {} (second STUN port {alt}, metrics {metrics}, relay {relay})",
            server.local_addr()
        );
        tokio::select! {
            r = server.wait() => r,
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                let snap = server.shutdown().await;
                tracing::info!(registered = snap.registered, forwarded = snap.stats.introductions_forwarded, "final counters");
                Ok(())
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
