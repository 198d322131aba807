//! Consumers sharing a group through `Consumer::subscribe`: an even split, a
//! member that stops polling and whose partitions move on from its last
//! commits, the refusal of its late commits, order and at-least-once
//! delivery across many rebalances, and a cooperative rebalance that moves
//! only what it must. Time comes from a `ManualClock` and every consumer is
//! driven from the test thread, so each run is deterministic.

#![cfg(feature = "offsets")]

use std::collections::{BTreeMap, BTreeSet};
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
/// Polls of every consumer a group gets to settle before a test fails.
const SETTLE_ROUNDS: usize = 50;

struct Fixture {
    _dir: TempDir,
    log: Log,
    clock: Arc<ManualClock>,
    groups: GroupCoordinator,
}

fn fixture(partitions: u32, assignor: AssignorKind) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::default()
        .partitions(partitions)
        .durability(Durability::None);
    let log = Log::open(dir.path(), config).expect("open");
    let clock = Arc::new(ManualClock::new());
    let group_config = GroupConfig::default()
        .session_timeout(SESSION)
        .rebalance_timeout(Duration::from_secs(30))
        .assignor(assignor);
    let groups =
        GroupCoordinator::with_clock(partitions, group_config, clock.clone()).expect("coordinator");
    Fixture {
        _dir: dir,
        log,
        clock,
        groups,
    }
}

impl Fixture {
    fn fill(&self, partition: u32, n: u64) {
        let p = self.log.partition(partition).expect("partition");
        let base = p.end_offset();
        let records: Vec<Record> = (base..base + n)
            .map(|o| Record::new(format!("{partition}-{o}")))
            .collect();
        p.append(&records).expect("append");
    }

    fn subscribe(&self, config: ConsumerConfig) -> Consumer {
        let mut consumer = Consumer::new(&self.log, config).expect("consumer");
        consumer.subscribe(&self.groups).expect("subscribe");
        consumer
    }

    fn generation(&self) -> u32 {
        self.groups.describe(GROUP).expect("group").generation
    }

    /// Whether the group is stable and every consumer holds its assignment
    /// of the current generation.
    fn settled(&self, consumers: &[&Consumer]) -> bool {
        let Some(group) = self.groups.describe(GROUP) else {
            return false;
        };
        group.state == GroupState::Stable
            && consumers.iter().all(|c| {
                c.generation() == Some(group.generation)
                    && group.members.iter().any(|m| {
                        Some(m.member_id.as_str()) == c.member_id()
                            && sorted(c.assignment()) == m.assignment
                    })
            })
    }
}

fn manual(max_poll_records: usize) -> ConsumerConfig {
    ConsumerConfig::new(GROUP)
        .auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(max_poll_records)
}

fn sorted(mut partitions: Vec<u32>) -> Vec<u32> {
    partitions.sort_unstable();
    partitions
}

/// What every consumer received, in the order the test saw it.
#[derive(Default)]
struct Deliveries {
    /// By partition: (consumer, offset) in delivery order.
    by_partition: BTreeMap<u32, Vec<(usize, u64)>>,
}

impl Deliveries {
    /// One zero-timeout poll of consumer `who`; records what it returned.
    fn poll(&mut self, who: usize, consumer: &mut Consumer) {
        let records = consumer.poll(Duration::ZERO).expect("poll");
        for r in records {
            self.by_partition
                .entry(r.partition)
                .or_default()
                .push((who, r.offset));
        }
    }

    /// The offsets of `partition` delivered so far, in delivery order.
    fn offsets(&self, partition: u32) -> Vec<u64> {
        self.by_partition
            .get(&partition)
            .map(|d| d.iter().map(|&(_, o)| o).collect())
            .unwrap_or_default()
    }

    fn count(&self, partition: u32) -> usize {
        self.by_partition.get(&partition).map_or(0, Vec::len)
    }

