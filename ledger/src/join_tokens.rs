//! Join tokens and the NATS credentials issued with them, in the same SQL database as
//! the job ledger (the gateway creates tokens, the coordinator redeems them).
//!
//! A token is 32 random bytes (`pdj_` + base64url), shown once; only its SHA-256 is
//! stored, so the table leaks nothing usable. Redeeming spends one use atomically:
//! one transaction checks the token (known, not revoked, not expired, uses left),
//! decrements `uses_left` only while it is still positive, and records the node's
//! public key, so two machines racing for the last use cannot both win. A node holds
//! at most one credential in force (a partial unique index), so a token cannot be used
//! to take over the name of a node that has one; revoking a node's credentials sets
//! `revoked_at_ms`, and the coordinator withdraws them from NATS.

use crate::{Ledger, LedgerError};
use base64::Engine as _;
use paddock_contract::join::{JoinTokenView, NodeCredentialView};
use ring::rand::SecureRandom as _;
use sqlx::Row as _;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// What every token starts with, so one is recognisable in a paste.
const TOKEN_PREFIX: &str = "pdj_";
/// Longest listing of tokens or credentials.
const MAX_LISTED: i64 = 500;

const TOKEN_COLUMNS: &str = "id, created_by, created_at_ms, expires_at_ms, uses, uses_left, \
     pool, labels, revoked_at_ms, last_used_at_ms, last_used_by";
const CREDENTIAL_COLUMNS: &str =
    "node, public_key, token_id, issued_at_ms, revoked_at_ms, revoked_by";

/// A token to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJoinToken {
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub uses: u32,
    pub pool: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A created token: its id and the secret, which is not stored.
#[derive(Clone, PartialEq)]
pub struct CreatedJoinToken {
    pub id: String,
    pub token: String,
}

impl std::fmt::Debug for CreatedJoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedJoinToken")
            .field("id", &self.id)
            .field("token", &"<hidden>")
            .finish()
    }
}

/// Why a join was refused, or that the database failed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("this join token is not known")]
    Invalid,
    #[error("this join token expired")]
    Expired,
    #[error("every use of this join token is spent")]
    Used,
    #[error("this join token was revoked")]
    Revoked,
    #[error(
        "node {0} already holds NATS credentials; revoke them first (paddock nodes revoke-credentials {0})"
    )]
    NodeExists(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The stored form of a token: hex SHA-256 of the whole token text.
pub fn hash_join_token(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], LedgerError> {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| LedgerError::NoRandomness)?;
    Ok(bytes)
}

