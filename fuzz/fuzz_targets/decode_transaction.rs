//! Any bytes as a `getTransaction` reply: decoded, or refused with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ww_core::event::Origin;
use ww_solana::decode::{Provenance, decode_transaction, touched_addresses};

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let signature = ww_core::Signature::parse(
        "5UzQtFdVqjVbZfvosoN6f9bhSqtQPUr4ijXkHsELaRKAtTqfXZbpPQT1jBvyZKNdpkWR5X9i8jEtJotSDCNSdo7f",
    )
    .expect("valid signature");
    let _ = touched_addresses(&reply);
    let provenance = Provenance { origin: Origin::Live, received_at: std::time::SystemTime::UNIX_EPOCH };
    if let Ok(events) = decode_transaction(&signature, &reply, |_| true, provenance) {
        for event in events {
            assert_eq!(event.signature, signature);
        }
    }
});
