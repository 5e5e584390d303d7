//! Finding a peer by its NodeId alone (`docs/discovery.md`).
//!
//! - [`record`]: the signed record a node publishes under its NodeId (its home rendezvous
//!   servers, never its IP candidates), and the rules a resolved record must pass (sans-IO).
//! - [`dht`]: publishing and resolving that record through BitTorrent's Mainline DHT (BEP 44, via
//!   `pkarr` and `mainline`), and a DHT server node for a private network.
//! - [`mdns`]: nodes on one LAN announce themselves and find each other with no server at all.
//!
//! What discovery finds is a claim: a record only names rendezvous servers to ask, and the peer's
//! key is still proven by the handshake.

pub mod dht;
pub mod mdns;
pub mod record;

pub use dht::{Dht, DhtError, DhtOptions};
pub use mdns::Mdns;
pub use record::{Record, RecordError};
