//! `paddock nodes token …` and the nodes' NATS credentials, for operators (the
//! `nodes:admin` scope): create a join token for new machines (`paddock-node join
//! --token`), list and revoke tokens, list the credentials nodes were issued, and
//! revoke one node's credentials so that machine alone is cut off from NATS.

use crate::login::Api;
use paddock_contract::join::{
    CreateJoinToken, CredentialsRevoked, JoinTokenCreated, JoinTokenView, NodeCredentialView,
};
use reqwest::Method;
use std::collections::BTreeMap;

/// The `paddock nodes` subcommands this module serves.
#[derive(clap::Subcommand, Debug)]
pub enum CredentialAction {
    /// Join tokens for new machines (`paddock-node join --token`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// List the NATS credentials issued to nodes (public keys, in force or revoked).
    Credentials,
    /// Withdraw a node's NATS credentials: that machine alone loses NATS.
    RevokeCredentials { name: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenAction {
    /// Create a token (shown once).
    Create {
        /// How long it may be used: 90s, 30m, 1h, 7d (at most 7d).
        #[arg(long, default_value = "1h", value_parser = parse_duration_secs)]
        expires: u64,
        /// How many machines may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// The pool nodes joining with it take jobs from.
        #[arg(long)]
        pool: Option<String>,
        /// A label nodes joining with it carry: key=value (repeat).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 1h"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?}: expected key=value")),
    }
}

fn when(at_ms: Option<i64>) -> String {
    let Some(at) = at_ms else {
        return "-".into();
    };
    let now = paddock_contract::now_unix_ms();
    let secs = (at - now) / 1000;
    if secs >= 0 {
        format!("in {}", span(secs))
    } else {
        format!("{} ago", span(-secs))
    }
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Runs one subcommand; returns the exit code.
pub async fn run(url: &str, token: &str, action: CredentialAction) -> anyhow::Result<i32> {
    let api = Api::new(url, Some(token))?;
    match action {
        CredentialAction::Token {
            action:
                TokenAction::Create {
                    expires,
                    uses,
                    pool,
                    labels,
                },
        } => {
            let body = CreateJoinToken {
                expires_in_secs: Some(expires),
                uses: Some(uses),
                pool,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            };
            let created: JoinTokenCreated = api
                .call(
                    Method::POST,
                    "/v1/nodes/tokens",
                    Some(&serde_json::to_value(&body)?),
                )
                .await?;
            println!("{}", created.token);
            eprintln!(
                "join token {} for {} machine(s), expires {}; shown once. On the new machine:\n  \
                 paddock-node join --coordinator https://COORDINATOR:7443 --token <the token above>",
                created.id,
                created.uses,
                when(Some(created.expires_at_ms))
            );
        }
        CredentialAction::Token {
            action: TokenAction::List,
        } => {
            let tokens: Vec<JoinTokenView> =
                api.call(Method::GET, "/v1/nodes/tokens", None).await?;
            println!(
                "{:<18} {:<9} {:>4} {:>4}  {:<10} {:<12} {:<14} CREATED BY",
                "ID", "STATE", "USES", "LEFT", "EXPIRES", "POOL", "LAST USED BY"
            );
            let now = paddock_contract::now_unix_ms();
            for token in tokens {
                let state = if token.revoked_at_ms.is_some() {
                    "revoked"
                } else if token.expires_at_ms <= now {
                    "expired"
                } else if token.uses_left == 0 {
                    "used"
                } else {
                    "usable"
                };
                println!(
                    "{:<18} {:<9} {:>4} {:>4}  {:<10} {:<12} {:<14} {}",
                    token.id,
                    state,
                    token.uses,
                    token.uses_left,
                    when(Some(token.expires_at_ms)),
                    token.pool.unwrap_or_else(|| "default".into()),
                    token.last_used_by.unwrap_or_else(|| "-".into()),
                    token.created_by
                );
            }
        }
        CredentialAction::Token {
            action: TokenAction::Revoke { id },
        } => {
            let path = format!("/v1/nodes/tokens/{id}");
            let _: serde_json::Value = api
                .call(Method::DELETE, &path, None)
                .await
                .or_else(empty_answer)?;
            println!("join token {id} revoked");
        }
        CredentialAction::Credentials => {
            let credentials: Vec<NodeCredentialView> =
                api.call(Method::GET, "/v1/nodes/credentials", None).await?;
            println!(
                "{:<16} {:<8} {:<12} {:<12} PUBLIC KEY",
                "NODE", "STATE", "ISSUED", "REVOKED"
            );
            for credential in credentials {
                println!(
                    "{:<16} {:<8} {:<12} {:<12} {}",
                    credential.node,
                    if credential.revoked_at_ms.is_some() {
                        "revoked"
                    } else {
                        "in force"
                    },
                    when(Some(credential.issued_at_ms)),
                    when(credential.revoked_at_ms),
                    credential.public_key
                );
            }
        }
        CredentialAction::RevokeCredentials { name } => {
            let path = format!("/v1/nodes/{name}/revoke-credentials");
            let revoked: CredentialsRevoked = api.call(Method::POST, &path, None).await?;
            if revoked.revoked == 0 {
                println!("{name} holds no NATS credentials in force");
            } else {
                println!(
                    "{name}: NATS credentials revoked; the coordinator cuts the machine off within its reconcile interval"
                );
            }
        }
    }
    Ok(0)
}

/// A 204 has no JSON body: that is success.
fn empty_answer(error: anyhow::Error) -> anyhow::Result<serde_json::Value> {
    if error
        .to_string()
        .contains("unexpected answer from the gateway")
    {
        Ok(serde_json::Value::Null)
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_labels_parse() {
        assert_eq!(parse_duration_secs("90s"), Ok(90));
        assert_eq!(parse_duration_secs("1h"), Ok(3600));
        assert_eq!(parse_duration_secs("7d"), Ok(604_800));
        assert_eq!(parse_duration_secs("45"), Ok(45));
        assert!(parse_duration_secs("1w").is_err());
        assert_eq!(
            parse_label("xcode=16.2"),
            Ok(("xcode".to_string(), "16.2".to_string()))
        );
        assert!(parse_label("=x").is_err());
    }
}
