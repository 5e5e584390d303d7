//! Prometheus metrics: the server's counters as a [`prometheus_client`] collector, and [`serve`],
//! a small HTTP endpoint (`GET /metrics`, text format 0.0.4) for any registry
//! (`docs/operations.md` §"Metrics" lists the metrics).
//!
//! The serving loop publishes a [`Snapshot`] twice a second; a scrape encodes the latest one, so
//! scraping never touches the packet path.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::server::{DropReason, PacketKind, Server, Stats};

/// The client library [`serve`] takes a registry of, re-exported so that a caller builds its
/// registry with the same version.
pub use prometheus_client;

/// The prefix of every metric name the server exports.
pub const PREFIX: &str = "shipworm_rendezvous";
/// Scrapes served at once; more wait for the listener's backlog.
const MAX_CONNECTIONS: usize = 16;
/// Time a client gets to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters and gauges at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Counters.
    pub stats: Stats,
    /// Registered nodes.
    pub registered: usize,
    /// The table's bound.
    pub max_nodes: usize,
    /// Relay sessions open (0 without the relay role).
    pub relay_sessions: usize,
}

impl Snapshot {
    /// The server's state now.
    pub fn of(server: &Server) -> Self {
        Self {
            stats: server.stats().clone(),
            registered: server.registered(),
            max_nodes: server.config().max_nodes,
            relay_sessions: server.relay_sessions(),
        }
    }
}

/// The server's metrics, read from the latest [`Snapshot`] at each scrape. Register it in a
/// [`Registry`] with the prefix [`PREFIX`] (as [`registry`] does).
#[derive(Debug)]
pub struct ServerCollector {
    snapshot: watch::Receiver<Snapshot>,
}

impl ServerCollector {
    /// A collector of the snapshots `snapshot` receives.
    pub fn new(snapshot: watch::Receiver<Snapshot>) -> Self {
        Self { snapshot }
    }
}

/// A registry holding the server's metrics under [`PREFIX`].
pub fn registry(snapshot: watch::Receiver<Snapshot>) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(ServerCollector::new(snapshot)));
    registry
}

/// Encodes one metric without labels (for collectors of snapshots, like the node's).
pub fn single(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one counter family with one label, a sample per label value.
pub fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (&'static str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in samples {
        ConstCounter::new(count).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

impl Collector for ServerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.snapshot.borrow().clone();
        let s = &snap.stats;
        let gauge = |v: usize| ConstGauge::new(v as i64);
        single(
            &mut e,
            "registered_nodes",
            "Nodes holding a registration.",
            gauge(snap.registered),
        )?;
        single(
            &mut e,
            "max_nodes",
            "Configured bound on registered nodes.",
            gauge(snap.max_nodes),
        )?;
        single(
            &mut e,
            "relay_sessions",
            "Relay sessions open (pairs of nodes exchanging packets through this relay).",
            gauge(snap.relay_sessions),
        )?;
        // Counter names get their `_total` suffix from the encoder.
        counters(
            &mut e,
            "packets",
            "Datagrams received, by type.",
            "type",
            PacketKind::ALL.map(|k| (k.label(), s.received(k))),
        )?;
        counters(
            &mut e,
            "drops",
            "Requests not served, by reason.",
            "reason",
            DropReason::ALL.map(|r| (r.label(), s.dropped(r))),
        )?;
        counters(
            &mut e,
            "registrations",
            "Registrations accepted: new nodes, and renewals (REGISTER or REFRESH of a registered node).",
            "kind",
            [("new", s.registrations_new), ("renewed", s.registrations_renewed)],
        )?;
        for (name, help, value) in [
            (
                "registrations_expired",
                "Registrations removed by expiry.",
                s.registrations_expired,
            ),
            (
                "introductions_forwarded",
                "Introductions forwarded.",
                s.introductions_forwarded,
            ),
            (
                "introductions_answered_free",
                "Introductions forwarded on a free credit (a target's relayed answer).",
                s.introductions_answered_free,
            ),
            (
                "signature_checks",
                "REGISTER signatures checked.",
                s.signature_checks,
            ),
            (
                "retries_sent",
                "RETRY messages sent (cookies asked for under load).",
                s.retries_sent,
            ),
            (
                "relayed_packets",
                "Tunnel packets relayed.",
                s.relayed_packets,
            ),
            (
                "relayed_bytes",
                "Bytes of tunnel packets relayed (without the relay's own headers).",
                s.relayed_bytes,
            ),
            ("received_bytes", "Bytes received.", s.received_bytes),
            ("sent_packets", "Datagrams sent.", s.sent),
            ("sent_bytes", "Bytes sent.", s.sent_bytes),
            (
                "send_errors",
                "Datagrams that could not be sent.",
                s.send_errors,
            ),
        ] {
            single(&mut e, name, help, ConstCounter::new(value))?;
        }
        Ok(())
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers one request: the registry's metrics at `/metrics`, 404 elsewhere, 405 to anything
/// but GET.
fn answer(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "metrics are at /metrics\n");
    }
    let mut body = String::with_capacity(4096);
    if prometheus_text::encode(&mut body, registry).is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
    }
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    response
}

/// Serves `registry` over HTTP/1.1 at `GET /metrics` on `listener` until `shutdown` completes.
///
/// At most 16 scrapes are served at once, each connection answers one request and gets 5 seconds
/// in all, so a slow or silent client holds nothing for long. Accept errors (a full file table,
/// say) are skipped.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let accept = async {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(|request: Request<Incoming>| {
                    let response = answer(&registry, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(CONNECTION_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_any_registry_until_shutdown() {
        // What the node does for `up --metrics-listen`: its own registry, this endpoint.
        let mut registry = Registry::with_prefix("shipworm");
        let peers = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register("handshakes", "Handshakes completed", peers.clone());
        peers.get_or_create(&[("kind", "direct")]).inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::new(registry), async {
            let _ = stopped.await;
        }));

        let text = get(addr, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            text.contains("# TYPE shipworm_handshakes_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("shipworm_handshakes_total{kind=\"direct\"} 3\n"),
            "{text}"
        );
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));

        stop.send(()).unwrap();
        task.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn the_server_collector_names_every_reason_with_its_count() {
        let mut stats = Stats::default();
        stats.dropped[DropReason::WrongPort.index()] = 4;
        stats.received[PacketKind::Refresh.index()] = 2;
        let (_tx, rx) = watch::channel(Snapshot {
            stats,
            registered: 7,
            max_nodes: 9,
            relay_sessions: 3,
        });
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry(rx)).unwrap();
        assert!(
            text.contains("shipworm_rendezvous_registered_nodes 7\n"),
            "{text}"
        );
        assert!(text.contains("shipworm_rendezvous_max_nodes 9\n"), "{text}");
        assert!(
            text.contains("shipworm_rendezvous_relay_sessions 3\n"),
            "{text}"
        );
        assert!(
            text.contains("shipworm_rendezvous_drops_total{reason=\"wrong_port\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("shipworm_rendezvous_packets_total{type=\"refresh\"} 2\n"),
            "{text}"
        );
        for r in DropReason::ALL {
            assert!(
                text.contains(&format!("{{reason=\"{}\"}}", r.label())),
                "{text}"
            );
        }
    }
}
