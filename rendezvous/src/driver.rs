//! The tokio driver: [`Rendezvous`] owns the sockets, the clock and the metrics endpoint, and
//! pumps the sans-IO [`Server`].
//!
//! Datagrams arrive in `recvmmsg` batches (`quinn-udp`, [`RecvBatch`]) into a large receive
//! buffer. Within each batch every datagram that is not a REGISTER (REFRESH, INTRODUCE, STUN: a
//! hash or less each) is served first, and REGISTERs (which may cost a signature check) after
//! them, so a flood of REGISTERs delays registered nodes by at most one batch.
//!
//! What the server sends is gathered ([`SendBatch`]) and leaves in `sendmmsg` calls: the replies
//! to a batch's other datagrams before its REGISTERs are checked, the REGISTERs' replies after.
//! An introduction's two datagrams (the forward and the acknowledgement) go to two destinations,
//! so GSO cannot carry them; `sendmmsg` does, with the datagrams of the whole batch.
//!
//! Every datagram leaves from the local address the request it answers arrived at (quinn-udp
//! reports it as `RecvMeta::dst_ip` from `IP_PKTINFO` / `IPV6_PKTINFO`, and sets it again as
//! `Transmit::src_ip`): on a host with several addresses, a `[::]` socket would otherwise let the
//! kernel pick the source, and a NAT in front of the client drops an answer from an address it
//! never sent to (`docs/protocol.md` §"Answering from the address that was asked"). A socket
//! bound to one address sends from it anyway, and names no source (one control message fewer
//! for the kernel per datagram).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn_udp::UdpSocketState;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::{self, Snapshot};
use crate::server::{Server, Socket, MAX_DATAGRAM, MAX_TRANSMITS};
use crate::udp::{
    bind_udp_with_buffer, recv_buffer_size, reply_source_on, BoundSocket, RecvBatch, SendBatch,
    SERVER_RECV_BUFFER,
};
use crate::wire::kind;

/// `recvmmsg` calls per wake-up before yielding to other events.
pub const RECV_ROUNDS: usize = 8;
/// How often the interface addresses (what REGISTERs may be signed for) are read again.
const ADDRESS_REFRESH: Duration = Duration::from_secs(30);
/// How often the metrics snapshot is refreshed.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);
/// How often a summary line is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(300);
/// A relay TCP connection must finish its TLS handshake within this.
const TCP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A relay TCP connection without a frame for this long is closed (nodes refresh every 25 s).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Datagrams queued toward one TCP connection; more are dropped (counted as send errors).
const TCP_QUEUE: usize = 256;

/// What the relay's TCP connections tell the serving loop.
enum TcpEvent {
    /// A connection finished its TLS handshake: datagrams to `peer` go into `out`.
    Open(SocketAddr, mpsc::Sender<Vec<u8>>),
    /// A datagram from `peer`, which connected to local address `local`.
    Frame(SocketAddr, IpAddr, Vec<u8>),
    /// The connection from `peer` ended.
    Closed(SocketAddr),
}

/// The open relay TCP connections, by the client's address (a TCP address never shares a UDP
/// client's port: a client is either here or on the UDP socket).
type TcpClients = HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>;

