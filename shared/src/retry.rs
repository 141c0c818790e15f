//! The retry policies of every retry loop in DCC, in one place (the backoff itself comes from
//! the `backon` crate): how long a process waits out a Redis or object store that is down.

use std::time::Duration;

use backon::ExponentialBuilder;

/// Longest pause between two tries while a service stays down.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);

/// For work that must not be dropped because Redis blinked (start-up, recording a result, the
/// event subscription): 100 ms doubling up to [`MAX_PAUSE`], jittered, without end. The caller
/// decides which errors are worth waiting out.
pub fn until_reachable() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_PAUSE)
        .with_jitter()
        .without_max_times()
}

/// For one storage transfer (object stores have transient errors): three tries in all,
/// 200 ms then 400 ms apart, jittered.
pub fn storage() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_times(2)
        .with_jitter()
}
