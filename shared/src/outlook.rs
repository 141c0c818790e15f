//! What the scaler says a queue's fleet can grow to. A fleet that starts at zero (the Terraform
//! stack's `cpu_min = 0`, `gpu_min = 0`) has no live worker when the first job comes; without this
//! the API would answer `NO_WORKER` before writing anything, and the scaler would never see the
//! demand. Each scaler pass publishes one outlook per group it sizes, with a TTL a few passes
//! long, so a scaler that stopped makes no promises; servers read it only when no live worker can
//! run a job.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::clock::Millis;
use crate::job::QueueName;
use crate::queue::Queue;

/// One queue's outlook, as the scaler last published it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outlook {
    /// The autoscaling group serving the queue.
    pub group: String,
    /// The group's `max`: 0 means the fleet can never grow.
    pub max: u32,
    /// Instances the group is asked for now.
    pub desired: u32,
    /// Job slots of one instance (CPU slots, or GPUs on the `gpu` queue).
    pub slots_per_instance: u32,
    /// Memory (MiB) a job may reserve on one instance; `None` when not configured.
    pub memory_mb_per_instance: Option<u64>,
    /// About how long an instance takes from launch to a registered worker.
    pub boot_secs: u64,
    /// When it was published (the scaler's clock, ms).
    pub at: Millis,
}

impl Outlook {
    /// Whether instances of this group can ever run a job of `units` slots and `memory_mb`.
    pub fn can_take(&self, units: u32, memory_mb: u64) -> bool {
        self.max > 0 && units <= self.slots_per_instance && self.memory_mb_per_instance.is_none_or(|m| memory_mb <= m)
    }
}

impl Queue {
    /// Publishes `outlook` for `queue`, valid for `ttl`.
    pub async fn publish_outlook(&self, queue: QueueName, outlook: &Outlook, ttl: Duration) -> Result<()> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(outlook).map_err(|e| crate::Error::Config(format!("outlook: {e}")))?;
        let _: () = redis::cmd("SET")
            .arg(self.keys().outlook(queue))
            .arg(json)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// The scaler's outlook for `queue`; `None` when there is none (no scaler, or it stopped).
    pub async fn outlook(&self, queue: QueueName) -> Result<Option<Outlook>> {
        let mut c = self.conn().await?;
        let json: Option<String> = redis::cmd("GET")
            .arg(self.keys().outlook(queue))
            .query_async(&mut c)
            .await?;
        // A value this version cannot read promises nothing.
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_instance_can_take() {
        let o = Outlook {
            group: "g".into(),
            max: 3,
            desired: 0,
            slots_per_instance: 2,
            memory_mb_per_instance: Some(4096),
            boot_secs: 120,
            at: 0,
        };
        assert!(o.can_take(2, 4096));
        assert!(!o.can_take(3, 512));
        assert!(!o.can_take(1, 8192));
        assert!(!Outlook { max: 0, ..o.clone() }.can_take(1, 1));
        assert!(
            Outlook {
                memory_mb_per_instance: None,
                ..o
            }
            .can_take(1, 1 << 30)
        );
    }
}
