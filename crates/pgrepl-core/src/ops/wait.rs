//! Waiting for PostgreSQL to reach a state, by asking it (never by sleeping a fixed time).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Polls `check` until it yields Some, or fails with a timeout naming `what`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, timeout, Duration::from_millis(50), check).await
}

/// As `until`, but asking every `every` throughout: for the steps of a role change while
/// writes are refused, where a backoff to 50 ms would add its overshoot to the write gap.
/// One query on one open connection per poll: cheap enough at a few milliseconds.
pub async fn until_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, timeout, every, check).await
}

async fn poll<T, F, Fut>(what: &str, timeout: Duration, max: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(5).min(max);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max);
    }
}
