//! A subscribed consumer's membership: a static member's restart within the
//! session timeout, the fencing of its previous incarnation, leaving on
//! close, switching to a manual assignment, and the refusals of
//! `subscribe`. Time comes from a `ManualClock`.

#![cfg(feature = "offsets")]

use std::sync::Arc;
use std::time::Duration;

use durable_log::offsets::{
    AssignorKind, AutoOffsetReset, Consumer, ConsumerConfig, GroupConfig, GroupCoordinator,
    GroupState, ManualClock,
};
use durable_log::{Config, Durability, Error, Log, Record};
use tempfile::TempDir;

const GROUP: &str = "billing";
const SESSION: Duration = Duration::from_secs(10);
const SETTLE_ROUNDS: usize = 50;

struct Fixture {
    _dir: TempDir,
    log: Log,
    clock: Arc<ManualClock>,
    groups: GroupCoordinator,
}

fn fixture(partitions: u32) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::default()
        .partitions(partitions)
        .durability(Durability::None);
    let log = Log::open(dir.path(), config).expect("open");
    for p in 0..partitions {
        let records: Vec<Record> = (0..10).map(|o| Record::new(format!("{p}-{o}"))).collect();
        log.partition(p)
            .expect("partition")
            .append(&records)
            .expect("append");
    }
    let clock = Arc::new(ManualClock::new());
    let group_config = GroupConfig::default()
        .session_timeout(SESSION)
        .assignor(AssignorKind::Range);
    let groups =
        GroupCoordinator::with_clock(partitions, group_config, clock.clone()).expect("coordinator");
    Fixture {
        _dir: dir,
        log,
        clock,
        groups,
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig::new(GROUP)
        .auto_commit(true)
        .auto_commit_interval(Duration::ZERO)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(2)
}

impl Fixture {
    fn subscribe(&self, config: ConsumerConfig) -> Consumer {
        let mut consumer = Consumer::new(&self.log, config).expect("consumer");
        consumer.subscribe(&self.groups).expect("subscribe");
        consumer
    }

    fn settle(&self, consumers: &mut [&mut Consumer]) {
        for _ in 0..SETTLE_ROUNDS {
            for c in consumers.iter_mut() {
                c.poll(Duration::ZERO).expect("poll");
            }
            let group = self.groups.describe(GROUP).expect("group");
            if group.state == GroupState::Stable
                && consumers
                    .iter()
                    .all(|c| c.generation() == Some(group.generation))
            {
                return;
            }
        }
        panic!("no settling: {:?}", self.groups.describe(GROUP));
    }

    fn generation(&self) -> u32 {
        self.groups.describe(GROUP).expect("group").generation
    }
}

fn sorted(mut partitions: Vec<u32>) -> Vec<u32> {
    partitions.sort_unstable();
    partitions
}

#[test]
fn a_static_member_restarting_within_the_session_timeout_keeps_its_partitions() {
    let f = fixture(4);
    let mut a = f.subscribe(config().group_instance_id("a"));
    let mut b = f.subscribe(config().group_instance_id("b"));
    f.settle(&mut [&mut a, &mut b]);
    let generation = f.generation();
    let (held_a, held_b) = (sorted(a.assignment()), sorted(b.assignment()));
    assert_eq!(held_b.len(), 2);

    // `b` reads a record from each partition, commits it on close, and
    // does not leave.
    let read = b.poll(Duration::ZERO).expect("poll");
    assert_eq!(read.len(), 2);
    let positions: Vec<(u32, u64)> = held_b
        .iter()
        .map(|&p| (p, b.position(p).expect("position")))
        .collect();
    b.close().expect("close");
    assert_eq!(f.groups.describe(GROUP).expect("group").members.len(), 2);

    // It comes back before its session expires; `a` polls meanwhile.
    for _ in 0..2 {
        f.clock.advance(SESSION / 3);
        a.poll(Duration::ZERO).expect("poll");
    }
    let mut b = f.subscribe(config().group_instance_id("b"));
    assert_eq!(sorted(b.assignment()), held_b);
    assert_eq!(b.generation(), Some(generation));
    let again = b.poll(Duration::ZERO).expect("poll");
    // It goes on after what its previous incarnation committed.
    let firsts: Vec<(u32, u64)> = held_b
        .iter()
        .filter_map(|&p| again.iter().find(|r| r.partition == p))
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(firsts, positions);
    // No rebalance: the other member saw nothing change.
    a.poll(Duration::ZERO).expect("poll");
    assert_eq!(sorted(a.assignment()), held_a);
    assert_eq!(a.generation(), Some(generation));
    assert_eq!(f.generation(), generation);
}

