//! Password hashing with argon2id (the `argon2` crate, RustCrypto). The default cost
//! is OWASP's recommendation for argon2id: 19 MiB of memory, 2 iterations, 1 lane.
//! Hashes are PHC strings that carry their own parameters, so a hash made with other
//! costs still verifies, and raising the cost later needs no migration.
//!
//! Hashing is deliberately slow, so it runs on tokio's blocking pool. A login for an
//! unknown or disabled user verifies against a dummy hash of the same cost, so the
//! answer's timing does not tell which user names exist.

use crate::AccountsError;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use std::sync::{Arc, OnceLock};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (argon2 would take more, but a megabyte "password" is
/// a denial-of-service attempt, not a password).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The cost of a new hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl PasswordCost {
    /// OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
    pub const OWASP: PasswordCost = PasswordCost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// The cheapest cost argon2 takes. For tests only: unoptimised builds hash slowly.
    pub const TEST_ONLY: PasswordCost = PasswordCost {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

impl Default for PasswordCost {
    fn default() -> Self {
        PasswordCost::OWASP
    }
}

/// Hashes and verifies passwords at one cost.
#[derive(Clone)]
pub(crate) struct Passwords {
    params: Params,
    dummy: Arc<OnceLock<String>>,
}

impl Passwords {
    pub fn new(cost: PasswordCost) -> Result<Passwords, AccountsError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| AccountsError::Crypto(format!("argon2 parameters: {e}")))?;
        Ok(Passwords {
            params,
            dummy: Arc::new(OnceLock::new()),
        })
    }

    fn hasher(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Checks a new password against the policy (length only, as NIST SP 800-63B
    /// advises: no composition rules).
    pub fn check_policy(password: &str) -> Result<(), AccountsError> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(AccountsError::invalid(
                "password",
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AccountsError::invalid(
                "password",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// The PHC string of a new hash of `password`, with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, AccountsError> {
        let hasher = self.hasher();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            hasher
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| AccountsError::Crypto(format!("argon2 hashing: {e}")))
        })
        .await
        .map_err(|e| AccountsError::Crypto(format!("the hashing task failed: {e}")))?
    }

    /// True when `password` matches the PHC string `hash`. A hash that cannot be
    /// parsed matches nothing.
    pub async fn verify(&self, password: &str, hash: &str) -> bool {
        let hasher = self.hasher();
        let password = password.to_owned();
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || {
            hasher
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Spends the time a real verification would, for a user that does not exist.
    pub async fn verify_dummy(&self, password: &str) {
        let dummy = match self.dummy.get() {
            Some(hash) => hash.clone(),
            None => match self.hash("paddock-dummy-password").await {
                Ok(hash) => self.dummy.get_or_init(|| hash).clone(),
                Err(_) => return,
            },
        };
        let _ = self.verify(password, &dummy).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_with_its_cost_and_verifies_only_its_password() {
        let passwords = Passwords::new(PasswordCost::TEST_ONLY).expect("params");
        let hash = passwords.hash("correct horse battery").await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{hash}");
        assert!(passwords.verify("correct horse battery", &hash).await);
        assert!(!passwords.verify("correct horse batterY", &hash).await);
        assert!(
            !passwords
                .verify("correct horse battery", "not a hash")
                .await
        );
        let again = passwords.hash("correct horse battery").await.expect("hash");
        assert_ne!(hash, again, "each hash has its own salt");
    }

    #[test]
    fn the_default_cost_is_owasps() {
        assert_eq!(
            PasswordCost::default(),
            PasswordCost {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1
            }
        );
        assert!(Passwords::new(PasswordCost::default()).is_ok());
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(Passwords::check_policy("short").is_err());
        assert!(Passwords::check_policy(&"x".repeat(2000)).is_err());
        assert!(Passwords::check_policy("twelve chars").is_ok());
    }
}
