//! Any text as a wallet address or signature: canonical, or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ww_core::{Signature, WalletAddress};

fuzz_target!(|text: &str| {
    if let Ok(address) = WalletAddress::parse(text) {
        assert_eq!(address.as_str(), text.trim());
        let _ = address.to_bytes();
        let _ = address.short();
    }
    if let Ok(signature) = Signature::parse(text) {
        assert_eq!(signature.as_str(), text.trim());
    }
});
