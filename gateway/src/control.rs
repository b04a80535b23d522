//! Control requests to the node that runs a job, by NATS request/reply on the job's
//! control subject. Only the node running the job subscribes to it, so "no responders"
//! means no node runs the job right now (it is queued, has ended, or its node is gone).

use crate::error::ApiError;
use crate::state::AppState;
use paddock_contract::control::{ControlReply, ControlRequest};
use paddock_contract::{JobId, subjects};
use std::time::Duration;

/// How long a node has to answer a control request.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// What came of a control request.
#[derive(Debug)]
pub enum ControlOutcome {
    Accepted,
    Refused(String),
    NoResponder,
}

/// Sends `request` to whichever node serves the job's control subject.
pub async fn send(
    state: &AppState,
    id: JobId,
    request: &ControlRequest,
) -> Result<ControlOutcome, ApiError> {
    let payload = serde_json::to_vec(request).map_err(|_| ApiError::Internal)?;
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(CONTROL_TIMEOUT));
    match state
        .nats()
        .send_request(subjects::job_control(&id), request)
        .await
    {
        Ok(message) => match serde_json::from_slice::<ControlReply>(&message.payload) {
            Ok(ControlReply::Accepted) => Ok(ControlOutcome::Accepted),
            Ok(ControlReply::Refused { reason }) => Ok(ControlOutcome::Refused(reason)),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "a node answered a control request with something else");
                Err(ApiError::Unavailable(
                    "the node running the job gave an answer the gateway does not understand"
                        .into(),
                ))
            }
        },
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            Ok(ControlOutcome::NoResponder)
        }
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            tracing::warn!(job = %id, "control request timed out");
            Err(ApiError::Unavailable(
                "the node running the job did not answer; try again".into(),
            ))
        }
        Err(e) => Err(ApiError::bus("control request failed", e)),
    }
}

/// Whether `node` is connected: it answers on its ping subject.
pub async fn node_answers(state: &AppState, node: &str) -> bool {
    let request = async_nats::Request::new()
        .payload("ping".into())
        .timeout(Some(Duration::from_secs(3)));
    state
        .nats()
        .send_request(subjects::node_ping(node), request)
        .await
        .is_ok()
}
