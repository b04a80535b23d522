//! Joining a machine to the paddock. An operator creates a join token on the gateway
//! (`POST /v1/nodes/tokens`, shown once, stored only as a hash); the new machine runs
//! `paddock-node join`, which presents it to the coordinator (`POST /v1/join`). The
//! coordinator spends one use of the token and issues the node its own NATS
//! credentials (an nkey), which `paddock nodes revoke-credentials` later withdraws from
//! that one machine alone.
//!
//! The nkey seed travels only in [`JoinAccepted`], whose `Debug` hides it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /v1/nodes/tokens`: every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Seconds the token may be used for (default one hour, at most seven days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// How many machines may join with it (default 1, at most 100).
    #[serde(default)]
    pub uses: Option<u32>,
    /// The pool a node joining with it takes jobs from (default `default`).
    #[serde(default)]
    pub pool: Option<String>,
    /// Labels a node joining with it carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The answer to `POST /v1/nodes/tokens`: the only time the token is shown.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinTokenCreated {
    /// The token's public id (for listing and revoking).
    pub id: String,
    /// The secret to give `paddock-node join --token`.
    pub token: String,
    pub expires_at_ms: i64,
    pub uses: u32,
}

impl std::fmt::Debug for JoinTokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokenCreated")
            .field("id", &self.id)
            .field("token", &"<hidden>")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("uses", &self.uses)
            .finish()
    }
}

/// A join token in `GET /v1/nodes/tokens` (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinTokenView {
    pub id: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub uses: u32,
    pub uses_left: u32,
    pub pool: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    /// The node that joined with it last.
    pub last_used_by: Option<String>,
}

/// `POST /v1/join` (to the coordinator).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    /// The name the node asks for: unique in the paddock, a subject token.
    pub name: String,
    /// The node agent's version, for the coordinator's log.
    #[serde(default)]
    pub version: Option<String>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token", &"<hidden>")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

/// The coordinator's answer to a join: what the node's config needs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinAccepted {
    pub name: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    /// The NATS URL(s) nodes connect to, comma separated.
    pub nats_url: String,
    /// The node's own nkey seed (`SU…`): its NATS credential. Shown only here.
    pub nkey_seed: String,
    /// Its public key (`U…`), as the coordinator records it.
    pub public_key: String,
    /// The NATS servers' CA certificate (PEM), when they use TLS with a private CA.
    #[serde(default)]
    pub nats_ca_certificate: Option<String>,
    /// Require TLS to NATS.
    #[serde(default)]
    pub nats_tls_required: bool,
    /// Replicas of the streams (the node checks the streams with the same settings).
    pub stream_replicas: usize,
}

impl std::fmt::Debug for JoinAccepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinAccepted")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("labels", &self.labels)
            .field("nats_url", &self.nats_url)
            .field("nkey_seed", &"<hidden>")
            .field("public_key", &self.public_key)
            .field("nats_tls_required", &self.nats_tls_required)
            .field("stream_replicas", &self.stream_replicas)
            .finish()
    }
}

/// A node's NATS credential in `GET /v1/nodes/credentials` (the public key only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeCredentialView {
    pub node: String,
    pub public_key: String,
    /// The join token it was issued for.
    pub token_id: Option<String>,
    pub issued_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub revoked_by: Option<String>,
}

/// The answer to `POST /v1/nodes/{name}/revoke-credentials`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialsRevoked {
    pub node: String,
    /// Credentials withdrawn by this call (0: the node had none in force).
    pub revoked: u64,
}

/// Stable codes of a refused join (the coordinator's error body uses the gateway's
/// `{"error": {"code", "message"}}` shape).
pub mod refusal {
    /// No such token (or not a token at all): 401.
    pub const INVALID: &str = "join_token_invalid";
    /// The token's expiry has passed: 410.
    pub const EXPIRED: &str = "join_token_expired";
    /// Every use of the token is spent: 410.
    pub const USED: &str = "join_token_used";
    /// An operator revoked the token: 410.
    pub const REVOKED: &str = "join_token_revoked";
    /// A node of that name holds credentials in force: 409.
    pub const NODE_EXISTS: &str = "node_exists";
}
