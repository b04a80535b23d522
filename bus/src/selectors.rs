//! Label selectors: the requirement sets jobs are queued with, kept in the
//! `paddock_selectors` key-value bucket under their id (a digest of the requirements).
//! A job that requires labels beyond its pool is published on its selector's subject;
//! the gateway records the selector just before publishing, and every node watches the
//! bucket and claims from the selectors its labels satisfy, through one durable
//! consumer per selector shared by all of them (the jobs stream is a work queue, so
//! one job goes to one node, and a lost node's job is delivered again to another).
//!
//! A selector unused for [`SELECTOR_IDLE`] with no job left on its subject is
//! forgotten by a delete conditional on the revision that was read: a submission that
//! records it meanwhile makes the delete fail, so a job is never published on a
//! forgotten selector. Its consumer then goes by itself (the server deletes a selector
//! consumer nobody pulls from for as long).

use crate::BusError;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, kv};
use futures::{Stream, StreamExt};
use paddock_contract::job::LabelSelector;
use paddock_contract::{now_unix_ms, subjects};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a selector stays after the last job queued with it, and how long its
/// consumer stays once no node pulls from it.
pub const SELECTOR_IDLE: Duration = Duration::from_secs(3600);

/// Hex digits of a selector id: 128 bits of SHA-256, one subject token.
const ID_HEX_DIGITS: usize = 32;

