//! A small client of the DCC API, and the WebSocket and key-file helpers of the tests.

use std::time::Duration;

use dcc_client::{Body, Client, Http, Reply};
use serde_json::{Value, json};

use crate::{IMAGE, eventually};

/// The tests' client of the DCC API: the typed client the CLI and the 2018 adapter use
/// ([`dcc_client::Client`]), with answers also read as raw JSON where a test checks the wire.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port`.
    pub base: String,
    /// An HTTP client, for probes below the API (headers, redirects, raw bodies).
    pub http: reqwest::Client,
    /// Bearer key to send, if any.
    pub key: Option<String>,
    client: Client<Http>,
}

/// An answer: status and JSON body (or the text wrapped as a JSON string).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    /// A client of `base`.
    pub fn new(base: String) -> Self {
        Api {
            client: Client::new(Http::new(&base, None)),
            base,
            http: reqwest::Client::new(),
            key: None,
        }
    }

    /// The same client sending `key`.
    pub fn with_key(&self, key: &str) -> Self {
        Api {
            key: Some(key.to_string()),
            client: Client::new(Http::new(&self.base, Some(key.to_string()))),
            ..self.clone()
        }
    }

    /// The typed client.
    pub fn client(&self) -> &Client<Http> {
        &self.client
    }

    async fn answer(r: Reply) -> Answer {
        let status = r.status.as_u16();
        let bytes = r.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer { status, body }
    }

    /// Sends a request with an optional JSON body.
    pub async fn call(&self, m: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let reply = match body {
            Some(b) => self.client.send_json(m, path, b).await,
            None => self.client.send(m, path, Body::Empty, None).await,
        };
        Self::answer(reply.expect("the server answers")).await
    }

    /// Sends raw bytes as the body.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> Answer {
        let reply = self
            .client
            .send(
                reqwest::Method::POST,
                path,
                Body::Bytes(body.into()),
                Some(content_type),
            )
            .await;
        Self::answer(reply.expect("the server answers")).await
    }

    /// Sends a multipart form.
    pub async fn post_multipart(&self, path: &str, form: reqwest::multipart::Form) -> Answer {
        let sent = self
            .client
            .transport()
            .request(reqwest::Method::POST, path)
            .multipart(form)
            .send()
            .await;
        Self::answer(Reply::from_reqwest(sent.expect("the server answers"))).await
    }

    /// GET as JSON.
    pub async fn get(&self, path: &str) -> Answer {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// GET as bytes, with the status.
    pub async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let reply = self
            .client
            .send(reqwest::Method::GET, path, Body::Empty, None)
            .await
            .expect("the server answers");
        let s = reply.status.as_u16();
        (s, reply.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Submits a job; returns the answer.
    pub async fn submit(&self, job: Value) -> Answer {
        self.post("/api/v1/jobs", &job).await
    }

    /// Submits a job; `None` when the server could not be reached or did not answer in 30 s.
    pub async fn try_submit(&self, job: Value) -> Option<Answer> {
        let patient = Client::new(Http::new(&self.base, self.key.clone()).with_timeout(Duration::from_secs(30)));
        let reply = patient.send_json(reqwest::Method::POST, "/api/v1/jobs", &job).await;
        Some(Self::answer(reply.ok()?).await)
    }

    /// Submits a job and returns its id (asserting 201).
    pub async fn submit_id(&self, job: Value) -> String {
        let a = self.submit(job).await;
        assert_eq!(a.status, 201, "submit failed: {:?}", a.body);
        a.body["jobId"].as_str().expect("jobId").to_string()
    }

    /// Submits with `wait: true` and returns the final view (asserting 200).
    pub async fn run(&self, mut job: Value) -> Value {
        job["wait"] = json!(true);
        let a = self.submit(job).await;
        assert_eq!(a.status, 200, "wait submit failed: {:?}", a.body);
        a.body
    }

    /// The job view.
    pub async fn job(&self, id: &str) -> Value {
        let a = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(a.status, 200, "job view failed: {:?}", a.body);
        a.body
    }

    /// Waits for a job to reach `status`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        eventually(timeout, &format!("job {id} to be {status}"), || async {
            let v = self.client.job(id).await.expect("the job's view");
            (v.status.as_str() == status).then(|| json!(v))
        })
        .await
    }

    /// A job's stdout or stderr as text.
    pub async fn log(&self, id: &str, stream: &str) -> String {
        let (s, b) = self.get_bytes(&format!("/api/v1/jobs/{id}/{stream}")).await;
        assert_eq!(s, 200);
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// A job running `script` in the test image.
pub fn sh(script: &str) -> Value {
    json!({"image": IMAGE, "command": ["sh", "-c", script]})
}

/// How many of `ids` are in a terminal state (one view request per job).
pub async fn count_terminal(api: &Api, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if let Ok(v) = api.client().job(id).await
            && v.status.is_terminal()
        {
            n += 1;
        }
    }
    n
}

/// A WebSocket client connection.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message of `ws` as JSON (other frames skipped), within 60 s.
pub async fn ws_next(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a message within 60 s")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).unwrap();
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// (tenant, role, key, optional (submits per second, burst)): one entry of a keys file.
pub type KeySpec<'a> = (&'a str, &'a str, &'a str, Option<(f64, u32)>);

/// A `DCC_API_KEYS_FILE` holding these keys (as SHA-256 digests).
pub fn keys_file(entries: &[KeySpec<'_>]) -> String {
    use sha2::Digest;
    let keys: Vec<Value> = entries
        .iter()
        .map(|(name, role, key, rate)| {
            let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
            let mut k = json!({"name": name, "role": role, "sha256": digest});
            if let Some((per_sec, burst)) = rate {
                k["submitsPerSec"] = json!(per_sec);
                k["burst"] = json!(burst);
            }
            k
        })
        .collect();
    json!({ "keys": keys }).to_string()
}
