//! Bulk import and export of tracked wallets (`walletwatch track --file`,
//! `walletwatch list --format csv`, `POST /api/wallets/bulk`).
//!
//! The import format is CSV with the columns `address`, `label`, `chain` and
//! `priority` (all but the first optional; a priority is 0 to 255, higher
//! holds socket subscriptions first), with or without a header row naming them; lines
//! starting with `#` and blank lines are skipped. The export's other columns
//! are ignored on import, so an export reads back as an import. Every row is checked
//! before anything is stored: one bad row refuses the whole file with every
//! bad row listed by line, and a good file is stored in one transaction.

use std::collections::BTreeMap;

use ww_core::alert::AlertFilter;
use ww_core::store::{Store, StoreError, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::wallet::{TrackOutcome, WalletRecord};
use ww_core::{Chain, WalletAddress};

use crate::error::AppError;
use crate::wallets::{validate_label, validate_user};

/// Rows one import may hold at most (a bigger list is split into files).
pub const MAX_IMPORT_ROWS: usize = 200_000;
/// Invalid rows listed at most; reading stops there (a wrong file would
/// otherwise answer with hundreds of thousands of errors).
pub const MAX_LISTED_ERRORS: usize = 1_000;

/// One wallet to track, read from line `line` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// The line it was read from (1-based).
    pub line: u64,
    /// The wallet.
    pub address: WalletAddress,
    /// Its label, if the row gave one.
    pub label: Option<String>,
    /// Its chain (`solana` when the row gave none).
    pub chain: Chain,
    /// Its streaming priority, if the row gave one.
    pub priority: Option<u8>,
}

/// A row that cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// The line (1-based).
    pub line: u64,
    /// What is wrong with it.
    pub error: String,
}

/// Why an import was refused; nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Rows are invalid (each listed with its line; reading stops after
    /// [`MAX_LISTED_ERRORS`]).
    #[error("{}{} invalid row(s); nothing was imported:\n{}", if .0.len() >= MAX_LISTED_ERRORS { "at least " } else { "" }, .0.len(), render_row_errors(.0))]
    InvalidRows(Vec<RowError>),
    /// The file is empty or too large, or the user is invalid.
    #[error("{0}")]
    Rejected(String),
    /// The store refused the import (nothing was applied).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ImportError> for AppError {
    fn from(error: ImportError) -> Self {
        match error {
            ImportError::Store(error) => AppError::Store(error),
            other => AppError::Rejected(other.to_string()),
        }
    }
}

fn render_row_errors(errors: &[RowError]) -> String {
    errors.iter().map(|error| format!("  line {}: {}", error.line, error.error)).collect::<Vec<_>>().join("\n")
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Rows read.
    pub rows: usize,
    /// Wallets tracked for the first time.
    pub added: usize,
    /// Wallets already tracked by others, now tracked by this user too.
    pub user_added: usize,
    /// Wallets this user already tracked (their label updated when the row had one).
    pub already_tracked: usize,
}

/// Column positions of a file.
struct Columns {
    address: usize,
    label: Option<usize>,
    chain: Option<usize>,
    priority: Option<usize>,
    /// Fields a row may have at most.
    width: usize,
}

