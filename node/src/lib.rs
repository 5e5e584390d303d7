//! shipworm: a peer-to-peer NAT traversal overlay with built-in IPv6 tunneling.
//!
//! This crate will hold the `Node` API; today it gathers the identity, ticket and rendezvous
//! pieces a node is made of.
//!
//! ```
//! use shipworm::{Identity, Ticket};
//!
//! let id = Identity::generate();
//! let ticket = Ticket::new(id.node_id(), vec!["192.0.2.1:3478".parse().unwrap()], vec![]).unwrap();
//! assert_eq!(ticket.to_string().parse::<Ticket>().unwrap().node_id(), id.node_id());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod batch_udp;
pub mod cli;
pub mod demo;
pub mod driver;
pub mod engine;
pub mod paths;
pub mod portmap;
pub mod quic;
pub mod sim;
pub mod up;

pub use api::{Node, NodeError, Target};
pub use shipworm_rendezvous as rendezvous;
pub use shipworm_tunnel as tunnel;
pub use shipworm_tunnel::{Identity, NodeId, RendezvousAddr, Ticket};
