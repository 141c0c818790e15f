//! Asking a worker to drain: stop claiming, finish what it runs, report `DRAINING`. The scaler
//! does this before terminating an instance; operators can too (`POST /api/v1/workers/{id}/drain`)
//! and take it back (`…/undrain`). The request is a key the worker reads on every heartbeat, so it
//! reaches the worker within one heartbeat and survives the worker being briefly disconnected.
//! The key names the worker's instance and expires with its health key: it never outlives the
//! process it was set for.

use std::sync::LazyLock;

use redis::Script;

use super::Queue;
use crate::Result;

static DRAIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("drain.lua")));
static UNDRAIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("undrain.lua")));

impl Queue {
    /// Asks worker `id` to drain. False when no live worker has this id (nothing written).
    pub async fn request_drain(&self, id: &str) -> Result<bool> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let set: i64 = DRAIN.key(k.worker(id)).key(k.drain(id)).invoke_async(&mut conn).await?;
        Ok(set == 1)
    }

    /// Takes a drain request back: worker `id` claims again from its next heartbeat. False when
    /// no live worker has this id.
    pub async fn cancel_drain(&self, id: &str) -> Result<bool> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let live: i64 = UNDRAIN
            .key(k.worker(id))
            .key(k.drain(id))
            .invoke_async(&mut conn)
            .await?;
        Ok(live == 1)
    }

    /// Whether the worker process `instance` running as `id` is asked to drain.
    pub async fn drain_requested(&self, id: &str, instance: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let v: Option<String> = redis::cmd("GET")
            .arg(self.keys().drain(id))
            .query_async(&mut conn)
            .await?;
        Ok(v.as_deref() == Some(instance))
    }
}
