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

/// Longest wait between two tries of a completion webhook before jitter (which adds up to as
/// much again: 5 to 10 minutes).
pub const WEBHOOK_MAX_PAUSE: Duration = Duration::from_secs(300);

/// A completion webhook's schedule: `first`, doubling up to [`WEBHOOK_MAX_PAUSE`], jittered
/// (receivers that come back are not hit by every server's retries at once). The wait after the
/// `attempt`-th failed POST; the count lives in Redis, so the schedule is computed from it.
pub fn webhook_delay(first: Duration, attempt: u32) -> Duration {
    use backon::BackoffBuilder;
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(WEBHOOK_MAX_PAUSE)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(WEBHOOK_MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_retries_double_with_jitter_up_to_the_cap() {
        let first = Duration::from_secs(1);
        for _ in 0..50 {
            let d1 = webhook_delay(first, 1);
            assert!(d1 >= first && d1 <= first * 2, "{d1:?}");
            let d4 = webhook_delay(first, 4);
            assert!(d4 >= first * 8 && d4 <= first * 16, "{d4:?}");
            let d30 = webhook_delay(first, 30);
            assert!(d30 >= WEBHOOK_MAX_PAUSE && d30 <= WEBHOOK_MAX_PAUSE * 2, "{d30:?}");
        }
    }
}
