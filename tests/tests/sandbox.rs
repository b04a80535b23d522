//! The node runs the real CLI inside the sandbox: a scripted agent tries to read a
//! secret in its HOME, write outside its workspace and reach a host that is not on the
//! allowlist; each attempt fails inside the sandbox, the refused request is recorded in
//! the job's events, the allowed work goes through, and the node is unharmed.

use paddock_contract::{EventBody, JobOptions};
use paddock_tests::{Agent, Cluster, ClusterOptions, kinds};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_sandboxed_agent_cannot_read_secrets_escape_or_reach_other_hosts() {
    let marker = format!("outside-{}", std::process::id());
    let outside = std::env::temp_dir().join(&marker);
    let reach = "exec 3<>/dev/tcp/127.0.0.1/3128 && printf 'CONNECT example.com:443 HTTP/1.1\\r\\nHost: example.com:443\\r\\n\\r\\n' >&3 && head -1 <&3";
    let script = json!({"conversations": [{
        "match": "try to escape",
        "steps": [
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "cat ~/.ssh/id_ed25519", "description": "read a key"}}]},
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": format!("echo escaped > {}", outside.display()), "description": "write outside"}}]},
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": reach, "description": "reach a host"}}]},
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo fine > inside.txt", "description": "work"}}]},
            {"content": [{"type": "text", "text": "done"}]}
        ]
    }]});
    let cluster = Cluster::start(ClusterOptions {
        agent: Agent::RealCli { script },
        sandbox: true,
        ..Default::default()
    })
    .await;
    let ssh = cluster.dir().join("agent-home-node-a/.ssh");
    std::fs::create_dir_all(&ssh).expect("mkdir");
    std::fs::write(ssh.join("id_ed25519"), "SECRET-KEY-MATERIAL").expect("plant");

    let job = cluster
        .submit(
            "try to escape",
            JobOptions {
                allowed_tools: vec!["Bash".into()],
                ..Default::default()
            },
        )
        .await;
    let events = cluster
        .follow_to_end(job, 0, Duration::from_secs(120))
        .await;
    let seen = kinds(&events);
    assert!(
        matches!(events[events.len() - 1].body, EventBody::Completed { .. }),
        "{seen:?}"
    );
    let results: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolResult { content, .. } => Some(content.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 4, "{results:?}");
    for event in &events {
        let text = serde_json::to_string(event).expect("json");
        assert!(
            !text.contains("SECRET-KEY-MATERIAL"),
            "the secret leaked: {text}"
        );
    }
    assert!(!outside.exists(), "the agent wrote outside its workspace");
    assert!(
        results[2].contains("403"),
        "the proxy refused the host: {results:?}"
    );
    assert!(
        events.iter().any(|e| matches!(&e.body, EventBody::SandboxNotice { notice, detail } if notice == "egress_refused" && detail.contains("example.com"))),
        "the refusal is recorded: {seen:?}"
    );
    assert_eq!(
        std::fs::read_to_string(cluster.project_dir.join("inside.txt"))
            .map(|s| s.trim().to_string())
            .ok(),
        Some("fine".to_string())
    );
    // The node is unharmed and reports its sandbox ready.
    let ready = reqwest::get(format!(
        "http://127.0.0.1:{}/readyz",
        cluster.node_metrics_port
    ))
    .await
    .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
}
