//! A typed client of DCC's v1 API: the calls of `api-v1.md` with the server's own answer types
//! ([`dcc_shared::api`], [`JobView`]). The `dcc` CLI, the 2018 adapter and the end-to-end tests
//! all use it, so there is one way to call the API and read its answers.
//!
//! # Layout
//! - [`transport`]: how a request reaches a server: [`Http`] over the network, or any other
//!   [`Transport`] (the 2018 adapter calls its own router in-process).
//! - [`error`]: what a call fails with: the contract's error body, an unexpected answer, or no
//!   answer at all.

pub mod error;
pub mod transport;

use bytes::Bytes;
use dcc_shared::api::{CancelAnswer, FastAnswer, JobList, Queues, SubmitAnswer, SubmitOk, Workers};
use dcc_shared::job::{JobState, JobView};
use futures_util::StreamExt;
use http::{Method, StatusCode, header};

pub use error::Error;
pub use transport::{Body, BodyStream, Http, Reply, Transport};

/// The v1 API through a transport.
#[derive(Clone)]
pub struct Client<T> {
    transport: T,
}

/// One of a job's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// Its stdout.
    Stdout,
    /// Its stderr.
    Stderr,
}

impl Log {
    /// The name of its route (`stdout`, `stderr`).
    pub fn as_str(self) -> &'static str {
        match self {
            Log::Stdout => "stdout",
            Log::Stderr => "stderr",
        }
    }
}

/// What a submission did.
#[derive(Clone, Debug)]
pub enum Submitted {
    /// `201`: queued now.
    Queued(SubmitAnswer),
    /// `200`: the same id with the same definition was submitted before; that job.
    Existing(SubmitAnswer),
    /// `200` to `wait: true`: the job once it ended.
    Ended(Box<JobView>),
}

impl Submitted {
    /// The job's id.
    pub fn job_id(&self) -> &str {
        match self {
            Submitted::Queued(a) | Submitted::Existing(a) => &a.job_id,
            Submitted::Ended(v) => &v.job_id,
        }
    }
}

/// The filters of a listing page.
#[derive(Clone, Debug, Default)]
pub struct ListQuery<'a> {
    /// Only jobs in this state.
    pub status: Option<JobState>,
    /// At most this many (the server's default when absent).
    pub limit: Option<usize>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<&'a str>,
}

impl<T: Transport> Client<T> {
    /// A client sending through `transport`.
    pub fn new(transport: T) -> Self {
        Client { transport }
    }

