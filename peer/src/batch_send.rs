//! A sender thread of a batch peer: it takes up to `max_items` queued items (waiting at
//! most `window` after the first of them was queued, and adding those queued while the
//! destination's gate made it wait), sends them as one call, retries the
//! call as a whole per the peer's policy, and counts every item as sent, failed or expired.
//! Items past `max_age` leave the batch before each attempt, and again when the
//! destination's gate made it wait.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};

use crate::batch::{item_of, BatchSpec, Room};
use crate::sender::Transport;
use crate::snapshot::Prepared;
use crate::stats::{PeerCounters, Tally};
use crate::worker::{End, Job, Worker};

/// How often a thread waiting for more items looks at the stop deadline: a drain or a
/// restart must not wait for the window to close.
const WINDOW_POLL: Duration = Duration::from_millis(50);

/// The moment a batch whose first item was queued at `first_queued` stops waiting for
/// more: a backlog older than the window is sent at once.
pub fn window_end(first_queued: Instant, window: Duration) -> Instant {
    first_queued.checked_add(window).unwrap_or(first_queued)
}

/// What [`Worker::take_queued`] found.
enum Queued {
    Took,
    /// Nothing queued.
    Empty,
    /// The batch has no room for the next item (which stays queued).
    Full,
    Closed,
}

