//! A real local EVM node for tests: anvil (from the npm package
//! `@foundry-rs/anvil-linux-amd64`, which `scripts/test.sh` installs and
//! names in `WALLETWATCH_ANVIL_BIN`), with helpers that send test traffic
//! from its unlocked dev accounts (or any address, impersonated).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::{SolCall as _, SolConstructor as _, sol};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// anvil's first dev account (unlocked, 10 000 ETH).
pub const DEV_ACCOUNT: Address = alloy_primitives::address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

/// The test token's creation bytecode (see `evm/compile.js` for how it was made).
const TEST_TOKEN_BIN: &str = include_str!("../evm/TestToken.bin");
/// `evm/Forwarder.sol`, compiled the same way.
const FORWARDER_BIN: &str = include_str!("../evm/Forwarder.bin");

sol! {
    /// The test token (`evm/TestToken.sol`).
    contract TestToken {
        constructor(string name_, string symbol_, uint8 decimals_, uint256 supply);
        function transfer(address to, uint256 value) external returns (bool);
    }

    /// The forwarder (`evm/Forwarder.sol`).
    contract Forwarder {
        function forward(address to) external payable;
        function tryForwardThenRevert(address to) external payable;
    }
}

/// Where the anvil binary is: `WALLETWATCH_ANVIL_BIN`.
pub fn anvil_binary() -> Result<PathBuf> {
    let path = std::env::var_os("WALLETWATCH_ANVIL_BIN").map(PathBuf::from).ok_or_else(|| {
        anyhow!(
            "WALLETWATCH_ANVIL_BIN is unset: run the tests with scripts/test.sh (it installs anvil with npm), or \
             `npm install @foundry-rs/anvil-linux-amd64@1.7.1` and point it at node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
        )
    })?;
    if !path.is_file() {
        bail!("WALLETWATCH_ANVIL_BIN={} is not a file", path.display());
    }
    Ok(path)
}

/// A running anvil; killed when dropped.
#[derive(Debug)]
pub struct Anvil {
    _child: Child,
    http: reqwest::Client,
    /// HTTP JSON-RPC URL.
    pub rpc_url: String,
    /// WebSocket URL (the same port).
    pub ws_url: String,
}

