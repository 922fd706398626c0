//! Alert rendering, in one place for every sink.
//!
//! An [`Alert`] is built once per delivery from the stored event, the
//! user's label, known prices and the explorer templates, then rendered as
//! plain text (the headline), Telegram HTML or a Discord embed. Every
//! rendering stays within its destination's documented limits.
//!
//! Headline, as in `🚨 Wallet Alert: Wallet 5F...vFpX transferred 50 SOL ($2500).`:
//! - outgoing: `transferred <amount> <symbol> (<usd>) to <counterparty>`;
//! - incoming: `received <amount> <symbol> (<usd>) from <counterparty>`;
//! - several changes: the largest (by USD when known) first, then `and N more changes`;
//! - failed: `❌ Failed transaction` headline with the fee;
//! - no balance change: `had activity`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use ww_core::alert::{Movement, movements};
use ww_core::event::TxOutcome;
use ww_core::{StoredEvent, WalletAddress};

/// Longest Telegram message text, in characters (the Bot API's limit).
pub const TELEGRAM_MAX_MESSAGE_CHARS: usize = 4096;

/// Symbols of well-known mints; other mints show as a short address.
const KNOWN_MINTS: [(&str, &str); 5] = [
    ("So11111111111111111111111111111111111111112", "SOL"),
    ("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "USDC"),
    ("Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", "USDT"),
    ("DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", "BONK"),
    ("JUPyiwrYJFskUPiHa7hKeqbbqeXaP6zhctS8ACvBsW6e", "JUP"),
];

/// Explorer link templates (empty: no link).
#[derive(Debug, Clone, Default)]
pub struct Explorer {
    /// Transaction URL with `{signature}`.
    pub tx_url: String,
    /// Account URL with `{address}`.
    pub account_url: String,
    /// The chain's native coin symbol in alerts (`None`: the chain's default).
    pub native_symbol: Option<String>,
}

impl Explorer {
    /// Returns the transaction link (`{signature}` or `{hash}` in the template).
    pub fn tx(&self, signature: &str) -> String {
        self.tx_url.replace("{signature}", signature).replace("{hash}", signature)
    }

    /// Returns the account link.
    pub fn account(&self, address: &str) -> String {
        self.account_url.replace("{address}", address)
    }

    /// Returns the symbol of `chain`'s native coin: the configured one,
    /// else the chain's default.
    pub fn native_symbol(&self, chain: ww_core::Chain) -> &str {
        self.native_symbol.as_deref().unwrap_or(chain.native_symbol())
    }
}

/// One balance change, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Unsigned amount in whole units, trailing zeros trimmed (`50`, `0.5`).
    pub amount: String,
    /// `SOL`, a known symbol, or a short mint.
    pub symbol: String,
    /// Into the wallet.
    pub incoming: bool,
    /// USD value of the amount, when the price is known.
    pub usd: Option<f64>,
}

impl Change {
    fn text(&self) -> String {
        match self.usd {
            Some(usd) => format!("{} {} ({})", self.amount, self.symbol, format_usd(usd)),
            None => format!("{} {}", self.amount, self.symbol),
        }
    }
}

/// Everything an alert says.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The event's sequence number.
    pub seq: u64,
    /// The wallet.
    pub wallet: WalletAddress,
    /// The user's label for it.
    pub label: Option<String>,
    /// Balance changes, largest first.
    pub changes: Vec<Change>,
    /// The other party.
    pub counterparty: Option<WalletAddress>,
    /// The fee the wallet paid with its coin's symbol (`0.000005 SOL`);
    /// `None` when another account paid.
    pub fee: Option<String>,
    /// The node's error for a failed transaction.
    pub failed: Option<String>,
    /// A chain reorganisation dropped the transaction after its alert went
    /// out: this is the retraction.
    pub retracted: bool,
    /// The signature.
    pub signature: String,
    /// The slot.
    pub slot: u64,
    /// Block time (Unix seconds).
    pub block_time: Option<i64>,
    /// Transaction link.
    pub tx_url: String,
    /// Wallet link.
    pub wallet_url: String,
}

