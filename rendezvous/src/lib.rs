//! The shipworm rendezvous service: registers nodes, reflects their addresses (STUN and REGISTERED),
//! and forwards exactly one introduction packet per request.
//!
//! The protocol core ([`server::Server`]) is sans-IO; [`driver`] runs it on tokio sockets.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use shipworm_rendezvous::{config::Config, driver::Rendezvous};
//!
//! let mut config = Config::default();
//! config.listen = "127.0.0.1:0".parse()?;
//! let rendezvous = Rendezvous::bind(config).await?;
//! println!("serving on {}", rendezvous.local_addr());
//! rendezvous.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod driver;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod stun;
pub mod table;
pub mod token;
pub mod udp;
