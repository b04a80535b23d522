//! The self-signed certificate of the single-machine start (`paddock up`): a small
//! certificate authority of this machine and a server certificate it signs for the
//! names a local client uses (localhost, 127.0.0.1, ::1 and the host name), made with
//! rcgen once into a folder and kept there. The CLI trusts the CA with `--ca-cert`;
//! browsers and curl can be given the same file.
//!
//! Files: `ca.pem` (give it to clients), `ca-key.pem`, `server.pem` (the chain: server
//! then CA) and `server-key.pem`; keys are 0600. A missing server certificate is
//! issued again by the kept CA, so deleting `server.pem` (after renaming the machine,
//! say) renews it without clients having to trust anything new. Deleting the folder
//! starts over with a new CA.

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The start of the CA's name; the rest is derived from its key, so that a kept CA key
/// can sign again (a certificate's issuer name must be its CA's subject), and no two
/// machines' CAs share a name (a client would take the wrong one for the issuer).
const CA_NAME: &str = "Paddock development CA";
/// Long enough not to bother anyone; the CA never leaves this machine.
const CA_DAYS: i64 = 3650;
/// Apple's platforms refuse server certificates valid for longer than 825 days.
const SERVER_DAYS: i64 = 825;

/// The files of a development certificate.
#[derive(Clone, Debug)]
pub struct DevCertificate {
    /// The CA certificate clients trust.
    pub ca_file: PathBuf,
    /// The server's certificate chain, for `[tls] cert_file`.
    pub cert_file: PathBuf,
    /// The server's key, for `[tls] key_file`.
    pub key_file: PathBuf,
    /// Whether this call made the CA (clients must be told to trust it).
    pub new_ca: bool,
}

/// The development certificate in `dir`, made there first if missing. `names` are
/// extra DNS names for the server certificate (the host name, for one).
pub fn ensure(dir: &Path, names: &[String]) -> anyhow::Result<DevCertificate> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = DevCertificate {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server-key.pem"),
        new_ca: false,
    };
    let ca_key_file = dir.join("ca-key.pem");
    let (issuer, ca_pem, new_ca) = if files.ca_file.exists() && ca_key_file.exists() {
        let key_pem = std::fs::read_to_string(&ca_key_file)
            .with_context(|| format!("reading {}", ca_key_file.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a private key", ca_key_file.display()))?;
        let ca_pem = std::fs::read_to_string(&files.ca_file)
            .with_context(|| format!("reading {}", files.ca_file.display()))?;
        (Issuer::new(ca_params(&key)?, key), ca_pem, false)
    } else {
        let key = KeyPair::generate().context("generating the CA's key")?;
        let ca = ca_params(&key)?
            .self_signed(&key)
            .context("signing the CA certificate")?;
        crate::private_file::write(&ca_key_file, key.serialize_pem().as_bytes())?;
        write_public(&files.ca_file, &ca.pem())?;
        // Server certificates of an older CA would not verify against the new one.
        for stale in [&files.cert_file, &files.key_file] {
            let _ = std::fs::remove_file(stale);
        }
        (Issuer::new(ca_params(&key)?, key), ca.pem(), true)
    };
    if !(files.cert_file.exists() && files.key_file.exists()) {
        let key = KeyPair::generate().context("generating the server's key")?;
        let server = server_params(names)?
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;
        crate::private_file::write(&files.key_file, key.serialize_pem().as_bytes())?;
        write_public(&files.cert_file, &format!("{}{ca_pem}", server.pem()))?;
    }
    Ok(DevCertificate { new_ca, ..files })
}

/// The host name of this machine, and its `.local` name (mDNS) when it is a bare one.
pub fn host_names() -> Vec<String> {
    let host = std::process::Command::new("hostname")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty() && name != "localhost");
    match host {
        Some(host) if !host.contains('.') => vec![format!("{host}.local"), host],
        Some(host) => vec![host],
        None => Vec::new(),
    }
}