/// Reads the rows of an import file, checking every one: the rows, or
/// every invalid row with its line.
pub fn parse_csv(text: &str) -> Result<Vec<ImportRow>, ImportError> {
    let mut columns = Columns { address: 0, label: Some(1), chain: Some(2), priority: Some(3), width: 4 };
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut is_first = true;
    // A byte-order mark (spreadsheets write one) is not part of the header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // One record per line (a label holds no line break), so every error
    // names the line it is on, comments and blank lines counted.
    for (index, text_line) in text.lines().enumerate() {
        if errors.len() >= MAX_LISTED_ERRORS {
            break;
        }
        let line = index as u64 + 1;
        let trimmed = text_line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let record = match read_record(trimmed) {
            Ok(record) => record,
            Err(error) => {
                errors.push(RowError { line, error });
                continue;
            }
        };
        // The first row is a header when it names the address column and
        // every field is a column name (a wallet labelled "address" is data).
        if std::mem::take(&mut is_first)
            && record.iter().any(|field| field.eq_ignore_ascii_case("address"))
            && record.iter().all(is_column_name)
        {
            match header_columns(&record) {
                Ok(found) => columns = found,
                Err(error) => errors.push(RowError { line, error }),
            }
            continue;
        }
        if rows.len() + errors.len() >= MAX_IMPORT_ROWS {
            return Err(ImportError::Rejected(format!(
                "the file holds more than {MAX_IMPORT_ROWS} rows; split it into several imports"
            )));
        }
        match parse_row(&record, &columns, line) {
            Ok(row) => rows.push(row),
            Err(error) => errors.push(RowError { line, error }),
        }
    }
    if !errors.is_empty() {
        return Err(ImportError::InvalidRows(errors));
    }
    if rows.is_empty() {
        return Err(ImportError::Rejected("the file holds no wallet rows".into()));
    }
    Ok(rows)
}

/// Reads one line as one CSV record (fields trimmed, quotes allowed).
fn read_record(line: &str) -> Result<csv::StringRecord, String> {
    if !line.contains('"') {
        // Without quotes a CSV line is its comma-separated fields: split it
        // directly (most files; the reader below costs more per line).
        return Ok(line.split(',').map(str::trim).collect());
    }
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record),
        Ok(false) => Err("no fields".into()),
        Err(error) => Err(format!("not CSV: {error}")),
    }
}

fn is_column_name(field: &str) -> bool {
    let field = field.to_ascii_lowercase();
    IMPORT_COLUMNS.contains(&field.as_str()) || EXPORT_ONLY_COLUMNS.contains(&field.as_str())
}

/// Columns an import reads.
const IMPORT_COLUMNS: [&str; 4] = ["address", "label", "chain", "priority"];

/// Columns of the export that an import reads past.
const EXPORT_ONLY_COLUMNS: [&str; 8] =
    ["status", "transport", "reason", "users", "transactions", "last_signature", "last_slot", "added_at"];

fn header_columns(record: &csv::StringRecord) -> Result<Columns, String> {
    let mut found = BTreeMap::new();
    for (index, name) in record.iter().enumerate() {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "address" | "label" | "chain" | "priority" => {
                if found.insert(name.clone(), index).is_some() {
                    return Err(format!("the header names {name:?} twice"));
                }
            }
            other if EXPORT_ONLY_COLUMNS.contains(&other) => {}
            other => {
                return Err(format!("unknown column {other:?}: the columns are address, label, chain and priority"));
            }
        }
    }
    Ok(Columns {
        address: found.get("address").copied().unwrap_or(0),
        label: found.get("label").copied(),
        chain: found.get("chain").copied(),
        priority: found.get("priority").copied(),
        width: record.len(),
    })
}

fn parse_row(record: &csv::StringRecord, columns: &Columns, line: u64) -> Result<ImportRow, String> {
    if record.len() > columns.width {
        return Err(format!(
            "{} fields where at most {} are named (address, label, chain, priority)",
            record.len(),
            columns.width
        ));
    }
    let field = |index: Option<usize>| index.and_then(|index| record.get(index)).filter(|text| !text.is_empty());
    let priority = match field(columns.priority) {
        None => None,
        Some(text) => Some(text.parse::<u8>().map_err(|_| format!("priority {text:?} is not a number from 0 to 255"))?),
    };
    check_row(line, field(Some(columns.address)), field(columns.label), field(columns.chain), priority)
}

