//! Devices and refresh-token families: what a sign-in leaves behind.
//!
//! A login creates a **device** record (a name the client gives, the address, when it
//! was last seen) and one **refresh family** bound to it, holding its first opaque
//! refresh token. Tokens are stored only as SHA-256 hashes. Each use of a refresh
//! token ([`Accounts::rotate_refresh`]) marks it used and issues its successor in the
//! same family, in one transaction. Presenting a token that was already used is the
//! sign of a stolen token (either the thief or the owner used it first), so, as RFC
//! 9700 §4.14.2 asks, the whole family is revoked, and with it the device: the
//! attacker's and the owner's tokens both die, and the owner signs in again. Two
//! concurrent uses of one token count as a reuse too: the conditional update lets only
//! one of them through.
//!
//! The gateway checks [`Accounts::session_state`] on every request, so revoking a
//! device (logout, an admin, reuse detection, disabling the user) ends its access
//! tokens at once, not when they expire.

use crate::secret::{new_token, token_hash};
use crate::{Accounts, AccountsError, User, column, millis, now_ms};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

/// The prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "pdr_";
/// Longest device name kept.
const MAX_DEVICE_NAME: usize = 100;

/// A signed-in client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub last_address: Option<String>,
    pub revoked_at_ms: Option<i64>,
    pub revoked_reason: Option<String>,
}

impl Device {
    fn decode(row: &AnyRow) -> Result<Device, AccountsError> {
        let what = "device";
        Ok(Device {
            id: column(row, what, "id")?,
            user_id: column(row, what, "user_id")?,
            name: column(row, what, "name")?,
            created_at_ms: column(row, what, "created_at_ms")?,
            last_seen_at_ms: column(row, what, "last_seen_at_ms")?,
            last_address: column(row, what, "last_address")?,
            revoked_at_ms: column(row, what, "revoked_at_ms")?,
            revoked_reason: column(row, what, "revoked_reason")?,
        })
    }
}

const DEVICE_COLUMNS: &str = "id, user_id, name, created_at_ms, last_seen_at_ms, last_address, revoked_at_ms, revoked_reason";

/// A refresh token just issued: the only time its clear text exists.
#[derive(Clone)]
pub struct IssuedRefresh {
    pub token: String,
    pub family_id: String,
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for IssuedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedRefresh")
            .field("token", &"<redacted>")
            .field("family_id", &self.family_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// A new sign-in: its device and first refresh token.
#[derive(Clone, Debug)]
pub struct Session {
    pub device: Device,
    pub refresh: IssuedRefresh,
}

/// What came of presenting a refresh token.
#[derive(Clone, Debug)]
pub enum Rotation {
    /// The token was good: here is its successor, and the user as they are now.
    Rotated {
        user: User,
        device_id: String,
        refresh: IssuedRefresh,
    },
    /// The token had been used before: its family and device are now revoked.
    Reused {
        user_name: String,
        device_id: String,
        family_id: String,
    },
    /// The token is known but cannot be used (expired, revoked, user disabled).
    Refused {
        reason: &'static str,
        user_name: String,
        device_id: String,
    },
    /// No such token.
    Unknown,
}

/// Whether a device's access tokens still count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    Active,
    Revoked,
    UserDisabled,
    Unknown,
}

/// Revokes every device of a user and their families, inside `tx`.
pub(crate) async fn revoke_user_devices(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    now: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at_ms = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE devices SET revoked_at_ms = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes one device and its families, inside `tx`. True when it was active.
async fn revoke_device_in(
    tx: &mut Transaction<'static, Any>,
    device_id: &str,
    now: i64,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at_ms = $1, revoked_reason = $2 \
         WHERE device_id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(device_id)
    .execute(&mut **tx)
    .await?;
    let revoked = sqlx::query(
        "UPDATE devices SET revoked_at_ms = $1, revoked_reason = $2 \
         WHERE id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(device_id)
    .execute(&mut **tx)
    .await?;
    Ok(revoked.rows_affected() == 1)
}

/// A device name as kept: control characters dropped, at most 100 characters,
/// "unnamed device" when nothing is left.
fn clean_device_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DEVICE_NAME)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "unnamed device".to_string()
    } else {
        cleaned.to_string()
    }
}

