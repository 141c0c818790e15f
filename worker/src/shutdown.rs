//! Shutdown in steps. *Quiet*: stop claiming, let running jobs go on. *Terminate*: stop every
//! running attempt now. *Give up*: stop waiting for an unreachable Redis (the last records,
//! hand-backs and the unregistering end; leases are left to expire). Steps only go forward. The
//! process's signal handler (in the binary) calls [`Shutdown::quiet`] on the first SIGTERM/SIGINT,
//! [`Shutdown::terminate`] when the drain time is up or a second signal arrives, and
//! [`Shutdown::give_up`] a drain time after that or on a third signal.

use tokio_util::sync::CancellationToken;

/// The shutdown state shared by every task of a worker.
#[derive(Clone, Default)]
pub struct Shutdown {
    quiet: CancellationToken,
    terminate: CancellationToken,
    give_up: CancellationToken,
}

impl Shutdown {
    /// A shutdown that has not begun.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop claiming new jobs.
    pub fn quiet(&self) {
        self.quiet.cancel();
    }

    /// Stop everything now (implies quiet).
    pub fn terminate(&self) {
        self.quiet.cancel();
        self.terminate.cancel();
    }

    /// Stop waiting for Redis (implies terminate).
    pub fn give_up(&self) {
        self.terminate();
        self.give_up.cancel();
    }

    /// Resolves once the worker gave up waiting for Redis.
    pub async fn given_up(&self) {
        self.give_up.cancelled().await
    }

    /// True once quiet (or terminate) began.
    pub fn is_quiet(&self) -> bool {
        self.quiet.is_cancelled()
    }

    /// Resolves once quiet began.
    pub async fn quieted(&self) {
        self.quiet.cancelled().await
    }

    /// Resolves once terminate began.
    pub async fn terminated(&self) {
        self.terminate.cancelled().await
    }

    /// The quiet token (cancelled once quiet began).
    pub fn quiet_token(&self) -> &CancellationToken {
        &self.quiet
    }

    /// The terminate token, to derive per-job tokens from.
    pub fn terminate_token(&self) -> &CancellationToken {
        &self.terminate
    }
}