impl Anvil {
    /// Starts anvil on a free loopback port, mining one block per `block_time`
    /// second(s) (`None`: a block per transaction).
    pub async fn start(block_time: Option<u64>) -> Result<Self> {
        let binary = anvil_binary()?;
        let mut command = Command::new(&binary);
        command.args(["--host", "127.0.0.1", "--port", "0"]);
        if let Some(seconds) = block_time {
            command.args(["--block-time", &seconds.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let stdout = child.stdout.take().context("anvil stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.trim().strip_prefix("Listening on ") {
                    return Ok::<_, std::io::Error>(Some(address.to_string()));
                }
            }
            Ok(None)
        })
        .await
        .context("waiting for anvil to listen")??
        .context("anvil exited before listening")?;
        // Keep draining stdout so anvil never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            _child: child,
            http: ww_http::client_builder()?.build()?,
            rpc_url: format!("http://{address}"),
            ws_url: format!("ws://{address}"),
        })
    }

    /// One JSON-RPC call; a node error is an `Err` with its message.
    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        let reply: Value = self
            .http
            .post(&self.rpc_url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await?
            .json()
            .await?;
        if let Some(error) = reply.get("error") {
            bail!("{method}: {error}");
        }
        Ok(reply["result"].clone())
    }

    /// The newest block number.
    pub async fn block_number(&self) -> Result<u64> {
        let text = self.rpc("eth_blockNumber", json!([])).await?;
        Ok(u64::from_str_radix(text.as_str().unwrap_or_default().trim_start_matches("0x"), 16)?)
    }

    /// Gives `address` a balance of `wei` and lets it send without a key.
    pub async fn fund_and_impersonate(&self, address: Address, wei: U256) -> Result<()> {
        self.rpc("anvil_setBalance", json!([address, wei])).await?;
        self.rpc("anvil_impersonateAccount", json!([address])).await?;
        Ok(())
    }

    /// Sends a transaction from an unlocked (or impersonated) account;
    /// returns its hash once it is mined. `gas` forces a limit (a call that
    /// would revert is sent anyway, and mined as failed).
    pub async fn send(
        &self,
        from: Address,
        to: Option<Address>,
        value: U256,
        data: Bytes,
        gas: Option<u64>,
    ) -> Result<B256> {
        let mut transaction = json!({"from": from, "value": value, "data": data});
        if let Some(to) = to {
            transaction["to"] = json!(to);
        }
        if let Some(gas) = gas {
            transaction["gas"] = json!(format!("{gas:#x}"));
        }
        let hash: B256 = serde_json::from_value(self.rpc("eth_sendTransaction", json!([transaction])).await?)?;
        self.wait_for_receipt(hash).await?;
        Ok(hash)
    }

    /// Waits (up to 30 s) until `hash` is mined; returns its receipt.
    pub async fn wait_for_receipt(&self, hash: B256) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let receipt = self.rpc("eth_getTransactionReceipt", json!([hash])).await?;
            if !receipt.is_null() {
                return Ok(receipt);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("transaction {hash} was not mined within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `wei` from `from` to `to`.
    pub async fn transfer(&self, from: Address, to: Address, wei: U256) -> Result<B256> {
        self.send(from, Some(to), wei, Bytes::new(), None).await
    }

    /// Deploys the test ERC-20 (`supply` to `from`); returns its address.
    pub async fn deploy_token(&self, from: Address, symbol: &str, decimals: u8, supply: U256) -> Result<Address> {
        let mut code = alloy_primitives::hex::decode(TEST_TOKEN_BIN.trim())?;
        code.extend(
            TestToken::constructorCall::new((format!("{symbol} test token"), symbol.to_string(), decimals, supply))
                .abi_encode(),
        );
        let hash = self.send(from, None, U256::ZERO, Bytes::from(code), None).await?;
        let receipt = self.wait_for_receipt(hash).await?;
        Ok(serde_json::from_value(receipt["contractAddress"].clone())?)
    }

    /// Deploys the forwarder contract (internal transfers).
    pub async fn deploy_forwarder(&self, from: Address) -> Result<Address> {
        let code = alloy_primitives::hex::decode(FORWARDER_BIN.trim())?;
        let hash = self.send(from, None, U256::ZERO, Bytes::from(code), None).await?;
        let receipt = self.wait_for_receipt(hash).await?;
        Ok(serde_json::from_value(receipt["contractAddress"].clone())?)
    }

    /// `from` sends `wei` to the forwarder, which pays it on to `to` from
    /// inside the contract; with `undone`, in a call that reverts (the
    /// transaction succeeds, `to` gets nothing).
    pub async fn forward(
        &self,
        forwarder: Address,
        from: Address,
        to: Address,
        wei: U256,
        undone: bool,
    ) -> Result<B256> {
        let data = if undone {
            Forwarder::tryForwardThenRevertCall { to }.abi_encode()
        } else {
            Forwarder::forwardCall { to }.abi_encode()
        };
        self.send(from, Some(forwarder), wei, Bytes::from(data), Some(300_000)).await
    }

    /// Sends `amount` of `token` from `from` to `to`; a transfer beyond the
    /// sender's balance is mined as failed (gas forced).
    pub async fn token_transfer(&self, token: Address, from: Address, to: Address, amount: U256) -> Result<B256> {
        let data = TestToken::transferCall { to, value: amount }.abi_encode();
        self.send(from, Some(token), U256::ZERO, Bytes::from(data), Some(200_000)).await
    }

    /// Whether a mined transaction succeeded.
    pub async fn succeeded(&self, hash: B256) -> Result<bool> {
        Ok(self.wait_for_receipt(hash).await?["status"] == "0x1")
    }
}

/// A random address nobody holds a key for.
pub fn fresh_evm_address() -> Address {
    let bytes: [u8; 24] = crate::random_bytes();
    Address::from_slice(&bytes[..20])
}
