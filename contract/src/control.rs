//! Control requests sent by request/reply to the node that runs a job. No responder
//! means no node runs the job right now.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Stop the job: SIGTERM, then SIGKILL after the node's grace period.
    Cancel { by: String },
    /// A follow-up message into the live session.
    Message { text: String, by: String },
    /// An answer to an `approval.requested` event.
    Approve {
        request_id: String,
        allow: bool,
        #[serde(default)]
        reason: Option<String>,
        by: String,
    },
    /// Interrupt the current turn; the session goes on.
    Interrupt { by: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ControlReply {
    Accepted,
    /// The job is known to the node but the request does not apply (it already ended).
    Refused {
        reason: String,
    },
}
