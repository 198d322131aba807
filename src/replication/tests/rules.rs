//! The replica's rules one at a time, on real directories.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::Error;
use crate::record::Record;
use crate::{Config, Durability, Log};

use super::super::{
    Acks, FetchOutcome, PartitionState, ProduceRequest, ProducerSequence, Replica, ReplicaId,
    ReplicationConfig,
};

struct Node {
    dir: TempDir,
    log: Option<Log>,
    replica: Replica,
    durability: Durability,
}

impl Node {
    fn new(id: ReplicaId, durability: Durability) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (log, replica) = open(id, &dir, durability);
        Node {
            dir,
            log: Some(log),
            replica,
            durability,
        }
    }

    fn reopen(&mut self) {
        let id = self.replica.id();
        self.log.take().unwrap().close().unwrap();
        let (log, replica) = open(id, &self.dir, self.durability);
        self.log = Some(log);
        self.replica = replica;
    }

    fn values(&self) -> Vec<(u64, String)> {
        let p = self.replica.partition();
        p.read(p.start_offset(), usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| {
                let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                (r.offset, v)
            })
            .collect()
    }
}

fn open(id: ReplicaId, dir: &TempDir, durability: Durability) -> (Log, Replica) {
    let log = Log::open(dir.path(), Config::default().durability(durability)).unwrap();
    let config = ReplicationConfig::default().replica_lag_max(Duration::from_millis(100));
    let replica = Replica::open(id, log.partition(0).unwrap(), config).unwrap();
    (log, replica)
}

fn state(leader: ReplicaId, leader_epoch: i32, isr: &[ReplicaId], epoch: i32) -> PartitionState {
    PartitionState {
        partition: 0,
        replicas: vec![0, 1, 2],
        leader: Some(leader),
        leader_epoch,
        isr: isr.to_vec(),
        elr: Vec::new(),
        partition_epoch: epoch,
    }
}

fn apply(nodes: &[&Node], s: &PartitionState) {
    for node in nodes {
        node.replica.apply(s).unwrap();
    }
}

/// One fetch round of `follower` against `leader`.
fn fetch(leader: &Node, follower: &Node) -> FetchOutcome {
    let (to, request) = follower.replica.fetch_request().expect("a follower");
    assert_eq!(to, leader.replica.id());
    let response = leader
        .replica
        .handle_fetch(&request, Instant::now())
        .unwrap();
    let outcome = response.outcome.clone();
    assert!(follower.replica.handle_fetch_response(response).unwrap());
    outcome
}

fn write(leader: &Node, values: &[&str]) -> u64 {
    let records = values.iter().map(|v| Record::new(v.to_string())).collect();
    let request = ProduceRequest::new(0, records).acks(Acks::Leader);
    leader.replica.produce(&request).unwrap().last_offset
}

#[test]
fn acks_all_waits_for_the_followers_synced_offsets() {
    let a = Node::new(0, Durability::Sync);
    // The follower syncs only when told to.
    let b = Node::new(1, Durability::Interval(Duration::from_secs(3600)));
    apply(&[&a, &b], &state(0, 0, &[0, 1], 0));
    write(&a, &["x", "y"]);
    fetch(&a, &b);
    fetch(&a, &b);
    assert_eq!(b.replica.log_end_offset(), 2);
    assert_eq!(
        a.replica.high_watermark(),
        0,
        "the follower has not synced what it copied"
    );
    b.replica.partition().sync().unwrap();
    fetch(&a, &b);
    assert_eq!(a.replica.high_watermark(), 2);
    // The follower learns it with its next fetch.
    fetch(&a, &b);
    assert_eq!(b.replica.high_watermark(), 2);
    assert_eq!(b.replica.read(0, 1 << 20).unwrap().len(), 2);
}