impl Alert {
    /// Builds the alert for `stored`; `prices` maps mints (wrapped SOL for SOL)
    /// to the USD price of one whole unit.
    pub fn new(stored: &StoredEvent, label: Option<&str>, prices: &HashMap<String, f64>, explorer: &Explorer) -> Self {
        let event = &stored.event;
        let mut moves: Vec<(Movement, Option<f64>)> = movements(event)
            .into_iter()
            .map(|movement| {
                let usd = prices.get(movement.price_mint().as_ref()).map(|price| movement.ui_amount().abs() * price);
                (movement, usd)
            })
            .collect();
        // Largest first: by USD when every change has a price, else SOL first in order.
        if moves.iter().all(|(_, usd)| usd.is_some()) {
            moves.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0)));
        }
        let changes = moves
            .into_iter()
            .map(|(movement, usd)| Change {
                amount: format_units(movement.amount.unsigned_abs(), movement.decimals),
                symbol: symbol(&movement, explorer),
                incoming: movement.is_incoming(),
                usd,
            })
            .collect();
        let fee = (event.fee_payer == event.wallet).then(|| {
            format!(
                "{} {}",
                format_units(event.fee, event.chain.native_decimals()),
                explorer.native_symbol(event.chain)
            )
        });
        let failed = match &event.outcome {
            TxOutcome::Success => None,
            TxOutcome::Failed { error } => Some(error.clone()),
        };
        Alert {
            seq: stored.seq.0,
            wallet: event.wallet.clone(),
            label: label.map(str::to_string),
            changes,
            counterparty: event.counterparty.clone(),
            fee,
            failed,
            retracted: stored.is_retracted(),
            signature: event.signature.to_string(),
            slot: event.slot.0,
            block_time: event.block_time,
            tx_url: explorer.tx(event.signature.as_str()),
            wallet_url: explorer.account(event.wallet.as_str()),
        }
    }

    fn wallet_name(&self) -> String {
        match &self.label {
            Some(label) => format!("Wallet {} ({label})", self.wallet.short()),
            None => format!("Wallet {}", self.wallet.short()),
        }
    }

    /// What happened, after the wallet's name (`transferred 50 SOL ($2500) to 3K...zVpQ`).
    fn action(&self) -> String {
        if let Some(fee) = self.failed.as_ref().and(self.fee.as_ref()) {
            return format!("sent a transaction that failed (fee {fee})");
        }
        if self.failed.is_some() {
            return "was part of a transaction that failed".to_string();
        }
        let Some(main) = self.changes.first() else { return "had activity".to_string() };
        let mut text =
            if main.incoming { format!("received {}", main.text()) } else { format!("transferred {}", main.text()) };
        if let Some(counterparty) = &self.counterparty {
            let _ = write!(text, " {} {}", if main.incoming { "from" } else { "to" }, counterparty.short());
        }
        match self.changes.len() {
            1 => {}
            2 => text.push_str(" and 1 more change"),
            more => {
                let _ = write!(text, " and {} more changes", more - 1);
            }
        }
        text
    }

    /// The alert's kind: its mark and title.
    fn marker(&self) -> (&'static str, &'static str) {
        if self.retracted {
            ("⚠️", "Retracted by a chain reorganisation")
        } else if self.failed.is_some() {
            ("❌", "Failed transaction")
        } else {
            ("🚨", "Wallet Alert")
        }
    }

    /// What a retraction says before the retracted alert's words.
    const RETRACTED_PREFIX: &'static str = "this transaction is no longer on the chain; the alert said";

    /// The one-line headline: `🚨 Wallet Alert: Wallet 5F...vFpX transferred 50 SOL ($2500).`
    pub fn headline(&self) -> String {
        let (mark, title) = self.marker();
        if self.retracted {
            return format!("{mark} {title}: {}: {} {}.", Self::RETRACTED_PREFIX, self.wallet_name(), self.action());
        }
        format!("{mark} {title}: {} {}.", self.wallet_name(), self.action())
    }

    /// `+50 SOL ($2500)` lines, one per change.
    pub fn change_lines(&self) -> Vec<String> {
        self.changes
            .iter()
            .map(|change| format!("{}{}", if change.incoming { "+" } else { "−" }, change.text()))
            .collect()
    }

    /// `Fee 0.000005 SOL · Slot 123 · 2026-11-23 21:00:00 UTC`.
    pub fn details_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(fee) = &self.fee {
            parts.push(format!("Fee {fee}"));
        }
        parts.push(format!("Slot {}", self.slot));
        if let Some(time) = self.time_text() {
            parts.push(time);
        }
        parts.join(" · ")
    }

    fn time_text(&self) -> Option<String> {
        let seconds = u64::try_from(self.block_time?).ok()?;
        let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string();
        Some(text.replace('T', " ").replace('Z', " UTC"))
    }

    /// Plain text (webhook `text`, logs): headline, changes, details, link.
    pub fn plain_text(&self) -> String {
        let mut text = self.headline();
        for line in self.change_lines() {
            let _ = write!(text, "\n• {line}");
        }
        let _ = write!(text, "\n{}", self.details_line());
        if !self.tx_url.is_empty() {
            let _ = write!(text, "\n{}", self.tx_url);
        }
        text
    }

    /// Telegram HTML (`parse_mode=HTML`), at most 4096 characters.
    pub fn telegram_html(&self) -> String {
        let (mark, title) = self.marker();
        let marker = if self.retracted {
            format!("{mark} <b>{title}</b>: {}", Self::RETRACTED_PREFIX)
        } else {
            format!("{mark} <b>{title}</b>")
        };
        let label = self.label.as_ref().map(|label| format!(" ({})", escape_html(label))).unwrap_or_default();
        let wallet = if self.wallet_url.is_empty() {
            format!("Wallet {}{label}", self.wallet.short())
        } else {
            format!("Wallet <a href=\"{}\">{}</a>{label}", escape_html(&self.wallet_url), self.wallet.short())
        };
        let mut text = format!("{marker}: {wallet} {}.", escape_html(&self.action()));
        for line in self.change_lines().iter().take(20) {
            let _ = write!(text, "\n• {}", escape_html(line));
        }
        let _ = write!(text, "\n{}", escape_html(&self.details_line()));
        if !self.tx_url.is_empty() {
            let _ = write!(text, "\n<a href=\"{}\">View transaction</a>", escape_html(&self.tx_url));
        }
        if let Some(error) = &self.failed {
            let _ = write!(text, "\nError: <code>{}</code>", escape_html(&truncate_chars(error, 300)));
        }
        if text.chars().count() > TELEGRAM_MAX_MESSAGE_CHARS {
            // Only a pathological label or error gets here; fall back to the headline.
            return escape_html(&truncate_chars(&self.headline(), TELEGRAM_MAX_MESSAGE_CHARS));
        }
        text
    }

    /// The Discord embed, within Discord's embed limits.
    pub fn discord_embed(&self) -> Value {
        let color = if self.retracted {
            0x00f3_9c12
        } else if self.failed.is_some() {
            0x0095_a5a6
        } else if self.changes.first().is_some_and(|change| change.incoming) {
            0x002e_cc71
        } else {
            0x00e7_4c3c
        };
        let mut fields = Vec::new();
        let changes = self.change_lines();
        if !changes.is_empty() {
            fields
                .push(json!({"name": "Changes", "value": truncate_chars(&changes.join("\n"), 1024), "inline": false}));
        }
        if let Some(counterparty) = &self.counterparty {
            fields.push(json!({"name": "Counterparty", "value": counterparty.as_str(), "inline": false}));
        }
        if let Some(fee) = &self.fee {
            fields.push(json!({"name": "Fee", "value": fee.clone(), "inline": true}));
        }
        fields.push(json!({"name": "Slot", "value": self.slot.to_string(), "inline": true}));
        if let Some(error) = &self.failed {
            fields.push(json!({"name": "Error", "value": truncate_chars(error, 1024), "inline": false}));
        }
        let (mark, title) = self.marker();
        let description = if self.retracted {
            format!("{}: {} {}.", Self::RETRACTED_PREFIX, self.wallet_name(), self.action())
        } else {
            format!("{} {}.", self.wallet_name(), self.action())
        };
        let mut embed = json!({
            "title": format!("{mark} {title}"),
            "description": truncate_chars(&description, 4096),
            "color": color,
            "fields": fields,
            "footer": {"text": truncate_chars(&format!("walletwatch · {}", self.wallet.as_str()), 2048)},
        });
        if !self.tx_url.is_empty() {
            embed["url"] = json!(self.tx_url);
        }
        if let Some(seconds) = self.block_time.and_then(|seconds| u64::try_from(seconds).ok()) {
            embed["timestamp"] =
                json!(humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string());
        }
        embed
    }
}

