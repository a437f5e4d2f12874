//! The sender threads of one lane (destination) in one generation: started together, told to
//! drain or to stop together, joined within a time limit. A peer's generation is one crew per
//! lane, so that one lane can be retired (drained and joined) while the others keep going.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};

use crate::sender::{Spawn, StartError};
use crate::snapshot::Template;
use crate::worker::{Control, Lane, Shared, Worker};

/// The threads of one lane.
pub(crate) struct Crew {
    pub(crate) control: Arc<Control>,
    /// Dropped to make the threads drain (they select on it).
    stop: Option<Sender<()>>,
    /// Disconnected when the last thread has exited (nothing is ever sent on it).
    done: Receiver<()>,
    handles: Vec<JoinHandle<()>>,
}

impl Crew {
    /// Starts `settings.concurrency` threads for `lane`, named after `serial` (the lane's
    /// number in this peer) and the peer. If one cannot start, those started are stopped.
    pub(crate) fn spawn(
        shared: &Arc<Shared>,
        lane: &Arc<Lane>,
        template: &Arc<Template>,
        serial: usize,
        spawn: Spawn,
    ) -> Result<Crew, StartError> {
        let control = Arc::new(Control::default());
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (done_tx, done_rx) = bounded::<()>(0);
        let mut crew = Crew {
            control: Arc::clone(&control),
            stop: Some(stop_tx),
            done: done_rx,
            handles: Vec::new(),
        };
        let settings = &shared.settings;
        for thread_no in 0..settings.concurrency.max(1) {
            let worker = Worker {
                shared: Arc::clone(shared),
                lane: Arc::clone(lane),
                template: Arc::clone(template),
                control: Arc::clone(&control),
            };
            let stop_rx = stop_rx.clone();
            let thread_done = done_tx.clone();
            let mut name = format!("peer-{serial}.{thread_no}-{}", settings.name);
            name.truncate(15);
            let body = Box::new(move || {
                let _done = thread_done;
                worker.run(&stop_rx);
            });
            match spawn(name, body) {
                Ok(handle) => crew.handles.push(handle),
                Err(error) => {
                    // The threads started hold the other senders: once they have exited,
                    // `done` disconnects and the join returns (idle, they exit at once).
                    drop(done_tx);
                    crew.abort_for_restart();
                    crew.join(Instant::now() + crate::sender::RESTART_JOIN);
                    return Err(StartError {
                        peer: settings.name.clone(),
                        dest: lane.dest.to_string(),
                        error,
                    });
                }
            }
        }
        Ok(crew)
    }

    /// Sends what is queued until the queue is empty or `drain_timeout` has passed, then
    /// exits. Already draining: only a drain timeout of 0 changes anything (at once).
    pub(crate) fn drain(&mut self, drain_timeout: Duration) {
        if self.stop.take().is_some() {
            self.control.set_deadline(Instant::now() + drain_timeout);
        } else if drain_timeout.is_zero() {
            self.control.set_deadline(Instant::now());
        }
    }

    /// Stops at once for a new generation, giving up nothing (the request in flight goes
    /// back to the head of its queue).
    pub(crate) fn abort_for_restart(&mut self) {
        self.stop = None;
        self.control.abort_for_restart();
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.control.deadline()
    }

    /// True when every thread has exited (does not wait).
    pub(crate) fn finished(&self) -> bool {
        matches!(self.done.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Waits until every thread has exited or `limit` has passed. False when a thread is
    /// still running (stuck in a transfer): it is left to finish detached, with its own
    /// references to what it uses.
    pub(crate) fn join(self, limit: Instant) -> bool {
        loop {
            match self.done.recv_deadline(limit) {
                Ok(()) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    for handle in self.handles {
                        let _ = handle.join();
                    }
                    return true;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}
