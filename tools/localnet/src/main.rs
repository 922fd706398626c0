//! `walletwatch-localnet`: a real Solana RPC + PubSub node on loopback, for
//! walletwatch's tests, benchmarks and offline trials.
//!
//! The node is surfpool-core's SVM in offline mode: it never reaches a remote
//! cluster. `serve` prints exactly one line, `READY rpc=<url> ws=<url>`, once the
//! node answers JSON-RPC over HTTP, and then runs until it is killed.
//!
//! The other subcommands are clients of any such node. They fund a fresh payer
//! by airdrop, send transactions, wait until every one is confirmed and print
//! the signatures, one per line, in the order they were sent.

mod synth;

use std::io::Write as _;
use std::net::TcpListener;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use solana_commitment_config::CommitmentConfig;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_keypair::Keypair;
use solana_message::Instruction;
use solana_program_pack::Pack as _;
use solana_pubkey::Pubkey;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_signature::Signature;
use solana_signer::Signer as _;
use solana_transaction::Transaction;
use surfpool_core::surfnet::svm::{SurfnetSvm, SurfnetSvmConfig};
use surfpool_types::{BlockProductionMode, RpcConfig, SimnetConfig, SimnetEvent, SurfpoolConfig};

/// How long `serve` waits for the node to start before giving up.
const MAX_STARTUP_WAIT: Duration = Duration::from_secs(60);
/// How long the clients wait for all their transactions to be confirmed.
const MAX_CONFIRMATION_WAIT: Duration = Duration::from_secs(120);
/// Transactions in flight at once while sending (the node confirms several
/// hundred a second with about this many concurrent senders).
const SEND_CONCURRENCY: usize = 8;
/// `getSignatureStatuses` accepts at most this many signatures a call.
const MAX_STATUSES_PER_CALL: usize = 256;
/// Lamports kept on a fresh payer on top of what it sends, for fees and rent.
const PAYER_RESERVE_LAMPORTS: u64 = 1_000_000_000;

