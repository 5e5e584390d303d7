//! Workspace-level test support: the network-namespace lab ([`lab`]) that the root-only tests
//! of the NAT lab use, and scenarios that cross crates (the `[[test]]` targets beside this file).

pub mod lab;
