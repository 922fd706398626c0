//! The `walletwatch` binary as a user runs it: separate processes sharing one
//! data directory, exit codes, and messages.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ww_core::store::{NewEvent, Store as _};
use ww_core::{Signature, WalletAddress};
use ww_store::RedbStore;

const WALLET: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";

fn walletwatch(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walletwatch"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("WALLETWATCH_CONFIG")
        .env_remove("SOLANA_RPC_URL")
        .env_remove("SOLANA_WS_URL")
        .env_remove("LOG_LEVEL")
        .current_dir(data_dir);
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("walletwatch runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sample_event(wallet: &WalletAddress, signature_byte: u8) -> NewEvent {
    let signature = Signature::parse(&bs58::encode([signature_byte; 64]).into_string()).expect("valid");
    NewEvent {
        event: ww_test_utils::sample_event(wallet, signature, u64::from(signature_byte)),
        routes: vec![],
        allows_before_tracking: false,
    }
}

#[test]
fn invalid_addresses_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run(walletwatch(dir.path()).args(["track", "0OIl-not-base58"]));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let message = stderr(&output);
    assert!(message.contains("not base58") && message.contains("'0'"), "{message}");

    let short = bs58::encode([5u8; 31]).into_string();
    let output = run(walletwatch(dir.path()).args(["track", &short]));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("31 bytes, expected exactly 32"), "{}", stderr(&output));
    // Nothing was tracked by the failed attempts.
    let listed = run(walletwatch(dir.path()).args(["list", "--json"]));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&listed.stdout).expect("json"), serde_json::json!([]));
}

#[test]
fn track_list_untrack_round_trip_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run(walletwatch(dir.path()).args(["track", WALLET, "--label", "whale", "--user", "alice"]));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), format!("🟢 Tracking wallet: {WALLET}.\n"));

    let listed = run(walletwatch(dir.path()).arg("list"));
    assert!(listed.status.success(), "{listed:?}");
    let text = stdout(&listed);
    assert!(text.starts_with("Active Wallet Subscriptions:\n- Wallet: 9WzD...AWWM (Pending)\n"), "{text}");
    assert!(text.contains("label: whale") && text.contains("users: alice"), "{text}");

    let listed = run(walletwatch(dir.path()).args(["list", "--json"]));
    let wallets: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(wallets[0]["address"], WALLET);
    assert_eq!(wallets[0]["label"], "whale");
    assert_eq!(wallets[0]["tracking_users"], serde_json::json!(["alice"]));
    assert_eq!(wallets[0]["subscription_status"], "Pending");
    assert_eq!(wallets[0]["transaction_count"], 0);
    assert_eq!(wallets[0]["last_transaction"], serde_json::Value::Null);

    let wrong_user = run(walletwatch(dir.path()).args(["untrack", WALLET, "--user", "bob"]));
    assert_eq!(wrong_user.status.code(), Some(2), "{wrong_user:?}");
    assert!(stderr(&wrong_user).contains("not tracked by user \"bob\""), "{}", stderr(&wrong_user));

    let untracked = run(walletwatch(dir.path()).args(["untrack", WALLET, "--user", "alice"]));
    assert!(untracked.status.success(), "{untracked:?}");
    assert_eq!(stdout(&untracked), format!("🔴 Stopped tracking wallet: {WALLET}.\n"));
    let listed = run(walletwatch(dir.path()).arg("list"));
    assert!(stdout(&listed).starts_with("No wallets tracked"), "{}", stdout(&listed));
}

