//! Users: create, read, change scopes, password and disabled state, check a password,
//! and the optional TOTP second factor (RFC 6238 through `totp-rs`: SHA-1, 6 digits,
//! 30 s steps, one step of clock skew either way). A TOTP code is accepted once: the
//! step it matched is stored, and a code for that step or an earlier one is refused
//! (RFC 6238 §5.2), with a conditional update so two logins racing with one code
//! cannot both pass.
//!
//! Enrolment is two steps: [`Accounts::begin_totp`] stores a pending secret and
//! returns it; only [`Accounts::confirm_totp`] with a code from the user's app makes it
//! required at login, so a user cannot lock themselves out by a mistyped setup.

use crate::password::Passwords;
use crate::secret::random_bytes;
use crate::{Accounts, AccountsError, ScopeSet, column, now_ms};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use totp_rs::{Algorithm, Builder, Secret, Totp};

const COLUMNS: &str = "id, name, password_hash, scopes, totp_secret, totp_pending_secret, \
                       totp_last_step, disabled_at_ms, created_at_ms, updated_at_ms";

/// A user as the API shows it: never the password hash or the TOTP secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub scopes: ScopeSet,
    pub totp_enabled: bool,
    pub disabled: bool,
    pub created_at_ms: i64,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(crate::Scope::UsersAdmin)
    }
}

/// A user row with what only this crate sees.
struct UserRow {
    user: User,
    password_hash: String,
    totp_secret: Option<String>,
    totp_pending_secret: Option<String>,
    totp_last_step: Option<i64>,
}

impl UserRow {
    fn decode(row: &AnyRow) -> Result<UserRow, AccountsError> {
        let what = "user";
        let scopes: String = column(row, what, "scopes")?;
        let scopes = ScopeSet::parse_list(&scopes).map_err(|e| AccountsError::Corrupt {
            what,
            detail: e.to_string(),
        })?;
        let totp_secret: Option<String> = column(row, what, "totp_secret")?;
        let disabled_at_ms: Option<i64> = column(row, what, "disabled_at_ms")?;
        Ok(UserRow {
            user: User {
                id: column(row, what, "id")?,
                name: column(row, what, "name")?,
                scopes,
                totp_enabled: totp_secret.is_some(),
                disabled: disabled_at_ms.is_some(),
                created_at_ms: column(row, what, "created_at_ms")?,
            },
            password_hash: column(row, what, "password_hash")?,
            totp_secret,
            totp_pending_secret: column(row, what, "totp_pending_secret")?,
            totp_last_step: column(row, what, "totp_last_step")?,
        })
    }
}

/// What came of checking a user's password. Every refusal looks the same to a
/// client; `reason` is for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    Valid(User),
    Refused {
        reason: &'static str,
        user: Option<User>,
    },
}

/// What came of checking a TOTP code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpCheck {
    Valid,
    /// Wrong, malformed or out of the time window.
    Invalid,
    /// Right, but for a step already used: a replay.
    Replayed,
    /// The user has no confirmed TOTP secret.
    NotEnrolled,
}

/// A pending TOTP secret, shown once so the user can add it to an app.
#[derive(Clone, Serialize, Deserialize)]
pub struct TotpEnrolment {
    /// The secret in base32, as apps take it typed.
    pub secret: String,
    /// `otpauth://totp/…`, as apps take it from a QR code.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment(<redacted>)")
    }
}