    /// Its transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// `method path` with `body` (of `content_type`); the answer whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<Reply, Error> {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(body).map_err(|e| Error::Transport {
            at: None,
            why: format!("not a request to {path}: {e}"),
        })?;
        self.transport.send(req).await
    }

    /// `method path` with a JSON body; the answer whatever its status.
    pub async fn send_json(&self, method: Method, path: &str, json: &impl serde::Serialize) -> Result<Reply, Error> {
        let body = serde_json::to_vec(json).map_err(|e| Error::Transport {
            at: None,
            why: format!("the body is not JSON: {e}"),
        })?;
        self.send(method, path, Body::Bytes(body.into()), Some("application/json"))
            .await
    }

    async fn get<R: serde::de::DeserializeOwned>(&self, path: &str) -> Result<R, Error> {
        self.send(Method::GET, path, Body::Empty, None).await?.json().await
    }

    /// `POST /api/v1/jobs` with a job JSON.
    pub async fn submit(&self, job: &impl serde::Serialize) -> Result<Submitted, Error> {
        submitted(self.send_json(Method::POST, "/api/v1/jobs", job).await?).await
    }

    /// `POST /api/v1/jobs` with a multipart body (`content_type` names its boundary).
    pub async fn submit_multipart(&self, content_type: &str, body: Body) -> Result<Submitted, Error> {
        submitted(
            self.send(Method::POST, "/api/v1/jobs", body, Some(content_type))
                .await?,
        )
        .await
    }

    /// `POST /api/v1/run`: a fast job's ended view with its logs and outputs inline.
    pub async fn run(&self, job: &impl serde::Serialize) -> Result<FastAnswer, Error> {
        self.send_json(Method::POST, "/api/v1/run", job).await?.json().await
    }

    /// A job's view.
    pub async fn job(&self, id: &str) -> Result<JobView, Error> {
        self.get(&job_path(id, "")).await
    }

    /// Long-polls job `id` for at most `secs`: its view once ended, `None` when it had not.
    pub async fn wait(&self, id: &str, secs: u64) -> Result<Option<JobView>, Error> {
        match self.get(&job_path(id, &format!("/wait?timeoutSecs={secs}"))).await {
            Ok(view) => Ok(Some(view)),
            Err(e) if e.is("WAIT_TIMEOUT") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Cancels job `id`.
    pub async fn cancel(&self, id: &str) -> Result<CancelAnswer, Error> {
        self.send(Method::POST, &job_path(id, "/cancel"), Body::Empty, None)
            .await?
            .json()
            .await
    }

    /// Deletes job `id` and its files.
    pub async fn delete(&self, id: &str) -> Result<(), Error> {
        self.send(Method::DELETE, &job_path(id, ""), Body::Empty, None)
            .await?
            .ok()
            .await
            .map(drop)
    }

    /// A page of the caller's jobs, newest first.
    pub async fn list(&self, q: &ListQuery<'_>) -> Result<JobList, Error> {
        let mut query = Vec::new();
        if let Some(s) = q.status {
            query.push(format!("status={}", s.as_str()));
        }
        if let Some(l) = q.limit {
            query.push(format!("limit={l}"));
        }
        if let Some(c) = q.cursor {
            query.push(format!("cursor={}", encoded(c)));
        }
        let path = match query.is_empty() {
            true => "/api/v1/jobs".to_string(),
            false => format!("/api/v1/jobs?{}", query.join("&")),
        };
        self.get(&path).await
    }

    /// Depth of each queue.
    pub async fn queues(&self) -> Result<Queues, Error> {
        self.get("/api/v1/queues").await
    }

    /// The history from `from` (ms since the epoch) to now, a point per `step_secs`.
    pub async fn stats(&self, from: i64, step_secs: u32) -> Result<dcc_shared::api::Stats, Error> {
        self.get(&format!("/api/v1/stats?from={from}&step={step_secs}")).await
    }

    /// The live workers.
    pub async fn workers(&self) -> Result<Workers, Error> {
        self.get("/api/v1/workers").await
    }

    /// A job's log (so far), whole.
    pub async fn log(&self, id: &str, log: Log) -> Result<Bytes, Error> {
        self.log_reply(id, log).await?.bytes().await
    }

    /// The first `max` bytes of a job's log as text, cut after its last whole line (invalid
    /// UTF-8 replaced), and whether the log went on. The rest is not read.
    pub async fn log_head(&self, id: &str, log: Log, max: usize) -> Result<(String, bool), Error> {
        let reply = self.log_reply(id, log).await?;
        let (status, size) = (reply.status, reply.content_length());
        let mut buf = Vec::with_capacity(size.map_or(0, |s| s.min(max as u64) as usize));
        let mut body = reply.body;
        let mut cut = false;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::Unexpected {
                status,
                why: format!("reading the {} of {id} broke off: {e}", log.as_str()),
            })?;
            let room = max - buf.len();
            if chunk.len() > room {
                buf.extend_from_slice(&chunk[..room]);
                cut = true;
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        if cut && let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
            buf.truncate(end + 1);
        }
        // Valid UTF-8 (the usual case) becomes the text without a copy.
        let text = String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok((text, cut))
    }

    async fn log_reply(&self, id: &str, log: Log) -> Result<Reply, Error> {
        self.send(
            Method::GET,
            &job_path(id, &format!("/{}", log.as_str())),
            Body::Empty,
            None,
        )
        .await?
        .ok()
        .await
    }
}

/// A submission's answer, by its status.
async fn submitted(reply: Reply) -> Result<Submitted, Error> {
    let created = reply.status == StatusCode::CREATED;
    Ok(match reply.json::<SubmitOk>().await? {
        SubmitOk::Existing(a) if created => Submitted::Queued(a),
        SubmitOk::Existing(a) => Submitted::Existing(a),
        SubmitOk::Ended(v) => Submitted::Ended(v),
    })
}

/// The v1 path of job `id` followed by `rest` (the id percent-encoded: it may come from a
/// client).
pub fn job_path(id: &str, rest: &str) -> String {
    format!("/api/v1/jobs/{}{rest}", encoded(id))
}

/// Everything but RFC 3986's unreserved characters (job ids keep their `-`, `.`, `_`).
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded for a path segment or a query value.
pub fn encoded(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, RESERVED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_what_a_client_sent() {
        assert_eq!(job_path("a b/c", "/wait"), "/api/v1/jobs/a%20b%2Fc/wait");
        assert_eq!(job_path("run-1_x.y", ""), "/api/v1/jobs/run-1_x.y");
    }

    #[test]
    fn errors_read_as_one_line_with_their_code() {
        let e = Error::Api {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::from_value(serde_json::json!(
                {"error": {"code": "INVALID_JOB", "message": "cpus must be at least 0.1", "field": "parameters.cpus"}}
            ))
            .unwrap(),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "400 INVALID_JOB (parameters.cpus): cpus must be at least 0.1"
        );
        assert!(e.is("INVALID_JOB") && e.job_id().is_none());
    }
}
