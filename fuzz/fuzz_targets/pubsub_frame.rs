//! Any text as a PubSub frame: parsed, or refused with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ww_solana::pubsub::protocol::{Frame, notification_slot, parse_frame};

fuzz_target!(|text: &str| {
    match parse_frame(text) {
        Ok(Frame::Notification { result, .. }) => {
            let _ = notification_slot(&result);
        }
        Ok(Frame::Response { .. }) => {}
        Err(error) => assert!(!error.0.is_empty()),
    }
});
