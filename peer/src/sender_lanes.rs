//! Lanes added and retired while a peer runs (DNS discovery, `discover.rs`). A lane is made
//! in one place ([`Peer::make_lane`]) and ends in one place ([`Peer::end_lane`]): whatever
//! lives per destination is created and destroyed there.

use super::*;
use crate::discover::Discovery;

impl Peer {
    /// Makes the lane of `dest`: for the configured destinations at the first use, for
    /// discovered addresses when they appear.
    pub(super) fn make_lane(&self, dest: Destination) -> Arc<Lane> {
        Arc::new(Lane::new(dest))
    }

    /// Ends a lane that no `enqueue()` can reach and no thread sends from any more: what
    /// is still queued is counted as failed, in bulk.
    pub(super) fn end_lane(&self, lane: &Lane) {
        fail_lane_leftovers(&self.shared, lane);
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
        let lane = self.make_lane(dest);
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
            self.end_lane(&lane);
        }
        left
    }

    /// The destinations of this peer now (retired ones excluded).
    pub fn destinations(&self) -> Vec<Destination> {
        self.lanes()
            .iter()
            .map(|l| Destination::clone(&l.dest))
            .collect()
    }

    /// Adds every address `discovery` found in `vcl_init` as a destination, and keeps the
    /// discovery to refresh while the VCL is warm.
    pub fn add_discovery(&self, discovery: Discovery) -> Result<(), SetupError> {
        let mut discoveries = self.discoveries.lock();
        self.change_setup(|s| s.dests.extend(discovery.destinations()))?;
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
