//! `synth-capture`: a large synthetic capture for `walletwatch replay`, with
//! no node: many tracked wallets, SOL transfers, multi-recipient transfers,
//! token transfers (the recipient's associated account created idempotently
//! in the same transaction, so both owners are named), and failed
//! transactions. For each transaction it writes the `getTransaction` reply
//! (jsonParsed shape) and a `logsNotification` for every tracked wallet it
//! names, in the capture format walletwatch reads (docs/CAPTURE.md).

use std::io::{BufWriter, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use solana_pubkey::Pubkey;

const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";
const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const ATA_PROGRAM: &str = "ATokenGPvbdGVxr1b2hvZbsiqW5xWRoKtkG8rPyx8o7";
const FEE: u64 = 5_000;

/// A small deterministic generator (xorshift64*), so a seed reproduces a capture.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let value = self.next().to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
        out
    }

    fn address(&mut self) -> String {
        Pubkey::new_from_array(self.bytes::<32>()).to_string()
    }
}

struct Account {
    key: String,
    signer: bool,
    writable: bool,
    pre: u64,
    post: u64,
}

fn account(key: &str, signer: bool, writable: bool, pre: u64, post: u64) -> Account {
    Account { key: key.to_string(), signer, writable, pre, post }
}

fn transaction(signature: &str, slot: u64, accounts: &[Account], programs: &[&str], token_balances: (Value, Value), err: Value) -> Value {
    json!({
        "slot": slot,
        "blockTime": 1_700_000_000 + slot as i64 / 2,
        "version": "legacy",
        "meta": {
            "err": err,
            "fee": FEE,
            "preBalances": accounts.iter().map(|account| account.pre).collect::<Vec<_>>(),
            "postBalances": accounts.iter().map(|account| account.post).collect::<Vec<_>>(),
            "preTokenBalances": token_balances.0,
            "postTokenBalances": token_balances.1,
            "innerInstructions": [],
            "logMessages": [],
        },
        "transaction": {
            "signatures": [signature],
            "message": {
                "accountKeys": accounts.iter().map(|account| json!({
                    "pubkey": account.key, "signer": account.signer, "writable": account.writable, "source": "transaction"
                })).collect::<Vec<_>>(),
                "instructions": programs.iter().map(|program| json!({"programId": program, "stackHeight": null})).collect::<Vec<_>>(),
                "recentBlockhash": "11111111111111111111111111111111",
            }
        }
    })
}

fn token_balance(index: usize, mint: &str, owner: &str, amount: u64) -> Value {
    json!({
        "accountIndex": index, "mint": mint, "owner": owner, "programId": TOKEN_PROGRAM,
        "uiTokenAmount": {"amount": amount.to_string(), "decimals": 6, "uiAmount": amount as f64 / 1e6, "uiAmountString": (amount as f64 / 1e6).to_string()}
    })
}

