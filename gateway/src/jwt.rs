//! Access tokens: short-lived JWTs signed with Ed25519 (`EdDSA`), through the
//! `jsonwebtoken` crate for the token format and its checks, and `ring` (already the
//! workspace's crypto, under rustls) for the signatures.
//!
//! What must stay true:
//! - a token is accepted only with `alg: EdDSA`, a `kid` naming one of our keys, our
//!   issuer and audience, an `exp` in the future (5 s of leeway) and a signature by
//!   that key. `alg: none`, HMAC or RSA headers, unknown key ids and foreign keys are
//!   refused before any claim is read.
//! - tokens live at most 15 minutes (the config refuses more).
//! - the private key never leaves the key file and this process; the JWKS
//!   (`/.well-known/jwks.json`) publishes the public halves, current and retired,
//!   under their key ids (RFC 7638 thumbprints), so keys can be rotated: sign with a
//!   new key, keep the old one in `auth.retired_key_files` for 15 minutes.
//!
//! `jsonwebtoken` 11 takes its signature code from a process-wide `CryptoProvider`;
//! [`install_provider`] installs ours (EdDSA over `ring`, nothing else) and every
//! constructor here calls it. The crate's own providers would bring a second crypto
//! stack (RustCrypto with RSA, whose crate has an open timing advisory, or aws-lc,
//! which needs a C build) for the one algorithm we use.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, new_error};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, signature};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Seconds of clock difference tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    /// The user's name (what jobs record as their submitter).
    pub name: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The device (sign-in) the token was issued to.
    pub did: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the signing key {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM ({problem})")]
    Format { path: PathBuf, problem: String },
    #[error("generating a signing key failed")]
    Generate,
}

/// Why a presented token was refused. Only logs see the difference; clients get 401.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token's header is unreadable or names another algorithm")]
    Header,
    #[error("the token names no key or an unknown one")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

struct RingSigner(Ed25519KeyPair);

impl signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(message).as_ref().to_vec())
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct RingVerifier(Vec<u8>);

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn signer_factory(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::EdDSA {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes())
        .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?;
    Ok(Box::new(RingSigner(pair)))
}

fn verifier_factory(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::EdDSA {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    let bytes = key.try_get_as_bytes()?;
    if bytes.len() != 32 {
        return Err(new_error(ErrorKind::InvalidEddsaKey));
    }
    Ok(Box::new(RingVerifier(bytes.to_vec())))
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes ours the process's `jsonwebtoken` crypto provider (once; later calls do
/// nothing).
pub fn install_provider() {
    let _ = PROVIDER.install_default();
}

/// A new Ed25519 private key as PKCS#8 DER.
pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| KeyError::Generate)
}

/// PKCS#8 DER as a `PRIVATE KEY` PEM document.
pub fn pem_encode(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// The DER inside a `PRIVATE KEY` PEM document.
pub fn pem_decode(pem: &str) -> Result<Vec<u8>, String> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = pem
        .find(begin)
        .ok_or("no BEGIN PRIVATE KEY line")?
        .saturating_add(begin.len());
    let stop = pem[start..].find(end).ok_or("no END PRIVATE KEY line")? + start;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("bad base64: {e}"))
}

/// One key: its id, its private half (when we sign with it) and its public half.
struct KeyEntry {
    kid: String,
    public: [u8; 32],
}

fn key_entry(der: &[u8]) -> Result<KeyEntry, String> {
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| "the public key is not 32 bytes".to_string())?;
    Ok(KeyEntry {
        kid: thumbprint(&public),
        public,
    })
}

/// The RFC 7638 thumbprint of an Ed25519 public key (RFC 8037 §2: members `crv`,
/// `kty`, `x` in that order).
fn thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// A token just issued.
#[derive(Clone)]
pub struct IssuedAccess {
    pub token: String,
    pub expires_in: Duration,
}

/// What one presented token says about its bearer.
pub type Verified = AccessClaims;

