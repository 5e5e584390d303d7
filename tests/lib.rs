//! Workspace-level test support: the deterministic network simulator ([`sim`]) that the engine's
//! scenario tests and the connect benchmark drive, the network-namespace lab ([`lab`]) that the
//! root-only tests of the NAT lab use, and scenarios that cross crates (the `[[test]]` targets
//! beside this file).

pub mod lab;
pub mod sim;
