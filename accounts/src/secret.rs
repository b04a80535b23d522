//! Random secrets and their hashes: opaque tokens (refresh tokens, device codes)
//! drawn from the operating system's random source, and the SHA-256 hash under which
//! they are stored, so a copy of the database gives no usable token. A presented
//! token is found by its hash (a unique index), so no comparison of secrets happens
//! in this process at all.

use crate::AccountsError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// `n` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AccountsError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AccountsError::Crypto("the system random source failed".into()))?;
    Ok(bytes)
}

/// A new opaque token: `prefix` then 256 random bits, base64url without padding. The
/// prefix says what the token is (and lets secret scanners find leaked ones).
pub fn new_token(prefix: &str) -> Result<String, AccountsError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The hex SHA-256 of a token: how it is stored and looked up.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    hex(digest.as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed_consistently() {
        let a = new_token("pdr_").expect("token");
        let b = new_token("pdr_").expect("token");
        assert_ne!(a, b);
        assert!(a.starts_with("pdr_"));
        assert_eq!(a.len(), 4 + 43);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