#[derive(Parser)]
#[command(name = "walletwatch-localnet", version, about = "A local Solana RPC + PubSub node for walletwatch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts an offline node on loopback and prints `READY rpc=<url> ws=<url>`.
    Serve {
        /// HTTP JSON-RPC port (0 picks a free one).
        #[arg(long, default_value_t = 8899)]
        rpc_port: u16,
        /// PubSub WebSocket port (0 picks a free one).
        #[arg(long, default_value_t = 8900)]
        ws_port: u16,
        /// Slot time in milliseconds.
        #[arg(long, default_value_t = 400)]
        slot_ms: u64,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
    },
    /// Airdrops lamports to an address and waits for confirmation.
    Airdrop {
        #[arg(long)]
        rpc: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        lamports: u64,
    },
    /// Writes a new keypair (solana CLI JSON format) and prints its address.
    Keygen {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Sends SOL transfers and prints their signatures. Each transaction pays
    /// `--lamports` to every `--to` (repeat it for a multi-recipient transaction).
    Transfer {
        #[arg(long)]
        rpc: String,
        #[arg(long, required = true)]
        to: Vec<String>,
        #[arg(long)]
        lamports: u64,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Pay from this keypair file (funded by airdrop when short) instead of a fresh payer.
        #[arg(long)]
        payer: Option<std::path::PathBuf>,
        /// Send transactions that land but fail on chain (the payer cannot
        /// afford them; preflight is skipped). Fees are still charged.
        #[arg(long)]
        fail: bool,
        /// Print `<signature> <unix-ms>` lines: when each sendTransaction returned.
        #[arg(long)]
        print_sent_at: bool,
    },
    /// Creates a mint and the owner's associated token account, then sends
    /// token transfers to it and prints the transfer signatures.
    TokenTransfer {
        #[arg(long)]
        rpc: String,
        #[arg(long)]
        to_owner: String,
        /// Amount per transfer, in base units.
        #[arg(long)]
        amount: u64,
        /// Use the Token-2022 program instead of the Token program.
        #[arg(long)]
        token_2022: bool,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 6)]
        decimals: u8,
    },
    /// Writes a large synthetic capture for `walletwatch replay` (no node needed).
    SynthCapture {
        /// The capture file (gzip JSON lines).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Tracked wallets.
        #[arg(long, default_value_t = 1000)]
        wallets: usize,
        /// Transactions.
        #[arg(long, default_value_t = 100_000)]
        transactions: usize,
        /// Seed (the same seed writes the same capture).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { rpc_port, ws_port, slot_ms, host } => serve(&host, rpc_port, ws_port, slot_ms),
        Command::Airdrop { rpc, to, lamports } => {
            let to = parse_address(&to)?;
            block_on(async {
                let client = rpc_client(&rpc);
                let signature = airdrop(&client, &to, lamports).await?;
                println!("{signature}");
                Ok(())
            })
        }
        Command::Keygen { out } => {
            let keypair = Keypair::new();
            let bytes: Vec<u8> = keypair.to_bytes().to_vec();
            std::fs::write(&out, serde_json::to_string(&bytes)?).with_context(|| format!("writing {}", out.display()))?;
            println!("{}", keypair.pubkey());
            Ok(())
        }
        Command::Transfer { rpc, to, lamports, count, payer, fail, print_sent_at } => {
            let recipients = to.iter().map(|text| parse_address(text)).collect::<Result<Vec<_>>>()?;
            let payer = payer.map(|path| read_keypair(&path)).transpose()?;
            block_on(async {
                let options = TransferOptions { payer, is_failure: fail };
                let sent = send_sol_transfers(&rpc_client(&rpc), &recipients, lamports, count, options).await?;
                if print_sent_at {
                    let mut stdout = std::io::stdout().lock();
                    for (signature, sent_at_ms) in &sent {
                        writeln!(stdout, "{signature} {sent_at_ms}")?;
                    }
                    stdout.flush()?;
                    Ok(())
                } else {
                    print_signatures(&sent.iter().map(|(signature, _)| *signature).collect::<Vec<_>>())
                }
            })
        }
        Command::SynthCapture { out, wallets, transactions, seed } => {
            let (transactions, notifications) = synth::write(&out, wallets, transactions, seed)?;
            println!("{}: {transactions} transactions, {notifications} notifications for {wallets} wallets", out.display());
            Ok(())
        }
        Command::TokenTransfer { rpc, to_owner, amount, token_2022, count, decimals } => {
            let owner = parse_address(&to_owner)?;
            block_on(async {
                let client = rpc_client(&rpc);
                let signatures =
                    send_token_transfers(&client, &owner, amount, decimals, token_2022, count).await?;
                print_signatures(&signatures)
            })
        }
    }
}

fn block_on<F: Future<Output = Result<()>>>(future: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(future)
}

fn parse_address(text: &str) -> Result<Pubkey> {
    Pubkey::from_str(text).map_err(|error| anyhow!("invalid address {text:?}: {error}"))
}

fn read_keypair(path: &std::path::Path) -> Result<Keypair> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes: Vec<u8> = serde_json::from_str(&text).with_context(|| format!("{} is not a keypair file", path.display()))?;
    Keypair::try_from(bytes.as_slice()).map_err(|error| anyhow!("{} is not a keypair: {error}", path.display()))
}

fn rpc_client(url: &str) -> RpcClient {
    RpcClient::new_with_commitment(url.to_string(), CommitmentConfig::confirmed())
}

fn print_signatures(signatures: &[Signature]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    for signature in signatures {
        writeln!(stdout, "{signature}")?;
    }
    stdout.flush()?;
    Ok(())
}

