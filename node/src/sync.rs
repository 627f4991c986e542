//! Poison-tolerant locking, one definition for the crate: a thread that panicked while holding a
//! lock must not take down every later user of the state it guards (the panic is already logged
//! where it happened, and each guarded value stays valid between statements).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the value even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
