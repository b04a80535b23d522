//! Test helpers shared by the model double's integration tests: a minimal HTTP/1.1
//! client over a raw socket (the tests need no more, and a real client crate would
//! pull TLS set-up into a test of a plain-HTTP double), and a double started in-process
//! on port 0 that stops when dropped.

// Each test crate compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use paddock_model_double::{ModelDouble, Script};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any single test request may take before the test fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole HTTP response: status, raw header block and body bytes as text.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// Sends one request with `Connection: close` and reads the whole response.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse(&String::from_utf8_lossy(&raw))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} {path} got no response within {REQUEST_TIMEOUT:?}"))?
}

fn parse(raw: &str) -> anyhow::Result<HttpResponse> {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        bail!("no header end in response {raw:?}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok(HttpResponse {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    })
}

/// A double serving in this test process on a free port; stops when dropped.
pub struct RunningDouble {
    pub address: SocketAddr,
    pub handle: ModelDouble,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl RunningDouble {
    pub async fn start(script: Script) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding port 0")?;
        let address = listener.local_addr()?;
        let handle = ModelDouble::new(script);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let handle = handle.clone();
            let shutdown = shutdown.clone();
            async move { handle.serve(listener, shutdown).await }
        });
        Ok(Self {
            address,
            handle,
            shutdown,
            task,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for RunningDouble {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Parses a script written inline in a test.
pub fn script(json: &str) -> Script {
    match Script::parse(json, "test script") {
        Ok(script) => script,
        Err(error) => panic!("the test script is invalid: {error}"),
    }
}
