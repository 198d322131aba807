//! Consumer-group scenarios through the public group coordinator API: a
//! member that dies, a zombie's late commit, a static member's restart and a
//! cooperative scale-out. Time comes from a `ManualClock`, so every timeout
//! is deterministic.

#![cfg(feature = "offsets")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use durable_log::Error;
use durable_log::offsets::{
    AssignorKind, GroupConfig, GroupCoordinator, GroupState, HeartbeatRequest, HeartbeatResponse,
    JoinRequest, JoinStatus, LeaveRequest, ManualClock, SyncRequest,
};

const GROUP: &str = "billing";
const SESSION: Duration = Duration::from_secs(10);

fn coordinator(partitions: u32, assignor: AssignorKind) -> (Arc<ManualClock>, GroupCoordinator) {
    let clock = Arc::new(ManualClock::new());
    let config = GroupConfig::default()
        .session_timeout(SESSION)
        .rebalance_timeout(Duration::from_secs(30))
        .assignor(assignor);
    let groups = GroupCoordinator::with_clock(partitions, config, clock.clone()).unwrap();
    (clock, groups)
}

/// A consumer's view of its membership, driven the way a poll loop would.
#[derive(Debug, Clone, Default)]
struct Member {
    instance: Option<String>,
    member_id: Option<String>,
    generation: u32,
    partitions: Vec<u32>,
    stable: bool,
}

impl Member {
    fn dynamic() -> Member {
        Member::default()
    }

    fn with_instance(instance: &str) -> Member {
        Member {
            instance: Some(instance.to_owned()),
            ..Member::default()
        }
    }

    fn id(&self) -> &str {
        self.member_id.as_deref().unwrap_or("")
    }

    /// One poll: heartbeat when stable, otherwise (re)join and sync.
    fn poll(&mut self, groups: &GroupCoordinator, cooperative: bool) {
        if self.stable {
            let beat = groups.heartbeat(&HeartbeatRequest {
                group: GROUP.to_owned(),
                member_id: self.id().to_owned(),
                generation: self.generation,
            });
            match beat {
                Ok(HeartbeatResponse::Stable) => return,
                Ok(HeartbeatResponse::RebalanceInProgress) => {}
                Err(Error::UnknownMember { .. }) => self.member_id = None,
                Err(e) => panic!("heartbeat: {e}"),
            }
            self.stable = false;
            if !cooperative || self.member_id.is_none() {
                // Eager: give up everything before rejoining.
                self.partitions.clear();
            }
        }
        let request = JoinRequest {
            group: GROUP.to_owned(),
            member_id: self.member_id.clone(),
            group_instance_id: self.instance.clone(),
            client_id: String::new(),
            assignor: None,
        };
        let joined = groups.join(&request).unwrap();
        self.member_id = Some(joined.member_id.clone());
        if let JoinStatus::Joined { generation, .. } = joined.status {
            let sync = groups.sync(&SyncRequest {
                group: GROUP.to_owned(),
                member_id: joined.member_id,
                generation,
            });
            match sync {
                Ok(sync) => {
                    self.generation = generation;
                    self.partitions = sync.assignment;
                    self.stable = true;
                }
                Err(Error::RebalanceInProgress { .. }) => {}
                Err(e) => panic!("sync: {e}"),
            }
        }
    }
}

fn run(groups: &GroupCoordinator, members: &mut [&mut Member], cooperative: bool) {
    for _ in 0..20 {
        for m in members.iter_mut() {
            m.poll(groups, cooperative);
        }
        let d = groups.describe(GROUP).unwrap();
        if d.state == GroupState::Stable
            && members
                .iter()
                .all(|m| m.stable && m.generation == d.generation)
        {
            return;
        }
    }
    panic!("no stable generation: {:?}", groups.describe(GROUP));
}

fn holders(members: &[&Member]) -> BTreeMap<u32, usize> {
    let mut count = BTreeMap::new();
    for m in members {
        for &p in &m.partitions {
            *count.entry(p).or_insert(0) += 1;
        }
    }
    count
}

