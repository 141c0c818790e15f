//! Pooled connections to one Redis server, handed out without a round trip when they are known
//! to be good.
//!
//! deadpool-redis checks every connection it hands out with `UNWATCH` + `PING`: one round trip
//! before every command or pipeline (deadpool-rs/deadpool#307). In the fleet bench (100 workers,
//! 527 jobs/s) that was 2,400 round trips a second, more than the jobs' own calls. DCC never
//! leaves a `WATCH` open, so only the liveness check is worth keeping, and only where a
//! connection may have died unseen. Each pool keeps one idle RESP3 connection to the server, its
//! *watch*: the client library tells when a connection closes, and a server that goes away
//! (restart, crash, the endpoint's node replaced) closes every client's connection at once. So a
//! connection is checked (one `PING`) before it is handed out when:
//! - the watch is not connected (no word of a closing would come: checked every time, as before);
//! - the watch closed after the connection was made or last checked;
//! - a command on another connection of the pool failed on the wire (a network cut closes
//!   nothing: the first timeout gets the others checked);
//! - it sat unused for [`QUIET`] or longer.
//!
//! A connection whose own command failed on the wire (closed, reset, timed out) is never handed
//! out again, and one made before a write was refused with `READONLY` is dropped, not checked: a
//! demoted primary keeps its clients and answers `PING`. A server `timeout` (idle clients closed;
//! 0 on ElastiCache by default) closes the watch too: the pool then checks its connections once
//! and the watch reconnects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Once};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Hook, HookError, Metrics, PoolConfig, RecycleError, RecycleResult, Timeouts};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, PushKind, RedisError,
    RedisFuture, RedisResult, Value,
};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Most pooled connections of one process; requests beyond wait for a free one.
const POOL_SIZE: usize = 32;
/// How long to wait for a pooled connection or a new one before answering "unavailable".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection unused this long is checked (one `PING`) before it is handed out again. Busy
/// processes reuse theirs within milliseconds, so they never pay it.
pub const QUIET: Duration = Duration::from_secs(2);
/// How long the watch waits before connecting again after it closed or could not connect.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A pool of connections to one server.
pub type Pool = managed::Pool<Manager>;
/// A connection taken from the pool (back in it when dropped).
pub type Connection = managed::Object<Manager>;

/// Process-wide: when a write was last refused with `READONLY` (ns after [`EPOCH`], 0: never).
static DEMOTED_AT: AtomicU64 = AtomicU64::new(0);
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn mark(at: &AtomicU64) {
    let now = EPOCH.elapsed().as_nanos() as u64;
    at.fetch_max(now.max(1), Ordering::Relaxed);
}

/// True when `at` was marked after `since`.
fn marked_after(at: &AtomicU64, since: Instant) -> bool {
    let at = at.load(Ordering::Relaxed);
    at != 0 && since.saturating_duration_since(*EPOCH).as_nanos() as u64 <= at
}

/// Notes a `READONLY` answer: a failover demoted the primary this process's connections reach,
/// and the endpoint now names another node. Every connection made before is dropped, and new
/// ones follow the endpoint.
pub(crate) fn saw_demoted_primary() {
    mark(&DEMOTED_AT);
    tracing::warn!("Redis answered READONLY (a failover demoted the primary): reconnecting");
}

/// A pool for `url`.
pub fn open(url: &str) -> Result<Pool> {
    fn config(e: impl std::fmt::Display) -> Error {
        Error::Config(format!("DCC_REDIS_URL: {e}"))
    }
    let inner = deadpool_redis::Manager::new(url).map_err(config)?;
    let info = url.into_connection_info().map_err(config)?;
    let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let watch = Client::open(info.set_redis_settings(resp3)).map_err(config)?;
    // (the clock of the marks starts before any connection is made: one made earlier would count
    // as made at the epoch, before every later mark, and be dropped or checked by the first)
    let _ = *EPOCH;
    Pool::builder(Manager {
        inner,
        watch,
        state: Arc::default(),
        started: Once::new(),
        stop: CancellationToken::new(),
    })
    .config(PoolConfig {
        max_size: POOL_SIZE,
        timeouts: Timeouts {
            wait: Some(CONNECT_TIMEOUT),
            create: Some(CONNECT_TIMEOUT),
            recycle: Some(CONNECT_TIMEOUT),
        },
        ..PoolConfig::default()
    })
    .runtime(deadpool::Runtime::Tokio1)
    .pre_recycle(Hook::sync_fn(|_, metrics| {
        if marked_after(&DEMOTED_AT, metrics.created) {
            return Err(HookError::message("connected to a demoted primary"));
        }
        Ok(())
    }))
    .build()
    .map_err(config)
}