/// Checks one row's fields.
fn check_row(
    line: u64,
    address: Option<&str>,
    label: Option<&str>,
    chain: Option<&str>,
    priority: Option<u8>,
) -> Result<ImportRow, String> {
    let chain = match chain.map(str::trim).filter(|text| !text.is_empty()) {
        None => Chain::SOLANA,
        Some(text) => text.parse::<Chain>().map_err(|error| error.to_string())?,
    };
    let address = address.map(str::trim).filter(|text| !text.is_empty()).ok_or("no address")?;
    let address = WalletAddress::parse_for(chain, address).map_err(|error| error.to_string())?;
    let label = validate_label(label).map_err(|error| error.to_string())?;
    Ok(ImportRow { line, address, label, chain, priority })
}

/// One wallet of a JSON bulk request (`POST /api/wallets/bulk`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkEntry {
    /// The address.
    pub address: String,
    /// Its label.
    #[serde(default)]
    pub label: Option<String>,
    /// Its chain (`solana` when absent).
    #[serde(default)]
    pub chain: Option<String>,
    /// Its streaming priority (absent: keep the current one).
    #[serde(default)]
    pub priority: Option<u8>,
}

/// Checks every entry of a JSON bulk request; entries are numbered from 1
/// (their `line`).
pub fn parse_entries(entries: &[BulkEntry]) -> Result<Vec<ImportRow>, ImportError> {
    if entries.is_empty() {
        return Err(ImportError::Rejected("the request holds no wallets".into()));
    }
    if entries.len() > MAX_IMPORT_ROWS {
        return Err(ImportError::Rejected(format!("more than {MAX_IMPORT_ROWS} wallets; split the request")));
    }
    let mut rows = Vec::with_capacity(entries.len());
    let mut errors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let line = index as u64 + 1;
        match check_row(line, Some(&entry.address), entry.label.as_deref(), entry.chain.as_deref(), entry.priority) {
            Ok(row) => rows.push(row),
            Err(error) => errors.push(RowError { line, error }),
        }
    }
    if errors.is_empty() { Ok(rows) } else { Err(ImportError::InvalidRows(errors)) }
}

