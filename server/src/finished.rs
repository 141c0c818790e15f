//! Records of ended jobs, read from Redis once per process. A job's `finished` event reaches every
//! WebSocket connection and every long-poll of this process at the same moment; without this
//! each of them would read the same record (a hundred dashboards following `*` would cost a
//! hundred reads per finished job). An ended record never changes (only `DELETE` or retention
//! removes it), so it can be shared as read. Entries are keyed by the job *and* the time its
//! event says it ended, so a client-chosen id deleted and submitted again is a different entry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use dcc_shared::clock::Millis;
use dcc_shared::job::{JobId, JobRecord};
use dcc_shared::queue::Queue;

/// Ended records kept; far more than finish within the moment their event is being handled.
const CAPACITY: usize = 4096;

/// One job's slot: filled by the first reader that finds the job ended; the async lock makes
/// concurrent readers of a job wait for that one read instead of each reading.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<JobRecord>>>>;

/// A job life's end: the same id submitted again after a delete ends at another time.
type Key = (JobId, Millis);

/// The cache; cheap to clone.
#[derive(Clone, Default)]
pub struct EndedRecords {
    /// The slots.
    inner: Arc<Mutex<Slots>>,
}

/// Slots by (job, end time), and their insertion order for eviction.
#[derive(Default)]
struct Slots {
    /// The slots.
    by_key: HashMap<Key, Slot>,
    /// Keys, oldest first.
    order: VecDeque<Key>,
}

impl EndedRecords {
    /// The record of `id`, whose event said it ended at `at`: read from Redis by the first
    /// caller, shared with the others. A record that does not match the event (not ended, or
    /// ended at another time) is returned but not kept, and so is a missing one.
    pub async fn get(&self, queue: &Queue, id: &JobId, at: Millis) -> dcc_shared::Result<Option<Arc<JobRecord>>> {
        let key = (id.clone(), at);
        let slot = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let Slots { by_key: slots, order } = &mut *g;
            match slots.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = Slot::default();
                    slots.insert(key.clone(), s.clone());
                    order.push_back(key);
                    while order.len() > CAPACITY {
                        if let Some(old) = order.pop_front() {
                            slots.remove(&old);
                        }
                    }
                    s
                }
            }
        };
        let mut cached = slot.lock().await;
        if let Some(r) = cached.as_ref() {
            return Ok(Some(r.clone()));
        }
        let record = queue.get(id).await?.map(Arc::new);
        if let Some(r) = record
            .as_ref()
            .filter(|r| r.state.is_terminal() && r.finished_ms == Some(at))
        {
            *cached = Some(r.clone());
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_beyond_capacity() {
        let c = EndedRecords::default();
        {
            let mut g = c.inner.lock().unwrap();
            for i in 0..CAPACITY + 10 {
                let k = (JobId::parse(&format!("j{i}")).unwrap(), 1);
                g.by_key.insert(k.clone(), Slot::default());
                g.order.push_back(k);
            }
        }
        // The next insertion trims the oldest entries.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let q = Queue::new("redis://127.0.0.1:1", "t").unwrap();
        let _ = rt.block_on(c.get(&q, &JobId::parse("new").unwrap(), 1));
        let g = c.inner.lock().unwrap();
        assert_eq!(g.order.len(), CAPACITY);
        assert!(g.by_key.len() <= CAPACITY);
        assert!(!g.by_key.contains_key(&(JobId::parse("j0").unwrap(), 1)));
    }
}
