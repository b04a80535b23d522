//! The egress proxy served on a real TCP port, talked to like a client does: tunnels
//! and forwards to an allowlisted local site, refusals before any connection, a
//! forced `Host`, and a clean stop with connections open. Only 127.0.0.1 is used.

mod support;

use std::time::Duration;

use paddock_sandbox::proxy::{EgressProxy, ProxyConfig, RefusalReason, run};
use support::{LocalSite, proxy_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Served {
    address: std::net::SocketAddr,
    proxy: EgressProxy,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(config: ProxyConfig) -> anyhow::Result<Served> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let proxy = EgressProxy::new(config)?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        async move { proxy.serve(listener, shutdown).await }
    });
    Ok(Served {
        address,
        proxy,
        shutdown,
        task,
    })
}

/// Sends `request` and reads until the proxy closes the connection.
async fn exchange(proxy: std::net::SocketAddr, request: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response)).await??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test]
async fn tunnels_and_forwards_reach_only_the_allowlisted_site() -> anyhow::Result<()> {
    let site = LocalSite::start("site body").await?;
    let served = serve(proxy_config(site.address, &[])).await?;
    let port = site.address.port();

    let mut tunnel = TcpStream::connect(served.address).await?;
    tunnel
        .write_all(format!("CONNECT allowed.test:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut established = [0u8; 39];
    tokio::time::timeout(TIMEOUT, tunnel.read_exact(&mut established)).await??;
    assert_eq!(&established, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    tunnel
        .write_all(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .await?;
    let mut through = Vec::new();
    tokio::time::timeout(TIMEOUT, tunnel.read_to_end(&mut through)).await??;
    assert!(String::from_utf8_lossy(&through).ends_with("site body"));

    let forwarded = exchange(
        served.address,
        &format!("GET http://allowed.test:{port}/path HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
    )
    .await?;
    assert!(forwarded.starts_with("HTTP/1.1 200"), "{forwarded}");

    let refused = exchange(
        served.address,
        "CONNECT api.example.org:443 HTTP/1.1\r\nHost: api.example.org\r\n\r\n",
    )
    .await?;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("X-Paddock-Refused: not-allowed"),
        "{refused}"
    );
    assert_eq!(site.connections(), 2);
    assert_eq!(served.proxy.refusals().len(), 1);
    served.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn forwarded_requests_carry_their_body_and_the_vetted_host() -> anyhow::Result<()> {
    // An origin that echoes back the request it received.
    let origin = TcpListener::bind("127.0.0.1:0").await?;
    let origin_address = origin.local_addr()?;
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = origin.accept().await {
            let mut received = vec![0u8; 4096];
            let mut read = 0;
            while !String::from_utf8_lossy(&received[..read]).ends_with("payload") {
                match stream.read(&mut received[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            let body = String::from_utf8_lossy(&received[..read]).into_owned();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    let served = serve(proxy_config(origin_address, &[])).await?;
    let port = origin_address.port();
    let response = exchange(
        served.address,
        &format!(
            "POST http://allowed.test:{port}/v1/messages?beta=true HTTP/1.1\r\n\
             Host: other-site.example\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
             Content-Length: 7\r\n\r\npayload"
        ),
    )
    .await?;
    assert!(
        response.contains("POST /v1/messages?beta=true HTTP/1.1"),
        "{response}"
    );
    assert!(
        response.contains(&format!("Host: allowed.test:{port}")),
        "{response}"
    );
    assert!(!response.contains("other-site.example"), "{response}");
    assert!(!response.contains("Proxy-Authorization"), "{response}");
    assert!(response.ends_with("payload"), "{response}");
    served.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn allowlisted_names_resolving_to_loopback_need_the_explicit_opt_in() -> anyhow::Result<()> {
    let site = LocalSite::start("should not be reached").await?;
    let mut config = proxy_config(site.address, &[]);
    config.loopback_exceptions.clear();
    let served = serve(config).await?;
    let response = exchange(
        served.address,
        &format!(
            "GET http://allowed.test:{}/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            site.address.port()
        ),
    )
    .await?;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("a loopback address"), "{response}");
    assert_eq!(site.connections(), 0);
    assert!(matches!(
        served.proxy.refusals()[0].reason,
        RefusalReason::ForbiddenAddress {
            class: "loopback",
            ..
        }
    ));
    served.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn malformed_and_origin_form_requests_get_400() -> anyhow::Result<()> {
    let served = serve(ProxyConfig::default()).await?;
    for request in [
        "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n",
        "\u{1}\u{2} nonsense\r\n\r\n",
        "GET https://api.anthropic.com/ HTTP/1.1\r\n\r\n",
    ] {
        let response = exchange(served.address, request).await?;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{request:?}: {response}"
        );
    }
    served.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn the_proxy_stops_cleanly_with_a_tunnel_open() -> anyhow::Result<()> {
    let site = LocalSite::start("x").await?;
    let served = serve(proxy_config(site.address, &[])).await?;
    let mut tunnel = TcpStream::connect(served.address).await?;
    tunnel
        .write_all(
            format!(
                "CONNECT allowed.test:{} HTTP/1.1\r\n\r\n",
                site.address.port()
            )
            .as_bytes(),
        )
        .await?;
    let mut established = [0u8; 39];
    tokio::time::timeout(TIMEOUT, tunnel.read_exact(&mut established)).await??;
    served.shutdown.cancel();
    tokio::time::timeout(TIMEOUT, served.task).await??;
    // The open tunnel was closed by the stop.
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, tunnel.read_to_end(&mut rest)).await??;
    Ok(())
}

#[tokio::test]
async fn run_refuses_a_configuration_it_cannot_enforce() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let config = ProxyConfig {
        loopback_exceptions: vec!["192.168.1.10:443".parse()?],
        ..ProxyConfig::default()
    };
    let error = run(listener, config, CancellationToken::new())
        .await
        .expect_err("a non-loopback exception");
    assert!(error.to_string().contains("loopback_exceptions"), "{error}");
    Ok(())
}
