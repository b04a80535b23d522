//! The double's HTTP surface, driven like a client would: non-streamed replies,
//! `count_tokens`, unknown routes, the request log, `fail_times`, and a clean stop
//! while a slow stream is open.

mod support;

use std::time::Duration;

use anyhow::Context as _;
use paddock_model_double::{RecordedRequest, Reply};
use serde_json::{Value, json};
use support::{RunningDouble, http, script};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn messages_body(prompt: &str, stream: bool) -> String {
    json!({
        "model": "claude-haiku-4-5",
        "stream": stream,
        "max_tokens": 100,
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": prompt}],
    })
    .to_string()
}

#[tokio::test]
async fn a_non_streamed_request_gets_one_json_message() -> anyhow::Result<()> {
    let double = RunningDouble::start(script(
        r#"{"conversations": [{"match": "hello", "steps": [
             {"content": [{"type": "text", "text": "Hi!"},
                          {"type": "tool_use", "name": "Bash", "input": {"command": "ls"}}]}]}]}"#,
    ))
    .await?;
    let response = http(
        double.address,
        "POST",
        "/v1/messages?beta=true",
        Some(&messages_body("hello there", false)),
    )
    .await?;
    assert_eq!(response.status, 200, "{response:?}");
    let message: Value = serde_json::from_str(&response.body)?;
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], "claude-haiku-4-5", "the model is echoed");
    assert_eq!(
        message["content"][0],
        json!({"type": "text", "text": "Hi!"})
    );
    assert_eq!(message["content"][1]["name"], "Bash");
    let id = message["content"][1]["id"].as_str().unwrap_or_default();
    assert!(id.starts_with("toolu_"), "generated tool id {id:?}");
    assert_eq!(message["stop_reason"], "tool_use");
    assert!(message["usage"]["input_tokens"].as_u64() > Some(0));
    Ok(())
}

#[tokio::test]
async fn a_streamed_request_gets_server_sent_events() -> anyhow::Result<()> {
    let double = RunningDouble::start(script(r#"{}"#)).await?;
    let response = http(
        double.address,
        "POST",
        "/v1/messages",
        Some(&messages_body("anything", true)),
    )
    .await?;
    assert_eq!(response.status, 200);
    assert!(
        response
            .headers
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        response.headers
    );
    let order = [
        "event: message_start",
        "event: content_block_start",
        "event: content_block_delta",
        "event: content_block_stop",
        "event: message_delta",
        "event: message_stop",
    ];
    let mut from = 0;
    for name in order {
        let at = response.body[from..]
            .find(name)
            .with_context(|| format!("{name} missing after byte {from}: {}", response.body))?;
        from += at + name.len();
    }
    assert!(response.body.contains("no scripted conversation matches"));
    Ok(())
}

#[tokio::test]
async fn count_tokens_and_unknown_routes_are_answered_and_recorded() -> anyhow::Result<()> {
    let double = RunningDouble::start(script("{}")).await?;
    let count = http(
        double.address,
        "POST",
        "/v1/messages/count_tokens?beta=true",
        Some(&messages_body("count me", false)),
    )
    .await?;
    assert_eq!(count.status, 200);
    let count: Value = serde_json::from_str(&count.body)?;
    assert!(count["input_tokens"].as_u64() > Some(0), "{count}");

    let unknown = http(double.address, "GET", "/v1/models", None).await?;
    assert_eq!(unknown.status, 404);
    let error: Value = serde_json::from_str(&unknown.body)?;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "not_found_error");

    let listed = http(double.address, "GET", "/_double/requests", None).await?;
    let listed: Vec<RecordedRequest> = serde_json::from_str(&listed.body)?;
    assert_eq!(listed, double.handle.requests());
    let summary: Vec<(&str, Reply)> = listed
        .iter()
        .map(|request| (request.uri.as_str(), request.reply))
        .collect();
    assert_eq!(
        summary,
        [
            ("/v1/messages/count_tokens?beta=true", Reply::TokenCount),
            ("/v1/models", Reply::Error { status: 404 })
        ]
    );

    let cleared = http(double.address, "DELETE", "/_double/requests", None).await?;
    assert_eq!(cleared.status, 204);
    assert!(double.handle.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn fail_times_fails_only_the_first_tries_of_a_step() -> anyhow::Result<()> {
    let double = RunningDouble::start(script(
        r#"{"conversations": [{"match": "busy", "steps": [
             {"error": {"status": 529, "fail_times": 2, "retry_after_seconds": 0},
              "content": [{"type": "text", "text": "finally"}]}]}]}"#,
    ))
    .await?;
    let body = messages_body("are you busy?", false);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = http(double.address, "POST", "/v1/messages", Some(&body)).await?;
        if response.status == 529 {
            let error: Value = serde_json::from_str(&response.body)?;
            assert_eq!(error["error"]["type"], "overloaded_error");
            assert!(
                response
                    .headers
                    .to_ascii_lowercase()
                    .contains("retry-after: 0")
            );
        }
        statuses.push(response.status);
    }
    assert_eq!(statuses, [529, 529, 200]);
    let replies: Vec<Reply> = double
        .handle
        .requests()
        .iter()
        .map(|request| request.reply)
        .collect();
    assert_eq!(
        replies,
        [
            Reply::Error { status: 529 },
            Reply::Error { status: 529 },
            Reply::Message
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_body_gets_a_400_not_a_crash() -> anyhow::Result<()> {
    let double = RunningDouble::start(script("{}")).await?;
    let response = http(double.address, "POST", "/v1/messages", Some("{not json")).await?;
    assert_eq!(response.status, 400);
    let error: Value = serde_json::from_str(&response.body)?;
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let after = http(
        double.address,
        "POST",
        "/v1/messages",
        Some(&messages_body("x", false)),
    )
    .await?;
    assert_eq!(after.status, 200);
    Ok(())
}

#[tokio::test]
async fn shutdown_ends_an_open_slow_stream_and_the_server() -> anyhow::Result<()> {
    let double = RunningDouble::start(script(
        r#"{"fallback": {"chunk_delay_ms": 200, "chunk_bytes": 1,
                         "content": [{"type": "text", "text": "a very slow answer indeed"}]}}"#,
    ))
    .await?;
    let mut stream = TcpStream::connect(double.address).await?;
    let body = messages_body("slow", true);
    stream
        .write_all(
            format!(
                "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains("message_start") {
            let read = stream.read(&mut buffer).await?;
            anyhow::ensure!(read > 0, "the stream closed before message_start");
            seen.extend_from_slice(&buffer[..read]);
        }
        Ok(())
    })
    .await
    .context("no message_start within 10 s")??;

    let mut double = double;
    double.shutdown.cancel();
    let served = tokio::time::timeout(Duration::from_secs(5), &mut double.task)
        .await
        .context("the server did not stop within 5 s of shutdown with a stream open")??;
    served?;
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.map(|_| rest)
    })
    .await
    .context("the open stream was not closed within 5 s of shutdown")??;
    assert!(
        !String::from_utf8_lossy(&rest).contains("message_stop"),
        "the slow stream was cut short, not played to its end"
    );
    Ok(())
}
