//! One block's transactions, receipts and `Transfer` logs to one event per
//! (tracked wallet, transaction).
//!
//! What a wallet's event holds:
//! - **native delta** in wei: minus the value it sent (when the transaction
//!   succeeded) and the fee it paid as the sender (always: a reverted
//!   transaction still pays gas), plus the value it received (when the
//!   transaction succeeded);
//! - **token deltas**: ERC-20 `Transfer(from, to, value)` logs (three topics)
//!   summed per token contract, and ERC-721 `Transfer(from, to, tokenId)`
//!   logs (four topics) as ±1 of that token id;
//! - the fee and who paid it, success or failure, the contracts called and
//!   the main counterparty.
//!
//! A reverted transaction emits no logs, so its event holds the sender's fee
//! only (and a zero delta for a recipient: it is still activity naming it).
//! Native value moved by a contract (an internal transfer) emits no log and is
//! not in the transaction's own fields: it comes from the block's call traces
//! ([`internal_transfers`]) where the node serves them, and counts in the
//! native delta like the transaction's own value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolEvent as _, sol};
use ww_core::event::TxOutcome;
use ww_core::time::UnixMillis;
use ww_core::{ActivityEvent, Chain, Origin, Slot, TokenDelta, TxId, WalletAddress};

use crate::rpc::{Block, CallFrame, Log, Receipt, TransactionTrace};

mod erc20 {
    alloy_sol_types::sol! {
        /// ERC-20's transfer event (the amount is not indexed).
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

sol! {
    /// ERC-721's transfer event (the token id is indexed).
    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);
}

/// The topic both transfer events share: `keccak256("Transfer(address,address,uint256)")`.
pub const TRANSFER_TOPIC: B256 = erc20::Transfer::SIGNATURE_HASH;

/// What the decoder knows of a token contract.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    /// `decimals()` (0 for an NFT or a contract without it).
    pub decimals: u8,
    /// `symbol()`, when the contract has one.
    pub symbol: Option<String>,
}

/// One decoded transfer log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLog {
    /// The token contract.
    pub token: Address,
    /// The sender.
    pub from: Address,
    /// The recipient.
    pub to: Address,
    /// What moved: an ERC-20 amount or an ERC-721 token id.
    pub amount: TransferAmount,
    /// The transaction that emitted it.
    pub transaction: B256,
}

/// What a transfer log moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferAmount {
    /// ERC-20 base units.
    Fungible(U256),
    /// One ERC-721 token.
    Nft(U256),
}

/// Decodes an ERC-20 or ERC-721 `Transfer` log; `None` for anything else
/// (another event, or malformed topics and data).
pub fn transfer_log(log: &Log) -> Option<TransferLog> {
    if log.topics.first() != Some(&TRANSFER_TOPIC) {
        return None;
    }
    let (from, to, amount) = match log.topics.len() {
        3 => {
            let decoded = erc20::Transfer::decode_raw_log(log.topics.iter().copied(), &log.data).ok()?;
            (decoded.from, decoded.to, TransferAmount::Fungible(decoded.value))
        }
        4 => {
            let decoded = Transfer::decode_raw_log(log.topics.iter().copied(), &log.data).ok()?;
            (decoded.from, decoded.to, TransferAmount::Nft(decoded.tokenId))
        }
        _ => return None,
    };
    Some(TransferLog { token: log.address, from, to, amount, transaction: log.transaction_hash })
}

/// Native value a contract moved inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalTransfer {
    /// The transaction.
    pub transaction: B256,
    /// The paying contract.
    pub from: Address,
    /// The recipient.
    pub to: Address,
    /// Wei.
    pub value: U256,
}

/// The internal transfers of a block's call traces: value moved by a call
/// frame below the top one (the top frame's value is the transaction's own)
/// whose frame and callers all completed. A `DELEGATECALL` or `CALLCODE`
/// moves no value between accounts; a reverted frame's value and its
/// subcalls' are undone.
pub fn internal_transfers(block: &Block, traces: &[TransactionTrace]) -> Vec<InternalTransfer> {
    fn walk(transaction: B256, frame: &CallFrame, found: &mut Vec<InternalTransfer>) {
        for call in &frame.calls {
            if call.error.is_some() {
                continue;
            }
            let moves_value = matches!(call.kind.as_str(), "CALL" | "CREATE" | "CREATE2" | "SELFDESTRUCT");
            if let (true, Some(to), Some(value)) = (moves_value, call.to, call.value)
                && !value.is_zero()
            {
                found.push(InternalTransfer { transaction, from: call.from, to, value });
            }
            walk(transaction, call, found);
        }
    }
    let mut found = Vec::new();
    for (index, trace) in traces.iter().enumerate() {
        let transaction = trace.tx_hash.or_else(|| block.transactions.get(index).map(|transaction| transaction.hash));
        if let (Some(transaction), Some(top)) = (transaction, &trace.result)
            && top.error.is_none()
        {
            walk(transaction, top, &mut found);
        }
    }
    found
}

