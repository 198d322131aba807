//! The in-process group coordinator: membership, generations, rebalances,
//! session timeouts and the fencing of zombie members.
//!
//! One [`GroupCoordinator`] serves every consumer group of one topic in a
//! process. Its requests and responses are plain values, so a host can also
//! carry them over its own RPC to consumers in other processes.
//!
//! # The protocol
//!
//! The coordinator never blocks. A member drives it by calling:
//!
//! 1. [`join`](GroupCoordinator::join) — without a member id the first time.
//!    The answer carries the member id to use from then on and a
//!    [`JoinStatus`]: [`Pending`](JoinStatus::Pending) while the rebalance
//!    waits for other members (call `join` again; each call keeps the session
//!    alive), then [`Joined`](JoinStatus::Joined) with the new generation.
//! 2. [`sync`](GroupCoordinator::sync) with that generation, which returns
//!    the member's partitions and the ones it lost.
//! 3. [`heartbeat`](GroupCoordinator::heartbeat) at least once per
//!    `session_timeout`. [`HeartbeatResponse::RebalanceInProgress`] means:
//!    commit, give up partitions as the assignor requires, and `join` again.
//! 4. [`leave`](GroupCoordinator::leave) on a clean shutdown.
//!
//! A member commits its offsets through
//! [`commit`](GroupCoordinator::commit), which writes them to the
//! [`OffsetStore`] only if the member may commit: a commit from a member that
//! was removed, or that carries an old generation, is refused, so a zombie
//! cannot overwrite the progress of a partition's new owner. The check and
//! the write form one step: no rebalance completes between them.
//!
//! What a member gives up, and when, depends on the assignor:
//!
//! - Eager assignors ([`AssignorKind::Range`], [`AssignorKind::RoundRobin`]):
//!   a member stops processing, commits, and gives up **all** its partitions
//!   before it calls `join` for a rebalance. A generation therefore forms
//!   only among members that hold nothing; members that do not rejoin within
//!   `rebalance_timeout` are removed and fenced.
//! - [`AssignorKind::CooperativeSticky`]: a member keeps processing its
//!   partitions while it rejoins. The new generation gives each member its
//!   target partitions except those another member still owns; `sync`
//!   returns the partitions the member must revoke. Once every member that
//!   must revoke has synced, the coordinator starts a follow-up rebalance;
//!   a revoking member must have finished with its revoked partitions
//!   (committed them) before it calls `join` again, and only the generation
//!   formed by that rebalance hands them to their new owners.
//!
//! # Static membership
//!
//! A member that joins with a `group_instance_id` is static. When a process
//! restarts and joins again with the same instance id (and no member id)
//! while its previous incarnation is still within its session timeout, it
//! takes over that member's place without a rebalance: same generation, same
//! partitions. It gets a new member id, and the old member id is fenced: its
//! requests fail with `Error::FencedInstanceId`, so the previous incarnation,
//! if it is still running, cannot commit or rejoin in its place. A static
//! member that restarts should therefore not call `leave` on shutdown: a
//! leave removes it at once and starts a rebalance.
//!
//! # Time
//!
//! The coordinator reads time from a [`Clock`]. Session and rebalance
//! timeouts are evaluated on every request to a group (and on
//! [`check_timeouts`](GroupCoordinator::check_timeouts)), so a member that
//! died is removed by the next request any member of its group makes after
//! its session expired. Tests use [`ManualClock`] to make every timeout
//! deterministic.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use super::assignor::{AssignorKind, AssignorMember};
use super::store::{OffsetAndMetadata, OffsetStore};
use crate::error::{Error, Result};

/// How many replaced member ids of static members a group remembers, to
/// answer them with `Error::FencedInstanceId` rather than
/// `Error::UnknownMember`.
const FENCED_MEMBERS_REMEMBERED: usize = 64;

/// The source of time of a [`GroupCoordinator`].
pub trait Clock: Send + Sync {
    /// The current instant. It must never go backwards.
    fn now(&self) -> Instant;
}

/// The monotonic clock of the operating system ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for deterministic tests of session
/// and rebalance timeouts.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use durable_log::offsets::{Clock, ManualClock};
///
/// let clock = Arc::new(ManualClock::new());
/// let start = clock.now();
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(clock.now() - start, Duration::from_secs(10));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
}

impl ManualClock {
    /// A clock that starts at the current instant and stands still.
    pub fn new() -> ManualClock {
        ManualClock {
            now: Mutex::new(Instant::now()),
        }
    }

    /// Moves the clock forward. A step that would overflow the platform's
    /// `Instant` leaves the clock where it is.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock()
    }
}

/// Settings of a [`GroupCoordinator`], shared by its groups. Build one with
/// [`GroupConfig::default`] and the chainable setters of the same names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// How long a member may go without a request (heartbeat, join, sync)
    /// before it is removed from its group and its partitions move to the
    /// other members. Must not be zero. Default: 45 s (Kafka's
    /// `session.timeout.ms`).
    pub session_timeout: Duration,
    /// How long a rebalance waits for the members to rejoin; members that
    /// have not rejoined by then are removed. Must not be zero. Default:
    /// 5 min (Kafka's `max.poll.interval.ms`, which is its rebalance timeout).
    pub rebalance_timeout: Duration,
    /// The assignor of a group whose first member does not ask for one.
    /// Default: [`AssignorKind::Range`], as in Kafka.
    pub assignor: AssignorKind,
    /// How long the first rebalance of an empty group waits for more members
    /// before it completes, so that members starting together form one
    /// generation instead of several. Default: zero.
    pub initial_rebalance_delay: Duration,
    /// The most members a group may have; a join beyond it fails with
    /// `Error::GroupMaxSizeReached`. Must be at least 1. Default: 1000.
    pub max_group_size: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            assignor: AssignorKind::Range,
            initial_rebalance_delay: Duration::ZERO,
            max_group_size: 1000,
        }
    }
}

impl GroupConfig {
    /// Sets [`GroupConfig::session_timeout`].
    pub fn session_timeout(mut self, session_timeout: Duration) -> GroupConfig {
        self.session_timeout = session_timeout;
        self
    }

    /// Sets [`GroupConfig::rebalance_timeout`].
    pub fn rebalance_timeout(mut self, rebalance_timeout: Duration) -> GroupConfig {
        self.rebalance_timeout = rebalance_timeout;
        self
    }

    /// Sets [`GroupConfig::assignor`].
    pub fn assignor(mut self, assignor: AssignorKind) -> GroupConfig {
        self.assignor = assignor;
        self
    }

    /// Sets [`GroupConfig::initial_rebalance_delay`].
    pub fn initial_rebalance_delay(mut self, initial_rebalance_delay: Duration) -> GroupConfig {
        self.initial_rebalance_delay = initial_rebalance_delay;
        self
    }

    /// Sets [`GroupConfig::max_group_size`].
    pub fn max_group_size(mut self, max_group_size: usize) -> GroupConfig {
        self.max_group_size = max_group_size;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.session_timeout.is_zero() {
            return Err(invalid("session_timeout", "must not be zero"));
        }
        if self.rebalance_timeout.is_zero() {
            return Err(invalid("rebalance_timeout", "must not be zero"));
        }
        if self.max_group_size == 0 {
            return Err(invalid("max_group_size", "must be at least 1"));
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &str) -> Error {
    Error::InvalidConfig {
        field,
        reason: reason.to_owned(),
    }
}

/// A request to join a group, or to rejoin it during a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The group.
    pub group: String,
    /// The id the coordinator gave this member; `None` on the first join
    /// (and after `Error::UnknownMember`).
    pub member_id: Option<String>,
    /// The static identity of the member, stable across its restarts; `None`
    /// for a dynamic member.
    pub group_instance_id: Option<String>,
    /// The prefix of a new member id (Kafka's `client.id`); `consumer` when
    /// empty.
    pub client_id: String,
    /// The assignor this member expects; `None` accepts the group's. The
    /// first member of an empty group chooses (or the coordinator's default
    /// applies); a member asking for another one while the group has members
    /// is refused with `Error::InconsistentGroupProtocol`.
    pub assignor: Option<AssignorKind>,
}

impl JoinRequest {
    /// A first join of a dynamic member.
    pub fn new(group: impl Into<String>) -> JoinRequest {
        JoinRequest {
            group: group.into(),
            member_id: None,
            group_instance_id: None,
            client_id: String::new(),
            assignor: None,
        }
    }

    /// Sets [`JoinRequest::member_id`].
    pub fn member_id(mut self, member_id: impl Into<String>) -> JoinRequest {
        self.member_id = Some(member_id.into());
        self
    }

    /// Sets [`JoinRequest::group_instance_id`].
    pub fn group_instance_id(mut self, group_instance_id: impl Into<String>) -> JoinRequest {
        self.group_instance_id = Some(group_instance_id.into());
        self
    }

    /// Sets [`JoinRequest::client_id`].
    pub fn client_id(mut self, client_id: impl Into<String>) -> JoinRequest {
        self.client_id = client_id.into();
        self
    }

