//! The calls held on approvals, by approval id, so that a decision wakes only the calls
//! held on the approval it decided, not every held call of the replica. Both stores hold
//! calls this way: the files' decisions wake their approval's calls directly; the
//! PostgreSQL store's listener wakes the approval a `NOTIFY` names (the notification
//! carries the id), and every held call after its listening connection was made again
//! (a decision may have gone unheard meanwhile). Held calls also look again every so
//! often whatever wakes them, so a lost notification delays a call but never strands it.

use crate::state::approvals::{ApprovalError, Status};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    /// Approval id → what its held calls wait on; present while any call is held on it.
    held: Mutex<HashMap<String, Arc<Notify>>>,
    /// How many times a wake-up reached an approval with held calls (for tests and logs).
    wakeups: AtomicU64,
}

/// One held call's registration; the entry goes when the last call held on it ends.
struct Registered<'a> {
    waiters: &'a Waiters,
    id: &'a str,
    notify: Arc<Notify>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut held = self.waiters.lock();
        // The map's reference and this one: no other call is held on the approval.
        if Arc::strong_count(&self.notify) == 2 {
            held.remove(self.id);
        }
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register<'a>(&'a self, id: &'a str) -> Registered<'a> {
        let notify = Arc::clone(self.lock().entry(id.to_owned()).or_default());
        Registered {
            waiters: self,
            id,
            notify,
        }
    }

    /// Wakes the calls held on approval `id` (none held: nothing happens).
    pub fn wake(&self, id: &str) {
        if let Some(notify) = self.lock().get(id) {
            notify.notify_waiters();
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Wakes every held call: each looks at its own approval.
    pub fn wake_all(&self) {
        for notify in self.lock().values() {
            notify.notify_waiters();
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many times a wake-up reached an approval with calls held on it.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Holds a call on approval `id` until `look` finds it no longer pending (true), or
    /// `deadline` passes or `look` fails (false: the call is answered with its link). It
    /// looks at once, whenever the approval's calls are woken, and every `poll`.
    pub async fn wait<F, Fut>(
        &self,
        id: &str,
        deadline: tokio::time::Instant,
        poll: Duration,
        look: F,
    ) -> bool
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Status, ApprovalError>>,
    {
        let registered = self.register(id);
        loop {
            // Enabled before the look, so a wake-up between the look and the wait counts.
            let woken = registered.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match look().await {
                Ok(Status::Pending) => {}
                Ok(_) => return true,
                Err(_) => return false,
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(poll) => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A call held on X looks again when X's calls are woken, not when Y's are; its entry
    /// goes when it ends.
    #[tokio::test(flavor = "current_thread")]
    async fn a_wake_up_reaches_only_the_calls_held_on_its_approval() {
        let waiters = Arc::new(Waiters::default());
        let looks = Arc::new(AtomicUsize::new(0));
        let decided = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = {
            let (waiters, looks, decided) = (
                Arc::clone(&waiters),
                Arc::clone(&looks),
                Arc::clone(&decided),
            );
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                waiters
                    .wait("x", deadline, Duration::from_secs(60), || {
                        looks.fetch_add(1, Ordering::SeqCst);
                        let status = if decided.load(Ordering::SeqCst) {
                            Status::Approved
                        } else {
                            Status::Pending
                        };
                        std::future::ready(Ok(status))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(looks.load(Ordering::SeqCst), 1, "the held call looked once");
        waiters.wake("y");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(looks.load(Ordering::SeqCst), 1, "a wake-up for y reached x");
        assert_eq!(waiters.wakeups(), 0);
        decided.store(true, Ordering::SeqCst);
        waiters.wake("x");
        let woke = tokio::time::timeout(Duration::from_secs(1), held)
            .await
            .expect("the call held on x was not woken")
            .expect("task");
        assert!(woke);
        assert_eq!(looks.load(Ordering::SeqCst), 2);
        assert_eq!(waiters.wakeups(), 1);
        assert!(waiters.lock().is_empty(), "an ended call's entry stayed");
    }
}
