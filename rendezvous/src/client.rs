//! A small async client of the rendezvous protocol: register, refresh, introduce, STUN.
//!
//! It owns no socket policy: give it the node's one UDP socket (the mapping the server observes
//! must be the one peers reach). Requests are retried with short backoff; replies are matched by
//! transaction id and anything else that arrives meanwhile is handed to the caller as an
//! [`Incoming`] (introductions from other nodes, or foreign datagrams).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shipworm_tunnel::{wire::addr, Identity, NodeId};
use tokio::net::UdpSocket;

use crate::proto::{self, ErrorCode, IntroAck, Message, Register, Registered, TOKEN_LEN};
use crate::stun;

/// Retransmission schedule of one request: 250 ms, doubling, four tries (about 3.75 s in all).
const RETRIES: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
];

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer after every retry.
    #[error("rendezvous {0} did not answer (is it running, and is UDP to it allowed?)")]
    Timeout(SocketAddr),
    /// The server refused the request.
    #[error("rendezvous {server} refused: {reason}")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// What it said.
        reason: String,
    },
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// Introduce before register.
    #[error("not registered yet")]
    NotRegistered,
}

/// A datagram that was not the reply being waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Another node's introduction, forwarded by the server.
    Introduction {
        /// The introducer's claimed id (its payload must prove it).
        from: NodeId,
        /// Its address as the server observed it.
        from_addr: SocketAddr,
        /// The opaque payload.
        payload: Vec<u8>,
    },
    /// Anything else.
    Other {
        /// Sender.
        from: SocketAddr,
        /// Bytes.
        bytes: Vec<u8>,
    },
}

/// A client bound to one server.
#[derive(Debug)]
pub struct Client {
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    identity: Identity,
    registration: Option<Registered>,
    last_timestamp_ms: u64,
    next_tx: u64,
    /// Datagrams that arrived while waiting for a reply, oldest first (bounded).
    pending: std::collections::VecDeque<Incoming>,
}

/// Most unrelated datagrams kept while waiting for a reply.
const MAX_PENDING: usize = 64;

impl Client {
    /// A client for `server` speaking through `socket`.
    pub fn new(socket: Arc<UdpSocket>, server: SocketAddr, identity: Identity) -> Self {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the OS random source is unavailable");
        Self {
            socket,
            server: addr::normalize(server),
            identity,
            registration: None,
            last_timestamp_ms: 0,
            next_tx: u64::from_le_bytes(seed),
            pending: Default::default(),
        }
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The last registration the server confirmed.
    pub fn registration(&self) -> Option<&Registered> {
        self.registration.as_ref()
    }

    fn tx(&mut self) -> u64 {
        self.next_tx = self.next_tx.wrapping_add(1);
        self.next_tx
    }

    fn dest(&self) -> std::io::Result<SocketAddr> {
        let local = self.socket.local_addr()?;
        Ok(if local.is_ipv6() {
            addr::to_dual_stack(self.server)
        } else {
            self.server
        })
    }

    /// Sends `request` until a reply with transaction `tx` arrives.
    async fn exchange(&mut self, request: &[u8], tx: u64) -> Result<Reply, ClientError> {
        let dest = self.dest()?;
        let mut buf = vec![0u8; 2048];
        for wait in RETRIES {
            self.socket.send_to(request, dest).await?;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let Ok(r) =
                    tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await
                else {
                    break;
                };
                let (n, from) = r?;
                let from = addr::normalize(from);
                let bytes = &buf[..n];
                match Message::parse(bytes) {
                    Ok(Message::IntroFwd(f)) => {
                        if let Ok(id) = NodeId::from_bytes(&f.from) {
                            self.keep(Incoming::Introduction {
                                from: id,
                                from_addr: f.from_addr,
                                payload: f.payload.to_vec(),
                            });
                        }
                    }
                    Ok(m) if from == self.server && proto::peek_tx(bytes) == Some(tx) => {
                        return Ok(m.into());
                    }
                    _ => self.keep(Incoming::Other {
                        from,
                        bytes: bytes.to_vec(),
                    }),
                }
            }
        }
        Err(ClientError::Timeout(self.server))
    }

