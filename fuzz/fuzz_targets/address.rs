//! Any text as a wallet address or signature: refused, or accepted in a
//! canonical form that parses back to itself (base58 as given; EVM hex with
//! a lower-case `0x`, addresses in their EIP-55 checksum, hashes in lower case).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ww_core::{Signature, WalletAddress};

fuzz_target!(|text: &str| {
    let trimmed = text.trim();
    let is_hex = trimmed.starts_with("0x") || trimmed.starts_with("0X");
    if let Ok(address) = WalletAddress::parse(text) {
        assert_eq!(WalletAddress::parse(address.as_str()).expect("canonical form parses"), address);
        if is_hex {
            assert!(address.as_str().eq_ignore_ascii_case(trimmed));
        } else {
            assert_eq!(address.as_str(), trimmed);
        }
        let _ = address.to_bytes();
        let _ = address.short();
    }
    if let Ok(signature) = Signature::parse(text) {
        assert_eq!(Signature::parse(signature.as_str()).expect("canonical form parses"), signature);
        if is_hex {
            assert_eq!(signature.as_str(), trimmed.to_ascii_lowercase());
        } else {
            assert_eq!(signature.as_str(), trimmed);
        }
    }
});
