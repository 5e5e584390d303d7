//! The shipworm rendezvous: registers nodes, reflects their addresses (STUN and REGISTERED), and
//! forwards exactly one introduction packet per request (`docs/protocol.md`).
//!
//! A rendezvous on loopback, asked for our address over STUN the way any node or STUN client asks:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use shipworm_rendezvous::{config::Config, driver::Rendezvous, wire::stun};
//!
//! let rendezvous = Rendezvous::bind(Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     alt_listen: None,
//!     ..Config::default()
//! })
//! .await?;
//!
//! let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let (request, tx) = stun::binding_request();
//! socket.send_to(&request, rendezvous.local_addr()).await?;
//! let mut reply = [0u8; 512];
//! let (n, _) = socket.recv_from(&mut reply).await?;
//! assert_eq!(stun::parse_binding_response(&reply[..n], tx)?, socket.local_addr()?);
//!
//! rendezvous.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The rooms:
//! - [`wire`]: the rendezvous messages and STUN, one module per format. Always built: this is all
//!   a client (the node) needs.
//! - [`server`]: the protocol core, a sans-IO state machine; [`table`] and [`token`] hold its node
//!   table and its refresh tokens.
//! - [`driver`]: runs the server on tokio sockets ([`udp`] binds them and batches their receives
//!   and sends); [`config`] says how; [`metrics`] serves Prometheus metrics over HTTP.
//!
//! Cargo features: `server` (on by default) builds everything but [`wire`]; `bin` (on by default)
//! adds the `shipworm-rendezvous` binary and its command line, TOML config file and log output.
//! A client depends on this crate with `default-features = false`.
// One module holds `unsafe` code, and says why: `udp::sendmmsg`, the system call behind batched
// sends. Everything else, the protocol and the server above all, is safe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod wire;

#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod driver;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod table;
#[cfg(feature = "server")]
pub mod tcp;
#[cfg(feature = "server")]
pub mod token;
#[cfg(feature = "server")]
pub mod udp;