    /// Order and completeness: each consumer sees a partition's offsets in
    /// increasing order over its whole life, the group never skips an
    /// offset, and every offset below `end` was delivered at least once.
    /// Returns how many deliveries were duplicates.
    fn check(&self, ends: &BTreeMap<u32, u64>) -> usize {
        let mut duplicates = 0;
        for (&partition, &end) in ends {
            let delivered = self
                .by_partition
                .get(&partition)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut last_by_consumer: BTreeMap<usize, u64> = BTreeMap::new();
            let mut next_new = 0;
            let mut seen = BTreeSet::new();
            for &(who, offset) in delivered {
                if let Some(&last) = last_by_consumer.get(&who) {
                    assert!(
                        offset > last,
                        "partition {partition}: consumer {who} got {offset} after {last}"
                    );
                }
                last_by_consumer.insert(who, offset);
                assert!(
                    offset <= next_new,
                    "partition {partition}: offset {offset} delivered before {next_new}"
                );
                next_new = next_new.max(offset + 1);
                if !seen.insert(offset) {
                    duplicates += 1;
                }
            }
            let expected: BTreeSet<u64> = (0..end).collect();
            assert_eq!(seen, expected, "partition {partition}: delivered offsets");
        }
        duplicates
    }
}

/// Commits what `consumer` processed. Mid-rebalance a commit can be
/// refused until the next poll takes the new generation; nothing else may
/// fail.
fn commit(consumer: &Consumer) {
    match consumer.commit_sync() {
        Ok(()) | Err(Error::IllegalGeneration { .. } | Error::RebalanceInProgress { .. }) => {}
        Err(error) => panic!("commit: {error}"),
    }
}

/// Polls every consumer in turn, committing after each poll, until the
/// group has settled.
fn settle(f: &Fixture, consumers: &mut [Consumer], deliveries: &mut Deliveries) {
    for _ in 0..SETTLE_ROUNDS {
        for (who, c) in consumers.iter_mut().enumerate() {
            deliveries.poll(who, c);
            commit(c);
        }
        let refs: Vec<&Consumer> = consumers.iter().collect();
        if f.settled(&refs) {
            return;
        }
    }
    panic!("the group did not settle: {:?}", f.groups.describe(GROUP));
}

#[test]
fn three_consumers_share_six_partitions_evenly() {
    for assignor in [
        AssignorKind::Range,
        AssignorKind::RoundRobin,
        AssignorKind::CooperativeSticky,
    ] {
        let f = fixture(6, assignor);
        let mut consumers: Vec<Consumer> = (0..3).map(|_| f.subscribe(manual(10))).collect();
        settle(&f, &mut consumers, &mut Deliveries::default());
        let mut all = Vec::new();
        for c in &consumers {
            assert_eq!(
                c.assignment().len(),
                2,
                "{assignor:?}: {:?}",
                c.assignment()
            );
            assert_eq!(c.generation(), Some(f.generation()));
            all.extend(c.assignment());
        }
        assert_eq!(sorted(all), vec![0, 1, 2, 3, 4, 5], "{assignor:?}");
    }
}

