//! Pool of logged-in PKCS#11 sessions.

use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{HsmConfig, HsmError};

/// Sessions of one login. The semaphore has one permit per session, and a task
/// takes a session out of `idle` only while it holds a permit, so `idle` is
/// never empty when a permit holder pops from it.
///
/// NOTE: a session that the token has closed (after an HSM restart, for
/// example) goes back into the pool as it is, so operations keep failing until
/// the process opens the HSM again.
pub(super) struct SessionPool {
    idle: Mutex<Vec<Session>>,
    permits: Arc<Semaphore>,
}

/// Session taken from the pool. Dropping it puts the session back before the
/// permit is released.
pub(super) struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
    _permit: OwnedSemaphorePermit,
}

impl SessionPool {
    /// Builds a pool of `config.sessions` sessions around `first`, the logged-in
    /// session that `Hsm::open` used to find the keys. The sessions opened
    /// here share its login, because PKCS#11 logs in all sessions of an
    /// application on a token at once.
    pub(super) fn open(
        pkcs11: &Pkcs11,
        slot: Slot,
        first: Session,
        config: &HsmConfig,
    ) -> Result<SessionPool, HsmError> {
        let mut sessions = Vec::with_capacity(config.sessions);
        sessions.push(first);
        while sessions.len() < config.sessions {
            let session = pkcs11
                .open_ro_session(slot)
                .map_err(|source| HsmError::OpenSession { token: config.token_label.clone(), source })?;
            sessions.push(session);
        }

        Ok(SessionPool { idle: Mutex::new(sessions), permits: Arc::new(Semaphore::new(config.sessions)) })
    }

    /// Waits until a session is free and returns the permit to take it.
    pub(super) async fn reserve(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.permits).acquire_owned().await.expect("the pool's semaphore is never closed")
    }

    /// Waits, blocking the thread, until a session is free and takes it. Call it
    /// only from a blocking context, never from an async task.
    pub(super) fn take_blocking(&self) -> PooledSession<'_> {
        let permit = futures::executor::block_on(self.reserve());
        self.take(permit)
    }

    pub(super) fn take(&self, permit: OwnedSemaphorePermit) -> PooledSession<'_> {
        // A poisoned lock only means that a thread panicked while pushing or
        // popping, which leaves the vector itself valid.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let session = idle.pop().expect("a permit holder always finds an idle session");
        PooledSession { pool: self, session: Some(session), _permit: permit }
    }
}

impl Deref for PooledSession<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session.as_ref().expect("the session is only taken out in drop")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.push(session);
        }
    }
}
