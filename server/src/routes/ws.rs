//! Live status over a WebSocket (`GET /api/v1/ws`).
//!
//! Client → server: `{"subscribe": ["id", …]}`, `{"subscribe": "*"}`, `{"unsubscribe": [...]}`
//! (or `"*"`). Server → client, in order per job: `{"type": "status", …}` for `queued`/`running`,
//! `{"type": "finished", "job": <view>}` once it ends, `{"type": "deleted", "jobId"}` when it is
//! deleted, `{"type": "error", …}` for an unknown id or a bad message, and to a `*` follower
//! `{"type": "resync", …}` when it missed events. Subscribing to a job
//! sends its current state at once (its `finished` if it already ended). Events come from the
//! process's one Redis subscription, so jobs submitted on other servers and run by any worker show
//! up too; there is no polling per subscriber, and a closed connection leaves nothing behind.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use dcc_shared::clock::rfc3339;
use dcc_shared::events::{Event, EventStatus, JobEvent};
use dcc_shared::job::{JobId, JobRecord, JobState, JobView};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::error::Code;
use crate::finished::Ended;
use crate::state::AppState;
use crate::tenants::Principal;

/// Most job ids one connection may ask for by id over its life, known or not (`*` follows all
/// without a list): each costs a Redis read, and the known ones memory.
const MAX_SUBSCRIPTIONS: usize = 10_000;
/// Largest client message (and frame): commands are small; a bigger one is refused by the
/// WebSocket layer before it is buffered, and the connection closes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// `GET /api/v1/ws`.
#[utoipa::path(get, path = "/api/v1/ws", tag = "live", operation_id = "websocket", summary = "Follow jobs live over a WebSocket",
    description = "WebSocket of job events. Send `{\"subscribe\": [ids]}` or `{\"subscribe\": \"*\"}`; receive `status` events and one `finished` event with the job view per job (see docs/api.md). Browsers may pass the API key as `?access_token=`.",
    responses((status = 101, description = "Switching protocols"),
        (status = 400, description = "Not a WebSocket upgrade")))]
pub async fn ws(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let permit = match state.waiter() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            connection(state, who, socket).await;
            drop(permit);
        })
}

/// Most job → tenant answers one connection remembers (for `*` of a non-admin).
const MAX_OWNERS: usize = 10_000;

/// What one connection follows.
struct Follow {
    /// Whose connection it is: it follows only jobs this principal may see.
    who: Principal,
    /// Whether jobs seen through `*` are this principal's (non-admins), bounded.
    owners: HashMap<String, bool>,
    /// Every job.
    all: bool,
    /// These jobs.
    ids: HashSet<String>,
    /// Followed jobs whose `finished` went out (an event and a resync never both send it).
    finished: HashSet<String>,
    /// Ids asked for so far, known or not.
    asked: usize,
}

async fn connection(state: AppState, who: Principal, socket: WebSocket) {
    // Subscribed before anything is read, so no event between a read and the follow is missed.
    let mut events = state.events.subscribe();
    let (mut out, mut inbound) = socket.split();
    let mut follow = Follow {
        who,
        owners: HashMap::new(),
        all: false,
        ids: HashSet::new(),
        finished: HashSet::new(),
        asked: 0,
    };
    let mut closing = false;
    loop {
        let messages: Vec<Out> = tokio::select! {
            msg = inbound.next() => match msg {
                Some(Ok(Message::Text(text))) => made(command(&state, &mut follow, text.as_str()).await),
                Some(Ok(Message::Binary(_))) => made(vec![error(None, Code::InvalidRequest, "send JSON text messages")]),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            },
            ev = events.recv() => match ev {
                Ok(Event::Job(ev)) => {
                    let (batch, then) = gather(&mut events, ev, follow.all).await;
                    let mut messages = on_events(&state, &mut follow, batch).await;
                    match then {
                        Then::Go => {}
                        Then::Resync => messages.extend(made(resync(&state, &mut follow).await)),
                        Then::Close => closing = true,
                    }
                    messages
                }
                Ok(Event::Resync) | Err(RecvError::Lagged(_)) => made(resync(&state, &mut follow).await),
                Err(RecvError::Closed) => break,
            },
        };
        if !send_all(&mut out, messages).await {
            return;
        }
        if closing {
            break;
        }
    }
}

/// A message to send.
enum Out {
    /// Made for this connection.
    Made(Value),
    /// One text that every connection sending it shares (an ended job's `finished`).
    Shared(Utf8Bytes),
}

fn made(messages: Vec<Value>) -> Vec<Out> {
    messages.into_iter().map(Out::Made).collect()
}

/// Sends `messages` in order, in one write where they fit rather than a write each; false when
/// the client is gone.
async fn send_all(out: &mut SplitSink<WebSocket, Message>, messages: Vec<Out>) -> bool {
    if messages.is_empty() {
        return true;
    }
    for (i, m) in messages.into_iter().enumerate() {
        let text = match m {
            Out::Made(v) => v.to_string().into(),
            Out::Shared(t) => t,
        };
        if out.feed(Message::Text(text)).await.is_err() {
            return false;
        }
        // A socket with room never makes a send wait: a batch's messages would hold this
        // runtime thread from every other request until the last went out.
        if i % 16 == 15 {
            tokio::task::yield_now().await;
        }
    }
    out.flush().await.is_ok()
}

