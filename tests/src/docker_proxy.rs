//! An HTTP proxy in front of the real Docker socket that refuses the calls a rule picks, as the
//! daemon refuses a call (`500` with `{"message": …}`), and passes every other call on: bodies
//! streamed, attach and exec upgrades spliced. Workers under test reach it via `DOCKER_HOST`;
//! the machine's own daemon is never touched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Which calls to refuse, and with what daemon message: `(method, path)` to `Some(message)`.
/// Paths carry the API version (`/v1.47/containers/…/archive`).
pub type Rule = Arc<dyn Fn(&Method, &str) -> Option<String> + Send + Sync>;

type Body = BoxBody<Bytes, hyper::Error>;

/// The proxy, listening on a unix socket until dropped.
pub struct RefusingDocker {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl RefusingDocker {
    /// Listens on `path` (a socket it creates), refusing the calls `rule` picks.
    pub fn start(path: &Path, rule: Rule) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).expect("the proxy socket binds");
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rule = rule.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, rule.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(client), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        RefusingDocker {
            path: path.to_path_buf(),
            task,
        }
    }

    /// `DOCKER_HOST` for a worker behind it.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for RefusingDocker {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One call: refused, or passed to the daemon on a connection of its own.
async fn answer(mut req: Request<Incoming>, rule: Rule) -> Result<Response<Body>, hyper::Error> {
    if let Some(message) = rule(req.method(), req.uri().path()) {
        // Read the request to its end first, so the client sees the answer, not a broken pipe.
        req.into_body().collect().await?;
        let body = serde_json::json!({ "message": message }).to_string();
        let resp = Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
            .expect("a valid response");
        return Ok(resp);
    }
    let daemon = tokio::net::UnixStream::connect("/var/run/docker.sock")
        .await
        .expect("the Docker daemon answers");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(daemon)).await?;
    tokio::spawn(conn.with_upgrades());
    let client_side = hyper::upgrade::on(&mut req);
    let mut resp = sender.send_request(req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // attach and exec: once both sides switched, the connection is a byte pipe.
        let daemon_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = (client_side.await, daemon_side.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
    }
    Ok(resp.map(BodyExt::boxed))
}
