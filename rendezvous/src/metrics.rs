//! Prometheus metrics over a minimal HTTP/1.1 endpoint (`GET /metrics`), text exposition 0.0.4.
//!
//! The serving loop publishes a [`Snapshot`] twice a second; a scrape renders the latest one, so
//! scraping never touches the packet path.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::server::{DropReason, PacketKind, Server, Stats};

/// Scrapes served at once; more wait for the listener's backlog.
const MAX_CONNECTIONS: usize = 16;
/// Largest request head read.
const MAX_REQUEST: usize = 4096;
/// Time a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters and gauges at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Counters.
    pub stats: Stats,
    /// Registered nodes.
    pub registered: usize,
    /// The table's bound.
    pub max_nodes: usize,
}

impl Snapshot {
    /// The server's state now.
    pub fn of(server: &Server) -> Self {
        Self {
            stats: server.stats().clone(),
            registered: server.registered(),
            max_nodes: server.config().max_nodes,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let s = &self.stats;
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(o, "# HELP shipworm_rendezvous_{name} {help}");
            let _ = writeln!(o, "# TYPE shipworm_rendezvous_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(o, "shipworm_rendezvous_{name}{labels} {v}");
            }
        };
        metric(
            "registered_nodes",
            "gauge",
            "Nodes holding a registration.",
            &[("", self.registered as u64)],
        );
        metric(
            "max_nodes",
            "gauge",
            "Configured bound on registered nodes.",
            &[("", self.max_nodes as u64)],
        );
        let by_type: Vec<(String, u64)> = PacketKind::ALL
            .iter()
            .map(|k| (format!("{{type=\"{}\"}}", k.label()), s.received(*k)))
            .collect();
        let by_type: Vec<(&str, u64)> = by_type.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "packets_total",
            "counter",
            "Datagrams received, by type.",
            &by_type,
        );
        let drops: Vec<(String, u64)> = DropReason::ALL
            .iter()
            .map(|r| (format!("{{reason=\"{}\"}}", r.label()), s.dropped(*r)))
            .collect();
        let drops: Vec<(&str, u64)> = drops.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "drops_total",
            "counter",
            "Requests not served, by reason.",
            &drops,
        );
        metric(
            "registrations_total",
            "counter",
            "Registrations accepted: new nodes, and renewals (REGISTER or REFRESH of a registered node).",
            &[("{kind=\"new\"}", s.registrations_new), ("{kind=\"renewed\"}", s.registrations_renewed)],
        );
        metric(
            "registrations_expired_total",
            "counter",
            "Registrations removed by expiry.",
            &[("", s.registrations_expired)],
        );
        metric(
            "introductions_forwarded_total",
            "counter",
            "Introductions forwarded.",
            &[("", s.introductions_forwarded)],
        );
        metric(
            "received_bytes_total",
            "counter",
            "Bytes received.",
            &[("", s.received_bytes)],
        );
        metric(
            "sent_packets_total",
            "counter",
            "Datagrams sent.",
            &[("", s.sent)],
        );
        metric(
            "sent_bytes_total",
            "counter",
            "Bytes sent.",
            &[("", s.sent_bytes)],
        );
        metric(
            "send_errors_total",
            "counter",
            "Datagrams that could not be sent.",
            &[("", s.send_errors)],
        );
        o
    }
}

/// Serves `GET /metrics` until the task is aborted.
pub async fn serve(listener: TcpListener, snapshot: watch::Receiver<Snapshot>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut head = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            let read = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            };
            if !matches!(tokio::time::timeout(REQUEST_TIMEOUT, read).await, Ok(true)) {
                return;
            }
            let (status, ctype, body) =
                if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        snapshot.borrow().render(),
                    )
                } else if head.starts_with(b"GET ") {
                    (
                        "404 Not Found",
                        "text/plain; charset=utf-8",
                        "metrics are at /metrics\n".to_string(),
                    )
                } else {
                    (
                        "405 Method Not Allowed",
                        "text/plain; charset=utf-8",
                        "only GET\n".to_string(),
                    )
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
