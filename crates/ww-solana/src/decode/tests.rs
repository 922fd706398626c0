//! Decoding real `getTransaction` replies captured from the local node
//! (`tests/fixtures/solana/getTransaction/*.json`).

use std::time::SystemTime;

use serde_json::Value;
use ww_core::event::TxOutcome;
use ww_core::{Origin, Signature, WalletAddress};

use super::{DecodeError, Provenance, decode_transaction};

const PAYER: &str = "53g8PbEXggKir7UBJG2FMxfzYGoncXVXkYtEAMpcnyHF";
const WALLET_A: &str = "BDb98LoSVtU3ZynUupaUGbBERG16Nnph3VJjT4i9Qd1V";
const WALLET_B: &str = "7hQ859KYAPE5ZiGgVz3PWnsEhZEiFfJfGnvLpmGrWFxR";
const TOKEN_OWNER: &str = "7j6gSfCgcmfTeFchgepfrCyeHrgunJqpPmrTrMjf677t";
const TOKEN_2022_OWNER: &str = "32tJs3rsYRqf3KyEhX6pRWfkVzd2j5ML3mtE383HGm6k";
const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";

fn fixture(name: &str) -> (Signature, Value) {
    let path = format!("{}/tests/fixtures/solana/getTransaction/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let value: Value = serde_json::from_str(&text).expect("fixture is JSON");
    let signature = Signature::parse(value["signature"].as_str().expect("signature")).expect("valid");
    (signature, value["reply"].clone())
}

/// The reply as the RPC client hands it over: its JSON text.
fn text(reply: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(reply).expect("JSON")
}

fn address(text: &str) -> WalletAddress {
    WalletAddress::parse(text).expect("valid")
}

fn live() -> Provenance {
    Provenance { origin: Origin::Live, received_at: SystemTime::now() }
}

fn decode_for(name: &str, tracked: &[&str]) -> Vec<ww_core::ActivityEvent> {
    let (signature, reply) = fixture(name);
    let tracked: Vec<WalletAddress> = tracked.iter().map(|text| address(text)).collect();
    decode_transaction(&signature, &text(&reply), |candidate| tracked.contains(candidate), live()).expect("decodes")
}

#[test]
fn incoming_sol() {
    let events = decode_for("sol_incoming", &[WALLET_A]);
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.wallet, address(WALLET_A));
    assert_eq!(event.native_delta, 2_000_000);
    assert_eq!(event.fee, 5_000);
    assert_ne!(event.fee_payer, address(WALLET_A));
    assert_eq!(event.outcome, TxOutcome::Success);
    assert!(event.token_deltas.is_empty());
    assert_eq!(event.programs, vec![address(SYSTEM_PROGRAM)]);
    assert!(event.block_time.is_some());
}

#[test]
fn outgoing_sol_includes_the_fee() {
    let events = decode_for("sol_outgoing", &[PAYER, WALLET_B]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].wallet, address(PAYER));
    assert_eq!(events[0].native_delta, -3_000_000 - 5_000);
    assert_eq!(events[0].fee_payer, address(PAYER));
    assert_eq!(events[1].wallet, address(WALLET_B));
    assert_eq!(events[1].native_delta, 3_000_000);
}

