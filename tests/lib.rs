//! Workspace-level integration tests: scenarios that cross crates. The tests are the `[[test]]`
//! targets beside this file; this library is where shared harness code (the NAT lab) goes.