/// The keys and rules of access tokens.
pub struct TokenKeys {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: JwkSet,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenKeys {
    /// Keys from PKCS#8 DER: `current` signs, `retired` only verify.
    pub fn from_pkcs8(
        current: &[u8],
        retired: &[Vec<u8>],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<TokenKeys, String> {
        install_provider();
        let current_entry = key_entry(current)?;
        let mut verifying = HashMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        for entry in
            std::iter::once(Ok(current_entry)).chain(retired.iter().map(|der| key_entry(der)))
        {
            let entry = entry?;
            if verifying.contains_key(&entry.kid) {
                continue;
            }
            verifying.insert(entry.kid.clone(), DecodingKey::from_ed_der(&entry.public));
            jwks.keys.push(Jwk {
                common: CommonParameters {
                    public_key_use: Some(PublicKeyUse::Signature),
                    key_algorithm: Some(KeyAlgorithm::EdDSA),
                    key_id: Some(entry.kid.clone()),
                    ..CommonParameters::default()
                },
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: URL_SAFE_NO_PAD.encode(entry.public),
                }),
            });
        }
        Ok(TokenKeys {
            signing_kid: key_entry(current)?.kid,
            signing: EncodingKey::from_ed_der(current),
            verifying,
            jwks,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl,
        })
    }

    /// Loads the signing key from `file`, generating it (mode 0600) when the file does
    /// not exist, and the retired keys from theirs.
    pub fn load_or_generate(
        file: &Path,
        retired: &[PathBuf],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<TokenKeys, KeyError> {
        let current = read_or_generate(file)?;
        let retired = retired
            .iter()
            .map(|path| read_key(path))
            .collect::<Result<Vec<_>, _>>()?;
        TokenKeys::from_pkcs8(&current, &retired, issuer, audience, ttl).map_err(|problem| {
            KeyError::Format {
                path: file.to_path_buf(),
                problem,
            }
        })
    }

    /// The key id new tokens carry.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for a user's sign-in on a device.
    pub fn issue(
        &self,
        user_id: &str,
        name: &str,
        scope: &str,
        device_id: &str,
    ) -> Result<IssuedAccess, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            name: name.to_string(),
            scope: scope.to_string(),
            did: device_id.to_string(),
            iat: now,
            exp: now.saturating_add(self.ttl.as_secs()),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        Ok(IssuedAccess {
            token: self.sign(&claims)?,
            expires_in: self.ttl,
        })
    }

    /// Signs any claims with the current key (tests use it to make bad tokens).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing)
    }

    /// Checks a presented token; see the module's rules.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Header)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Header);
        }
        let key = header
            .kid
            .as_ref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)?;
        Ok(data.claims)
    }
}

/// The errors of one kind of key file, so that each kind names itself in messages.
pub trait KeyFileError: Sized {
    fn read(path: &Path, source: std::io::Error) -> Self;
    fn write(path: &Path, source: std::io::Error) -> Self;
    fn format(path: &Path, problem: String) -> Self;
}

