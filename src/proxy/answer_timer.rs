//! The answer timer of a client connection's own upstream connection: one timer per
//! client connection, kept armed from one request to the next and re-armed lazily.
//!
//! What it replaces: `tokio::time::timeout` around each upstream exchange, which builds,
//! registers and removes a timer in tokio's wheel for every request. Here the timer is
//! made once per connection; a request whose deadline is later than the one the timer
//! is armed for (the previous request's: deadlines only grow) leaves it alone, and only
//! when the timer comes due early is it re-armed for the current deadline. So a
//! keep-alive request costs no timer registration, and a connection's timer fires at
//! most once per timeout period.
//!
//! Why: on the keep-alive hot path the per-request timer was ~600 instructions of ~46,000
//! (callgrind; `docs/performance.md`). The criterion bench `answer timer` in
//! `benches/hot_path.rs` times both ways side by side.
//!
//! Invariant: a request never outlives its own deadline, whatever the timer was armed
//! for (unit tests below); an idle connection's timer wakes its task once, for nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures_util::FutureExt as _;
use tokio::time::{Instant, Sleep};

/// The upstream did not answer in time.
#[derive(Debug)]
pub struct TimedOut;

/// `fut`, unless `deadline` passes first, on a timer of its own (registered and removed):
/// for the rare paths that have no connection timer.
pub async fn by<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, TimedOut> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| TimedOut)
}

/// One connection's answer timer (see the module docs).
pub struct LazyTimer(Pin<Box<Sleep>>);

impl LazyTimer {
    /// A timer armed for `deadline` (the connection's first request's).
    pub fn new(deadline: Instant) -> Self {
        Self(Box::pin(tokio::time::sleep_until(deadline)))
    }

    /// `fut`, unless `deadline` passes first. The timer may still be armed for an earlier
    /// request's (earlier) deadline: when that one passes, it is re-armed for this one.
    ///
    /// A named future, not an `async fn`: an `async fn` keeps its argument `fut` and the
    /// pinned copy it polls side by side, so the state machine would be twice the size of
    /// `fut`, and every future above it in the request's chain carries (and moves) that.
    pub fn within<F: Future>(&mut self, deadline: Instant, fut: F) -> Within<'_, F> {
        if self.0.deadline() > deadline {
            self.0.as_mut().reset(deadline);
        }
        Within {
            fut,
            timer: &mut self.0,
            deadline,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`LazyTimer::within`]'s future.
    pub struct Within<'t, F> {
        #[pin]
        fut: F,
        timer: &'t mut Pin<Box<Sleep>>,
        deadline: Instant,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        // Unconstrained (`tokio::time::timeout` does so once the inner future has spent
        // the task's budget; here always, which costs nothing): a future that spent the
        // budget must not keep its deadline from being noticed.
        let deadline = *this.deadline;
        let timer = this.timer;
        while tokio::task::unconstrained(timer.as_mut())
            .poll_unpin(cx)
            .is_ready()
        {
            if timer.deadline() >= deadline {
                return Poll::Ready(Err(TimedOut));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A request whose upstream answers after `after`, by `deadline`, on `timer`.
    async fn answered(timer: &mut LazyTimer, after: Duration, deadline: Duration) -> bool {
        let now = Instant::now();
        timer
            .within(now + deadline, tokio::time::sleep(after))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_timer_left_armed_for_an_earlier_request_is_re_armed_not_fired() {
        // Armed for a deadline long past (an earlier request's).
        let mut timer = LazyTimer::new(Instant::now());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            answered(
                &mut timer,
                Duration::from_millis(20),
                Duration::from_secs(5)
            )
            .await
        );
        // Now armed for that request's deadline; the next request has a later one.
        assert!(answered(&mut timer, Duration::from_millis(1), Duration::from_secs(6)).await);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_times_out_whatever_the_timer_was_armed_for() {
        let started = std::time::Instant::now();
        // Armed for a deadline long past (an earlier request's), and armed later than this
        // request's deadline (never the case in the proxy): either way, it is kept.
        for mut timer in [
            LazyTimer::new(Instant::now()),
            LazyTimer::new(Instant::now() + Duration::from_secs(60)),
        ] {
            let never = Duration::from_secs(60);
            assert!(!answered(&mut timer, never, Duration::from_millis(30)).await);
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
