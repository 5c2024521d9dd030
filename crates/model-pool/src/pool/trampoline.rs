//! Keeps event dispatch from re-entering itself on one thread.
//!
//! Carrying out an effect can trigger another event on the same thread: a lease sent to a
//! waiter that just gave up comes back and is dropped (a release), a load task spawned onto a
//! runtime that is shutting down is dropped at once (an aborted load). Handling that event
//! inline would either re-lock the scheduler mutex (deadlock) or recurse once per waiter
//! (stack overflow with long queues). Instead, nested dispatches are queued and run, one after
//! the other, by the outermost dispatch once it has released the lock.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

type Deferred = Box<dyn FnOnce()>;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static QUEUE: RefCell<VecDeque<Deferred>> = const { RefCell::new(VecDeque::new()) };
}

/// Resets the flag even if a deferred closure panics.
struct Active;

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(false));
    }
}

/// Whether a dispatch is running on this thread.
pub(crate) fn is_active() -> bool {
    ACTIVE.with(Cell::get)
}

/// Runs `f` now, or after the dispatch already running on this thread.
pub(crate) fn run_or_defer(f: impl FnOnce() + 'static) {
    if is_active() {
        QUEUE.with(|q| q.borrow_mut().push_back(Box::new(f)));
        return;
    }
    enter(f);
}

/// Runs `f` as the outermost dispatch, then everything it deferred, and returns `f`'s result.
/// Must only be called when no dispatch is active on this thread.
pub(crate) fn enter<T>(f: impl FnOnce() -> T) -> T {
    debug_assert!(!is_active());
    ACTIVE.with(|a| a.set(true));
    let _active = Active;
    let result = f();
    while let Some(next) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
        next();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn nested_calls_run_after_the_outer_one_in_order() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = Rc::clone(&log);
        // The closures are not Send; that is fine, they stay on this thread.
        enter(move || {
            l.borrow_mut().push(1);
            let l2 = Rc::clone(&l);
            run_or_defer(move || {
                l2.borrow_mut().push(3);
                let l3 = Rc::clone(&l2);
                run_or_defer(move || l3.borrow_mut().push(4));
            });
            l.borrow_mut().push(2);
        });
        assert_eq!(*log.borrow(), vec![1, 2, 3, 4]);
        assert!(!is_active());
    }
}