#[test]
fn acks_all_is_refused_before_anything_is_written_when_the_isr_is_too_small() {
    let a = Node::new(0, Durability::Sync);
    a.replica.apply(&state(0, 0, &[0], 0)).unwrap();
    let request = ProduceRequest::new(0, vec![Record::new("v")]);
    let error = a.replica.produce(&request).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotEnoughReplicas {
                in_sync: 1,
                required: 2,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(a.replica.log_end_offset(), 0);
    // Weaker acknowledgements are still taken.
    a.replica
        .produce(&ProduceRequest::new(0, vec![Record::new("v")]).acks(Acks::Leader))
        .unwrap();
    assert_eq!(a.replica.log_end_offset(), 1);
}

#[test]
fn a_timed_out_write_retried_by_an_idempotent_producer_is_not_written_twice() {
    let a = Node::new(0, Durability::Sync);
    let b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0, 1], 0));
    let request = ProduceRequest::new(0, vec![Record::new("p0"), Record::new("p1")])
        .timeout(Duration::from_millis(30))
        .idempotent(ProducerSequence {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
        });
    let error = a.replica.produce(&request).unwrap_err();
    assert!(
        matches!(error, Error::ReplicationTimeout { offset: 1, .. }),
        "{error}"
    );
    fetch(&a, &b);
    fetch(&a, &b);
    let appended = a.replica.produce(&request).unwrap();
    assert_eq!((appended.base_offset, appended.last_offset), (0, 1));
    assert_eq!(a.replica.log_end_offset(), 2);
    // After a failover the new leader answers the retry the same way.
    apply(&[&a, &b], &state(1, 1, &[0, 1], 1));
    let appended = b
        .replica
        .produce(&request.clone().acks(Acks::Leader))
        .unwrap();
    assert_eq!((appended.base_offset, appended.last_offset), (0, 1));
    assert_eq!(b.replica.log_end_offset(), 2);
}

#[test]
fn a_replica_that_does_not_lead_names_the_leader() {
    let a = Node::new(0, Durability::Sync);
    let b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0, 1], 0));
    let error = b
        .replica
        .produce(&ProduceRequest::new(0, vec![Record::new("v")]))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotLeader {
                replica: 1,
                leader: Some(0),
                leader_epoch: 0,
                ..
            }
        ),
        "{error}"
    );
    let (_, request) = b.replica.fetch_request().unwrap();
    assert!(matches!(
        b.replica.handle_fetch(&request, Instant::now()),
        Err(Error::NotLeader { .. })
    ));
}

#[test]
fn diverging_logs_are_cut_where_the_epochs_part_not_at_a_high_watermark() {
    let mut a = Node::new(0, Durability::Sync);
    let b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0, 1], 0));
    write(&a, &["r0", "r1"]);
    fetch(&a, &b);
    fetch(&a, &b);
    // r2 reaches only the old leader, which then fails; its high watermark
    // on disk is older still.
    write(&a, &["r2"]);
    a.reopen();
    assert_eq!(a.replica.log_end_offset(), 3);
    apply(&[&a, &b], &state(1, 1, &[1], 1));
    write(&b, &["s2", "s3"]);
    let outcome = fetch(&b, &a);
    assert_eq!(
        outcome,
        FetchOutcome::Diverging {
            epoch: 0,
            end_offset: 2
        }
    );
    assert_eq!(a.replica.log_end_offset(), 2);
    fetch(&b, &a);
    assert_eq!(a.values(), b.values());
    assert_eq!(
        a.values().into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        ["r0", "r1", "s2", "s3"]
    );
    assert_eq!(a.replica.leader_epochs(), vec![(0, 0), (1, 2)]);
}

#[test]
fn a_restarted_leader_does_not_lead_its_old_epoch_again() {
    let mut a = Node::new(0, Durability::Sync);
    let s = state(0, 0, &[0], 0);
    a.replica.apply(&s).unwrap();
    write(&a, &["v"]);
    a.reopen();
    let error = a.replica.apply(&s).unwrap_err();
    assert!(
        matches!(error, Error::LeaderEpochMismatch { requested: 0, .. }),
        "{error}"
    );
    assert!(!a.replica.is_leader());
    a.replica.apply(&state(0, 1, &[0], 1)).unwrap();
    assert!(a.replica.is_leader());
}

