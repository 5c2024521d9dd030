//! The timer task: turns deadlines into `Tick` events and memory released outside the pool
//! into `MemoryFreed` events. It decides nothing; the scheduler tells it when to wake.

use std::pin::pin;
use std::sync::{Arc, Weak};

use super::shared::Shared;
use crate::loader::ModelLoader;
use crate::scheduler::Event;

/// Runs until the pool is dropped or has shut down. Holds only a `Weak` so that an idle
/// timer never keeps a dropped pool alive.
pub(crate) async fn run<L: ModelLoader>(weak: Weak<Shared<L>>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        if shared.is_shut_down() {
            return;
        }
        let governor = shared.governor.clone();
        let timer_notify = Arc::clone(&shared.timer);
        // Enable both notifications before reading the state, so that a wake-up sent between
        // the read and the await is not lost.
        let mut rearm = pin!(timer_notify.notified());
        rearm.as_mut().enable();
        let mut released = pin!(governor.release_notify().notified());
        released.as_mut().enable();
        let (deadline, watch_memory) = {
            let mut core = shared.core.lock();
            let view = (
                core.machine.next_deadline(),
                core.machine.waiting_for_memory(),
            );
            core.timer_view = view;
            view
        };
        if watch_memory {
            governor.watch_releases();
            // Memory freed before we started watching would otherwise go unnoticed.
            shared.dispatch(Event::MemoryFreed);
        }
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        drop(shared);
        let event = tokio::select! {
            () = timer => Some(Event::Tick),
            () = &mut rearm => None,
            () = &mut released, if watch_memory => Some(Event::MemoryFreed),
        };
        if watch_memory {
            governor.unwatch_releases();
        }
        if let (Some(event), Some(shared)) = (event, weak.upgrade()) {
            shared.dispatch(event);
        }
    }
}
