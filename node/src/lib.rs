//! shipworm: a peer-to-peer NAT traversal overlay with built-in IPv6 tunneling.
//!
//! A [`Node`] registers with a rendezvous, connects to other nodes by [`Ticket`] or [`NodeId`]
//! (introduction, hole punching, an encrypted tunnel) and speaks QUIC to them end to end, each
//! side authenticated as exactly its key. Everything below runs on one machine: a rendezvous on
//! loopback (on a real network, a small server both sides can reach) and two nodes echoing.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use shipworm::rendezvous::{config::Config, driver::Rendezvous};
//! use shipworm::{Node, RendezvousAddr};
//!
//! let rdv = Rendezvous::bind(Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     alt_listen: None,
//!     ..Config::default()
//! })
//! .await?;
//! let server = RendezvousAddr::Ip(rdv.local_addr());
//! let loopback = "127.0.0.1:0".parse()?;
//! let b = Node::builder()
//!     .rendezvous(server.clone())
//!     .bind(loopback)
//!     .portmap(false)
//!     .alpn(b"echo/1")
//!     .spawn()
//!     .await?;
//! assert!(b.registered(Duration::from_secs(5)).await);
//! let ticket = b.ticket().await?; // what B would hand to A: text, a QR code, a chat message
//! tokio::spawn(async move {
//!     let (_peer, conn) = b.accept().await.expect("a peer");
//!     let (mut send, mut recv) = conn.accept_bi().await.expect("a stream");
//!     let data = recv.read_to_end(1 << 16).await.expect("data");
//!     send.write_all(&data).await.expect("echo");
//!     send.finish().expect("finish");
//!     conn.closed().await;
//! });
//!
//! let a = Node::builder().rendezvous(server).bind(loopback).portmap(false).spawn().await?;
//! let conn = a.connect(ticket, b"echo/1").await?;
//! let (mut send, mut recv) = conn.open_bi().await?;
//! send.write_all(b"hello through the overlay").await?;
//! send.finish()?;
//! assert_eq!(recv.read_to_end(1 << 16).await?, b"hello through the overlay");
//! # conn.close(0u32.into(), b"done");
//! # a.close().await;
//! # Ok(()) }
//! ```
//!
//! The rooms (`docs/architecture.md` has the whole map):
//! - [`api`]: [`Node`] and its [`api::Builder`], the one way to start a node.
//! - [`engine`]: the sans-IO node: registration, introductions, the NAT check, candidate pairs,
//!   birthday probing, around the tunnel state machine of [`tunnel`].
//! - [`io`]: everything that touches the OS: the driver task, batched UDP, the TUN interface,
//!   host addresses, name resolution, port mappings, metrics.
//! - [`quic`]: quinn over the overlay, TLS with raw public keys.
//! - [`discovery`]: finding a peer by NodeId alone (the Mainline DHT, mDNS on the LAN).
//! - [`apps`]: the application protocols of the `shipworm` CLI (pipe, forward, ping).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod apps;
pub mod discovery;
pub mod engine;
pub mod io;
pub mod quic;

pub use api::{Builder, Node, NodeError, Target};
pub use shipworm_rendezvous as rendezvous;
pub use shipworm_tunnel as tunnel;
pub use shipworm_tunnel::{Identity, NodeId, RendezvousAddr, Ticket};
