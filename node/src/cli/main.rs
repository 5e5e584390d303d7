//! The `shipworm` command line.

use std::path::PathBuf;
use std::process::ExitCode;

mod commands;
mod control;
mod demo;
mod files;
mod up;

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
    /// UDP address of the node's socket (`up` has its own --listen).
    #[arg(long, global = true, default_value = "[::]:0")]
    bind: std::net::SocketAddr,
    /// Do not ask the gateway for a port mapping (PCP, NAT-PMP, UPnP IGD).
    #[arg(long, global = true)]
    no_portmap: bool,
    /// Control socket of `up` (default: shipworm.sock beside the identity file).
    #[arg(long, global = true)]
    control: Option<PathBuf>,
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
    Up(UpArgs),
    /// Print a ticket, accept one peer, and pipe its stream to stdout and stdin to it (netcat).
    Listen,
    /// Connect to a `listen`ing peer and pipe stdin/stdout.
    Connect {
        /// The peer's ticket.
        ticket: Ticket,
    },
    /// Forward a local TCP port to a port on the peer (which runs `up --forward-port PORT`).
    Forward {
        /// The peer's ticket.
        ticket: Ticket,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        local: std::net::SocketAddr,
        /// Port on the peer's loopback.
        #[arg(long)]
        port: u16,
    },
    /// Show a running node's peers and candidate-pair table (asks `up` on its control socket).
    Status,
    /// Check this host's network: public address, NAT mapping behaviour, port mapping, IPv6.
    Netcheck,
    /// Measure round trips to a peer (running `up`) and show the path they take.
    Ping {
        /// The peer's ticket.
        ticket: Ticket,
        /// How many pings.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
    },
    /// Run an embedded rendezvous server (the same service as `shipworm-rendezvous`, default
    /// settings; use that binary for a configured deployment).
    Rendezvous {
        /// Main UDP address.
        #[arg(long, default_value = "[::]:3478")]
        listen: std::net::SocketAddr,
        /// Second STUN port address.
        #[arg(long, default_value = "[::]:3479")]
        alt_listen: Option<std::net::SocketAddr>,
    },
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// Put the overlay on a TUN interface.
    #[arg(long)]
    tun: bool,
    /// Without --tun: a local port peers may forward to (repeatable).
    #[arg(long = "forward-port")]
    forward_ports: Vec<u16>,
    /// Without --tun: peers may forward to any local port.
    #[arg(long)]
    forward_any: bool,
    /// Interface name.
    #[arg(long, default_value = "shipworm0")]
    tun_name: String,
    /// UDP address of the node's one socket.
    #[arg(long, default_value = "[::]:51820")]
    listen: std::net::SocketAddr,
    /// A peer: NODEID or NODEID@HOST:PORT (repeatable). Listed peers may always send to us.
    #[arg(long = "peer")]
    peers: Vec<crate::up::PeerSpec>,
    /// More NodeIds allowed to send into the interface, one per line.
    #[arg(long)]
    allow_file: Option<PathBuf>,
    /// Let any node that proves its key send into the interface.
    #[arg(long)]
    allow_any: bool,
    /// Inner MTU of the interface.
    #[arg(long, default_value_t = 1280)]
    mtu: u16,
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
            match e.downcast_ref::<commands::Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn load_identity(path: Option<PathBuf>) -> anyhow::Result<Identity> {
    let path = path.or_else(crate::files::default_identity_file).context(
        "no identity file given and no home directory to keep one in: pass --identity FILE",
    )?;
    Ok(Identity::load_or_create(&path)?)
}

fn node_args(
    identity: &Option<PathBuf>,
    rendezvous: &[RendezvousAddr],
    bind: std::net::SocketAddr,
    no_portmap: bool,
    allow: Option<Vec<shipworm::NodeId>>,
) -> anyhow::Result<commands::NodeArgs> {
    Ok(commands::NodeArgs {
        identity: load_identity(identity.clone())?,
        rendezvous: rendezvous.to_vec(),
        bind,
        portmap: !no_portmap,
        allow,
        alpns: Vec::new(),
    })
}

fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
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
        Command::Up(args) if args.tun => up(
            load_identity(cli.identity.clone())?,
            commands::control_path(cli.control.clone(), cli.identity.as_deref()),
            &cli.rendezvous,
            cli.no_portmap,
            args,
        ),
        Command::Up(args) => {
            let ports = match (args.forward_any, args.forward_ports.is_empty()) {
                (true, _) => shipworm::apps::forward::Ports::Any,
                (false, true) => shipworm::apps::forward::Ports::None,
                (false, false) => shipworm::apps::forward::Ports::Only(args.forward_ports.clone()),
            };
            let allowed = match &args.allow_file {
                Some(p) => crate::up::read_allow_file(p).map_err(anyhow::Error::msg)?,
                None => Default::default(),
            };
            let allow = (!args.allow_any).then(|| {
                allowed
                    .into_iter()
                    .chain(args.peers.iter().map(|p| p.id))
                    .collect::<Vec<_>>()
            });
            let peers = args
                .peers
                .iter()
                .map(|p| (p.id, p.endpoint.into_iter().collect()))
                .collect();
            let node = node_args(
                &cli.identity,
                &cli.rendezvous,
                args.listen,
                cli.no_portmap,
                allow,
            )?;
            let control = commands::control_path(cli.control.clone(), cli.identity.as_deref());
            block_on(commands::up_quic(node, ports, peers, control))
        }
        Command::Status => block_on(commands::status(
            commands::control_path(cli.control.clone(), cli.identity.as_deref()),
            cli.json,
        )),
        Command::Netcheck => block_on(commands::netcheck(
            node_args(
                &cli.identity,
                &cli.rendezvous,
                cli.bind,
                cli.no_portmap,
                None,
            )?,
            cli.json,
        )),
        Command::Listen => block_on(commands::listen(node_args(
            &cli.identity,
            &cli.rendezvous,
            cli.bind,
            cli.no_portmap,
            None,
        )?)),
        Command::Connect { ticket } => block_on(commands::connect(
            node_args(
                &cli.identity,
                &cli.rendezvous,
                cli.bind,
                cli.no_portmap,
                None,
            )?,
            ticket,
        )),
        Command::Forward {
            ticket,
            local,
            port,
        } => block_on(commands::forward(
            node_args(
                &cli.identity,
                &cli.rendezvous,
                cli.bind,
                cli.no_portmap,
                None,
            )?,
            ticket,
            local,
            port,
        )),
        Command::Ping { ticket, count } => block_on(commands::ping(
            node_args(
                &cli.identity,
                &cli.rendezvous,
                cli.bind,
                cli.no_portmap,
                None,
            )?,
            ticket,
            count,
            cli.json,
        )),
        Command::Rendezvous { listen, alt_listen } => rendezvous_server(listen, alt_listen),
        Command::Demo => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut out = std::io::stdout();
                crate::demo::run(&mut out, 100 * 1024 * 1024)
                    .await
                    .map(|_| ())
            })
        }
    }
}

/// Resolves rendezvous servers: one address per server to register over (IPv4 first), and the
/// server's address of the other family, if any, to ask by STUN for our reflexive address there.
fn resolve(
    rendezvous: &[RendezvousAddr],
) -> anyhow::Result<(Vec<std::net::SocketAddr>, Vec<std::net::SocketAddr>)> {
    use std::net::ToSocketAddrs;
    let (mut register, mut stun) = (Vec::new(), Vec::new());
    for r in rendezvous {
        match r {
            RendezvousAddr::Ip(a) => register.push(*a),
            RendezvousAddr::Host(h, p) => {
                let addrs: Vec<_> = (h.as_str(), *p)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve rendezvous {h}:{p}"))?
                    .collect();
                let v4 = addrs.iter().find(|a| a.is_ipv4()).copied();
                let v6 = addrs.iter().find(|a| a.is_ipv6()).copied();
                match (v4, v6) {
                    (Some(a), other) => {
                        register.push(a);
                        stun.extend(other);
                    }
                    (None, Some(a)) => register.push(a),
                    (None, None) => anyhow::bail!("rendezvous {h}:{p} resolves to no address"),
                }
            }
        }
    }
    Ok((register, stun))
}