fn pick_port(requested: u16) -> Result<u16> {
    if requested != 0 {
        return Ok(requested);
    }
    // The node binds its own sockets and cannot report an ephemeral port
    // back, so a free one is found here; the tiny race is retried by callers.
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn serve(host: &str, rpc_port: u16, ws_port: u16, slot_ms: u64) -> Result<()> {
    let rpc_port = pick_port(rpc_port)?;
    let mut ws_port = pick_port(ws_port)?;
    while ws_port == rpc_port {
        ws_port = pick_port(0)?;
    }
    // Per-instruction profiling costs ~10x in confirmed transfers a second.
    let svm_config = SurfnetSvmConfig {
        slot_time: slot_ms,
        instruction_profiling_enabled: false,
        ..SurfnetSvmConfig::default()
    };
    let (svm, simnet_events_rx, geyser_events_rx) =
        SurfnetSvm::new(svm_config).map_err(|error| anyhow!("creating the SVM: {error:?}"))?;
    let config = SurfpoolConfig {
        simnets: vec![SimnetConfig {
            offline_mode: true,
            remote_rpc_url: None,
            slot_time: slot_ms,
            block_production_mode: BlockProductionMode::Clock,
            instruction_profiling_enabled: false,
            ..SimnetConfig::default()
        }],
        rpc: RpcConfig {
            bind_host: host.to_string(),
            bind_port: rpc_port,
            ws_port,
            gossip_port: 0,
            tpu_port: 0,
            tpu_quic_port: 0,
        },
        ..SurfpoolConfig::default()
    };
    let (simnet_commands_tx, simnet_commands_rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("surfnet".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: building the node runtime: {error}");
                    std::process::exit(1);
                }
            };
            let outcome = runtime.block_on(surfpool_core::start_local_surfnet(
                svm,
                config,
                simnet_commands_tx,
                simnet_commands_rx,
                geyser_events_rx,
            ));
            if let Err(error) = outcome {
                eprintln!("error: the node stopped: {error}");
                std::process::exit(1);
            }
        })
        .context("spawning the node thread")?;

    let deadline = Instant::now() + MAX_STARTUP_WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match simnet_events_rx.recv_timeout(remaining) {
            Ok(SimnetEvent::CoreStarted(_)) => break,
            Ok(SimnetEvent::Aborted(reason)) => bail!("the node aborted while starting: {reason}"),
            Ok(_) => {}
            Err(_) => bail!("the node did not start within {MAX_STARTUP_WAIT:?}"),
        }
    }
    let rpc_url = format!("http://{host}:{rpc_port}");
    let ws_url = format!("ws://{host}:{ws_port}");
    block_on(wait_until_answering(&rpc_url))?;
    println!("READY rpc={rpc_url} ws={ws_url}");
    std::io::stdout().flush()?;

    // The events channel is unbounded: keep draining it for the node's lifetime.
    let verbose = std::env::var_os("WALLETWATCH_LOCALNET_VERBOSE").is_some();
    while let Ok(event) = simnet_events_rx.recv() {
        match event {
            SimnetEvent::ErrorLog(_, message) => eprintln!("node error: {message}"),
            SimnetEvent::Aborted(reason) => bail!("the node aborted: {reason}"),
            SimnetEvent::Shutdown => break,
            SimnetEvent::WarnLog(_, message) if verbose => eprintln!("node warning: {message}"),
            SimnetEvent::InfoLog(_, message) if verbose => eprintln!("node: {message}"),
            _ => {}
        }
    }
    Ok(())
}

