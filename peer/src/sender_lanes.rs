//! Lanes added and retired while a peer runs (DNS discovery, `discover.rs`). A lane is made
//! in one place ([`Peer::make_lane`], with the state `Peer::dest_state` makes: label, counters,
//! gate) and ends in one place ([`Peer::end_lane`], which drops that state, its VSC segment
//! included).

use super::*;
use crate::discover::Discovery;

impl Peer {
    /// The destinations and template, fixed from the first use on.
    pub(super) fn frozen(&self) -> &Frozen {
        self.frozen.get_or_init(|| {
            let setup = std::mem::take(&mut *self.setup.lock());
            let lanes = setup
                .dests
                .into_iter()
                .map(|(dest, state)| self.make_lane(dest, state))
                .collect();
            Frozen {
                lanes: RwLock::new(Arc::new(lanes)),
                template: Arc::new(setup.template),
            }
        })
    }

    /// The lanes requests are queued to now.
    pub(super) fn lanes(&self) -> Arc<Vec<Arc<Lane>>> {
        Arc::clone(&self.frozen().lanes.read())
    }

    /// Runs `f` on the lanes requests are queued to now, under the read lock (two atomic
    /// operations, half the cost of cloning the `Arc`: this is on every request's path).
    /// `f` must not block: a lane being added or retired waits for it.
    pub(super) fn with_lanes<R>(&self, f: impl FnOnce(&[Arc<Lane>]) -> R) -> R {
        f(&self.frozen().lanes.read())
    }

    /// Makes the lane of `dest`: for the configured destinations at the first use, for
    /// discovered addresses when they appear.
    pub(super) fn make_lane(&self, dest: Destination, state: DestState) -> Arc<Lane> {
        Arc::new(Lane::new(dest, state))
    }

    /// Ends a lane that no `enqueue()` can reach and no thread sends from any more: what
    /// is still queued is counted as failed, in bulk; its state (counters) goes with it.
    pub(super) fn end_lane(&self, lane: Arc<Lane>) {
        fail_lane_leftovers(&self.shared, &lane);
        drop(lane);
    }

    /// Replaces the lanes requests are queued to with `f` applied to a copy.
    fn publish(&self, f: impl FnOnce(&mut Vec<Arc<Lane>>)) {
        let mut lanes = self.frozen().lanes.write();
        let mut next = Vec::clone(&lanes);
        f(&mut next);
        *lanes = Arc::new(next);
    }

    /// A destination added while the peer runs: it gets its queue, and its threads at
    /// once when the peer is warm (otherwise at the next warm event).
    pub fn add_lane(&self, dest: Destination) -> Result<(), StartError> {
        let _changes = self.changes.lock();
        // Unique among the lanes still draining too: an address back in DNS before its old
        // lane has ended gets `_2`, never a second counter segment of the same name.
        let retired = self.retired.lock();
        let label = self.with_lanes(|lanes| {
            let lanes = lanes.iter().chain(retired.iter().map(|r| &r.lane));
            let taken: Vec<&str> = lanes.map(|l| l.state.label.as_str()).collect();
            label_for(&dest, "", &taken)
        });
        drop(retired);
        // A label made from the destination (never refused).
        let label = label.unwrap_or_else(|_| dest.to_string());
        let lane = self.make_lane(dest, self.dest_state(label));
        if let Some(generation) = self.running.lock().as_mut().filter(|g| g.warm) {
            let crew = self.spawn_crew(&lane)?;
            generation.crews.push((Arc::clone(&lane), crew));
        }
        self.publish(|lanes| lanes.push(lane));
        Ok(())
    }

    /// Takes `dest` out of the lanes: nothing new is queued to it; its threads send what is
    /// queued for at most `drain_timeout`, then [`Peer::reap_retired`] ends it. False when
    /// it was not a lane.
    pub fn retire_lane(&self, dest: &Destination) -> bool {
        let _changes = self.changes.lock();
        let mut taken = None;
        self.publish(|lanes| {
            if let Some(i) = lanes.iter().position(|l| *l.dest == *dest) {
                taken = Some(lanes.remove(i));
            }
        });
        let Some(lane) = taken else {
            return false;
        };
        lane.retire();
        let crew = self.running.lock().as_mut().and_then(|g| {
            let i = g.crews.iter().position(|(l, _)| Arc::ptr_eq(l, &lane))?;
            Some(g.crews.remove(i).1)
        });
        let crew = crew.map(|mut crew| {
            crew.drain(self.shared.settings.drain_timeout);
            crew
        });
        self.retired.lock().push(Retired { lane, crew });
        true
    }

    /// Ends the retired lanes whose threads have exited and that no `enqueue()` holds any
    /// more; never waits. A thread still running [`JOIN_GRACE`] past its drain deadline is
    /// left to finish detached (logged). Returns how many lanes are still retiring.
    pub fn reap_retired(&self) -> usize {
        let now = Instant::now();
        let mut ended = Vec::new();
        let mut stuck = false;
        let mut retired = self.retired.lock();
        retired.retain_mut(|r| {
            if let Some(crew) = &r.crew {
                if crew.finished() {
                    if let Some(crew) = r.crew.take() {
                        crew.join(now);
                    }
                } else if crew.deadline().is_some_and(|d| now >= d + JOIN_GRACE) {
                    r.crew = None;
                    stuck = true;
                } else {
                    return true;
                }
            }
            // The lanes published and the threads hold the other references: held only
            // here, it is out of reach of every `enqueue()`, in progress or to come.
            if Arc::strong_count(&r.lane) > 1 {
                return true;
            }
            ended.push(Arc::clone(&r.lane));
            false
        });
        let left = retired.len();
        drop(retired);
        if stuck {
            self.shared.log.thread_left_running(&format!(
                "peer {}: a sender thread of a retired destination did not stop in time and \
                 was left to finish",
                self.shared.settings.name
            ));
        }
        for lane in ended {
            self.end_lane(lane);
        }
        left
    }

    /// How many lanes requests are queued to now.
    pub fn lane_count(&self) -> usize {
        self.with_lanes(<[_]>::len)
    }

    /// How many retired lanes are still draining or not ended yet (does not reap).
    pub fn retiring(&self) -> usize {
        self.retired.lock().len()
    }

    /// The destinations of this peer now (retired ones excluded).
    pub fn lane_destinations(&self) -> Vec<Destination> {
        self.lanes()
            .iter()
            .map(|l| Destination::clone(&l.dest))
            .collect()
    }

    /// Adds every address `discovery` found in `vcl_init` as a destination, and keeps the
    /// discovery to refresh while the VCL is warm.
    pub fn add_discovery(&self, discovery: Discovery) -> Result<(), SetupError> {
        let mut discoveries = self.discoveries.lock();
        for dest in discovery.destinations() {
            self.add_named_destination(dest, "")?;
        }
        discoveries.push(discovery);
        Ok(())
    }

    /// Logs a line about this peer's destinations (VSL `Error` in varnishd).
    pub fn log(&self, line: &str) {
        self.shared.log.log(line);
    }

    /// Logs that a thread working for this peer is left running detached.
    pub fn thread_left_running(&self, line: &str) {
        self.shared.log.thread_left_running(line);
    }

    /// The names this peer re-resolves (see `discover.rs`).
    pub fn discoveries(&self) -> &Mutex<Vec<Discovery>> {
        &self.discoveries
    }
}
