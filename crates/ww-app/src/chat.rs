//! Chat commands, shared by Discord and Telegram: `/track <address> [label]`,
//! `/untrack <address>`, `/list`, `/help`.
//!
//! A chat user is `discord:<user id>` or `telegram:<user id>`; `/track`
//! sends that wallet's alerts to the chat it ran in. Replies follow the
//! project's formats (`🟢 Tracking wallet: <address>.` and the `/list`
//! format with subscription status).

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ww_core::alert::DestinationId;
use ww_core::store::Store;
use ww_core::time::UnixMillis;

use crate::error::AppError;
use crate::wallets::{self, TrackOptions};

/// A parsed chat command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatCommand {
    /// Track a wallet here.
    Track {
        /// The address as typed.
        address: String,
        /// An optional label.
        label: Option<String>,
    },
    /// Stop tracking a wallet.
    Untrack {
        /// The address as typed.
        address: String,
    },
    /// List this user's wallets.
    List,
    /// Show the commands.
    Help,
}

/// Who ran a command, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatContext {
    /// The walletwatch user (`discord:123`, `telegram:456`).
    pub user: String,
    /// Where `/track` sends alerts (the channel or chat).
    pub destination: DestinationId,
}

/// A reply to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    /// The text (plain; Telegram replies escape it).
    pub text: String,
    /// False when the command failed (Discord shows those to the invoker only).
    pub ok: bool,
}

/// What chat users may do: how many wallets each may track, and how many
/// commands each chat may run per minute. The CLI and admin API tokens are
/// not limited.
#[derive(Clone)]
pub struct ChatLimits {
    max_wallets_per_user: usize,
    commands: Arc<DefaultKeyedRateLimiter<DestinationId>>,
}

impl std::fmt::Debug for ChatLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatLimits").field("max_wallets_per_user", &self.max_wallets_per_user).finish_non_exhaustive()
    }
}

impl ChatLimits {
    /// Limits of `[chat]`.
    pub fn new(max_wallets_per_user: NonZeroUsize, commands_per_minute: NonZeroU32) -> Self {
        Self {
            max_wallets_per_user: max_wallets_per_user.get(),
            commands: Arc::new(RateLimiter::keyed(Quota::per_minute(commands_per_minute))),
        }
    }

    /// From the configuration's `[chat]`.
    pub fn from_config(config: &ww_config::ChatConfig) -> Self {
        Self::new(config.max_wallets_per_user, config.commands_per_minute)
    }

    /// Takes one command from `chat`'s allowance; false when it is spent.
    fn allow(&self, chat: &DestinationId) -> bool {
        if self.commands.len() > MAX_RATE_LIMITED_CHATS {
            self.commands.retain_recent();
        }
        self.commands.check_key(chat).is_ok()
    }
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self::new(NonZeroUsize::new(100).expect("positive"), NonZeroU32::new(20).expect("positive"))
    }
}

/// Chats remembered by the command rate limiter before idle ones are forgotten.
const MAX_RATE_LIMITED_CHATS: usize = 10_000;

/// The `/help` text.
pub const HELP: &str = "walletwatch commands:\n\
/track <address> [label] — alerts for a wallet's activity in this chat\n\
/untrack <address> — stop those alerts\n\
/list — the wallets you track and their status\n\
/help — this message";

/// Parses a Telegram message (`/track@walletwatch_bot <address> whale`);
/// `None` when it is not a command.
pub fn parse_text_command(text: &str) -> Option<Result<ChatCommand, String>> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let mut parts = rest.split_whitespace();
    let head = parts.next()?;
    let name = head.split('@').next().unwrap_or(head).to_ascii_lowercase();
    let arguments: Vec<&str> = parts.collect();
    Some(match name.as_str() {
        "track" => match arguments.split_first() {
            Some((address, label)) => Ok(ChatCommand::Track {
                address: (*address).to_string(),
                label: (!label.is_empty()).then(|| label.join(" ")),
            }),
            None => Err("Usage: /track <address> [label]".to_string()),
        },
        "untrack" => match arguments.first() {
            Some(address) => Ok(ChatCommand::Untrack { address: (*address).to_string() }),
            None => Err("Usage: /untrack <address>".to_string()),
        },
        "list" => Ok(ChatCommand::List),
        "help" | "start" => Ok(ChatCommand::Help),
        other => Err(format!("Unknown command /{other}. Send /help for the commands.")),
    })
}