async fn wait_until_answering(rpc_url: &str) -> Result<()> {
    let client = rpc_client(rpc_url);
    let deadline = Instant::now() + MAX_STARTUP_WAIT;
    loop {
        match client.get_slot().await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                bail!("the node at {rpc_url} does not answer getSlot: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn airdrop(client: &RpcClient, to: &Pubkey, lamports: u64) -> Result<Signature> {
    let signature = client
        .request_airdrop(to, lamports)
        .await
        .with_context(|| format!("requesting an airdrop of {lamports} lamports to {to}"))?;
    wait_for_confirmation(client, &[signature]).await?;
    Ok(signature)
}

async fn fresh_funded_payer(client: &RpcClient, lamports: u64) -> Result<Keypair> {
    let payer = Keypair::new();
    airdrop(client, &payer.pubkey(), lamports.saturating_add(PAYER_RESERVE_LAMPORTS)).await?;
    Ok(payer)
}

/// Builds `count` distinct transactions from the same instructions. Transactions
/// with identical instructions, payer and blockhash would share one signature,
/// so every one after the first carries a distinct compute-unit limit.
fn distinct_transactions(
    payer: &Keypair,
    instructions: &[Instruction],
    blockhash: solana_message::Hash,
    count: usize,
) -> Result<Vec<Transaction>> {
    let mut transactions = Vec::with_capacity(count);
    for index in 0..count {
        let mut with_marker = Vec::with_capacity(instructions.len() + 1);
        if index > 0 {
            let unique_limit = 200_000u32
                .checked_add(u32::try_from(index).context("too many transactions")?)
                .context("too many transactions")?;
            with_marker.push(ComputeBudgetInstruction::set_compute_unit_limit(unique_limit));
        }
        with_marker.extend_from_slice(instructions);
        transactions.push(Transaction::new_signed_with_payer(
            &with_marker,
            Some(&payer.pubkey()),
            &[payer],
            blockhash,
        ));
    }
    Ok(transactions)
}

struct TransferOptions {
    payer: Option<Keypair>,
    is_failure: bool,
}

async fn send_sol_transfers(
    client: &RpcClient,
    recipients: &[Pubkey],
    lamports: u64,
    count: usize,
    options: TransferOptions,
) -> Result<Vec<(Signature, u128)>> {
    let per_transaction = lamports.checked_mul(recipients.len() as u64).context("lamports overflow u64")?;
    let total = per_transaction.checked_mul(count as u64).context("total lamports overflow u64")?;
    let payer = match options.payer {
        Some(payer) => {
            // Top up in whole reserves only when short: a failing transfer
            // needs just its fee, a real one its amounts plus fees.
            let balance = client.get_balance(&payer.pubkey()).await.context("getBalance")?;
            let fees = (count as u64).saturating_mul(100_000).saturating_add(1_000_000);
            let needed = if options.is_failure { fees } else { total.saturating_add(fees) };
            if balance < needed {
                airdrop(client, &payer.pubkey(), needed.saturating_add(PAYER_RESERVE_LAMPORTS)).await?;
            }
            payer
        }
        None if options.is_failure => fresh_funded_payer(client, 0).await?,
        None => fresh_funded_payer(client, total).await?,
    };
    if options.is_failure {
        let balance = client.get_balance(&payer.pubkey()).await.context("getBalance")?;
        if per_transaction <= balance {
            bail!("--fail needs --lamports larger than the payer's balance ({balance})");
        }
    }
    let instructions: Vec<Instruction> = recipients
        .iter()
        .map(|to| solana_system_interface::instruction::transfer(&payer.pubkey(), to, lamports))
        .collect();
    let blockhash = client.get_latest_blockhash().await.context("getLatestBlockhash")?;
    let transactions = distinct_transactions(&payer, &instructions, blockhash, count)?;
    if options.is_failure {
        let signatures = send_failing(client, transactions).await?;
        return Ok(signatures.into_iter().map(|signature| (signature, 0)).collect());
    }
    send_and_confirm_all_timed(client, transactions).await
}

/// Sends transactions that fail on chain (preflight skipped) and waits until
/// each has landed with its error.
async fn send_failing(client: &RpcClient, transactions: Vec<Transaction>) -> Result<Vec<Signature>> {
    let config = solana_rpc_client_api::config::RpcSendTransactionConfig {
        skip_preflight: true,
        ..Default::default()
    };
    let mut signatures = Vec::with_capacity(transactions.len());
    for transaction in &transactions {
        signatures.push(
            client
                .send_transaction_with_config(transaction, config)
                .await
                .map_err(|error| anyhow!("sendTransaction failed: {error}"))?,
        );
    }
    wait_for_landing(client, &signatures, true).await?;
    Ok(signatures)
}

async fn send_token_transfers(
    client: &RpcClient,
    owner: &Pubkey,
    amount: u64,
    decimals: u8,
    is_token_2022: bool,
    count: usize,
) -> Result<Vec<Signature>> {
    let token_program = if is_token_2022 { spl_token_2022_interface::id() } else { spl_token_interface::id() };
    let payer = fresh_funded_payer(client, 0).await?;
    let mint = Keypair::new();
    let mint_len = spl_token_interface::state::Mint::LEN;
    let mint_rent = client
        .get_minimum_balance_for_rent_exemption(mint_len)
        .await
        .context("getMinimumBalanceForRentExemption")?;
    let payer_token_account = spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        &payer.pubkey(),
        &mint.pubkey(),
        &token_program,
    );
    let owner_token_account = spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        owner,
        &mint.pubkey(),
        &token_program,
    );
    let total = amount.checked_mul(count as u64).context("total amount overflows u64")?;

    let setup = vec![
        solana_system_interface::instruction::create_account(
            &payer.pubkey(),
            &mint.pubkey(),
            mint_rent,
            mint_len as u64,
            &token_program,
        ),
        initialize_mint(is_token_2022, &token_program, &mint.pubkey(), &payer.pubkey(), decimals)?,
        spl_associated_token_account_interface::instruction::create_associated_token_account(
            &payer.pubkey(),
            &payer.pubkey(),
            &mint.pubkey(),
            &token_program,
        ),
        mint_to(is_token_2022, &token_program, &mint.pubkey(), &payer_token_account, &payer.pubkey(), total)?,
    ];
    let blockhash = client.get_latest_blockhash().await.context("getLatestBlockhash")?;
    let setup_transaction =
        Transaction::new_signed_with_payer(&setup, Some(&payer.pubkey()), &[&payer, &mint], blockhash);
    send_and_confirm_all(client, vec![setup_transaction]).await.context("creating the mint")?;

    // The owner's token account is created in a transaction of its own, so that
    // the transfers below never name the owner: only its token account.
    let create_owner_account =
        spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
            &payer.pubkey(),
            owner,
            &mint.pubkey(),
            &token_program,
        );
    let create_transaction =
        Transaction::new_signed_with_payer(&[create_owner_account], Some(&payer.pubkey()), &[&payer], blockhash);
    send_and_confirm_all(client, vec![create_transaction]).await.context("creating the owner's token account")?;

    let transfer = transfer_checked(
        is_token_2022,
        &token_program,
        &payer_token_account,
        &mint.pubkey(),
        &owner_token_account,
        &payer.pubkey(),
        amount,
        decimals,
    )?;
    let blockhash = client.get_latest_blockhash().await.context("getLatestBlockhash")?;
    let transactions = distinct_transactions(&payer, &[transfer], blockhash, count)?;
    send_and_confirm_all(client, transactions).await
}

