//! NATS over TLS from a private CA, against a real nats-server started with TLS: a
//! service given the CA (`tls_root_certificate`) connects and passes the start-up
//! checks; one without it is refused with a certificate error, never falling back to
//! plain text; and `tls_required` refuses a server that offers no TLS.

use paddock_bus::{NatsSettings, connect};
use paddock_testkit::NatsServer;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files.
fn certificates(dir: &Path) -> Files {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "paddock test NATS CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let files = Files {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    std::fs::write(&files.ca, ca.pem()).expect("write CA");
    std::fs::write(&files.cert, cert.pem()).expect("write certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

fn settings(url: String, ca: Option<PathBuf>, tls_required: bool) -> NatsSettings {
    NatsSettings {
        url,
        tls_root_certificate: ca,
        tls_required,
        ..NatsSettings::default()
    }
}

#[tokio::test]
async fn only_a_service_that_trusts_the_private_ca_connects_over_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let files = certificates(dir.path());
    let nats = NatsServer::start_with_args(vec![
        "--tls".into(),
        "--tlscert".into(),
        files.cert.display().to_string(),
        "--tlskey".into(),
        files.key.display().to_string(),
    ])
    .await;
    let url = format!("tls://127.0.0.1:{}", nats.port());

    let client = connect(
        &settings(url.clone(), Some(files.ca.clone()), true),
        "tls-test",
    )
    .await
    .expect("a client that trusts the CA connects over TLS");
    client.flush().await.expect("flush over TLS");

    let refused = connect(&settings(url, None, true), "tls-test")
        .await
        .expect_err("a client without the CA must not connect");
    let text = format!("{refused:#}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls") || text.contains("unknownissuer"),
        "{refused:#}"
    );
}

#[tokio::test]
async fn tls_required_refuses_a_server_without_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nats = NatsServer::start().await;
    let refused = connect(&settings(nats.url(), None, true), "tls-test").await;
    assert!(
        refused.is_err(),
        "connected in plain text although TLS was required"
    );
}