#[test]
fn a_silent_member_is_replaced_from_its_last_commits_and_its_late_commit_refused() {
    let f = fixture(6, AssignorKind::Range);
    for p in 0..6 {
        f.fill(p, 20);
    }
    // Consumers read two records per partition per poll.
    let mut consumers: Vec<Consumer> = (0..3).map(|_| f.subscribe(manual(4))).collect();
    let mut deliveries = Deliveries::default();
    settle(&f, &mut consumers, &mut deliveries);
    let mut dead = consumers.pop().expect("three consumers");
    let dead_partitions = sorted(dead.assignment());
    assert_eq!(dead_partitions.len(), 2);

    // The member processes and commits two polls, then processes a third
    // without committing it, and stops.
    for _ in 0..2 {
        let records = dead.poll(Duration::ZERO).expect("poll");
        assert_eq!(records.len(), 4);
        dead.commit_sync().expect("commit");
    }
    assert_eq!(dead.poll(Duration::ZERO).expect("poll").len(), 4);
    let committed: BTreeMap<u32, u64> = dead_partitions
        .iter()
        .map(|&p| (p, dead.committed(p).expect("committed").expect("a commit")))
        .collect();
    for (&p, &offset) in &committed {
        assert_eq!(
            offset,
            dead.position(p).expect("position") - 2,
            "partition {p}"
        );
    }

    // The survivors keep polling while the clock passes the session
    // timeout of the silent member in steps shorter than their own.
    let before: BTreeMap<u32, usize> = dead_partitions
        .iter()
        .map(|&p| (p, deliveries.count(p)))
        .collect();
    for _ in 0..3 {
        f.clock.advance(SESSION / 3 + Duration::from_millis(1));
        for (who, c) in consumers.iter_mut().enumerate() {
            deliveries.poll(who, c);
            c.commit_sync().expect("commit");
        }
    }
    settle(&f, &mut consumers, &mut deliveries);
    let members = f.groups.describe(GROUP).expect("group").members;
    assert_eq!(members.len(), 2);
    let held: Vec<u32> = sorted(consumers.iter().flat_map(|c| c.assignment()).collect());
    assert_eq!(held, vec![0, 1, 2, 3, 4, 5]);

    // The new owners went on exactly where the silent member committed:
    // its last, uncommitted poll is delivered again, nothing is skipped.
    for _ in 0..10 {
        for (who, c) in consumers.iter_mut().enumerate() {
            deliveries.poll(who, c);
        }
    }
    for (&p, &offset) in &committed {
        let after = &deliveries.offsets(p)[before[&p]..];
        assert_eq!(after.first(), Some(&offset), "partition {p}: {after:?}");
    }

    // The silent member wakes up: its commits are refused and leave the
    // new owners' progress alone.
    let progress: BTreeMap<u32, Option<u64>> = dead_partitions
        .iter()
        .map(|&p| (p, dead.committed(p).expect("committed")))
        .collect();
    let late = dead.commit_sync();
    assert!(
        matches!(
            late,
            Err(Error::UnknownMember { .. } | Error::IllegalGeneration { .. })
        ),
        "late commit: {late:?}"
    );
    let explicit = dead.commit(&[(dead_partitions[0], 0)]);
    assert!(
        matches!(explicit, Err(Error::UnknownMember { .. })),
        "late commit: {explicit:?}"
    );
    for (&p, &offset) in &progress {
        assert_eq!(dead.committed(p).expect("committed"), offset);
    }
    // Its next poll finds it was removed: it gives up its partitions and
    // joins again as a new member, and the group splits the log in three.
    let old_id = dead.member_id().map(str::to_owned);
    assert!(dead.poll(Duration::ZERO).expect("poll").is_empty());
    assert!(dead.assignment().is_empty());
    assert!(dead.member_id().is_some());
    assert_ne!(dead.member_id().map(str::to_owned), old_id);
    consumers.push(dead);
    settle(&f, &mut consumers, &mut deliveries);
    assert!(consumers.iter().all(|c| c.assignment().len() == 2));
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % n.max(1)
    }
}

