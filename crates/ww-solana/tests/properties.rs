//! Property tests of what reads untrusted input: the transaction decoder on
//! mutated real `getTransaction` replies, and PubSub frame parsing on
//! mutated and arbitrary frames. Nothing may panic; every rejection is an
//! error that names what was wrong.

use std::time::SystemTime;

use proptest::prelude::*;
use serde_json::{Value, json};
use ww_core::event::Origin;
use ww_core::{Signature, WalletAddress};
use ww_solana::decode::{Provenance, decode_transaction, touched_addresses};
use ww_solana::pubsub::protocol::{Frame, notification_slot, parse_frame};

const FIXTURES: &[&str] =
    &["failed", "sol_incoming", "sol_outgoing", "spl_token_incoming", "token_2022_incoming", "two_recipients"];

/// The recorded replies: (signature, reply).
fn fixtures() -> Vec<(Signature, Value)> {
    FIXTURES
        .iter()
        .map(|name| {
            let path = format!("{}/tests/fixtures/solana/getTransaction/{name}.json", env!("CARGO_MANIFEST_DIR"));
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON");
            let signature =
                Signature::parse(fixture["signature"].as_str().expect("signature")).expect("valid signature");
            (signature, fixture["reply"].clone())
        })
        .collect()
}

/// Every JSON pointer inside `value` (the root included).
fn pointers(value: &Value, at: String, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pointers(child, format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), into);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{index}"), into);
            }
        }
        _ => {}
    }
    into.push(at);
}

/// A value a hostile or broken node might put anywhere.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|number| json!(number)),
        any::<u64>().prop_map(|number| json!(number)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |number| number.is_finite())
            .prop_map(|number| json!(number)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("11111111111111111111111111111111")),
        Just(json!("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// One change to a reply: replace a node, remove it, or cut an array short.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), hostile_value()).prop_map(|(at, value)| Mutation::Replace(at, value)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        (any::<prop::sample::Index>(), 0usize..3).prop_map(|(at, keep)| Mutation::Truncate(at, keep)),
    ]
}

fn apply(reply: &mut Value, mutation: &Mutation) {
    let mut all = Vec::new();
    pointers(reply, String::new(), &mut all);
    match mutation {
        Mutation::Replace(at, value) => {
            if let Some(node) = reply.pointer_mut(at.get(all.as_slice()).as_str()) {
                *node = value.clone();
            }
        }
        Mutation::Remove(at) => {
            let pointer = at.get(all.as_slice()).clone();
            let Some((parent, key)) = pointer.rsplit_once('/') else { return };
            match reply.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(items)) => {
                    if let Ok(index) = key.parse::<usize>()
                        && index < items.len()
                    {
                        items.remove(index);
                    }
                }
                _ => {}
            }
        }
        Mutation::Truncate(at, keep) => {
            if let Some(Value::Array(items)) = reply.pointer_mut(at.get(all.as_slice()).as_str()) {
                items.truncate(*keep);
            }
        }
    }
}

fn provenance() -> Provenance {
    Provenance { origin: Origin::Live, received_at: SystemTime::UNIX_EPOCH }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// A mutated reply decodes to events of tracked wallets only, or to an
    /// error naming the transaction and the problem; it never panics.
    #[test]
    fn the_decoder_survives_mutated_replies(fixture in 0..FIXTURES.len(), mutations in prop::collection::vec(mutation(), 1..4), track_all in any::<bool>()) {
        let (signature, mut reply) = fixtures().swap_remove(fixture);
        for change in &mutations {
            apply(&mut reply, change);
        }
        let tracked: Vec<WalletAddress> = fixtures().swap_remove(fixture).1["transaction"]["message"]["accountKeys"]
            .as_array()
            .map(|keys| keys.iter().filter_map(|key| WalletAddress::parse(key["pubkey"].as_str()?).ok()).collect())
            .unwrap_or_default();
        let is_tracked = |address: &WalletAddress| track_all || tracked.first() == Some(address);
        let reply = serde_json::value::to_raw_value(&reply).expect("JSON");
        let _ = touched_addresses(&reply);
        match decode_transaction(&signature, &reply, is_tracked, provenance()) {
            Ok(events) => {
                for event in &events {
                    prop_assert!(is_tracked(&event.wallet), "an event for an untracked wallet: {event:?}");
                    prop_assert_eq!(&event.signature, &signature);
                }
            }
            Err(error) => {
                let text = error.to_string();
                prop_assert!(text.contains(&signature.to_string()) && text.len() > signature.to_string().len() + 25, "unclear error: {text}");
            }
        }
    }

    /// Replies cut or corrupted as text (a truncated body, a flipped byte)
    /// are refused as JSON or decoded; never a panic.
    #[test]
    fn the_decoder_survives_corrupted_text(fixture in 0..FIXTURES.len(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (signature, reply) = fixtures().swap_remove(fixture);
        let mut text = serde_json::to_vec(&reply).expect("serialize");
        let at = flip.index(text.len());
        text[at] = byte;
        text.truncate(cut.index(text.len()) + 1);
        if let Ok(reply) = serde_json::from_slice::<Box<serde_json::value::RawValue>>(&text) {
            let _ = touched_addresses(&reply);
            if let Err(error) = decode_transaction(&signature, &reply, |_| true, provenance()) {
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    /// Any text is a frame or a clear refusal.
    #[test]
    fn frame_parsing_survives_any_text(text in ".{0,300}") {
        if let Err(error) = parse_frame(&text) {
            prop_assert!(!error.0.is_empty());
        }
    }

    /// Frames of the right outline with hostile parts: parsed faithfully or
    /// refused with a reason.
    #[test]
    fn frame_parsing_survives_hostile_frames(id in hostile_value(), method in hostile_value(), params in hostile_value(), result in hostile_value(), error in hostile_value()) {
        let mut frame = serde_json::Map::new();
        frame.insert("jsonrpc".into(), json!("2.0"));
        for (key, value) in [("id", id), ("method", method), ("params", params), ("result", result), ("error", error)] {
            if !value.is_null() {
                frame.insert(key.into(), value);
            }
        }
        let text = Value::Object(frame.clone()).to_string();
        match parse_frame(&text) {
            Ok(Frame::Notification { method, subscription, result }) => {
                prop_assert_eq!(Some(&json!(method)), frame.get("method"));
                // JSON-RPC params may be named or positional.
                let params = frame.get("params");
                let named = params.and_then(|params| params.get("subscription").or_else(|| params.get(0)));
                prop_assert_eq!(Some(&json!(subscription)), named);
                let _ = notification_slot(&result);
            }
            Ok(Frame::Response { id, .. }) => prop_assert_eq!(Some(&json!(id)), frame.get("id")),
            Err(error) => prop_assert!(!error.0.is_empty()),
        }
    }
}

/// The mutation machinery reaches deep fields (a test of the test).
#[test]
fn mutations_reach_every_field() {
    let (_, reply) = fixtures().swap_remove(1);
    let mut all = Vec::new();
    pointers(&reply, String::new(), &mut all);
    assert!(all.iter().any(|pointer| pointer == "/meta/preBalances/1"), "{all:?}");
    assert!(all.iter().any(|pointer| pointer.starts_with("/transaction/message/accountKeys/0/")));
}