/// The transactions of `block` that concern a tracked wallet: sent by one,
/// sent to one, moving a token of one, or paying one from inside a contract.
pub fn relevant_transactions(
    block: &Block,
    transfers: &[TransferLog],
    internal: &[InternalTransfer],
    tracked: &HashSet<Address>,
) -> HashSet<B256> {
    let mut relevant: HashSet<B256> = block
        .transactions
        .iter()
        .filter(|transaction| {
            tracked.contains(&transaction.from) || transaction.to.is_some_and(|to| tracked.contains(&to))
        })
        .map(|transaction| transaction.hash)
        .collect();
    relevant.extend(
        transfers
            .iter()
            .filter(|transfer| tracked.contains(&transfer.from) || tracked.contains(&transfer.to))
            .map(|transfer| transfer.transaction),
    );
    relevant.extend(
        internal
            .iter()
            .filter(|transfer| tracked.contains(&transfer.from) || tracked.contains(&transfer.to))
            .map(|transfer| transfer.transaction),
    );
    relevant
}

/// Converts an alloy address to walletwatch's (EIP-55 form).
pub fn wallet_address(address: Address) -> WalletAddress {
    WalletAddress::parse(&address.to_checksum(None)).unwrap_or_else(|_| unreachable!("an address is 20 bytes"))
}

/// Converts a transaction hash to walletwatch's transaction id.
pub fn tx_id(hash: B256) -> TxId {
    TxId::parse(&format!("{hash}")).unwrap_or_else(|_| unreachable!("a hash is 32 bytes"))
}

fn to_i128(value: U256) -> i128 {
    i128::try_from(value).unwrap_or(i128::MAX)
}

fn to_u128(value: U256) -> u128 {
    u128::try_from(value).unwrap_or(u128::MAX)
}

/// Everything one block needs decoded.
#[derive(Debug)]
pub struct BlockInput<'a> {
    /// The chain.
    pub chain: Chain,
    /// The block with its transactions.
    pub block: &'a Block,
    /// Receipts of (at least) the relevant transactions, by hash.
    pub receipts: &'a HashMap<B256, Receipt>,
    /// The block's transfer logs.
    pub transfers: &'a [TransferLog],
    /// The block's internal transfers (empty where the node has no traces).
    pub internal: &'a [InternalTransfer],
    /// Tracked addresses.
    pub tracked: &'a HashSet<Address>,
    /// Token contracts' decimals and symbols.
    pub tokens: &'a HashMap<Address, TokenInfo>,
    /// How the block was found.
    pub origin: Origin,
    /// When its head was first seen.
    pub received_at: SystemTime,
}

