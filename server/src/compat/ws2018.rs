//! The 2018 WebSocket (reference §3), on its 2018 path `/`: the client sends
//! `{"method": "batchcompute.jobnotify", "params": {"jobId": "…"}}` and receives one
//! `{"jsonrpc": "2.0", "result": <JobResult>}` when that job ends (at once if it has). Errors are
//! 2018's shape (`error` a string, `code` beside it). Unlike 2018, an unknown job is answered
//! (404) rather than left silent, several jobs may be followed on one connection, and a closed
//! connection leaves nothing behind.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::client::V1;
use super::envelope::RpcError;
use super::{result2018, submit2018};
use crate::error::{ApiError, Code};
use crate::state::AppState;
use crate::tenants::Principal;

/// Jobs one connection may follow at once (each holds a long-poll, one of `DCC_MAX_WAITERS`).
const MAX_FOLLOWED: usize = 32;
/// Largest client message.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Pause before asking again when the server had no room for another wait.
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// Whether a request to `/` asks for a WebSocket (else it is the dashboard).
pub fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Upgrades a request to `/`. That path is public (the dashboard page): with keys configured,
/// the socket needs one (`Authorization: Bearer`, or `?access_token=`).
pub async fn serve(state: AppState, req: Request) -> Response {
    let who = match req.extensions().get::<Principal>() {
        Some(p) => p.clone(),
        None if state.keys.enabled() => {
            return ApiError::new(
                Code::Unauthorized,
                "this server needs an API key: send `Authorization: Bearer <key>` or `?access_token=`",
            )
            .into_response();
        }
        None => Principal::local(),
    };
    // A connection counts as one of DCC_MAX_WAITERS, as v1's WebSocket does.
    let permit = match state.waiter() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let v1 = V1::new(state.clone(), who, req.headers());
    match WebSocketUpgrade::from_request(req, &state).await {
        Ok(up) => up
            .max_message_size(MAX_MESSAGE_BYTES)
            .max_frame_size(MAX_MESSAGE_BYTES)
            .on_upgrade(move |socket| async move {
                connection(v1, socket).await;
                drop(permit);
            }),
        Err(e) => e.into_response(),
    }
}

/// 2018's error message.
fn error(message: &str, code: i64, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "error": message, "code": code, "data": data})
}

async fn connection(v1: V1, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    // Messages as text: a JobResult with inline logs is written once, from its text (`Payload`).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    // Dropped with the connection: its waits end with it.
    let mut followed = JoinSet::new();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => match request(&t) {
                    Ok(_) if followed.len() >= MAX_FOLLOWED => {
                        let e = error("Too many jobs followed on one connection", -32000, json!({"max": MAX_FOLLOWED}));
                        let _ = tx.try_send(e.to_string());
                    }
                    Ok(id) => {
                        followed.spawn(follow(v1.clone(), id, tx.clone()));
                    }
                    Err(e) => {
                        let _ = tx.try_send(e.to_string());
                    }
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            Some(out) = rx.recv() => {
                if sink.send(Message::Text(out.into())).await.is_err() {
                    break;
                }
            }
            Some(_) = followed.join_next(), if !followed.is_empty() => {}
        }
    }
}

/// The job id a message asks to follow, or the 2018 error for it.
fn request(text: &str) -> Result<String, Value> {
    let v: Value = serde_json::from_str(text).map_err(|_| error("Error parsing JSON-RPC", -32700, json!(text)))?;
    if v["method"] != "batchcompute.jobnotify" {
        return Err(error("Unknown method", -32601, v));
    }
    match &v["params"] {
        Value::Null => Err(error("Missing params", -32602, v)),
        p => match &p["jobId"] {
            Value::String(id) => Ok(id.clone()),
            _ => Err(error("Missing jobId parameter", -32602, v)),
        },
    }
}

/// Waits for `id` to end and sends its result (or why not).
async fn follow(v1: V1, id: String, tx: tokio::sync::mpsc::Sender<String>) {
    let out = loop {
        match submit2018::wait_ended(&v1, &id, Duration::from_millis(submit2018::WAIT_MS)).await {
            Ok(view) => match result2018::job_result(&v1, &view).await {
                Ok(r) => break notification(&r),
                Err(e) => break failure(RpcError::from(e), &id).to_string(),
            },
            // No room for another wait on this server just now: ask again shortly.
            Err(e) if e.code == 503 => tokio::time::sleep(BUSY_PAUSE).await,
            Err(e) if e.code == 404 => {
                break error("No entry found for that jobId", 404, json!({"jobId": id})).to_string();
            }
            Err(e) => break failure(e, &id).to_string(),
        }
    };
    let _ = tx.send(out).await;
}

/// `{"jsonrpc": "2.0", "result": <JobResult>}`, written from the payload.
fn notification(result: &super::envelope::Payload) -> String {
    #[derive(serde::Serialize)]
    struct Notification<'a> {
        jsonrpc: &'static str,
        result: &'a super::envelope::Payload,
    }
    let bytes = super::envelope::json_bytes(&Notification { jsonrpc: "2.0", result }, result.json_len_hint());
    // serde_json writes UTF-8: this checks it, without a copy.
    String::from_utf8(bytes).unwrap_or_default()
}

fn failure(e: RpcError, id: &str) -> Value {
    error(&e.message, e.code, json!({"jobId": id, "error": e.data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_as_2018_clients_sent_them() {
        assert_eq!(
            request(r#"{"method":"batchcompute.jobnotify","params":{"jobId":"j"}}"#),
            Ok("j".into())
        );
        let err = |t: &str| request(t).unwrap_err();
        assert_eq!(err("nope")["error"], "Error parsing JSON-RPC");
        assert_eq!(err(r#"{"method":"x"}"#)["code"], -32601);
        assert_eq!(err(r#"{"method":"batchcompute.jobnotify"}"#)["error"], "Missing params");
        assert_eq!(
            err(r#"{"method":"batchcompute.jobnotify","params":{}}"#)["error"],
            "Missing jobId parameter"
        );
    }
}