/// Refuses the rows of chains this walletwatch does not watch (an EVM
/// chain without its `[evm.NAME]` section), every one listed by line.
/// Solana rows are always accepted.
pub fn check_chains(rows: &[ImportRow], watched: impl Fn(Chain) -> bool) -> Result<(), ImportError> {
    let errors: Vec<RowError> = rows
        .iter()
        .filter(|row| row.chain != Chain::SOLANA && !watched(row.chain))
        .map(|row| RowError {
            line: row.line,
            error: format!("chain {chain} is not watched here: add an [evm.{chain}] section", chain = row.chain),
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(ImportError::InvalidRows(errors)) }
}

/// Tracks every row for `user` in one transaction, each with `filter` when
/// given (else the user's current filter for a wallet they track, or the
/// default), each wallet's history starting at its chain's height in
/// `start_heights` when known (the chain's current slot or block).
pub fn track_rows(
    store: &dyn Store,
    rows: &[ImportRow],
    user: &str,
    filter: Option<AlertFilter>,
    start_heights: &std::collections::BTreeMap<Chain, u64>,
    now: UnixMillis,
) -> Result<ImportSummary, ImportError> {
    let user = validate_user(user).map_err(|error| ImportError::Rejected(error.to_string()))?;
    if let Some(filter) = &filter {
        filter.validate().map_err(ImportError::Rejected)?;
    }
    let requests: Vec<TrackRequest> = rows
        .iter()
        .map(|row| TrackRequest {
            label: row.label.clone(),
            filter: filter.clone(),
            start_slot: start_heights.get(&row.chain).copied(),
            priority: row.priority,
            ..TrackRequest::new(row.chain, row.address.clone(), user.clone())
        })
        .collect();
    let outcomes = store.track_wallets(&requests, now)?;
    let mut summary = ImportSummary { rows: rows.len(), ..ImportSummary::default() };
    for outcome in outcomes {
        match outcome {
            TrackOutcome::Added => summary.added += 1,
            TrackOutcome::UserAdded => summary.user_added += 1,
            TrackOutcome::AlreadyTracked => summary.already_tracked += 1,
        }
    }
    Ok(summary)
}

/// The CSV export of tracked wallets (`walletwatch list --format csv`):
/// a header, then one row per wallet (address, label, chain, priority,
/// status, transport, reason, users, transactions, last transaction, added
/// at); its first four columns are what [`parse_csv`] reads back.
pub fn to_csv(wallets: &[WalletRecord]) -> Result<String, AppError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record([
            "address",
            "label",
            "chain",
            "priority",
            "status",
            "transport",
            "reason",
            "users",
            "transactions",
            "last_signature",
            "last_slot",
            "added_at",
        ])
        .map_err(csv_failed)?;
    for wallet in wallets {
        let users: Vec<&str> = wallet.tracking_users.iter().map(String::as_str).collect();
        let (last_signature, last_slot) = match &wallet.last_transaction {
            Some(last) => (last.signature.to_string(), last.slot.0.to_string()),
            None => (String::new(), String::new()),
        };
        writer
            .write_record([
                wallet.address.to_string(),
                wallet.label.clone().unwrap_or_default(),
                wallet.chain.to_string(),
                wallet.priority.to_string(),
                wallet.subscription_status.to_string(),
                wallet.transport.map(|transport| transport.to_string()).unwrap_or_default(),
                // One line per wallet: a server's error text may hold line breaks.
                wallet.status_reason.as_deref().unwrap_or_default().replace(char::is_control, " "),
                users.join(" "),
                wallet.transaction_count.to_string(),
                last_signature,
                last_slot,
                wallet.added_at.0.to_string(),
            ])
            .map_err(csv_failed)?;
    }
    let bytes = writer.into_inner().map_err(csv_failed)?;
    String::from_utf8(bytes).map_err(csv_failed)
}

