//! Records of ended jobs, read from Redis once per process. A job's `finished` event reaches every
//! WebSocket connection and every long-poll of this process at the same moment; without this
//! each of them would read the same record (a hundred dashboards following `*` would cost a
//! hundred reads per finished job). An ended record never changes (only `DELETE` or retention
//! removes it), so it can be shared as read. Entries are keyed by the job *and* the time its
//! event says it ended, so a client-chosen id deleted and submitted again is a different entry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;

use dcc_shared::clock::Millis;
use dcc_shared::job::{JobId, JobRecord};
use dcc_shared::queue::Queue;

/// Ended records kept at most. They only need to outlive the moment their event is handled by
/// every follower; but followers of `*` handle events in batches (up to 64, `routes::ws`), each
/// at its own pace, so one may reach a job several batches after another read it. A miss costs
/// one more read of the record (at 64 entries, two busy `*` followers read most records twice).
const CAPACITY: usize = 1024;

/// Approximate bytes of records kept at most, with their messages (a record may hold up to
/// 3 × 256 KiB of `command`, `env` and `meta`); a record alone larger than this is shared by its
/// concurrent readers only.
const BUDGET_BYTES: usize = 8 << 20;

/// An ended job's record, and its WebSocket `finished` message as admins see it and as its own
/// tenant sees it (the only others who may see it, with the ids in their spelling): every
/// connection of either kind sends the same text, so the first one to send it makes it and the
/// others send that (a hundred dashboards would otherwise each build and serialise the same
/// view).
pub struct Ended {
    /// The record as read.
    pub record: JobRecord,
    /// The admins' message, once made.
    admin_message: OnceLock<Utf8Bytes>,
    /// The tenant's message, once made, with the tenant it was made for.
    tenant_message: OnceLock<(String, Utf8Bytes)>,
}

impl Ended {
    fn new(record: JobRecord) -> Self {
        Ended {
            record,
            admin_message: OnceLock::new(),
            tenant_message: OnceLock::new(),
        }
    }

    /// The `finished` message admins are sent: `make`'s, from the first caller.
    pub fn admin_message(&self, make: impl FnOnce(&JobRecord) -> String) -> Utf8Bytes {
        self.admin_message.get_or_init(|| make(&self.record).into()).clone()
    }

    /// The `finished` message `tenant` is sent: `make`'s, from the first caller. (Only the job's
    /// own tenant sees it; were another to ask, it would get a text of its own.)
    pub fn tenant_message(&self, tenant: &str, make: impl Fn(&JobRecord) -> String) -> Utf8Bytes {
        let (made_for, text) = self
            .tenant_message
            .get_or_init(|| (tenant.to_string(), make(&self.record).into()));
        match made_for == tenant {
            true => text.clone(),
            false => make(&self.record).into(),
        }
    }
}

/// One job's slot: filled by the first reader that finds the job ended; the async lock makes
/// concurrent readers of a job wait for that one read instead of each reading.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Ended>>>>;

/// A job life's end: the same id submitted again after a delete ends at another time.
pub type Key = (JobId, Millis);

/// The cache; cheap to clone.
#[derive(Clone, Default)]
pub struct EndedRecords {
    /// The slots.
    inner: Arc<Mutex<Slots>>,
}

/// Slots by (job, end time) with the approximate size of what they hold, and their insertion
/// order for eviction.
#[derive(Default)]
struct Slots {
    /// The slots and their sizes (0 until filled).
    by_key: HashMap<Key, (Slot, usize)>,
    /// Keys, oldest first.
    order: VecDeque<Key>,
    /// Sum of the sizes.
    bytes: usize,
}

impl Slots {
    /// Drops the oldest entries until both bounds hold.
    fn trim(&mut self) {
        while self.order.len() > CAPACITY || self.bytes > BUDGET_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            if let Some((_, size)) = self.by_key.remove(&old) {
                self.bytes -= size;
            }
        }
    }
}

/// Approximate memory of an entry: its record's definition as stored plus its outputs list,
/// three times (the record, and the admins' and the tenant's messages once made, which hold the
/// same).
fn approx_size(r: &JobRecord) -> usize {
    let spec = serde_json::to_vec(&r.spec).map(|v| v.len()).unwrap_or(0);
    3 * (spec + r.outputs.iter().map(|o| o.name.len() + 32).sum::<usize>() + 512)
}

/// A slot this call filled or will fill (it made it, so it holds its lock).
type Held = tokio::sync::OwnedMutexGuard<Option<Arc<Ended>>>;

/// The slots of a call's wanted entries, each with its index: the ones it made (and reads), and
/// the ones another caller made.
struct Split {
    mine: Vec<(usize, Held)>,
    theirs: Vec<(usize, Slot)>,
}

impl EndedRecords {
    /// The record of `id`, whose event said it ended at `at`: read from Redis by the first
    /// caller, shared with the others. A record that does not match the event (not ended, or
    /// ended at another time) is returned but not kept, and so is a missing one.
    pub async fn get(&self, queue: &Queue, id: &JobId, at: Millis) -> dcc_shared::Result<Option<Arc<Ended>>> {
        Ok(self.get_many(queue, &[(id.clone(), at)]).await?.pop().flatten())
    }

