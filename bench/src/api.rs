//! The few REST calls the benchmark makes, over reqwest with a kept-alive connection:
//! submit a one-turn job, read a job, list a user's jobs by status with paging. The
//! submission body is written here as plain JSON (`project` and `prompt` only) and
//! only the fields the benchmark needs are read back, so it keeps working against
//! gateway binaries built from an older or newer contract than its own.

use anyhow::{Context, bail};
use paddock_contract::{JobId, JobStatus};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// The project every job goes to.
pub const PROJECT: &str = "bench";

/// Page size of the ledger listing (the gateway's largest).
const PAGE: u32 = 200;

/// The fields of a ledger row (`JobView`) the benchmark reads.
#[derive(Clone, Debug, Deserialize)]
pub struct JobRow {
    pub id: JobId,
    pub status: JobStatus,
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    #[serde(default)]
    pub exit_reason: Option<String>,
    #[serde(default)]
    pub exit_message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JobPage {
    jobs: Vec<JobRow>,
    #[serde(default)]
    next_before: Option<JobId>,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// Sends a request and reads a JSON answer, or the gateway's error.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("reading the gateway's answer")?;
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "unexpected answer from the gateway: {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// `POST /v1/jobs` with a one-turn prompt and default options; the new job's id.
    pub async fn submit(&self) -> anyhow::Result<JobId> {
        let body = serde_json::json!({"project": PROJECT, "prompt": "hi"});
        let accepted: serde_json::Value = self
            .send(self.http.post(format!("{}/v1/jobs", self.base)).json(&body))
            .await
            .context("submitting a job")?;
        accepted
            .get("job_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("no job id in the gateway's answer: {accepted}"))
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: JobId) -> anyhow::Result<JobRow> {
        self.send(self.http.get(format!("{}/v1/jobs/{id}", self.base)))
            .await
    }

    /// This user's jobs in `status` that are among `wanted`, every page.
    pub async fn list(
        &self,
        status: JobStatus,
        wanted: &HashSet<JobId>,
    ) -> anyhow::Result<Vec<JobRow>> {
        let mut found = Vec::new();
        let mut before: Option<JobId> = None;
        // Bounded: a page per PAGE jobs wanted, and one more.
        for _ in 0..=wanted.len() / PAGE as usize + 1 {
            let mut query = vec![
                ("status", status.as_str().to_string()),
                ("limit", PAGE.to_string()),
            ];
            if let Some(before) = before {
                query.push(("before", before.to_string()));
            }
            let page: JobPage = self
                .send(
                    self.http
                        .get(format!("{}/v1/jobs", self.base))
                        .query(&query),
                )
                .await
                .context("listing jobs")?;
            found.extend(page.jobs.into_iter().filter(|job| wanted.contains(&job.id)));
            match page.next_before {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        Ok(found)
    }
}
