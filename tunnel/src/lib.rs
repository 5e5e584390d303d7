//! shipworm's sans-IO protocol core: node identity, overlay addresses and tickets, the wire
//! formats, the Noise handshake, transport sessions, and the tunnel state machine. No sockets,
//! no clock, no OS randomness in the protocol code: datagrams, time and an [`rng::Rng`] are fed
//! in (see [`tunnel`]).
//!
//! - [`identity`], [`overlay`], [`ticket`]: who a node is, its overlay address, how to find it;
//! - [`wire`]: one module per wire format, on one checked reader;
//! - [`handshake`]: Noise IK, MACs and cookies; [`session`] and [`replay`]: the transport AEAD
//!   and its replay window;
//! - [`tunnel`]: the endpoint state machine; [`rng`]: its one source of randomness.
//!
//! ```
//! use shipworm_tunnel::{Identity, Ticket, RendezvousAddr};
//!
//! let id = Identity::generate();
//! let node = id.node_id();
//! // The overlay address is derived from the key alone: stable across networks.
//! assert_eq!(node.overlay_addr(), id.node_id().overlay_addr());
//! assert!(shipworm_tunnel::overlay::is_overlay(&node.overlay_addr()));
//!
//! let rdv: RendezvousAddr = "rendezvous.example.net:3478".parse().unwrap();
//! let ticket = Ticket::new(node, vec![rdv], vec![]).unwrap();
//! let text = ticket.to_string();
//! assert_eq!(text.parse::<Ticket>().unwrap(), ticket);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod handshake;
pub mod identity;
pub mod overlay;
pub mod replay;
pub mod rng;
pub mod session;
pub mod ticket;
pub mod tunnel;
pub mod wire;

pub use identity::{Identity, IdentityError, NodeId, NodeIdError};
pub use ticket::{RendezvousAddr, Ticket, TicketError};