    fn keep(&mut self, i: Incoming) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(i);
    }

    fn refused(&self, code: ErrorCode, server_time_ms: u64) -> ClientError {
        let reason = match code {
            ErrorCode::ClockSkew => format!(
                "our clock is off by {} s; fix the system clock (NTP)",
                (crate::driver::unix_ms() as i64 - server_time_ms as i64) / 1000
            ),
            ErrorCode::TableFull => "its node table is full; try another rendezvous".into(),
            ErrorCode::UnsupportedVersion => "it speaks another protocol version".into(),
            ErrorCode::StaleTimestamp => {
                "registration timestamp not newer than the last one".into()
            }
            ErrorCode::BadSignature => "registration signature did not verify".into(),
            ErrorCode::NotRegistered => "we are not registered there".into(),
        };
        ClientError::Refused {
            server: self.server,
            reason,
        }
    }

    fn unexpected(&self, kind: u8) -> ClientError {
        ClientError::Refused {
            server: self.server,
            reason: format!("unexpected reply type 0x{kind:02x}"),
        }
    }

    /// Registers (signed). Returns the confirmed registration.
    pub async fn register(&mut self) -> Result<Registered, ClientError> {
        // Timestamps strictly increase, even within one millisecond.
        let ts = crate::driver::unix_ms().max(self.last_timestamp_ms + 1);
        self.last_timestamp_ms = ts;
        let tx = self.tx();
        let req = Message::Register(Register::signed(&self.identity, tx, ts)).to_vec();
        self.expect_registered(&req, tx).await
    }

    /// Refreshes with the token; falls back to a signed REGISTER if the server forgot us or our
    /// address changed.
    pub async fn refresh(&mut self) -> Result<Registered, ClientError> {
        let Some(token) = self.registration.as_ref().map(|r| r.token) else {
            return self.register().await;
        };
        let tx = self.tx();
        let req = Message::Refresh(proto::Refresh {
            tx,
            node: *self.identity.node_id().as_bytes(),
            token,
        })
        .to_vec();
        match self.expect_registered(&req, tx).await {
            Err(ClientError::Refused { .. }) => self.register().await,
            other => other,
        }
    }

    async fn expect_registered(&mut self, req: &[u8], tx: u64) -> Result<Registered, ClientError> {
        match self.exchange(req, tx).await? {
            Reply::Registered(r) => {
                self.registration = Some(r.clone());
                Ok(r)
            }
            Reply::Error(e) => {
                if e.code == ErrorCode::NotRegistered {
                    self.registration = None;
                }
                Err(self.refused(e.code, e.server_time_ms))
            }
            Reply::IntroAck(_) => Err(self.unexpected(proto::kind::INTRO_ACK)),
            Reply::Unexpected(kind) => Err(self.unexpected(kind)),
        }
    }

    /// Asks the server to forward `payload` to `target`. Re-registers once if the server forgot us.
    pub async fn introduce(
        &mut self,
        target: &NodeId,
        payload: &[u8],
    ) -> Result<IntroAck, ClientError> {
        for _ in 0..2 {
            let token: [u8; TOKEN_LEN] = self
                .registration
                .as_ref()
                .ok_or(ClientError::NotRegistered)?
                .token;
            let tx = self.tx();
            let req = Message::Introduce(proto::Introduce {
                tx,
                node: *self.identity.node_id().as_bytes(),
                token,
                target: *target.as_bytes(),
                payload,
            })
            .to_vec();
            match self.exchange(&req, tx).await? {
                Reply::IntroAck(a) => return Ok(a),
                Reply::Error(e) if e.code == ErrorCode::NotRegistered => {
                    self.register().await?;
                }
                Reply::Error(e) => return Err(self.refused(e.code, e.server_time_ms)),
                Reply::Registered(_) => return Err(self.unexpected(proto::kind::REGISTERED)),
                Reply::Unexpected(kind) => return Err(self.unexpected(kind)),
            }
        }
        Err(self.refused(ErrorCode::NotRegistered, 0))
    }

    /// Waits for the next datagram that is not a reply (an introduction, or anything else).
    pub async fn next_incoming(&mut self) -> Result<Incoming, ClientError> {
        if let Some(i) = self.pending.pop_front() {
            return Ok(i);
        }
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = self.socket.recv_from(&mut buf).await?;
            let from = addr::normalize(from);
            match Message::parse(&buf[..n]) {
                Ok(Message::IntroFwd(f)) => {
                    if let Ok(id) = NodeId::from_bytes(&f.from) {
                        return Ok(Incoming::Introduction {
                            from: id,
                            from_addr: f.from_addr,
                            payload: f.payload.to_vec(),
                        });
                    }
                }
                _ => {
                    return Ok(Incoming::Other {
                        from,
                        bytes: buf[..n].to_vec(),
                    })
                }
            }
        }
    }
}

/// A reply the client was waiting for.
enum Reply {
    Registered(Registered),
    IntroAck(IntroAck),
    Error(proto::ErrorMsg),
    Unexpected(u8),
}

impl From<Message<'_>> for Reply {
    fn from(m: Message<'_>) -> Self {
        match m {
            Message::Registered(r) => Reply::Registered(r),
            Message::IntroAck(a) => Reply::IntroAck(a),
            Message::Error(e) => Reply::Error(e),
            other => Reply::Unexpected(other.kind()),
        }
    }
}

/// One STUN Binding exchange with `server` over `socket`; returns the mapped address.
pub async fn stun_binding(
    socket: &UdpSocket,
    server: SocketAddr,
) -> Result<SocketAddr, ClientError> {
    let (req, tx) = stun::binding_request();
    let local = socket.local_addr()?;
    let dest = if local.is_ipv6() {
        addr::to_dual_stack(server)
    } else {
        server
    };
    let mut buf = [0u8; 1500];
    for wait in RETRIES {
        socket.send_to(&req, dest).await?;
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(r) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            let (n, _) = r?;
            if let Ok(mapped) = stun::parse_binding_response(&buf[..n], tx) {
                return Ok(mapped);
            }
        }
    }
    Err(ClientError::Timeout(server))
}