/// Decodes the events of one block, in transaction order; a transaction
/// without a receipt in `receipts` is skipped (the caller fetches them all).
pub fn decode_block(input: &BlockInput<'_>) -> Vec<ActivityEvent> {
    let BlockInput { chain, block, receipts, transfers, internal, tracked, tokens, origin, received_at } = *input;
    let now = ww_core::time::now();
    let mut events = Vec::new();
    for transaction in &block.transactions {
        let Some(receipt) = receipts.get(&transaction.hash) else { continue };
        let logs: Vec<&TransferLog> =
            transfers.iter().filter(|transfer| transfer.transaction == transaction.hash).collect();
        let mut wallets: Vec<Address> = Vec::new();
        let mut add = |address: Address| {
            if tracked.contains(&address) && !wallets.contains(&address) {
                wallets.push(address);
            }
        };
        add(transaction.from);
        if let Some(to) = transaction.to {
            add(to);
        }
        for log in &logs {
            add(log.from);
            add(log.to);
        }
        let paid: Vec<&InternalTransfer> =
            internal.iter().filter(|transfer| transfer.transaction == transaction.hash).collect();
        for transfer in &paid {
            add(transfer.from);
            add(transfer.to);
        }
        if wallets.is_empty() {
            continue;
        }
        let succeeded = receipt.succeeded();
        let fee = receipt.fee();
        let mut programs = Vec::new();
        if let Some(to) = transaction.to.filter(|_| !transaction.input.is_empty()) {
            programs.push(wallet_address(to));
        }
        for log in &logs {
            let token = wallet_address(log.token);
            if !programs.contains(&token) {
                programs.push(token);
            }
        }
        for wallet in wallets {
            let mut native: i128 = 0;
            if transaction.from == wallet {
                if succeeded {
                    native -= to_i128(transaction.value);
                }
                native = native.saturating_sub(to_i128(fee));
            }
            if succeeded && transaction.to == Some(wallet) {
                native = native.saturating_add(to_i128(transaction.value));
            }
            // Internal transfers exist only in completed frames of a succeeded transaction.
            let mut paid_by: Option<(U256, Address)> = None;
            for transfer in paid.iter().filter(|_| succeeded) {
                if transfer.to == wallet {
                    native = native.saturating_add(to_i128(transfer.value));
                    if paid_by.is_none_or(|(size, _)| transfer.value > size) {
                        paid_by = Some((transfer.value, transfer.from));
                    }
                }
                if transfer.from == wallet {
                    native = native.saturating_sub(to_i128(transfer.value));
                    if paid_by.is_none_or(|(size, _)| transfer.value > size) {
                        paid_by = Some((transfer.value, transfer.to));
                    }
                }
            }
            // (token, token id) → delta, in a stable order.
            let mut moved: BTreeMap<(Address, Option<U256>), i128> = BTreeMap::new();
            let mut other_side: Option<(i128, Address)> = None;
            for log in &logs {
                let (key, amount) = match log.amount {
                    TransferAmount::Fungible(value) => ((log.token, None), to_i128(value)),
                    TransferAmount::Nft(id) => ((log.token, Some(id)), 1),
                };
                if log.to == wallet {
                    let total = moved.entry(key).or_default();
                    *total = total.saturating_add(amount);
                    if other_side.is_none_or(|(size, _)| amount > size) {
                        other_side = Some((amount, log.from));
                    }
                }
                if log.from == wallet {
                    let total = moved.entry(key).or_default();
                    *total = total.saturating_sub(amount);
                    if other_side.is_none_or(|(size, _)| amount > size) {
                        other_side = Some((amount, log.to));
                    }
                }
            }
            let token_deltas = moved
                .into_iter()
                .filter(|(_, delta)| *delta != 0)
                .map(|((token, id), delta)| {
                    let info = tokens.get(&token);
                    let contract = wallet_address(token);
                    TokenDelta {
                        mint: contract.clone(),
                        token_account: None,
                        token_program: contract,
                        decimals: if id.is_some() { 0 } else { info.map_or(0, |info| info.decimals) },
                        delta,
                        symbol: info.and_then(|info| info.symbol.clone()),
                        token_id: id.map(|id| id.to_string()),
                    }
                })
                .collect();
            let counterparty = if transaction.from == wallet {
                transaction.to.filter(|to| *to != wallet && logs.is_empty())
            } else if transaction.to == Some(wallet) {
                Some(transaction.from)
            } else {
                None
            }
            .or(other_side.map(|(_, address)| address))
            .or(paid_by.map(|(_, address)| address))
            .filter(|address| *address != wallet && *address != Address::ZERO)
            .map(wallet_address);
            events.push(ActivityEvent {
                chain,
                wallet: wallet_address(wallet),
                signature: tx_id(transaction.hash),
                slot: Slot(block.header.number.to::<u64>()),
                block_time: i64::try_from(block.header.timestamp.to::<u64>()).ok(),
                native_delta: native,
                token_deltas,
                fee: to_u128(fee),
                fee_payer: wallet_address(transaction.from),
                outcome: if succeeded {
                    TxOutcome::Success
                } else {
                    TxOutcome::Failed { error: "\"execution reverted\"".to_string() }
                },
                programs: programs.clone(),
                origin,
                received_at: UnixMillis::from(received_at),
                resolved_at: Some(now),
                emitted_at: now,
                counterparty,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Bytes, U64, address, b256};

    use crate::rpc::{Header, Transaction};

    const WALLET: Address = address!("0x00000000000000000000000000000000000000aa");
    const OTHER: Address = address!("0x00000000000000000000000000000000000000bb");
    const TOKEN: Address = address!("0x00000000000000000000000000000000000000cc");

    fn topic(address: Address) -> B256 {
        address.into_word()
    }

    fn block(transactions: Vec<Transaction>) -> Block {
        Block {
            header: Header {
                number: U64::from(7),
                hash: B256::repeat_byte(7),
                parent_hash: B256::repeat_byte(6),
                timestamp: U64::from(1_700_000_000),
                logs_bloom: None,
            },
            transactions,
        }
    }

    fn transaction(hash: u8, from: Address, to: Address, value: u64, input: &[u8]) -> Transaction {
        Transaction {
            hash: B256::repeat_byte(hash),
            from,
            to: Some(to),
            value: U256::from(value),
            input: Bytes::copy_from_slice(input),
        }
    }

    fn receipt(hash: u8, succeeded: bool) -> Receipt {
        Receipt {
            transaction_hash: B256::repeat_byte(hash),
            status: Some(U64::from(u8::from(succeeded))),
            gas_used: U256::from(21_000),
            effective_gas_price: U256::from(2),
            logs: Vec::new(),
            contract_address: None,
            block_number: None,
        }
    }

    fn decode(block: &Block, receipts: Vec<Receipt>, logs: &[Log]) -> Vec<ActivityEvent> {
        decode_traced(block, receipts, logs, &[])
    }

    fn decode_traced(
        block: &Block,
        receipts: Vec<Receipt>,
        logs: &[Log],
        internal: &[InternalTransfer],
    ) -> Vec<ActivityEvent> {
        let transfers: Vec<TransferLog> = logs.iter().filter_map(transfer_log).collect();
        let receipts = receipts.into_iter().map(|receipt| (receipt.transaction_hash, receipt)).collect();
        let tracked = HashSet::from([WALLET]);
        let tokens = HashMap::from([(TOKEN, TokenInfo { decimals: 6, symbol: Some("TT".into()) })]);
        decode_block(&BlockInput {
            chain: Chain::EVM_LOCAL,
            block,
            receipts: &receipts,
            transfers: &transfers,
            internal,
            tracked: &tracked,
            tokens: &tokens,
            origin: Origin::Live,
            received_at: SystemTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn the_transfer_topic_is_the_standard_one() {
        assert_eq!(TRANSFER_TOPIC, b256!("0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"));
        assert_eq!(
            tx_id(B256::repeat_byte(0xab)).as_str(),
            format!("0x{}", "ab".repeat(32)),
            "transaction ids are full lower-case hex"
        );
    }

    #[test]
    fn native_transfers_in_and_out_with_the_senders_fee() {
        let block = block(vec![
            transaction(1, OTHER, WALLET, 1_000, b""),
            transaction(2, WALLET, OTHER, 300, b""),
            transaction(3, OTHER, OTHER, 5, b""),
        ]);
        let events = decode(&block, vec![receipt(1, true), receipt(2, true), receipt(3, true)], &[]);
        assert_eq!(events.len(), 2, "the untracked pair gives none");
        assert_eq!(events[0].native_delta, 1_000);
        assert_eq!(events[0].fee_payer, wallet_address(OTHER));
        assert_eq!(events[0].counterparty, Some(wallet_address(OTHER)));
        assert_eq!(events[1].native_delta, -300 - 42_000);
        assert_eq!(events[1].fee, 42_000);
        assert_eq!(events[1].slot, Slot(7));
        assert_eq!(events[1].block_time, Some(1_700_000_000));
    }

    #[test]
    fn a_reverted_transaction_costs_its_sender_the_fee_only() {
        let block = block(vec![transaction(1, WALLET, OTHER, 1_000, b"\x01"), transaction(2, OTHER, WALLET, 9, b"")]);
        let events = decode(&block, vec![receipt(1, false), receipt(2, false)], &[]);
        assert_eq!(events[0].native_delta, -42_000);
        assert!(!events[0].outcome.is_success());
        assert_eq!(events[0].programs, vec![wallet_address(OTHER)], "a call names the contract");
        assert_eq!(events[1].native_delta, 0, "a reverted payment pays nothing");
    }

    #[test]
    fn token_transfers_sum_per_contract_and_nfts_count_by_id() {
        let data = |value: u64| Bytes::copy_from_slice(&U256::from(value).to_be_bytes::<32>());
        let log = |topics: Vec<B256>, data: Bytes| Log {
            address: TOKEN,
            topics,
            data,
            transaction_hash: B256::repeat_byte(1),
            log_index: None,
            block_hash: None,
            block_number: None,
        };
        let logs = [
            log(vec![TRANSFER_TOPIC, topic(OTHER), topic(WALLET)], data(500)),
            log(vec![TRANSFER_TOPIC, topic(WALLET), topic(OTHER)], data(200)),
            log(vec![TRANSFER_TOPIC, topic(OTHER), topic(WALLET), B256::from(U256::from(42))], Bytes::new()),
            // Malformed: a fungible transfer without its amount.
            log(vec![TRANSFER_TOPIC, topic(OTHER), topic(WALLET)], Bytes::new()),
        ];
        // Sent by an untracked account to the token contract.
        let block = block(vec![transaction(1, OTHER, TOKEN, 0, b"\xa9\x05\x9c\xbb")]);
        let events = decode(&block, vec![receipt(1, true)], &logs);
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.native_delta, 0);
        assert_eq!(event.token_deltas.len(), 2, "{:?}", event.token_deltas);
        assert_eq!(event.token_deltas[0].delta, 300);
        assert_eq!(event.token_deltas[0].decimals, 6);
        assert_eq!(event.token_deltas[0].symbol.as_deref(), Some("TT"));
        assert_eq!(event.token_deltas[1].token_id.as_deref(), Some("42"));
        assert_eq!(event.token_deltas[1].delta, 1);
        assert_eq!(event.counterparty, Some(wallet_address(OTHER)));
        assert_eq!(event.programs, vec![wallet_address(TOKEN)]);
    }

    fn frame(kind: &str, from: Address, to: Address, value: u64, error: bool, calls: Vec<CallFrame>) -> CallFrame {
        CallFrame {
            kind: kind.into(),
            from,
            to: Some(to),
            value: Some(U256::from(value)),
            error: error.then(|| "execution reverted".to_string()),
            calls,
        }
    }

    #[test]
    fn internal_transfers_are_the_value_of_completed_inner_calls() {
        const CONTRACT: Address = address!("0x00000000000000000000000000000000000000dd");
        let paying = B256::repeat_byte(1);
        let undone = B256::repeat_byte(2);
        let block = block(vec![
            Transaction {
                hash: paying,
                from: OTHER,
                to: Some(CONTRACT),
                value: U256::from(10),
                input: Bytes::from(vec![1]),
            },
            Transaction {
                hash: undone,
                from: OTHER,
                to: Some(CONTRACT),
                value: U256::from(7),
                input: Bytes::from(vec![1]),
            },
        ]);
        let traces = vec![
            // The contract pays the wallet 10 (and a delegate call carries no value of its own).
            TransactionTrace {
                tx_hash: Some(paying),
                result: Some(frame(
                    "CALL",
                    OTHER,
                    CONTRACT,
                    10,
                    false,
                    vec![
                        frame("CALL", CONTRACT, WALLET, 10, false, vec![]),
                        frame("DELEGATECALL", CONTRACT, OTHER, 10, false, vec![]),
                    ],
                )),
            },
            // The payment happens in a call that reverts: undone, though its own frame has no error.
            TransactionTrace {
                tx_hash: None,
                result: Some(frame(
                    "CALL",
                    OTHER,
                    CONTRACT,
                    7,
                    false,
                    vec![frame(
                        "CALL",
                        CONTRACT,
                        CONTRACT,
                        7,
                        true,
                        vec![frame("CALL", CONTRACT, WALLET, 7, false, vec![])],
                    )],
                )),
            },
        ];
        let internal = internal_transfers(&block, &traces);
        assert_eq!(
            internal,
            vec![InternalTransfer { transaction: paying, from: CONTRACT, to: WALLET, value: U256::from(10) }]
        );
        let tracked = HashSet::from([WALLET]);
        assert_eq!(relevant_transactions(&block, &[], &internal, &tracked), HashSet::from([paying]));
        let events = decode_traced(&block, vec![receipt(1, true), receipt(2, true)], &[], &internal);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].native_delta, 10);
        assert_eq!(events[0].fee_payer, wallet_address(OTHER), "the sender paid the fee");
        assert_eq!(
            events[0].counterparty.as_ref().map(|address| address.as_str().to_string()),
            Some(CONTRACT.to_checksum(None))
        );
    }
}
