//! Scopes: what an account may do. Every API route requires one; a token carries the
//! scopes its user had when it was issued (so a change takes effect at the next
//! refresh, within the access token's lifetime). `users:admin` also makes its holder
//! an admin who sees every user's jobs; without it a user sees only their own.
//!
//! On the wire and in the database a set of scopes is one space-separated string
//! (as OAuth's `scope` parameter); in JSON bodies it is a list of strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read jobs and their events, follow them live.
    JobsRead,
    /// Submit jobs and steer them (cancel, follow-up, interrupt).
    JobsSubmit,
    /// Approve or refuse a job's tool calls.
    ToolsApprove,
    /// Operate nodes: drain, label, quotas.
    NodesAdmin,
    /// Manage users and read the audit log; see every user's jobs.
    UsersAdmin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::JobsRead,
        Scope::JobsSubmit,
        Scope::ToolsApprove,
        Scope::NodesAdmin,
        Scope::UsersAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsSubmit => "jobs:submit",
            Scope::ToolsApprove => "tools:approve",
            Scope::NodesAdmin => "nodes:admin",
            Scope::UsersAdmin => "users:admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name this build does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {0:?} (known: jobs:read, jobs:submit, tools:approve, nodes:admin, users:admin)"
)]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| UnknownScope(text.to_string()))
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> ScopeSet {
        ScopeSet(scopes.into_iter().collect())
    }

    /// Every scope there is: the first admin's.
    pub fn all() -> ScopeSet {
        ScopeSet::new(Scope::ALL)
    }

    /// What a new user gets unless told otherwise: run and watch their own jobs.
    pub fn default_user() -> ScopeSet {
        ScopeSet::new([Scope::JobsRead, Scope::JobsSubmit, Scope::ToolsApprove])
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Parses a space-separated list (the database's and the token's form).
    pub fn parse_list(text: &str) -> Result<ScopeSet, UnknownScope> {
        text.split_whitespace()
            .map(str::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(ScopeSet)
    }
}

impl fmt::Display for ScopeSet {
    /// The space-separated form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet::new(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("jobs:write".parse::<Scope>().is_err());
        assert!("".parse::<Scope>().is_err());
    }

    #[test]
    fn a_set_is_a_space_separated_list() {
        let set = ScopeSet::parse_list(" users:admin  jobs:read ").expect("valid");
        assert_eq!(set.to_string(), "jobs:read users:admin");
        assert!(set.contains(Scope::UsersAdmin));
        assert!(!set.contains(Scope::JobsSubmit));
        assert_eq!(
            ScopeSet::parse_list("").expect("valid"),
            ScopeSet::default()
        );
        assert!(ScopeSet::parse_list("jobs:read root").is_err());
        let json = serde_json::to_string(&set).expect("json");
        assert_eq!(json, r#"["jobs:read","users:admin"]"#);
        assert!(serde_json::from_str::<ScopeSet>(r#"["nope"]"#).is_err());
    }
}
