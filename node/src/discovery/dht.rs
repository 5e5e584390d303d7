//! The Mainline DHT side of discovery: a client that publishes our [`Record`] and resolves
//! others', and a DHT server node for a private network (`shipworm dht-node`).
//!
//! The client runs `pkarr`'s DHT client (BEP 44 mutable items over the `mainline` crate, on its
//! own thread and UDP socket, in client mode: it stores nothing for others). Resolved records go
//! through [`record::verify`](super::record) rules and the [`RecordCache`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pkarr::dht::{DhtClient, DhtConfig, ResolveError};
use shipworm_tunnel::{Identity, NodeId};
use tokio::sync::{oneshot, watch};

use super::record::{self, Record, RecordCache, RecordError};

/// Republish this often while nothing changes: DHT nodes drop BEP 44 items after about two
/// hours (libtorrent's default; BEP 44 asks for at least that), so hourly keeps one alive.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(3600);
/// The first wait after a failed publication; it doubles up to [`REPUBLISH_INTERVAL`].
pub const PUBLISH_RETRY_FIRST: Duration = Duration::from_secs(15);
/// How long a resolve waits for the rest of the query once it holds a valid record.
pub const FIRST_GRACE: Duration = Duration::from_millis(250);
/// How long a resolve may take before it gives up.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// The default port of `shipworm dht-node`, BitTorrent's usual DHT port.
pub const DHT_PORT: u16 = 6881;
/// How many bootstrap nodes a node is given at most.
pub const MAX_BOOTSTRAP: usize = 16;

/// Where the DHT is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtOptions {
    /// Bootstrap nodes of a private DHT; `None` for the public Mainline DHT's own.
    pub bootstrap: Option<Vec<SocketAddrV4>>,
    /// Publish our record (opt-in: it tells anyone which rendezvous we use).
    pub publish: bool,
    /// The client's UDP port (default: any free one).
    pub port: Option<u16>,
}

/// Why a DHT operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    /// Nobody in the DHT holds a record for the NodeId.
    #[error("no record for {0} in the DHT: is the peer running with --publish dht?")]
    NotFound(NodeId),
    /// Records were found but none was acceptable.
    #[error("the DHT's record for {0} was refused: {1}")]
    Refused(NodeId, RecordError),
    /// No DHT node could be asked.
    #[error(
        "no DHT node answered: {0} (check --dht-bootstrap and that UDP to the DHT is not blocked)"
    )]
    Unreachable(String),
    /// Publishing failed.
    #[error("publishing our record to the DHT failed: {0}")]
    Publish(String),
    /// The DHT client could not start.
    #[error("cannot start the DHT client: {0}")]
    Start(String),
    /// The lookup took longer than [`RESOLVE_TIMEOUT`].
    #[error("no answer from the DHT for {0} within {RESOLVE_TIMEOUT:?}")]
    Timeout(NodeId),
}

/// Resolves `HOST:PORT` bootstrap nodes (IPv4: the Mainline DHT is IPv4 in this client).
pub fn resolve_bootstrap(names: &[String]) -> Result<Vec<SocketAddrV4>, String> {
    if names.len() > MAX_BOOTSTRAP {
        return Err(format!("at most {MAX_BOOTSTRAP} --dht-bootstrap nodes"));
    }
    let mut out = Vec::new();
    for n in names {
        let addrs = n
            .to_socket_addrs()
            .map_err(|e| format!("--dht-bootstrap `{n}`: {e} (expected HOST:PORT)"))?;
        let v4 = addrs
            .filter_map(|a| match a {
                SocketAddr::V4(a) => Some(a),
                SocketAddr::V6(_) => None,
            })
            .next()
            .ok_or_else(|| {
                format!("--dht-bootstrap `{n}` has no IPv4 address (the DHT runs over IPv4)")
            })?;
        out.push(v4);
    }
    Ok(out)
}

/// A DHT client with its record cache.
#[derive(Debug, Clone)]
pub struct Dht {
    /// The client once it runs (`None` while it starts).
    client: watch::Receiver<Option<Result<DhtClient, DhtError>>>,
    cache: Arc<Mutex<RecordCache>>,
}

