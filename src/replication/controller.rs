//! Who leads: the [`Controller`] trait and an in-memory controller.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

use crate::error::{Error, Result};

use super::messages::{AlterIsr, PartitionState, ReplicaId};

/// The authority on leadership and in-sync replicas. Replicas never elect
/// themselves: they act on the states a controller hands out
/// ([`Replica::apply`](super::Replica::apply)) and ask it to change the ISR.
///
/// An implementation must behave as one linearizable register per
/// partition holding a [`PartitionState`]:
///
/// - [`alter_isr`](Controller::alter_isr) is a compare-and-set: it applies
///   only if the request's leader, leader epoch and partition epoch are the
///   current ones, bumps the partition epoch, and keeps the ELR rule
///   (replicas leaving an ISR smaller than `min_insync_replicas` join the
///   ELR; the ELR empties when the ISR reaches `min_insync_replicas`).
/// - Elections (when the leader fails) pick from the live ISR, then from
///   the live ELR, and only if configured from any live replica; each
///   bumps the leader epoch and the partition epoch.
///
/// See the [module documentation](super) for implementations on etcd,
/// ZooKeeper or a Raft group; [`InMemoryController`] is the reference.
pub trait Controller: Send + Sync {
    /// The current state of `partition`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`], or the implementation's own errors
    /// (reaching the coordination service).
    fn state(&self, partition: u32) -> Result<PartitionState>;

    /// Applies a leader's ISR change and returns the new state.
    ///
    /// # Errors
    ///
    /// [`Error::ControllerRefused`] when the request is not based on the
    /// current state or is invalid; the leader then applies the current
    /// state ([`Controller::state`]).
    fn alter_isr(&self, request: &AlterIsr) -> Result<PartitionState>;
}

/// Settings of an [`InMemoryController`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// The ISR size below which the high watermark stands still and
    /// removed replicas join the ELR. Must equal the replicas'
    /// [`ReplicationConfig::min_insync_replicas`](super::ReplicationConfig::min_insync_replicas).
    /// Default 2.
    pub min_insync_replicas: usize,
    /// Whether a replica outside the ISR and the ELR may be elected when no
    /// eligible replica is alive. This loses committed records whenever the
    /// elected replica lacks them; it trades them for availability. Default
    /// `false`: the partition stays without a leader instead.
    pub unclean_leader_election: bool,
}

impl Default for ControllerConfig {
    fn default() -> ControllerConfig {
        ControllerConfig {
            min_insync_replicas: 2,
            unclean_leader_election: false,
        }
    }
}

impl ControllerConfig {
    /// Sets `min_insync_replicas`.
    pub fn min_insync_replicas(mut self, n: usize) -> ControllerConfig {
        self.min_insync_replicas = n;
        self
    }

    /// Sets `unclean_leader_election`.
    pub fn unclean_leader_election(mut self, allowed: bool) -> ControllerConfig {
        self.unclean_leader_election = allowed;
        self
    }
}

/// A controller that keeps every partition's state in memory, for tests,
/// simulations, examples and single-process hosts. The host tells it which
/// replicas are alive ([`replica_offline`](InMemoryController::replica_offline),
/// [`replica_online`](InMemoryController::replica_online)) — in a real
/// system a session with the coordination service does that — and sends
/// every changed state it returns to the replicas.
#[derive(Debug)]
pub struct InMemoryController {
    config: ControllerConfig,
    inner: Mutex<Registry>,
}

#[derive(Debug)]
struct Registry {
    partitions: BTreeMap<u32, PartitionState>,
    live: BTreeSet<ReplicaId>,
    next_producer_id: i64,
}

impl InMemoryController {
    /// A controller for `partitions` partitions, each replicated on every
    /// replica of `replicas` (at least one). Partition `p` is first led by
    /// `replicas[p % n]`, with every replica in sync and alive.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for no replicas, repeated ids, or a
    /// `min_insync_replicas` of 0 or above the replica count.
    pub fn new(
        partitions: u32,
        replicas: &[ReplicaId],
        config: ControllerConfig,
    ) -> Result<InMemoryController> {
        let distinct: BTreeSet<ReplicaId> = replicas.iter().copied().collect();
        if replicas.is_empty() || distinct.len() != replicas.len() {
            return Err(Error::config(
                "replicas",
                "needs at least one replica and no repeated ids",
            ));
        }
        if config.min_insync_replicas == 0 || config.min_insync_replicas > replicas.len() {
            return Err(Error::config(
                "min_insync_replicas",
                format!("must be between 1 and the {} replicas", replicas.len()),
            ));
        }
        let partitions = (0..partitions)
            .map(|p| {
                let mut order = replicas.to_vec();
                order.rotate_left(p as usize % replicas.len());
                (p, PartitionState::initial(p, &order))
            })
            .collect();
        Ok(InMemoryController {
            config,
            inner: Mutex::new(Registry {
                partitions,
                live: distinct,
                next_producer_id: 0,
            }),
        })
    }

