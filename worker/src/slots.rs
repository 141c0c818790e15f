//! CPU slot accounting: a worker has `total` slots; a running job holds `ceil(cpus)` of them.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Free and total slots, with a signal when slots come back.
pub struct Slots {
    total: u32,
    free: Mutex<u32>,
    released: Notify,
}

impl Slots {
    /// `total` free slots.
    pub fn new(total: u32) -> Self {
        Slots {
            total,
            free: Mutex::new(total),
            released: Notify::new(),
        }
    }

    /// All slots.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Slots free now.
    pub fn free(&self) -> u32 {
        *self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `n` slots (the claim script already checked they are free).
    pub fn take(&self, n: u32) {
        let mut f = self.free.lock().unwrap_or_else(|p| p.into_inner());
        *f = f.saturating_sub(n);
    }

    /// Gives `n` slots back and wakes the claim loop.
    pub fn give(&self, n: u32) {
        {
            let mut f = self.free.lock().unwrap_or_else(|p| p.into_inner());
            *f = (*f + n).min(self.total);
        }
        self.released.notify_one();
    }

    /// Resolves when slots are given back (or were given back since the last wait).
    pub async fn released(&self) {
        self.released.notified().await
    }
}
