//! Test helpers shared by walletwatch's crates.
//!
//! [`LocalNode`] starts a real Solana RPC + PubSub node (the
//! `walletwatch-localnet` binary, built from `tools/localnet`) on free
//! loopback ports and drives it: airdrops, SOL transfers, SPL and Token-2022
//! transfers. Tests talk to the node over RPC exactly as walletwatch does in
//! production; nothing here is a fake.
//!
//! The binary is found through `WALLETWATCH_LOCALNET_BIN`, else in the cargo
//! target directory (`CARGO_TARGET_DIR` or `./target`) under `release/`. Build
//! it with `cargo build --release --locked --manifest-path tools/localnet/Cargo.toml`
//! (`.ci/run` does).
//!
//! [`anvil::Anvil`] is the EVM counterpart: a real anvil node (found through
//! `WALLETWATCH_ANVIL_BIN`, installed by `scripts/test.sh`).

pub mod anvil;
pub mod conformance;
pub mod contracts;
pub mod postgres;
mod proxy;
pub mod pubsub;
pub mod redis;
mod rpc_proxy;
mod store;

pub use contracts::ContractServer;
pub use proxy::ChaosProxy;
pub use pubsub::FakePubsub;
pub use rpc_proxy::{RpcProxy, TransactionFault};
pub use store::FlakyStore;

/// A Discord application key pair for signing interactions in tests.
#[derive(Debug)]
pub struct DiscordApp {
    key: ed25519_dalek::SigningKey,
}

impl DiscordApp {
    /// A deterministic key pair from `seed`.
    pub fn new(seed: u8) -> Self {
        Self { key: ed25519_dalek::SigningKey::from_bytes(&[seed; 32]) }
    }

    /// The public key as hex (what the Developer Portal shows).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The `X-Signature-Ed25519` value for `timestamp + body`.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        hex::encode(self.key.sign(&message).to_bytes())
    }
}

use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use ww_core::{Signature, WalletAddress};

/// How long the node may take to print `READY`.
const MAX_STARTUP_WAIT: Duration = Duration::from_secs(90);
/// Starting the node can race another process for the free ports it picked.
const MAX_START_ATTEMPTS: usize = 3;

/// Returns the path of the `walletwatch-localnet` binary, or an error that
/// says how to build it.
pub fn localnet_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WALLETWATCH_LOCALNET_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("WALLETWATCH_LOCALNET_BIN={} is not a file", path.display());
    }
    let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root.join("target"));
    let candidate = target_dir.join("release").join("walletwatch-localnet");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "walletwatch-localnet not found at {} and WALLETWATCH_LOCALNET_BIN is unset; build it with \
         `cargo build --release --locked --manifest-path tools/localnet/Cargo.toml` (or run .ci/run)",
        candidate.display()
    )
}

/// Returns `N` random bytes (`N` a multiple of 8), for fresh addresses.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    for chunk in bytes.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos()),
        );
        chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
    }
    bytes
}

/// Returns a loopback port free at the moment (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// Returns a random address nobody holds a key for: a fresh destination.
pub fn fresh_address() -> WalletAddress {
    let bytes: [u8; 32] = random_bytes();
    WalletAddress::parse(&bs58::encode(bytes).into_string()).expect("32 bytes always make a valid address")
}

/// Returns the address whose 32 bytes are all `byte` (fixed, readable test data).
pub fn address_of_byte(byte: u8) -> WalletAddress {
    WalletAddress::parse(&bs58::encode([byte; 32]).into_string()).expect("32 bytes always make a valid address")
}

/// Returns the signature whose 64 bytes are all `byte`.
pub fn signature_of_byte(byte: u8) -> Signature {
    Signature::parse(&bs58::encode([byte; 64]).into_string()).expect("64 bytes always make a valid signature")
}

/// Returns a valid signature derived from `seed` (distinct seeds, distinct signatures).
pub fn signature_from_seed(seed: u64) -> Signature {
    let mut bytes = [7u8; 64];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    Signature::parse(&bs58::encode(bytes).into_string()).expect("64 bytes always make a valid signature")
}

/// Returns a plausible successful incoming-SOL event for tests and benchmarks.
pub fn sample_event(wallet: &WalletAddress, signature: Signature, slot: u64) -> ww_core::ActivityEvent {
    ww_core::ActivityEvent {
        chain: ww_core::Chain::SOLANA,
        wallet: wallet.clone(),
        signature,
        slot: ww_core::Slot(slot),
        block_time: Some(1_700_000_000),
        native_delta: 2_500_000_000,
        token_deltas: vec![],
        fee: 5_000,
        fee_payer: wallet.clone(),
        outcome: ww_core::event::TxOutcome::Success,
        programs: vec![],
        origin: ww_core::Origin::Live,
        received_at: ww_core::time::UnixMillis(1),
        resolved_at: None,
        emitted_at: ww_core::time::UnixMillis(2),
        counterparty: None,
    }
}

/// A running local Solana node; killed when dropped.
#[derive(Debug)]
pub struct LocalNode {
    child: Child,
    binary: PathBuf,
    /// HTTP JSON-RPC URL.
    pub rpc_url: String,
    /// PubSub WebSocket URL.
    pub ws_url: String,
}