impl Ledger {
    /// Creates a token and returns its secret (the only time it exists in clear).
    pub async fn create_join_token(
        &self,
        new: &NewJoinToken,
    ) -> Result<CreatedJoinToken, LedgerError> {
        let id_bytes: [u8; 8] = random_bytes()?;
        let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let secret: [u8; 32] = random_bytes()?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let labels = serde_json::to_string(&new.labels).unwrap_or_else(|_| "{}".into());
        sqlx::query(
            "INSERT INTO node_join_tokens (id, token_hash, created_by, created_at_ms, \
             expires_at_ms, uses, uses_left, pool, labels) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.clone())
        .bind(hash_join_token(&token))
        .bind(new.created_by.clone())
        .bind(new.created_at_ms)
        .bind(new.expires_at_ms)
        .bind(i64::from(new.uses))
        .bind(i64::from(new.uses))
        .bind(new.pool.clone())
        .bind(labels)
        .execute(&self.pool)
        .await
        .map_err(self.failed("create_join_token"))?;
        Ok(CreatedJoinToken { id, token })
    }

    /// Every token, newest first (at most 500), without secrets.
    pub async fn join_tokens(&self) -> Result<Vec<JoinTokenView>, LedgerError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM node_join_tokens ORDER BY created_at_ms DESC, id LIMIT $1"
        )))
        .bind(MAX_LISTED)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("join_tokens"))?;
        rows.iter().map(decode_token).collect()
    }

    /// Revokes a token: no machine may join with it afterwards. False when no token
    /// has that id, or it was revoked already.
    pub async fn revoke_join_token(&self, id: &str, now_ms: i64) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE node_join_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(self.failed("revoke_join_token"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Spends one use of `token` for node `node`, recording `public_key` as its NATS
    /// credential, in one transaction. Returns the token as it was (its pool and
    /// labels preset the node's).
    pub async fn redeem_join_token(
        &self,
        token: &str,
        node: &str,
        public_key: &str,
        now_ms: i64,
    ) -> Result<JoinTokenView, RedeemError> {
        let failed = self.failed("redeem_join_token");
        let mut tx = self.target.begin_write(&self.pool).await.map_err(&failed)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM node_join_tokens WHERE token_hash = $1"
        )))
        .bind(hash_join_token(token))
        .fetch_optional(&mut *tx)
        .await
        .map_err(&failed)?;
        let Some(row) = row else {
            return Err(RedeemError::Invalid);
        };
        let found = decode_token(&row)?;
        if found.revoked_at_ms.is_some() {
            return Err(RedeemError::Revoked);
        }
        if found.expires_at_ms <= now_ms {
            return Err(RedeemError::Expired);
        }
        if found.uses_left == 0 {
            return Err(RedeemError::Used);
        }
        // Compare-and-set: of two redeemers of the last use, one matches no row.
        let spent = sqlx::query(
            "UPDATE node_join_tokens SET uses_left = uses_left - 1, last_used_at_ms = $1, \
             last_used_by = $2 WHERE id = $3 AND uses_left > 0 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(node.to_string())
        .bind(found.id.clone())
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        if spent.rows_affected() != 1 {
            return Err(RedeemError::Used);
        }
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT public_key FROM node_credentials WHERE node = $1 AND revoked_at_ms IS NULL",
        )
        .bind(node.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(&failed)?;
        if holder.is_some() {
            return Err(RedeemError::NodeExists(node.to_string()));
        }
        let inserted = sqlx::query(
            "INSERT INTO node_credentials (public_key, node, token_id, issued_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(public_key.to_string())
        .bind(node.to_string())
        .bind(found.id.clone())
        .bind(now_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(error)
                if error
                    .as_database_error()
                    .is_some_and(|e| e.is_unique_violation()) =>
            {
                return Err(RedeemError::NodeExists(node.to_string()));
            }
            Err(error) => return Err(failed(error).into()),
        }
        tx.commit().await.map_err(&failed)?;
        Ok(found)
    }

    /// Undoes a redemption whose credentials could not be put in force: forgets the
    /// credential and gives the token its use back.
    pub async fn undo_join(&self, token_id: &str, public_key: &str) -> Result<(), LedgerError> {
        let failed = self.failed("undo_join");
        let mut tx = self.target.begin_write(&self.pool).await.map_err(&failed)?;
        let removed = sqlx::query("DELETE FROM node_credentials WHERE public_key = $1")
            .bind(public_key.to_string())
            .execute(&mut *tx)
            .await
            .map_err(&failed)?;
        if removed.rows_affected() == 1 {
            sqlx::query("UPDATE node_join_tokens SET uses_left = uses_left + 1 WHERE id = $1")
                .bind(token_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
        }
        tx.commit().await.map_err(&failed)?;
        Ok(())
    }

    /// Nodes' NATS credentials, oldest first: only those in force, or all.
    pub async fn node_credentials(
        &self,
        in_force_only: bool,
    ) -> Result<Vec<NodeCredentialView>, LedgerError> {
        let filter = if in_force_only {
            " WHERE revoked_at_ms IS NULL"
        } else {
            ""
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM node_credentials{filter} \
             ORDER BY issued_at_ms, public_key LIMIT $1"
        )))
        .bind(MAX_LISTED)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("node_credentials"))?;
        rows.iter().map(decode_credential).collect()
    }

    /// Revokes the credentials in force of `node`; returns how many.
    pub async fn revoke_node_credentials(
        &self,
        node: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<u64, LedgerError> {
        let done = sqlx::query(
            "UPDATE node_credentials SET revoked_at_ms = $1, revoked_by = $2 \
             WHERE node = $3 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(by.to_string())
        .bind(node.to_string())
        .execute(&self.pool)
        .await
        .map_err(self.failed("revoke_node_credentials"))?;
        Ok(done.rows_affected())
    }
}

fn corrupt(what: &str, column: &str, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt {
        job: what.to_string(),
        detail: format!("column {column}: {detail}"),
    }
}

fn column<'r, T>(row: &'r AnyRow, what: &str, name: &'static str) -> Result<T, LedgerError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(|e| corrupt(what, name, e))
}

fn count(what: &str, name: &'static str, value: i64) -> Result<u32, LedgerError> {
    u32::try_from(value.max(0)).map_err(|e| corrupt(what, name, e))
}

fn decode_token(row: &AnyRow) -> Result<JoinTokenView, LedgerError> {
    let what = "join token";
    let labels: String = column(row, what, "labels")?;
    Ok(JoinTokenView {
        id: column(row, what, "id")?,
        created_by: column(row, what, "created_by")?,
        created_at_ms: column(row, what, "created_at_ms")?,
        expires_at_ms: column(row, what, "expires_at_ms")?,
        uses: count(what, "uses", column(row, what, "uses")?)?,
        uses_left: count(what, "uses_left", column(row, what, "uses_left")?)?,
        pool: column(row, what, "pool")?,
        labels: serde_json::from_str(&labels).map_err(|e| corrupt(what, "labels", e))?,
        revoked_at_ms: column(row, what, "revoked_at_ms")?,
        last_used_at_ms: column(row, what, "last_used_at_ms")?,
        last_used_by: column(row, what, "last_used_by")?,
    })
}

fn decode_credential(row: &AnyRow) -> Result<NodeCredentialView, LedgerError> {
    let what = "node credential";
    Ok(NodeCredentialView {
        node: column(row, what, "node")?,
        public_key: column(row, what, "public_key")?,
        token_id: column(row, what, "token_id")?,
        issued_at_ms: column(row, what, "issued_at_ms")?,
        revoked_at_ms: column(row, what, "revoked_at_ms")?,
        revoked_by: column(row, what, "revoked_by")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hash_is_hex_sha256_and_ignores_surrounding_space() {
        let hash = hash_join_token("pdj_abc");
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash, hash_join_token(" pdj_abc\n"));
        assert_ne!(hash, hash_join_token("pdj_abd"));
    }
}
