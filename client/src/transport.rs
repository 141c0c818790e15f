//! How a request reaches a DCC server. [`Http`] sends it over the network; the 2018 adapter
//! implements [`Transport`] by calling the server's own router in-process, so both go through
//! the same typed calls of [`crate::Client`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{HeaderMap, StatusCode, header};

use crate::Error;

/// A body as a stream of chunks (request or answer), never held whole unless read so.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A request body.
pub enum Body {
    /// None.
    Empty,
    /// In memory.
    Bytes(Bytes),
    /// Streamed as it comes (a multipart submission forwarded part by part).
    Stream(BodyStream),
}

/// A server's answer, its body not yet read.
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: BodyStream,
}

/// Sends requests to a DCC server.
pub trait Transport: Send + Sync {
    /// Sends `req`, whose URI is a path with its query (`/api/v1/jobs?limit=5`), and answers the
    /// server's reply whatever its status. `Err` only when no answer came.
    fn send(&self, req: http::Request<Body>) -> impl Future<Output = Result<Reply, Error>> + Send;
}

impl Reply {
    /// Its `Retry-After` in seconds (v1 sends seconds, never a date).
    pub fn retry_after(&self) -> Option<u32> {
        self.headers.get(header::RETRY_AFTER)?.to_str().ok()?.parse().ok()
    }

    /// Its `Content-Length`, when sent.
    pub fn content_length(&self) -> Option<u64> {
        self.headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let status = self.status;
        let chunks: Vec<Bytes> = self.body.try_collect().await.map_err(|e| Error::Unexpected {
            status,
            why: format!("the answer broke off: {e}"),
        })?;
        Ok(match chunks.len() {
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => chunks.concat().into(),
        })
    }

    /// Itself when its status is a success; else the error it carries.
    pub async fn ok(self) -> Result<Reply, Error> {
        if self.status.is_success() {
            return Ok(self);
        }
        let (status, retry_after) = (self.status, self.retry_after());
        let bytes = self.bytes().await?;
        Err(match serde_json::from_slice(&bytes) {
            Ok(body) => Error::Api {
                status,
                body,
                retry_after,
            },
            Err(_) => Error::Unexpected {
                status,
                why: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            },
        })
    }

    /// The body of a successful answer, read as `T`.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        let status = self.status;
        let bytes = self.ok().await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Unexpected {
            status,
            why: format!("not the expected body: {e}"),
        })
    }

    /// A reply of `reqwest`'s (for callers that build a request beyond the typed calls).
    pub fn from_reqwest(resp: reqwest::Response) -> Self {
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream().map_err(std::io::Error::other)),
        }
    }
}

/// The v1 API over HTTP: a server's base URL and the API key to send.
#[derive(Clone)]
pub struct Http {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    timeout: Option<Duration>,
}

impl Http {
    /// A transport to `base` (`http://127.0.0.1:8080`), sending `key` as a bearer token.
    pub fn new(base: &str, key: Option<String>) -> Self {
        Http {
            base: base.trim_end_matches('/').to_string(),
            key,
            http: reqwest::Client::new(),
            timeout: None,
        }
    }

    /// The same, giving up on a request (its answer included) after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` with the key, for what the typed calls do not cover (a multipart
    /// form); [`Reply::from_reqwest`] reads its answer.
    pub fn request(&self, method: http::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        let r = match self.timeout {
            Some(t) => r.timeout(t),
            None => r,
        };
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }
}

impl Transport for Http {
    async fn send(&self, req: http::Request<Body>) -> Result<Reply, Error> {
        let (parts, body) = req.into_parts();
        let r = self
            .request(parts.method, &parts.uri.to_string())
            .headers(parts.headers);
        let r = match body {
            Body::Empty => r,
            Body::Bytes(b) => r.body(b),
            Body::Stream(s) => r.body(reqwest::Body::wrap_stream(s.map(|c| c.map_err(Box::new)))),
        };
        let resp = r.send().await.map_err(|e| Error::Transport {
            at: Some(self.base.clone()),
            why: error_chain(&e),
        })?;
        Ok(Reply::from_reqwest(resp))
    }
}

/// An error with its causes, as one line (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
