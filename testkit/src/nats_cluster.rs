//! A real three-server NATS JetStream cluster on loopback, for tests that lose a
//! server mid-run. Each server has its own store and config (built like
//! `ops/nats/cluster-*.conf`); servers can be killed and started again.

use crate::{eventually, free_port, tools_bin};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Member {
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` servers routed to each other and waits until JetStream has a
    /// meta leader (a stream can be created).
    pub async fn start(size: usize) -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("paddock-nats-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut members = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("store-{i}"));
            let config = dir.path().join(format!("server-{i}.conf"));
            let text = format!(
                "server_name: paddock-{i}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: {store:?} }}\n\
                 cluster {{ name: paddock, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                routes.join(", ")
            );
            std::fs::write(&config, text).unwrap_or_else(|e| panic!("writing {config:?}: {e}"));
            members.push(Member {
                port: *port,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { members, _dir: dir };
        for i in 0..size {
            cluster.start_member(i).await;
        }
        cluster.wait_for_jetstream().await;
        cluster
    }

    /// All servers' URLs, comma separated (what a client is given).
    pub fn url(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `index` at once (SIGKILL), keeping its store.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `index` (again).
    pub async fn start_member(&mut self, index: usize) {
        let binary = tools_bin().join("nats-server");
        let member = &mut self.members[index];
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&member.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        member.child = Some(child);
        let port = member.port;
        eventually(
            Duration::from_secs(15),
            "a cluster member to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    async fn wait_for_jetstream(&self) {
        let port = self.members[0].port;
        let url = format!("127.0.0.1:{port}");
        eventually(Duration::from_secs(30), "the JetStream meta leader", || {
            let url = url.clone();
            async move {
                // A replicated stream can be created only once the cluster has a
                // JetStream meta leader.
                let client = async_nats::connect(url).await.ok()?;
                let js = async_nats::jetstream::new(client);
                let config = async_nats::jetstream::stream::Config {
                    name: "cluster-probe".into(),
                    subjects: vec!["cluster-probe".into()],
                    num_replicas: 3,
                    ..Default::default()
                };
                js.create_stream(config).await.ok()?;
                js.delete_stream("cluster-probe").await.ok().map(|_| ())
            }
        })
        .await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
