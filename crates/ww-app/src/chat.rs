//! Chat commands, shared by Discord and Telegram: `/track <address> [chain]
//! [label]`, `/untrack <address> [chain]`, `/list`, `/help`. A chain is
//! named for a `0x` address (`ethereum`, `polygon` or any `[evm.NAME]` this
//! walletwatch watches); a base58 address is a Solana wallet (`solana` may
//! follow it; any other word starts the label).
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
        /// The chain named (required for a `0x` address).
        chain: Option<ww_core::Chain>,
        /// An optional label.
        label: Option<String>,
    },
    /// Stop tracking a wallet.
    Untrack {
        /// The address as typed.
        address: String,
        /// The chain named (required for a `0x` address).
        chain: Option<ww_core::Chain>,
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
/track <address> [chain] [label] — alerts for a wallet's activity in this chat \
(a 0x address needs its chain: ethereum, polygon or another chain watched here)\n\
/untrack <address> [chain] — stop those alerts\n\
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
    // The word after a 0x address is its chain (any name: whether it is
    // watched is checked when the command runs); after a base58 address,
    // only `solana` is, and any other word starts the label.
    let is_evm =
        arguments.first().is_some_and(|address| address.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x")));
    let chain_at = |index: usize| {
        let word = arguments.get(index)?;
        match word.parse::<ww_core::Chain>() {
            Ok(chain) if is_evm || chain == ww_core::Chain::SOLANA => Some(chain),
            _ => None,
        }
    };
    Some(match name.as_str() {
        "track" => match arguments.split_first() {
            Some((address, rest)) => {
                let chain = chain_at(1);
                let label = if chain.is_some() { &rest[1..] } else { rest };
                Ok(ChatCommand::Track {
                    address: (*address).to_string(),
                    chain,
                    label: (!label.is_empty()).then(|| label.join(" ")),
                })
            }
            None => Err("Usage: /track <address> [chain] [label]".to_string()),
        },
        "untrack" => match arguments.first() {
            Some(address) => Ok(ChatCommand::Untrack { address: (*address).to_string(), chain: chain_at(1) }),
            None => Err("Usage: /untrack <address> [chain]".to_string()),
        },
        "list" => Ok(ChatCommand::List),
        "help" | "start" => Ok(ChatCommand::Help),
        other => Err(format!("Unknown command /{other}. Send /help for the commands.")),
    })
}

/// Runs a command (blocking store calls; run it off the async workers).
/// `start_slot` is the chain's current height for a `/track` (see
/// [`wallets::current_slot`]); `sources` are the chains watched.
pub fn execute(
    store: &dyn Store,
    sources: &wallets::Sources,
    limits: &ChatLimits,
    context: &ChatContext,
    command: &ChatCommand,
    start_slot: Option<u64>,
    now: UnixMillis,
) -> ChatReply {
    let result = match command {
        ChatCommand::Track { address, chain, label } => sources.resolve(address, *chain).and_then(|chain| {
            let options = TrackOptions {
                filter: None,
                destination: Some(context.destination.clone()),
                start_slot,
                chat_quota: Some(limits.max_wallets_per_user),
                priority: None,
                chain: Some(chain),
            };
            wallets::track_with(store, address, label.as_deref(), &context.user, options, now)
                .map(|(address, _)| wallets::tracking_message(&address))
        }),
        ChatCommand::Untrack { address, chain } => wallets::untrack_on(store, *chain, address, &context.user)
            .map(|(address, _)| wallets::untracking_message(&address)),
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
/// allowance; a `/track` first asks the chain's source (when watched) for
/// its current height, where the wallet's history starts.
pub async fn execute_async(
    store: Arc<dyn Store>,
    sources: &wallets::Sources,
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
        ChatCommand::Track { address, chain, .. } => match sources.resolve(address, *chain) {
            Ok(chain) => sources.height_or_log(chain).await,
            Err(_) => None,
        },
        _ => None,
    };
    let now = ww_core::time::now();
    let sources = sources.clone();
    match tokio::task::spawn_blocking(move || {
        execute(store.as_ref(), &sources, &limits, &context, &command, start_slot, now)
    })
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
                chain: None,
                label: Some("big whale".into())
            }))
        );
        let evm = "0x52908400098527886E0F7030069857D2E4169EE7";
        assert_eq!(
            parse_text_command(&format!("/track {evm} polygon treasury")),
            Some(Ok(ChatCommand::Track {
                address: evm.into(),
                chain: Some(ww_core::Chain::POLYGON),
                label: Some("treasury".into())
            }))
        );
        assert_eq!(
            parse_text_command(&format!("/untrack {evm} ethereum")),
            Some(Ok(ChatCommand::Untrack { address: evm.into(), chain: Some(ww_core::Chain::ETHEREUM) }))
        );
        // Any chain name after a 0x address (checked against the watched
        // chains when it runs); after a base58 address a word is a label.
        assert_eq!(
            parse_text_command(&format!("/track {evm} base")),
            Some(Ok(ChatCommand::Track { address: evm.into(), chain: "base".parse().ok(), label: None }))
        );
        let solana = "5FHwkrdxntdK24hgQU8qgBjn35Y1zwhz1GZwCkP2UJnM";
        assert_eq!(
            parse_text_command(&format!("/track {solana} polygon whale")),
            Some(Ok(ChatCommand::Track { address: solana.into(), chain: None, label: Some("polygon whale".into()) }))
        );
        assert_eq!(
            parse_text_command(&format!("/track {solana} solana whale")),
            Some(Ok(ChatCommand::Track {
                address: solana.into(),
                chain: Some(ww_core::Chain::SOLANA),
                label: Some("whale".into())
            }))
        );
        assert_eq!(parse_text_command("/LIST"), Some(Ok(ChatCommand::List)));
        assert_eq!(parse_text_command("/start"), Some(Ok(ChatCommand::Help)));
        assert!(matches!(parse_text_command("/track"), Some(Err(_))));
        assert!(matches!(parse_text_command("/frobnicate"), Some(Err(_))));
        assert_eq!(parse_text_command("hello"), None);
    }

    #[test]
    fn a_chain_must_be_watched_and_a_0x_address_must_name_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ww_store::RedbStore::open_in_dir(dir.path()).expect("store");
        let limits = ChatLimits::default();
        let context = ChatContext { user: "telegram:1".into(), destination: DestinationId::TelegramChat(1) };
        let evm = "0x52908400098527886E0F7030069857D2E4169EE7";
        let run = |command: ChatCommand| {
            execute(&store, &wallets::Sources::default(), &limits, &context, &command, None, UnixMillis(1))
        };
        let reply = run(ChatCommand::Track { address: evm.into(), chain: None, label: None });
        assert!(!reply.ok && reply.text.contains("name its chain"), "{reply:?}");
        let reply = run(ChatCommand::Track { address: evm.into(), chain: Some(ww_core::Chain::POLYGON), label: None });
        assert!(!reply.ok && reply.text.contains("polygon is not watched here"), "{reply:?}");
        assert!(store.wallets().expect("wallets").is_empty());
    }
}