    /// Every partition's state.
    pub fn states(&self) -> Vec<PartitionState> {
        self.inner.lock().partitions.values().cloned().collect()
    }

    /// The replicas the controller counts as alive.
    pub fn live_replicas(&self) -> Vec<ReplicaId> {
        self.inner.lock().live.iter().copied().collect()
    }

    /// A producer id no other caller of this controller gets.
    pub fn allocate_producer_id(&self) -> i64 {
        let mut inner = self.inner.lock();
        let id = inner.next_producer_id;
        inner.next_producer_id += 1;
        id
    }

    /// The replica is gone (its session expired, it was shut down): it
    /// leaves every ISR, joining the ELR where the ISR drops below
    /// `min_insync_replicas`, and partitions it led get a new leader.
    /// Returns the states that changed.
    pub fn replica_offline(&self, replica: ReplicaId) -> Vec<PartitionState> {
        let mut inner = self.inner.lock();
        inner.live.remove(&replica);
        self.remove_everywhere(&mut inner, replica)
    }

    fn remove_everywhere(&self, inner: &mut Registry, replica: ReplicaId) -> Vec<PartitionState> {
        let live = inner.live.clone();
        let mut changed = Vec::new();
        for state in inner.partitions.values_mut() {
            if !state.replicas.contains(&replica) {
                continue;
            }
            let mut touched = false;
            if state.isr.contains(&replica) {
                let isr: Vec<ReplicaId> = state
                    .isr
                    .iter()
                    .copied()
                    .filter(|&r| r != replica)
                    .collect();
                self.set_isr(state, isr);
                touched = true;
            }
            if state.leader == Some(replica) {
                self.elect(state, &live);
                touched = true;
            }
            if touched {
                state.partition_epoch += 1;
                changed.push(state.clone());
            }
        }
        changed
    }

    /// The replica is (back) up: a new incarnation, which never resumes an
    /// old leadership. Partitions without a leader elect one if they can.
    /// If the controller still counted the replica as alive (it restarted
    /// before being noticed), it is first treated as gone. Returns the
    /// states that changed.
    pub fn replica_online(&self, replica: ReplicaId) -> Vec<PartitionState> {
        let mut inner = self.inner.lock();
        let mut changed = if inner.live.contains(&replica) {
            inner.live.remove(&replica);
            self.remove_everywhere(&mut inner, replica)
        } else {
            Vec::new()
        };
        inner.live.insert(replica);
        let live = inner.live.clone();
        for state in inner.partitions.values_mut() {
            if state.leader.is_none() && state.replicas.contains(&replica) {
                self.elect(state, &live);
                if state.leader.is_some() {
                    state.partition_epoch += 1;
                    changed.retain(|s| s.partition != state.partition);
                    changed.push(state.clone());
                }
            }
        }
        changed
    }

    /// Replaces the ISR, keeping the ELR rule.
    fn set_isr(&self, state: &mut PartitionState, isr: Vec<ReplicaId>) {
        if isr.len() < self.config.min_insync_replicas {
            // The high watermark stands still from now on: whoever leaves
            // the ISR now holds every committed record.
            for &r in &state.isr {
                if !isr.contains(&r) && !state.elr.contains(&r) {
                    state.elr.push(r);
                }
            }
        } else {
            state.elr.clear();
        }
        state.elr.retain(|r| !isr.contains(r));
        state.isr = isr;
    }

    /// Elects a leader among the live ISR, else the live ELR, else (if
    /// allowed) any live replica; bumps the leader epoch.
    fn elect(&self, state: &mut PartitionState, live: &BTreeSet<ReplicaId>) {
        let pick = |set: &[ReplicaId]| {
            state
                .replicas
                .iter()
                .copied()
                .find(|r| set.contains(r) && live.contains(r))
        };
        let leader = if let Some(leader) = pick(&state.isr) {
            Some(leader)
        } else if let Some(leader) = pick(&state.elr) {
            state.elr.retain(|&r| r != leader);
            state.isr = vec![leader];
            Some(leader)
        } else if self.config.unclean_leader_election {
            let leader = pick(&state.replicas);
            if let Some(leader) = leader {
                state.isr = vec![leader];
                state.elr.clear();
            }
            leader
        } else {
            None
        };
        state.leader = leader;
        state.leader_epoch += 1;
    }
}

impl Controller for InMemoryController {
    fn state(&self, partition: u32) -> Result<PartitionState> {
        let inner = self.inner.lock();
        inner
            .partitions
            .get(&partition)
            .cloned()
            .ok_or(Error::UnknownPartition {
                partition,
                partitions: u32::try_from(inner.partitions.len()).unwrap_or(u32::MAX),
            })
    }

