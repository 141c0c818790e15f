//! A TCP proxy in front of a Redis endpoint, as a cloud's primary endpoint behaves in a failover:
//! [`TcpProxy::switch`] points it at another server and closes every connection made to the old
//! one (their server is gone), so clients must reconnect to reach the new primary;
//! [`TcpProxy::redirect`] leaves them open (the old node lives on as a replica);
//! [`TcpProxy::freeze`] stops passing bytes either way while connections stay open (a link that
//! stalls: what was sent waits in buffers, and is lost with them when the link is then closed).
//! [`TcpProxy::record_requests`] keeps what clients send, chunk by chunk as it was read: a
//! pipeline written at once arrives as one chunk, so a test can see which commands shared a
//! round trip.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy; it stops when dropped.
pub struct TcpProxy {
    port: u16,
    upstream: Arc<Mutex<(SocketAddr, CancellationToken)>>,
    stop: CancellationToken,
    frozen: tokio::sync::watch::Sender<bool>,
    requests: Recorder,
}

/// Client-to-server chunks, kept only once [`TcpProxy::record_requests`] was called (a proxy
/// under load keeps nothing).
type Recorder = Arc<Mutex<Option<Vec<Vec<u8>>>>>;

/// Copies `from` to `to`, holding every chunk while `frozen` is set, and noting each in
/// `record` when it records.
async fn gated_copy(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    mut frozen: tokio::sync::watch::Receiver<bool>,
    record: Option<Recorder>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Not even read while frozen: the bytes stay in the sender's buffers.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(r) = &record
            && let Some(chunks) = r.lock().unwrap().as_mut()
        {
            chunks.push(buf[..n].to_vec());
        }
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let upstream = Arc::new(Mutex::new((upstream, CancellationToken::new())));
        let stop = CancellationToken::new();
        let (frozen, gate) = tokio::sync::watch::channel(false);
        let requests = Recorder::default();
        let (up, s, rec) = (upstream.clone(), stop.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = s.cancelled() => return,
                };
                let (addr, generation) = up.lock().unwrap().clone();
                let (stop, gate, rec) = (s.clone(), gate.clone(), rec.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(addr).await else {
                        return;
                    };
                    let ((cr, cw), (sr, sw)) = (client.into_split(), server.into_split());
                    tokio::select! {
                        _ = async { tokio::join!(gated_copy(cr, sw, gate.clone(), Some(rec)), gated_copy(sr, cw, gate, None)) } => {}
                        _ = generation.cancelled() => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        TcpProxy {
            port,
            upstream,
            stop,
            frozen,
            requests,
        }
    }

    /// Keeps what clients send from now on, chunk by chunk (see [`TcpProxy::requests`]).
    pub fn record_requests(&self) {
        self.requests.lock().unwrap().get_or_insert_with(Vec::new);
    }

    /// The client-to-server chunks kept since [`TcpProxy::record_requests`], each as one read
    /// got it.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone().unwrap_or_default()
    }

    /// Stops passing bytes either way; connections stay open.
    pub fn freeze(&self) {
        let _ = self.frozen.send(true);
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Points new connections at `upstream` and closes the ones to the old server.
    pub fn switch(&self, upstream: SocketAddr) {
        let mut g = self.upstream.lock().unwrap();
        g.1.cancel();
        *g = (upstream, CancellationToken::new());
    }

    /// Points new connections at `upstream`, leaving the old ones open (a DNS endpoint that moved
    /// while the old node lives on, demoted to a replica).
    pub fn redirect(&self, upstream: SocketAddr) {
        self.upstream.lock().unwrap().0 = upstream;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