    /// Sets [`JoinRequest::assignor`].
    pub fn assignor(mut self, assignor: AssignorKind) -> JoinRequest {
        self.assignor = Some(assignor);
        self
    }
}

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// The member's id: send it with every later request.
    pub member_id: String,
    /// Whether the generation the member joined has formed.
    pub status: JoinStatus,
}

/// Where a join stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStatus {
    /// The rebalance is waiting for other members to rejoin. Call `join`
    /// again (with the member id) until it answers `Joined`.
    Pending,
    /// The generation formed. Call `sync` with it to get the assignment.
    Joined {
        /// The new generation.
        generation: u32,
        /// The member id of the group's leader (informational: the
        /// coordinator computes the assignment itself).
        leader: String,
        /// The member ids of the generation, in increasing order.
        members: Vec<String>,
    },
}

/// A request for the member's assignment in a generation it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// The group.
    pub group: String,
    /// The member's id.
    pub member_id: String,
    /// The generation `join` returned.
    pub generation: u32,
}

/// A member's assignment in a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// The generation.
    pub generation: u32,
    /// The member's partitions, in increasing order.
    pub assignment: Vec<u32>,
    /// Partitions the member held in its previous generation that are not in
    /// this one. With the cooperative assignor the member must stop
    /// processing them (committing what it processed) before it calls `join`
    /// again; with an eager assignor it gave them up before joining.
    pub revoked: Vec<u32>,
}

/// A member's sign of life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The group.
    pub group: String,
    /// The member's id.
    pub member_id: String,
    /// The generation of the member's current assignment.
    pub generation: u32,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatResponse {
    /// Nothing to do: keep processing.
    Stable,
    /// A rebalance started: commit, give up partitions as the assignor
    /// requires, and call `join` again.
    RebalanceInProgress,
}

/// A member leaving its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveRequest {
    /// The group.
    pub group: String,
    /// The member's id.
    pub member_id: String,
}

/// The state of a group, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// The group has no members.
    Empty,
    /// A rebalance waits for the members to (re)join.
    PreparingRebalance,
    /// A generation formed; some members have not fetched their assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

/// A snapshot of a group, for monitoring and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group.
    pub group: String,
    /// Its state.
    pub state: GroupState,
    /// Its current generation; 0 until the first rebalance completes.
    pub generation: u32,
    /// The leader's member id, if the group has formed a generation with
    /// members.
    pub leader: Option<String>,
    /// The group's assignor.
    pub assignor: AssignorKind,
    /// The members, by member id.
    pub members: Vec<MemberDescription>,
}

/// One member in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member's id.
    pub member_id: String,
    /// Its static identity, if any.
    pub group_instance_id: Option<String>,
    /// Its partitions in the current generation (empty for a member that
    /// joined a rebalance still in progress).
    pub assignment: Vec<u32>,
    /// Whether it has fetched that assignment with `sync`.
    pub synced: bool,
}

/// The coordinator of the consumer groups of one topic.
///
/// Cheap to clone: clones share the same groups. Safe to share between
/// threads; every request takes one short lock, except that a
/// [`commit`](GroupCoordinator::commit) holds it shared while it writes to
/// the offset store, so requests that could change a group wait for the
/// commits under way (commits do not wait for each other).
///
/// ```
/// use durable_log::offsets::{
///     GroupConfig, GroupCoordinator, HeartbeatRequest, HeartbeatResponse, JoinRequest,
///     JoinStatus, SyncRequest,
/// };
///
/// # fn main() -> durable_log::Result<()> {
/// let groups = GroupCoordinator::new(4, GroupConfig::default())?;
/// let joined = groups.join(&JoinRequest::new("billing"))?;
/// let JoinStatus::Joined { generation, .. } = joined.status else {
///     unreachable!("a lone member forms its generation at once");
/// };
/// let member_id = joined.member_id;
/// let sync = groups.sync(&SyncRequest {
///     group: "billing".into(),
///     member_id: member_id.clone(),
///     generation,
/// })?;
/// assert_eq!(sync.assignment, vec![0, 1, 2, 3]);
/// groups.commit_allowed("billing", &member_id, generation)?;
/// let beat = groups.heartbeat(&HeartbeatRequest {
///     group: "billing".into(),
///     member_id,
///     generation,
/// })?;
/// assert_eq!(beat, HeartbeatResponse::Stable);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GroupCoordinator {
    inner: Arc<Inner>,
}

struct Inner {
    partitions: u32,
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    /// Requests take it exclusively; a commit holds it shared from its
    /// check to the end of its write, so that no generation or membership
    /// changes in between.
    state: RwLock<State>,
    #[cfg(test)]
    hooks: tests::Hooks,
}

#[derive(Default)]
struct State {
    groups: BTreeMap<String, Group>,
    /// Numbers new member ids; never reused, so a member id is never given
    /// twice by one coordinator.
    members_created: u64,
}

impl fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("partitions", &self.inner.partitions)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl GroupCoordinator {
    /// A coordinator for the groups reading a topic of `partitions`
    /// partitions, on the system clock.
    ///
    /// # Errors
    ///
    /// `Error::InvalidConfig` naming the field when `config` is invalid.
    pub fn new(partitions: u32, config: GroupConfig) -> Result<GroupCoordinator> {
        GroupCoordinator::with_clock(partitions, config, Arc::new(SystemClock))
    }

