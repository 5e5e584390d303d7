#![no_main]
//! Any text: ticket parsing never panics, and a parsed ticket round-trips.
use libfuzzer_sys::fuzz_target;
use shipworm_tunnel::Ticket;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = s.parse::<Ticket>() {
            assert_eq!(t.to_string().parse::<Ticket>().unwrap(), t);
        }
    }
});
