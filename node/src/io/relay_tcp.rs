//! The node's side of the relay over TCP (`docs/protocol.md` §"Relaying over TCP"): when a
//! rendezvous does not answer our UDP, the driver opens one TLS connection to its relay's TCP
//! port and sends it every datagram meant for that server (registration, introductions, relayed
//! tunnel packets). Meanwhile a STUN request goes to the server over UDP now and then; the first
//! datagram from the server over UDP closes the connection and the node is back on UDP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_rendezvous::tcp;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Connecting (TCP and TLS) gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A server whose TCP connection failed or ended is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// How often UDP is tried again while on TCP.
pub const UDP_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Datagrams queued toward one connection; more are dropped (counted by the driver).
const QUEUE: usize = 512;

/// What a connection task tells the driver.
#[derive(Debug)]
pub enum LinkEvent {
    /// The connection to the relay of `server` is up.
    Up(SocketAddr),
    /// A datagram from `server` over TCP.
    Datagram(SocketAddr, Vec<u8>),
    /// The connection to `server`'s relay failed or ended, and why.
    Down(SocketAddr, String),
}

struct Link {
    tx: mpsc::Sender<Vec<u8>>,
    up: bool,
    task: JoinHandle<()>,
}

/// The node's TCP connections to relays, by the rendezvous they stand in for.
pub struct Links {
    links: HashMap<SocketAddr, Link>,
    /// When a server may be tried again after a failure.
    backoff: HashMap<SocketAddr, Instant>,
    events_tx: mpsc::Sender<LinkEvent>,
    events: mpsc::Receiver<LinkEvent>,
    /// When UDP was last tried again.
    last_udp_try: Instant,
    /// Servers whose UDP is silent, and their relay's TCP address: connected to (again) while
    /// they stay here.
    wanted: HashMap<SocketAddr, SocketAddr>,
}

impl Default for Links {
    fn default() -> Self {
        let (events_tx, events) = mpsc::channel(1024);
        Self {
            links: HashMap::new(),
            backoff: HashMap::new(),
            events_tx,
            events,
            last_udp_try: Instant::now(),
            wanted: HashMap::new(),
        }
    }
}

impl Links {
    /// `server`'s UDP is silent: reach it through its relay at `tcp` from now on (connecting
    /// again after failures) until its UDP answers again.
    pub fn want(&mut self, server: SocketAddr, tcp: SocketAddr) {
        self.wanted.insert(server, tcp);
        self.open(server, tcp);
    }

    /// `server` answered over UDP: its connection (if any) closes. True if one was open or
    /// wanted.
    pub fn udp_works(&mut self, server: &SocketAddr) -> bool {
        let wanted = self.wanted.remove(server).is_some();
        self.close(server) || wanted
    }

    /// Connects again to wanted servers whose backoff has passed.
    pub fn retry_due(&mut self, now: Instant) {
        let due: Vec<(SocketAddr, SocketAddr)> = self
            .wanted
            .iter()
            .filter(|(s, _)| !self.links.contains_key(s))
            .filter(|(s, _)| self.backoff.get(s).is_none_or(|t| now >= *t))
            .map(|(s, t)| (*s, *t))
            .collect();
        for (server, tcp) in due {
            self.open(server, tcp);
        }
    }