impl Dht {
    /// Starts a client (its own thread and UDP socket) bootstrapping from `options`. Returns at
    /// once: starting looks the public bootstrap nodes' names up, which can take seconds on a
    /// network without DNS, so it runs on its own thread and the first lookup or publication
    /// waits for it (and fails with its error, if it failed).
    pub fn start(options: &DhtOptions) -> Result<Self, DhtError> {
        let mut config = DhtConfig::default();
        config.bootstrap = options.bootstrap.clone();
        config.port = options.port;
        let (tx, rx) = watch::channel(None);
        std::thread::Builder::new()
            .name("shipworm-dht-start".into())
            .spawn(move || {
                let client = DhtClient::build(config).map_err(|e| DhtError::Start(e.to_string()));
                let _ = tx.send(Some(client));
            })
            .map_err(|e| DhtError::Start(e.to_string()))?;
        Ok(Self {
            client: rx,
            cache: Arc::default(),
        })
    }

    /// The running client, once started.
    async fn client(&self) -> Result<DhtClient, DhtError> {
        let mut rx = self.client.clone();
        let started = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| DhtError::Start("the starting thread ended".into()))?;
        match &*started {
            Some(r) => r.clone(),
            None => Err(DhtError::Start("not started".into())),
        }
    }

    /// Signs and publishes `record` under `identity`'s key, timestamped now.
    pub async fn publish(&self, identity: &Identity, record: &Record) -> Result<(), DhtError> {
        let packet = record::sign(identity, record, unix_micros())
            .map_err(|e| DhtError::Publish(e.to_string()))?;
        self.client()
            .await?
            .publish(&packet)
            .await
            .map(|_| ())
            .map_err(|e| DhtError::Publish(e.to_string()))
    }

    /// `node`'s record: from the cache while fresh, else the most recent the DHT holds, signed
    /// by `node` and newer than any seen before (an older one is refused, not used).
    pub async fn resolve(&self, node: NodeId) -> Result<Record, DhtError> {
        if let Some(r) = self.lock().get(Instant::now(), node) {
            return Ok(r.clone());
        }
        let key = record::public_key(node);
        let started = Instant::now();
        let query = async { Ok::<_, DhtError>(self.client().await?.resolve(&key, None).await) };
        let response = tokio::time::timeout(RESOLVE_TIMEOUT, query)
            .await
            .map_err(|_| DhtError::Timeout(node))??;
        let first = response.first().cloned();
        // The whole query, so the most recent copy wins over a stale one a slow node still holds;
        // but a query ends only when its last request has been answered or timed out (seconds,
        // on the public DHT), so once a valid answer is in hand it waits only FIRST_GRACE more,
        // and whatever newer record the rest of the query brings replaces the cached one.
        let wait = match first {
            Some(_) => FIRST_GRACE,
            None => RESOLVE_TIMEOUT.saturating_sub(started.elapsed()),
        };
        let mut completion = Box::pin(response.complete());
        let outcome = match tokio::time::timeout(wait, &mut completion).await {
            Ok(o) => o,
            Err(_) => {
                if let Some(p) = &first {
                    if let Ok(r) = accept(&self.cache, node, p) {
                        let cache = self.cache.clone();
                        tokio::spawn(async move {
                            if let Ok(newer) = completion.await.most_recent {
                                let _ = accept(&cache, node, &newer);
                            }
                        });
                        return Ok(r);
                    }
                }
                // Nothing yet, or only a copy older than one seen: the rest of the query decides.
                let rest = RESOLVE_TIMEOUT.saturating_sub(started.elapsed());
                tokio::time::timeout(rest, completion)
                    .await
                    .map_err(|_| DhtError::Timeout(node))?
            }
        };
        let packet = match (outcome.most_recent, first) {
            (Ok(p), _) => p,
            (Err(_), Some(p)) => p,
            (Err(ResolveError::NotFound), None) => return Err(DhtError::NotFound(node)),
            (Err(ResolveError::InvalidSignedPacket { seq }), None) => {
                return Err(DhtError::Refused(
                    node,
                    RecordError::BadSignature(node, format!("the item at sequence {seq}")),
                ))
            }
            (Err(e), None) => return Err(DhtError::Unreachable(e.to_string())),
        };
        accept(&self.cache, node, &packet).map_err(|e| DhtError::Refused(node, e))
    }

    /// Forgets `node`'s cached record (it led nowhere); the next resolve asks the DHT.
    pub fn forget(&self, node: NodeId) {
        self.lock().expire(Instant::now(), node);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A packet pkarr verified, read as `node`'s record and offered to the cache.
fn accept(
    cache: &Mutex<RecordCache>,
    node: NodeId,
    packet: &pkarr::SignedPacket,
) -> Result<Record, RecordError> {
    let r = record::read(node, packet)?;
    cache.lock().unwrap_or_else(|e| e.into_inner()).offer(
        Instant::now(),
        node,
        packet.timestamp().as_u64(),
        r.clone(),
    )?;
    Ok(r)
}

/// Microseconds since the Unix epoch (a record's timestamp and BEP 44 sequence number).
pub fn unix_micros() -> u64 {
    pkarr::Timestamp::now().as_u64()
}

/// Keeps our record published: at once when `record` changes (and first has a value), then every
/// [`REPUBLISH_INTERVAL`]; a failure is retried after [`PUBLISH_RETRY_FIRST`], doubling. Each
/// outcome goes to `report`. Ends when `stop` fires or the sender of `record` is gone.
pub async fn keep_published(
    dht: Dht,
    identity: Identity,
    mut record: watch::Receiver<Option<Record>>,
    mut stop: oneshot::Receiver<()>,
    report: impl Fn(Result<&Record, &DhtError>) + Send + 'static,
) {
    let mut failures = 0u32;
    let mut wait = Duration::MAX;
    loop {
        let current = record.borrow_and_update().clone();
        if let Some(r) = &current {
            match dht.publish(&identity, r).await {
                Ok(()) => {
                    failures = 0;
                    wait = REPUBLISH_INTERVAL;
                    report(Ok(r));
                }
                Err(e) => {
                    failures += 1;
                    wait = PUBLISH_RETRY_FIRST
                        .saturating_mul(1 << (failures - 1).min(8))
                        .min(REPUBLISH_INTERVAL);
                    report(Err(&e));
                }
            }
        }
        let sleep = async {
            match wait {
                Duration::MAX => std::future::pending().await,
                w => tokio::time::sleep(w).await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            changed = record.changed() => if changed.is_err() { return },
            _ = sleep => {}
        }
    }
}

/// A DHT server node (`shipworm dht-node`): stores and serves items for others. With no
/// bootstrap nodes it starts a new private DHT that others bootstrap from.
pub fn server(bind: SocketAddrV4, bootstrap: &[SocketAddrV4]) -> std::io::Result<mainline::Dht> {
    let mut b = mainline::Dht::builder();
    b.server_mode().port(bind.port());
    if *bind.ip() != Ipv4Addr::UNSPECIFIED {
        b.bind_address(*bind.ip());
    }
    if bootstrap.is_empty() {
        b.no_bootstrap();
    } else {
        b.bootstrap(bootstrap);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_names_resolve_to_ipv4_and_are_bounded() {
        let r = resolve_bootstrap(&["127.0.0.1:6881".into(), "localhost:7000".into()]).unwrap();
        assert_eq!(r[0], "127.0.0.1:6881".parse().unwrap());
        assert_eq!(r[1].port(), 7000);
        let e = resolve_bootstrap(&["[::1]:6881".into()]).unwrap_err();
        assert!(e.contains("no IPv4 address"), "{e}");
        let e = resolve_bootstrap(&["nope".into()]).unwrap_err();
        assert!(e.contains("--dht-bootstrap `nope`"), "{e}");
        let many = vec!["127.0.0.1:1".to_string(); MAX_BOOTSTRAP + 1];
        assert!(resolve_bootstrap(&many).is_err());
    }

    #[test]
    fn the_not_found_error_says_what_to_do() {
        let n = Identity::from_seed(&[5; 32]).node_id();
        let e = DhtError::NotFound(n).to_string();
        assert_eq!(
            e,
            format!("no record for {n} in the DHT: is the peer running with --publish dht?")
        );
    }
}