/// The room left in a call for items besides `jobs`.
fn room_left(spec: &BatchSpec, jobs: &[Job]) -> Room {
    let mut room = spec.room();
    for job in jobs {
        room.take(spec, item_of(&job.snap));
    }
    room
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Worker {
    /// Sends `first` and the items that join it as one call (or several attempts of it).
    pub(crate) fn process_batch(
        &self,
        transport: &mut dyn Transport,
        first: Job,
        spec: &BatchSpec,
    ) {
        let mut jobs = Vec::with_capacity(spec.max_items.min(256));
        self.take_item(first, &mut jobs);
        self.collect(spec, &mut jobs);
        let end = catch_unwind(AssertUnwindSafe(|| {
            self.batch_attempts(transport, spec, &mut jobs)
        }))
        .unwrap_or_else(|_| End::Failed("internal error (panic) in the sender".into()));
        self.finish_batch(spec, end, jobs);
    }

    /// Moves a job from the queue to this batch (in flight).
    fn take_item(&self, job: Job, jobs: &mut Vec<Job>) {
        self.take(&job);
        jobs.push(job);
    }

    /// Adds queued items to the batch until it is full or its window closes. When the
    /// generation is stopping, only what is queued already joins (no wait).
    fn collect(&self, spec: &BatchSpec, jobs: &mut Vec<Job>) {
        let Some(first) = jobs.first() else {
            return;
        };
        let end = window_end(first.queued_at(), spec.window);
        let mut room = room_left(spec, jobs);
        loop {
            match self.take_queued(spec, &mut room, jobs) {
                Queued::Took => continue,
                Queued::Full | Queued::Closed => return,
                Queued::Empty => {}
            }
            let now = Instant::now();
            if now >= end || self.control.deadline().is_some() {
                return;
            }
            match self.lane.rx.recv_timeout((end - now).min(WINDOW_POLL)) {
                Ok(job) => {
                    if let Queued::Full = self.join(spec, &mut room, job, jobs) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Moves one item already queued (one handed back by a stopped generation first) into
    /// the batch if it has room for it, without waiting.
    fn take_queued(&self, spec: &BatchSpec, room: &mut Room, jobs: &mut Vec<Job>) -> Queued {
        if room.is_full() {
            return Queued::Full;
        }
        if let Some(job) = self.lane.take_resumed() {
            return self.join(spec, room, job, jobs);
        }
        match self.lane.rx.try_recv() {
            Ok(job) => self.join(spec, room, job, jobs),
            Err(TryRecvError::Empty) => Queued::Empty,
            Err(TryRecvError::Disconnected) => Queued::Closed,
        }
    }

    /// Takes `job` into the batch, or puts it back at the head of the queue when the batch
    /// has no room for it.
    fn join(&self, spec: &BatchSpec, room: &mut Room, job: Job, jobs: &mut Vec<Job>) -> Queued {
        if room.take(spec, item_of(&job.snap)) {
            self.take_item(job, jobs);
            Queued::Took
        } else {
            self.lane.put_back(job);
            Queued::Full
        }
    }

    /// Adds what was queued while the batch waited at the gate, as far as there is room,
    /// without waiting. True when some joined (the call must be rendered again).
    fn top_up(&self, spec: &BatchSpec, jobs: &mut Vec<Job>) -> bool {
        let before = jobs.len();
        let mut room = room_left(spec, jobs);
        while let Queued::Took = self.take_queued(spec, &mut room, jobs) {}
        jobs.len() > before
    }

    /// Removes the items older than `max_age` from the batch and counts them as expired.
    /// True when some were removed (the call must be rendered again).
    fn expire_items(&self, spec: &BatchSpec, jobs: &mut Vec<Job>, now: Instant) -> bool {
        let policy = &self.shared.settings.policy;
        let before = jobs.len();
        jobs.retain(|job| !policy.is_expired(job.queued_at(), now));
        let expired = before - jobs.len();
        if expired > 0 {
            let why = format!("waited longer than max_age {:?}", policy.max_age);
            let end = End::Expired(why);
            if let Some((_, why)) = self.count_end(&end, count(expired)) {
                self.log_batch(spec, &format!("expired {expired} items of a batch"), why);
            }
        }
        expired > 0
    }

    fn batch_attempts(
        &self,
        transport: &mut dyn Transport,
        spec: &BatchSpec,
        jobs: &mut Vec<Job>,
    ) -> End {
        let mut prepared: Option<Prepared> = None;
        let mut attempts = 0;
        let mut retrying = false;
        loop {
            if self.control.aborted() {
                return self.stopped(|| format!("{} before it was sent", self.lane.stop_reason()));
            }
            if self.expire_items(spec, jobs, Instant::now()) {
                prepared = None;
            }
            // The newest item decides whether a retry is still worth it: the batch is retried
            // while one of its items may still be sent.
            let Some(mut newest) = jobs.iter().map(Job::queued_at).max() else {
                return End::Expired(String::new());
            };
            // The destination's gate (pause, circuit, rate limit), as for a single request;
            // the newest item decides, as for retries.
            if let Some(end) = self.wait_at_gate(newest) {
                return end;
            }
            // The gate may have made the batch wait (a rate limit, a pause): what was queued
            // meanwhile joins the first attempt (a retry keeps its items: a new one would
            // get fewer attempts), and the items that passed max_age leave. When none is
            // left, the attempt is not made and the gate gets back what it gave for it.
            if attempts == 0 && self.top_up(spec, jobs) {
                prepared = None;
                newest = jobs.iter().map(Job::queued_at).max().unwrap_or(newest);
            }
            if self.expire_items(spec, jobs, Instant::now()) {
                prepared = None;
                if jobs.is_empty() {
                    self.lane.state.give_back();
                    return End::Expired(String::new());
                }
            }
            if retrying {
                // Counted per item, when the retry is about to happen.
                let n = count(jobs.len());
                PeerCounters::add(&self.shared.counters().retried, n);
                self.lane.state.counters().tally_n(Tally::Retried, n);
            }
            let call = prepared.get_or_insert_with(|| {
                let items: Vec<&[u8]> = jobs.iter().map(|j| item_of(&j.snap)).collect();
                spec.prepare(&self.template, &items, &self.lane.dest)
            });
            attempts += 1;
            if let Some(end) = self.attempt(transport, call, attempts, newest) {
                return end;
            }
            retrying = true;
        }
    }

    /// Counts every item still in the batch as its end says (or hands them back, in order).
    fn finish_batch(&self, spec: &BatchSpec, end: End, jobs: Vec<Job>) {
        let n = count(jobs.len());
        let Some((verb, reason)) = self.count_end(&end, n) else {
            for job in jobs {
                self.hand_back(job);
            }
            return;
        };
        if !verb.is_empty() && n > 0 {
            self.log_batch(spec, &format!("{verb} a batch of {n} items"), reason);
        }
    }

    fn log_batch(&self, spec: &BatchSpec, what: &str, reason: &str) {
        self.shared.log.log(&format!(
            "peer {}: {what} ({} {}) to {}: {reason}",
            self.shared.settings.name,
            String::from_utf8_lossy(&spec.method),
            String::from_utf8_lossy(&spec.url),
            self.lane.dest,
        ));
    }
}
