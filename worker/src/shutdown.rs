//! Two-step shutdown. *Quiet*: stop claiming, let running jobs go on. *Terminate*: stop every
//! running attempt now. Steps only go forward. The process's signal handler (in the binary)
//! calls [`Shutdown::quiet`] on the first SIGTERM/SIGINT and [`Shutdown::terminate`] when the
//! drain time is up or a second signal arrives.

use tokio_util::sync::CancellationToken;

/// The shutdown state shared by every task of a worker.
#[derive(Clone, Default)]
pub struct Shutdown {
    quiet: CancellationToken,
    terminate: CancellationToken,
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

    /// The terminate token, to derive per-job tokens from.
    pub fn terminate_token(&self) -> &CancellationToken {
        &self.terminate
    }
}