/// Runs a command (blocking store calls; run it off the async workers).
/// `start_slot` is the chain's current slot for a `/track` (see
/// [`wallets::current_slot`]).
pub fn execute(
    store: &dyn Store,
    limits: &ChatLimits,
    context: &ChatContext,
    command: &ChatCommand,
    start_slot: Option<u64>,
    now: UnixMillis,
) -> ChatReply {
    let result = match command {
        ChatCommand::Track { address, label } => {
            let options = TrackOptions {
                filter: None,
                destination: Some(context.destination.clone()),
                start_slot,
                chat_quota: Some(limits.max_wallets_per_user),
                priority: None,
                // Chat tracks Solana wallets: its start slot comes from the Solana source.
                chain: Some(ww_core::Chain::Solana),
            };
            wallets::track_with(store, address, label.as_deref(), &context.user, options, now)
                .map(|(address, _)| wallets::tracking_message(&address))
        }
        ChatCommand::Untrack { address } => {
            wallets::untrack(store, address, &context.user).map(|(address, _)| wallets::untracking_message(&address))
        }
        ChatCommand::List => wallets::user_wallets(store, &context.user).map(|list| wallets::render_user_list(&list)),
        ChatCommand::Help => Ok(HELP.to_string()),
    };
    match result {
        Ok(text) => ChatReply { text, ok: true },
        Err(error) if error.is_user_error() => {
            ChatReply { text: format!("⚠️ {}", user_message(&error)), ok: false }
        }
        Err(error) => {
            tracing::error!(error = %error, user = %context.user, "chat command failed");
            ChatReply { text: "⚠️ Something went wrong on our side; please try again.".to_string(), ok: false }
        }
    }
}

/// Runs a command on the blocking pool, within the chat's command
/// allowance; a `/track` first asks `source` (when given) for the chain's
/// current slot, where the wallet's history starts.
pub async fn execute_async(
    store: Arc<dyn Store>,
    source: Option<&dyn ww_core::source::Source>,
    limits: &ChatLimits,
    context: ChatContext,
    command: ChatCommand,
) -> ChatReply {
    if !limits.allow(&context.destination) {
        metrics::counter!(crate::metric_names::CHAT_COMMANDS_LIMITED_TOTAL).increment(1);
        tracing::warn!(chat = %context.destination, user = %context.user, "chat command refused: over the chat's rate");
        return ChatReply {
            text: "⚠️ Too many commands in this chat; try again in a minute.".to_string(), ok: false
        };
    }
    let limits = limits.clone();
    let start_slot = match &command {
        ChatCommand::Track { .. } => wallets::current_slot_or_log(source).await,
        _ => None,
    };
    let now = ww_core::time::now();
    match tokio::task::spawn_blocking(move || execute(store.as_ref(), &limits, &context, &command, start_slot, now))
        .await
    {
        Ok(reply) => reply,
        Err(error) => {
            tracing::error!(error = %error, "chat command task failed");
            ChatReply { text: "⚠️ Something went wrong on our side; please try again.".to_string(), ok: false }
        }
    }
}

fn user_message(error: &AppError) -> String {
    match error {
        // The CLI's hint names `walletwatch list`; in chat it is /list.
        AppError::NotTracked(_) => "You are not tracking that wallet. /list shows the ones you track.".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_commands_parse() {
        assert_eq!(
            parse_text_command("/track@walletwatch_bot 5FHwkrdxntdK24hgQU8qgBjn35Y1zwhz1GZwCkP2UJnM big whale"),
            Some(Ok(ChatCommand::Track {
                address: "5FHwkrdxntdK24hgQU8qgBjn35Y1zwhz1GZwCkP2UJnM".into(),
                label: Some("big whale".into())
            }))
        );
        assert_eq!(parse_text_command("/LIST"), Some(Ok(ChatCommand::List)));
        assert_eq!(parse_text_command("/start"), Some(Ok(ChatCommand::Help)));
        assert!(matches!(parse_text_command("/track"), Some(Err(_))));
        assert!(matches!(parse_text_command("/frobnicate"), Some(Err(_))));
        assert_eq!(parse_text_command("hello"), None);
    }
}
