//! The ledger's one error type. Every variant names the database (its URL with any
//! password replaced by `***`) or the job, and the operation that failed, so a log
//! line is enough to act on. [`redact_url`] is the only way a URL reaches a message.

/// What went wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "unsupported ledger database URL {url}: use sqlite:///absolute/path.db, sqlite://relative.db or postgres://user@host/db"
    )]
    UnsupportedUrl { url: String },

    #[error("cannot create the folder of the SQLite ledger {url}: {source}")]
    SqliteFolder {
        url: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot connect to the ledger database at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("cannot create or migrate the ledger schema at {url} ({step}): {source}")]
    Migrate {
        url: String,
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "the ledger schema at {url} is version {found}, newer than this build knows ({known}): upgrade this service"
    )]
    SchemaTooNew { url: String, found: i64, known: i64 },

    #[error("ledger {operation} failed on {url}: {source}")]
    Query {
        operation: &'static str,
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// Rows kept changing under a write (only with several writers at once).
    #[error("ledger {operation} of job {job} gave up after {attempts} concurrent updates")]
    Contended {
        operation: &'static str,
        job: String,
        attempts: u32,
    },

    /// A stored row holds a value this build cannot read (say, a status written by a
    /// newer version).
    #[error("the ledger row of job {job} cannot be read: {detail}")]
    Corrupt { job: String, detail: String },

    /// The operating system gave no random bytes (for a join token).
    #[error("the operating system's random number generator failed")]
    NoRandomness,
}

impl LedgerError {
    /// True when the same call may succeed later (the database was unreachable, busy
    /// or restarting). False when retrying cannot help: the row or the URL is wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            LedgerError::Connect { .. }
            | LedgerError::Query { .. }
            | LedgerError::Migrate { .. }
            | LedgerError::Contended { .. } => true,
            LedgerError::UnsupportedUrl { .. }
            | LedgerError::SqliteFolder { .. }
            | LedgerError::SchemaTooNew { .. }
            | LedgerError::Corrupt { .. }
            | LedgerError::NoRandomness => false,
        }
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
            redact_url("postgres://db/paddock?user=p&password=s3cret&sslmode=require"),
            "postgres://db/paddock?user=p&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://p:a@b@host/db"),
            "postgres://p:***@host/db"
        );
    }

    #[test]
    fn urls_without_passwords_are_unchanged() {
        for url in [
            "sqlite:///var/lib/paddock/ledger.db",
            "sqlite://ledger.db?mode=rwc",
            "postgres://postgres@127.0.0.1:5432/test",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