/// How long a connection following `*` gathers events before it handles them: the records of
/// the jobs that ended meanwhile are then read in one round trip, instead of one each (a
/// dashboard following a busy fleet cost Redis a request per finished job). A connection
/// following ids only takes what has arrived already, without waiting.
const LINGER: Duration = Duration::from_millis(10);
/// Most events handled together (their messages are made in one go, without yielding).
const MAX_BATCH: usize = 64;

/// What comes after a batch of events.
enum Then {
    /// The next events.
    Go,
    /// Events were missed: read the followed jobs again.
    Resync,
    /// The process's events ended: so does the connection.
    Close,
}

/// `first` and the events that follow it within [`LINGER`] (following `*`) or at once.
async fn gather(events: &mut broadcast::Receiver<Event>, first: JobEvent, all: bool) -> (Vec<JobEvent>, Then) {
    let until = tokio::time::Instant::now() + if all { LINGER } else { Duration::ZERO };
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        // (an event already there is taken even once the time is up: the receive is polled first)
        match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) => break,
            Ok(Ok(Event::Job(ev))) => batch.push(ev),
            Ok(Ok(Event::Resync) | Err(RecvError::Lagged(_))) => return (batch, Then::Resync),
            Ok(Err(RecvError::Closed)) => return (batch, Then::Close),
        }
    }
    (batch, Then::Go)
}

fn error(job: Option<&str>, code: Code, message: &str) -> Value {
    let mut v = json!({"type": "error", "code": code.as_str(), "message": message});
    if let Some(j) = job {
        v["jobId"] = json!(j);
    }
    v
}

fn ids_of(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect(),
        _ => None,
    }
}

async fn command(state: &AppState, follow: &mut Follow, text: &str) -> Vec<Value> {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return vec![error(None, Code::InvalidJson, "messages must be JSON")];
    };
    let mut out = Vec::new();
    if let Some(ids) = msg.get("unsubscribe").and_then(ids_of) {
        for id in ids {
            if id == "*" {
                follow.all = false;
            } else {
                for stored in follow.who.candidates(&id) {
                    follow.ids.remove(&stored);
                    follow.finished.remove(&stored);
                }
            }
        }
    }
    if let Some(ids) = msg.get("subscribe").and_then(ids_of) {
        for id in ids {
            if id == "*" {
                follow.all = true;
                continue;
            }
            if follow.asked >= MAX_SUBSCRIPTIONS {
                out.push(error(
                    Some(&id),
                    Code::TooLarge,
                    "too many subscriptions on one connection",
                ));
                continue;
            }
            follow.asked += 1;
            out.extend(current(state, follow, &id).await);
        }
    } else if msg.get("unsubscribe").is_none() {
        out.push(error(
            None,
            Code::InvalidRequest,
            "send {\"subscribe\": [ids] | \"*\"} or {\"unsubscribe\": …}",
        ));
    }
    out
}

/// Starts following `id` and says where it is now.
async fn current(state: &AppState, follow: &mut Follow, id: &str) -> Vec<Value> {
    // The same lookup as the HTTP routes: the caller's spelling, its own tenant's jobs only.
    let job = match super::load(state, &follow.who, id).await {
        Ok(job) => job,
        Err(e) if e.code == Code::NotFound => return vec![error(Some(id), Code::NotFound, "no such job")],
        Err(e) => return vec![error(Some(id), e.code, &e.message)],
    };
    let stored = job.id.to_string();
    follow.ids.insert(stored.clone());
    if job.state.is_terminal() {
        // Asked for explicitly: answered even if this connection saw it end before.
        follow.finished.insert(stored);
        vec![finished_message(&follow.who, job.view())]
    } else {
        vec![
            json!({"type": "status", "jobId": id, "status": job.state.as_str(), "attempt": job.attempt,
                    "at": rfc3339(job.started_ms.unwrap_or(job.created_ms))}),
        ]
    }
}

/// A job's `finished` message, unless this connection already sent it for a job it follows by
/// id. (A job followed through `*` alone ends with one event, so nothing is remembered for it
/// and the connection's memory stays bounded by its subscriptions.)
fn finished(follow: &mut Follow, view: JobView) -> Option<Value> {
    first_end(follow, &view.job_id).then(|| finished_message(&follow.who, view))
}

/// The `finished` message of the job `view` shows, as `who` is sent it (its own spelling of ids).
fn finished_message(who: &Principal, view: JobView) -> Value {
    json!({"type": "finished", "job": who.view(view)})
}

