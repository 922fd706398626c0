//! The Telegram bot's update loop (polling mode) and update handling (both modes).
//!
//! Polling: `getUpdates` long polls from the stored offset; each text command
//! is run and answered with `sendMessage`, then the offset moves past it
//! (stored, so a restart neither loses nor repeats a command). Errors back
//! off exponentially, honouring `retry_after`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use ww_core::alert::DestinationId;
use ww_core::store::Store;
use ww_sinks::render::escape_html;
use ww_sinks::telegram::{IncomingMessage, TelegramClient};

use crate::chat::{self, ChatContext};

/// The settings key holding the next update offset.
pub(crate) const OFFSET_KEY: &str = "telegram.update_offset";
/// Longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs a message's command; returns the HTML reply, or `None` for non-commands.
pub async fn handle_message(
    store: Arc<dyn Store>,
    sources: &crate::wallets::Sources,
    limits: &chat::ChatLimits,
    message: &IncomingMessage,
) -> Option<String> {
    let parsed = chat::parse_text_command(&message.text)?;
    let text = match parsed {
        Ok(command) => {
            let context = ChatContext {
                user: format!("telegram:{}", message.user_id),
                destination: DestinationId::TelegramChat(message.chat_id),
            };
            chat::execute_async(store, sources, limits, context, command).await.text
        }
        Err(usage) => usage,
    };
    Some(escape_html(&text))
}

async fn read_offset(store: &Arc<dyn Store>) -> i64 {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.setting(OFFSET_KEY)).await {
        Ok(Ok(Some(text))) => text.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Polls for updates until `shutdown` is cancelled. Among several
/// instances (`cluster`), only while this one holds the poller's lease
/// (Telegram allows one poller per bot); taking it over, it reads the
/// offset the previous poller saved.
pub async fn run_polling(
    store: Arc<dyn Store>,
    sources: crate::wallets::Sources,
    limits: chat::ChatLimits,
    client: TelegramClient,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    shutdown: CancellationToken,
) {
    let mut offset = read_offset(&store).await;
    info!(offset, "telegram bot polling for commands");
    let mut backoff = Duration::from_secs(1);
    let mut was_polling = true;
    loop {
        if let Some(cluster) = &cluster {
            if !cluster.holds(crate::cluster::TELEGRAM_POLLER) {
                was_polling = false;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            if !was_polling {
                offset = read_offset(&store).await;
                info!(offset, "this instance polls the telegram bot now");
                was_polling = true;
            }
        }
        let polled = tokio::select! {
            () = shutdown.cancelled() => return,
            polled = client.get_updates(offset) => polled,
        };
        match polled {
            Ok((messages, highest)) => {
                backoff = Duration::from_secs(1);
                for message in &messages {
                    if let Some(reply) = handle_message(Arc::clone(&store), &sources, &limits, message).await
                        && let Err(error) = client.send_message(message.chat_id, &reply).await
                    {
                        warn!(chat = message.chat_id, error = %error, "telegram reply failed");
                    }
                }
                if let Some(highest) = highest {
                    offset = highest + 1;
                    let store = Arc::clone(&store);
                    let text = offset.to_string();
                    if !matches!(
                        tokio::task::spawn_blocking(move || store.put_setting(OFFSET_KEY, &text)).await,
                        Ok(Ok(()))
                    ) {
                        warn!("saving the telegram update offset failed; a restart may answer a command twice");
                    }
                }
            }
            Err(error) => {
                let wait = error.retry_after().unwrap_or(backoff);
                warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "telegram getUpdates failed; retrying");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