fn initialize_mint(
    is_token_2022: bool,
    token_program: &Pubkey,
    mint: &Pubkey,
    authority: &Pubkey,
    decimals: u8,
) -> Result<Instruction> {
    let instruction = if is_token_2022 {
        spl_token_2022_interface::instruction::initialize_mint2(token_program, mint, authority, None, decimals)
    } else {
        spl_token_interface::instruction::initialize_mint2(token_program, mint, authority, None, decimals)
    };
    instruction.map_err(|error| anyhow!("building initializeMint2: {error}"))
}

fn mint_to(
    is_token_2022: bool,
    token_program: &Pubkey,
    mint: &Pubkey,
    account: &Pubkey,
    authority: &Pubkey,
    amount: u64,
) -> Result<Instruction> {
    let instruction = if is_token_2022 {
        spl_token_2022_interface::instruction::mint_to(token_program, mint, account, authority, &[], amount)
    } else {
        spl_token_interface::instruction::mint_to(token_program, mint, account, authority, &[], amount)
    };
    instruction.map_err(|error| anyhow!("building mintTo: {error}"))
}

#[allow(clippy::too_many_arguments)]
fn transfer_checked(
    is_token_2022: bool,
    token_program: &Pubkey,
    source: &Pubkey,
    mint: &Pubkey,
    destination: &Pubkey,
    authority: &Pubkey,
    amount: u64,
    decimals: u8,
) -> Result<Instruction> {
    let instruction = if is_token_2022 {
        spl_token_2022_interface::instruction::transfer_checked(
            token_program, source, mint, destination, authority, &[], amount, decimals,
        )
    } else {
        spl_token_interface::instruction::transfer_checked(
            token_program, source, mint, destination, authority, &[], amount, decimals,
        )
    };
    instruction.map_err(|error| anyhow!("building transferChecked: {error}"))
}