    /// [`EndedRecords::get`] of each of `wanted`, in order: the ones no caller reads yet in one
    /// round trip (a WebSocket following `*` asks for every job that ended in the last few
    /// milliseconds at once, instead of a request per job).
    pub async fn get_many(&self, queue: &Queue, wanted: &[Key]) -> dcc_shared::Result<Vec<Option<Arc<Ended>>>> {
        let Split { mine, theirs } = self.slots_for(wanted);
        let mut out = vec![None; wanted.len()];
        self.read_into(queue, wanted, mine, &mut out).await?;
        // Read (or being read) by another caller. One whose read failed is read here, uncached:
        // holding its lock while waiting on the next could deadlock with a caller that waits
        // the other way round.
        let mut again = Vec::new();
        for (i, slot) in theirs {
            match slot.lock().await.as_ref() {
                Some(r) => out[i] = Some(r.clone()),
                None => again.push(wanted[i].0.clone()),
            }
        }
        if !again.is_empty() {
            let found = by_id(queue.get_many(&again).await?);
            for (i, key) in wanted.iter().enumerate() {
                if out[i].is_none() {
                    out[i] = found.get(&key.0).cloned();
                }
            }
        }
        Ok(out)
    }

    /// Each wanted entry's slot: the new ones made here and locked (this caller reads them),
    /// with their indexes in `wanted`; the others as found.
    fn slots_for(&self, wanted: &[Key]) -> Split {
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (i, key) in wanted.iter().enumerate() {
            match g.by_key.get(key) {
                Some((s, _)) => theirs.push((i, s.clone())),
                None => {
                    let s = Slot::default();
                    let held = s.clone().try_lock_owned().expect("a slot made here is unlocked");
                    g.by_key.insert(key.clone(), (s, 0));
                    g.order.push_back(key.clone());
                    mine.push((i, held));
                }
            }
        }
        g.trim();
        Split { mine, theirs }
    }

    /// Reads the records of the slots this caller `held` in one round trip; each one that
    /// matches its event is kept in its slot.
    async fn read_into(
        &self,
        queue: &Queue,
        wanted: &[Key],
        held: Vec<(usize, Held)>,
        out: &mut [Option<Arc<Ended>>],
    ) -> dcc_shared::Result<()> {
        if held.is_empty() {
            return Ok(());
        }
        let ids: Vec<JobId> = held.iter().map(|(i, _)| wanted[*i].0.clone()).collect();
        let found = by_id(queue.get_many(&ids).await?);
        for (i, mut slot) in held {
            let (id, at) = &wanted[i];
            let Some(r) = found.get(id).cloned() else { continue };
            if r.record.state.is_terminal() && r.record.finished_ms == Some(*at) {
                *slot = Some(r.clone());
                self.account(&wanted[i], approx_size(&r.record));
            }
            out[i] = Some(r);
        }
        Ok(())
    }

    /// Counts a filled slot's size against the budget.
    fn account(&self, key: &Key, size: usize) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Evicted meanwhile: its current readers share it through the slot, nobody else.
        if let Some(entry) = g.by_key.get_mut(key) {
            entry.1 = size;
            g.bytes += size;
            g.trim();
        }
    }
}

/// Records by id.
fn by_id(records: Vec<JobRecord>) -> HashMap<JobId, Arc<Ended>> {
    records
        .into_iter()
        .map(|r| (r.id.clone(), Arc::new(Ended::new(r))))
        .collect()
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
                g.by_key.insert(k.clone(), (Slot::default(), 0));
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

    #[test]
    fn admins_share_one_finished_message() {
        let req: dcc_shared::job::spec::JobRequest =
            serde_json::from_value(serde_json::json!({"image": "alpine", "command": ["true"]})).unwrap();
        let spec = req.validate(&Default::default()).unwrap().spec;
        let id = JobId::parse("j1").unwrap();
        let hash = [
            ("spec", serde_json::to_string(&spec).unwrap()),
            ("state", "succeeded".into()),
            ("queue", "cpu".into()),
            ("lane", "normal".into()),
        ];
        let hash = hash.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let ended = by_id(vec![JobRecord::from_hash(&id, hash).unwrap().unwrap()])
            .remove(&id)
            .unwrap();
        let first = ended.admin_message(|r| format!("made of {}", r.id));
        // A second connection sends the same text; nothing is made again.
        let second = ended.admin_message(|_| unreachable!("made twice"));
        assert_eq!((first.as_str(), second.as_str()), ("made of j1", "made of j1"));
        // The same for the tenant's connections, apart from the admins'; a text made for one
        // tenant is never another's.
        let mine = ended.tenant_message("a", |r| format!("{} for a", r.id));
        let again = ended.tenant_message("a", |_| unreachable!("made twice"));
        let other = ended.tenant_message("b", |r| format!("{} for b", r.id));
        assert_eq!(
            (mine.as_str(), again.as_str(), other.as_str()),
            ("j1 for a", "j1 for a", "j1 for b")
        );
    }

    #[test]
    fn evicts_the_oldest_beyond_the_byte_budget() {
        let mut slots = Slots::default();
        for i in 0..3 {
            let k = (JobId::parse(&format!("j{i}")).unwrap(), 1);
            slots.by_key.insert(k.clone(), (Slot::default(), BUDGET_BYTES / 2));
            slots.order.push_back(k);
            slots.bytes += BUDGET_BYTES / 2;
        }
        slots.trim();
        assert_eq!(slots.bytes, BUDGET_BYTES);
        assert_eq!(slots.order.len(), 2);
        assert!(!slots.by_key.contains_key(&(JobId::parse("j0").unwrap(), 1)));
    }
}
