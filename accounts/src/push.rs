//! Web Push subscriptions: where a user's browsers want their notifications sent.
//!
//! A browser's `PushSubscription` is an endpoint URL at its push service plus two
//! values for the payload's encryption (RFC 8291): the browser's P-256 public key
//! (`p256dh`) and an authentication secret (`auth`). One row per endpoint, owned by
//! the user who registered it and the device (sign-in) they did it from. Registering
//! an endpoint again updates its row (and moves it to whoever registered it last: the
//! browser belongs to them now), so the call is idempotent. A user has at most a given
//! number of subscriptions.
//!
//! A subscription goes away when its user removes it, when the push service says it
//! is gone (404/410, [`Accounts::drop_push_subscription`]), with its user or device
//! row (`ON DELETE CASCADE`), and when its user is disabled or its device revoked:
//! [`Accounts::push_subscriptions_of`] deletes those instead of returning them, so no
//! notification ever goes to a signed-out browser.
//!
//! This module checks lengths only; that the keys are a valid P-256 point and a
//! 16-byte secret is the gateway's business (it has the crypto).

use crate::{Accounts, AccountsError, column, now_ms};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

/// Longest endpoint URL kept, in bytes (push services use a few hundred).
pub const MAX_ENDPOINT_BYTES: usize = 2000;
/// Longest key value kept, in characters (base64url of 65 or 16 bytes is far shorter).
const MAX_KEY_CHARS: usize = 200;

const COLUMNS: &str =
    "s.id, s.user_id, s.device_id, s.endpoint, s.p256dh, s.auth, s.created_at_ms, s.updated_at_ms";

/// One browser's push subscription.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    pub id: String,
    pub user_id: String,
    /// The sign-in it was registered from (none for one made without a device).
    pub device_id: Option<String>,
    pub endpoint: String,
    /// The browser's P-256 public key (uncompressed point), base64url.
    pub p256dh: String,
    /// The browser's authentication secret (16 bytes), base64url.
    pub auth: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The endpoint is a capability (whoever knows it can post to it): logs get its
/// origin only.
impl std::fmt::Debug for PushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origin: String = self
            .endpoint
            .splitn(4, '/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        f.debug_struct("PushSubscription")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("endpoint", &format!("{origin}/…"))
            .finish_non_exhaustive()
    }
}

impl PushSubscription {
    fn decode(row: &AnyRow) -> Result<PushSubscription, AccountsError> {
        let what = "push subscription";
        Ok(PushSubscription {
            id: column(row, what, "id")?,
            user_id: column(row, what, "user_id")?,
            device_id: column(row, what, "device_id")?,
            endpoint: column(row, what, "endpoint")?,
            p256dh: column(row, what, "p256dh")?,
            auth: column(row, what, "auth")?,
            created_at_ms: column(row, what, "created_at_ms")?,
            updated_at_ms: column(row, what, "updated_at_ms")?,
        })
    }
}

/// A subscription to register.
#[derive(Clone, Copy, Debug)]
pub struct NewPushSubscription<'a> {
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
    pub endpoint: &'a str,
    pub p256dh: &'a str,
    pub auth: &'a str,
}

/// What came of registering a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushRegistration {
    /// Stored (new, or the endpoint's row brought up to date).
    Saved(PushSubscription),
    /// The user already has `max` other subscriptions.
    TooMany { max: usize },
}