fn churn_rounds() -> usize {
    std::env::var("CONSUMER_GROUP_CHURN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// Members come, leave, and die while records keep arriving; auto-commit
/// commits at every poll.
fn churn(assignor: AssignorKind, seed: u64) {
    let partitions = 6;
    let f = fixture(partitions, assignor);
    let mut rng = Rng(seed);
    let config = manual(5)
        .auto_commit(true)
        .auto_commit_interval(Duration::ZERO);
    let mut deliveries = Deliveries::default();
    // Live consumers, with the number their deliveries are recorded under.
    let mut live: Vec<(usize, Consumer)> = Vec::new();
    let mut created = 0;
    let mut last_committed: BTreeMap<u32, u64> = BTreeMap::new();
    let probe = Consumer::new(&f.log, manual(1)).expect("probe");
    for _ in 0..churn_rounds() {
        match rng.below(12) {
            0 if live.len() < 4 => {
                live.push((created, f.subscribe(config.clone())));
                created += 1;
            }
            // Dies: stops polling, commits nothing more.
            1 if live.len() > 1 => {
                let i = rng.below(live.len() as u64) as usize;
                drop(live.remove(i));
            }
            // Leaves cleanly.
            2 if live.len() > 1 => {
                let i = rng.below(live.len() as u64) as usize;
                live.remove(i).1.close().expect("close");
            }
            3 => f.clock.advance(Duration::from_secs(rng.below(3) + 1)),
            _ => {}
        }
        if live.is_empty() {
            live.push((created, f.subscribe(config.clone())));
            created += 1;
        }
        for _ in 0..rng.below(4) {
            f.fill(rng.below(u64::from(partitions)) as u32, rng.below(5) + 1);
        }
        for (who, c) in &mut live {
            deliveries.poll(*who, c);
        }
        // Fencing keeps the committed offsets from going backwards.
        for p in 0..partitions {
            let now = probe.committed(p).expect("committed").unwrap_or(0);
            let before = last_committed.insert(p, now).unwrap_or(0);
            assert!(
                now >= before,
                "partition {p}: commit went from {before} to {now}"
            );
        }
    }
    // Let the dead sessions expire and the group settle, then read to the
    // end.
    for _ in 0..4 {
        f.clock.advance(SESSION / 3);
        for (who, c) in &mut live {
            deliveries.poll(*who, c);
        }
    }
    let ends: BTreeMap<u32, u64> = (0..partitions)
        .map(|p| (p, f.log.partition(p).expect("partition").end_offset()))
        .collect();
    for _ in 0..SETTLE_ROUNDS * 10 {
        for (who, c) in &mut live {
            deliveries.poll(*who, c);
        }
        let done = ends.iter().all(|(&p, &end)| {
            deliveries
                .offsets(p)
                .iter()
                .max()
                .is_some_and(|&max| max + 1 == end)
                || end == 0
        });
        if done {
            break;
        }
    }
    let duplicates = deliveries.check(&ends);
    let total: u64 = ends.values().sum();
    assert!(
        duplicates < usize::try_from(total).unwrap_or(usize::MAX),
        "{duplicates} duplicates of {total} records"
    );
}

#[test]
fn order_holds_and_every_record_is_delivered_across_rebalances() {
    for seed in 0..4 {
        for assignor in [
            AssignorKind::Range,
            AssignorKind::RoundRobin,
            AssignorKind::CooperativeSticky,
        ] {
            churn(assignor, seed);
        }
    }
}

#[test]
fn a_cooperative_rebalance_moves_only_what_it_must() {
    let f = fixture(6, AssignorKind::CooperativeSticky);
    for p in 0..6 {
        f.fill(p, 30);
    }
    let mut deliveries = Deliveries::default();
    let mut consumers: Vec<Consumer> = (0..2).map(|_| f.subscribe(manual(6))).collect();
    settle(&f, &mut consumers, &mut deliveries);
    let before: Vec<Vec<u32>> = consumers.iter().map(|c| sorted(c.assignment())).collect();
    assert!(before.iter().all(|a| a.len() == 3));

    consumers.push(f.subscribe(manual(6)));
    // Snapshots of every assignment after every poll.
    let mut snapshots: Vec<Vec<Vec<u32>>> = Vec::new();
    let mut settled = false;
    for _ in 0..SETTLE_ROUNDS {
        for who in 0..consumers.len() {
            deliveries.poll(who, &mut consumers[who]);
            commit(&consumers[who]);
            let now: Vec<Vec<u32>> = consumers.iter().map(|c| sorted(c.assignment())).collect();
            // No partition is ever held by two members at once.
            let mut all: Vec<u32> = now.iter().flatten().copied().collect();
            let count = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), count, "a partition held twice: {now:?}");
            snapshots.push(now);
        }
        let refs: Vec<&Consumer> = consumers.iter().collect();
        if f.settled(&refs) {
            settled = true;
            break;
        }
    }
    assert!(settled, "{:?}", f.groups.describe(GROUP));
    let after: Vec<Vec<u32>> = consumers.iter().map(|c| sorted(c.assignment())).collect();
    assert!(after.iter().all(|a| a.len() == 2), "{after:?}");
    // The first two members each gave up exactly one partition, and kept
    // the others the whole time.
    for who in 0..2 {
        let kept: Vec<u32> = after[who].clone();
        assert_eq!(kept.len(), 2);
        assert!(
            kept.iter().all(|p| before[who].contains(p)),
            "{before:?} {after:?}"
        );
        for snapshot in &snapshots {
            assert!(
                kept.iter().all(|p| snapshot[who].contains(p)),
                "member {who} lost a partition it kept: {snapshot:?}"
            );
        }
    }
    // Partitions kept throughout were read on without a second delivery.
    for kept in &after[..2] {
        for &p in kept {
            let offsets = deliveries.offsets(p);
            let expected: Vec<u64> = (0..offsets.len() as u64).collect();
            assert_eq!(offsets, expected, "partition {p}");
        }
    }
    // The moved partitions went on from their committed offsets.
    for &p in &after[2] {
        let offsets = deliveries.offsets(p);
        let unique: BTreeSet<u64> = offsets.iter().copied().collect();
        assert_eq!(unique.len(), offsets.len(), "partition {p}: {offsets:?}");
        assert!(!offsets.is_empty(), "partition {p} was never read");
    }
}
