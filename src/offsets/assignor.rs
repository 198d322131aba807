//! Partition assignors: who in a consumer group reads which partition.
//!
//! A group here reads one topic of `N` partitions, numbered `0..N`. Three
//! assignors follow the semantics of Kafka's assignors of the same names:
//!
//! - [`AssignorKind::Range`]: members in order (see below) each get a
//!   contiguous range; the first `N % M` members get one partition more.
//! - [`AssignorKind::RoundRobin`]: partitions dealt one at a time to the
//!   members in order.
//! - [`AssignorKind::CooperativeSticky`]: balanced (sizes differ by at most
//!   one) while keeping as many partitions with their current owner as
//!   possible; a partition that moves is first revoked from its owner and only
//!   given to its new owner in a later generation.
//!
//! Range and round-robin order members as Kafka does: static members (those
//! with a `group_instance_id`) first, by instance id, then dynamic members by
//! member id. A static member therefore keeps its partitions across restarts
//! even though it gets a new member id each time.
//!
//! Every function here is pure and total: any input, including duplicate
//! member ids or owned partitions that do not exist, gives an assignment in
//! which every partition `0..N` goes to exactly one member (when there is at
//! least one) and every member appears, possibly with no partitions.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// Which assignor a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AssignorKind {
    /// Contiguous ranges, Kafka's `range` assignor. An eager protocol: every
    /// member gives up all its partitions before it rejoins a rebalance.
    #[default]
    Range,
    /// Partitions dealt in turn, Kafka's `roundrobin` assignor. Eager, like
    /// [`AssignorKind::Range`].
    RoundRobin,
    /// Balanced and sticky, Kafka's `cooperative-sticky` assignor. Members keep
    /// their partitions while they rejoin; only partitions that move are
    /// revoked, and a moved partition reaches its new owner one rebalance
    /// later, after the old owner gave it up.
    CooperativeSticky,
}

impl AssignorKind {
    /// Kafka's name of the assignor: `range`, `roundrobin` or
    /// `cooperative-sticky`.
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Range => "range",
            AssignorKind::RoundRobin => "roundrobin",
            AssignorKind::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// True for the cooperative protocol: members keep their partitions while
    /// a rebalance runs and give up only those that are revoked.
    pub fn is_cooperative(self) -> bool {
        matches!(self, AssignorKind::CooperativeSticky)
    }

    /// The balanced assignment the group converges to: each member id mapped
    /// to its partitions in increasing order.
    ///
    /// Range and round-robin ignore [`AssignorMember::owned`]; the sticky
    /// assignor keeps owned partitions where balance allows. A partition
    /// claimed by more than one member counts as owned by none. With no
    /// members the map is empty.
    pub fn assign(self, members: &[AssignorMember], partitions: u32) -> BTreeMap<String, Vec<u32>> {
        match self {
            AssignorKind::Range => range(members, partitions),
            AssignorKind::RoundRobin => round_robin(members, partitions),
            AssignorKind::CooperativeSticky => sticky(members, partitions),
        }
    }

    /// What each member is given in the generation being formed.
    ///
    /// For the eager assignors this is [`AssignorKind::assign`]: every member
    /// has given up everything before the generation forms. For the
    /// cooperative one, a partition that the target gives to a member while
    /// another member still owns it is withheld: its owner revokes it in this
    /// generation and its new owner gets it in the next one. The result may
    /// therefore leave partitions unassigned for one generation.
    pub fn assign_generation(
        self,
        members: &[AssignorMember],
        partitions: u32,
    ) -> BTreeMap<String, Vec<u32>> {
        let target = self.assign(members, partitions);
        if self.is_cooperative() {
            withhold_transferring(members, &target)
        } else {
            target
        }
    }
}

impl fmt::Display for AssignorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member of a group as an assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssignorMember {
    /// The member id the coordinator gave the member.
    pub member_id: String,
    /// The static identity of the member, if it has one; it orders members
    /// for the range and round-robin assignors.
    pub group_instance_id: Option<String>,
    /// The partitions the member owns now (used by the sticky assignor).
    pub owned: Vec<u32>,
}

impl AssignorMember {
    /// A dynamic member that owns nothing.
    pub fn new(member_id: impl Into<String>) -> AssignorMember {
        AssignorMember {
            member_id: member_id.into(),
            group_instance_id: None,
            owned: Vec::new(),
        }
    }

    /// Sets the static identity of the member.
    pub fn group_instance_id(mut self, group_instance_id: impl Into<String>) -> AssignorMember {
        self.group_instance_id = Some(group_instance_id.into());
        self
    }

    /// Sets the partitions the member owns now.
    pub fn owned(mut self, owned: impl Into<Vec<u32>>) -> AssignorMember {
        self.owned = owned.into();
        self
    }
}

/// The members with duplicate member ids removed (the first one wins).
fn unique_members(members: &[AssignorMember]) -> Vec<&AssignorMember> {
    let mut seen = BTreeSet::new();
    members
        .iter()
        .filter(|m| seen.insert(m.member_id.as_str()))
        .collect()
}