/// The id of a requirement set: the same requirements, in any order, the same id.
/// Each key and value is written with its length first, so no two sets share bytes.
pub fn selector_id(requires: &BTreeMap<String, String>) -> String {
    let mut canonical = Vec::new();
    for (key, value) in requires {
        for part in [key, value] {
            canonical.extend_from_slice(&(part.len() as u64).to_be_bytes());
            canonical.extend_from_slice(part.as_bytes());
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
    digest
        .as_ref()
        .iter()
        .take(ID_HEX_DIGITS / 2)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One recorded selector.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectorEntry {
    pub id: String,
    pub selector: LabelSelector,
    /// The bucket's revision of the entry.
    pub revision: u64,
}

/// What a watch of the bucket reports.
#[derive(Clone, Debug, PartialEq)]
pub enum SelectorChange {
    Recorded(SelectorEntry),
    Forgotten(String),
}

/// Handle on the selectors bucket.
#[derive(Clone)]
pub struct SelectorStore {
    js: jetstream::Context,
    kv: kv::Store,
}

fn selector_error(detail: String) -> BusError {
    BusError::Stream {
        stream: subjects::SELECTORS_BUCKET.into(),
        detail,
    }
}

impl SelectorStore {
    /// Opens the bucket, creating it when absent (several services may race to).
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<SelectorStore, BusError> {
        let name = subjects::SELECTORS_BUCKET;
        let kv = match js.get_key_value(name).await {
            Ok(kv) => kv,
            Err(_) => match js
                .create_key_value(kv::Config {
                    bucket: name.into(),
                    description: "Paddock label selectors of queued jobs".into(),
                    history: 1,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
            {
                Ok(kv) => kv,
                // Another service created it first.
                Err(create) => js.get_key_value(name).await.map_err(|_| {
                    selector_error(format!("cannot create the key-value bucket: {create}"))
                })?,
            },
        };
        Ok(SelectorStore { js: js.clone(), kv })
    }

    /// Records that a job is about to be queued with `requires` (which names the pool)
    /// and returns the selector's id. Call it before publishing the job, every time:
    /// the write is what keeps the selector from being forgotten meanwhile.
    pub async fn record(&self, requires: &BTreeMap<String, String>) -> Result<String, BusError> {
        let id = selector_id(requires);
        let selector = LabelSelector {
            requires: requires.clone(),
            recorded_at_ms: now_unix_ms(),
        };
        let value = serde_json::to_vec(&selector).map_err(|e| selector_error(e.to_string()))?;
        self.kv
            .put(&id, value.into())
            .await
            .map_err(|e| selector_error(format!("cannot record selector {id}: {e}")))?;
        Ok(id)
    }

    /// Every recorded selector.
    pub async fn list(&self) -> Result<Vec<SelectorEntry>, BusError> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| selector_error(format!("cannot list selectors: {e}")))?;
        let mut entries = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| selector_error(format!("cannot list selectors: {e}")))?;
            if let Some(entry) = self.entry(&key).await? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The selector `id`, if it is recorded (and readable).
    pub async fn entry(&self, id: &str) -> Result<Option<SelectorEntry>, BusError> {
        let entry = self
            .kv
            .entry(id)
            .await
            .map_err(|e| selector_error(format!("cannot read selector {id}: {e}")))?;
        Ok(entry.and_then(parse))
    }

    /// Every selector as recorded now, then every change. The stream ends if the
    /// watch breaks (a server restart): watch again.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = SelectorChange> + Send + 'static, BusError> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| selector_error(format!("cannot watch selectors: {e}")))?;
        Ok(watch
            .take_while(|entry| {
                if let Err(e) = entry {
                    tracing::warn!(error = %e, "the selectors watch broke");
                }
                std::future::ready(entry.is_ok())
            })
            .filter_map(|entry| {
                std::future::ready(entry.ok().and_then(|entry| match entry.operation {
                    kv::Operation::Put => parse(entry).map(SelectorChange::Recorded),
                    kv::Operation::Delete | kv::Operation::Purge => {
                        Some(SelectorChange::Forgotten(entry.key))
                    }
                }))
            }))
    }

    /// Forgets selector `id` when no job was queued with it for `idle` and none is
    /// left on its subject. True when it was forgotten.
    pub async fn forget_if_idle(&self, id: &str, idle: Duration) -> Result<bool, BusError> {
        let Some(entry) = self.entry(id).await? else {
            return Ok(false);
        };
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        if now_unix_ms().saturating_sub(entry.selector.recorded_at_ms) < idle_ms {
            return Ok(false);
        }
        if self.has_jobs(id).await? {
            return Ok(false);
        }
        match self
            .kv
            .delete_expect_revision(id, Some(entry.revision))
            .await
        {
            Ok(()) => {
                tracing::info!(selector = %id, requires = ?entry.selector.requires, "forgot an idle selector");
                Ok(true)
            }
            // Recorded again since it was read: a job is on its way.
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(selector_error(format!("cannot forget selector {id}: {e}"))),
        }
    }

    /// Whether any job waits on, or runs from, the selector's subject: the jobs stream
    /// keeps a job's message until a node acknowledges the job's end.
    async fn has_jobs(&self, id: &str) -> Result<bool, BusError> {
        let stream = self
            .js
            .get_stream_no_info(subjects::JOBS_STREAM)
            .await
            .map_err(|e| selector_error(format!("jobs stream missing: {e}")))?;
        match stream
            .get_last_raw_message_by_subject(&subjects::selector_jobs(id))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(selector_error(format!(
                "cannot read the jobs of selector {id}: {e}"
            ))),
        }
    }
}

/// A bucket entry as a selector; `None` (logged) for a value that is not one or whose
/// key is not its requirements' id.
fn parse(entry: kv::Entry) -> Option<SelectorEntry> {
    if entry.operation != kv::Operation::Put {
        return None;
    }
    let selector = match serde_json::from_slice::<LabelSelector>(&entry.value) {
        Ok(selector) => selector,
        Err(e) => {
            tracing::warn!(key = %entry.key, error = %e, "unreadable selector; ignored");
            return None;
        }
    };
    if selector_id(&selector.requires) != entry.key {
        tracing::warn!(key = %entry.key, "selector stored under another id; ignored");
        return None;
    }
    Some(SelectorEntry {
        id: entry.key,
        selector,
        revision: entry.revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requires(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ids_depend_on_the_requirements_only() {
        let a = selector_id(&requires(&[("pool", "default"), ("xcode", "16")]));
        let b = selector_id(&requires(&[("xcode", "16"), ("pool", "default")]));
        assert_eq!(a, b);
        assert_eq!(a.len(), ID_HEX_DIGITS);
        assert!(subjects::is_valid_token(&a));
        assert_ne!(
            a,
            selector_id(&requires(&[("pool", "default"), ("xcode", "15")]))
        );
        // Lengths come first: moving a boundary changes the id.
        assert_ne!(
            selector_id(&requires(&[("ab", "c")])),
            selector_id(&requires(&[("a", "bc")]))
        );
    }
}
