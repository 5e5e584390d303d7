//! The tokio driver of the [`Engine`]: one UDP socket, an optional TUN interface, the clock.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shipworm_tunnel::tunnel::SendError;
use tokio::net::UdpSocket;
use tun_rs::AsyncDevice;

use crate::engine::paths::CandidateKind;
use crate::engine::{Engine, NodeEvent};
use crate::io::batch_udp::BatchSocket;
use crate::io::relay_tcp::{LinkEvent, Links};
use crate::io::tun::{self, ReadPacket, TunIo, READ_BUDGET, WRITE_BATCH};

/// Spare buffers the engine is topped up to from the QUIC pipe's.
const SPARE_TARGET: usize = 64;
/// Receive calls (each a batch of datagrams) per wake-up, so timers and sends get their turn.
const RECV_ROUNDS: usize = 4;
/// Datagrams handled per wake-up at most (the calls stop once past it): what they cause must fit
/// the engine's event queue until the driver drains it.
const RECV_BUDGET: usize = shipworm_tunnel::tunnel::MAX_QUEUED / 2;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of local packets the engine refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Packets from the interface that are not from our overlay address (link-local chatter).
    pub not_overlay: u64,
    /// Packets to an overlay address of no known peer.
    pub no_peer: u64,
    /// Packets over the MTU (answered with Packet Too Big).
    pub too_big: u64,
    /// Datagrams the socket refused.
    pub send_errors: u64,
    /// Packets the TUN interface refused (the node goes on; the count says it happened). A
    /// failed coalesced write counts its whole batch.
    pub tun_write_errors: u64,
    /// TUN reads that brought one large segment (segmentation offload), split here.
    pub tun_large_reads: u64,
    /// Packets read from the TUN that the tunnel sealed in their read buffers (no copy).
    pub tun_sealed_in_place: u64,
    /// Packets written to the TUN from the buffers the tunnel opened them in (no copy).
    pub tun_written_in_place: u64,
    /// TUN reads whose offload header or segment could not be used (dropped).
    pub tun_bad_reads: u64,
}

impl DriverStats {
    /// Every drop counter with its name (for metrics and reports); `tun_large_reads`,
    /// `tun_sealed_in_place` and `tun_written_in_place` count work, not drops, and are reported
    /// on their own.
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        let Self {
            not_overlay,
            no_peer,
            too_big,
            send_errors,
            tun_write_errors,
            tun_large_reads: _,
            tun_sealed_in_place: _,
            tun_written_in_place: _,
            tun_bad_reads,
        } = self;
        // Destructured, so a new counter fails to compile until it is listed here too.
        [
            ("not_overlay", *not_overlay),
            ("no_peer", *no_peer),
            ("too_big", *too_big),
            ("send_errors", *send_errors),
            ("tun_write_errors", *tun_write_errors),
            ("tun_bad_reads", *tun_bad_reads),
        ]
    }
}

/// Something learned outside the engine (by slow discovery tasks) to hand to it.
#[derive(Debug)]
pub enum DriverCommand {
    /// A new local candidate.
    Candidate(SocketAddr, CandidateKind),
    /// A gateway port mapping appeared or went away.
    PortMapped(bool),
    /// Connect (again) to a peer, at these addresses if known.
    Connect(shipworm_tunnel::NodeId, Vec<SocketAddr>),
    /// Register with a rendezvous named by the ticket of a peer we dial (kept while needed).
    AddTicketRendezvous(SocketAddr, shipworm_tunnel::NodeId),
    /// Report the candidate and pair table.
    Diagnostics(tokio::sync::oneshot::Sender<crate::engine::Diagnostics>),
    /// Report the driver's and the tunnel's counters.
    Counters(tokio::sync::oneshot::Sender<(DriverStats, shipworm_tunnel::tunnel::Stats)>),
}