/// Writes the capture; returns (transactions, notifications).
pub fn write(out: &Path, wallet_count: usize, transaction_count: usize, seed: u64) -> Result<(usize, usize)> {
    let mut rng = Rng(seed.max(1));
    let wallets: Vec<String> = (0..wallet_count.max(2)).map(|_| rng.address()).collect();
    let mints: Vec<String> = (0..8).map(|_| rng.address()).collect();
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut encoder = GzEncoder::new(BufWriter::new(file), Compression::fast());
    let header = json!({
        "version": 1, "wallets": wallets, "commitment": "confirmed",
        "created_at_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64),
        "source": "synthetic",
    });
    writeln!(encoder, "{header}")?;
    let mut notifications = 0usize;
    let mut slot = 1_000_000u64;
    for index in 0..transaction_count {
        if index % 4 == 0 {
            slot += 1;
        }
        let signature = solana_signature::Signature::from(rng.bytes::<64>()).to_string();
        let sender = &wallets[rng.below(wallets.len() as u64) as usize];
        let kind = rng.below(100);
        let balance = 1_000_000_000 + rng.below(1_000_000_000);
        let (accounts, programs, tokens, err, named): (Vec<Account>, Vec<&str>, (Value, Value), Value, Vec<String>) = if kind < 60 {
            // SOL transfer to another wallet (tracked or not).
            let receiver = if rng.below(2) == 0 { wallets[rng.below(wallets.len() as u64) as usize].clone() } else { rng.address() };
            let amount = 1_000 + rng.below(500_000_000);
            let accounts = vec![
                account(sender, true, true, balance, balance - amount - FEE),
                account(&receiver, false, true, 5_000_000, 5_000_000 + amount),
                account(SYSTEM_PROGRAM, false, false, 1, 1),
            ];
            (accounts, vec![SYSTEM_PROGRAM], (json!([]), json!([])), Value::Null, vec![sender.clone(), receiver])
        } else if kind < 75 {
            // One transaction paying three recipients.
            let recipients: Vec<String> = (0..3).map(|_| wallets[rng.below(wallets.len() as u64) as usize].clone()).collect();
            let amount = 10_000 + rng.below(10_000_000);
            let mut accounts = vec![account(sender, true, true, balance, balance - 3 * amount - FEE)];
            let mut seen = vec![sender.clone()];
            for recipient in &recipients {
                if !seen.contains(recipient) {
                    accounts.push(account(recipient, false, true, 1_000_000, 1_000_000 + amount * recipients.iter().filter(|other| *other == recipient).count() as u64));
                    seen.push(recipient.clone());
                }
            }
            // A recipient equal to the sender nets out: keep the arithmetic simple by paying the fee only.
            if seen.len() < recipients.len() + 1 {
                accounts[0].post = accounts[0].pre - FEE - amount * (accounts.len() as u64 - 1);
            }
            accounts.push(account(SYSTEM_PROGRAM, false, false, 1, 1));
            (accounts, vec![SYSTEM_PROGRAM], (json!([]), json!([])), Value::Null, seen)
        } else if kind < 90 {
            // Token transfer; the recipient's associated account is created
            // idempotently in the same transaction, so both owners are named.
            let receiver = wallets[rng.below(wallets.len() as u64) as usize].clone();
            let mint = mints[rng.below(mints.len() as u64) as usize].clone();
            let (source, destination) = (rng.address(), rng.address());
            let amount = 1 + rng.below(1_000_000_000);
            let held = amount + rng.below(1_000_000_000);
            let accounts = vec![
                account(sender, true, true, balance, balance - FEE),
                account(&source, false, true, 2_039_280, 2_039_280),
                account(&destination, false, true, 2_039_280, 2_039_280),
                account(&receiver, false, false, 1_000_000, 1_000_000),
                account(&mint, false, false, 1_461_600, 1_461_600),
                account(TOKEN_PROGRAM, false, false, 1, 1),
                account(ATA_PROGRAM, false, false, 1, 1),
            ];
            let received = rng.below(1_000_000);
            let pre = json!([token_balance(1, &mint, sender, held), token_balance(2, &mint, &receiver, received)]);
            let post = json!([token_balance(1, &mint, sender, held - amount), token_balance(2, &mint, &receiver, received + amount)]);
            (accounts, vec![ATA_PROGRAM, TOKEN_PROGRAM], (pre, post), Value::Null, vec![sender.clone(), receiver])
        } else {
            // A failed transfer: only the fee moves.
            let receiver = rng.address();
            let accounts = vec![
                account(sender, true, true, balance, balance - FEE),
                account(&receiver, false, true, 0, 0),
                account(SYSTEM_PROGRAM, false, false, 1, 1),
            ];
            let err = json!({"InstructionError": [0, {"Custom": 1}]});
            (accounts, vec![SYSTEM_PROGRAM], (json!([]), json!([])), err, vec![sender.clone()])
        };
        let t_us = index as u64 * 1_000;
        let reply = transaction(&signature, slot, &accounts, &programs, tokens, err.clone());
        let rpc = json!({
            "type": "rpc", "t_us": t_us, "method": "getTransaction",
            "params": [signature, {"commitment": "confirmed", "encoding": "jsonParsed", "maxSupportedTransactionVersion": 0}],
            "result": reply,
        });
        writeln!(encoder, "{rpc}")?;
        let mut notified: Vec<&String> = Vec::new();
        for wallet in named.iter().filter(|wallet| wallets.contains(wallet)) {
            if notified.contains(&wallet) {
                continue;
            }
            notified.push(wallet);
            let notification = json!({
                "type": "notification", "t_us": t_us, "subscribe_method": "logsSubscribe",
                "subscribe_params": [{"mentions": [wallet]}, {"commitment": "confirmed"}],
                "result": {"context": {"slot": slot}, "value": {"signature": signature, "err": err, "logs": []}},
            });
            writeln!(encoder, "{notification}")?;
            notifications += 1;
        }
    }
    encoder.finish()?.flush()?;
    Ok((transaction_count, notifications))
}