    /// When a wanted server may next be connected to again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.wanted
            .keys()
            .filter(|s| !self.links.contains_key(s))
            .filter_map(|s| self.backoff.get(s).copied())
            .min()
    }

    /// Whether any rendezvous is reached (or to be reached) over TCP: the receive path asks this
    /// before looking at a datagram's source.
    pub fn any_wanted(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// Whether `server` is reached (or to be reached) over TCP.
    pub fn wants(&self, server: &SocketAddr) -> bool {
        self.wanted.contains_key(server)
    }

    /// Opens a connection to `tcp`, the relay of `server` (unless one exists or a recent
    /// attempt failed).
    fn open(&mut self, server: SocketAddr, tcp: SocketAddr) {
        if self.links.contains_key(&server)
            || self
                .backoff
                .get(&server)
                .is_some_and(|t| Instant::now() < *t)
        {
            return;
        }
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let events = self.events_tx.clone();
        let task = tokio::spawn(async move {
            let stream = match tcp::connect(tcp, CONNECT_TIMEOUT).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = events
                        .send(LinkEvent::Down(server, format!("relay TCP {tcp}: {e}")))
                        .await;
                    return;
                }
            };
            if events.send(LinkEvent::Up(server)).await.is_err() {
                return;
            }
            let (mut rd, mut wr) = tokio::io::split(stream);
            let reader = async {
                let mut buf = Vec::with_capacity(tcp::MAX_FRAME);
                loop {
                    match tcp::read_frame(&mut rd, &mut buf).await {
                        Ok(true) => {
                            let d = LinkEvent::Datagram(server, buf.clone());
                            if events.send(d).await.is_err() {
                                return "the node stopped".to_string();
                            }
                        }
                        Ok(false) => return format!("relay TCP {tcp}: closed by the relay"),
                        Err(e) => return format!("relay TCP {tcp}: {e}"),
                    }
                }
            };
            let writer = async {
                while let Some(d) = rx.recv().await {
                    if let Err(e) = tcp::write_frame(&mut wr, &d).await {
                        return format!("relay TCP {tcp}: {e}");
                    }
                    while let Ok(d) = rx.try_recv() {
                        if let Err(e) = tcp::write_frame(&mut wr, &d).await {
                            return format!("relay TCP {tcp}: {e}");
                        }
                    }
                    if let Err(e) = wr.flush().await {
                        return format!("relay TCP {tcp}: {e}");
                    }
                }
                "closed by the node".to_string()
            };
            let why = tokio::select! {
                w = reader => w,
                w = writer => w,
            };
            let _ = events.send(LinkEvent::Down(server, why)).await;
        });
        self.links.insert(
            server,
            Link {
                tx,
                up: false,
                task,
            },
        );
    }

    /// The next event of a connection.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// Notes an event: a link up, or gone (with a backoff before the next attempt).
    pub fn note(&mut self, e: &LinkEvent) {
        match e {
            LinkEvent::Up(server) => {
                if let Some(l) = self.links.get_mut(server) {
                    l.up = true;
                }
            }
            LinkEvent::Down(server, _) => {
                self.links.remove(server);
                self.backoff.insert(*server, Instant::now() + RETRY_AFTER);
            }
            LinkEvent::Datagram(..) => {}
        }
    }

    /// Whether datagrams to `server` go over TCP.
    pub fn is_up(&self, server: &SocketAddr) -> bool {
        self.links.get(server).is_some_and(|l| l.up)
    }

    /// Queues `datagram` toward `server` over its connection; false if it is full or gone.
    pub fn send(&self, server: &SocketAddr, datagram: Vec<u8>) -> bool {
        self.links
            .get(server)
            .is_some_and(|l| l.tx.try_send(datagram).is_ok())
    }

    fn close(&mut self, server: &SocketAddr) -> bool {
        match self.links.remove(server) {
            Some(l) => {
                l.task.abort();
                true
            }
            None => false,
        }
    }

    /// Servers reached over TCP whose UDP is due to be tried again (every
    /// [`UDP_RETRY_INTERVAL`]).
    pub fn udp_retry_due(&mut self, now: Instant) -> Vec<SocketAddr> {
        if now.saturating_duration_since(self.last_udp_try) < UDP_RETRY_INTERVAL {
            return Vec::new();
        }
        self.last_udp_try = now;
        self.links
            .iter()
            .filter(|(_, l)| l.up)
            .map(|(s, _)| *s)
            .collect()
    }

    /// When UDP is next to be tried, if any connection is up.
    pub fn next_udp_retry(&self) -> Option<Instant> {
        self.links
            .values()
            .any(|l| l.up)
            .then_some(self.last_udp_try + UDP_RETRY_INTERVAL)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for l in self.links.values() {
            l.task.abort();
        }
    }
}