/// Where the IPv6 packets of the overlay come from and go to on this host.
#[derive(Clone, Copy)]
pub enum LocalSide<'a> {
    /// Nowhere (a node that only relays nothing; tests).
    None,
    /// A TUN interface: any program's packets.
    Tun(&'a AsyncDevice),
    /// quinn through the overlay socket.
    Quic(&'a crate::quic::socket::Pipe),
}

/// Pumps `engine` between `socket` and `tun` until `stop` completes; `commands` feeds results of
/// slow discovery (port mappings) in as they come; every event that is not a packet for the
/// interface goes to `on_event`.
pub async fn run(
    engine: &mut Engine,
    socket: &UdpSocket,
    local: LocalSide<'_>,
    commands: &mut tokio::sync::mpsc::Receiver<DriverCommand>,
    stop: impl Future<Output = ()>,
    mut on_event: impl FnMut(&NodeEvent),
) -> io::Result<DriverStats> {
    let dual_stack = socket.local_addr()?.is_ipv6();
    // Extra sockets for birthday probing: each has a reader task feeding one channel.
    let mut extra: std::collections::HashMap<
        u16,
        (std::sync::Arc<UdpSocket>, tokio::task::JoinHandle<()>),
    > = Default::default();
    let (extra_tx, mut extra_rx) = tokio::sync::mpsc::channel::<(u16, SocketAddr, Vec<u8>)>(1024);
    let mut udp = BatchSocket::new(socket)?;
    let mut quic_out: Vec<Vec<u8>> = Vec::new();
    // Buffers of datagrams sent, for quinn's next packets.
    let mut sent: Vec<Vec<u8>> = Vec::new();
    // Packets opened for quinn, handed over in one go.
    let mut for_quic: Vec<Vec<u8>> = Vec::new();
    let mut tun = match local {
        LocalSide::Tun(t) => Some(TunIo::new(t, t.mtu()?)),
        _ => None,
    };
    // Packets for the interface are opened after room for its virtio-net header, and written
    // from the buffers they were opened in.
    engine.set_receive_room(if tun.is_some() { tun::HEADROOM } else { 0 });
    let pipe = match local {
        LocalSide::Quic(p) => Some(p),
        _ => None,
    };
    let mut stats = DriverStats::default();
    // TCP connections to relays standing in for rendezvous whose UDP is silent.
    let mut links = Links::default();
    let mut udp_heard: Vec<SocketAddr> = Vec::new();
    tokio::pin!(stop);
    loop {
        let deadline = engine
            .poll_timeout()
            .into_iter()
            .chain(links.next_udp_retry())
            .chain(links.next_retry())
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = &mut stop => break,
            r = socket.readable() => {
                r?;
                // Whatever is waiting, in a few batched calls: the transmits and events it causes
                // are drained once for all of it.
                let (now, wall) = (Instant::now(), unix_ms());
                // Sources are looked at only while some rendezvous is reached over TCP.
                let watch = links.any_wanted();
                let mut handled = 0;
                for _ in 0..RECV_ROUNDS {
                    let got = udp.try_recv(|from, d| {
                        if watch {
                            let from = shipworm_tunnel::wire::addr::normalize(from);
                            if links.wants(&from) && !udp_heard.contains(&from) {
                                udp_heard.push(from);
                            }
                        }
                        engine.handle_packet(now, wall, from, d)
                    });
                    match got {
                        Ok(n) => {
                            handled += n;
                            if handled >= RECV_BUDGET {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors of earlier sends surface here on Linux; they are not fatal.
                        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {}
                        Err(e) => return Err(e),
                    }
                }
                // A rendezvous reached over TCP answered over UDP: back to UDP.
                for server in udp_heard.drain(..) {
                    if links.udp_works(&server) {
                        tracing::info!(target: "shipworm::io::relay_tcp", %server, "the rendezvous answers over UDP again: leaving its relay's TCP port");
                        engine.set_rendezvous_tcp(now, server, false);
                    }
                }
            }
            Some(ev) = links.next() => {
                links.note(&ev);
                let (now, wall) = (Instant::now(), unix_ms());
                match ev {
                    LinkEvent::Up(server) => {
                        tracing::info!(target: "shipworm::io::relay_tcp", %server, "reaching the rendezvous over its relay's TCP port");
                        engine.set_rendezvous_tcp(now, server, true);
                    }
                    LinkEvent::Datagram(server, d) => engine.handle_packet(now, wall, server, &d),
                    LinkEvent::Down(server, why) => {
                        tracing::warn!(target: "shipworm::io::relay_tcp", %server, "{why}");
                        engine.set_rendezvous_tcp(now, server, false);
                        engine.rendezvous_unreachable(server);
                    }
                }
            }
            r = async { match tun.as_mut() { Some(t) => t.read().await, None => std::future::pending().await } } => {
                r?;
                // What the interface holds now, in a few reads (each up to a 64 KiB segment,
                // split): the datagrams they become leave together in GSO trains.
                if let Some(t) = tun.as_mut() {
                    let (now, wall) = (Instant::now(), unix_ms());
                    let mut taken = 0;
                    loop {
                        taken += t.take_packets(|packet| {
                            let sent = match packet {
                                ReadPacket::InPlace(buf) => {
                                    stats.tun_sealed_in_place += 1;
                                    engine.send_ip_in(now, wall, buf)
                                }
                                ReadPacket::Borrowed(packet) => engine.send_ip(now, wall, packet),
                            };
                            count_refusal(&mut stats, sent);
                        });
                        if taken >= READ_BUDGET || !t.try_read()? {
                            break;
                        }
                    }
                    (stats.tun_large_reads, stats.tun_bad_reads) = (t.large_reads, t.bad_reads);
                }
            }
            _ = std::future::poll_fn(|cx| match pipe {
                Some(p) => p.poll_outbound(cx, &mut quic_out),
                None => std::task::Poll::Pending,
            }) => {
                // Sealed in place; their buffers come back as the datagrams leave.
                let (now, wall) = (Instant::now(), unix_ms());
                for packet in quic_out.drain(..) {
                    count_refusal(&mut stats, engine.send_ip_in(now, wall, packet));
                }
            }
            Some((local, from, bytes)) = extra_rx.recv() => {
                engine.handle_packet_on(Instant::now(), unix_ms(), local, from, &bytes);
            }
            Some(c) = commands.recv() => match c {
                DriverCommand::Candidate(addr, kind) => engine.add_local_candidate(addr, kind),
                DriverCommand::PortMapped(m) => engine.set_port_mapped(m),
                DriverCommand::Connect(peer, direct) => engine.connect(Instant::now(), unix_ms(), peer, &direct),
                DriverCommand::AddTicketRendezvous(server, peer) => engine.add_ticket_rendezvous(Instant::now(), server, peer),
                DriverCommand::Diagnostics(reply) => {
                    let _ = reply.send(engine.diagnostics());
                }
                DriverCommand::Counters(reply) => {
                    let _ = reply.send((stats.clone(), engine.tunnel_stats().clone()));
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                engine.handle_timeout(now, unix_ms());
                links.retry_due(now);
                // While on TCP, UDP is tried again now and then: any answer moves us back.
                for server in links.udp_retry_due(now) {
                    let (req, _) = shipworm_rendezvous::wire::stun::binding_request();
                    let dest = if dual_stack { shipworm_tunnel::wire::addr::to_dual_stack(server) } else { server };
                    if udp.send(dest, &req).await.is_err() {
                        stats.send_errors += 1;
                    }
                }
            }
        }
        while let Some(t) = engine.poll_transmit() {
            if t.local == 0 && links.is_up(&t.dest) {
                if !links.send(&t.dest, t.contents) {
                    stats.send_errors += 1;
                }
                continue;
            }
            if t.local != 0 {
                match extra.get(&t.local) {
                    Some((s, _)) if t.dest.is_ipv4() => {
                        if s.send_to(&t.contents, t.dest).await.is_err() {
                            stats.send_errors += 1;
                        }
                    }
                    _ => stats.send_errors += 1,
                }
                engine.recycle(t.contents);
                continue;
            }
            let dest = if dual_stack {
                shipworm_tunnel::wire::addr::to_dual_stack(t.dest)
            } else {
                t.dest
            };
            if !dual_stack && dest.is_ipv6() {
                stats.send_errors += 1;
                continue;
            }
            // Gathered into GSO trains; waits only when the socket's buffer is full.
            if udp.send(dest, &t.contents).await.is_err() {
                stats.send_errors += 1;
            }
            // quinn builds its next packets in them (the tunnel sealed its last ones in place).
            match (pipe, tun.as_mut()) {
                (Some(_), _) => sent.push(t.contents),
                // The next reads land in them, and are sealed in place.
                (None, Some(io)) => {
                    if let Some(unwanted) = io.recycle(t.contents) {
                        engine.recycle(unwanted);
                    }
                }
                (None, None) => engine.recycle(t.contents),
            }
        }
        if udp.flush().await.is_err() {
            stats.send_errors += 1;
        }
        if let Some(p) = pipe {
            p.recycle(sent.drain(..));
        }
        while let Some(e) = engine.poll_event() {
            match &e {
                NodeEvent::OpenSockets { first, count } => {
                    let mut opened = 0u16;
                    for i in 0..*count {
                        let Ok(s) = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await
                        else {
                            break;
                        };
                        let s = std::sync::Arc::new(s);
                        let id = first.wrapping_add(i);
                        let (reader, tx) = (s.clone(), extra_tx.clone());
                        let task = tokio::spawn(async move {
                            let mut buf = vec![0u8; 2048];
                            while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                                if tx.send((id, from, buf[..n].to_vec())).await.is_err() {
                                    break;
                                }
                            }
                        });
                        extra.insert(id, (s, task));
                        opened += 1;
                    }
                    engine.sockets_opened(*first, opened);
                    continue;
                }
                NodeEvent::RendezvousSilent {
                    server,
                    tcp: Some(tcp),
                } => links.want(*server, *tcp),
                NodeEvent::CloseSockets { ids } => {
                    for id in ids {
                        if let Some((_, task)) = extra.remove(id) {
                            task.abort();
                        }
                    }
                    continue;
                }
                _ => {}
            }
            match (e, tun.as_mut(), pipe) {
                // Written together after the loop, coalesced per flow.
                (NodeEvent::Packet { packet, .. }, Some(t), _) => {
                    if let Some(copied) = t.queue_opened(packet) {
                        engine.recycle(copied);
                    }
                }
                (NodeEvent::Local(packet), Some(t), _) => {
                    t.queue(&packet);
                    engine.recycle(packet);
                }
                // Handed to quinn together after the loop.
                (NodeEvent::Packet { packet, .. }, None, Some(_)) => {
                    for_quic.push(packet.into_packet())
                }
                (e, _, _) => on_event(&e),
            }
            if let Some(t) = tun.as_mut().filter(|t| t.queued() >= WRITE_BATCH) {
                stats.tun_write_errors += t.flush().await;
            }
        }
        if let Some(t) = tun.as_mut() {
            stats.tun_write_errors += t.flush().await;
            // The engine opens the next packets in them.
            t.give_back(|b| engine.recycle(b));
            stats.tun_written_in_place = t.written_in_place;
        }
        if let Some(p) = pipe {
            if !for_quic.is_empty() {
                p.deliver(&mut for_quic);
                // What quinn did not take (not for it, or its queue is full).
                for b in for_quic.drain(..) {
                    engine.recycle(b);
                }
            }
        }
        // Packets quinn has read leave their buffers in the pipe: the tunnel opens the next
        // ones into them (a receiver has few sends of its own to recycle).
        if let Some(p) = pipe {
            let want = SPARE_TARGET.saturating_sub(engine.spare_buffers());
            if want > 0 {
                p.take_spare(want, |b| engine.recycle(b));
            }
        }
    }
    for (_, (_, task)) in extra {
        task.abort();
    }
    if let Some(p) = pipe {
        p.close();
    }
    Ok(stats)
}

/// Counts a local packet the tunnel refused, by its cause.
fn count_refusal(stats: &mut DriverStats, sent: Result<(), SendError>) {
    match sent {
        Ok(()) => {}
        Err(SendError::BadPacket(_)) => stats.not_overlay += 1,
        Err(SendError::NoPeer(_)) => stats.no_peer += 1,
        Err(SendError::TooBig { .. }) => stats.too_big += 1,
    }
}
