//! `GET /api/v1/stats`: the history of a time range (see `dcc_shared::history`), one point per
//! step and queue. A tenant's key counts its own jobs and sees the fleet's capacity, not the
//! depth other tenants make; an admin's counts everyone's, or one tenant's with `tenant=`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use dcc_shared::clock::{now_ms, parse_rfc3339};
use dcc_shared::history::{MAX_POINTS, MAX_SPAN, Scope, minute_range, summarize};
use dcc_shared::job::QueueName;

use crate::error::{ApiError, ErrorBody};
use crate::routes::query::Params;
use crate::state::AppState;
use crate::tenants::Principal;
pub use dcc_shared::api::Stats;

/// The range when `from` is absent: the last hour.
const DEFAULT_SPAN_MS: i64 = 3600 * 1000;

/// Ranges read from Redis at once by this server: a week is ~10,000 hashes, so a caller asking
/// again and again waits its turn instead of taking Redis's time from the queue.
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `GET /api/v1/stats?from=&to=&step=&queue=&tenant=`.
#[utoipa::path(get, path = "/api/v1/stats", tag = "fleet", operation_id = "stats", summary = "History: jobs and the fleet minute by minute",
    params(
        ("from" = Option<String>, Query, description = "Start: RFC 3339 or ms since the epoch (default: an hour before `to`), rounded down to a minute"),
        ("to" = Option<String>, Query, description = "End, exclusive: RFC 3339 or ms since the epoch (default: now), rounded up to a minute; at most 7 days after `from`"),
        ("step" = Option<u32>, Query, minimum = 60, maximum = 86400, description = "Seconds per point, a whole number of minutes (default 60); at most 1440 points"),
        ("queue" = Option<QueueName>, Query, description = "Only this queue"),
        ("tenant" = Option<String>, Query, description = "Only this tenant's jobs (admins; a tenant's key may name only itself)")),
    responses((status = 200, description = "One point per step and queue", body = Stats),
        (status = 400, description = "INVALID_REQUEST: an unknown or malformed parameter, a range too long or with too many points", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: a tenant's key asked for another tenant", body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Stats>, ApiError> {
    let q = Params::only(q, &["from", "to", "step", "queue", "tenant"])?;
    let scope = scope(&q, &who, now_ms())?;
    let (first, last) = scope.minutes();
    let buckets = {
        // (never closed: an error cannot come)
        let _turn = READS.acquire().await.ok();
        state.queue.history(first, last).await?
    };
    Ok(Json(summarize(&buckets, &scope)))
}

/// What the query asks for, checked.
fn scope(q: &Params, who: &Principal, now: i64) -> Result<Scope, ApiError> {
    let to = time(q, "to")?.unwrap_or(now);
    let from = time(q, "from")?.unwrap_or(to - DEFAULT_SPAN_MS);
    if from >= to {
        return Err(ApiError::bad_param("from", "from must be before to"));
    }
    if to - from > MAX_SPAN.as_millis() as i64 {
        return Err(ApiError::bad_param("to", "a range is at most 7 days long"));
    }
    let step_why = "step must be a whole number of minutes in seconds, from 60 to 86400";
    let step = q.number("step", 60..=86_400, step_why)?.unwrap_or(60);
    if step % 60 != 0 {
        return Err(ApiError::bad_param("step", step_why));
    }
    let step_minutes = i64::from(step / 60);
    let (first, last) = minute_range(from, to);
    let minutes = last - first;
    if (minutes + step_minutes - 1) / step_minutes > MAX_POINTS {
        let least = (minutes + MAX_POINTS - 1) / MAX_POINTS * 60;
        return Err(ApiError::bad_param(
            "step",
            format!("at most {MAX_POINTS} points: use a step of {least} s or more for this range"),
        ));
    }
    let queue = match q.text("queue") {
        Some(s) => Some(QueueName::parse(s).ok_or_else(|| ApiError::bad_param("queue", "queue must be cpu or gpu"))?),
        None => None,
    };
    let tenant = who.tenant_filter(q.text("tenant"))?;
    Ok(Scope {
        from,
        to,
        step_minutes,
        tenant,
        fleet: who.is_admin(),
        queue,
    })
}

/// `k` as RFC 3339 or ms since the epoch.
fn time(q: &Params, k: &str) -> Result<Option<i64>, ApiError> {
    q.text(k)
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .or_else(|| parse_rfc3339(s))
                .ok_or_else(|| ApiError::bad_param(k, format!("{k} must be an RFC 3339 time or ms since the epoch")))
        })
        .transpose()
}
