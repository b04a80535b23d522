//! Device authorization grants (RFC 8628), for the CLI on a machine without a browser
//! and for other screens: the device asks for a grant and shows a short user code; a
//! user who is signed in elsewhere approves or denies that code; the device polls
//! with its secret device code until it gets an answer, and on approval is signed in
//! as that user (the gateway starts a session for it).
//!
//! The device code is a 256-bit secret stored as its SHA-256 hash. The user code is 8
//! letters from a 20-consonant alphabet (RFC 8628 §6.1: no vowels, so no words; about
//! 2^34.6 codes), shown as `BCDF-GHJK`, accepted with or without the dash and in any
//! case. A grant lives a few minutes, is decided once and yields tokens once.

use crate::secret::{new_token, random_bytes, token_hash};
use crate::{Accounts, AccountsError, User, column, millis, now_ms};
use std::time::Duration;

const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
const DEVICE_CODE_PREFIX: &str = "pdd_";
/// How much a poll that came too early raises the interval (RFC 8628 §3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// A new grant, as the device sees it.
#[derive(Clone)]
pub struct DeviceGrant {
    pub device_code: String,
    /// `XXXX-XXXX`.
    pub user_code: String,
    pub expires_at_ms: i64,
    pub interval: Duration,
}

impl std::fmt::Debug for DeviceGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceGrant")
            .field("device_code", &"<redacted>")
            .field("user_code", &self.user_code)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// What came of a user's decision on a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantDecision {
    Decided,
    /// No pending grant has this code (unknown, expired or decided already).
    NotPending,
}

/// What a poll learns.
#[derive(Clone, Debug, PartialEq)]
pub enum GrantPoll {
    Pending,
    /// Polled sooner than the interval allows; the interval is now longer.
    SlowDown,
    Denied,
    Expired,
    /// Approved by this user; this poll is the one that gets tokens.
    Approved {
        user: User,
        client_name: String,
    },
    /// No such device code, or its tokens were already handed out.
    Unknown,
}

fn new_user_code() -> Result<String, AccountsError> {
    // 20 divides 240, so bytes below 240 map onto the alphabet without bias.
    let mut code = String::with_capacity(9);
    while code.len() < 9 {
        for byte in random_bytes::<16>()? {
            if code.len() == 9 {
                break;
            }
            if byte < 240 {
                if code.len() == 4 {
                    code.push('-');
                }
                code.push(char::from(USER_CODE_ALPHABET[usize::from(byte % 20)]));
            }
        }
    }
    Ok(code)
}