fn ca_params(key: &KeyPair) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
    let id: String = digest.as_ref()[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{CA_NAME} {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(CA_DAYS)?;
    Ok(params)
}

fn server_params(names: &[String]) -> anyhow::Result<CertificateParams> {
    let mut all = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for name in names {
        if !all.contains(name) {
            all.push(name.clone());
        }
    }
    let mut params = match CertificateParams::new(all.clone()) {
        Ok(params) => params,
        // A host name that is no valid DNS name is left out rather than failing the start.
        Err(_) => CertificateParams::new(all.into_iter().take(3).collect::<Vec<_>>())?,
    };
    params
        .distinguished_name
        .push(DnType::CommonName, "Paddock gateway");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = validity(SERVER_DAYS)?;
    Ok(params)
}

/// From a day ago (clocks differ a little) to `days` from now.
fn validity(days: i64) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
    let now = OffsetDateTime::now_utc();
    match (
        now.checked_sub(Duration::days(1)),
        now.checked_add(Duration::days(days)),
    ) {
        (Some(from), Some(until)) => Ok((from, until)),
        _ => bail!("the clock is out of range"),
    }
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).expect("read")
    }

    /// Whether a client trusting only `ca` accepts `chain` for `name`.
    fn verifies(ca: &Path, chain: &Path, name: &str) -> bool {
        let certificates = |path: &Path| -> Vec<CertificateDer<'static>> {
            CertificateDer::pem_file_iter(path)
                .expect("pem")
                .collect::<Result<_, _>>()
                .expect("certificates")
        };
        let mut roots = rustls::RootCertStore::empty();
        for root in certificates(ca) {
            roots.add(root).expect("a root");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let chain = certificates(chain);
        let name = ServerName::try_from(name.to_string()).expect("name");
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn the_server_certificate_verifies_against_the_ca_for_local_names_only() {
        let dir = tempfile::tempdir().expect("dir");
        let files = ensure(dir.path(), &["mini.local".into()]).expect("made");
        for name in ["localhost", "127.0.0.1", "::1", "mini.local"] {
            assert!(verifies(&files.ca_file, &files.cert_file, name), "{name}");
        }
        assert!(!verifies(&files.ca_file, &files.cert_file, "example.com"));
        let other = tempfile::tempdir().expect("dir");
        let stranger = ensure(other.path(), &[]).expect("made");
        assert!(!verifies(&stranger.ca_file, &files.cert_file, "localhost"));
    }

    #[test]
    fn made_once_and_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let first = ensure(dir.path(), &["mini.local".into()]).expect("made");
        assert!(first.new_ca);
        let chain = read(&first.cert_file);
        assert_eq!(
            chain.matches("BEGIN CERTIFICATE").count(),
            2,
            "server, then CA"
        );
        assert!(chain.ends_with(&read(&first.ca_file)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&first.key_file), 0o600);
            assert_eq!(mode(&dir.path().join("ca-key.pem")), 0o600);
        }
        let again = ensure(dir.path(), &["mini.local".into()]).expect("kept");
        assert!(!again.new_ca);
        assert_eq!(
            read(&again.cert_file),
            chain,
            "an existing certificate is kept"
        );

        // A lost server certificate is issued again by the same CA.
        let ca = read(&first.ca_file);
        std::fs::remove_file(&first.cert_file).expect("rm");
        let renewed = ensure(dir.path(), &[]).expect("renewed");
        assert!(!renewed.new_ca);
        assert_eq!(read(&renewed.ca_file), ca);
        assert_ne!(read(&renewed.cert_file), chain);
        assert!(verifies(&renewed.ca_file, &renewed.cert_file, "localhost"));
    }

    #[test]
    fn host_names_are_lower_case_dns_names() {
        for name in host_names() {
            assert_eq!(name, name.to_ascii_lowercase());
            assert!(!name.is_empty());
        }
    }
}