/// [`finished`] of a job whose end this process shares among its connections: admins all send
/// one text, made once, and the job's tenant's connections another.
fn finished_shared(follow: &mut Follow, job: &Ended) -> Option<Out> {
    if !first_end(follow, job.record.id.as_str()) {
        return None;
    }
    let who = &follow.who;
    let make = |r: &JobRecord| finished_message(who, r.view()).to_string();
    Some(Out::Shared(match who.is_admin() {
        true => job.admin_message(make),
        false => job.tenant_message(&who.tenant, make),
    }))
}

/// Whether this connection has not sent the `finished` of `job_id` yet (and now will).
fn first_end(follow: &mut Follow, job_id: &str) -> bool {
    !follow.ids.contains(job_id) || follow.finished.insert(job_id.to_string())
}

/// Learns who owns the jobs of `batch` this connection follows through `*` alone and has not
/// seen yet, in one read for the whole batch (admins see all, so they read nothing). A job whose
/// owner could not be read stays unknown: its events are not sent, and its next one asks again.
async fn learn_owners(state: &AppState, follow: &mut Follow, batch: &[JobEvent]) {
    if !follow.all || follow.who.is_admin() {
        return;
    }
    let mut unknown: Vec<JobId> = Vec::new();
    for ev in batch {
        if follow.ids.contains(&ev.job_id) || follow.owners.contains_key(&ev.job_id) {
            continue;
        }
        if let Ok(id) = JobId::parse(&ev.job_id)
            && !unknown.contains(&id)
        {
            unknown.push(id);
        }
    }
    if unknown.is_empty() {
        return;
    }
    let Ok(tenants) = state.queue.tenants_of(&unknown).await else {
        return;
    };
    if follow.owners.len() + unknown.len() > MAX_OWNERS {
        follow.owners.clear();
    }
    for (id, tenant) in unknown.into_iter().zip(tenants) {
        let mine = tenant.is_some_and(|t| follow.who.owns(&t));
        follow.owners.insert(id.to_string(), mine);
    }
}

/// Whether this connection sends the events of `job_id`: followed by id, or through `*` and
/// the caller's own (see [`learn_owners`]).
fn visible(follow: &Follow, job_id: &str) -> bool {
    follow.ids.contains(job_id)
        || (follow.all && (follow.who.is_admin() || follow.owners.get(job_id).copied().unwrap_or(false)))
}

/// A message of a batch: ready, or the `finished` of the ended job at this index of the
/// batch's reads.
enum Step {
    Now(Value),
    Ended(usize),
}

/// The messages for `batch`, in order; the records of the jobs that ended in it read together.
async fn on_events(state: &AppState, follow: &mut Follow, batch: Vec<JobEvent>) -> Vec<Out> {
    let mut steps = Vec::with_capacity(batch.len());
    let mut ended = Vec::new();
    learn_owners(state, follow, &batch).await;
    for ev in batch {
        if !visible(follow, &ev.job_id) {
            continue;
        }
        match ev.status {
            EventStatus::Now(JobState::Queued | JobState::Running) => steps.push(Step::Now(
                json!({"type": "status", "jobId": follow.who.external(&ev.job_id), "status": ev.status.as_str(),
                                                "attempt": ev.attempt, "at": rfc3339(ev.at)}),
            )),
            EventStatus::Deleted => {
                follow.ids.remove(&ev.job_id);
                follow.owners.remove(&ev.job_id);
                steps.push(Step::Now(
                    json!({"type": "deleted", "jobId": follow.who.external(&ev.job_id)}),
                ));
            }
            _ => {
                if let Ok(id) = JobId::parse(&ev.job_id) {
                    steps.push(Step::Ended(ended.len()));
                    ended.push((id, ev.at));
                }
            }
        }
    }
    let records = match ended.is_empty() {
        true => Vec::new(),
        false => state
            .ended
            .get_many(&state.queue, &ended)
            .await
            .unwrap_or_else(|_| vec![None; ended.len()]),
    };
    steps
        .into_iter()
        .filter_map(|s| match s {
            Step::Now(v) => Some(Out::Made(v)),
            Step::Ended(i) => records[i].as_ref().and_then(|job| finished_shared(follow, job)),
        })
        .collect()
}

/// Events may have been missed: tell followers of jobs that ended meanwhile, and a `*`
/// follower that it missed some (it has no list to re-read: `{"type": "resync"}` asks it to
/// re-read the jobs it shows, e.g. `GET /api/v1/jobs`). Every time: a lost subscription makes
/// two (lost, and back), and the second is the one after which nothing is missed.
async fn resync(state: &AppState, follow: &mut Follow) -> Vec<Value> {
    let mut out = Vec::new();
    if follow.all {
        out.push(json!({"type": "resync", "message": "events were missed (this connection fell behind, or the server lost Redis for a while): re-read the jobs you show"}));
    }
    let pending: Vec<JobId> = follow
        .ids
        .iter()
        .filter(|id| !follow.finished.contains(*id))
        .filter_map(|id| JobId::parse(id).ok())
        .collect();
    let Ok(jobs) = state.queue.get_many(&pending).await else {
        return out;
    };
    out.extend(
        jobs.into_iter()
            .filter(|j| j.state.is_terminal())
            .filter_map(|j| finished(follow, j.view())),
    );
    out
}