/// Regression (found by the simulation): an epoch that started at the log
/// end and held no records was dropped at open in memory only; records of
/// an older epoch appended later made it valid again on the next open.
#[test]
fn an_epoch_dropped_at_open_does_not_come_back() {
    let a = Node::new(0, Durability::Sync);
    let mut b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0, 1], 0));
    write(&a, &["r0", "r1"]);
    fetch(&a, &b);
    write(&a, &["r2"]);
    // b leads epoch 1 at offset 2, writes nothing and restarts.
    apply(&[&a, &b], &state(1, 1, &[0, 1], 1));
    assert_eq!(b.replica.leader_epochs(), vec![(0, 0), (1, 2)]);
    b.reopen();
    assert_eq!(b.replica.leader_epochs(), vec![(0, 0)]);
    // a leads again and b copies r2, of epoch 0, at offset 2.
    apply(&[&a, &b], &state(0, 2, &[0, 1], 2));
    fetch(&a, &b);
    assert_eq!(b.replica.log_end_offset(), 3);
    b.reopen();
    assert_eq!(b.replica.leader_epochs(), vec![(0, 0)]);
}

#[test]
fn a_lagging_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let a = Node::new(0, Durability::Sync);
    let b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0, 1], 0));
    let start = Instant::now();
    assert_eq!(a.replica.tick(start).unwrap(), None);
    write(&a, &["v"]);
    let later = start + Duration::from_millis(500);
    let shrink = a.replica.tick(later).unwrap().expect("a shrink");
    assert_eq!(shrink.isr, vec![0]);
    assert_eq!(shrink.partition_epoch, 0);
    // Not answered yet: sent again after the retry interval only.
    assert_eq!(a.replica.tick(later).unwrap(), None);
    let shrunk = state(0, 0, &[0], 1);
    apply(&[&a, &b], &shrunk);
    fetch(&a, &b);
    // Caught up, but the leader's high watermark is behind: b holds all
    // that is committed, so it rejoins.
    fetch(&a, &b);
    let expand = a.replica.tick(later).unwrap().expect("an expansion");
    assert_eq!(expand.isr, vec![0, 1]);
    assert_eq!(expand.partition_epoch, 1);
}

/// Regression (found by the simulation): a follower whose oldest epoch is
/// newer than the epoch the leader names in a divergence holds nothing the
/// leader wrote from its first epoch on, and must cut there.
#[test]
fn a_follower_whose_epochs_are_all_newer_cuts_at_its_first_epoch() {
    let a = Node::new(0, Durability::Sync);
    let b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0], 0));
    write(&a, &["r0", "r1", "r2"]);
    // b leads epoch 1 alone without having copied anything, and writes.
    b.replica.apply(&state(1, 1, &[1], 1)).unwrap();
    write(&b, &["s0", "s1", "s2"]);
    assert_eq!(b.replica.leader_epochs(), vec![(1, 0)]);
    // a leads again; b's epoch 1 is unknown to it.
    apply(&[&a, &b], &state(0, 2, &[0], 2));
    write(&a, &["r3"]);
    let outcome = fetch(&a, &b);
    assert_eq!(
        outcome,
        FetchOutcome::Diverging {
            epoch: 0,
            end_offset: 3
        }
    );
    assert_eq!(b.replica.log_end_offset(), 0);
    fetch(&a, &b);
    assert_eq!(a.values(), b.values());
    assert_eq!(b.replica.leader_epochs(), vec![(0, 0), (2, 3)]);
}

