//! The shipworm data plane's foundation: node identity, overlay addresses and tickets.
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