#[test]
fn a_csv_file_is_tracked_whole_or_not_at_all_and_the_csv_export_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = "11111111111111111111111111111111";
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("address,label,chain\n{WALLET},whale\n{WALLET}x,oops\n# fine\n{other},,ethereum\n"))
        .expect("write");
    let output = run(walletwatch(dir.path()).arg("track").arg("--file").arg(&bad));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let errors = stderr(&output);
    assert!(errors.contains("2 invalid row(s); nothing was imported"), "{errors}");
    assert!(
        errors.contains("line 3:") && errors.contains("line 5:") && errors.contains("ethereum uses the EVM form"),
        "{errors}"
    );
    let listed = run(walletwatch(dir.path()).args(["list", "--format", "json"]));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&listed.stdout).expect("json"), serde_json::json!([]));

    let good = dir.path().join("good.csv");
    std::fs::write(&good, format!("{WALLET},whale\n{other}\n")).expect("write");
    let output = run(walletwatch(dir.path()).args(["track", "--user", "alice", "--min-sol", "1", "--file"]).arg(&good));
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).starts_with("imported 2 rows for \"alice\": 2 wallets added"), "{}", stdout(&output));
    let exported = run(walletwatch(dir.path()).args(["list", "--format", "csv"]));
    let text = stdout(&exported);
    assert!(text.starts_with("address,label,chain,priority,status,transport,reason,users,transactions"), "{text}");
    assert!(text.contains(&format!("{WALLET},whale,solana,0,Pending,,,alice,0")), "{text}");
    // The export reads back as an import, from standard input.
    let export = dir.path().join("export.csv");
    std::fs::write(&export, &text).expect("write");
    let output = run(walletwatch(dir.path())
        .args(["track", "--user", "bob", "--file", "-"])
        .stdin(std::fs::File::open(&export).expect("open")));
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("2 already tracked by others now tracked by \"bob\" too"), "{}", stdout(&output));
    let store = RedbStore::open_in_dir(dir.path()).expect("store");
    let alice = store.user_subscriptions("alice").expect("alice");
    assert!(alice.iter().all(|subscription| subscription.filter.min_native == Some(1.0)), "{alice:?}");
    assert_eq!(store.user_subscriptions("bob").expect("bob").len(), 2);
    let conflicting = run(walletwatch(dir.path()).args(["track", WALLET, "--file"]).arg(&good));
    assert_eq!(conflicting.status.code(), Some(2), "an address and a file at once are refused: {conflicting:?}");
}

#[test]
fn events_print_as_json_lines_and_follow_new_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = WalletAddress::parse(WALLET).expect("valid");
    let store = RedbStore::open_in_dir(dir.path()).expect("open");
    let request = ww_core::store::TrackRequest::new(ww_core::Chain::SOLANA, wallet.clone(), "local");
    store.track_wallet(&request, ww_core::time::UnixMillis(0)).expect("track");
    store.record_events(&[sample_event(&wallet, 1), sample_event(&wallet, 2)], &[]).expect("record");

    let output = run(walletwatch(dir.path()).args(["events", "--json", "--limit", "1"]));
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> =
        stdout(&output).lines().map(|line| serde_json::from_str(line).expect("json line")).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["wallet"], WALLET);
    assert_eq!(lines[0]["sol_delta"], 2_500_000_000i64);

    let text = run(walletwatch(dir.path()).args(["events", "--wallet", WALLET]));
    assert!(stdout(&text).contains("+2.500000000 SOL"), "{}", stdout(&text));

    // A follower in another process sees an event recorded after it started,
    // while this process keeps the store open: the file is shared.
    let mut follower = walletwatch(dir.path())
        .args(["events", "--json", "--follow", "--limit", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn follower");
    let mut lines = BufReader::new(follower.stdout.take().expect("stdout")).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(first["seq"], 2);
    store.record_events(&[sample_event(&wallet, 3)], &[]).expect("record");
    let next: serde_json::Value = serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(next["seq"], 3);
    follower.kill().expect("kill follower");
    let _ = follower.wait();
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run(walletwatch(dir.path())
        .arg("check-config")
        .env("SOLANA_RPC_URL", "https://rpc.example/?api-key=s3cr3t")
        .env("REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0"));
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(!text.contains("s3cr3t") && !text.contains("hunter2"), "{text}");
    assert!(text.contains("commitment = \"confirmed\""), "{text}");
    assert!(text.contains("api-key=**REDACTED**"), "{text}");
}

#[test]
fn the_data_dir_flag_selects_the_embedded_store_over_a_store_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run(walletwatch(dir.path()).arg("check-config").env("WALLETWATCH_STORE_URL", "redb:/somewhere/else"));
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains(&format!("dir = \"{}\"", dir.path().display())), "{text}");
    assert!(!text.contains("/somewhere/else"), "{text}");
}

