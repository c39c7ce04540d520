//! Locks that stay usable when a thread panicked while holding them: vigil's shared state is
//! kept consistent by each short critical section, so a panic elsewhere (a bug, caught and
//! reported) must never make it unreadable.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`], a poisoned lock taken all the same.
pub trait LockUnpoisoned<T: ?Sized> {
    /// The guard.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockUnpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`], a poisoned lock taken all the same.
pub trait RwLockUnpoisoned<T: ?Sized> {
    /// The read guard.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// The write guard.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockUnpoisoned<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_locked_leaves_the_value_usable() {
        let shared = std::sync::Arc::new(Mutex::new(1));
        let inner = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = inner.lock_unpoisoned();
            panic!("a bug");
        })
        .join();
        assert!(shared.is_poisoned());
        *shared.lock_unpoisoned() += 1;
        assert_eq!(*shared.lock_unpoisoned(), 2);
    }
}
