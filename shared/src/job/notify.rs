//! Where a job's completion webhook is (record fields `notify_state`, `notify_attempts`,
//! `notify_last_ms`, `notify_error`; written by the end scripts and the outbox scripts).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// The life of one job's webhook delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyState {
    /// The job has not ended yet.
    Waiting,
    /// Due (now, or at its next retry).
    Pending,
    /// A server is POSTing it now.
    Delivering,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed (`DCC_NOTIFY_MAX_ATTEMPTS`), or the URL may not be reached.
    Failed,
}

impl NotifyState {
    /// Parses a stored state.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => NotifyState::Waiting,
            "pending" => NotifyState::Pending,
            "delivering" => NotifyState::Delivering,
            "delivered" => NotifyState::Delivered,
            "failed" => NotifyState::Failed,
            _ => return None,
        })
    }
}

/// A job's webhook delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyRecord {
    /// Where it is.
    pub state: NotifyState,
    /// POSTs started so far.
    pub attempts: u32,
    /// When the last one ended.
    pub last_ms: Option<Millis>,
    /// Why the last one failed.
    pub error: Option<String>,
}

impl NotifyRecord {
    /// Reads the delivery fields of a record's HGETALL map; `None` for a job without `notify`.
    pub fn from_hash(m: &HashMap<String, String>) -> Option<Self> {
        let state = NotifyState::parse(m.get("notify_state")?)?;
        let field = |k: &str| m.get(k).filter(|v| !v.is_empty());
        Some(NotifyRecord {
            state,
            attempts: field("notify_attempts").and_then(|v| v.parse().ok()).unwrap_or(0),
            last_ms: field("notify_last_ms").and_then(|v| v.parse().ok()),
            error: field("notify_error").cloned(),
        })
    }
}
