//! Reading recorded events and rendering them as text lines.

use std::time::{Duration, UNIX_EPOCH};

use ww_core::StoredEvent;
use ww_core::event::TxOutcome;

const LAMPORTS_PER_SOL: i64 = 1_000_000_000;

/// Formats signed lamports as SOL with all nine decimals (`+0.000001000`).
pub fn format_sol(lamports: i64) -> String {
    let sign = if lamports < 0 { "-" } else { "+" };
    let magnitude = lamports.unsigned_abs();
    let per_sol = LAMPORTS_PER_SOL.unsigned_abs();
    format!("{sign}{}.{:09}", magnitude / per_sol, magnitude % per_sol)
}

/// Formats a token delta in base units with the mint's decimals.
pub fn format_token_amount(delta: i128, decimals: u8) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    let magnitude = delta.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u128.pow(u32::from(decimals));
    format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = usize::from(decimals))
}

/// One human-readable line per event.
///
/// `native_symbol` is the symbol of the event's chain's coin (see
/// `Config::native_symbol`).
pub fn render_event_line(stored: &StoredEvent, native_symbol: &str) -> String {
    let event = &stored.event;
    let time = match event.block_time.and_then(|seconds| u64::try_from(seconds).ok()) {
        Some(seconds) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string(),
        None => "-".to_string(),
    };
    // Solana counts slots; other chains blocks, and their events name the chain.
    let position = if event.chain == ww_core::Chain::SOLANA {
        format!("slot {}", event.slot)
    } else {
        format!("{} block {}", event.chain, event.slot)
    };
    let mut line = format!(
        "#{} {position} {} {} {} {}",
        stored.seq,
        time,
        event.wallet.short(),
        format_token_amount(event.native_delta, event.chain.native_decimals()),
        native_symbol
    );
    for token in &event.token_deltas {
        let name = token.symbol.clone().unwrap_or_else(|| token.mint.short());
        match &token.token_id {
            Some(id) => line.push_str(&format!(" {} {name} #{id}", if token.delta < 0 { "-1" } else { "+1" })),
            None => line.push_str(&format!(" {} {name}", format_token_amount(token.delta, token.decimals))),
        }
    }
    line.push_str(&format!(" fee {} {}", event.fee, event.origin.as_str()));
    if let TxOutcome::Failed { error } = &event.outcome {
        line.push_str(&format!(" FAILED {error}"));
    }
    if stored.is_retracted() {
        line.push_str(" RETRACTED (chain reorganisation)");
    }
    line.push_str(&format!(" {}", event.signature));
    line
}

/// One human-readable line per balance observation.
/// `native_symbol` as for [`render_event_line`].
pub fn render_balance_line(record: &ww_core::balance::BalanceRecord, native_symbol: &str) -> String {
    let observed = u64::try_from(record.observed_at.0 / 1000)
        .map(|seconds| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string())
        .unwrap_or_else(|_| "-".to_string());
    let amount = match &record.asset {
        ww_core::balance::Asset::Sol => {
            format!("{} SOL", format_sol(i64::try_from(record.amount).unwrap_or(i64::MAX)).trim_start_matches('+'))
        }
        ww_core::balance::Asset::Native => format!(
            "{} {}",
            format_token_amount(i128::try_from(record.amount).unwrap_or(i128::MAX), record.chain.native_decimals())
                .trim_start_matches('+'),
            native_symbol
        ),
        ww_core::balance::Asset::Token { mint, .. } => format!("{} base units of {}", record.amount, mint.short()),
    };
    let account = if record.address == record.wallet {
        "wallet".to_string()
    } else {
        format!("token account {}", record.address.short())
    };
    let position = if record.chain == ww_core::Chain::SOLANA { "slot" } else { "block" };
    format!("{} {account}: {amount} ({position} {}, {observed})", record.wallet.short(), record.slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sol_amounts_keep_nine_decimals_and_sign() {
        assert_eq!(format_sol(1_000), "+0.000001000");
        assert_eq!(format_sol(-2_500_000_000), "-2.500000000");
        assert_eq!(format_sol(i64::MIN), "-9223372036.854775808");
    }

    #[test]
    fn token_amounts_use_the_mint_decimals() {
        assert_eq!(format_token_amount(1_500_000, 6), "+1.500000");
        assert_eq!(format_token_amount(-7, 0), "-7");
        assert_eq!(format_token_amount(-5, 2), "-0.05");
    }
}
