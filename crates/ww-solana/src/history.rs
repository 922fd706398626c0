//! Walking an address's history with `getSignaturesForAddress`.
//!
//! The node pages newest → oldest, at most 1000 entries a call, with `before`
//! (exclusive, older than) and `until` (exclusive, stop at). [`list_signatures`]
//! follows the pages until the range is exhausted and returns the entries
//! **oldest first**, so callers can process and checkpoint in chain order.

use ww_core::{Commitment, Signature};

use crate::error::RpcError;
use crate::rpc::client::{MAX_SIGNATURES_PER_PAGE, RpcClient, SignatureInfo, SignaturesQuery};
use ww_core::WalletAddress;

/// Bounds of a history walk (all optional).
#[derive(Debug, Clone, Default)]
pub struct HistoryRange {
    /// Only entries older than this signature.
    pub before: Option<Signature>,
    /// Stop at this signature (exclusive): typically the cursor.
    pub until: Option<Signature>,
    /// Only entries in slots strictly greater than this.
    pub after_slot: Option<u64>,
    /// Only entries with a block time at or after this (Unix seconds).
    pub since_time: Option<i64>,
    /// Only entries with a block time at or before this (Unix seconds).
    pub until_time: Option<i64>,
    /// Only entries in slots at or below this.
    pub max_slot: Option<u64>,
}

/// Lists every signature of `address` in `range`, oldest first.
pub async fn list_signatures(
    client: &RpcClient,
    address: &WalletAddress,
    range: &HistoryRange,
    commitment: Commitment,
    mut on_page: impl FnMut(usize),
) -> Result<Vec<SignatureInfo>, RpcError> {
    let mut collected: Vec<SignatureInfo> = Vec::new();
    let mut before = range.before.clone();
    loop {
        let query = SignaturesQuery {
            before: before.clone(),
            until: range.until.clone(),
            limit: MAX_SIGNATURES_PER_PAGE,
            commitment,
        };
        let page = client.get_signatures_for_address(address, &query).await?;
        let page_len = page.len();
        let mut is_past_range = false;
        for entry in page {
            if range.after_slot.is_some_and(|slot| entry.slot.0 <= slot)
                || range.since_time.is_some_and(|since| entry.block_time.is_some_and(|time| time < since))
            {
                is_past_range = true;
                break;
            }
            before = Some(entry.signature.clone());
            if range.until_time.is_some_and(|until| entry.block_time.is_some_and(|time| time > until))
                || range.max_slot.is_some_and(|max| entry.slot.0 > max)
            {
                continue;
            }
            collected.push(entry);
        }
        on_page(collected.len());
        if is_past_range || page_len < MAX_SIGNATURES_PER_PAGE {
            break;
        }
    }
    collected.reverse();
    Ok(collected)
}
