//! The OS keychain the CLI keeps refresh tokens in: the macOS Keychain, or the Secret
//! Service (GNOME Keyring, KWallet) of a Linux desktop session, through keyring-core.
//! A machine without one — a headless Linux box or CI, where no Secret Service
//! answers on the session bus — gets a [`Keychain`] that says why, and the caller
//! keeps the token in its private file instead.
//!
//! The calls block (D-Bus, Security framework) and may wait for the person to unlock
//! the keychain, so async callers run them with `spawn_blocking`.

use keyring_core::{CredentialStore, Entry, Error};
use std::sync::Arc;

/// The service name entries are filed under.
const SERVICE: &str = "paddock";

pub struct Keychain {
    store: Result<Arc<CredentialStore>, String>,
}

impl Keychain {
    /// The platform's keychain, or the reason there is none.
    pub fn open() -> Keychain {
        Keychain {
            store: platform_store(),
        }
    }

    /// A keychain that is not there, for `reason`.
    pub fn unavailable(reason: &str) -> Keychain {
        Keychain {
            store: Err(reason.to_string()),
        }
    }

    /// keyring-core's in-memory store, for tests of the keychain path on machines
    /// without a keychain.
    #[cfg(test)]
    pub fn in_memory() -> Keychain {
        let store: Result<Arc<CredentialStore>, String> = keyring_core::mock::Store::new()
            .map(|store| store as Arc<CredentialStore>)
            .map_err(|e| e.to_string());
        Keychain { store }
    }

    /// Why there is no keychain, if there is none.
    #[cfg(test)]
    pub fn unavailable_because(&self) -> Option<&str> {
        self.store.as_ref().err().map(String::as_str)
    }

    fn entry(&self, account: &str) -> Result<Entry, String> {
        let store = self.store.as_ref().map_err(Clone::clone)?;
        Entry::new_in_store(store, SERVICE, account).map_err(|e| e.to_string())
    }

    pub fn set(&self, account: &str, secret: &str) -> Result<(), String> {
        self.entry(account)?
            .set_password(secret)
            .map_err(|e| e.to_string())
    }

    pub fn get(&self, account: &str) -> Result<String, String> {
        match self.entry(account)?.get_password() {
            Ok(secret) => Ok(secret),
            Err(Error::NoEntry) => Err("the keychain has no such entry".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Removes the entry; one that is not there is fine.
    pub fn delete(&self, account: &str) -> Result<(), String> {
        match self.entry(account)?.delete_credential() {
            Ok(()) | Err(Error::NoEntry) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<Arc<CredentialStore>, String> {
    apple_native_keyring_store::keychain::Store::new()
        .map(|store| store as Arc<CredentialStore>)
        .map_err(|e| e.to_string())
}

/// Connecting to the Secret Service fails at once where the session bus or the
/// service is missing.
#[cfg(all(unix, not(target_os = "macos")))]
fn platform_store() -> Result<Arc<CredentialStore>, String> {
    zbus_secret_service_keyring_store::Store::new()
        .map(|store| store as Arc<CredentialStore>)
        .map_err(|e| format!("the Secret Service did not answer: {e}"))
}

#[cfg(not(unix))]
fn platform_store() -> Result<Arc<CredentialStore>, String> {
    Err("this system's keychain is not supported".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_set_read_and_deleted() {
        let keychain = Keychain::in_memory();
        assert!(keychain.unavailable_because().is_none());
        keychain
            .set("https://a:8080 d1", "pdr_secret")
            .expect("set");
        assert_eq!(
            keychain.get("https://a:8080 d1").expect("get"),
            "pdr_secret"
        );
        keychain.delete("https://a:8080 d1").expect("delete");
        assert!(keychain.get("https://a:8080 d1").is_err());
        keychain
            .delete("https://a:8080 d1")
            .expect("deleting again is fine");
    }

    #[test]
    fn a_missing_keychain_says_why() {
        let keychain = Keychain::unavailable("no session bus");
        assert_eq!(keychain.unavailable_because(), Some("no session bus"));
        assert_eq!(
            keychain.set("x", "y").expect_err("no keychain"),
            "no session bus"
        );
    }
}