impl Accounts {
    /// Signs `user` in on a new device: the device record, a refresh family and its
    /// first token.
    pub async fn start_session(
        &self,
        user: &User,
        device_name: &str,
        address: Option<&str>,
    ) -> Result<Session, AccountsError> {
        let failed = self.failed("start_session");
        let now = now_ms();
        let device = Device {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.id.clone(),
            name: clean_device_name(device_name),
            created_at_ms: now,
            last_seen_at_ms: now,
            last_address: address.map(str::to_string),
            revoked_at_ms: None,
            revoked_reason: None,
        };
        let family_id = uuid::Uuid::now_v7().to_string();
        let token = new_token(REFRESH_PREFIX)?;
        let token_expires = now.saturating_add(millis(self.options.refresh_token_ttl));
        let family_expires = now.saturating_add(millis(self.options.refresh_family_ttl));
        let mut tx = self.begin_write("start_session").await?;
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, created_at_ms, last_seen_at_ms, last_address) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .persistent(false)
        .bind(&device.id)
        .bind(&device.user_id)
        .bind(&device.name)
        .bind(now)
        .bind(device.last_address.clone())
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        sqlx::query(
            "INSERT INTO refresh_families (id, user_id, device_id, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&family_id)
        .bind(&user.id)
        .bind(&device.id)
        .bind(now)
        .bind(family_expires)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        insert_token(
            &mut tx,
            &token,
            &family_id,
            now,
            token_expires.min(family_expires),
        )
        .await
        .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        Ok(Session {
            device,
            refresh: IssuedRefresh {
                token,
                family_id,
                expires_at_ms: token_expires.min(family_expires),
            },
        })
    }

