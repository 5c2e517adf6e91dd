//! What a shovel is doing: its state and progress, written by its task
//! and read by `GET /api/shovels`.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::definition::ShovelDef;
use crate::broker::message::now_ms;

/// A shovel's state, as RabbitMQ names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for its source or destination (with why), or about to try.
    Starting(Option<String>),
    /// Moving messages.
    Running,
    /// Done (src-delete-after reached) or stopped.
    Terminated(String),
}

/// A shovel's status, shared by its task and the API.
#[derive(Debug)]
pub struct Status {
    /// The shovel's name.
    pub name: String,
    /// The vhost its parameter belongs to.
    pub vhost: String,
    /// What it was told to do.
    pub def: ShovelDef,
    state: Mutex<(State, u64)>,
    moved: AtomicU64,
    /// Messages it is to move in all (src-delete-after), once known.
    total: Mutex<Option<u64>>,
}

impl Status {
    /// A shovel about to start.
    pub fn new(vhost: &str, name: &str, def: ShovelDef) -> Self {
        Status {
            name: name.into(),
            vhost: vhost.into(),
            def,
            state: Mutex::new((State::Starting(None), now_ms())),
            moved: AtomicU64::new(0),
            total: Mutex::new(None),
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.state.lock().0.clone()
    }

    fn set(&self, s: State) {
        *self.state.lock() = (s, now_ms());
    }

    /// It waits (for `why`).
    pub fn set_waiting(&self, why: String) {
        self.set(State::Starting(Some(why)));
    }

    /// It moves messages.
    pub fn set_running(&self) {
        self.set(State::Running);
    }

    /// It has ended.
    pub fn set_terminated(&self, why: &str) {
        self.set(State::Terminated(why.into()));
    }

    /// Whether it has ended (done or stopped): it will not move again.
    pub fn finished(&self) -> bool {
        matches!(self.state.lock().0, State::Terminated(_))
    }

    /// How many it is to move in all (None: no limit).
    pub fn set_total(&self, total: Option<u64>) {
        *self.total.lock() = total;
    }

    /// `n` more were moved.
    pub fn moved(&self, n: u64) {
        self.moved.fetch_add(n, Ordering::Relaxed);
    }

    /// How many are left to move (None: no limit, or not known yet).
    pub fn remaining(&self) -> Option<u64> {
        let total = (*self.total.lock())?;
        Some(total.saturating_sub(self.moved.load(Ordering::Relaxed)))
    }

    /// What the API shows: state, since when (Unix ms), moved, total.
    pub fn snapshot(&self) -> Snapshot {
        let (state, at_ms) = self.state.lock().clone();
        Snapshot {
            state,
            at_ms,
            moved: self.moved.load(Ordering::Relaxed),
            total: *self.total.lock(),
        }
    }
}

/// A status as read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Its state.
    pub state: State,
    /// Since when (Unix ms).
    pub at_ms: u64,
    /// Messages moved.
    pub moved: u64,
    /// Messages it is to move in all, if limited and known.
    pub total: Option<u64>,
}
