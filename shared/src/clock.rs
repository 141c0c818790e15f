//! Time as an input: every time-dependent operation takes `now` (milliseconds since the Unix
//! epoch) from its caller, so tests can drive lease expiry and retention without sleeping.
//! Production callers take it from [`now_ms`], except for leases: claim, renew and reap are given
//! [`REDIS_TIME`] and read Redis's own clock, so lease deadlines and their expiry use one clock
//! for the whole fleet and a host whose clock runs fast cannot reap everybody's leases.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit of every timestamp stored in Redis.
pub type Millis = i64;

/// `now` for the lease scripts (claim, renew, reap): "use Redis's clock (`TIME`)".
pub const REDIS_TIME: Millis = 0;

/// The current wall-clock time in milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Formats a millisecond timestamp as RFC 3339 in UTC (the API's time format).
pub fn rfc3339(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Reads an RFC 3339 time (as [`rfc3339`] writes them) back into milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Millis::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123Z"), Some(1_700_000_000_123));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
