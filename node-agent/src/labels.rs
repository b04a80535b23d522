//! Routing by labels, on the node: which label selectors this node claims from. A
//! [`SelectorFollower`] watches the `paddock_selectors` bucket; for every selector
//! whose requirements the node's pool and labels satisfy, it sets up the selector's
//! consumer (one per selector, shared by every matching node) and adds it to
//! [`SelectorFeeds`], which the node's feed pulls from on every claim; selectors the
//! node does not match it ignores.
//!
//! Level-triggered like the rest of the node: the watch is the fast path, and every
//! [`RESYNC_INTERVAL`] the follower lists the bucket again, sets every consumer up
//! again (the server deletes one nobody pulled from for a while, say while the node
//! was drained) and forgets selectors idle for [`SELECTOR_IDLE`]. A pull that fails
//! (its consumer gone) hands the selector back here to be set up again at once.

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use paddock_bus::selectors::{SELECTOR_IDLE, SelectorChange, SelectorEntry};
use paddock_bus::{SelectorStore, StreamSettings};
use paddock_contract::job::labels_satisfy;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the follower reconciles with the whole bucket.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before watching again after the watch broke.
const REWATCH_PAUSE: Duration = Duration::from_secs(2);

/// The selector consumers the node claims from, shared by the follower (which keeps
/// them) and the node's feed (which pulls from them).
#[derive(Clone, Default)]
pub struct SelectorFeeds {
    inner: Arc<Mutex<Feeds>>,
    broke: Arc<Notify>,
}

#[derive(Default)]
struct Feeds {
    consumers: BTreeMap<String, PullConsumer>,
    /// Selectors whose pull failed, to be set up again.
    broken: BTreeSet<String>,
    /// Where the next claim starts, so that no selector starves the ones after it.
    turn: usize,
}

impl SelectorFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Feeds> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The consumers to pull from, each claim starting one further along.
    pub fn in_turn(&self) -> Vec<(String, PullConsumer)> {
        let mut feeds = self.lock();
        let mut all: Vec<(String, PullConsumer)> = feeds
            .consumers
            .iter()
            .map(|(id, consumer)| (id.clone(), consumer.clone()))
            .collect();
        if !all.is_empty() {
            let start = feeds.turn % all.len();
            all.rotate_left(start);
            feeds.turn = feeds.turn.wrapping_add(1);
        }
        all
    }

    /// The ids of the selectors the node claims from.
    pub fn ids(&self) -> BTreeSet<String> {
        self.lock().consumers.keys().cloned().collect()
    }

    /// A pull from `id` failed: stop pulling from it until it is set up again.
    pub fn broken(&self, id: &str) {
        let mut feeds = self.lock();
        feeds.consumers.remove(id);
        feeds.broken.insert(id.to_string());
        drop(feeds);
        self.broke.notify_one();
    }

    fn insert(&self, id: &str, consumer: PullConsumer) -> bool {
        self.lock()
            .consumers
            .insert(id.to_string(), consumer)
            .is_none()
    }

    fn remove(&self, id: &str) -> bool {
        self.lock().consumers.remove(id).is_some()
    }

    fn has(&self, id: &str) -> bool {
        self.lock().consumers.contains_key(id)
    }

    fn take_broken(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.lock().broken)
    }
}

/// Keeps [`SelectorFeeds`] in step with the selectors bucket and this node's labels.
pub struct SelectorFollower {
    pub js: jetstream::Context,
    pub store: SelectorStore,
    pub streams: StreamSettings,
    pub node: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    pub feeds: SelectorFeeds,
}

impl SelectorFollower {
    /// Follows the bucket until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The watch starts with every selector recorded: no pass needed at once.
        resync.tick().await;
        loop {
            let watch = match self.store.watch().await {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch label selectors; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(REWATCH_PAUSE) => continue,
                    }
                }
            };
            futures::pin_mut!(watch);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    change = watch.next() => match change {
                        Some(SelectorChange::Recorded(entry)) => self.serve(&entry, false).await,
                        Some(SelectorChange::Forgotten(id)) => self.drop_selector(&id),
                        None => break,
                    },
                    () = self.feeds.broke.notified() => self.set_up_broken().await,
                    _ = resync.tick() => self.resync().await,
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REWATCH_PAUSE) => {}
            }
        }
    }

    fn matches(&self, entry: &SelectorEntry) -> bool {
        labels_satisfy(&self.pool, &self.labels, &entry.selector.requires)
    }

    /// Claims from the selector if this node matches it; `again` sets its consumer up
    /// even when the node already claims from it.
    async fn serve(&self, entry: &SelectorEntry, again: bool) {
        if !self.matches(entry) || (!again && self.feeds.has(&entry.id)) {
            return;
        }
        match paddock_bus::ensure_selector_consumer(
            &self.js,
            &entry.id,
            &self.streams,
            SELECTOR_IDLE,
        )
        .await
        {
            Ok(consumer) => {
                if self.feeds.insert(&entry.id, consumer) {
                    tracing::info!(node = %self.node, selector = %entry.id, requires = ?entry.selector.requires, "claiming jobs with these requirements");
                }
            }
            // The next pass tries again.
            Err(e) => {
                tracing::warn!(selector = %entry.id, error = %e, "cannot set up a selector's consumer")
            }
        }
    }

    fn drop_selector(&self, id: &str) {
        if self.feeds.remove(id) {
            tracing::info!(node = %self.node, selector = %id, "selector forgotten; no longer claiming from it");
        }
    }

    async fn set_up_broken(&self) {
        for id in self.feeds.take_broken() {
            match self.store.entry(&id).await {
                Ok(Some(entry)) => self.serve(&entry, true).await,
                Ok(None) => self.drop_selector(&id),
                Err(e) => tracing::warn!(selector = %id, error = %e, "cannot read a selector"),
            }
        }
    }

    /// Reconciles with the whole bucket, then forgets idle selectors.
    async fn resync(&self) {
        let entries = match self.store.list().await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list label selectors");
                return;
            }
        };
        let recorded: BTreeSet<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
        for id in self.feeds.ids() {
            if !recorded.contains(id.as_str()) {
                self.drop_selector(&id);
            }
        }
        for entry in &entries {
            self.serve(entry, true).await;
        }
        for id in self.feeds.ids() {
            match self.store.forget_if_idle(&id, SELECTOR_IDLE).await {
                Ok(true) => self.drop_selector(&id),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(selector = %id, error = %e, "cannot forget an idle selector")
                }
            }
        }
    }
}
