//! The gateway's Web Push identity (VAPID, RFC 8292): a P-256 key pair, and the
//! short-lived ES256 token that goes with every push request.
//!
//! The private key is a PKCS#8 PEM file, made on first start (mode 0600, written to a
//! temporary file and linked into place only if no other gateway made one meanwhile,
//! as the JWT signing key is). Browsers bind each subscription to the public key a
//! page gave them (`applicationServerKey`) and push services refuse tokens signed by
//! any other, so every gateway of one paddock must share the file, and replacing it
//! silently orphans every subscription.
//!
//! Per request: `Authorization: vapid t=<JWT>, k=<public key>`, where the JWT's `aud`
//! is the push service's origin, `exp` at most 24 hours away (we use 12) and `sub` the
//! operator's contact. The token is three base64url parts signed with `ring` (the
//! gateway's crypto); `jsonwebtoken`'s process-wide provider here signs EdDSA only
//! (see `crate::jwt`).

use crate::jwt::{KeyFileError, read_or_generate_pkcs8_file};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a token is good for (RFC 8292 allows up to 24 hours).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Why the key could not be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    #[error("cannot read the VAPID key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the VAPID key {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a P-256 private key in PKCS#8 PEM ({problem})")]
    Format { path: PathBuf, problem: String },
    #[error("generating a VAPID key failed")]
    Generate,
    #[error("signing a VAPID token failed")]
    Sign,
}

/// The key pair that identifies this paddock to push services.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    public_key: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new private key as PKCS#8 DER.
    pub fn generate_pkcs8() -> Result<Vec<u8>, VapidError> {
        let rng = ring::rand::SystemRandom::new();
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| VapidError::Generate)
    }

    /// The key of a PKCS#8 DER document.
    pub fn from_pkcs8(der: &[u8]) -> Result<VapidKey, String> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        let public_key = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(VapidKey { pair, public_key })
    }

    /// Reads the key at `path`, or makes one there (see the module's notes).
    pub fn load_or_generate(path: &Path) -> Result<VapidKey, VapidError> {
        let der = read_or_generate(path)?;
        VapidKey::from_pkcs8(&der).map_err(|problem| VapidError::Format {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// The public key, an uncompressed P-256 point in base64url: what a page passes to
    /// `pushManager.subscribe` as `applicationServerKey`, and the `k` of requests.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// A token for the push service at `audience` (its origin), good until
    /// `expires_at` (Unix seconds), naming `subject` as the contact.
    pub fn token(
        &self,
        audience: &str,
        subject: &str,
        expires_at: u64,
    ) -> Result<String, VapidError> {
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": expires_at, "sub": subject });
        let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let rng = ring::rand::SystemRandom::new();
        let signature = self
            .pair
            .sign(&rng, signed.as_bytes())
            .map_err(|_| VapidError::Sign)?;
        Ok(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The `Authorization` header of a request to the push service at `audience`.
    pub fn authorization(
        &self,
        audience: &str,
        subject: &str,
        now_secs: u64,
    ) -> Result<String, VapidError> {
        let token = self.token(
            audience,
            subject,
            now_secs.saturating_add(TOKEN_LIFETIME.as_secs()),
        )?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}

impl KeyFileError for VapidError {
    fn read(path: &Path, source: std::io::Error) -> Self {
        VapidError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
    fn write(path: &Path, source: std::io::Error) -> Self {
        VapidError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
    fn format(path: &Path, problem: String) -> Self {
        VapidError::Format {
            path: path.to_path_buf(),
            problem,
        }
    }
}

/// Reads the key, or creates it (see [`read_or_generate_pkcs8_file`]).
fn read_or_generate(path: &Path) -> Result<Vec<u8>, VapidError> {
    read_or_generate_pkcs8_file(path, "VAPID key for Web Push", VapidKey::generate_pkcs8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_testkit::push_service::{VapidError as Refused, verify_vapid};

    #[test]
    fn a_key_is_made_once_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys/vapid-key.pem");
        let made = VapidKey::load_or_generate(&path).expect("made");
        let again = VapidKey::load_or_generate(&path).expect("read");
        assert_eq!(made.public_key(), again.public_key());
        let raw = URL_SAFE_NO_PAD
            .decode(made.public_key())
            .expect("base64url");
        assert_eq!(raw.len(), 65);
        assert_eq!(raw[0], 4, "an uncompressed point");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").expect("overwrite");
        assert!(matches!(
            VapidKey::load_or_generate(&path),
            Err(VapidError::Format { .. })
        ));
    }

    #[test]
    fn the_authorization_verifies_as_a_push_service_checks_it() {
        let key = VapidKey::from_pkcs8(&VapidKey::generate_pkcs8().expect("der")).expect("key");
        let now = 1_700_000_000;
        let header = key
            .authorization("https://push.example.net", "mailto:ops@example.com", now)
            .expect("signed");
        let token = verify_vapid(&header, "https://push.example.net", now).expect("valid");
        assert_eq!(
            token.public_key,
            URL_SAFE_NO_PAD.decode(key.public_key()).expect("k")
        );
        assert_eq!(token.exp, now + TOKEN_LIFETIME.as_secs());
        assert_eq!(token.sub, "mailto:ops@example.com");
        assert!(matches!(
            verify_vapid(&header, "https://other.example.net", now),
            Err(Refused::WrongAudience { .. })
        ));
        // Another key's k with this key's token: the signature does not verify.
        let other = VapidKey::from_pkcs8(&VapidKey::generate_pkcs8().expect("der")).expect("key");
        let swapped = header.replace(key.public_key(), other.public_key());
        assert_eq!(
            verify_vapid(&swapped, "https://push.example.net", now),
            Err(Refused::BadSignature)
        );
    }
}