#[test]
fn a_replaced_static_member_is_fenced() {
    let f = fixture(2);
    let mut old = f.subscribe(config().group_instance_id("a"));
    f.settle(&mut [&mut old]);
    assert_eq!(old.poll(Duration::ZERO).expect("poll").len(), 2);
    let committed = old.committed(0).expect("committed");

    // A new incarnation takes over while the old one still runs.
    let mut new = f.subscribe(config().group_instance_id("a"));
    assert_eq!(sorted(new.assignment()), vec![0, 1]);
    let commit = old.commit(&[(0, 9)]);
    assert!(
        matches!(commit, Err(Error::FencedInstanceId { .. })),
        "{commit:?}"
    );
    assert_eq!(old.committed(0).expect("committed"), committed);
    let poll = old.poll(Duration::ZERO);
    assert!(
        matches!(poll, Err(Error::FencedInstanceId { .. })),
        "{poll:?}"
    );
    assert!(old.assignment().is_empty());
    // It stays fenced; the new incarnation is not disturbed.
    assert!(matches!(
        old.poll(Duration::ZERO),
        Err(Error::FencedInstanceId { .. })
    ));
    old.close().expect("close");
    new.poll(Duration::ZERO).expect("poll");
    assert_eq!(sorted(new.assignment()), vec![0, 1]);
}

#[test]
fn closing_a_dynamic_member_leaves_the_group_at_once() {
    let f = fixture(4);
    let mut a = f.subscribe(config());
    let mut b = f.subscribe(config());
    f.settle(&mut [&mut a, &mut b]);
    let b_partitions = sorted(b.assignment());
    b.poll(Duration::ZERO).expect("poll");
    let positions: Vec<u64> = b_partitions
        .iter()
        .map(|&p| b.position(p).expect("position"))
        .collect();
    b.close().expect("close");
    // No clock movement: the leave, not a timeout, moves the partitions.
    f.settle(&mut [&mut a]);
    assert_eq!(sorted(a.assignment()), vec![0, 1, 2, 3]);
    for (&p, &position) in b_partitions.iter().zip(&positions) {
        assert_eq!(a.position(p).expect("position"), position, "partition {p}");
    }
}

#[test]
fn assign_leaves_the_group_and_subscribe_gives_up_a_manual_assignment() {
    let f = fixture(4);
    let mut a = f.subscribe(config());
    let mut b = f.subscribe(config());
    f.settle(&mut [&mut a, &mut b]);
    b.assign(&[3]).expect("assign");
    assert!(!b.is_subscribed());
    assert_eq!(b.member_id(), None);
    assert_eq!(b.assignment(), vec![3]);
    f.settle(&mut [&mut a]);
    assert_eq!(f.groups.describe(GROUP).expect("group").members.len(), 1);
    assert_eq!(sorted(a.assignment()), vec![0, 1, 2, 3]);

    b.subscribe(&f.groups).expect("subscribe");
    assert!(b.is_subscribed());
    f.settle(&mut [&mut a, &mut b]);
    assert_eq!(a.assignment().len(), 2);
    assert_eq!(b.assignment().len(), 2);
}

#[test]
fn subscribe_refuses_a_coordinator_of_another_size_and_a_foreign_assignor() {
    let f = fixture(4);
    let other = GroupCoordinator::new(3, GroupConfig::default()).expect("coordinator");
    let mut c = Consumer::new(&f.log, config()).expect("consumer");
    match c.subscribe(&other) {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "partitions"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert!(!c.is_subscribed());

    let mut first = f.subscribe(config().assignor(AssignorKind::RoundRobin));
    f.settle(&mut [&mut first]);
    let foreign = c.subscribe(&f.groups);
    assert!(
        foreign.is_ok(),
        "accepting the group's assignor: {foreign:?}"
    );
    let mut d = Consumer::new(&f.log, config().assignor(AssignorKind::Range)).expect("consumer");
    let refused = d.subscribe(&f.groups);
    assert!(
        matches!(refused, Err(Error::InconsistentGroupProtocol { .. })),
        "{refused:?}"
    );
    assert!(!d.is_subscribed());
}

#[test]
fn a_commit_before_the_first_assignment_is_refused() {
    let f = fixture(2);
    let mut a = f.subscribe(config());
    f.settle(&mut [&mut a]);
    // `b` joined a rebalance that has not formed yet.
    let b = f.subscribe(config());
    assert_eq!(b.generation(), None);
    let early = b.commit(&[(0, 5)]);
    assert!(
        matches!(early, Err(Error::RebalanceInProgress { .. })),
        "{early:?}"
    );
    assert_eq!(b.committed(0).expect("committed"), None);
}
