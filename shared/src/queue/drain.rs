//! Asking a worker to drain: stop claiming, finish what it runs, report `DRAINING`. The scaler
//! does this before terminating an instance; operators can too (`POST /api/v1/workers/{id}/drain`).
//! The request is a key the worker reads on every heartbeat, so it reaches the worker within one
//! heartbeat and survives the worker being briefly disconnected.

use super::Queue;
use crate::Result;

impl Queue {
    /// Asks worker `id` to drain. The flag lives until the worker unregisters.
    pub async fn request_drain(&self, id: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: () = redis::cmd("SET")
            .arg(self.keys().drain(id))
            .arg("1")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether worker `id` was asked to drain.
    pub async fn drain_requested(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let v: Option<String> = redis::cmd("GET")
            .arg(self.keys().drain(id))
            .query_async(&mut conn)
            .await?;
        Ok(v.is_some())
    }
}