#[test]
fn an_invalid_config_lists_every_error_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[solana]\ncommitment = \"max\"\nrpc_url = \"ftp://x\"\n[server]\nlisten = \"nowhere\"\n")
        .expect("write");
    let output = run(walletwatch(dir.path()).arg("--config").arg(&config).arg("check-config"));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let message = stderr(&output);
    for needle in ["solana.commitment", "solana.rpc_url", "server.listen"] {
        assert!(message.contains(needle), "missing {needle}: {message}");
    }
}

#[test]
fn the_example_config_is_accepted_by_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
    let output = run(walletwatch(dir.path()).arg("--config").arg(&example).arg("check-config"));
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_damaged_store_is_refused_with_exit_1_and_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(ww_store::STORE_FILE_NAME), b"definitely not a redb file, padded out".repeat(100))
        .expect("write");
    let output = run(walletwatch(dir.path()).arg("list"));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("left untouched"), "{}", stderr(&output));
}

#[test]
fn run_shuts_down_gracefully_on_sigterm_even_when_the_node_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 9 on loopback: nothing listens there, so the endpoint is unreachable.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let api_port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let api_listen = format!("127.0.0.1:{api_port}");
    let token = run(walletwatch(dir.path()).args(["token", "create", "--user", "ops", "--admin"]));
    assert!(token.status.success(), "{token:?}");
    let token = stdout(&token).trim().to_string();
    assert!(token.starts_with("ww_"), "{token}");
    assert!(
        !String::from_utf8_lossy(&std::fs::read(dir.path().join(ww_store::STORE_FILE_NAME)).expect("store"))
            .contains(&token),
        "the token itself is stored"
    );
    let mut daemon = walletwatch(dir.path())
        .args([
            "run",
            "--rpc-url",
            "http://127.0.0.1:9",
            "--ws-url",
            "ws://127.0.0.1:9",
            "--metrics-listen",
            &metrics_listen,
            "--listen",
            &api_listen,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let mut log = BufReader::new(daemon.stderr.take().expect("stderr")).lines();
    let daemon = KillOnDrop(daemon);
    let started = log.by_ref().map_while(Result::ok).any(|line| line.contains("walletwatch started"));
    assert!(started, "the daemon never logged its start");
    // Metrics are served on their own listener although Solana is unreachable,
    // and already count the failing RPC calls (labels: method, error kind).
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let text = http_get(&metrics_listen, "/metrics");
        if text.contains("ww_rpc_errors_total") {
            break text;
        }
        assert!(Instant::now() < deadline, "no ww_rpc_errors_total in:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metrics.contains("error_kind=\"transport\""), "{metrics}");
    assert!(!metrics.contains("127.0.0.1:9"), "a metric label carries the endpoint URL:\n{metrics}");
    // The API is up too: alive, not ready (and says why), and guarded by tokens.
    assert!(http_get(&api_listen, "/health").contains("\"status\":\"ok\""));
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready = http_get(&api_listen, "/ready");
        if ready.contains("unreachable") || Instant::now() > deadline {
            break ready;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("unreachable"), "{ready}");
    assert!(http_get(&api_listen, "/api/wallets").starts_with("HTTP/1.1 401"));
    let listed = http_get_with(&api_listen, "/api/wallets", &[("Authorization", &format!("Bearer {token}"))]);
    assert!(listed.starts_with("HTTP/1.1 200") && listed.ends_with("[]"), "{listed}");
    let mut daemon = daemon;
    let status = Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = daemon.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = log.map_while(Result::ok).collect();
    assert!(rest.iter().any(|line| line.contains("shutdown complete")), "{rest:?}");
}

fn http_get(address: &str, path: &str) -> String {
    http_get_with(address, path, &[])
}

fn http_get_with(address: &str, path: &str, headers: &[(&str, &str)]) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else { return String::new() };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// Kills a child process if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
