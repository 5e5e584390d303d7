//! Workspace-level test support, and scenarios that cross crates (the `[[test]]` targets beside
//! this file).
//!
//! - [`sim`] (`sim/`): the deterministic network simulator that the engine's scenario tests and
//!   the connect benchmark drive: [`sim::Sim`] with its virtual clock and event loop (`mod.rs`),
//!   NAT models (`nat.rs`), sites and IPv6 access (`site.rs`), a datagram's route through the
//!   simulated network (`route.rs`), the datagram trace (`trace.rs`) and its own RNG (`rng.rs`).
//! - [`lab`] (`lab/`): the network-namespace lab that the root-only tests of the NAT lab use:
//!   [`lab::Lab`] with its namespaces, links and processes (`mod.rs`), nftables router rulesets
//!   and miniupnpd (`routers.rs`), the two-site topology (`topology.rs`) and the NAT matrix
//!   (`matrix.rs`).
//! - [`scratch`]: a test's scratch directory, removed when the test passes and kept when it
//!   fails.
//! - [`metrics`]: one scrape of a `/metrics` endpoint and one sample from it, for the tests of
//!   the rendezvous' and the node's metrics.

pub mod lab;
pub mod metrics;
pub mod scratch;
pub mod sim;
