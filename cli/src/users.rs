//! `paddock users …`: managing users and reading the audit log, for admins (the
//! `users:admin` scope), over `/v1/users` and `/v1/audit`.

use crate::login::{Api, read_password};
use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum UsersAction {
    /// List users.
    List,
    /// Add a user (asks for the password unless given a file or stdin).
    Add {
        name: String,
        /// Scopes (repeat, or comma separated); default jobs:read, jobs:submit,
        /// tools:approve. Known: jobs:read jobs:submit tools:approve nodes:admin
        /// users:admin.
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace a user's scopes (effective at their next refresh, within 15 minutes).
    Scopes {
        name: String,
        #[arg(required = true, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Set a user's password.
    Password {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: every sign-in of theirs ends at once.
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
    /// Remove a user's second factor (they lost their authenticator).
    ResetTotp { name: String },
    /// Read the audit log, newest first.
    Audit {
        #[arg(long)]
        actor: Option<String>,
        /// An action, or a prefix ending in '.' (auth. for every sign-in event).
        #[arg(long)]
        action: Option<String>,
        /// success, denied or failure.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn print_user(user: &Value) {
    let scopes: Vec<&str> = user["scopes"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "{:<24} {:<8} {:<5} {}",
        user["name"].as_str().unwrap_or("?"),
        if user["disabled"] == true {
            "disabled"
        } else {
            "active"
        },
        if user["totp_enabled"] == true {
            "totp"
        } else {
            "-"
        },
        scopes.join(" ")
    );
}

async fn patch(api: &Api, name: &str, change: Value) -> anyhow::Result<i32> {
    let user: Value = api
        .call(Method::PATCH, &format!("/v1/users/{name}"), Some(&change))
        .await
        .with_context(|| format!("changing {name}"))?;
    print_user(&user);
    Ok(0)
}

pub async fn run(url: &str, token: &str, action: UsersAction) -> anyhow::Result<i32> {
    let api = Api::new(url, Some(token))?;
    match action {
        UsersAction::List => {
            let list: Value = api.call(Method::GET, "/v1/users", None).await?;
            println!("{:<24} {:<8} {:<5} SCOPES", "USER", "STATE", "2FA");
            for user in list["users"].as_array().into_iter().flatten() {
                print_user(user);
            }
            Ok(0)
        }
        UsersAction::Add {
            name,
            scopes,
            password_file,
            password_stdin,
        } => {
            let password = read_password(
                &format!("Password for {name}: "),
                password_file.as_deref(),
                password_stdin,
            )?;
            let mut body = json!({ "name": name, "password": password });
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            let user: Value = api
                .call(Method::POST, "/v1/users", Some(&body))
                .await
                .with_context(|| format!("adding {name}"))?;
            print_user(&user);
            Ok(0)
        }
        UsersAction::Scopes { name, scopes } => {
            patch(&api, &name, json!({ "scopes": scopes })).await
        }
        UsersAction::Password {
            name,
            password_file,
            password_stdin,
        } => {
            let password = read_password(
                &format!("New password for {name}: "),
                password_file.as_deref(),
                password_stdin,
            )?;
            patch(&api, &name, json!({ "password": password })).await
        }
        UsersAction::Disable { name } => patch(&api, &name, json!({ "disabled": true })).await,
        UsersAction::Enable { name } => patch(&api, &name, json!({ "disabled": false })).await,
        UsersAction::ResetTotp { name } => patch(&api, &name, json!({ "reset_totp": true })).await,
        UsersAction::Audit {
            actor,
            action,
            outcome,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(actor.map(|a| ("actor", a)));
            query.extend(action.map(|a| ("action", a)));
            query.extend(outcome.map(|o| ("outcome", o)));
            let encoded: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
            let page: Value = api
                .call(
                    Method::GET,
                    &format!("/v1/audit?{}", encoded.join("&")),
                    None,
                )
                .await?;
            for entry in page["entries"].as_array().into_iter().flatten() {
                let text = |k: &str| entry[k].as_str().unwrap_or("-").to_string();
                println!(
                    "{}  {:<8} {:<20} {:<12} {:<20} {}",
                    entry["at_ms"].as_i64().unwrap_or(0),
                    text("outcome"),
                    text("action"),
                    text("actor"),
                    text("target"),
                    text("detail"),
                );
            }
            Ok(0)
        }
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(super::encode("auth."), "auth.");
        assert_eq!(super::encode("a b&c"), "a%20b%26c");
    }
}