/// Makes connections as deadpool-redis does; checks them only when needed (see the module).
pub struct Manager {
    inner: deadpool_redis::Manager,
    /// The client of the watch (RESP3: only such a connection reports its closing).
    watch: Client,
    state: Arc<Watched>,
    /// The watch is started with the first connection (inside the runtime).
    started: Once,
    /// Ends the watch with the pool.
    stop: CancellationToken,
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the watch and the pool's connections tell of the server.
#[derive(Default)]
struct Watched {
    /// The watch is connected now.
    live: AtomicBool,
    /// When the watch last closed, or a command failed on the wire (ns after [`EPOCH`]).
    failed_at: AtomicU64,
}

impl Manager {
    /// Keeps the watch connected: a closing marks the pool's connections for a check.
    fn start_watch(&self) {
        let (client, state, stop) = (self.watch.clone(), self.state.clone(), self.stop.clone());
        tokio::spawn(async move {
            stop.run_until_cancelled(async move {
                loop {
                    let closed = Arc::new(tokio::sync::Notify::new());
                    let (on_close, marks) = (closed.clone(), state.clone());
                    let config = AsyncConnectionConfig::new().set_push_sender(move |p: PushInfo| {
                        if p.kind == PushKind::Disconnection {
                            marks.live.store(false, Ordering::Relaxed);
                            mark(&marks.failed_at);
                            on_close.notify_one();
                        }
                        Ok::<(), ()>(())
                    });
                    match client.get_multiplexed_async_connection_with_config(&config).await {
                        Ok(conn) => {
                            state.live.store(true, Ordering::Relaxed);
                            closed.notified().await;
                            drop(conn);
                        }
                        Err(e) => tracing::debug!(error = %e, "the pool's watch could not connect"),
                    }
                    tokio::time::sleep(WATCH_RETRY).await;
                }
            })
            .await
        });
    }
}

/// One pooled connection and what the pool knows of it.
pub struct Pooled {
    conn: MultiplexedConnection,
    /// When it was made or last answered a check.
    checked: Instant,
    /// A command on it failed on the wire: it is not handed out again.
    broken: bool,
    state: Arc<Watched>,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> RedisResult<Pooled> {
        self.started.call_once(|| self.start_watch());
        let conn = self.inner.create().await?;
        Ok(Pooled {
            conn,
            checked: Instant::now(),
            broken: false,
            state: self.state.clone(),
        })
    }

    async fn recycle(&self, c: &mut Pooled, metrics: &Metrics) -> RecycleResult<RedisError> {
        if c.broken {
            return Err(RecycleError::message("its last command failed on the wire"));
        }
        let sure = self.state.live.load(Ordering::Relaxed) && !marked_after(&self.state.failed_at, c.checked);
        if sure && metrics.last_used() < QUIET {
            return Ok(());
        }
        self.inner.recycle(&mut c.conn, metrics).await?;
        c.checked = Instant::now();
        Ok(())
    }
}

impl Pooled {
    /// Raises (or restores) the response timeout, for one long command.
    pub fn set_response_timeout(&mut self, timeout: Duration) {
        self.conn.set_response_timeout(timeout);
    }

    /// Notes a failure on the wire: this connection goes, the others get checked.
    fn note<T>(&mut self, r: &RedisResult<T>) {
        if let Err(e) = r
            && (e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error())
        {
            self.broken = true;
            mark(&self.state.failed_at);
        }
    }
}

impl ConnectionLike for Pooled {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            self.note(&r);
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.conn.req_packed_commands(cmd, offset, count).await;
            self.note(&r);
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