    fn alter_isr(&self, request: &AlterIsr) -> Result<PartitionState> {
        let mut inner = self.inner.lock();
        let count = u32::try_from(inner.partitions.len()).unwrap_or(u32::MAX);
        let state =
            inner
                .partitions
                .get_mut(&request.partition)
                .ok_or(Error::UnknownPartition {
                    partition: request.partition,
                    partitions: count,
                })?;
        let refuse = |reason: &str| Error::ControllerRefused {
            partition: request.partition,
            reason: reason.to_string(),
        };
        if state.leader != Some(request.leader) || state.leader_epoch != request.leader_epoch {
            return Err(refuse(
                "the request is not from the current leader and epoch",
            ));
        }
        if state.partition_epoch != request.partition_epoch {
            return Err(refuse(
                "the request is based on an outdated partition epoch",
            ));
        }
        let distinct: BTreeSet<ReplicaId> = request.isr.iter().copied().collect();
        if !request.isr.contains(&request.leader)
            || distinct.len() != request.isr.len()
            || !request.isr.iter().all(|r| state.replicas.contains(r))
        {
            return Err(refuse(
                "the ISR must hold the leader and only assigned replicas, once each",
            ));
        }
        self.set_isr(state, request.isr.clone());
        state.partition_epoch += 1;
        Ok(state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(min_isr: usize) -> InMemoryController {
        InMemoryController::new(
            1,
            &[1, 2, 3],
            ControllerConfig::default().min_insync_replicas(min_isr),
        )
        .unwrap()
    }

    fn shrink(c: &InMemoryController, isr: &[ReplicaId]) -> PartitionState {
        let s = c.state(0).unwrap();
        c.alter_isr(&AlterIsr {
            partition: 0,
            leader: s.leader.unwrap(),
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            isr: isr.to_vec(),
        })
        .unwrap()
    }

    #[test]
    fn replicas_leaving_a_too_small_isr_become_eligible() {
        let c = controller(2);
        let s = shrink(&c, &[1, 2]);
        assert_eq!((s.isr.as_slice(), s.elr.as_slice()), (&[1, 2][..], &[][..]));
        let s = shrink(&c, &[1]);
        assert_eq!((s.isr.as_slice(), s.elr.as_slice()), (&[1][..], &[2][..]));
        // The leader goes: the ELR member leads, not replica 3.
        let changed = c.replica_offline(1);
        let s = &changed[0];
        assert_eq!(s.leader, Some(2));
        assert_eq!(s.isr, vec![2]);
        assert_eq!(s.elr, vec![1]);
        assert_eq!(s.leader_epoch, 1);
    }

    #[test]
    fn without_eligible_replicas_there_is_no_leader_unless_unclean_is_allowed() {
        let c = controller(2);
        shrink(&c, &[1, 2]);
        c.replica_offline(1);
        c.replica_offline(2);
        let s = c.state(0).unwrap();
        assert_eq!(s.leader, None);
        assert!(c.replica_online(3).is_empty());
        assert_eq!(c.state(0).unwrap().leader, None);
        let s = c.replica_online(2);
        assert_eq!(s[0].leader, Some(2));

        let unclean = InMemoryController::new(
            1,
            &[1, 2, 3],
            ControllerConfig::default().unclean_leader_election(true),
        )
        .unwrap();
        shrink(&unclean, &[1, 2]);
        unclean.replica_offline(1);
        unclean.replica_offline(2);
        assert_eq!(unclean.state(0).unwrap().leader, Some(3));
    }

    #[test]
    fn stale_or_invalid_isr_changes_are_refused() {
        let c = controller(1);
        let s = c.state(0).unwrap();
        shrink(&c, &[1, 2]);
        let stale = AlterIsr {
            partition: 0,
            leader: 1,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            isr: vec![1],
        };
        assert!(matches!(
            c.alter_isr(&stale),
            Err(Error::ControllerRefused { .. })
        ));
        let s = c.state(0).unwrap();
        for isr in [vec![2], vec![1, 1], vec![1, 9]] {
            let bad = AlterIsr {
                partition: 0,
                leader: 1,
                leader_epoch: s.leader_epoch,
                partition_epoch: s.partition_epoch,
                isr,
            };
            assert!(c.alter_isr(&bad).is_err());
        }
    }

    #[test]
    fn a_restart_before_being_noticed_still_ends_the_old_leadership() {
        let c = controller(2);
        let before = c.state(0).unwrap();
        let changed = c.replica_online(1);
        let after = c.state(0).unwrap();
        assert_eq!(changed.last(), Some(&after));
        assert!(after.leader_epoch > before.leader_epoch);
        assert_ne!(after.leader, Some(1));
        assert!(!after.isr.contains(&1));
    }
}
