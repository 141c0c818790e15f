//! Submits per second per tenant: a token bucket in Redis, so the limit holds across every API
//! server (one script, Redis's clock).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::Queue;
use crate::Result;

static RATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("rate.lua")));

impl Queue {
    /// Takes one submit from `tenant`'s bucket (`per_sec` tokens a second, `burst` at most):
    /// `None` when admitted, else how long until the next token.
    pub async fn take_submit(&self, tenant: &str, per_sec: f64, burst: u32) -> Result<Option<Duration>> {
        let this = self.for_tenant(tenant);
        let mut conn = this.conn().await?;
        let wait_ms: i64 = RATE
            .key(this.keys().rate(tenant))
            .arg(per_sec)
            .arg(burst.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }
}