    /// A coordinator that reads time from `clock`.
    ///
    /// # Errors
    ///
    /// `Error::InvalidConfig` naming the field when `config` is invalid.
    pub fn with_clock(
        partitions: u32,
        config: GroupConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<GroupCoordinator> {
        config.validate()?;
        Ok(GroupCoordinator {
            inner: Arc::new(Inner {
                partitions,
                config,
                clock,
                state: RwLock::new(State::default()),
                #[cfg(test)]
                hooks: tests::Hooks::default(),
            }),
        })
    }

    /// The number of partitions the groups share.
    pub fn partition_count(&self) -> u32 {
        self.inner.partitions
    }

    /// The coordinator's settings.
    pub fn config(&self) -> &GroupConfig {
        &self.inner.config
    }

    /// Joins a group (creating it if needed), or rejoins it during a
    /// rebalance.
    ///
    /// A new member starts a rebalance; so does a static member whose
    /// previous incarnation is no longer in the group. A known member's join
    /// during a rebalance counts it in; once every member has joined (or
    /// `rebalance_timeout` has passed, removing those that did not) the new
    /// generation forms and the answer is [`JoinStatus::Joined`]. A known
    /// member's join while no rebalance runs returns its current generation.
    ///
    /// # Errors
    ///
    /// - `Error::UnknownMember` when `member_id` is given but is not a member
    ///   (it left or its session expired): join again without it.
    /// - `Error::FencedInstanceId` when `member_id` belonged to a static member
    ///   that a newer incarnation replaced, or when `group_instance_id` is
    ///   registered to another member id.
    /// - `Error::InconsistentGroupProtocol` when `assignor` differs from the
    ///   group's.
    /// - `Error::GroupMaxSizeReached` when a new member would exceed
    ///   `max_group_size`.
    pub fn join(&self, request: &JoinRequest) -> Result<JoinResponse> {
        let now = self.inner.clock.now();
        let mut state = self.write_state();
        let State {
            groups,
            members_created,
        } = &mut *state;
        let group = groups
            .entry(request.group.clone())
            .or_insert_with(|| Group::new(self.inner.config.assignor));
        let ctx = Ctx {
            name: &request.group,
            now,
            config: &self.inner.config,
            partitions: self.inner.partitions,
        };
        group.settle(&ctx);

        if let Some(asked) = request.assignor {
            if group.members.is_empty() {
                group.assignor = asked;
            } else if asked != group.assignor {
                return Err(Error::InconsistentGroupProtocol {
                    group: request.group.clone(),
                    current: group.assignor.name(),
                    requested: asked.name(),
                });
            }
        } else if group.members.is_empty() {
            group.assignor = self.inner.config.assignor;
        }

        let member_id = match (&request.member_id, &request.group_instance_id) {
            (Some(member_id), instance) => {
                group.rejoin(&ctx, member_id, instance.as_deref())?;
                member_id.clone()
            }
            (None, Some(instance)) if group.instances.contains_key(instance) => {
                let member_id = new_member_id(members_created, &request.client_id);
                group.replace_static(&ctx, instance, member_id.clone())?;
                member_id
            }
            (None, instance) => {
                if group.members.len() >= self.inner.config.max_group_size {
                    return Err(Error::GroupMaxSizeReached {
                        group: request.group.clone(),
                        max: self.inner.config.max_group_size,
                    });
                }
                let member_id = new_member_id(members_created, &request.client_id);
                group.add(&ctx, member_id.clone(), instance.clone());
                member_id
            }
        };
        group.settle(&ctx);
        let status = group.join_status(&member_id);
        Ok(JoinResponse { member_id, status })
    }

    /// Fetches the member's assignment in the generation it joined.
    ///
    /// # Errors
    ///
    /// - `Error::UnknownMember` / `Error::FencedInstanceId` as for
    ///   [`heartbeat`](GroupCoordinator::heartbeat).
    /// - `Error::RebalanceInProgress` when another rebalance has started
    ///   since: join again.
    /// - `Error::IllegalGeneration` when `generation` is not the group's.
    pub fn sync(&self, request: &SyncRequest) -> Result<SyncResponse> {
        self.with_group(&request.group, &request.member_id, |group, ctx| {
            let generation = group.generation;
            let preparing = group.is_preparing();
            let member = group.member_mut(ctx, &request.member_id)?;
            member.last_seen = ctx.now;
            if preparing {
                return Err(Error::RebalanceInProgress {
                    group: ctx.name.to_owned(),
                });
            }
            if request.generation != generation {
                return Err(illegal_generation(
                    ctx,
                    &request.member_id,
                    request.generation,
                    generation,
                ));
            }
            let revoked: Vec<u32> = member
                .owned
                .iter()
                .copied()
                .filter(|p| !member.assignment.contains(p))
                .collect();
            member.owned = member.assignment.clone();
            member.synced = true;
            Ok(SyncResponse {
                generation,
                assignment: member.assignment.clone(),
                revoked,
            })
        })
    }

    /// Keeps the member's session alive and tells it whether a rebalance
    /// started.
    ///
    /// # Errors
    ///
    /// - `Error::UnknownMember` when the member is not in the group (it left,
    ///   its session expired, or it missed a rebalance): join again without a
    ///   member id; its partitions may already be processed by others.
    /// - `Error::FencedInstanceId` when a newer incarnation of this static
    ///   member took its place: stop.
    /// - `Error::IllegalGeneration` when `generation` is not the group's
    ///   current one (a generation formed that the member has not synced).
    pub fn heartbeat(&self, request: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        self.with_group(&request.group, &request.member_id, |group, ctx| {
            let generation = group.generation;
            let preparing = group.is_preparing();
            let member = group.member_mut(ctx, &request.member_id)?;
            member.last_seen = ctx.now;
            if preparing {
                return Ok(HeartbeatResponse::RebalanceInProgress);
            }
            if request.generation != generation {
                return Err(illegal_generation(
                    ctx,
                    &request.member_id,
                    request.generation,
                    generation,
                ));
            }
            Ok(HeartbeatResponse::Stable)
        })
    }

    /// Removes the member from its group at once and starts a rebalance of
    /// the others.
    ///
    /// # Errors
    ///
    /// `Error::UnknownMember` / `Error::FencedInstanceId` as for
    /// [`heartbeat`](GroupCoordinator::heartbeat).
    pub fn leave(&self, request: &LeaveRequest) -> Result<()> {
        self.with_group(&request.group, &request.member_id, |group, ctx| {
            group.member_mut(ctx, &request.member_id)?;
            group.remove(&request.member_id);
            group.start_rebalance(ctx, false);
            Ok(())
        })
    }

    /// Whether the member may commit offsets now: it is in the group, carries
    /// the group's current generation and has fetched its assignment in it.
    ///
    /// Commits stay allowed while a rebalance is being prepared, so that a
    /// member can commit before it gives up its partitions. This check does
    /// not keep the session alive.
    ///
    /// The answer may be stale as soon as it is given: a rebalance can
    /// complete before the member writes. To commit, use
    /// [`commit`](GroupCoordinator::commit), which checks and writes in one
    /// step.
    ///
    /// # Errors
    ///
    /// - `Error::UnknownMember` when the member is not (or no longer) in the
    ///   group.
    /// - `Error::FencedInstanceId` when a newer incarnation of this static
    ///   member replaced it.
    /// - `Error::IllegalGeneration` when `generation` is not the current one:
    ///   a rebalance completed since the member's assignment.
    /// - `Error::RebalanceInProgress` when the member joined the current
    ///   generation but has not fetched its assignment with `sync`.
    pub fn commit_allowed(&self, group: &str, member_id: &str, generation: u32) -> Result<()> {
        self.with_group(group, member_id, |group, ctx| {
            group.commit_allowed(ctx, member_id, generation)
        })
    }

    /// Commits `offsets` for the member to `store` (see
    /// [`OffsetStore::commit`]) if the member may commit, as
    /// [`commit_allowed`](GroupCoordinator::commit_allowed) decides; durable
    /// when this returns.
    ///
    /// The check and the write are one step: requests that could end the
    /// member's generation or remove it (a join that completes a rebalance,
    /// an expired session, a leave) wait until the write is done. So a
    /// commit is either refused or written before the rebalance that fences
    /// its member completes, and a zombie's commit can never land after the
    /// new owner of a partition has started from the committed offset.
    ///
    /// # Errors
    ///
    /// The refusals of [`commit_allowed`](GroupCoordinator::commit_allowed)
    /// (nothing is written then) and the errors of [`OffsetStore::commit`].
    pub fn commit(
        &self,
        store: &OffsetStore,
        group: &str,
        member_id: &str,
        generation: u32,
        offsets: &[(u32, OffsetAndMetadata)],
    ) -> Result<()> {
        let mut state = self.write_state();
        self.in_group(&mut state, group, member_id, |g, ctx| {
            g.commit_allowed(ctx, member_id, generation)
        })?;
        // Shared from here: other commits may write alongside, and nothing
        // that changes a group can take the lock until this write is done.
        let state = RwLockWriteGuard::downgrade(state);
        #[cfg(test)]
        self.inner.hooks.commit_checked();
        let result = store.commit(group, offsets);
        drop(state);
        result
    }

    /// Evaluates the session and rebalance timeouts of every group now and
    /// returns how many members were removed. Requests do this for their own
    /// group; a host may call it periodically so that dead members are
    /// removed even when no other member makes a request.
    pub fn check_timeouts(&self) -> usize {
        let now = self.inner.clock.now();
        let mut state = self.write_state();
        let mut removed = 0;
        for (name, group) in &mut state.groups {
            let ctx = Ctx {
                name,
                now,
                config: &self.inner.config,
                partitions: self.inner.partitions,
            };
            removed += group.settle(&ctx);
        }
        removed
    }

    /// A snapshot of the group after evaluating its timeouts; `None` if no
    /// member ever joined it.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let now = self.inner.clock.now();
        let mut state = self.write_state();
        let entry = state.groups.get_mut(group)?;
        let ctx = Ctx {
            name: group,
            now,
            config: &self.inner.config,
            partitions: self.inner.partitions,
        };
        entry.settle(&ctx);
        Some(entry.describe(group))
    }

    /// The state, exclusively.
    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        #[cfg(test)]
        {
            if let Some(state) = self.inner.state.try_write() {
                return state;
            }
            self.inner.hooks.contended();
        }
        self.inner.state.write()
    }

    fn with_group<T>(
        &self,
        name: &str,
        member_id: &str,
        f: impl FnOnce(&mut Group, &Ctx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.write_state();
        self.in_group(&mut state, name, member_id, f)
    }

    /// Runs `f` on the group between evaluations of its timeouts.
    fn in_group<T>(
        &self,
        state: &mut State,
        name: &str,
        member_id: &str,
        f: impl FnOnce(&mut Group, &Ctx<'_>) -> Result<T>,
    ) -> Result<T> {
        let now = self.inner.clock.now();
        let Some(group) = state.groups.get_mut(name) else {
            return Err(Error::UnknownMember {
                group: name.to_owned(),
                member_id: member_id.to_owned(),
            });
        };
        let ctx = Ctx {
            name,
            now,
            config: &self.inner.config,
            partitions: self.inner.partitions,
        };
        group.settle(&ctx);
        let result = f(group, &ctx);
        group.settle(&ctx);
        result
    }
}

fn new_member_id(members_created: &mut u64, client_id: &str) -> String {
    *members_created = members_created.saturating_add(1);
    let prefix = if client_id.is_empty() {
        "consumer"
    } else {
        client_id
    };
    // Zero-padded so that ids of one prefix sort in creation order.
    format!("{prefix}-{:010}", *members_created)
}

fn illegal_generation(ctx: &Ctx<'_>, member_id: &str, generation: u32, current: u32) -> Error {
    Error::IllegalGeneration {
        group: ctx.name.to_owned(),
        member_id: member_id.to_owned(),
        generation,
        current,
    }
}

/// What every step of a group needs to know about its request.
struct Ctx<'a> {
    name: &'a str,
    now: Instant,
    config: &'a GroupConfig,
    partitions: u32,
}

enum Phase {
    /// No rebalance runs (the group may be empty).
    Stable,
    /// A rebalance waits for the members to join.
    Preparing {
        /// When members that have not joined are removed; `None` if the
        /// timeout does not fit in an `Instant`.
        deadline: Option<Instant>,
        /// The initial rebalance delay of an empty group.
        not_before: Option<Instant>,
    },
}