/// Accepts relay TCP connections (at most `max` at once) and runs each until it ends.
async fn serve_tcp(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    events: mpsc::Sender<TcpEvent>,
    max: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: this one is closed at once; the ones we serve keep their share.
            continue;
        };
        let peer = shipworm_tunnel::wire::addr::normalize(peer);
        let local = tcp.local_addr().map(|a| a.ip().to_canonical());
        let (acceptor, events) = (acceptor.clone(), events.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(local) = local else { return };
            let _ = tcp.set_nodelay(true);
            let Ok(Ok(tls)) =
                tokio::time::timeout(TCP_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
            if events.send(TcpEvent::Open(peer, out_tx)).await.is_err() {
                return;
            }
            let (mut rd, mut wr) = tokio::io::split(tls);
            let reader = async {
                let mut buf = Vec::with_capacity(crate::tcp::MAX_FRAME);
                loop {
                    match tokio::time::timeout(
                        TCP_IDLE_TIMEOUT,
                        crate::tcp::read_frame(&mut rd, &mut buf),
                    )
                    .await
                    {
                        Ok(Ok(true)) => {
                            let frame = TcpEvent::Frame(peer, local, buf.clone());
                            if events.send(frame).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            };
            let writer = async {
                use tokio::io::AsyncWriteExt;
                while let Some(d) = out_rx.recv().await {
                    if crate::tcp::write_frame(&mut wr, &d).await.is_err() {
                        return;
                    }
                    // Whatever else is queued goes in the same flush.
                    while let Ok(d) = out_rx.try_recv() {
                        if crate::tcp::write_frame(&mut wr, &d).await.is_err() {
                            return;
                        }
                    }
                    if wr.flush().await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = reader => {}
                _ = writer => {}
            }
            let _ = events.send(TcpEvent::Closed(peer)).await;
        });
    }
}

/// A tokio UDP socket with the address form it needs for destinations, and its batch state.
struct Udp {
    socket: UdpSocket,
    /// The address it is bound to.
    bound: SocketAddr,
    dual_stack: bool,
    is_v4: bool,
    state: UdpSocketState,
}

impl Udp {
    fn new(bound: BoundSocket) -> io::Result<Self> {
        let local = bound.socket.local_addr()?;
        let is_v4 = local.is_ipv4();
        let granted = recv_buffer_size(&bound.socket)?;
        // Linux reports twice what it grants for payload; less than asked means rmem_max caps it.
        if granted < SERVER_RECV_BUFFER {
            tracing::warn!(
                asked = SERVER_RECV_BUFFER,
                granted,
                "the kernel granted a smaller UDP receive buffer: a flood will push honest \
                 datagrams out sooner; raise it with `sysctl -w net.core.rmem_max={}`",
                SERVER_RECV_BUFFER
            );
        }
        let socket = UdpSocket::from_std(bound.socket)?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Self {
            socket,
            bound: local,
            dual_stack: bound.dual_stack,
            is_v4,
            state,
        })
    }

    /// The destination as this socket must be given it, or `None` if it cannot reach it.
    fn dest(&self, dest: SocketAddr) -> Option<SocketAddr> {
        match (dest, self.is_v4, self.dual_stack) {
            (SocketAddr::V4(_), true, _) | (SocketAddr::V6(_), false, _) => Some(dest),
            (SocketAddr::V4(_), false, true) => {
                Some(shipworm_tunnel::wire::addr::to_dual_stack(dest))
            }
            _ => None,
        }
    }

    /// Queues `contents` to `dest` from local address `src` (the OS chooses when `None`) on
    /// `out`, this socket's batch; `false` if this socket cannot reach `dest` or the batch is
    /// full.
    fn queue(
        &self,
        out: &mut SendBatch,
        contents: &[u8],
        src: Option<IpAddr>,
        dest: SocketAddr,
    ) -> bool {
        let Some(dest) = self.dest(dest) else {
            return false;
        };
        let src = src.and_then(|ip| reply_source_on(self.bound, ip, dest, self.dual_stack));
        out.push(contents, dest, src)
    }
}

/// What waits to be sent on each UDP socket.
#[derive(Default)]
struct Outgoing {
    primary: SendBatch,
    alt: SendBatch,
}

impl Outgoing {
    /// Whether one more packet's datagrams fit without a flush.
    fn has_room(&self) -> bool {
        let bytes = MAX_TRANSMITS * MAX_DATAGRAM;
        self.primary.has_room(MAX_TRANSMITS, bytes) && self.alt.has_room(MAX_TRANSMITS, bytes)
    }
}

/// Milliseconds since the Unix epoch from the system clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A running rendezvous server.
pub struct Rendezvous {
    local: SocketAddr,
    alt: Option<SocketAddr>,
    relay_tcp: Option<SocketAddr>,
    tcp_task: Option<JoinHandle<()>>,
    metrics: Option<SocketAddr>,
    snapshot: watch::Receiver<Snapshot>,
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<Snapshot>>,
    metrics_task: Option<JoinHandle<()>>,
}

impl Rendezvous {
    /// Binds every socket of `config` and starts serving on the current tokio runtime.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, what: &str| {
            bind_udp_with_buffer(addr, SERVER_RECV_BUFFER)
                .map_err(|e| anyhow::anyhow!("cannot bind {what} UDP socket {addr}: {e}"))
        };
        let primary = Udp::new(bind(config.listen, "main")?)?;
        let alt = config
            .alt_listen
            .map(|a| bind(a, "alternate STUN"))
            .transpose()?
            .map(Udp::new)
            .transpose()?;
        let local = shipworm_tunnel::wire::addr::normalize(primary.socket.local_addr()?);
        let alt_local = alt.as_ref().map(|a| a.socket.local_addr()).transpose()?;
        let dual_stack = primary.dual_stack;
        let core = config.core(
            alt_local.map_or(0, |a| a.port()),
            own_addresses(local, dual_stack),
        );
        core.validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let public = config.public_addrs.clone();
        let server = Server::new(core, Instant::now(), shipworm_tunnel::rng::from_os());
        let (tcp_tx, tcp_rx) = mpsc::channel::<TcpEvent>(1024);
        let (relay_tcp, tcp_task) = match config.relay_tcp.filter(|_| config.relay) {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot bind the relay's TCP listener {addr}: {e}{}",
                        if e.kind() == io::ErrorKind::PermissionDenied {
                            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another \
                             with --relay-tcp ADDR, or --relay-tcp off)"
                        } else {
                            ""
                        }
                    )
                })?;
                let bound = listener.local_addr()?;
                let acceptor = crate::tcp::acceptor()?;
                let max = config.relay_tcp_max_connections;
                (
                    Some(bound),
                    Some(tokio::spawn(serve_tcp(listener, acceptor, tcp_tx, max))),
                )
            }
            None => (None, None),
        };

        let (snap_tx, snapshot) = watch::channel(Snapshot::of(&server));
        let (stop, stop_rx) = watch::channel(false);
        let (metrics, metrics_task) = match config.metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot bind metrics listener {addr}: {e}"))?;
                let bound = listener.local_addr()?;
                let registry = Arc::new(metrics::registry(snapshot.clone()));
                let mut stopped = stop.subscribe();
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                (
                    Some(bound),
                    Some(tokio::spawn(metrics::serve(listener, registry, shutdown))),
                )
            }
            None => (None, None),
        };
        tracing::info!(
            listen = %local,
            dual_stack = primary.dual_stack,
            alt = ?alt_local,
            metrics = ?metrics,
            relay_tcp = ?relay_tcp,
            max_nodes = config.max_nodes,
            addresses = ?server.config().addresses,
            "rendezvous serving"
        );
        let addresses = move || {
            let mut a = own_addresses(local, dual_stack);
            a.extend(public.iter().copied());
            a
        };
        let task = tokio::spawn(run(
            server, primary, alt, tcp_rx, snap_tx, stop_rx, addresses,
        ));
        Ok(Self {
            local,
            alt: alt_local,
            relay_tcp,
            tcp_task,
            metrics,
            snapshot,
            stop,
            task,
            metrics_task,
        })
    }

    /// The main socket's address (a port of 0 in the config is resolved here).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The alternate STUN socket's address.
    pub fn alt_addr(&self) -> Option<SocketAddr> {
        self.alt
    }

    /// The relay's TCP listener's address (with the relay role and `relay_tcp`).
    pub fn relay_tcp_addr(&self) -> Option<SocketAddr> {
        self.relay_tcp
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The latest counters (refreshed twice a second).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Stops serving, waits for the loop to finish and returns the final counters.
    pub async fn shutdown(self) -> Snapshot {
        let _ = self.stop.send(true);
        if let Some(t) = self.tcp_task {
            t.abort();
        }
        if let Some(t) = self.metrics_task {
            let _ = t.await;
        }
        match self.task.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "rendezvous loop failed");
                self.snapshot.borrow().clone()
            }
            Err(_) => self.snapshot.borrow().clone(),
        }
    }

    /// Waits until the serving loop ends on its own (a socket error), returning the error.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match (&mut self.task).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("rendezvous loop failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("rendezvous loop panicked: {e}")),
        }
    }
}

