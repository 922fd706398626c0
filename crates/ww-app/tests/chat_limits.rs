//! Chat users on a real store: each has a wallet quota and labels of their
//! own, and each chat a command rate.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use ww_app::chat::{self, ChatCommand, ChatContext, ChatLimits};
use ww_app::wallets::Sources;
use ww_core::alert::DestinationId;
use ww_core::store::Store;
use ww_store::RedbStore;

fn context(user: u64, chat: i64) -> ChatContext {
    ChatContext { user: format!("telegram:{user}"), destination: DestinationId::TelegramChat(chat) }
}

fn track(address: &ww_core::WalletAddress, label: Option<&str>) -> ChatCommand {
    ChatCommand::Track { address: address.to_string(), chain: None, label: label.map(str::to_string) }
}

#[tokio::test]
async fn a_chat_user_tracks_at_most_their_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let limits = ChatLimits::new(NonZeroUsize::new(2).expect("positive"), NonZeroU32::new(1000).expect("positive"));
    let wallets: Vec<_> = (0..3).map(|_| ww_test_utils::fresh_address()).collect();
    for wallet in &wallets[..2] {
        let reply =
            chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(1, 10), track(wallet, None))
                .await;
        assert!(reply.ok, "{}", reply.text);
    }
    let refused =
        chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(1, 10), track(&wallets[2], None))
            .await;
    assert!(!refused.ok);
    assert!(refused.text.contains("already track 2 wallets"), "{}", refused.text);
    assert!(
        store.wallet(&ww_core::WalletId::solana(wallets[2].clone())).expect("read").is_none(),
        "nothing was tracked beyond the quota"
    );
    // Tracking one of theirs again (a new label) is not a new wallet.
    let again = chat::execute_async(
        Arc::clone(&store),
        &Sources::default(),
        &limits,
        context(1, 10),
        track(&wallets[0], Some("again")),
    )
    .await;
    assert!(again.ok, "{}", again.text);
    // The quota is per user: another user in the same chat may track.
    let other =
        chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(2, 10), track(&wallets[2], None))
            .await;
    assert!(other.ok, "{}", other.text);
    // Untracking frees a place.
    let untrack = ChatCommand::Untrack { address: wallets[1].to_string(), chain: None };
    assert!(chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(1, 10), untrack).await.ok);
    let reply =
        chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(1, 10), track(&wallets[2], None))
            .await;
    assert!(reply.ok, "{}", reply.text);
}

#[tokio::test]
async fn a_chat_users_label_is_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let limits = ChatLimits::default();
    let wallet = ww_test_utils::fresh_address();
    assert!(
        chat::execute_async(
            Arc::clone(&store),
            &Sources::default(),
            &limits,
            context(1, 10),
            track(&wallet, Some("my whale"))
        )
        .await
        .ok
    );
    assert!(
        chat::execute_async(
            Arc::clone(&store),
            &Sources::default(),
            &limits,
            context(2, 20),
            track(&wallet, Some("scammer"))
        )
        .await
        .ok
    );
    let record = store.wallet(&ww_core::WalletId::solana(wallet.clone())).expect("read").expect("tracked");
    assert_eq!(record.label, None, "no chat user's label became the one everybody sees");
    let first =
        chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(1, 10), ChatCommand::List).await;
    assert!(first.text.contains("my whale") && !first.text.contains("scammer"), "{}", first.text);
    let second =
        chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(2, 20), ChatCommand::List).await;
    assert!(second.text.contains("scammer") && !second.text.contains("my whale"), "{}", second.text);
    let subscriptions = store.subscriptions_for(&[ww_core::WalletId::solana(wallet.clone())]).expect("read");
    let labels: Vec<_> =
        subscriptions.iter().map(|subscription| (subscription.user.as_str(), subscription.label.as_deref())).collect();
    assert_eq!(labels, vec![("telegram:1", Some("my whale")), ("telegram:2", Some("scammer"))]);
}

#[tokio::test]
async fn a_chat_runs_at_most_its_commands_per_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let limits = ChatLimits::new(NonZeroUsize::new(100).expect("positive"), NonZeroU32::new(3).expect("positive"));
    for _ in 0..3 {
        assert!(
            chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(1, 10), ChatCommand::List)
                .await
                .ok
        );
    }
    let limited =
        chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(2, 10), ChatCommand::List).await;
    assert!(!limited.ok);
    assert!(limited.text.contains("Too many commands"), "{}", limited.text);
    // Another chat has its own allowance.
    assert!(
        chat::execute_async(Arc::clone(&store), &Sources::default(), &limits, context(1, 11), ChatCommand::List)
            .await
            .ok
    );
}