struct Member {
    group_instance_id: Option<String>,
    /// The last request that kept the session alive.
    last_seen: Instant,
    /// Joined the rebalance being prepared.
    joined: bool,
    /// The generation the member belongs to; 0 until its first one forms.
    generation: u32,
    /// Has fetched `assignment` with `sync`.
    synced: bool,
    /// Its partitions in `generation`.
    assignment: Vec<u32>,
    /// What the coordinator counts the member as holding: its assignment as
    /// of its last `sync`. The cooperative assignor does not hand these to
    /// another member until this member has synced a generation without them.
    owned: Vec<u32>,
}

struct Group {
    assignor: AssignorKind,
    generation: u32,
    phase: Phase,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static members: instance id to member id.
    instances: BTreeMap<String, String>,
    /// Member ids replaced by a newer incarnation, with their instance id.
    fenced: VecDeque<(String, String)>,
    /// A cooperative generation withheld partitions; a follow-up rebalance
    /// starts once their owners have synced it.
    follow_up: bool,
}

impl Group {
    fn new(assignor: AssignorKind) -> Group {
        Group {
            assignor,
            generation: 0,
            phase: Phase::Stable,
            leader: None,
            members: BTreeMap::new(),
            instances: BTreeMap::new(),
            fenced: VecDeque::new(),
            follow_up: false,
        }
    }

    fn is_preparing(&self) -> bool {
        matches!(self.phase, Phase::Preparing { .. })
    }

    fn member_mut(&mut self, ctx: &Ctx<'_>, member_id: &str) -> Result<&mut Member> {
        if !self.members.contains_key(member_id) {
            return Err(self.unknown(ctx, member_id));
        }
        self.members
            .get_mut(member_id)
            .ok_or_else(|| Error::UnknownMember {
                group: ctx.name.to_owned(),
                member_id: member_id.to_owned(),
            })
    }

    /// See [`GroupCoordinator::commit_allowed`].
    fn commit_allowed(&mut self, ctx: &Ctx<'_>, member_id: &str, generation: u32) -> Result<()> {
        let current = self.generation;
        let member = self.member_mut(ctx, member_id)?;
        if generation != current {
            return Err(illegal_generation(ctx, member_id, generation, current));
        }
        if !member.synced {
            return Err(Error::RebalanceInProgress {
                group: ctx.name.to_owned(),
            });
        }
        Ok(())
    }

    fn unknown(&self, ctx: &Ctx<'_>, member_id: &str) -> Error {
        match self.fenced.iter().find(|(id, _)| id == member_id) {
            Some((_, instance)) => Error::FencedInstanceId {
                group: ctx.name.to_owned(),
                group_instance_id: instance.clone(),
            },
            None => Error::UnknownMember {
                group: ctx.name.to_owned(),
                member_id: member_id.to_owned(),
            },
        }
    }

    /// A known member's join.
    fn rejoin(&mut self, ctx: &Ctx<'_>, member_id: &str, instance: Option<&str>) -> Result<()> {
        if let Some(instance) = instance
            && let Some(registered) = self.instances.get(instance)
            && registered != member_id
        {
            return Err(Error::FencedInstanceId {
                group: ctx.name.to_owned(),
                group_instance_id: instance.to_owned(),
            });
        }
        let preparing = self.is_preparing();
        let member = self.member_mut(ctx, member_id)?;
        member.last_seen = ctx.now;
        if preparing {
            member.joined = true;
        }
        Ok(())
    }

    /// A new incarnation of a static member takes its place: same
    /// generation and partitions, new member id, no rebalance.
    fn replace_static(&mut self, ctx: &Ctx<'_>, instance: &str, member_id: String) -> Result<()> {
        let Some(old_id) = self.instances.get(instance).cloned() else {
            return Err(self.unknown(ctx, &member_id));
        };
        let Some(mut member) = self.members.remove(&old_id) else {
            return Err(self.unknown(ctx, &old_id));
        };
        member.last_seen = ctx.now;
        member.synced = false;
        member.joined = self.is_preparing();
        self.members.insert(member_id.clone(), member);
        self.instances
            .insert(instance.to_owned(), member_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(member_id);
        }
        if self.fenced.len() >= FENCED_MEMBERS_REMEMBERED {
            self.fenced.pop_front();
        }
        self.fenced.push_back((old_id, instance.to_owned()));
        Ok(())
    }

    fn add(&mut self, ctx: &Ctx<'_>, member_id: String, instance: Option<String>) {
        let was_empty = self.members.is_empty();
        self.start_rebalance(ctx, was_empty);
        if let Some(instance) = &instance {
            self.instances.insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id,
            Member {
                group_instance_id: instance,
                last_seen: ctx.now,
                joined: true,
                generation: 0,
                synced: false,
                assignment: Vec::new(),
                owned: Vec::new(),
            },
        );
    }

    fn remove(&mut self, member_id: &str) {
        if let Some(member) = self.members.remove(member_id)
            && let Some(instance) = member.group_instance_id
            && self.instances.get(&instance).map(String::as_str) == Some(member_id)
        {
            self.instances.remove(&instance);
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// Starts a rebalance unless one is being prepared: every member must
    /// join again.
    fn start_rebalance(&mut self, ctx: &Ctx<'_>, initial: bool) {
        if self.is_preparing() {
            return;
        }
        for member in self.members.values_mut() {
            member.joined = false;
        }
        let not_before = if initial {
            ctx.now.checked_add(ctx.config.initial_rebalance_delay)
        } else {
            None
        };
        self.phase = Phase::Preparing {
            deadline: ctx.now.checked_add(ctx.config.rebalance_timeout),
            not_before,
        };
        self.follow_up = false;
    }

    /// Applies everything the passing of time and the last request imply:
    /// expired sessions, an expired rebalance, a rebalance that every member
    /// joined, a cooperative follow-up. Returns how many members it removed.
    fn settle(&mut self, ctx: &Ctx<'_>) -> usize {
        let session = ctx.config.session_timeout;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| ctx.now.saturating_duration_since(m.last_seen) > session)
            .map(|(id, _)| id.clone())
            .collect();
        let mut removed = expired.len();
        for member_id in &expired {
            self.remove(member_id);
        }
        if removed > 0 {
            self.start_rebalance(ctx, false);
        }

        if let Phase::Preparing {
            deadline: Some(deadline),
            ..
        } = self.phase
            && ctx.now >= deadline
        {
            let late: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| !m.joined)
                .map(|(id, _)| id.clone())
                .collect();
            removed += late.len();
            for member_id in &late {
                self.remove(member_id);
            }
            self.complete(ctx);
        }

        if let Phase::Preparing { not_before, .. } = self.phase
            && not_before.is_none_or(|t| ctx.now >= t)
            && self.members.values().all(|m| m.joined)
        {
            self.complete(ctx);
        }

        if self.follow_up
            && !self.is_preparing()
            && self
                .members
                .values()
                .all(|m| m.owned.iter().all(|p| m.assignment.contains(p)))
        {
            self.start_rebalance(ctx, false);
        }
        removed
    }

