#![no_main]
//! The property is in `shipworm_fuzz::rendezvous_server` (`fuzz/src/lib.rs`), shared with the corpus test of
//! `shipworm-tests`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| shipworm_fuzz::rendezvous_server(data));
