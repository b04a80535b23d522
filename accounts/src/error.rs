//! The accounts store's one error type. Database failures name the database (its URL
//! with any password replaced by `***`) and the operation; refusals name what was
//! wrong with the input, so the gateway can map each to a stable API code and a
//! person can act on the message. No variant ever carries a password, a token or a
//! TOTP secret.

/// What went wrong in the accounts store.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error(
        "unsupported accounts database URL {url}: use sqlite:///absolute/path.db, sqlite://relative.db or postgres://user@host/db"
    )]
    UnsupportedUrl { url: String },

    #[error("cannot create the folder of the SQLite accounts database {url}: {source}")]
    SqliteFolder {
        url: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot connect to the accounts database at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("cannot create or migrate the accounts schema at {url} ({step}): {source}")]
    Migrate {
        url: String,
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "the accounts schema at {url} is version {found}, newer than this build knows ({known}): upgrade this service"
    )]
    SchemaTooNew { url: String, found: i64, known: i64 },

    #[error("accounts {operation} failed on {url}: {source}")]
    Query {
        operation: &'static str,
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// A stored row holds a value this build cannot read.
    #[error("a stored {what} cannot be read: {detail}")]
    Corrupt { what: &'static str, detail: String },

    /// Input refused before anything was written; `field` names what was wrong.
    #[error("{field} {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },

    #[error("a user named {0:?} already exists")]
    UserExists(String),

    #[error("no user named {0:?}")]
    NoSuchUser(String),

    #[error("no device {0}")]
    NoSuchDevice(String),

    /// Hashing or the random source failed (never expected; the detail is for logs).
    #[error("a cryptographic operation failed: {0}")]
    Crypto(String),
}

impl AccountsError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> AccountsError {
        AccountsError::Invalid {
            field,
            problem: problem.into(),
        }
    }

    /// True for refusals of input (a person can fix them); false for failures of the
    /// database or the machine.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            AccountsError::Invalid { .. }
                | AccountsError::UserExists(_)
                | AccountsError::NoSuchUser(_)
                | AccountsError::NoSuchDevice(_)
        )
    }
}

/// The URL with the password of its user part, and any `password=` query parameter,
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(slash) => rest.split_at(slash),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => authority.to_string(),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_in_urls_are_replaced() {
        assert_eq!(
            redact_url("postgres://paddock:s3cret@db.lan:5432/paddock"),
            "postgres://paddock:***@db.lan:5432/paddock"
        );
        assert_eq!(
            redact_url("postgres://db/p?user=p&password=s3cret"),
            "postgres://db/p?user=p&password=***"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/paddock/accounts.db"),
            "sqlite:///var/lib/paddock/accounts.db"
        );
    }
}