/// Checks a user name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
/// Lower case only, so that `Ada` and `ada` cannot be two people.
pub fn check_user_name(name: &str) -> Result<(), AccountsError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(AccountsError::invalid(
            "name",
            "must be 1 to 64 of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

fn totp_from_base32(secret: &str) -> Option<Totp> {
    let secret = Secret::try_from_base32(secret).ok()?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .build()
        .ok()
}

/// The step `code` matches at `now_secs`, if any.
fn totp_step(secret: &str, code: &str, now_secs: u64) -> Option<i64> {
    let totp = totp_from_base32(secret)?;
    totp.check(code.trim(), now_secs)
        .and_then(|step| i64::try_from(step).ok())
}

impl Accounts {
    /// Creates a user. Refuses a taken or malformed name, a weak password or no
    /// scopes at all.
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        scopes: &ScopeSet,
    ) -> Result<User, AccountsError> {
        check_user_name(name)?;
        Passwords::check_policy(password)?;
        let hash = self.passwords.hash(password).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO users (id, name, password_hash, scopes, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(hash)
        .bind(scopes.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(self.failed("create_user"))?;
        if inserted.rows_affected() != 1 {
            return Err(AccountsError::UserExists(name.to_string()));
        }
        self.user_by_name(name)
            .await?
            .ok_or_else(|| AccountsError::NoSuchUser(name.to_string()))
    }

    /// Creates `name` with every scope if there is no user at all yet. Returns the
    /// user when this call created it; `None` when users existed (or a concurrent
    /// start created the first one).
    pub async fn create_first_admin(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<User>, AccountsError> {
        if self.user_count().await? > 0 {
            return Ok(None);
        }
        check_user_name(name)?;
        Passwords::check_policy(password)?;
        let hash = self.passwords.hash(password).await?;
        let mut tx = self.begin_write("create_first_admin").await?;
        let failed = self.failed("create_first_admin");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(&failed)?;
        if count > 0 {
            tx.rollback().await.map_err(&failed)?;
            return Ok(None);
        }
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO users (id, name, password_hash, scopes, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(name)
        .bind(hash)
        .bind(ScopeSet::all().to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        if inserted.rows_affected() != 1 {
            return Ok(None);
        }
        self.user_by_name(name).await
    }

    /// Computes the dummy hash that unknown users are checked against, so that even
    /// the first such login takes no longer than any other.
    pub async fn warm_up(&self) {
        self.passwords.verify_dummy("warm-up").await;
    }

    pub async fn user_count(&self) -> Result<i64, AccountsError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(self.failed("user_count"))
    }

    async fn row_where(
        &self,
        condition: &'static str,
        value: &str,
    ) -> Result<Option<UserRow>, AccountsError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE {condition} = $1"
        )))
        .bind(value)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed("read a user"))?;
        row.as_ref().map(UserRow::decode).transpose()
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, AccountsError> {
        Ok(self.row_where("name", name).await?.map(|row| row.user))
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, AccountsError> {
        Ok(self.row_where("id", id).await?.map(|row| row.user))
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, AccountsError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("list_users"))?;
        rows.iter()
            .map(|row| UserRow::decode(row).map(|row| row.user))
            .collect()
    }

    /// Checks `password` for `name`. Takes as long for a user that does not exist.
    pub async fn check_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<PasswordCheck, AccountsError> {
        let row = if check_user_name(name).is_ok() && password.len() <= crate::MAX_PASSWORD_BYTES {
            self.row_where("name", name).await?
        } else {
            None
        };
        let Some(row) = row else {
            self.passwords.verify_dummy(password).await;
            return Ok(PasswordCheck::Refused {
                reason: "unknown user",
                user: None,
            });
        };
        let matches = self.passwords.verify(password, &row.password_hash).await;
        Ok(match (matches, row.user.disabled) {
            (true, false) => PasswordCheck::Valid(row.user),
            (true, true) => PasswordCheck::Refused {
                reason: "user disabled",
                user: Some(row.user),
            },
            (false, _) => PasswordCheck::Refused {
                reason: "wrong password",
                user: Some(row.user),
            },
        })
    }

    /// Replaces the scopes of `name`.
    pub async fn set_scopes(&self, name: &str, scopes: &ScopeSet) -> Result<User, AccountsError> {
        self.update_user(
            name,
            "set_scopes",
            "UPDATE users SET scopes = $1, updated_at_ms = $2 WHERE name = $3",
            scopes.to_string(),
        )
        .await
    }

    /// Sets a new password for `name`. Signed-in devices stay signed in; revoke them
    /// separately if the old password leaked.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<User, AccountsError> {
        Passwords::check_policy(password)?;
        let hash = self.passwords.hash(password).await?;
        self.update_user(
            name,
            "set_password",
            "UPDATE users SET password_hash = $1, updated_at_ms = $2 WHERE name = $3",
            hash,
        )
        .await
    }

    /// Disables or enables `name`. Disabling revokes every device of the user, so
    /// their refresh tokens and access tokens stop working at once.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<User, AccountsError> {
        let failed = self.failed("set_disabled");
        let now = now_ms();
        let mut tx = self.begin_write("set_disabled").await?;
        let user_id: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&failed)?;
        let Some(user_id) = user_id else {
            tx.rollback().await.map_err(&failed)?;
            return Err(AccountsError::NoSuchUser(name.to_string()));
        };
        if disabled {
            sqlx::query(
                "UPDATE users SET disabled_at_ms = $1, updated_at_ms = $1 \
                 WHERE id = $2 AND disabled_at_ms IS NULL",
            )
            .bind(now)
            .bind(&user_id)
            .execute(&mut *tx)
            .await
            .map_err(&failed)?;
            crate::sessions::revoke_user_devices(&mut tx, &user_id, now, "user disabled")
                .await
                .map_err(&failed)?;
        } else {
            sqlx::query("UPDATE users SET disabled_at_ms = NULL, updated_at_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(&user_id)
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
        }
        tx.commit().await.map_err(&failed)?;
        self.user_by_name(name)
            .await?
            .ok_or_else(|| AccountsError::NoSuchUser(name.to_string()))
    }

    async fn update_user(
        &self,
        name: &str,
        operation: &'static str,
        sql: &'static str,
        value: String,
    ) -> Result<User, AccountsError> {
        let updated = sqlx::query(sql)
            .bind(value)
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(self.failed(operation))?;
        if updated.rows_affected() != 1 {
            return Err(AccountsError::NoSuchUser(name.to_string()));
        }
        self.user_by_name(name)
            .await?
            .ok_or_else(|| AccountsError::NoSuchUser(name.to_string()))
    }

    /// Starts TOTP enrolment: a new secret, pending until confirmed. Replaces an
    /// earlier pending one; an enabled factor stays in force until the new one is
    /// confirmed.
    pub async fn begin_totp(&self, user_id: &str) -> Result<TotpEnrolment, AccountsError> {
        let user = self
            .user_by_id(user_id)
            .await?
            .ok_or_else(|| AccountsError::NoSuchUser(user_id.to_string()))?;
        let secret = Secret::from(random_bytes::<20>()?.to_vec()).to_base32();
        let updated = sqlx::query(
            "UPDATE users SET totp_pending_secret = $1, updated_at_ms = $2 WHERE id = $3",
        )
        .bind(&secret)
        .bind(now_ms())
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(self.failed("begin_totp"))?;
        if updated.rows_affected() != 1 {
            return Err(AccountsError::NoSuchUser(user_id.to_string()));
        }
        let issuer = &self.options.totp_issuer;
        let label_issuer: String = issuer
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let otpauth_uri = format!(
            "otpauth://totp/{label_issuer}:{name}?secret={secret}&issuer={label_issuer}&algorithm=SHA1&digits=6&period=30",
            name = user.name
        );
        Ok(TotpEnrolment {
            secret,
            otpauth_uri,
        })
    }

    /// Confirms enrolment with a code from the pending secret; from then on the
    /// user's logins need a code. False when the code is wrong or nothing is pending.
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        code: &str,
        now_secs: u64,
    ) -> Result<bool, AccountsError> {
        let Some(row) = self.row_where("id", user_id).await? else {
            return Err(AccountsError::NoSuchUser(user_id.to_string()));
        };
        let Some(pending) = row.totp_pending_secret else {
            return Ok(false);
        };
        let Some(step) = totp_step(&pending, code, now_secs) else {
            return Ok(false);
        };
        let updated = sqlx::query(
            "UPDATE users SET totp_secret = totp_pending_secret, totp_pending_secret = NULL, \
             totp_last_step = $1, updated_at_ms = $2 WHERE id = $3 AND totp_pending_secret = $4",
        )
        .bind(step)
        .bind(now_ms())
        .bind(user_id)
        .bind(&pending)
        .execute(&self.pool)
        .await
        .map_err(self.failed("confirm_totp"))?;
        Ok(updated.rows_affected() == 1)
    }

    /// Checks a login's TOTP code, accepting each step once.
    pub async fn check_totp(
        &self,
        user_id: &str,
        code: &str,
        now_secs: u64,
    ) -> Result<TotpCheck, AccountsError> {
        let Some(row) = self.row_where("id", user_id).await? else {
            return Ok(TotpCheck::NotEnrolled);
        };
        let Some(secret) = row.totp_secret else {
            return Ok(TotpCheck::NotEnrolled);
        };
        let Some(step) = totp_step(&secret, code, now_secs) else {
            return Ok(TotpCheck::Invalid);
        };
        if row.totp_last_step.is_some_and(|last| step <= last) {
            return Ok(TotpCheck::Replayed);
        }
        let updated = sqlx::query(
            "UPDATE users SET totp_last_step = $1 \
             WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(self.failed("check_totp"))?;
        Ok(if updated.rows_affected() == 1 {
            TotpCheck::Valid
        } else {
            TotpCheck::Replayed
        })
    }

    /// Removes the second factor (enabled and pending) of `name`.
    pub async fn disable_totp(&self, name: &str) -> Result<User, AccountsError> {
        let updated = sqlx::query(
            "UPDATE users SET totp_secret = NULL, totp_pending_secret = NULL, \
             totp_last_step = NULL, updated_at_ms = $1 WHERE name = $2",
        )
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(self.failed("disable_totp"))?;
        if updated.rows_affected() != 1 {
            return Err(AccountsError::NoSuchUser(name.to_string()));
        }
        self.user_by_name(name)
            .await?
            .ok_or_else(|| AccountsError::NoSuchUser(name.to_string()))
    }
}

/// The code an authenticator app shows for `secret` (base32) at `now_secs`. For
/// tests and for clients that hold a secret themselves.
pub fn totp_code(secret: &str, now_secs: u64) -> Option<String> {
    totp_from_base32(secret).map(|totp| totp.generate(now_secs).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain_lower_case() {
        for good in ["ada", "a", "bob.smith", "ci-bot_2", "0day"] {
            assert!(check_user_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Ada",
            "-ada",
            ".x",
            "a b",
            "ада",
            &"a".repeat(65),
            "a\n",
        ] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_its_neighbours_only() {
        let secret = Secret::from(vec![7u8; 20]).to_base32();
        let now = 1_700_000_000;
        let code = totp_code(&secret, now).expect("code");
        assert_eq!(totp_step(&secret, &code, now), Some((now / 30) as i64));
        assert!(
            totp_step(&secret, &code, now + 30).is_some(),
            "one step of skew"
        );
        assert!(totp_step(&secret, &code, now + 90).is_none());
        assert!(totp_step(&secret, "12345", now).is_none());
        assert!(totp_step(&secret, "abcdef", now).is_none());
    }
}