impl KeyFileError for KeyError {
    fn read(path: &Path, source: std::io::Error) -> Self {
        KeyError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
    fn write(path: &Path, source: std::io::Error) -> Self {
        KeyError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
    fn format(path: &Path, problem: String) -> Self {
        KeyError::Format {
            path: path.to_path_buf(),
            problem,
        }
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    read_pkcs8_file(path)
}

fn read_or_generate(path: &Path) -> Result<Vec<u8>, KeyError> {
    read_or_generate_pkcs8_file(path, "JWT signing key", generate_pkcs8)
}

/// The DER of the PKCS#8 PEM key in `path`.
pub fn read_pkcs8_file<E: KeyFileError>(path: &Path) -> Result<Vec<u8>, E> {
    let text = std::fs::read_to_string(path).map_err(|source| E::read(path, source))?;
    pem_decode(&text).map_err(|problem| E::format(path, problem))
}

/// Reads the key, or creates it with `generate`: written to a temporary file in the
/// same folder and linked into place only if no other process made one meanwhile, so
/// two gateways starting at once end up with the same key.
pub fn read_or_generate_pkcs8_file<E: KeyFileError>(
    path: &Path,
    what: &str,
    generate: impl FnOnce() -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    if path.exists() {
        return read_pkcs8_file(path);
    }
    if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|source| E::write(path, source))?;
    }
    let der = generate()?;
    let temporary = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    write_private(&temporary, pem_encode(&der).as_bytes())
        .map_err(|source| E::write(path, source))?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new {what}");
            Ok(der)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_pkcs8_file(path),
        Err(e) => Err(E::write(path, e)),
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(der: &[u8]) -> TokenKeys {
        TokenKeys::from_pkcs8(der, &[], "paddock", "paddock-api", Duration::from_secs(900))
            .expect("keys")
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_key() {
        let der = generate_pkcs8().expect("key");
        let keys = keys(&der);
        let issued = keys.issue("u1", "ada", "jobs:read", "d1").expect("issue");
        assert_eq!(issued.expires_in, Duration::from_secs(900));
        let header = jsonwebtoken::decode_header(&issued.token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(keys.signing_kid()));
        let claims = keys.verify(&issued.token).expect("valid");
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.name, "ada");
        assert_eq!(claims.did, "d1");
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn another_key_or_tampering_is_refused() {
        let ours = keys(&generate_pkcs8().expect("key"));
        let theirs = keys(&generate_pkcs8().expect("key"));
        let token = theirs.issue("u1", "ada", "jobs:read", "d1").expect("issue");
        assert!(matches!(
            ours.verify(&token.token),
            Err(TokenError::UnknownKey)
        ));
        // Their signature under our key id.
        let mut claims = ours
            .verify(&ours.issue("u1", "ada", "", "d1").expect("issue").token)
            .expect("valid");
        claims.scope = "users:admin".into();
        let forged = theirs.sign(&claims).expect("sign");
        let (_, rest) = forged.split_once('.').expect("jwt");
        let ours_header = ours.issue("u1", "ada", "", "d1").expect("issue").token;
        let (header, _) = ours_header.split_once('.').expect("jwt");
        assert!(ours.verify(&format!("{header}.{rest}")).is_err());
        assert!(ours.verify("not a token").is_err());
    }

    #[test]
    fn retired_keys_verify_and_are_published() {
        let old = generate_pkcs8().expect("key");
        let new = generate_pkcs8().expect("key");
        let before = keys(&old);
        let token = before.issue("u1", "ada", "", "d1").expect("issue");
        let after = TokenKeys::from_pkcs8(
            &new,
            &[old],
            "paddock",
            "paddock-api",
            Duration::from_secs(60),
        )
        .expect("keys");
        assert!(after.verify(&token.token).is_ok());
        assert_eq!(after.jwks().keys.len(), 2);
        assert_ne!(after.signing_kid(), before.signing_kid());
    }

    #[test]
    fn keys_round_trip_through_pem_and_files() {
        let der = generate_pkcs8().expect("key");
        assert_eq!(pem_decode(&pem_encode(&der)).expect("pem"), der);
        assert!(pem_decode("garbage").is_err());
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("keys/signing.pem");
        let first = TokenKeys::load_or_generate(&file, &[], "i", "a", Duration::from_secs(60))
            .expect("generated");
        let second = TokenKeys::load_or_generate(&file, &[], "i", "a", Duration::from_secs(60))
            .expect("loaded");
        assert_eq!(first.signing_kid(), second.signing_kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("bad.pem"), "nope").expect("write");
        assert!(
            TokenKeys::load_or_generate(
                &dir.path().join("bad.pem"),
                &[],
                "i",
                "a",
                Duration::from_secs(1)
            )
            .is_err()
        );
    }

    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("x");
        let public: [u8; 32] = x.try_into().expect("32 bytes");
        assert_eq!(
            thumbprint(&public),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