fn check_lengths(new: &NewPushSubscription<'_>) -> Result<(), AccountsError> {
    if new.endpoint.is_empty() || new.endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(AccountsError::invalid(
            "endpoint",
            format!("must be 1 to {MAX_ENDPOINT_BYTES} bytes"),
        ));
    }
    for (field, value) in [("keys.p256dh", new.p256dh), ("keys.auth", new.auth)] {
        if value.is_empty() || value.chars().count() > MAX_KEY_CHARS {
            return Err(AccountsError::invalid(
                field,
                format!("must be 1 to {MAX_KEY_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

impl Accounts {
    /// Registers a browser's subscription for a user, or brings the endpoint's row up
    /// to date. Refused with [`PushRegistration::TooMany`] when the user already has
    /// `max_per_user` subscriptions other than this endpoint.
    pub async fn save_push_subscription(
        &self,
        new: &NewPushSubscription<'_>,
        max_per_user: usize,
    ) -> Result<PushRegistration, AccountsError> {
        check_lengths(new)?;
        let failed = self.failed("save_push_subscription");
        let mut tx = self.begin_write("save_push_subscription").await?;
        let owner: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM push_subscriptions WHERE endpoint = $1")
                .bind(new.endpoint)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&failed)?;
        if owner.as_deref() != Some(new.user_id) {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = $1")
                    .bind(new.user_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(&failed)?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_user {
                tx.rollback().await.map_err(&failed)?;
                return Ok(PushRegistration::TooMany { max: max_per_user });
            }
        }
        // The conflict clause covers a concurrent registration of the same endpoint.
        sqlx::query(
            "INSERT INTO push_subscriptions \
             (id, user_id, device_id, endpoint, p256dh, auth, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (endpoint) DO UPDATE SET user_id = excluded.user_id, \
             device_id = excluded.device_id, p256dh = excluded.p256dh, auth = excluded.auth, \
             updated_at_ms = excluded.updated_at_ms",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(new.user_id)
        .bind(new.device_id)
        .bind(new.endpoint)
        .bind(new.p256dh)
        .bind(new.auth)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM push_subscriptions s WHERE s.endpoint = $1"
        )))
        .bind(new.endpoint)
        .fetch_one(&mut *tx)
        .await
        .map_err(&failed)?;
        let saved = PushSubscription::decode(&row)?;
        tx.commit().await.map_err(&failed)?;
        Ok(PushRegistration::Saved(saved))
    }

    /// Removes the user's subscription with this endpoint. True when there was one.
    pub async fn delete_push_subscription(
        &self,
        user_id: &str,
        endpoint: &str,
    ) -> Result<bool, AccountsError> {
        let deleted =
            sqlx::query("DELETE FROM push_subscriptions WHERE user_id = $1 AND endpoint = $2")
                .bind(user_id)
                .bind(endpoint)
                .execute(&self.pool)
                .await
                .map_err(self.failed("delete_push_subscription"))?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Removes a subscription its push service called gone (404 or 410). True when
    /// it was there.
    pub async fn drop_push_subscription(&self, id: &str) -> Result<bool, AccountsError> {
        let deleted = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.failed("drop_push_subscription"))?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Removes every subscription of a user (their account is disabled or going).
    /// Returns how many there were.
    pub async fn delete_push_subscriptions_of_user(
        &self,
        user_id: &str,
    ) -> Result<u64, AccountsError> {
        let deleted = sqlx::query("DELETE FROM push_subscriptions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(self.failed("delete_push_subscriptions_of_user"))?;
        Ok(deleted.rows_affected())
    }

    /// Where to send a notification for the user named `user_name`: their
    /// subscriptions, oldest first. Those of a disabled user or a revoked device are
    /// deleted here rather than returned.
    pub async fn push_subscriptions_of(
        &self,
        user_name: &str,
    ) -> Result<Vec<PushSubscription>, AccountsError> {
        let failed = self.failed("push_subscriptions_of");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, u.disabled_at_ms AS user_disabled_at_ms, \
             d.revoked_at_ms AS device_revoked_at_ms \
             FROM push_subscriptions s JOIN users u ON u.id = s.user_id \
             LEFT JOIN devices d ON d.id = s.device_id \
             WHERE u.name = $1 ORDER BY s.created_at_ms, s.id"
        )))
        .bind(user_name)
        .fetch_all(&self.pool)
        .await
        .map_err(&failed)?;
        let mut live = Vec::with_capacity(rows.len());
        for row in &rows {
            let subscription = PushSubscription::decode(row)?;
            let disabled: Option<i64> = column(row, "user", "user_disabled_at_ms")?;
            let revoked: Option<i64> = column(row, "device", "device_revoked_at_ms")?;
            if disabled.is_some() || revoked.is_some() {
                tracing::debug!(subscription = %subscription.id, "dropping the push subscription of a disabled user or revoked device");
                self.drop_push_subscription(&subscription.id).await?;
            } else {
                live.push(subscription);
            }
        }
        Ok(live)
    }

    /// Every subscription of a user, oldest first, whatever their state.
    pub async fn list_push_subscriptions(
        &self,
        user_id: &str,
    ) -> Result<Vec<PushSubscription>, AccountsError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM push_subscriptions s WHERE s.user_id = $1 \
             ORDER BY s.created_at_ms, s.id"
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("list_push_subscriptions"))?;
        rows.iter().map(PushSubscription::decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(endpoint: &'a str, p256dh: &'a str, auth: &'a str) -> NewPushSubscription<'a> {
        NewPushSubscription {
            user_id: "u",
            device_id: None,
            endpoint,
            p256dh,
            auth,
        }
    }

    #[test]
    fn lengths_are_bounded() {
        assert!(check_lengths(&new("https://push.example/x", "key", "auth")).is_ok());
        assert!(check_lengths(&new("", "key", "auth")).is_err());
        let long = format!("https://push.example/{}", "x".repeat(MAX_ENDPOINT_BYTES));
        assert!(check_lengths(&new(&long, "key", "auth")).is_err());
        assert!(check_lengths(&new("https://push.example/x", "", "auth")).is_err());
        let key = "k".repeat(MAX_KEY_CHARS + 1);
        assert!(check_lengths(&new("https://push.example/x", "key", &key)).is_err());
    }

    #[test]
    fn debug_output_shows_the_origin_only() {
        let subscription = PushSubscription {
            id: "s1".into(),
            user_id: "u1".into(),
            device_id: None,
            endpoint: "https://fcm.googleapis.com/fcm/send/secret-token".into(),
            p256dh: "p".into(),
            auth: "a".into(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let shown = format!("{subscription:?}");
        assert!(shown.contains("https://fcm.googleapis.com/"), "{shown}");
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