impl LocalNode {
    /// Starts a node on free loopback ports with 400 ms slots.
    pub async fn start() -> Result<Self> {
        Self::start_with_slot_ms(400).await
    }

    /// Starts a node with the given slot time.
    pub async fn start_with_slot_ms(slot_ms: u64) -> Result<Self> {
        let binary = localnet_binary()?;
        let mut last_error = anyhow!("not started");
        for _ in 0..MAX_START_ATTEMPTS {
            match Self::try_start(&binary, slot_ms).await {
                Ok(node) => return Ok(node),
                Err(error) => last_error = error,
            }
        }
        Err(last_error.context(format!("starting {} {MAX_START_ATTEMPTS} times", binary.display())))
    }

    async fn try_start(binary: &Path, slot_ms: u64) -> Result<Self> {
        let mut child = Command::new(binary)
            .args(["serve", "--rpc-port", "0", "--ws-port", "0", "--slot-ms", &slot_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let stdout = child.stdout.take().context("node stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready_line = tokio::time::timeout(MAX_STARTUP_WAIT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("READY ") {
                    return Ok::<_, std::io::Error>(Some(line));
                }
            }
            Ok(None)
        })
        .await
        .context("waiting for READY")??
        .context("the node exited before READY")?;
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |name: &str| {
            ready_line
                .split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .map(str::to_string)
                .with_context(|| format!("no {name} in {ready_line:?}"))
        };
        Ok(Self { rpc_url: field("rpc=")?, ws_url: field("ws=")?, child, binary: binary.to_path_buf() })
    }

    /// Airdrops lamports to an address and waits for confirmation.
    pub async fn airdrop(&self, to: &WalletAddress, lamports: u64) -> Result<Signature> {
        let signatures =
            self.run_client(&["airdrop", "--to", to.as_str(), "--lamports", &lamports.to_string()]).await?;
        signatures.into_iter().next().context("airdrop printed no signature")
    }

    /// Sends `count` SOL transfers of `lamports` to `to` from a fresh payer;
    /// returns their signatures once all are confirmed.
    pub async fn transfer(&self, to: &WalletAddress, lamports: u64, count: usize) -> Result<Vec<Signature>> {
        self.run_client(&[
            "transfer",
            "--to",
            to.as_str(),
            "--lamports",
            &lamports.to_string(),
            "--count",
            &count.to_string(),
        ])
        .await
    }

    /// Writes a new keypair file and returns its address.
    pub async fn keygen(&self, path: &Path) -> Result<WalletAddress> {
        let output = Command::new(&self.binary)
            .arg("keygen")
            .arg("--out")
            .arg(path)
            .kill_on_drop(true)
            .output()
            .await
            .context("running walletwatch-localnet keygen")?;
        if !output.status.success() {
            bail!("keygen failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        WalletAddress::parse(String::from_utf8_lossy(&output.stdout).trim())
            .map_err(|error| anyhow!("keygen printed {error}"))
    }

    /// Sends `count` transactions from the keypair in `payer` (funded by
    /// airdrop when short), each paying `lamports` to every recipient. With
    /// `is_failure`, the transactions land but fail on chain (fees charged).
    pub async fn transfer_from(
        &self,
        payer: &Path,
        recipients: &[WalletAddress],
        lamports: u64,
        count: usize,
        is_failure: bool,
    ) -> Result<Vec<Signature>> {
        let lamports_text = lamports.to_string();
        let count_text = count.to_string();
        let payer_text = payer.display().to_string();
        let mut args = vec!["transfer", "--payer", &payer_text, "--lamports", &lamports_text, "--count", &count_text];
        for recipient in recipients {
            args.push("--to");
            args.push(recipient.as_str());
        }
        if is_failure {
            args.push("--fail");
        }
        self.run_client(&args).await
    }

    /// Creates a mint and `owner`'s token account, then sends `count`
    /// transfers of `amount` base units to it; returns the transfer signatures.
    pub async fn token_transfer(
        &self,
        owner: &WalletAddress,
        amount: u64,
        is_token_2022: bool,
        count: usize,
    ) -> Result<Vec<Signature>> {
        let amount_text = amount.to_string();
        let count_text = count.to_string();
        let mut args =
            vec!["token-transfer", "--to-owner", owner.as_str(), "--amount", &amount_text, "--count", &count_text];
        if is_token_2022 {
            args.push("--token-2022");
        }
        self.run_client(&args).await
    }

    async fn run_client(&self, args: &[&str]) -> Result<Vec<Signature>> {
        let output = Command::new(&self.binary)
            .args(args)
            .args(["--rpc", &self.rpc_url])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running walletwatch-localnet {}", args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "walletwatch-localnet {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| Signature::parse(line).map_err(|error| anyhow!("bad signature line {line:?}: {error}")))
            .collect()
    }

    /// Returns the node's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_addresses_are_valid_and_distinct() {
        let first = fresh_address();
        let second = fresh_address();
        assert_ne!(first, second);
        assert_eq!(first.to_bytes().len(), 32);
    }
}
