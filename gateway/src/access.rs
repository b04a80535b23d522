//! What a caller may see: the one place that decides it. A plain user sees and acts on
//! the jobs they submitted; an admin sees all. A job of someone else is reported as
//! not found, so ids of other users' jobs are neither confirmed nor denied.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;
use paddock_contract::JobId;
use paddock_contract::api::JobView;

/// True when `caller` may read and act on `job`.
pub fn may_access(caller: &Caller, job: &JobView) -> bool {
    caller.role == Role::Admin || job.submitted_by == caller.user
}

/// The `submitted_by` filter a listing runs with: a plain user's own name whatever
/// they asked for (asking for someone else's is refused), an admin's choice.
pub fn listing_scope(
    caller: &Caller,
    requested: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (caller.role, requested) {
        (Role::Admin, requested) => Ok(requested),
        (Role::User, Some(other)) if other != caller.user => Err(ApiError::Forbidden(
            "only an admin may list other users' jobs".into(),
        )),
        (Role::User, _) => Ok(Some(caller.user.clone())),
    }
}

/// The job with `id` from the ledger, if it exists and `caller` may see it.
pub async fn visible_job(
    state: &AppState,
    caller: &Caller,
    id: JobId,
) -> Result<JobView, ApiError> {
    match state.ledger().get(id).await? {
        Some(job) if may_access(caller, &job) => Ok(job),
        _ => Err(ApiError::NotFound(format!("no job {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_contract::JobStatus;

    fn caller(user: &str, role: Role) -> Caller {
        Caller {
            user: user.into(),
            role,
        }
    }

    fn job_of(user: &str) -> JobView {
        JobView {
            id: JobId::new(),
            project: "web".into(),
            prompt: "p".into(),
            status: JobStatus::Queued,
            node: None,
            attempts: 0,
            submitted_by: user.into(),
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            exit_reason: None,
            exit_message: None,
            session_id: None,
            num_turns: None,
            cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            last_seq: 1,
            session_state: None,
            attempt_reasons: Vec::new(),
        }
    }

    #[test]
    fn users_see_their_own_jobs_and_admins_all() {
        assert!(may_access(&caller("ada", Role::User), &job_of("ada")));
        assert!(!may_access(&caller("bob", Role::User), &job_of("ada")));
        assert!(may_access(&caller("root", Role::Admin), &job_of("ada")));
    }

    #[test]
    fn users_list_only_their_own_jobs() {
        let ada = caller("ada", Role::User);
        assert_eq!(listing_scope(&ada, None), Ok(Some("ada".into())));
        assert_eq!(
            listing_scope(&ada, Some("ada".into())),
            Ok(Some("ada".into()))
        );
        assert!(listing_scope(&ada, Some("bob".into())).is_err());
        let root = caller("root", Role::Admin);
        assert_eq!(listing_scope(&root, None), Ok(None));
        assert_eq!(
            listing_scope(&root, Some("bob".into())),
            Ok(Some("bob".into()))
        );
    }
}
