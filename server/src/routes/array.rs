//! Array jobs' children: `GET /api/v1/jobs/{id}/children`, paged by index. Children not made yet
//! are shown as they will be (queued, attempt 0), or `cancelled` once their array ended without
//! them (cancelled, or failed by a dependency).

use std::collections::HashMap;

use axum::Json;
use axum::extract::Extension;
use axum::extract::{Path, Query, State};
use dcc_shared::job::{ChildOf, JobId, JobRecord, JobState, JobView};

use super::jobs::JobList;
use super::load;
use crate::error::{ApiError, ErrorBody};
use crate::routes::query::Params;
use crate::state::AppState;
use crate::tenants::Principal;

/// Children per page when `limit` is absent.
const DEFAULT_PAGE: u32 = 100;

/// `GET /api/v1/jobs/{id}/children?cursor=&limit=`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/children", tag = "jobs", operation_id = "listChildren", summary = "An array job's children, by index",
    params(("id" = String, Path, description = "The array (parent) job's id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Children per page (default 100)"),
        ("cursor" = Option<String>, Query, description = "The previous page's nextCursor")),
    responses((status = 200, description = "A page of children, by index", body = JobList),
        (status = 400, description = "INVALID_REQUEST: not an array job, or a bad limit or cursor", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody)))]
pub async fn children(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<JobList>, ApiError> {
    let q = Params::only(q, &["limit", "cursor"])?;
    let limit = q.limit(DEFAULT_PAGE)?;
    let from = q
        .number(
            "cursor",
            0..=u32::MAX,
            "cursor must be the nextCursor of a previous page, unchanged",
        )?
        .unwrap_or(0);
    let parent = load(&state, &who, &id).await?;
    let (Some(array), Some(counts)) = (parent.spec.array, parent.array) else {
        return Err(ApiError::bad_param("id", format!("job {id} is not an array job")));
    };
    let to = from.saturating_add(limit).min(array.size);
    let made_ids: Vec<JobId> = (from..to.min(counts.made))
        .filter_map(|i| child_id(&parent, i))
        .collect();
    let mut made = state.queue.get_many(&made_ids).await?.into_iter();
    let mut jobs = Vec::with_capacity(to.saturating_sub(from) as usize);
    for i in from..to {
        let view = match i < counts.made {
            true => made.next().map(|r| r.view()),
            false => unmade(&parent, i),
        };
        jobs.extend(view.map(|v| who.view(v)));
    }
    Ok(Json(JobList {
        jobs,
        next_cursor: (to < array.size).then(|| to.to_string()),
    }))
}

/// The id of child `index` of `parent`.
fn child_id(parent: &JobRecord, index: u32) -> Option<JobId> {
    JobId::parse(&format!("{}.{index}", parent.id)).ok()
}

/// A child not made yet, as it will start: queued, attempt 0 (cancelled when its array ended).
fn unmade(parent: &JobRecord, index: u32) -> Option<JobView> {
    let mut r = parent.clone();
    r.id = child_id(parent, index)?;
    r.state = match parent.state.is_terminal() {
        true => JobState::Cancelled,
        false => JobState::Queued,
    };
    r.attempt = 0;
    (r.started_ms, r.exit_code, r.error, r.worker, r.image_digest, r.stats) = (None, None, None, None, None, None);
    r.finished_ms = (r.state == JobState::Cancelled).then_some(parent.finished_ms).flatten();
    r.outputs.clear();
    r.array = None;
    r.child_of = Some(ChildOf {
        parent: parent.id.clone(),
        index,
    });
    Some(r.view())
}
