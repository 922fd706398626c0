//! Property tests of address and signature parsing: any text is a valid
//! identifier or a clear refusal, never a panic, and what is accepted is
//! canonical.

use proptest::prelude::*;
use ww_core::{Signature, WalletAddress};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary text: an address whose bytes encode back to the same text,
    /// or an error that quotes what was wrong.
    #[test]
    fn any_text_is_an_address_or_a_clear_error(text in prop_oneof![".{0,60}", "[1-9A-HJ-NP-Za-km-z]{28,50}", "\\s*[1-9A-HJ-NP-Za-km-z]{43,44}\\s*"]) {
        match WalletAddress::parse(&text) {
            Ok(address) => {
                prop_assert_eq!(address.as_str(), text.trim());
                prop_assert_eq!(bs58::encode(address.to_bytes()).into_string(), address.as_str());
                prop_assert_eq!(address.short().len(), 11);
            }
            Err(error) => prop_assert!(error.to_string().len() > 10, "{error}"),
        }
        if let Err(error) = Signature::parse(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    /// Every 32 bytes are an address; every 64 bytes a signature.
    #[test]
    fn every_key_and_signature_round_trips(key in any::<[u8; 32]>(), first in any::<[u8; 32]>(), second in any::<[u8; 32]>()) {
        let text = bs58::encode(key).into_string();
        let address = WalletAddress::parse(&text).expect("32 bytes are an address");
        prop_assert_eq!(address.to_bytes(), key);
        let signature_bytes = [first, second].concat();
        let text = bs58::encode(&signature_bytes).into_string();
        let signature = Signature::parse(&text).expect("64 bytes are a signature");
        prop_assert_eq!(signature.as_str(), text.as_str());
        prop_assert!(WalletAddress::parse(&text).is_err(), "a signature is not an address");
    }
}