/// Formats base units with `decimals`, trailing zeros trimmed (`50`, `0.5`).
pub fn format_units(amount: u128, decimals: u8) -> String {
    if decimals == 0 {
        return amount.to_string();
    }
    let scale = 10u128.pow(u32::from(decimals));
    let whole = amount / scale;
    let fraction = format!("{:0width$}", amount % scale, width = usize::from(decimals));
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() { whole.to_string() } else { format!("{whole}.{fraction}") }
}

/// `$2500` from 100 up, `$12.34` below, `<$0.01` for dust.
pub fn format_usd(usd: f64) -> String {
    if usd >= 100.0 {
        format!("${usd:.0}")
    } else if usd >= 0.01 {
        format!("${usd:.2}")
    } else {
        "<$0.01".to_string()
    }
}

fn symbol(movement: &Movement, explorer: &Explorer) -> String {
    let Some(mint) = &movement.mint else { return explorer.native_symbol(movement.chain).to_string() };
    if let Some(symbol) = &movement.symbol {
        return symbol.clone();
    }
    KNOWN_MINTS
        .iter()
        .find(|(address, _)| *address == mint.as_str())
        .map_or_else(|| mint.short(), |(_, symbol)| (*symbol).to_string())
}

/// Escapes `<`, `>`, `&` and `"` for Telegram HTML.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use ww_core::event::{ActivityEvent, Origin, TokenDelta};
    use ww_core::ids::{Chain, EventSeq, Signature, Slot};
    use ww_core::time::UnixMillis;

    use super::*;

    fn address(seed: u8) -> WalletAddress {
        WalletAddress::parse(&bs58_32(seed)).expect("valid")
    }

    fn bs58_32(seed: u8) -> String {
        // A valid 32-byte address without a bs58 dependency: known constants.
        match seed {
            0 => "5FHwkrdxntdK24hgQU8qgBjn35Y1zwhz1GZwCkP2UJnM".into(),
            1 => "HFaKRN3TJrDA6kz55qnWR9KnDwX6SaUywivvuFm4UKKq".into(),
            _ => "11111111111111111111111111111111".into(),
        }
    }

    fn stored(sol_delta: i64, tokens: Vec<TokenDelta>) -> StoredEvent {
        let wallet = address(0);
        StoredEvent::new(
            EventSeq(9),
            ActivityEvent {
                chain: Chain::SOLANA,
                wallet: wallet.clone(),
                signature: Signature::parse(
                    "1XTRN2RJN5MfCYf2UTVo8dcmei94CvVB2BBWvvograKBRzTW7RaDH79KZ4NSHQNUNLf3DwSbhdsgmDYptsM2d21",
                )
                .expect("valid"),
                slot: Slot(1234),
                block_time: Some(1_700_000_000),
                native_delta: i128::from(sol_delta),
                token_deltas: tokens,
                fee: 5000,
                fee_payer: wallet,
                outcome: TxOutcome::Success,
                programs: Vec::new(),
                origin: Origin::Live,
                received_at: UnixMillis(0),
                resolved_at: None,
                emitted_at: UnixMillis(0),
                counterparty: Some(address(1)),
            },
        )
    }

    fn explorer() -> Explorer {
        Explorer {
            tx_url: "https://x/tx/{signature}".into(),
            account_url: "https://x/a/{address}".into(),
            native_symbol: None,
        }
    }

    #[test]
    fn the_seed_headline() {
        let prices = HashMap::from([(ww_core::alert::WRAPPED_SOL_MINT.to_string(), 50.0)]);
        let alert = Alert::new(&stored(-50_000_005_000, vec![]), None, &prices, &explorer());
        assert_eq!(alert.headline(), "🚨 Wallet Alert: Wallet 5FHw...UJnM transferred 50 SOL ($2500) to HFaK...UKKq.");
        let incoming = Alert::new(&stored(499_995_000, vec![]), Some("whale"), &HashMap::new(), &explorer());
        assert_eq!(
            incoming.headline(),
            format!("🚨 Wallet Alert: Wallet 5FHw...UJnM (whale) received 0.5 SOL from {}.", address(1).short())
        );
    }

    #[test]
    fn an_evm_token_shows_its_decoded_symbol_and_a_chain_without_an_explorer_links_nowhere() {
        let token = TokenDelta {
            mint: WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").expect("valid"),
            token_account: None,
            token_program: WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").expect("valid"),
            decimals: 6,
            delta: 2_500_000,
            symbol: Some("TT".into()),
            token_id: None,
        };
        // The wallet sent the token transfer: its native change is the fee alone.
        let mut event = stored(-5000, vec![token]);
        event.event.chain = ww_core::Chain::EVM_LOCAL;
        let alert = Alert::new(&event, None, &HashMap::new(), &Explorer::default());
        assert_eq!(alert.change_lines(), vec!["+2.5 TT".to_string()]);
        assert!(!alert.plain_text().ends_with('\n'), "{}", alert.plain_text());
        assert!(!alert.telegram_html().contains("href"), "{}", alert.telegram_html());
        assert!(alert.discord_embed().get("url").is_none(), "{}", alert.discord_embed());
        let linked = Alert::new(&event, None, &HashMap::new(), &explorer());
        assert_eq!(linked.discord_embed()["url"], format!("https://x/tx/{}", event.event.signature));
    }

    #[test]
    fn tokens_several_changes_and_html_escaping() {
        let usdc = TokenDelta {
            mint: WalletAddress::parse("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v").expect("valid"),
            token_account: None,
            token_program: address(2),
            decimals: 6,
            delta: 1_500_000,
            symbol: None,
            token_id: None,
        };
        let alert = Alert::new(&stored(-1_000_005_000, vec![usdc]), Some("<b>me</b>"), &HashMap::new(), &explorer());
        assert!(alert.headline().contains("transferred 1 SOL to"), "{}", alert.headline());
        assert!(alert.headline().ends_with("and 1 more change."));
        assert_eq!(alert.change_lines(), vec!["−1 SOL".to_string(), "+1.5 USDC".to_string()]);
        let html = alert.telegram_html();
        assert!(html.contains("(&lt;b&gt;me&lt;/b&gt;)"), "{html}");
        assert!(
            html.contains(&format!(
                "<a href=\"https://x/tx/{}",
                "1XTRN2RJN5MfCYf2UTVo8dcmei94CvVB2BBWvvograKBRzTW7RaDH79KZ4NSHQNUNLf3DwSbhdsgmDYptsM2d21"
            )),
            "{html}"
        );
        assert!(alert.details_line().starts_with("Fee 0.000005 SOL · Slot 1234 · 2023-11-14 22:13:20 UTC"));
    }

    #[test]
    fn failed_transactions_say_so() {
        let mut event = stored(-5000, vec![]);
        event.event.outcome = TxOutcome::Failed { error: "{\"InstructionError\":[0,\"Custom\"]}".into() };
        let alert = Alert::new(&event, None, &HashMap::new(), &explorer());
        assert_eq!(
            alert.headline(),
            "❌ Failed transaction: Wallet 5FHw...UJnM sent a transaction that failed (fee 0.000005 SOL)."
        );
        let embed = alert.discord_embed();
        assert_eq!(embed["title"], "❌ Failed transaction");
    }

    #[test]
    fn embeds_stay_within_discord_limits() {
        let long_label = "x".repeat(64);
        let many: Vec<TokenDelta> = (0..200)
            .map(|index| TokenDelta {
                mint: address(2),
                token_account: None,
                token_program: address(2),
                decimals: 0,
                delta: 1_000_000_000 + index,
                symbol: None,
                token_id: None,
            })
            .collect();
        let alert = Alert::new(&stored(1, many), Some(&long_label), &HashMap::new(), &explorer());
        let embed = alert.discord_embed();
        crate::discord::check_embed(&embed).expect("within limits");
    }

    #[test]
    fn amounts_and_usd_format() {
        assert_eq!(format_units(50_000_000_000, 9), "50");
        assert_eq!(format_units(1, 9), "0.000000001");
        assert_eq!(format_units(7, 0), "7");
        assert_eq!(format_usd(2500.4), "$2500");
        assert_eq!(format_usd(12.345), "$12.35");
        assert_eq!(format_usd(0.001), "<$0.01");
    }

    #[test]
    fn a_retraction_says_the_transaction_left_the_chain_and_what_the_alert_said() {
        let mut retracted = stored(499_995_000, vec![]);
        retracted.retracted_at = Some(UnixMillis(5));
        let alert = Alert::new(&retracted, None, &HashMap::new(), &explorer());
        assert_eq!(
            alert.headline(),
            format!(
                "⚠️ Retracted by a chain reorganisation: this transaction is no longer on the chain; the alert said: \
                 Wallet 5FHw...UJnM received 0.5 SOL from {}.",
                address(1).short()
            )
        );
        assert!(alert.telegram_html().starts_with("⚠️ <b>Retracted by a chain reorganisation</b>: this transaction"));
        let embed = alert.discord_embed();
        assert_eq!(embed["title"], "⚠️ Retracted by a chain reorganisation");
        crate::discord::check_embed(&embed).expect("within limits");
        let standing = Alert::new(&stored(499_995_000, vec![]), None, &HashMap::new(), &explorer());
        assert!(standing.headline().starts_with("🚨 Wallet Alert: Wallet 5FHw...UJnM received"));
    }
}