/// Sends every transaction with bounded concurrency, then waits until all are
/// confirmed. Returns the signatures in the order the transactions were given.
async fn send_and_confirm_all(client: &RpcClient, transactions: Vec<Transaction>) -> Result<Vec<Signature>> {
    let sent = send_and_confirm_all_timed(client, transactions).await?;
    Ok(sent.into_iter().map(|(signature, _)| signature).collect())
}

/// Like [`send_and_confirm_all`], with the Unix ms at which each send returned.
async fn send_and_confirm_all_timed(client: &RpcClient, transactions: Vec<Transaction>) -> Result<Vec<(Signature, u128)>> {
    let client_ref = client;
    let results: Vec<Result<(Signature, u128)>> = futures::stream::iter(transactions)
        .map(|transaction| async move {
            let signature = client_ref
                .send_transaction(&transaction)
                .await
                .map_err(|error| anyhow!("sendTransaction failed: {error}"))?;
            let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
            Ok((signature, sent_at))
        })
        .buffered(SEND_CONCURRENCY)
        .collect()
        .await;
    let sent = results.into_iter().collect::<Result<Vec<_>>>()?;
    let signatures: Vec<Signature> = sent.iter().map(|(signature, _)| *signature).collect();
    wait_for_confirmation(client, &signatures).await?;
    Ok(sent)
}

async fn wait_for_confirmation(client: &RpcClient, signatures: &[Signature]) -> Result<()> {
    wait_for_landing(client, signatures, false).await
}

/// Waits until every signature is confirmed; `expect_failure` inverts which
/// outcome is an error.
async fn wait_for_landing(client: &RpcClient, signatures: &[Signature], expect_failure: bool) -> Result<()> {
    let deadline = Instant::now() + MAX_CONFIRMATION_WAIT;
    let mut pending: Vec<Signature> = signatures.to_vec();
    let commitment = Arc::new(CommitmentConfig::confirmed());
    while !pending.is_empty() {
        let mut still_pending = Vec::new();
        for chunk in pending.chunks(MAX_STATUSES_PER_CALL) {
            let statuses = client.get_signature_statuses(chunk).await.context("getSignatureStatuses")?.value;
            for (signature, status) in chunk.iter().zip(statuses) {
                match status {
                    Some(status) if status.satisfies_commitment(*commitment) => match (&status.err, expect_failure) {
                        (Some(error), false) => bail!("transaction {signature} failed: {error}"),
                        (None, true) => bail!("transaction {signature} succeeded but was meant to fail"),
                        _ => {}
                    },
                    _ => still_pending.push(*signature),
                }
            }
        }
        pending = still_pending;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} transactions not confirmed within {MAX_CONFIRMATION_WAIT:?}", pending.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