async fn readable(udp: Option<&Udp>) -> io::Result<()> {
    match udp {
        Some(u) => u.socket.readable().await,
        None => std::future::pending().await,
    }
}

/// The addresses nodes may sign REGISTERs for: the bound address when it is specific, else every
/// interface address of the socket's families, with the bound port.
pub fn own_addresses(local: SocketAddr, dual_stack: bool) -> Vec<SocketAddr> {
    let local = shipworm_tunnel::wire::addr::normalize(local);
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let v6 = local.is_ipv6();
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(_) => !v6 || dual_stack,
            IpAddr::V6(_) => v6,
        })
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn run(
    mut server: Server,
    primary: Udp,
    alt: Option<Udp>,
    mut tcp_rx: mpsc::Receiver<TcpEvent>,
    snap_tx: watch::Sender<Snapshot>,
    mut stop: watch::Receiver<bool>,
    addresses: impl Fn() -> Vec<SocketAddr>,
) -> io::Result<Snapshot> {
    let mut batch = RecvBatch::new(&primary.state);
    let mut out = Outgoing::default();
    let mut publish = tokio::time::interval(PUBLISH_INTERVAL);
    let mut log = tokio::time::interval(LOG_INTERVAL);
    log.tick().await;
    let mut refresh = tokio::time::interval(ADDRESS_REFRESH);
    refresh.tick().await;
    let mut tcp = TcpClients::new();
    loop {
        let deadline = server
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            // Whichever socket woke us, both are served (a try on an empty one costs one
            // system call): under a flood the main socket is always readable, and a biased
            // select would never reach the second port's STUN checks.
            r = primary.socket.readable() => {
                r?;
                pump(&mut server, &primary, alt.as_ref(), &tcp, Socket::Primary, &mut batch, &mut out).await?;
                if let Some(a) = alt.as_ref() {
                    pump(&mut server, &primary, Some(a), &tcp, Socket::Alt, &mut batch, &mut out).await?;
                }
            }
            r = readable(alt.as_ref()) => {
                r?;
                if let Some(a) = alt.as_ref() {
                    pump(&mut server, &primary, Some(a), &tcp, Socket::Alt, &mut batch, &mut out).await?;
                }
                pump(&mut server, &primary, alt.as_ref(), &tcp, Socket::Primary, &mut batch, &mut out).await?;
            }
            Some(ev) = tcp_rx.recv() => match ev {
                TcpEvent::Open(peer, out) => {
                    tcp.insert(peer, out);
                }
                TcpEvent::Closed(peer) => {
                    tcp.remove(&peer);
                }
                TcpEvent::Frame(peer, local, datagram) => {
                    server.handle_packet_at(Instant::now(), unix_ms(), Socket::Primary, Some(local), peer, &datagram);
                    queue_all(&mut server, &primary, alt.as_ref(), &tcp, &mut out);
                    flush(&mut server, &primary, alt.as_ref(), &mut out).await;
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => server.handle_timeout(Instant::now()),
            _ = publish.tick() => { let _ = snap_tx.send(Snapshot::of(&server)); }
            _ = refresh.tick() => server.set_addresses(&addresses()),
            _ = log.tick() => {
                let s = server.stats();
                tracing::info!(
                    registered = server.registered(),
                    received = s.received.iter().sum::<u64>(),
                    dropped = s.dropped.iter().sum::<u64>(),
                    forwarded = s.introductions_forwarded,
                    "rendezvous summary"
                );
            }
        }
    }
    let snap = Snapshot::of(&server);
    let _ = snap_tx.send(snap.clone());
    tracing::info!(registered = server.registered(), "rendezvous stopped");
    Ok(snap)
}

/// Handles what waits on one socket, in up to [`RECV_ROUNDS`] batches: in each, every datagram
/// but REGISTERs first, then the REGISTERs, each group's datagrams sent after it.
async fn pump(
    server: &mut Server,
    primary: &Udp,
    alt: Option<&Udp>,
    tcp: &TcpClients,
    which: Socket,
    batch: &mut RecvBatch,
    out: &mut Outgoing,
) -> io::Result<()> {
    let sock = match which {
        Socket::Primary => primary,
        Socket::Alt => alt.unwrap_or(primary),
    };
    for _ in 0..RECV_ROUNDS {
        match batch.try_recv(&sock.socket, &sock.state) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // ICMP errors surface on the next recv on Linux; they say nothing about us.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let wall = unix_ms();
        for registers in [false, true] {
            for (m, datagram) in batch.datagrams() {
                if (datagram.first() == Some(&kind::REGISTER)) != registers {
                    continue;
                }
                if !out.has_room() {
                    flush(server, primary, alt, out).await;
                }
                server.handle_packet_at(now, wall, which, m.dst_ip, m.addr, datagram);
                queue_all(server, primary, alt, tcp, out);
            }
            flush(server, primary, alt, out).await;
        }
    }
    Ok(())
}

/// Takes what the server has to send: to a relay TCP client over its connection, to anyone else
/// into the batch of the socket it leaves from. Call [`flush`] before the batches fill
/// ([`Outgoing::has_room`]).
fn queue_all(
    server: &mut Server,
    primary: &Udp,
    alt: Option<&Udp>,
    tcp: &TcpClients,
    out: &mut Outgoing,
) {
    while let Some(t) = server.poll_transmit() {
        let dest = shipworm_tunnel::wire::addr::normalize(t.dest);
        let queued = match tcp.get(&dest) {
            Some(conn) if t.socket == Socket::Primary => conn.try_send(t.contents.to_vec()).is_ok(),
            _ => match (t.socket, alt) {
                (Socket::Alt, Some(a)) => a.queue(&mut out.alt, t.contents, t.src, t.dest),
                _ => primary.queue(&mut out.primary, t.contents, t.src, t.dest),
            },
        };
        if !queued {
            server.record_send_error();
        }
    }
}

/// Sends what waits on both sockets, and counts what the kernel refused as send errors.
async fn flush(server: &mut Server, primary: &Udp, alt: Option<&Udp>, out: &mut Outgoing) {
    if !out.primary.is_empty() {
        out.primary.flush(&primary.socket, &primary.state).await;
    }
    if let Some(a) = alt.filter(|_| !out.alt.is_empty()) {
        out.alt.flush(&a.socket, &a.state).await;
    }
    for _ in 0..out.primary.take_failed() + out.alt.take_failed() {
        server.record_send_error();
    }
}