/// The stored form of a user code: upper case without separators.
pub fn normalise_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl Accounts {
    /// Starts a grant for a device that calls itself `client_name`.
    pub async fn start_device_grant(
        &self,
        client_name: &str,
        address: Option<&str>,
        lifetime: Duration,
        interval: Duration,
    ) -> Result<DeviceGrant, AccountsError> {
        let device_code = new_token(DEVICE_CODE_PREFIX)?;
        let now = now_ms();
        let expires_at_ms = now.saturating_add(millis(lifetime));
        let client_name: String = client_name
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        // A clash of user codes among live grants is unlikely; try a few.
        for _ in 0..5 {
            let user_code = new_user_code()?;
            let inserted = sqlx::query(
                "INSERT INTO device_grants (device_code_hash, user_code, client_name, address, \
                 created_at_ms, expires_at_ms, interval_ms, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT DO NOTHING",
            )
            .persistent(false)
            .bind(token_hash(&device_code))
            .bind(normalise_user_code(&user_code))
            .bind(&client_name)
            .bind(address.map(str::to_string))
            .bind(now)
            .bind(expires_at_ms)
            .bind(millis(interval))
            .execute(&self.pool)
            .await
            .map_err(self.failed("start_device_grant"))?;
            if inserted.rows_affected() == 1 {
                return Ok(DeviceGrant {
                    device_code,
                    user_code,
                    expires_at_ms,
                    interval,
                });
            }
        }
        Err(AccountsError::Crypto(
            "could not draw an unused user code".into(),
        ))
    }

    /// The client name of the pending grant with `user_code`, so the approving user
    /// sees what they approve.
    pub async fn pending_grant_client(
        &self,
        user_code: &str,
    ) -> Result<Option<String>, AccountsError> {
        sqlx::query_scalar(
            "SELECT client_name FROM device_grants \
             WHERE user_code = $1 AND status = 'pending' AND expires_at_ms > $2",
        )
        .bind(normalise_user_code(user_code))
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed("pending_grant_client"))
    }

    /// `user` approves or denies the pending grant with `user_code`.
    pub async fn decide_device_grant(
        &self,
        user_code: &str,
        user: &User,
        approve: bool,
    ) -> Result<GrantDecision, AccountsError> {
        let now = now_ms();
        let status = if approve { "approved" } else { "denied" };
        let updated = sqlx::query(
            "UPDATE device_grants SET status = $1, user_id = $2, decided_at_ms = $3 \
             WHERE user_code = $4 AND status = 'pending' AND expires_at_ms > $3",
        )
        .bind(status)
        .bind(&user.id)
        .bind(now)
        .bind(normalise_user_code(user_code))
        .execute(&self.pool)
        .await
        .map_err(self.failed("decide_device_grant"))?;
        Ok(if updated.rows_affected() == 1 {
            GrantDecision::Decided
        } else {
            GrantDecision::NotPending
        })
    }

    /// The device polls with its device code.
    pub async fn poll_device_grant(&self, device_code: &str) -> Result<GrantPoll, AccountsError> {
        let failed = self.failed("poll_device_grant");
        let hash = token_hash(device_code);
        let now = now_ms();
        let mut tx = self.begin_write("poll_device_grant").await?;
        let row = sqlx::query(
            "SELECT status, expires_at_ms, interval_ms, last_polled_at_ms, user_id, client_name \
             FROM device_grants WHERE device_code_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&failed)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(&failed)?;
            return Ok(GrantPoll::Unknown);
        };
        let what = "device grant";
        let status: String = column(&row, what, "status")?;
        let expires_at_ms: i64 = column(&row, what, "expires_at_ms")?;
        let interval_ms: i64 = column(&row, what, "interval_ms")?;
        let last_polled: Option<i64> = column(&row, what, "last_polled_at_ms")?;
        let user_id: Option<String> = column(&row, what, "user_id")?;
        let client_name: String = column(&row, what, "client_name")?;
        let too_soon = last_polled.is_some_and(|last| now < last.saturating_add(interval_ms));
        let (poll, new_interval) = match status.as_str() {
            "consumed" => (GrantPoll::Unknown, None),
            _ if expires_at_ms <= now => (GrantPoll::Expired, None),
            "denied" => (GrantPoll::Denied, None),
            "pending" if too_soon => (
                GrantPoll::SlowDown,
                Some(interval_ms.saturating_add(millis(SLOW_DOWN_STEP))),
            ),
            "pending" => (GrantPoll::Pending, None),
            "approved" => {
                let consumed = sqlx::query(
                    "UPDATE device_grants SET status = 'consumed' \
                     WHERE device_code_hash = $1 AND status = 'approved'",
                )
                .bind(&hash)
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
                match (consumed.rows_affected(), user_id) {
                    (1, Some(user_id)) => {
                        tx.commit().await.map_err(&failed)?;
                        let user = self
                            .user_by_id(&user_id)
                            .await?
                            .ok_or(AccountsError::NoSuchUser(user_id))?;
                        if user.disabled {
                            return Ok(GrantPoll::Denied);
                        }
                        return Ok(GrantPoll::Approved { user, client_name });
                    }
                    _ => (GrantPoll::Unknown, None),
                }
            }
            other => {
                return Err(AccountsError::Corrupt {
                    what,
                    detail: format!("status {other:?}"),
                });
            }
        };
        sqlx::query(
            "UPDATE device_grants SET last_polled_at_ms = $1, interval_ms = COALESCE($2, interval_ms) \
             WHERE device_code_hash = $3",
        )
        .persistent(false)
        .bind(now)
        .bind(new_interval)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        Ok(poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_two_groups_of_four_consonants() {
        for _ in 0..100 {
            let code = new_user_code().expect("code");
            assert_eq!(code.len(), 9, "{code}");
            assert_eq!(code.as_bytes()[4], b'-');
            assert!(
                code.chars()
                    .filter(|c| *c != '-')
                    .all(|c| USER_CODE_ALPHABET.contains(&(c as u8)))
            );
        }
        assert_eq!(normalise_user_code(" bcdf-ghjk "), "BCDFGHJK");
    }
}