fn up(
    identity: Identity,
    control: PathBuf,
    rendezvous: &[RendezvousAddr],
    no_portmap: bool,
    args: UpArgs,
) -> anyhow::Result<()> {
    use shipworm::engine::{Engine, EngineConfig, NodeEvent};
    use shipworm::tunnel::tunnel::TunnelConfig;
    anyhow::ensure!(
        args.mtu >= 1280,
        "--mtu must be at least 1280, the IPv6 minimum"
    );
    let allowed = match &args.allow_file {
        Some(p) => crate::up::read_allow_file(p).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let accept = crate::up::accept_policy(&args.peers, allowed, args.allow_any);
    let node = identity.node_id();
    let (rendezvous, stun) = resolve(rendezvous)?;
    let config = EngineConfig {
        rendezvous,
        stun,
        tunnel: TunnelConfig {
            mtu: args.mtu as usize,
            accept,
            ..TunnelConfig::default()
        },
        ..EngineConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = shipworm::io::bind_dual_stack(args.listen)
            .with_context(|| format!("cannot bind UDP {}", args.listen))?;
        let tun = shipworm::io::tun::open_tun(&args.tun_name, node.overlay_addr(), args.mtu)?;
        let now = std::time::Instant::now();
        let mut engine = Engine::new(identity, config, now, shipworm_tunnel::rng::from_os());
        shipworm::io::driver::gather_host_candidates(&mut engine, &socket)?;
        eprintln!(
            "up: node {node}\n    overlay {} on {} (mtu {}), UDP {}, {} peer(s)",
            node.overlay_addr(),
            args.tun_name,
            args.mtu,
            socket.local_addr()?,
            args.peers.len()
        );
        for p in &args.peers {
            let direct: Vec<_> = p.endpoint.into_iter().collect();
            engine.connect(now, shipworm::io::driver::unix_ms(), p.id, &direct);
        }
        let (commands_tx, mut commands) = tokio::sync::mpsc::channel(16);
        let retry_tx = commands_tx.clone();
        let status: crate::control::StatusFn = {
            let tx = commands_tx.clone();
            std::sync::Arc::new(move || {
                let tx = tx.clone();
                Box::pin(async move {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    tx.send(shipworm::io::driver::DriverCommand::Diagnostics(reply)).await.ok()?;
                    answer.await.ok()
                })
            })
        };
        let control_task = tokio::spawn(crate::control::serve(control, status));
        let mut failures: std::collections::HashMap<shipworm::NodeId, u32> = Default::default();
        let (portmap_stop, portmap_stopped) = tokio::sync::oneshot::channel::<()>();
        let portmap = (!no_portmap).then(|| {
            tokio::spawn(shipworm::io::portmap::keep(
                socket.local_addr().map_or(0, |a| a.port()),
                commands_tx,
                portmap_stopped,
                |line| eprintln!("{line}"),
            ))
        });
        let stats = shipworm::io::driver::run(&mut engine, &socket, shipworm::io::driver::LocalSide::Tun(&tun), &mut commands, shutdown_signal(), |e| match e {
            NodeEvent::Registered { server, observed } => eprintln!("registered at {server}: seen as {observed}"),
            NodeEvent::RegistrationRefused { reason, .. } => eprintln!("rendezvous: {reason}"),
            NodeEvent::Connected { peer, path, rtt } => {
                failures.remove(peer);
                eprintln!("connected to {} via {path} (direct, rtt {:.1} ms)", peer.fmt_short(), rtt.as_secs_f64() * 1e3)
            }
            NodeEvent::PathChanged { peer, path } => eprintln!("path to {} is now {path}", peer.fmt_short()),
            NodeEvent::ConnectFailed { peer, error } => {
                // Say why, then try again later: the peer may come online, or its network change.
                let n = failures.entry(*peer).or_insert(0u32);
                *n += 1;
                let wait = std::time::Duration::from_secs((5u64 << (*n - 1).min(4)).min(60));
                eprintln!("cannot connect to {}: {error}; trying again in {} s", peer.fmt_short(), wait.as_secs());
                let direct = args.peers.iter().find(|p| p.id == *peer).and_then(|p| p.endpoint).into_iter().collect();
                let tx = retry_tx.clone();
                let peer = *peer;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(shipworm::io::driver::DriverCommand::Connect(peer, direct)).await;
                });
            }
            NodeEvent::Disconnected { peer } => eprintln!("session with {} ended", peer.fmt_short()),
            NodeEvent::Established { peer } => eprintln!("session with {} established; checking paths", peer.fmt_short()),
            NodeEvent::Packet { .. }
            | NodeEvent::Local(_)
            | NodeEvent::OpenSockets { .. }
            | NodeEvent::CloseSockets { .. } => {}
        })
        .await?;
        control_task.abort();
        // Remove the gateway mapping before leaving.
        let _ = portmap_stop.send(());
        if let Some(task) = portmap {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        }
        let t = engine.tunnel_stats();
        eprintln!(
            "down: {} packets in, {} out, {} handshakes; dropped locally: {} not from the overlay, {} to unknown peers",
            t.packets_in, t.packets_out, t.handshakes_completed, stats.not_overlay, stats.no_peer
        );
        Ok(())
    })
}

fn rendezvous_server(
    listen: std::net::SocketAddr,
    alt: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    use shipworm::rendezvous::{config::Config, driver::Rendezvous};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let config = Config {
            listen,
            alt_listen: alt,
            ..Config::default()
        };
        let rdv = Rendezvous::bind(config).await?;
        eprintln!(
            "rendezvous on {} (second STUN port {:?})",
            rdv.local_addr(),
            rdv.alt_addr().map(|a| a.port())
        );
        shutdown_signal().await;
        rdv.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return tokio::signal::ctrl_c().await.unwrap_or(()),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