fn csv_failed(error: impl std::fmt::Display) -> AppError {
    AppError::Rejected(format!("writing CSV failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
    const B: &str = "11111111111111111111111111111111";

    #[test]
    fn rows_are_read_with_or_without_a_header() {
        let plain = parse_csv(&format!("{A},whale\n\n# a comment\n{B}\n")).expect("rows");
        assert_eq!(plain.len(), 2);
        assert_eq!((plain[0].line, plain[0].label.as_deref(), plain[0].chain), (1, Some("whale"), Chain::SOLANA));
        assert_eq!((plain[1].line, plain[1].label.as_deref()), (4, None));
        let headed = parse_csv(&format!("chain,Address,label\nsolana,{A}, treasury \n")).expect("rows");
        assert_eq!((headed[0].address.as_str(), headed[0].label.as_deref()), (A, Some("treasury")));
        assert_eq!(headed[0].line, 2);
    }

    #[test]
    fn a_byte_order_mark_and_a_wallet_labelled_address_are_read_as_data() {
        let rows = parse_csv(&format!("\u{feff}address,label\r\n{A},whale\r\n")).expect("rows");
        assert_eq!((rows.len(), rows[0].line), (1, 2));
        let rows = parse_csv(&format!("{A},address\n{B}\n")).expect("rows");
        assert_eq!(rows.len(), 2, "a first row naming a wallet is data, not a header");
        assert_eq!(rows[0].label.as_deref(), Some("address"));
    }

    #[test]
    fn a_file_of_garbage_lists_the_first_thousand_bad_rows() {
        let text = "nope\n".repeat(5_000);
        let ImportError::InvalidRows(errors) = parse_csv(&text).expect_err("bad rows") else {
            panic!("expected row errors");
        };
        assert_eq!(errors.len(), MAX_LISTED_ERRORS);
        assert!(ImportError::InvalidRows(errors).to_string().starts_with("at least 1000 invalid row(s)"));
    }

    #[test]
    fn every_bad_row_is_listed_with_its_line_and_nothing_is_returned() {
        let text = format!("address,label\n{A},ok\nnot-an-address,x\n{B},{}\n,empty\n", "y".repeat(65));
        let ImportError::InvalidRows(errors) = parse_csv(&text).expect_err("bad rows") else {
            panic!("expected row errors");
        };
        let lines: Vec<u64> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(errors[0].error.contains("base58") || errors[0].error.contains("character"), "{}", errors[0].error);
        assert!(errors[1].error.contains("label"), "{}", errors[1].error);
        let message = ImportError::InvalidRows(errors).to_string();
        assert!(message.contains("line 3:") && message.contains("nothing was imported"), "{message}");
    }

    #[test]
    fn a_priority_column_is_read_by_position_or_by_name() {
        let rows = parse_csv(&format!("{A},whale,solana,9\n{B}\n")).expect("rows");
        assert_eq!((rows[0].priority, rows[1].priority), (Some(9), None));
        let rows = parse_csv(&format!("priority,address\n200,{A}\n,{B}\n")).expect("rows");
        assert_eq!((rows[0].priority, rows[1].priority), (Some(200), None));
        let ImportError::InvalidRows(errors) = parse_csv(&format!("{A},,,256\n{B},,,high\n")).expect_err("bad") else {
            panic!("expected row errors");
        };
        assert_eq!(errors.iter().map(|error| error.line).collect::<Vec<_>>(), vec![1, 2]);
        assert!(errors[0].error.contains("0 to 255"), "{}", errors[0].error);
    }

    #[test]
    fn unknown_columns_chains_and_empty_files_are_refused() {
        assert!(matches!(parse_csv("address,owner\n"), Err(ImportError::InvalidRows(_))));
        // An EVM row needs its chain's form and a watched chain.
        let evm = format!("0x{}", "ab".repeat(20));
        let rows = parse_csv(&format!("{evm},,polygon\n{A}\n")).expect("rows");
        assert_eq!(rows[0].chain, Chain::POLYGON);
        let ImportError::InvalidRows(errors) = check_chains(&rows, |_| false).expect_err("polygon not watched") else {
            panic!("expected row errors");
        };
        assert_eq!(errors.len(), 1, "the Solana row is fine");
        assert!(errors[0].error.contains("[evm.polygon]"), "{}", errors[0].error);
        assert!(check_chains(&rows, |chain| chain == Chain::POLYGON).is_ok());
        assert!(matches!(parse_csv(&format!("{evm},,solana\n")), Err(ImportError::InvalidRows(_))));
        assert!(matches!(parse_csv(&format!("{A},,mars\n")), Err(ImportError::InvalidRows(_))));
        assert!(matches!(parse_csv("# nothing\n\n"), Err(ImportError::Rejected(_))));
    }

    #[test]
    fn the_export_reads_back_as_an_import() {
        let address = WalletAddress::parse(A).expect("valid");
        let record = WalletRecord {
            address: address.clone(),
            label: Some("whale, the big one".into()),
            chain: Chain::SOLANA,
            tracking_users: ["alice".to_string(), "bob".to_string()].into(),
            added_at: UnixMillis(5),
            start_slot: None,
            last_transaction: None,
            transaction_count: 3,
            subscription_status: ww_core::SubscriptionStatus::Failed,
            transport: Some(ww_core::Transport::Failed),
            status_reason: Some("the server refused logsSubscribe:\nrate limited".into()),
            priority: 3,
        };
        let text = to_csv(&[record]).expect("csv");
        assert!(text.starts_with("address,label,chain,priority,status,transport,reason,users"), "{text}");
        let rows = parse_csv(&text).expect("reads back");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].address.clone(), rows[0].label.as_deref()), (address, Some("whale, the big one")));
        assert_eq!(rows[0].priority, Some(3));
    }
}