    /// The device a refresh token belongs to, without using the token (the gateway
    /// rate-limits refreshes per device before it rotates).
    pub async fn refresh_device(&self, presented: &str) -> Result<Option<String>, AccountsError> {
        sqlx::query_scalar(
            "SELECT f.device_id FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
             WHERE t.token_hash = $1",
        )
        .bind(token_hash(presented))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed("refresh_device"))
    }

    /// Uses a refresh token: see the module's description.
    pub async fn rotate_refresh(
        &self,
        presented: &str,
        address: Option<&str>,
    ) -> Result<Rotation, AccountsError> {
        let failed = self.failed("rotate_refresh");
        let now = now_ms();
        let hash = token_hash(presented);
        let mut tx = self.begin_write("rotate_refresh").await?;
        let found = sqlx::query(
            "SELECT t.family_id, t.expires_at_ms AS token_expires_at_ms, t.used_at_ms, \
                    f.user_id, f.device_id, f.revoked_at_ms, f.expires_at_ms AS family_expires_at_ms, \
                    u.name AS user_name, u.disabled_at_ms \
             FROM refresh_tokens t \
             JOIN refresh_families f ON f.id = t.family_id \
             JOIN users u ON u.id = f.user_id \
             WHERE t.token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&failed)?;
        let Some(found) = found else {
            tx.rollback().await.map_err(&failed)?;
            return Ok(Rotation::Unknown);
        };
        let what = "refresh token";
        let family_id: String = column(&found, what, "family_id")?;
        let token_expires: i64 = column(&found, what, "token_expires_at_ms")?;
        let used_at: Option<i64> = column(&found, what, "used_at_ms")?;
        let user_id: String = column(&found, what, "user_id")?;
        let device_id: String = column(&found, what, "device_id")?;
        let family_revoked: Option<i64> = column(&found, what, "revoked_at_ms")?;
        let family_expires: i64 = column(&found, what, "family_expires_at_ms")?;
        let user_name: String = column(&found, what, "user_name")?;
        let user_disabled: Option<i64> = column(&found, what, "disabled_at_ms")?;

        let refused = |reason| Rotation::Refused {
            reason,
            user_name: user_name.clone(),
            device_id: device_id.clone(),
        };
        let reused = Rotation::Reused {
            user_name: user_name.clone(),
            device_id: device_id.clone(),
            family_id: family_id.clone(),
        };
        if used_at.is_some() {
            revoke_device_in(&mut tx, &device_id, now, "refresh token reused")
                .await
                .map_err(&failed)?;
            tx.commit().await.map_err(&failed)?;
            return Ok(reused);
        }
        let outcome = if family_revoked.is_some() {
            Some(refused("revoked"))
        } else if user_disabled.is_some() {
            Some(refused("user disabled"))
        } else if token_expires <= now || family_expires <= now {
            Some(refused("expired"))
        } else {
            None
        };
        if let Some(outcome) = outcome {
            tx.rollback().await.map_err(&failed)?;
            return Ok(outcome);
        }
        let marked = sqlx::query(
            "UPDATE refresh_tokens SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL",
        )
        .bind(now)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        if marked.rows_affected() != 1 {
            // A concurrent use of the same token got there first: a reuse.
            revoke_device_in(&mut tx, &device_id, now, "refresh token reused")
                .await
                .map_err(&failed)?;
            tx.commit().await.map_err(&failed)?;
            return Ok(reused);
        }
        let token = new_token(REFRESH_PREFIX)?;
        let expires = now
            .saturating_add(millis(self.options.refresh_token_ttl))
            .min(family_expires);
        insert_token(&mut tx, &token, &family_id, now, expires)
            .await
            .map_err(&failed)?;
        sqlx::query(
            "UPDATE devices SET last_seen_at_ms = $1, last_address = COALESCE($2, last_address) \
             WHERE id = $3",
        )
        .persistent(false)
        .bind(now)
        .bind(address.map(str::to_string))
        .bind(&device_id)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        let user = self
            .user_by_id(&user_id)
            .await?
            .ok_or_else(|| AccountsError::NoSuchUser(user_id.clone()))?;
        Ok(Rotation::Rotated {
            user,
            device_id,
            refresh: IssuedRefresh {
                token,
                family_id,
                expires_at_ms: expires,
            },
        })
    }

    pub async fn device(&self, id: &str) -> Result<Option<Device>, AccountsError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed("device"))?;
        row.as_ref().map(Device::decode).transpose()
    }

    /// The devices of a user, newest first; revoked ones too when `include_revoked`.
    pub async fn list_devices(
        &self,
        user_id: &str,
        include_revoked: bool,
    ) -> Result<Vec<Device>, AccountsError> {
        let filter = if include_revoked {
            ""
        } else {
            " AND revoked_at_ms IS NULL"
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1{filter} \
             ORDER BY created_at_ms DESC, id DESC"
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("list_devices"))?;
        rows.iter().map(Device::decode).collect()
    }

    /// Revokes a device and its refresh families. False when it was already revoked.
    pub async fn revoke_device(&self, id: &str, reason: &str) -> Result<bool, AccountsError> {
        let failed = self.failed("revoke_device");
        let mut tx = self.begin_write("revoke_device").await?;
        let revoked = revoke_device_in(&mut tx, id, now_ms(), reason)
            .await
            .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        Ok(revoked)
    }

    /// Whether access tokens issued to `device_id` still count.
    pub async fn session_state(&self, device_id: &str) -> Result<SessionState, AccountsError> {
        let row = sqlx::query(
            "SELECT d.revoked_at_ms, u.disabled_at_ms FROM devices d \
             JOIN users u ON u.id = d.user_id WHERE d.id = $1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed("session_state"))?;
        let Some(row) = row else {
            return Ok(SessionState::Unknown);
        };
        let revoked: Option<i64> = column(&row, "device", "revoked_at_ms")?;
        let disabled: Option<i64> = column(&row, "device", "disabled_at_ms")?;
        Ok(match (revoked, disabled) {
            (Some(_), _) => SessionState::Revoked,
            (None, Some(_)) => SessionState::UserDisabled,
            (None, None) => SessionState::Active,
        })
    }
}

async fn insert_token(
    tx: &mut Transaction<'static, Any>,
    token: &str,
    family_id: &str,
    now: i64,
    expires: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, issued_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash(token))
    .bind(family_id)
    .bind(now)
    .bind(expires)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_cleaned() {
        assert_eq!(clean_device_name("  my phone\n"), "my phone");
        assert_eq!(clean_device_name("\u{7}"), "unnamed device");
        assert_eq!(clean_device_name(&"x".repeat(500)).len(), 100);
    }
}