#[test]
fn incoming_spl_token_to_an_existing_account_is_attributed_to_its_owner() {
    let events = decode_for("spl_token_incoming", &[TOKEN_OWNER]);
    assert_eq!(events.len(), 1, "the owner is not an account key but owns the credited token account");
    let event = &events[0];
    assert_eq!(event.native_delta, 0);
    assert_eq!(event.token_deltas.len(), 1);
    let delta = &event.token_deltas[0];
    assert_eq!(delta.delta, 1_500_000);
    assert_eq!(delta.decimals, 6);
    assert_eq!(delta.token_program.as_str(), "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
    assert!(delta.token_account.is_some());
}

#[test]
fn token_2022_transfer() {
    let events = decode_for("token_2022_incoming", &[TOKEN_2022_OWNER]);
    assert_eq!(events.len(), 1);
    let delta = &events[0].token_deltas[0];
    assert_eq!(delta.delta, 42);
    assert_eq!(delta.decimals, 2);
    assert_eq!(delta.token_program.as_str(), "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
}

#[test]
fn failed_transaction_charges_only_the_fee() {
    let events = decode_for("failed", &[PAYER, WALLET_A]);
    assert_eq!(events.len(), 2);
    let payer = &events[0];
    assert_eq!(payer.wallet, address(PAYER));
    assert_eq!(payer.native_delta, -5_000);
    assert!(
        matches!(&payer.outcome, TxOutcome::Failed { error } if error.contains("InstructionError")),
        "{:?}",
        payer.outcome
    );
    assert_eq!(events[1].native_delta, 0, "the recipient of a failed transfer gets nothing");
}

#[test]
fn one_transaction_touching_two_tracked_wallets_yields_one_event_each() {
    let events = decode_for("two_recipients", &[WALLET_A, WALLET_B]);
    let wallets: Vec<&str> = events.iter().map(|event| event.wallet.as_str()).collect();
    assert_eq!(wallets, vec![WALLET_B, WALLET_A]);
    assert!(events.iter().all(|event| event.native_delta == 1_000_000));
    assert!(events.iter().all(|event| event.signature == events[0].signature));
}

#[test]
fn untracked_wallets_yield_nothing() {
    assert!(decode_for("two_recipients", &[TOKEN_OWNER]).is_empty());
}

#[test]
fn malformed_replies_are_errors_naming_the_problem() {
    let (signature, reply) = fixture("sol_incoming");
    let mut truncated = reply.clone();
    truncated["meta"]["postBalances"] = serde_json::json!([1]);
    let error = decode_transaction(&signature, &text(&truncated), |_| true, live()).expect_err("mismatch");
    assert!(matches!(&error, DecodeError::Malformed { reason, .. } if reason.contains("post balances")), "{error}");
    let mut bad_key = reply.clone();
    bad_key["transaction"]["message"]["accountKeys"][0]["pubkey"] = serde_json::json!("0OIl");
    assert!(decode_transaction(&signature, &text(&bad_key), |_| true, live()).is_err());
    for broken in [Value::Null, serde_json::json!({}), serde_json::json!({"slot": "x"}), serde_json::json!([])] {
        assert!(decode_transaction(&signature, &text(&broken), |_| true, live()).is_err(), "{broken}");
    }
    let mut no_meta = reply.clone();
    no_meta["meta"] = Value::Null;
    assert!(decode_transaction(&signature, &text(&no_meta), |_| true, live()).is_err());
    // A lamport change beyond an i64 (only a broken or hostile node says so)
    // is malformed: an event carrying it could not be stored.
    let mut overflowing = reply;
    let count = overflowing["meta"]["preBalances"].as_array().expect("balances").len();
    overflowing["meta"]["preBalances"] = serde_json::json!(vec![0u64; count]);
    overflowing["meta"]["postBalances"] = serde_json::json!(vec![u64::MAX; count]);
    let error = decode_transaction(&signature, &text(&overflowing), |_| true, live()).expect_err("overflow");
    assert!(matches!(&error, DecodeError::Malformed { reason, .. } if reason.contains("overflows")), "{error}");
}

#[test]
fn account_keys_as_plain_addresses_decode_like_parsed_ones() {
    let (signature, reply) = fixture("two_recipients");
    let mut plain = reply.clone();
    let keys = plain["transaction"]["message"]["accountKeys"].as_array_mut().expect("keys");
    for key in keys.iter_mut() {
        *key = key["pubkey"].clone();
    }
    let tracked = [address(WALLET_A), address(WALLET_B)];
    let provenance = live();
    // Compared without the moment each decode ran.
    let decode = |reply: &Value| {
        let mut events =
            decode_transaction(&signature, &text(reply), |candidate| tracked.contains(candidate), provenance)
                .expect("decodes");
        for event in &mut events {
            event.resolved_at = None;
            event.emitted_at = ww_core::time::UnixMillis(0);
        }
        events
    };
    assert_eq!(decode(&plain), decode(&reply));
    // Fields of a key other than its pubkey are skipped, in any order.
    let mut reordered = reply.clone();
    let first = &mut reordered["transaction"]["message"]["accountKeys"][0];
    let pubkey = first["pubkey"].clone();
    *first =
        serde_json::json!({"signer": true, "source": "transaction", "extra": {"nested": [1, 2]}, "pubkey": pubkey});
    assert_eq!(decode(&reordered), decode(&reply));
}

#[test]
fn an_account_key_without_its_pubkey_is_malformed() {
    let (signature, reply) = fixture("sol_incoming");
    let mut keyless = reply;
    keyless["transaction"]["message"]["accountKeys"][0] = serde_json::json!({"signer": true});
    let error = decode_transaction(&signature, &text(&keyless), |_| true, live()).expect_err("no pubkey");
    assert!(
        matches!(&error, DecodeError::Malformed { reason, .. } if reason.contains("missing field `pubkey`")),
        "{error}"
    );
    let mut numeric = fixture("sol_incoming").1;
    numeric["transaction"]["message"]["accountKeys"][0] = serde_json::json!(7);
    let error = decode_transaction(&signature, &text(&numeric), |_| true, live()).expect_err("not a key");
    assert!(matches!(&error, DecodeError::Malformed { reason, .. } if reason.contains("account key")), "{error}");
}