/// Regression (found by the simulation): a new leader's high watermark may
/// lag the one its predecessor reached, so a follower joins the ISR only
/// once it has synced everything up to the start of the leader's epoch —
/// otherwise a power loss could leave an elected ISR member without a
/// committed record.
#[test]
fn a_follower_joins_the_isr_only_with_the_leaders_epoch_start_synced() {
    let a = Node::new(0, Durability::Sync);
    let b = Node::new(1, Durability::Sync);
    let c = Node::new(2, Durability::Interval(Duration::from_secs(3600)));
    apply(&[&a, &b, &c], &state(0, 0, &[0, 1], 0));
    write(&a, &["r0", "r1"]);
    fetch(&a, &b);
    // b's next fetch commits r0 and r1; the answer is lost.
    let (_, request) = b.replica.fetch_request().unwrap();
    a.replica.handle_fetch(&request, Instant::now()).unwrap();
    assert_eq!(a.replica.high_watermark(), 2, "committed by a and b");
    assert_eq!(b.replica.high_watermark(), 0, "b has not heard yet");
    // b leads; a is gone.
    apply(&[&b, &c], &state(1, 1, &[1], 1));
    let now = Instant::now();
    b.replica.tick(now).unwrap();
    fetch(&b, &c);
    fetch(&b, &c);
    assert_eq!(c.replica.log_end_offset(), 2);
    assert_eq!(b.replica.tick(now).unwrap(), None, "c has synced nothing");
    c.replica.partition().sync().unwrap();
    fetch(&b, &c);
    let expand = b.replica.tick(now).unwrap().expect("an expansion");
    assert_eq!(expand.isr, vec![1, 2]);
}

/// A follower given damaged batches refuses them with an error, appends
/// nothing of them, and goes on once it gets good ones.
#[test]
fn damaged_batches_from_a_leader_are_refused_and_nothing_of_them_is_appended() {
    let a = Node::new(0, Durability::Sync);
    let b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0, 1], 0));
    write(&a, &["r0", "r1", "r2"]);
    let (_, request) = b.replica.fetch_request().unwrap();
    let response = a.replica.handle_fetch(&request, Instant::now()).unwrap();
    let FetchOutcome::Batches(batches) = &response.outcome else {
        panic!("batches expected");
    };
    let good = batches[0].clone();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    for round in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut bytes = good.to_vec();
        match round % 3 {
            0 => {
                let at = (rng as usize) % bytes.len();
                bytes[at] ^= 1 << ((rng >> 32) % 8);
            }
            1 => bytes.truncate((rng as usize) % bytes.len()),
            _ => bytes.extend_from_slice(&rng.to_le_bytes()),
        }
        let mut damaged = response.clone();
        damaged.outcome = FetchOutcome::Batches(vec![bytes.into()]);
        let result = b.replica.handle_fetch_response(damaged);
        assert!(result.is_err(), "round {round}: damage accepted");
        assert_eq!(b.replica.log_end_offset(), 0, "round {round}");
        assert!(b.replica.leader_epochs().is_empty(), "round {round}");
    }
    assert!(b.replica.handle_fetch_response(response).unwrap());
    assert_eq!(b.values(), a.values());
}

/// A follower that fell behind the records the leader still holds drops
/// its log and copies from the leader's log start.
#[test]
fn a_follower_behind_the_leaders_log_start_starts_again_there() {
    let a = Node::new(0, Durability::Sync);
    let mut b = Node::new(1, Durability::Sync);
    apply(&[&a, &b], &state(0, 0, &[0], 0));
    write(&a, &["r0", "r1"]);
    fetch(&a, &b);
    write(&a, &["r2", "r3", "r4"]);
    a.replica.partition().delete_records_before(3).unwrap();
    assert_eq!(fetch(&a, &b), FetchOutcome::OffsetOutOfRange);
    let partition = b.replica.partition();
    assert_eq!((partition.start_offset(), partition.end_offset()), (3, 3));
    assert_eq!(b.replica.high_watermark(), 3);
    fetch(&a, &b);
    assert_eq!(
        b.values(),
        vec![(3, "r3".to_string()), (4, "r4".to_string())]
    );
    b.reopen();
    let partition = b.replica.partition();
    assert_eq!((partition.start_offset(), partition.end_offset()), (3, 5));
    // The epoch starts with the batch that holds the log start.
    assert_eq!(b.replica.leader_epochs(), vec![(0, 2)]);
    assert_eq!(b.values(), a.values());
}