/// Kafka's member order for the eager assignors: static members first, by
/// instance id, then dynamic members by member id.
fn eager_order(a: &AssignorMember, b: &AssignorMember) -> Ordering {
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.member_id.cmp(&b.member_id)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    }
}

fn eager_members(members: &[AssignorMember]) -> Vec<&AssignorMember> {
    let mut ordered = unique_members(members);
    ordered.sort_by(|a, b| eager_order(a, b));
    ordered
}

fn empty_assignment(members: &[&AssignorMember]) -> BTreeMap<String, Vec<u32>> {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn range(members: &[AssignorMember], partitions: u32) -> BTreeMap<String, Vec<u32>> {
    let ordered = eager_members(members);
    let mut assignment = empty_assignment(&ordered);
    if ordered.is_empty() {
        return assignment;
    }
    let total = u64::from(partitions);
    let count = len_u64(ordered.len());
    let (per_member, extra) = (total / count, total % count);
    for (index, member) in ordered.iter().enumerate() {
        let index = len_u64(index);
        let start = per_member
            .saturating_mul(index)
            .saturating_add(index.min(extra));
        let len = per_member + u64::from(index < extra);
        let range: Vec<u32> = (start..start.saturating_add(len))
            .filter_map(|p| u32::try_from(p).ok())
            .collect();
        assignment.insert(member.member_id.clone(), range);
    }
    assignment
}

fn round_robin(members: &[AssignorMember], partitions: u32) -> BTreeMap<String, Vec<u32>> {
    let ordered = eager_members(members);
    let mut assignment = empty_assignment(&ordered);
    for (partition, member) in (0..partitions).zip(ordered.iter().cycle()) {
        if let Some(list) = assignment.get_mut(&member.member_id) {
            list.push(partition);
        }
    }
    assignment
}

/// The balanced, sticky assignment of Kafka's sticky assignors for members
/// that all read the same topic (its "constrained" assignment).
///
/// With `M` members and `N` partitions every member ends with `N / M` or
/// `N / M + 1` partitions and exactly `N % M` members have the larger count.
/// Members are taken in member id order. First each keeps what it owns, up to
/// its quota (the lowest-numbered partitions are kept): members that own at
/// least the larger quota keep that many while fewer than `N % M` members
/// have it, others keep at most the smaller quota. Then the partitions left
/// over are dealt in increasing order, round-robin, to members below the
/// smaller quota, and once none is below it, one each to members at the
/// smaller quota until `N % M` members have the larger one.
fn sticky(members: &[AssignorMember], partitions: u32) -> BTreeMap<String, Vec<u32>> {
    let mut ordered = unique_members(members);
    ordered.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    if ordered.is_empty() {
        return BTreeMap::new();
    }

    // A partition claimed by two members cannot be trusted to either.
    let owned: Vec<BTreeSet<u32>> = ordered
        .iter()
        .map(|m| {
            m.owned
                .iter()
                .copied()
                .filter(|&p| p < partitions)
                .collect()
        })
        .collect();
    let mut claims: BTreeMap<u32, usize> = BTreeMap::new();
    for &partition in owned.iter().flatten() {
        *claims.entry(partition).or_default() += 1;
    }

    let total = u64::from(partitions);
    let count = len_u64(ordered.len());
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let min_quota = to_usize(total / count);
    let max_quota = to_usize(total / count + u64::from(total % count != 0));
    let expected_over = to_usize(total % count);

    let mut assigned: Vec<Vec<u32>> = Vec::with_capacity(ordered.len());
    let mut under_min: Vec<usize> = Vec::new();
    let mut at_min: VecDeque<usize> = VecDeque::new();
    let mut over = 0usize;
    for (index, set) in owned.iter().enumerate() {
        let valid: Vec<u32> = set
            .iter()
            .copied()
            .filter(|p| claims.get(p) == Some(&1))
            .collect();
        let keep = if valid.len() < min_quota {
            under_min.push(index);
            valid.len()
        } else if valid.len() >= max_quota && over < expected_over {
            over += 1;
            if over == expected_over {
                at_min.clear();
            }
            max_quota
        } else {
            if over < expected_over {
                at_min.push_back(index);
            }
            min_quota
        };
        assigned.push(valid.into_iter().take(keep).collect());
    }

    let taken: BTreeSet<u32> = assigned.iter().flatten().copied().collect();
    let mut cursor = 0usize;
    for partition in (0..partitions).filter(|p| !taken.contains(p)) {
        let (who, from_under_min) = if let Some(&who) = under_min.get(cursor) {
            (who, true)
        } else if let Some(&who) = under_min.first() {
            cursor = 0;
            (who, true)
        } else if let Some(who) = at_min.pop_front() {
            (who, false)
        } else {
            // The quotas add up to exactly `partitions`, so this is never
            // reached; give the partition to the least loaded member rather
            // than leave it unassigned.
            (least_loaded(&assigned), false)
        };
        let Some(list) = assigned.get_mut(who) else {
            continue;
        };
        list.push(partition);
        let size = list.len();
        if from_under_min {
            if size >= min_quota {
                under_min.remove(cursor);
                if over < expected_over {
                    at_min.push_back(who);
                }
            } else {
                cursor += 1;
            }
        } else if size >= max_quota {
            over += 1;
            if over >= expected_over {
                at_min.clear();
            }
        }
    }

    ordered
        .iter()
        .zip(assigned)
        .map(|(member, mut list)| {
            list.sort_unstable();
            (member.member_id.clone(), list)
        })
        .collect()
}

fn least_loaded(assigned: &[Vec<u32>]) -> usize {
    assigned
        .iter()
        .enumerate()
        .min_by_key(|(_, list)| list.len())
        .map_or(0, |(index, _)| index)
}

/// The cooperative step: removes from each member's target every partition
/// that another member still owns, so that no partition is given to a new
/// owner in the generation in which its old owner revokes it.
fn withhold_transferring(
    members: &[AssignorMember],
    target: &BTreeMap<String, Vec<u32>>,
) -> BTreeMap<String, Vec<u32>> {
    let mut owners: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for member in unique_members(members) {
        for &partition in &member.owned {
            owners
                .entry(partition)
                .or_default()
                .insert(member.member_id.as_str());
        }
    }
    target
        .iter()
        .map(|(member_id, list)| {
            let kept = list
                .iter()
                .copied()
                .filter(|p| {
                    owners
                        .get(p)
                        .is_none_or(|o| o.iter().all(|owner| *owner == member_id.as_str()))
                })
                .collect();
            (member_id.clone(), kept)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The single-topic cases of Kafka's `RangeAssignorTest`,
    //! `RoundRobinAssignorTest`, `AbstractStickyAssignorTest` and
    //! `CooperativeStickyAssignorTest`. Where a Kafka case spans two topics
    //! its partitions are numbered one after the other (topic1's first) so
    //! that the round-robin and sticky cases keep their expected outputs.

    use super::*;

    type Assignment = BTreeMap<String, Vec<u32>>;

    fn dynamic(ids: &[&str]) -> Vec<AssignorMember> {
        ids.iter().map(|id| AssignorMember::new(*id)).collect()
    }

    fn expect(pairs: &[(&str, &[u32])]) -> Assignment {
        pairs
            .iter()
            .map(|(id, parts)| ((*id).to_owned(), parts.to_vec()))
            .collect()
    }

    fn owning(id: &str, owned: &[u32]) -> AssignorMember {
        AssignorMember::new(id).owned(owned.to_vec())
    }

    /// Kafka's validity and balance check for one topic: every partition is
    /// assigned exactly once and sizes differ by at most one.
    fn assert_valid_and_balanced(assignment: &Assignment, partitions: u32) {
        let mut seen = BTreeSet::new();
        for list in assignment.values() {
            for &p in list {
                assert!(
                    p < partitions,
                    "partition {p} does not exist: {assignment:?}"
                );
                assert!(
                    seen.insert(p),
                    "partition {p} assigned twice: {assignment:?}"
                );
            }
        }
        if !assignment.is_empty() {
            assert_eq!(
                seen.len(),
                partitions as usize,
                "unassigned partitions: {assignment:?}"
            );
        }
        let sizes: Vec<usize> = assignment.values().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        if let (Some(min), Some(max)) = (min, max) {
            assert!(max - min <= 1, "unbalanced: {assignment:?}");
        }
    }

    /// The members with their new assignment as owned partitions, as they
    /// would rejoin after a rebalance.
    fn rejoin(members: &[AssignorMember], assignment: &Assignment) -> Vec<AssignorMember> {
        members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.owned = assignment.get(&m.member_id).cloned().unwrap_or_default();
                m
            })
            .collect()
    }

    /// Partitions that change owner from `before` to `after`, with the new
    /// owner: Kafka's `partitionsTransferringOwnership`.
    fn transferring(members: &[AssignorMember], after: &Assignment) -> BTreeMap<u32, String> {
        let mut owner: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for m in members {
            for &p in &m.owned {
                owner.entry(p).or_default().push(&m.member_id);
            }
        }
        let mut moving = BTreeMap::new();
        for (id, list) in after {
            for p in list {
                if owner.get(p).is_some_and(|o| o.iter().any(|o| *o != id)) {
                    moving.insert(*p, id.clone());
                }
            }
        }
        moving
    }

    // ---- RangeAssignorTest ----

    #[test]
    fn range_one_consumer_no_partitions() {
        let got = AssignorKind::Range.assign(&dynamic(&["consumer1"]), 0);
        assert_eq!(got, expect(&[("consumer1", &[])]));
    }

    #[test]
    fn range_one_consumer_one_topic() {
        let got = AssignorKind::Range.assign(&dynamic(&["consumer1"]), 3);
        assert_eq!(got, expect(&[("consumer1", &[0, 1, 2])]));
    }

    #[test]
    fn range_two_consumers_one_partition() {
        let got = AssignorKind::Range.assign(&dynamic(&["consumer1", "consumer2"]), 1);
        assert_eq!(got, expect(&[("consumer1", &[0]), ("consumer2", &[])]));
    }

    #[test]
    fn range_two_consumers_two_partitions() {
        let got = AssignorKind::Range.assign(&dynamic(&["consumer1", "consumer2"]), 2);
        assert_eq!(got, expect(&[("consumer1", &[0]), ("consumer2", &[1])]));
    }

    #[test]
    fn range_two_consumers_three_partitions() {
        // testTwoConsumersTwoTopicsSixPartitions, per topic.
        let got = AssignorKind::Range.assign(&dynamic(&["consumer2", "consumer1"]), 3);
        assert_eq!(got, expect(&[("consumer1", &[0, 1]), ("consumer2", &[2])]));
    }

    #[test]
    fn range_three_consumers_uneven_topics() {
        // The non-rack-aware expectations of the rack tests: t1 has 6
        // partitions, t2 has 7 and t3 has 2.
        let members = dynamic(&["consumer1", "consumer2", "consumer3"]);
        assert_eq!(
            AssignorKind::Range.assign(&members, 6),
            expect(&[
                ("consumer1", &[0, 1]),
                ("consumer2", &[2, 3]),
                ("consumer3", &[4, 5])
            ])
        );
        assert_eq!(
            AssignorKind::Range.assign(&members, 7),
            expect(&[
                ("consumer1", &[0, 1, 2]),
                ("consumer2", &[3, 4]),
                ("consumer3", &[5, 6])
            ])
        );
        assert_eq!(
            AssignorKind::Range.assign(&members, 2),
            expect(&[("consumer1", &[0]), ("consumer2", &[1]), ("consumer3", &[])])
        );
    }

    #[test]
    fn range_static_members_are_ordered_by_instance_id() {
        // consumer-b sorts after consumer-a by member id but first by instance id.
        let members = vec![
            AssignorMember::new("consumer-b").group_instance_id("instance1"),
            AssignorMember::new("consumer-a").group_instance_id("instance2"),
        ];
        let got = AssignorKind::Range.assign(&members, 3);
        assert_eq!(
            got,
            expect(&[("consumer-a", &[2]), ("consumer-b", &[0, 1])])
        );
    }

    #[test]
    fn range_static_member_goes_before_dynamic_member() {
        let members = vec![
            AssignorMember::new("consumer-b").group_instance_id("instance1"),
            AssignorMember::new("consumer-a"),
        ];
        let got = AssignorKind::Range.assign(&members, 3);
        assert_eq!(
            got,
            expect(&[("consumer-a", &[2]), ("consumer-b", &[0, 1])])
        );
    }

    #[test]
    fn range_static_assignment_persists_when_dynamic_member_is_replaced() {
        let mut members = vec![
            AssignorMember::new("consumer1").group_instance_id("instance1"),
            AssignorMember::new("consumer2").group_instance_id("instance2"),
            AssignorMember::new("consumer3").group_instance_id("instance3"),
            AssignorMember::new("consumer4"),
        ];
        let expected = |last: &str| {
            expect(&[
                ("consumer1", &[0, 1]),
                ("consumer2", &[2]),
                ("consumer3", &[3]),
                (last, &[4]),
            ])
        };
        assert_eq!(
            AssignorKind::Range.assign(&members, 5),
            expected("consumer4")
        );
        members.pop();
        members.push(AssignorMember::new("consumer5"));
        assert_eq!(
            AssignorKind::Range.assign(&members, 5),
            expected("consumer5")
        );
    }

    fn by_instance(
        members: &[AssignorMember],
        assignment: &Assignment,
    ) -> BTreeMap<String, Vec<u32>> {
        members
            .iter()
            .filter_map(|m| {
                let instance = m.group_instance_id.clone()?;
                Some((
                    instance,
                    assignment.get(&m.member_id).cloned().unwrap_or_default(),
                ))
            })
            .collect()
    }

    #[test]
    fn range_static_assignment_persists_after_member_ids_change() {
        let members = vec![
            AssignorMember::new("consumer1").group_instance_id("instance1"),
            AssignorMember::new("consumer2").group_instance_id("instance2"),
            AssignorMember::new("consumer3").group_instance_id("instance3"),
        ];
        let first = by_instance(&members, &AssignorKind::Range.assign(&members, 5));
        assert_eq!(
            first,
            expect(&[
                ("instance1", &[0, 1]),
                ("instance2", &[2, 3]),
                ("instance3", &[4])
            ])
        );
        let swapped = vec![
            AssignorMember::new("consumer1").group_instance_id("instance1"),
            AssignorMember::new("consumer5").group_instance_id("instance2"),
            AssignorMember::new("consumer4").group_instance_id("instance3"),
        ];
        let second = by_instance(&swapped, &AssignorKind::Range.assign(&swapped, 5));
        assert_eq!(first, second);
    }

    // ---- RoundRobinAssignorTest ----

    #[test]
    fn round_robin_one_consumer() {
        let members = dynamic(&["consumer"]);
        assert_eq!(
            AssignorKind::RoundRobin.assign(&members, 0),
            expect(&[("consumer", &[])])
        );
        assert_eq!(
            AssignorKind::RoundRobin.assign(&members, 3),
            expect(&[("consumer", &[0, 1, 2])])
        );
    }

    #[test]
    fn round_robin_two_consumers_small_topics() {
        let members = dynamic(&["consumer1", "consumer2"]);
        assert_eq!(
            AssignorKind::RoundRobin.assign(&members, 1),
            expect(&[("consumer1", &[0]), ("consumer2", &[])])
        );
        assert_eq!(
            AssignorKind::RoundRobin.assign(&members, 2),
            expect(&[("consumer1", &[0]), ("consumer2", &[1])])
        );
    }

    #[test]
    fn round_robin_two_dynamic_consumers_six_partitions() {
        // topic1-0..2 and topic2-0..2 numbered 0..6.
        let got = AssignorKind::RoundRobin.assign(&dynamic(&["consumer1", "consumer2"]), 6);
        assert_eq!(
            got,
            expect(&[("consumer1", &[0, 2, 4]), ("consumer2", &[1, 3, 5])])
        );
    }

    #[test]
    fn round_robin_static_members_are_ordered_by_instance_id() {
        let statics = vec![
            AssignorMember::new("consumer-b").group_instance_id("instance1"),
            AssignorMember::new("consumer-a").group_instance_id("instance2"),
        ];
        let expected = expect(&[("consumer-a", &[1, 3, 5]), ("consumer-b", &[0, 2, 4])]);
        assert_eq!(AssignorKind::RoundRobin.assign(&statics, 6), expected);
        let mixed = vec![
            AssignorMember::new("consumer-b").group_instance_id("instance1"),
            AssignorMember::new("consumer-a"),
        ];
        assert_eq!(AssignorKind::RoundRobin.assign(&mixed, 6), expected);
    }

    #[test]
    fn round_robin_static_assignment_persists_when_dynamic_member_is_replaced() {
        let mut members = vec![
            AssignorMember::new("consumer1").group_instance_id("instance1"),
            AssignorMember::new("consumer2").group_instance_id("instance2"),
            AssignorMember::new("consumer3").group_instance_id("instance3"),
            AssignorMember::new("consumer4"),
        ];
        // topic1-0 topic1-1 topic1-2 topic2-0 topic2-1 topic2-2 = 0..6
        let expected = |last: &str| {
            expect(&[
                ("consumer1", &[0, 4]),
                ("consumer2", &[1, 5]),
                ("consumer3", &[2]),
                (last, &[3]),
            ])
        };
        assert_eq!(
            AssignorKind::RoundRobin.assign(&members, 6),
            expected("consumer4")
        );
        members.pop();
        members.push(AssignorMember::new("consumer5"));
        assert_eq!(
            AssignorKind::RoundRobin.assign(&members, 6),
            expected("consumer5")
        );
    }

    #[test]
    fn round_robin_static_assignment_persists_after_member_ids_change() {
        let members = vec![
            AssignorMember::new("consumer1").group_instance_id("instance1"),
            AssignorMember::new("consumer2").group_instance_id("instance2"),
            AssignorMember::new("consumer3").group_instance_id("instance3"),
        ];
        let first = by_instance(&members, &AssignorKind::RoundRobin.assign(&members, 6));
        assert_eq!(
            first,
            expect(&[
                ("instance1", &[0, 3]),
                ("instance2", &[1, 4]),
                ("instance3", &[2, 5])
            ])
        );
        let swapped = vec![
            AssignorMember::new("consumer4").group_instance_id("instance1"),
            AssignorMember::new("consumer5").group_instance_id("instance2"),
            AssignorMember::new("consumer1").group_instance_id("instance3"),
        ];
        let second = by_instance(&swapped, &AssignorKind::RoundRobin.assign(&swapped, 6));
        assert_eq!(first, second);
    }

    // ---- AbstractStickyAssignorTest (one topic) ----

    const STICKY: AssignorKind = AssignorKind::CooperativeSticky;

    #[test]
    fn sticky_one_consumer() {
        assert_eq!(
            STICKY.assign(&dynamic(&["consumer"]), 0),
            expect(&[("consumer", &[])])
        );
        assert_eq!(
            STICKY.assign(&dynamic(&["consumer"]), 3),
            expect(&[("consumer", &[0, 1, 2])])
        );
    }

    #[test]
    fn sticky_ignores_owned_partitions_that_do_not_exist() {
        // testOnlyAssignsPartitionsFromSubscribedTopics: the member claims
        // partitions of another topic.
        let members = vec![owning("consumer", &[0, 1, 7, 8])];
        let got = STICKY.assign(&members, 2);
        assert_eq!(got, expect(&[("consumer", &[0, 1])]));
        assert!(transferring(&members, &got).is_empty());
    }

    #[test]
    fn sticky_two_consumers_fresh() {
        let members = dynamic(&["consumer1", "consumer2"]);
        let one = STICKY.assign(&members, 1);
        assert_valid_and_balanced(&one, 1);
        assert_eq!(
            STICKY.assign(&members, 2),
            expect(&[("consumer1", &[0]), ("consumer2", &[1])])
        );
        // testTwoConsumersTwoTopicsSixPartitions: dealt round-robin.
        assert_eq!(
            STICKY.assign(&members, 6),
            expect(&[("consumer1", &[0, 2, 4]), ("consumer2", &[1, 3, 5])])
        );
    }

    #[test]
    fn sticky_consumer_owning_min_quota_gets_max_quota() {
        // testConsumerOwningMinQuotaExpectedMaxQuota: topic1-0,1 topic2-0,1,2.
        let members = vec![owning("consumer1", &[0, 3]), owning("consumer2", &[1, 4])];
        let got = STICKY.assign(&members, 5);
        assert_eq!(
            got,
            expect(&[("consumer1", &[0, 2, 3]), ("consumer2", &[1, 4])])
        );
        assert!(transferring(&members, &got).is_empty());
    }

    #[test]
    fn sticky_more_members_at_max_quota_than_needed() {
        // testMaxQuotaConsumerMoreThanNumExpectedMaxCapacityMembers. Kafka
        // takes members in hash-map order; here they go in member id order,
        // so consumer2 rather than consumer1 gives up a partition. Exactly
        // one partition moves, to the new member.
        let members = vec![
            owning("consumer1", &[0, 2]),
            owning("consumer2", &[1, 3]),
            owning("consumer3", &[]),
        ];
        let got = STICKY.assign(&members, 4);
        assert_eq!(
            got,
            expect(&[
                ("consumer1", &[0, 2]),
                ("consumer2", &[1]),
                ("consumer3", &[3])
            ])
        );
        let moving = transferring(&members, &got);
        assert_eq!(moving, BTreeMap::from([(3, "consumer3".to_owned())]));
        assert_valid_and_balanced(&got, 4);
    }

    #[test]
    fn sticky_all_consumers_under_min_quota() {
        let members = vec![
            owning("consumer1", &[0]),
            owning("consumer2", &[1]),
            owning("consumer3", &[]),
        ];
        let got = STICKY.assign(&members, 5);
        assert_eq!(
            got,
            expect(&[
                ("consumer1", &[0, 3]),
                ("consumer2", &[1, 4]),
                ("consumer3", &[2])
            ])
        );
        assert!(transferring(&members, &got).is_empty());
    }

    #[test]
    fn sticky_add_and_remove_consumer_one_topic() {
        let members = dynamic(&["consumer1"]);
        let first = STICKY.assign(&members, 3);
        assert_eq!(first, expect(&[("consumer1", &[0, 1, 2])]));

        let mut members = rejoin(&members, &first);
        members.push(AssignorMember::new("consumer2"));
        let second = STICKY.assign(&members, 3);
        assert_eq!(
            second,
            expect(&[("consumer1", &[0, 1]), ("consumer2", &[2])])
        );
        assert_eq!(
            transferring(&members, &second),
            BTreeMap::from([(2, "consumer2".to_owned())])
        );

        let members: Vec<_> = rejoin(&members, &second)
            .into_iter()
            .filter(|m| m.member_id != "consumer1")
            .collect();
        let third = STICKY.assign(&members, 3);
        assert_eq!(third, expect(&[("consumer2", &[0, 1, 2])]));
        assert!(transferring(&members, &third).is_empty());
    }

    #[test]
    fn sticky_add_and_remove_two_consumers() {
        // testAddRemoveTwoConsumersTwoTopics: topic1 has 3 partitions and
        // topic2 has 4, numbered 0..7.
        let members = dynamic(&["consumer1", "consumer2"]);
        let first = STICKY.assign(&members, 7);
        assert_eq!(
            first,
            expect(&[("consumer1", &[0, 2, 4, 6]), ("consumer2", &[1, 3, 5])])
        );

        let mut members = rejoin(&members, &first);
        members.push(AssignorMember::new("consumer3"));
        members.push(AssignorMember::new("consumer4"));
        let second = STICKY.assign(&members, 7);
        assert_eq!(
            second,
            expect(&[
                ("consumer1", &[0, 2]),
                ("consumer2", &[1, 3]),
                ("consumer3", &[4, 6]),
                ("consumer4", &[5]),
            ])
        );
        assert_eq!(
            transferring(&members, &second),
            BTreeMap::from([
                (4, "consumer3".to_owned()),
                (5, "consumer4".to_owned()),
                (6, "consumer3".to_owned()),
            ])
        );

        let members: Vec<_> = rejoin(&members, &second)
            .into_iter()
            .filter(|m| m.member_id == "consumer3" || m.member_id == "consumer4")
            .collect();
        let third = STICKY.assign(&members, 7);
        assert_eq!(
            third,
            expect(&[("consumer3", &[0, 3, 4, 6]), ("consumer4", &[1, 2, 5])])
        );
        assert!(transferring(&members, &third).is_empty());
    }

    #[test]
    fn sticky_reassignment_after_one_consumer_added() {
        let ids: Vec<String> = (1..10).map(|i| format!("c{i:02}")).collect();
        let members: Vec<_> = ids.iter().map(AssignorMember::new).collect();
        let first = STICKY.assign(&members, 20);
        assert_valid_and_balanced(&first, 20);
        let mut members = members;
        members.push(AssignorMember::new("c10"));
        let second = STICKY.assign(&members, 20);
        assert_valid_and_balanced(&second, 20);
        assert!(transferring(&members, &second).is_empty());
    }

    #[test]
    fn sticky_stickiness_when_a_member_leaves() {
        // testStickiness: four members, three partitions; removing one keeps
        // every other member's partition where it was.
        let members = dynamic(&["consumer1", "consumer2", "consumer3", "consumer4"]);
        let first = STICKY.assign(&members, 3);
        assert_valid_and_balanced(&first, 3);
        assert!(first.values().all(|l| l.len() <= 1));
        let members: Vec<_> = rejoin(&members, &first)
            .into_iter()
            .filter(|m| m.member_id != "consumer1")
            .collect();
        let second = STICKY.assign(&members, 3);
        assert_valid_and_balanced(&second, 3);
        for m in &members {
            let now = second.get(&m.member_id).cloned().unwrap_or_default();
            assert_eq!(now.len(), 1);
            for p in &m.owned {
                assert!(now.contains(p), "{} lost partition {p}", m.member_id);
            }
        }
    }

    #[test]
    fn sticky_only_member_loses_deleted_partitions() {
        // testNoExceptionThrownWhenOnlySubscribedTopicDeleted.
        let members = vec![owning("consumer", &[0, 1, 2])];
        assert_eq!(STICKY.assign(&members, 0), expect(&[("consumer", &[])]));
    }

    #[test]
    fn sticky_all_consumers_reach_quota_and_are_filled() {
        let members = vec![
            owning("consumer1", &[0, 1]),
            owning("consumer2", &[2]),
            owning("consumer3", &[]),
        ];
        let got = STICKY.assign(&members, 4);
        assert_eq!(
            got,
            expect(&[
                ("consumer1", &[0, 1]),
                ("consumer2", &[2]),
                ("consumer3", &[3])
            ])
        );
        assert!(transferring(&members, &got).is_empty());
    }

    #[test]
    fn sticky_partition_claimed_twice_is_owned_by_nobody() {
        // testPartitionsTransferringOwnershipIncludeThePartitionClaimedByMultipleConsumersInSameGeneration
        let members = vec![
            owning("consumer1", &[0, 1]),
            owning("consumer2", &[0, 2]),
            owning("consumer3", &[]),
        ];
        let got = STICKY.assign(&members, 3);
        assert_eq!(
            got,
            expect(&[
                ("consumer1", &[1]),
                ("consumer2", &[2]),
                ("consumer3", &[0])
            ])
        );
        assert_eq!(
            transferring(&members, &got),
            BTreeMap::from([(0, "consumer3".to_owned())])
        );
    }

    // ---- CooperativeStickyAssignorTest ----

    #[test]
    fn cooperative_withholds_partition_claimed_twice_equal_shares() {
        let members = vec![
            owning("consumer1", &[0, 1]),
            owning("consumer2", &[0, 2]),
            owning("consumer3", &[]),
        ];
        let got = STICKY.assign_generation(&members, 3);
        assert_eq!(
            got,
            expect(&[("consumer1", &[1]), ("consumer2", &[2]), ("consumer3", &[])])
        );
    }

    #[test]
    fn cooperative_withholds_partition_claimed_twice_unequal_shares() {
        let members = vec![
            owning("consumer1", &[0, 1]),
            owning("consumer2", &[0, 2]),
            owning("consumer3", &[]),
        ];
        let got = STICKY.assign_generation(&members, 4);
        assert_eq!(
            got,
            expect(&[
                ("consumer1", &[1, 3]),
                ("consumer2", &[2]),
                ("consumer3", &[])
            ])
        );
    }

    #[test]
    fn cooperative_with_old_owners_keeps_them() {
        // testAssignorWithOldVersionSubscriptions, one topic of 3.
        let members = vec![
            owning("consumer1", &[0]),
            owning("consumer2", &[1]),
            owning("consumer3", &[]),
        ];
        let got = STICKY.assign_generation(&members, 3);
        assert_eq!(
            got,
            expect(&[
                ("consumer1", &[0]),
                ("consumer2", &[1]),
                ("consumer3", &[2])
            ])
        );
    }

    /// Kafka's cooperative validity check: no partition is given to a member
    /// in the generation in which another member revokes it; rebalances are
    /// repeated until nothing is revoked, and the result is then balanced.
    fn converge_cooperatively(members: Vec<AssignorMember>, partitions: u32) -> Assignment {
        let mut members = members;
        for _ in 0..4 {
            let step = STICKY.assign_generation(&members, partitions);
            let mut revoked: BTreeSet<u32> = BTreeSet::new();
            let mut added: BTreeSet<u32> = BTreeSet::new();
            for m in &members {
                let now = step.get(&m.member_id).cloned().unwrap_or_default();
                revoked.extend(m.owned.iter().filter(|p| !now.contains(p)));
                added.extend(now.iter().filter(|p| !m.owned.contains(p)));
            }
            assert!(
                revoked.is_disjoint(&added),
                "revoked and assigned in one generation: {revoked:?} {added:?}"
            );
            if revoked.is_empty() {
                assert_valid_and_balanced(&step, partitions);
                return step;
            }
            members = rejoin(&members, &step);
        }
        panic!("no convergence in four rebalances");
    }

    #[test]
    fn cooperative_converges_in_two_rebalances_when_members_join() {
        let members = dynamic(&["consumer1", "consumer2"]);
        let first = converge_cooperatively(members.clone(), 7);
        let mut members = rejoin(&members, &first);
        members.push(AssignorMember::new("consumer3"));
        members.push(AssignorMember::new("consumer4"));
        let second = converge_cooperatively(members, 7);
        assert_eq!(
            second,
            expect(&[
                ("consumer1", &[0, 2]),
                ("consumer2", &[1, 3]),
                ("consumer3", &[4, 6]),
                ("consumer4", &[5]),
            ])
        );
    }

    // ---- properties ----

    /// SplitMix64: a small deterministic generator for the random cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            if n == 0 { 0 } else { self.next() % n }
        }
    }

    fn cases() -> u64 {
        std::env::var("GROUP_ASSIGNOR_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500)
    }

    fn random_members(rng: &mut Rng, partitions: u32) -> Vec<AssignorMember> {
        let count = rng.below(12);
        (0..count)
            .map(|i| {
                let mut m = AssignorMember::new(format!("m{}", rng.below(1000) * 100 + i));
                if rng.below(3) == 0 {
                    m = m.group_instance_id(format!("i{}", rng.below(50)));
                }
                let owned = (0..rng.below(8))
                    .map(|_| u32::try_from(rng.below(u64::from(partitions) + 3)).unwrap_or(0))
                    .collect::<Vec<_>>();
                m.owned(owned)
            })
            .collect()
    }

    #[test]
    fn every_partition_is_assigned_exactly_once_for_random_members() {
        let mut rng = Rng(0x5eed);
        for _ in 0..cases() {
            let partitions = u32::try_from(rng.below(40)).unwrap_or(0);
            let members = random_members(&mut rng, partitions);
            let ids: BTreeSet<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
            for kind in [AssignorKind::Range, AssignorKind::RoundRobin, STICKY] {
                let got = kind.assign(&members, partitions);
                let keys: BTreeSet<&str> = got.keys().map(String::as_str).collect();
                assert_eq!(keys, ids, "{kind}: every member appears once");
                assert_valid_and_balanced(&got, partitions);
                assert!(got.values().all(|l| l.windows(2).all(|w| w[0] < w[1])));
            }
        }
    }

    #[test]
    fn sticky_keeps_every_owned_partition_that_balance_allows() {
        // After a random change of membership, a member that owned no more
        // than its smaller quota keeps everything it owned.
        let mut rng = Rng(0xfeed);
        for _ in 0..cases() {
            let partitions = u32::try_from(rng.below(40)).unwrap_or(0);
            let count = 1 + rng.below(8);
            let members: Vec<_> = (0..count)
                .map(|i| AssignorMember::new(format!("m{i}")))
                .collect();
            let before = STICKY.assign(&members, partitions);
            let mut members = rejoin(&members, &before);
            members.retain(|_| rng.below(4) != 0);
            for i in 0..rng.below(4) {
                members.push(AssignorMember::new(format!("n{i}")));
            }
            if members.is_empty() {
                continue;
            }
            let after = STICKY.assign(&members, partitions);
            assert_valid_and_balanced(&after, partitions);
            let min_quota = partitions as usize / members.len();
            for m in &members {
                let now = after.get(&m.member_id).cloned().unwrap_or_default();
                if m.owned.len() <= min_quota {
                    assert!(m.owned.iter().all(|p| now.contains(p)), "{m:?} -> {now:?}");
                } else {
                    let kept = m.owned.iter().filter(|p| now.contains(p)).count();
                    assert!(kept >= min_quota, "{m:?} -> {now:?}");
                }
            }
            converge_cooperatively(members, partitions);
        }
    }

    #[test]
    fn duplicate_member_ids_count_once() {
        let members = vec![owning("a", &[0, 1]), owning("a", &[2]), owning("b", &[])];
        for kind in [AssignorKind::Range, AssignorKind::RoundRobin, STICKY] {
            let got = kind.assign(&members, 4);
            assert_eq!(got.len(), 2);
            assert_valid_and_balanced(&got, 4);
        }
        assert_eq!(STICKY.assign(&members, 4).get("a"), Some(&vec![0, 1]));
    }

    #[test]
    fn no_members_no_assignment() {
        for kind in [AssignorKind::Range, AssignorKind::RoundRobin, STICKY] {
            assert!(kind.assign(&[], 10).is_empty());
            assert!(kind.assign_generation(&[], 10).is_empty());
        }
    }

    #[test]
    fn names_are_kafkas() {
        assert_eq!(AssignorKind::Range.to_string(), "range");
        assert_eq!(AssignorKind::RoundRobin.to_string(), "roundrobin");
        assert_eq!(STICKY.to_string(), "cooperative-sticky");
        assert!(STICKY.is_cooperative());
        assert!(!AssignorKind::Range.is_cooperative());
    }
}