    /// Forms the next generation from the members that joined.
    fn complete(&mut self, ctx: &Ctx<'_>) {
        self.phase = Phase::Stable;
        self.generation = self.generation.saturating_add(1);
        self.follow_up = false;
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let cooperative = self.assignor.is_cooperative();
        let view: Vec<AssignorMember> = self
            .members
            .iter()
            .map(|(id, m)| AssignorMember {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                owned: if cooperative {
                    m.owned.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let assignment = self.assignor.assign_generation(&view, ctx.partitions);
        for (id, member) in &mut self.members {
            member.assignment = assignment.get(id).cloned().unwrap_or_default();
            member.generation = self.generation;
            member.joined = false;
            member.synced = false;
            if cooperative && member.owned.iter().any(|p| !member.assignment.contains(p)) {
                self.follow_up = true;
            }
        }
    }

    fn join_status(&self, member_id: &str) -> JoinStatus {
        let formed = !self.is_preparing()
            && self
                .members
                .get(member_id)
                .is_some_and(|m| m.generation == self.generation && m.generation > 0);
        match (&self.leader, formed) {
            (Some(leader), true) => JoinStatus::Joined {
                generation: self.generation,
                leader: leader.clone(),
                members: self.members.keys().cloned().collect(),
            },
            _ => JoinStatus::Pending,
        }
    }

    fn describe(&self, name: &str) -> GroupDescription {
        let state = if self.is_preparing() {
            GroupState::PreparingRebalance
        } else if self.members.is_empty() {
            GroupState::Empty
        } else if self.members.values().any(|m| !m.synced) {
            GroupState::CompletingRebalance
        } else {
            GroupState::Stable
        };
        GroupDescription {
            group: name.to_owned(),
            state,
            generation: self.generation,
            leader: self.leader.clone(),
            assignor: self.assignor,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    assignment: if m.generation == self.generation {
                        m.assignment.clone()
                    } else {
                        Vec::new()
                    },
                    synced: m.synced,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const GROUP: &str = "g";
    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    struct Fixture {
        clock: Arc<ManualClock>,
        groups: GroupCoordinator,
    }

    fn fixture(partitions: u32, assignor: AssignorKind) -> Fixture {
        fixture_with(partitions, GroupConfig::default().assignor(assignor))
    }

    fn fixture_with(partitions: u32, config: GroupConfig) -> Fixture {
        let clock = Arc::new(ManualClock::new());
        let config = config.session_timeout(SESSION).rebalance_timeout(REBALANCE);
        let groups =
            GroupCoordinator::with_clock(partitions, config, clock.clone()).expect("valid config");
        Fixture { clock, groups }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Phase {
        Joining,
        Stable,
        Fenced,
    }

    /// A member that follows the protocol the way a consumer does.
    #[derive(Debug, Clone)]
    struct Client {
        member_id: Option<String>,
        instance: Option<String>,
        generation: u32,
        held: Vec<u32>,
        phase: Phase,
        cooperative: bool,
    }

    impl Client {
        fn new(cooperative: bool) -> Client {
            Client {
                member_id: None,
                instance: None,
                generation: 0,
                held: Vec::new(),
                phase: Phase::Joining,
                cooperative,
            }
        }

        fn with_instance(cooperative: bool, instance: &str) -> Client {
            Client {
                instance: Some(instance.to_owned()),
                ..Client::new(cooperative)
            }
        }

        fn id(&self) -> &str {
            self.member_id.as_deref().unwrap_or("")
        }
    }

    impl Fixture {
        fn advance(&self, by: Duration) {
            self.clock.advance(by);
        }

        fn join_request(&self, c: &Client) -> JoinRequest {
            JoinRequest {
                group: GROUP.to_owned(),
                member_id: c.member_id.clone(),
                group_instance_id: c.instance.clone(),
                client_id: String::new(),
                assignor: None,
            }
        }

        fn heartbeat(&self, c: &Client) -> Result<HeartbeatResponse> {
            self.groups.heartbeat(&HeartbeatRequest {
                group: GROUP.to_owned(),
                member_id: c.id().to_owned(),
                generation: c.generation,
            })
        }

        fn commit(&self, c: &Client) -> Result<()> {
            self.groups.commit_allowed(GROUP, c.id(), c.generation)
        }

        fn describe(&self) -> GroupDescription {
            self.groups.describe(GROUP).expect("group exists")
        }

        /// One call of the client's poll loop.
        fn step(&self, c: &mut Client) {
            let result = match c.phase {
                Phase::Fenced => return,
                Phase::Joining => self.try_join(c),
                Phase::Stable => match self.heartbeat(c) {
                    Ok(HeartbeatResponse::Stable) => Ok(()),
                    Ok(HeartbeatResponse::RebalanceInProgress) => {
                        if !c.cooperative {
                            c.held.clear();
                        }
                        c.phase = Phase::Joining;
                        self.try_join(c)
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {}
                Err(Error::UnknownMember { .. }) => {
                    c.member_id = None;
                    c.held.clear();
                    c.generation = 0;
                    c.phase = Phase::Joining;
                }
                Err(Error::IllegalGeneration { .. } | Error::RebalanceInProgress { .. }) => {
                    if !c.cooperative {
                        c.held.clear();
                    }
                    c.phase = Phase::Joining;
                }
                Err(Error::FencedInstanceId { .. }) => {
                    c.held.clear();
                    c.phase = Phase::Fenced;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }

        fn try_join(&self, c: &mut Client) -> Result<()> {
            let joined = self.groups.join(&self.join_request(c))?;
            c.member_id = Some(joined.member_id.clone());
            if let JoinStatus::Joined { generation, .. } = joined.status {
                let sync = self.groups.sync(&SyncRequest {
                    group: GROUP.to_owned(),
                    member_id: joined.member_id,
                    generation,
                })?;
                for p in &sync.revoked {
                    assert!(!sync.assignment.contains(p));
                }
                c.generation = generation;
                c.held = sync.assignment;
                c.phase = Phase::Stable;
            }
            Ok(())
        }

        /// Polls every client until the group is stable and each one holds
        /// its assignment in the current generation.
        fn run(&self, clients: &mut [&mut Client]) {
            for _ in 0..20 {
                for c in clients.iter_mut() {
                    self.step(c);
                }
                let d = self.describe();
                let members: BTreeSet<&str> =
                    d.members.iter().map(|m| m.member_id.as_str()).collect();
                // A fenced client has stopped; one replaced by a newer
                // incarnation learns it at its next request.
                let done = d.state == GroupState::Stable
                    && clients
                        .iter()
                        .filter(|c| c.phase != Phase::Fenced)
                        .all(|c| {
                            c.phase == Phase::Stable
                                && c.generation == d.generation
                                && members.contains(c.id())
                        });
                if done {
                    return;
                }
            }
            panic!("group did not stabilise: {:?}", self.describe());
        }
    }

    fn all_held(clients: &[&Client]) -> Vec<u32> {
        let mut all: Vec<u32> = clients
            .iter()
            .flat_map(|c| c.held.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn lone_member_gets_every_partition_and_generation_one() {
        let f = fixture(4, AssignorKind::Range);
        let mut a = Client::new(false);
        f.run(&mut [&mut a]);
        assert_eq!(a.generation, 1);
        assert_eq!(a.held, vec![0, 1, 2, 3]);
        assert!(f.commit(&a).is_ok());
        let d = f.describe();
        assert_eq!(d.state, GroupState::Stable);
        assert_eq!(d.leader.as_deref(), Some(a.id()));
    }

    #[test]
    fn generation_numbers_increase_with_each_rebalance() {
        let f = fixture(6, AssignorKind::RoundRobin);
        let mut a = Client::new(false);
        f.run(&mut [&mut a]);
        let mut seen = vec![a.generation];
        let mut b = Client::new(false);
        f.run(&mut [&mut a, &mut b]);
        seen.push(a.generation);
        let mut c = Client::new(false);
        f.run(&mut [&mut a, &mut b, &mut c]);
        seen.push(c.generation);
        f.groups
            .leave(&LeaveRequest {
                group: GROUP.to_owned(),
                member_id: b.id().to_owned(),
            })
            .expect("leave");
        f.run(&mut [&mut a, &mut c]);
        seen.push(a.generation);
        assert_eq!(seen, vec![1, 2, 3, 4]);
        assert_eq!(all_held(&[&a, &c]), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn dead_member_loses_its_partitions_after_the_session_timeout() {
        let f = fixture(6, AssignorKind::Range);
        let (mut a, mut b, mut c) = (Client::new(false), Client::new(false), Client::new(false));
        f.run(&mut [&mut a, &mut b, &mut c]);
        assert_eq!(a.held, vec![0, 1]);
        let generation = a.generation;

        // `a` stops heartbeating; the others keep going.
        f.advance(Duration::from_secs(5));
        f.run(&mut [&mut b, &mut c]);
        f.advance(Duration::from_secs(5));
        // Exactly at the session timeout `a` is still a member.
        assert_eq!(
            f.heartbeat(&b).expect("heartbeat"),
            HeartbeatResponse::Stable
        );
        assert_eq!(f.describe().members.len(), 3);
        f.advance(Duration::from_millis(1));
        assert_eq!(
            f.heartbeat(&b).expect("heartbeat"),
            HeartbeatResponse::RebalanceInProgress
        );
        assert_eq!(f.describe().members.len(), 2);

        f.run(&mut [&mut b, &mut c]);
        assert_eq!(b.generation, generation + 1);
        assert_eq!(all_held(&[&b, &c]), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!((b.held.len(), c.held.len()), (3, 3));

        // The dead member's late requests are refused.
        assert!(matches!(f.commit(&a), Err(Error::UnknownMember { .. })));
        assert!(matches!(f.heartbeat(&a), Err(Error::UnknownMember { .. })));
    }

    #[test]
    fn check_timeouts_removes_dead_members_without_other_requests() {
        let f = fixture(2, AssignorKind::Range);
        let (mut a, mut b) = (Client::new(false), Client::new(false));
        f.run(&mut [&mut a, &mut b]);
        f.advance(SESSION + Duration::from_secs(1));
        assert_eq!(f.groups.check_timeouts(), 2);
        let d = f.describe();
        assert_eq!(d.state, GroupState::Empty);
        assert_eq!(d.generation, 3);
    }

    #[test]
    fn zombie_commit_with_an_old_generation_is_refused() {
        let f = fixture(4, AssignorKind::Range);
        let (mut a, mut b) = (Client::new(false), Client::new(false));
        f.run(&mut [&mut a, &mut b]);
        let zombie = a.clone();
        assert!(f.commit(&zombie).is_ok());

        let mut c = Client::new(false);
        f.run(&mut [&mut a, &mut b, &mut c]);
        assert_eq!(a.generation, zombie.generation + 1);

        // A thread of `a` still working on the old assignment commits late.
        match f.commit(&zombie) {
            Err(Error::IllegalGeneration {
                generation,
                current,
                member_id,
                ..
            }) => {
                assert_eq!((generation, current), (zombie.generation, a.generation));
                assert_eq!(member_id, a.id());
            }
            other => panic!("expected IllegalGeneration, got {other:?}"),
        }
        assert!(f.commit(&a).is_ok());
    }

    /// One-shot callbacks at the two points where a commit and a rebalance
    /// can interleave.
    #[derive(Default)]
    pub(super) struct Hooks {
        /// Runs in `commit` between the check and the write.
        commit_checked: Mutex<Option<Box<dyn FnOnce() + Send>>>,
        /// Runs when a request finds the state locked and is about to wait.
        contended: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Hooks {
        pub(super) fn commit_checked(&self) {
            let hook = self.commit_checked.lock().take();
            if let Some(hook) = hook {
                hook();
            }
        }

        pub(super) fn contended(&self) {
            let hook = self.contended.lock().take();
            if let Some(hook) = hook {
                hook();
            }
        }
    }

    /// What the rebalancing thread reached: finished, or found the
    /// coordinator locked and waits for it.
    #[derive(Default)]
    struct Progress {
        flags: std::sync::Mutex<(bool, bool)>,
        changed: std::sync::Condvar,
    }

    impl Progress {
        fn set(&self, finished: bool) {
            let mut flags = self.flags.lock().expect("flags");
            if finished {
                flags.0 = true;
            } else {
                flags.1 = true;
            }
            self.changed.notify_all();
        }

        fn wait_finished_or_waiting(&self) {
            let flags = self.flags.lock().expect("flags");
            let _flags = self
                .changed
                .wait_while(flags, |(finished, waiting)| !*finished && !*waiting);
        }

        fn get(&self) -> (bool, bool) {
            *self.flags.lock().expect("flags")
        }
    }

    /// A new member joins; the old one never rejoins and its session runs
    /// out, so the rebalance completes without it; the new owner of every
    /// partition then commits 100 for partition 0.
    fn take_over_and_commit(g: &Fixture, store: &OffsetStore) {
        let mut owner = Client::new(false);
        g.try_join(&mut owner).expect("join starts a rebalance");
        for _ in 0..10 {
            if owner.phase == Phase::Stable {
                break;
            }
            g.advance(SESSION / 2);
            g.try_join(&mut owner).expect("rejoin");
        }
        assert_eq!((owner.generation, owner.held.len()), (2, 4));
        let offsets = [(0, OffsetAndMetadata::new(100))];
        g.groups
            .commit(store, GROUP, owner.id(), owner.generation, &offsets)
            .expect("the new owner commits");
    }

    /// A member's commit was checked while it was still in generation 1;
    /// before it writes, another thread runs a rebalance that removes it and
    /// the new owner commits. The stalled write must not land after that:
    /// the rebalance waits for it, so the new owner's commit is the one that
    /// stays. (Before the check and the write were one step, the rebalance
    /// and the new commit ran in the gap and the zombie's offset won.)
    #[test]
    fn rebalance_cannot_complete_between_a_commit_check_and_its_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::Config::default().partitions(4);
        let log = crate::Log::open(dir.path(), config).expect("open log");
        let store = OffsetStore::open(&log).expect("open store");
        let f = fixture(4, AssignorKind::Range);
        let mut zombie = Client::new(false);
        f.run(&mut [&mut zombie]);
        assert_eq!((zombie.generation, zombie.held.len()), (1, 4));

        let progress = Arc::new(Progress::default());
        let waiting = progress.clone();
        *f.groups.inner.hooks.contended.lock() = Some(Box::new(move || waiting.set(false)));
        let rebalancer = Arc::new(Mutex::new(None));
        let (spawned, progress_in_hook) = (rebalancer.clone(), progress.clone());
        let g = Fixture {
            clock: f.clock.clone(),
            groups: f.groups.clone(),
        };
        let store_in_hook = store.clone();
        *f.groups.inner.hooks.commit_checked.lock() = Some(Box::new(move || {
            let progress = progress_in_hook.clone();
            *spawned.lock() = Some(std::thread::spawn(move || {
                take_over_and_commit(&g, &store_in_hook);
                progress.set(true);
            }));
            // Let the rebalance run to its end, unless it has to wait for
            // this commit.
            progress_in_hook.wait_finished_or_waiting();
        }));

        let stale = [(0, OffsetAndMetadata::new(5))];
        let result = f
            .groups
            .commit(&store, GROUP, zombie.id(), zombie.generation, &stale);
        let thread = rebalancer.lock().take().expect("spawned");
        thread.join().expect("rebalancer");
        assert!(result.is_ok(), "checked before the rebalance: {result:?}");
        assert_eq!(
            store.committed(GROUP, 0).map(|c| c.offset),
            Some(100),
            "the zombie's offset landed after the new owner's"
        );
        assert_eq!(
            progress.get(),
            (true, true),
            "the rebalance must have waited for the commit in flight"
        );
        // Now the zombie is out of the group.
        let late = [(0, OffsetAndMetadata::new(6))];
        assert!(matches!(
            f.groups
                .commit(&store, GROUP, zombie.id(), zombie.generation, &late),
            Err(Error::UnknownMember { .. })
        ));
        assert_eq!(store.committed(GROUP, 0).map(|c| c.offset), Some(100));
    }

    #[test]
    fn member_paused_past_its_session_is_fenced_on_commit() {
        let f = fixture(4, AssignorKind::RoundRobin);
        let (mut a, mut b) = (Client::new(false), Client::new(false));
        f.run(&mut [&mut a, &mut b]);
        // `a` pauses (a long garbage collection) past its session timeout;
        // nobody else makes a request meanwhile. Its first request after
        // the pause is a commit: refused.
        f.advance(SESSION * 2);
        assert!(matches!(f.commit(&a), Err(Error::UnknownMember { .. })));
        // `b` was removed too: it did not heartbeat either.
        assert!(matches!(f.heartbeat(&b), Err(Error::UnknownMember { .. })));
    }

    #[test]
    fn leave_triggers_a_rebalance() {
        let f = fixture(4, AssignorKind::Range);
        let (mut a, mut b) = (Client::new(false), Client::new(false));
        f.run(&mut [&mut a, &mut b]);
        assert_eq!((a.held.clone(), b.held.clone()), (vec![0, 1], vec![2, 3]));
        f.groups
            .leave(&LeaveRequest {
                group: GROUP.to_owned(),
                member_id: a.id().to_owned(),
            })
            .expect("leave");
        assert_eq!(f.describe().state, GroupState::PreparingRebalance);
        assert_eq!(
            f.heartbeat(&b).expect("heartbeat"),
            HeartbeatResponse::RebalanceInProgress
        );
        f.run(&mut [&mut b]);
        assert_eq!(b.held, vec![0, 1, 2, 3]);
        assert!(matches!(f.commit(&a), Err(Error::UnknownMember { .. })));
        let last = LeaveRequest {
            group: GROUP.to_owned(),
            member_id: b.id().to_owned(),
        };
        f.groups.leave(&last).expect("leave");
        assert_eq!(f.describe().state, GroupState::Empty);
        assert!(matches!(
            f.groups.leave(&last),
            Err(Error::UnknownMember { .. })
        ));
    }

    #[test]
    fn heartbeat_during_a_rebalance_returns_rebalance_in_progress() {
        let f = fixture(4, AssignorKind::CooperativeSticky);
        let mut a = Client::new(true);
        f.run(&mut [&mut a]);
        let mut b = Client::new(true);
        f.step(&mut b);
        assert_eq!(b.phase, Phase::Joining);
        assert_eq!(
            f.heartbeat(&a).expect("heartbeat"),
            HeartbeatResponse::RebalanceInProgress
        );
        // A member that already rejoined hears the same until it forms.
        assert_eq!(
            f.heartbeat(&b).expect("heartbeat"),
            HeartbeatResponse::RebalanceInProgress
        );
        // Commits of the current generation stay allowed while preparing.
        assert!(f.commit(&a).is_ok());
        // A sync for the old generation is told to rejoin.
        let sync = f.groups.sync(&SyncRequest {
            group: GROUP.to_owned(),
            member_id: a.id().to_owned(),
            generation: a.generation,
        });
        assert!(matches!(sync, Err(Error::RebalanceInProgress { .. })));
        f.run(&mut [&mut a, &mut b]);
        assert_eq!(
            f.heartbeat(&a).expect("heartbeat"),
            HeartbeatResponse::Stable
        );
    }

    #[test]
    fn commit_before_fetching_the_new_assignment_is_refused() {
        let f = fixture(4, AssignorKind::Range);
        let mut a = Client::new(false);
        f.run(&mut [&mut a]);
        let joined = f.groups.join(&JoinRequest::new(GROUP)).expect("join");
        assert_eq!(joined.status, JoinStatus::Pending);
        let rejoined = f.groups.join(&f.join_request(&a)).expect("rejoin");
        let JoinStatus::Joined { generation, .. } = rejoined.status else {
            panic!("expected the generation to form: {rejoined:?}");
        };
        assert_eq!(generation, 2);
        assert_eq!(f.describe().state, GroupState::CompletingRebalance);
        let result = f.groups.commit_allowed(GROUP, a.id(), generation);
        assert!(matches!(result, Err(Error::RebalanceInProgress { .. })));
        let old = f.groups.commit_allowed(GROUP, a.id(), a.generation);
        assert!(matches!(old, Err(Error::IllegalGeneration { .. })));
        // A heartbeat with the old generation says the same.
        assert!(matches!(
            f.heartbeat(&a),
            Err(Error::IllegalGeneration { .. })
        ));
    }

    fn static_restart_keeps_partitions(assignor: AssignorKind) {
        let f = fixture(6, assignor);
        let cooperative = assignor.is_cooperative();
        let mut a = Client::with_instance(cooperative, "instance-a");
        let mut b = Client::with_instance(cooperative, "instance-b");
        let mut c = Client::new(cooperative);
        f.run(&mut [&mut a, &mut b, &mut c]);
        let generation = a.generation;
        let before = (a.held.clone(), b.held.clone(), c.held.clone());
        assert!(!a.held.is_empty());

        // `a` restarts: it stops without leaving and comes back within its
        // session timeout, knowing only its instance id.
        let old = a.clone();
        f.advance(SESSION - Duration::from_secs(1));
        f.run(&mut [&mut b, &mut c]);
        let mut restarted = Client::with_instance(cooperative, "instance-a");
        f.step(&mut restarted);
        assert_eq!(
            restarted.phase,
            Phase::Stable,
            "rejoined without a rebalance"
        );
        assert_eq!(restarted.generation, generation);
        assert_eq!(restarted.held, before.0);
        assert_ne!(restarted.id(), old.id());

        // Nobody else noticed.
        assert_eq!(
            f.heartbeat(&b).expect("heartbeat"),
            HeartbeatResponse::Stable
        );
        assert_eq!(
            f.heartbeat(&c).expect("heartbeat"),
            HeartbeatResponse::Stable
        );
        f.run(&mut [&mut restarted, &mut b, &mut c]);
        assert_eq!(f.describe().generation, generation);
        assert_eq!((b.held.clone(), c.held.clone()), (before.1, before.2));

        // The previous incarnation is fenced.
        assert!(matches!(
            f.commit(&old),
            Err(Error::FencedInstanceId { .. })
        ));
        assert!(matches!(
            f.heartbeat(&old),
            Err(Error::FencedInstanceId { .. })
        ));
        let rejoin = f.groups.join(&f.join_request(&old));
        assert!(matches!(rejoin, Err(Error::FencedInstanceId { .. })));
        assert!(f.commit(&restarted).is_ok());
    }

    #[test]
    fn static_member_restart_keeps_its_partitions_range() {
        static_restart_keeps_partitions(AssignorKind::Range);
    }

    #[test]
    fn static_member_restart_keeps_its_partitions_round_robin() {
        static_restart_keeps_partitions(AssignorKind::RoundRobin);
    }

    #[test]
    fn static_member_restart_keeps_its_partitions_cooperative_sticky() {
        static_restart_keeps_partitions(AssignorKind::CooperativeSticky);
    }

    #[test]
    fn static_member_back_after_its_session_gets_the_same_range_partitions() {
        let f = fixture(6, AssignorKind::Range);
        let mut a = Client::with_instance(false, "instance-a");
        let mut b = Client::with_instance(false, "instance-b");
        f.run(&mut [&mut a, &mut b]);
        let (held_a, generation) = (a.held.clone(), a.generation);
        f.advance(Duration::from_secs(6));
        f.run(&mut [&mut b]);
        f.advance(Duration::from_secs(5));
        f.run(&mut [&mut b]);
        assert_eq!(b.held, vec![0, 1, 2, 3, 4, 5]);
        let mut back = Client::with_instance(false, "instance-a");
        f.run(&mut [&mut back, &mut b]);
        assert_eq!(back.generation, generation + 2);
        // Range orders static members by instance id, not member id.
        assert_eq!(back.held, held_a);
    }

    #[test]
    fn cooperative_rebalance_revokes_before_it_reassigns() {
        let f = fixture(6, AssignorKind::CooperativeSticky);
        let mut a = Client::new(true);
        f.run(&mut [&mut a]);
        assert_eq!(a.held, vec![0, 1, 2, 3, 4, 5]);
        let mut b = Client::new(true);
        f.step(&mut b);

        // First rebalance: `a` keeps its partitions while it rejoins; the
        // generation it forms takes 3..6 from `a` but gives them to nobody.
        let joined = f.groups.join(&f.join_request(&a)).expect("rejoin");
        let JoinStatus::Joined { generation, .. } = joined.status else {
            panic!("expected the generation to form: {joined:?}");
        };
        let sync_b = f
            .groups
            .sync(&SyncRequest {
                group: GROUP.to_owned(),
                member_id: b.id().to_owned(),
                generation,
            })
            .expect("sync b");
        assert!(sync_b.assignment.is_empty());
        let sync_a = f
            .groups
            .sync(&SyncRequest {
                group: GROUP.to_owned(),
                member_id: a.id().to_owned(),
                generation,
            })
            .expect("sync a");
        assert_eq!(sync_a.assignment, vec![0, 1, 2]);
        assert_eq!(sync_a.revoked, vec![3, 4, 5]);

        // Once `a` has its revocation, a follow-up rebalance hands them over.
        assert_eq!(f.describe().state, GroupState::PreparingRebalance);
        a.generation = generation;
        a.held = sync_a.assignment;
        a.phase = Phase::Stable;
        b.generation = generation;
        b.phase = Phase::Stable;
        f.run(&mut [&mut a, &mut b]);
        assert_eq!(a.generation, generation + 1);
        assert_eq!(a.held, vec![0, 1, 2]);
        assert_eq!(b.held, vec![3, 4, 5]);
    }

    #[test]
    fn member_that_does_not_rejoin_is_removed_at_the_rebalance_timeout() {
        let f = fixture(4, AssignorKind::Range);
        let (mut a, mut b) = (Client::new(false), Client::new(false));
        f.run(&mut [&mut a, &mut b]);
        let mut c = Client::new(false);
        f.step(&mut c);
        f.step(&mut a);
        // `b` keeps heartbeating but never rejoins.
        for _ in 0..3 {
            f.advance(Duration::from_secs(8));
            assert_eq!(
                f.heartbeat(&b).expect("heartbeat"),
                HeartbeatResponse::RebalanceInProgress
            );
            f.step(&mut a);
            f.step(&mut c);
        }
        // 32 s > 30 s: the rebalance formed without `b`.
        f.advance(Duration::from_secs(8));
        assert!(matches!(f.heartbeat(&b), Err(Error::UnknownMember { .. })));
        f.run(&mut [&mut a, &mut c]);
        assert_eq!(all_held(&[&a, &c]), vec![0, 1, 2, 3]);
    }

    #[test]
    fn initial_rebalance_delay_forms_one_generation_for_members_starting_together() {
        let config = GroupConfig::default().initial_rebalance_delay(Duration::from_secs(3));
        let f = fixture_with(6, config);
        let mut clients: Vec<Client> = (0..3).map(|_| Client::new(false)).collect();
        for c in &mut clients {
            f.step(c);
            assert_eq!(c.phase, Phase::Joining);
            f.advance(Duration::from_secs(1));
        }
        for c in &mut clients {
            f.step(c);
        }
        assert!(
            clients
                .iter()
                .all(|c| c.phase == Phase::Stable && c.generation == 1)
        );
        let held: Vec<&Client> = clients.iter().collect();
        assert_eq!(all_held(&held), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_group_keeps_its_assignor_while_it_has_members() {
        let f = fixture(2, AssignorKind::Range);
        let first = f
            .groups
            .join(&JoinRequest::new(GROUP).assignor(AssignorKind::CooperativeSticky))
            .expect("join");
        assert_eq!(f.describe().assignor, AssignorKind::CooperativeSticky);
        let other = f
            .groups
            .join(&JoinRequest::new(GROUP).assignor(AssignorKind::RoundRobin));
        match other {
            Err(Error::InconsistentGroupProtocol {
                current, requested, ..
            }) => assert_eq!((current, requested), ("cooperative-sticky", "roundrobin")),
            other => panic!("expected InconsistentGroupProtocol, got {other:?}"),
        }
        // Accepting the group's assignor is fine.
        let second = f.groups.join(&JoinRequest::new(GROUP)).expect("join");
        // Once the group is empty its next first member chooses again.
        for member_id in [first.member_id, second.member_id] {
            let leave = LeaveRequest {
                group: GROUP.to_owned(),
                member_id,
            };
            f.groups.leave(&leave).expect("leave");
        }
        assert_eq!(f.describe().state, GroupState::Empty);
        f.groups
            .join(&JoinRequest::new(GROUP).assignor(AssignorKind::RoundRobin))
            .expect("join an empty group");
        assert_eq!(f.describe().assignor, AssignorKind::RoundRobin);
    }

    #[test]
    fn joins_beyond_the_maximum_group_size_are_refused() {
        let f = fixture_with(2, GroupConfig::default().max_group_size(2));
        assert!(f.groups.join(&JoinRequest::new(GROUP)).is_ok());
        assert!(f.groups.join(&JoinRequest::new(GROUP)).is_ok());
        let third = f.groups.join(&JoinRequest::new(GROUP));
        assert!(matches!(
            third,
            Err(Error::GroupMaxSizeReached { max: 2, .. })
        ));
        // Another group is not affected.
        assert!(f.groups.join(&JoinRequest::new("other")).is_ok());
    }

    #[test]
    fn requests_for_unknown_groups_and_members_are_refused() {
        let f = fixture(2, AssignorKind::Range);
        let ghost = Client {
            member_id: Some("ghost".to_owned()),
            generation: 1,
            ..Client::new(false)
        };
        assert!(matches!(
            f.heartbeat(&ghost),
            Err(Error::UnknownMember { .. })
        ));
        assert!(matches!(f.commit(&ghost), Err(Error::UnknownMember { .. })));
        assert!(f.groups.describe(GROUP).is_none());
        let join = f.groups.join(&f.join_request(&ghost));
        assert!(matches!(join, Err(Error::UnknownMember { .. })));
        let mut a = Client::new(false);
        f.run(&mut [&mut a]);
        assert!(matches!(
            f.heartbeat(&ghost),
            Err(Error::UnknownMember { .. })
        ));
        let wrong_generation = Client {
            generation: a.generation + 5,
            ..a.clone()
        };
        assert!(matches!(
            f.heartbeat(&wrong_generation),
            Err(Error::IllegalGeneration { .. })
        ));
        let sync = f.groups.sync(&SyncRequest {
            group: GROUP.to_owned(),
            member_id: a.id().to_owned(),
            generation: 0,
        });
        assert!(matches!(sync, Err(Error::IllegalGeneration { .. })));
    }

    #[test]
    fn a_taken_instance_id_cannot_be_claimed_by_another_member_id() {
        let f = fixture(2, AssignorKind::Range);
        let mut a = Client::with_instance(false, "instance-a");
        let mut b = Client::new(false);
        f.run(&mut [&mut a, &mut b]);
        let claim = JoinRequest::new(GROUP)
            .member_id(b.id())
            .group_instance_id("instance-a");
        assert!(matches!(
            f.groups.join(&claim),
            Err(Error::FencedInstanceId { .. })
        ));
    }

    #[test]
    fn invalid_configs_are_refused_naming_the_field() {
        let cases = [
            (
                GroupConfig::default().session_timeout(Duration::ZERO),
                "session_timeout",
            ),
            (
                GroupConfig::default().rebalance_timeout(Duration::ZERO),
                "rebalance_timeout",
            ),
            (GroupConfig::default().max_group_size(0), "max_group_size"),
        ];
        for (config, name) in cases {
            match GroupCoordinator::new(4, config) {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, name),
                other => panic!("expected InvalidConfig for {name}, got {other:?}"),
            }
        }
        assert!(GroupCoordinator::new(0, GroupConfig::default()).is_ok());
    }

    #[test]
    fn huge_timeouts_do_not_overflow() {
        let config = GroupConfig::default()
            .initial_rebalance_delay(Duration::MAX)
            .assignor(AssignorKind::Range);
        let clock = Arc::new(ManualClock::new());
        let config = config
            .session_timeout(Duration::MAX)
            .rebalance_timeout(Duration::MAX);
        let groups = GroupCoordinator::with_clock(3, config, clock.clone()).expect("config");
        let joined = groups.join(&JoinRequest::new(GROUP)).expect("join");
        assert!(matches!(joined.status, JoinStatus::Joined { .. }));
        clock.advance(Duration::MAX);
        clock.advance(Duration::from_secs(1_000_000));
        assert_eq!(groups.check_timeouts(), 0);
    }

    // ---- a randomized model of members following the protocol ----

    /// SplitMix64.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if n == 0 { 0 } else { z % n }
        }
    }

    fn model_runs() -> u64 {
        std::env::var("GROUP_MODEL_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60)
    }

    /// At any moment, for each partition, at most one current member of the
    /// group holds it: a partition reaches its new owner only after its old
    /// owner gave it up or was removed.
    fn assert_single_holder(f: &Fixture, clients: &[Client]) {
        let members: BTreeSet<String> = f
            .groups
            .describe(GROUP)
            .map(|d| d.members.into_iter().map(|m| m.member_id).collect())
            .unwrap_or_default();
        let mut holders: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for c in clients.iter().filter(|c| members.contains(c.id())) {
            for &p in &c.held {
                holders.entry(p).or_default().push(c.id().to_owned());
            }
        }
        for (p, who) in holders {
            assert!(who.len() <= 1, "partition {p} held by members {who:?}");
        }
    }

    /// At any moment, for each partition, at most one member that holds it
    /// may commit: the fencing guarantee, which also covers removed members
    /// that still believe they hold partitions.
    fn assert_single_committer(f: &Fixture, clients: &[Client], partitions: u32) {
        let mut committers: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for c in clients {
            if c.member_id.is_none() || f.commit(c).is_err() {
                continue;
            }
            for &p in &c.held {
                assert!(p < partitions);
                committers.entry(p).or_default().push(c.id().to_owned());
            }
        }
        for (p, who) in committers {
            assert!(who.len() <= 1, "partition {p} committable by {who:?}");
        }
    }

    fn run_model(assignor: AssignorKind, seed: u64) {
        let mut rng = Rng(seed);
        let partitions = u32::try_from(rng.below(9)).unwrap_or(0) + 1;
        let f = fixture(partitions, assignor);
        let cooperative = assignor.is_cooperative();
        let mut clients: Vec<Client> = Vec::new();
        // Clients that stopped calling (crashed or paused).
        let mut paused: BTreeSet<usize> = BTreeSet::new();
        for _ in 0..120 {
            match rng.below(10) {
                0 if clients.len() < 6 => {
                    let c = if rng.below(2) == 0 {
                        let instance = format!("i{}", rng.below(3));
                        let taken = clients.iter().enumerate().any(|(i, c)| {
                            !paused.contains(&i)
                                && c.phase != Phase::Fenced
                                && c.instance.as_deref() == Some(instance.as_str())
                        });
                        if taken {
                            continue;
                        }
                        Client::with_instance(cooperative, &instance)
                    } else {
                        Client::new(cooperative)
                    };
                    clients.push(c);
                }
                1 if !clients.is_empty() => {
                    let i = usize::try_from(rng.below(clients.len() as u64)).unwrap_or(0);
                    if !paused.insert(i) {
                        paused.remove(&i);
                    }
                }
                2 if !clients.is_empty() => {
                    let i = usize::try_from(rng.below(clients.len() as u64)).unwrap_or(0);
                    if let Some(c) = clients.get_mut(i)
                        && c.member_id.is_some()
                        && c.phase != Phase::Fenced
                        && !paused.contains(&i)
                    {
                        let request = LeaveRequest {
                            group: GROUP.to_owned(),
                            member_id: c.id().to_owned(),
                        };
                        if f.groups.leave(&request).is_ok() {
                            *c = Client::new(cooperative);
                            paused.insert(i);
                        }
                    }
                }
                3 => f.advance(Duration::from_secs(rng.below(12))),
                _ => {
                    for (i, c) in clients.iter_mut().enumerate() {
                        if !paused.contains(&i) {
                            f.step(c);
                        }
                    }
                }
            }
            assert_single_holder(&f, &clients);
            assert_single_committer(&f, &clients, partitions);
        }

        // Liveness: once the paused clients are gone for good and the others
        // keep polling, the group settles with every partition held once.
        f.advance(SESSION + Duration::from_secs(1));
        let mut live: Vec<Client> = clients
            .into_iter()
            .enumerate()
            .filter(|(i, c)| !paused.contains(i) && c.phase != Phase::Fenced)
            .map(|(_, c)| c)
            .collect();
        // Every live client may turn out to be a fenced incarnation; a new
        // one makes sure the group has a member to settle with.
        live.push(Client::new(cooperative));
        let mut refs: Vec<&mut Client> = live.iter_mut().collect();
        f.run(&mut refs);
        live.retain(|c| c.phase != Phase::Fenced);
        let held: Vec<&Client> = live.iter().collect();
        let expected: Vec<u32> = (0..partitions).collect();
        assert_eq!(all_held(&held), expected, "seed {seed}");
        let sizes: Vec<usize> = live.iter().map(|c| c.held.len()).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        if let (Some(min), Some(max)) = (min, max) {
            assert!(max - min <= 1, "unbalanced {sizes:?} seed {seed}");
        }
    }

    #[test]
    fn random_members_never_share_a_partition() {
        for seed in 0..model_runs() {
            for assignor in [
                AssignorKind::Range,
                AssignorKind::RoundRobin,
                AssignorKind::CooperativeSticky,
            ] {
                run_model(assignor, seed);
            }
        }
    }
}