#[test]
fn a_dead_members_partitions_move_to_the_survivors() {
    let (clock, groups) = coordinator(6, AssignorKind::Range);
    let (mut a, mut b, mut c) = (Member::dynamic(), Member::dynamic(), Member::dynamic());
    run(&groups, &mut [&mut a, &mut b, &mut c], false);
    assert_eq!(
        (
            a.partitions.clone(),
            b.partitions.clone(),
            c.partitions.clone()
        ),
        (vec![0, 1], vec![2, 3], vec![4, 5])
    );
    let dead = a.clone();

    // `a` stops; `b` and `c` keep polling past its session timeout.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(4));
        b.poll(&groups, false);
        c.poll(&groups, false);
    }
    run(&groups, &mut [&mut b, &mut c], false);
    assert_eq!(b.generation, dead.generation + 1);
    assert_eq!(b.partitions, vec![0, 1, 2]);
    assert_eq!(c.partitions, vec![3, 4, 5]);

    // The dead member comes back to life and tries to commit: refused.
    let late = groups.commit_allowed(GROUP, dead.id(), dead.generation);
    assert!(matches!(late, Err(Error::UnknownMember { .. })), "{late:?}");
    assert!(groups.commit_allowed(GROUP, b.id(), b.generation).is_ok());
}

#[test]
fn a_zombies_commit_with_an_old_generation_is_refused() {
    let (_clock, groups) = coordinator(4, AssignorKind::RoundRobin);
    let (mut a, mut b) = (Member::dynamic(), Member::dynamic());
    run(&groups, &mut [&mut a, &mut b], false);
    let zombie = a.clone();
    let mut c = Member::dynamic();
    run(&groups, &mut [&mut a, &mut b, &mut c], false);
    let late = groups.commit_allowed(GROUP, zombie.id(), zombie.generation);
    match late {
        Err(Error::IllegalGeneration {
            generation,
            current,
            ..
        }) => assert_eq!((generation, current), (zombie.generation, a.generation)),
        other => panic!("expected IllegalGeneration, got {other:?}"),
    }
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_partitions() {
    let (clock, groups) = coordinator(6, AssignorKind::CooperativeSticky);
    let mut a = Member::with_instance("host-a");
    let mut b = Member::with_instance("host-b");
    run(&groups, &mut [&mut a, &mut b], true);
    let before = groups.describe(GROUP).unwrap();

    // Process `a` is restarted: no leave, back after 5 s.
    let old = a.clone();
    clock.advance(Duration::from_secs(5));
    b.poll(&groups, true);
    let mut restarted = Member::with_instance("host-a");
    restarted.poll(&groups, true);
    assert!(restarted.stable);
    assert_eq!(restarted.partitions, old.partitions);
    assert_eq!(restarted.generation, old.generation);

    let after = groups.describe(GROUP).unwrap();
    assert_eq!(after.generation, before.generation, "no rebalance");
    assert_eq!(after.state, GroupState::Stable);
    let late = groups.commit_allowed(GROUP, old.id(), old.generation);
    assert!(
        matches!(late, Err(Error::FencedInstanceId { .. })),
        "{late:?}"
    );
}

#[test]
fn cooperative_scale_out_never_gives_one_partition_to_two_members() {
    let (_clock, groups) = coordinator(8, AssignorKind::CooperativeSticky);
    let mut members = vec![Member::dynamic()];
    {
        let mut refs: Vec<&mut Member> = members.iter_mut().collect();
        run(&groups, &mut refs, true);
    }
    for _ in 0..3 {
        members.push(Member::dynamic());
        for _ in 0..10 {
            for m in members.iter_mut() {
                m.poll(&groups, true);
            }
            let all: Vec<&Member> = members.iter().collect();
            assert!(holders(&all).values().all(|&n| n == 1), "{members:?}");
        }
    }
    let all: Vec<&Member> = members.iter().collect();
    assert_eq!(holders(&all).len(), 8);
    assert!(
        members.iter().all(|m| m.partitions.len() == 2),
        "{members:?}"
    );

    // A clean leave hands the partitions over.
    let leaving = members.remove(0);
    groups
        .leave(&LeaveRequest {
            group: GROUP.to_owned(),
            member_id: leaving.id().to_owned(),
        })
        .unwrap();
    let mut refs: Vec<&mut Member> = members.iter_mut().collect();
    run(&groups, &mut refs, true);
    let all: Vec<&Member> = members.iter().collect();
    assert_eq!(holders(&all).len(), 8);
    assert!(holders(&all).values().all(|&n| n == 1));
}
