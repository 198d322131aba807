//! A deterministic cluster simulation: replicas on simulated disks that
//! lose unsynced data when they crash, a simulated network that drops,
//! delays, reorders and partitions messages, an in-memory controller that
//! learns liveness from heartbeats, idempotent `Acks::All` producers and
//! consumers reading committed records. Everything runs in one thread on
//! virtual time, so a seed replays exactly.
//!
//! A checker in the spirit of Jepsen's Kafka checker then looks for lost
//! acknowledged writes, duplicates, inconsistent offsets between replicas,
//! non-monotonic consumption and records a consumer saw that later
//! disappeared.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::record::{Appended, Record};
use crate::storage::sim::SimStorage;
use crate::{Config, Durability, Log};

use super::super::{
    AlterIsr, Controller, ControllerConfig, Fetch, FetchResponse, InMemoryController, LeaderEpoch,
    PartitionState, ProduceRequest, ProducerSequence, Replica, ReplicaId, ReplicationConfig,
};

const DIR: &str = "/replica";
/// A follower sends its next fetch this long after the last answer; one
/// unanswered for `FETCH_TIMEOUT` is sent again.
const FETCH_TIMEOUT: u64 = 60;
const HEARTBEAT_EVERY: u64 = 30;
const SESSION_TIMEOUT: u64 = 150;
const STATE_BROADCAST_EVERY: u64 = 100;
const PRODUCE_TIMEOUT: u64 = 200;
const CLIENT_RETRY: u64 = 250;
const TICK: u64 = 10;

/// splitmix64.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum End {
    Node(ReplicaId),
    Controller,
    Client(usize),
}

#[derive(Debug)]
enum Msg {
    Fetch(Fetch),
    FetchResponse(FetchResponse),
    FetchFailed,
    Produce(ProduceRequest),
    ProduceResult {
        sequence: i32,
        result: crate::Result<Appended>,
    },
    AlterIsr(AlterIsr),
    State(PartitionState),
    Heartbeat {
        incarnation: u64,
    },
}

struct Envelope {
    from: End,
    to: End,
    msg: Msg,
}

struct Node {
    id: ReplicaId,
    disk: SimStorage,
    log: Option<Log>,
    replica: Option<Replica>,
    incarnation: u64,
    fetch_sent: Option<u64>,
    pending: Vec<PendingAck>,
    last_heartbeat: u64,
    /// Committed records below this were checked against the history.
    verified: u64,
}

struct PendingAck {
    client: usize,
    sequence: i32,
    appended: Appended,
    epoch: LeaderEpoch,
    deadline: u64,
}

struct Client {
    producer_id: i64,
    next_sequence: i32,
    next_value: u64,
    budget: u64,
    current: Option<Current>,
    leader_guess: Option<ReplicaId>,
    /// Offsets acknowledged per request sequence, to check late answers.
    acked_by_sequence: HashMap<i32, u64>,
}

struct Current {
    request: ProduceRequest,
    values: Vec<String>,
    retry_at: u64,
}

struct Consumer {
    position: u64,
    seen: Vec<(u64, String)>,
}

/// Knobs of one simulated run.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub replicas: u32,
    pub min_insync_replicas: usize,
    pub clients: usize,
    pub batches_per_client: u64,
    pub consumers: usize,
    /// Per mille of messages dropped while faults run.
    pub drop_per_mille: u64,
    /// Largest network delay in ms (delays are uniform from 1).
    pub max_delay: u64,
    /// Random faults (crashes, restarts, partitions) at each tick.
    pub random_faults: bool,
    /// Replicas use `Durability::Interval` and sync every this many ms of
    /// virtual time (the interval itself is too long to pass), so their
    /// synced offsets trail their log ends; `None` is `Durability::Sync`.
    pub sync_every: Option<u64>,
}

impl Setup {
    pub(super) fn random(rng: &mut Rng) -> Setup {
        let replicas = 3 + rng.below(3) as u32;
        Setup {
            replicas,
            min_insync_replicas: 2 + rng.below(u64::from(replicas) - 2) as usize,
            clients: 1 + rng.below(3) as usize,
            batches_per_client: 20 + rng.below(40),
            consumers: 1 + rng.below(2) as usize,
            drop_per_mille: rng.below(80),
            max_delay: 1 + rng.below(25),
            random_faults: true,
            sync_every: (rng.below(2) == 0).then(|| 10 + rng.below(100)),
        }
    }

    pub(super) fn quiet(replicas: u32, min_insync_replicas: usize) -> Setup {
        Setup {
            replicas,
            min_insync_replicas,
            clients: 2,
            batches_per_client: 40,
            consumers: 1,
            drop_per_mille: 0,
            max_delay: 5,
            random_faults: false,
            sync_every: None,
        }
    }
}

pub(super) struct Cluster {
    pub seed: u64,
    setup: Setup,
    rng: Rng,
    now: u64,
    base: Instant,
    sequence: u64,
    net: BTreeMap<(u64, u64), Envelope>,
    /// Endpoints cut off from everyone.
    isolated: BTreeSet<End>,
    /// Links cut in both directions.
    cut_links: BTreeSet<(End, End)>,
    faults_on: bool,
    nodes: Vec<Node>,
    controller: InMemoryController,
    last_seen: HashMap<ReplicaId, (u64, u64)>,
    last_broadcast: u64,
    clients: Vec<Client>,
    consumers: Vec<Consumer>,
    /// Value → offset, for every acknowledged record.
    acked: BTreeMap<String, u64>,
    /// Offset → value of every record seen below some replica's high
    /// watermark.
    committed: BTreeMap<u64, String>,
    violations: Vec<String>,
    pub acks: u64,
    pub crashes: u64,
    pub elections: u64,
}

fn log_config(setup: &Setup) -> Config {
    let durability = match setup.sync_every {
        // The simulation syncs on virtual time; this never fires.
        Some(_) => Durability::Interval(Duration::from_secs(24 * 3600)),
        None => Durability::Sync,
    };
    Config::default()
        .segment_bytes(4096)
        .index_interval_bytes(256)
        .max_index_bytes(1024)
        .durability(durability)
}

fn value_of(record: &crate::record::StoredRecord) -> String {
    record
        .value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

impl Cluster {
    pub(super) fn new(seed: u64, setup: Setup) -> Cluster {
        let ids: Vec<ReplicaId> = (0..setup.replicas).collect();
        let controller = InMemoryController::new(
            1,
            &ids,
            ControllerConfig::default().min_insync_replicas(setup.min_insync_replicas),
        )
        .expect("valid controller");
        let mut cluster = Cluster {
            seed,
            rng: Rng::new(seed),
            now: 0,
            base: Instant::now(),
            sequence: 0,
            net: BTreeMap::new(),
            isolated: BTreeSet::new(),
            cut_links: BTreeSet::new(),
            faults_on: true,
            nodes: Vec::new(),
            last_seen: HashMap::new(),
            last_broadcast: 0,
            clients: Vec::new(),
            consumers: Vec::new(),
            acked: BTreeMap::new(),
            committed: BTreeMap::new(),
            violations: Vec::new(),
            acks: 0,
            crashes: 0,
            elections: 0,
            controller,
            setup: setup.clone(),
        };
        for id in ids {
            let disk = SimStorage::new(seed.wrapping_mul(31).wrapping_add(u64::from(id)));
            cluster.nodes.push(Node {
                id,
                disk,
                log: None,
                replica: None,
                incarnation: 1,
                fetch_sent: None,
                pending: Vec::new(),
                last_heartbeat: 0,
                verified: 0,
            });
            cluster.last_seen.insert(id, (0, 1));
            cluster.start(id as usize);
        }
        for client in 0..setup.clients {
            let producer_id = cluster.controller.allocate_producer_id();
            cluster.clients.push(Client {
                producer_id,
                next_sequence: 0,
                next_value: 0,
                budget: setup.batches_per_client,
                current: None,
                leader_guess: None,
                acked_by_sequence: HashMap::new(),
            });
            let _ = client;
        }
        for _ in 0..setup.consumers {
            cluster.consumers.push(Consumer {
                position: 0,
                seen: Vec::new(),
            });
        }
        let states = cluster.controller.states();
        cluster.broadcast(&states);
        cluster
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 10 {
            self.violations.push(format!("t={}ms: {what}", self.now));
        }
    }

    // ---- network ----

    fn reachable(&self, from: End, to: End) -> bool {
        !self.isolated.contains(&from)
            && !self.isolated.contains(&to)
            && !self.cut_links.contains(&(from, to))
            && !self.cut_links.contains(&(to, from))
    }

    fn send(&mut self, from: End, to: End, msg: Msg) {
        if !self.reachable(from, to) {
            return;
        }
        if self.faults_on && self.rng.per_mille(self.setup.drop_per_mille) {
            return;
        }
        let delay = 1 + self.rng.below(self.setup.max_delay.max(1));
        self.sequence += 1;
        self.net.insert(
            (self.now + delay, self.sequence),
            Envelope { from, to, msg },
        );
    }

    fn broadcast(&mut self, states: &[PartitionState]) {
        for state in states {
            for id in 0..self.setup.replicas {
                self.send(End::Controller, End::Node(id), Msg::State(state.clone()));
            }
        }
    }

    // ---- node lifecycle ----

    fn start(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let opened = Log::open_with_storage(
            Path::new(DIR),
            log_config(&self.setup),
            Arc::new(node.disk.clone()),
        )
        .and_then(|log| {
            let partition = log.partition(0)?;
            let config = ReplicationConfig::default()
                .min_insync_replicas(self.setup.min_insync_replicas)
                .replica_lag_max(Duration::from_millis(100))
                .isr_change_retry(Duration::from_millis(50))
                .high_watermark_checkpoint_interval(Duration::from_millis(100))
                .fetch_max_bytes(2048);
            let replica = Replica::open(node.id, partition, config)?;
            Ok((log, replica))
        });
        match opened {
            Ok((log, replica)) => {
                node.log = Some(log);
                node.replica = Some(replica);
                node.fetch_sent = None;
                node.verified = 0;
            }
            Err(e) => {
                let id = node.id;
                self.violation(format!("replica {id} failed to open: {e}"));
            }
        }
    }

    pub(super) fn crash(&mut self, id: ReplicaId, power_loss: bool) {
        let node = &mut self.nodes[id as usize];
        if node.replica.is_none() {
            return;
        }
        if power_loss {
            node.disk.crash();
        } else {
            node.disk.crash_clean_prefix();
        }
        node.replica = None;
        // Closing on dead handles fails; that is the point.
        drop(node.log.take());
        node.pending.clear();
        self.crashes += 1;
    }

    pub(super) fn restart(&mut self, id: ReplicaId) {
        let index = id as usize;
        if self.nodes[index].replica.is_some() {
            return;
        }
        self.nodes[index].incarnation += 1;
        self.start(index);
    }

    pub(super) fn isolate(&mut self, end: End) {
        self.isolated.insert(end);
    }

    pub(super) fn cut(&mut self, a: End, b: End) {
        self.cut_links.insert((a, b));
    }

    pub(super) fn heal(&mut self) {
        self.isolated.clear();
        self.cut_links.clear();
    }

    pub(super) fn leader(&self) -> Option<ReplicaId> {
        self.controller.state(0).ok().and_then(|s| s.leader)
    }

    pub(super) fn state(&self) -> PartitionState {
        self.controller.state(0).expect("partition 0")
    }

    // ---- the loop ----

    /// Runs `ms` of virtual time.
    pub(super) fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    fn step(&mut self) {
        self.now += 1;
        while let Some(entry) = self.net.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let envelope = entry.remove();
            self.deliver(envelope);
        }
        if self.now.is_multiple_of(TICK) {
            if self.setup.random_faults && self.faults_on {
                self.random_fault();
            }
            self.controller_tick();
            for index in 0..self.nodes.len() {
                self.node_tick(index);
            }
            for client in 0..self.clients.len() {
                self.client_tick(client);
            }
            if self.now.is_multiple_of(2 * TICK) {
                for consumer in 0..self.consumers.len() {
                    self.consumer_tick(consumer);
                }
                self.check_committed();
            }
        }
    }

    fn random_fault(&mut self) {
        let n = self.setup.replicas;
        let r = self.rng.below(1000);
        let id = self.rng.below(u64::from(n)) as ReplicaId;
        match r {
            0..=9 => {
                let power_loss = self.rng.below(2) == 0;
                self.crash(id, power_loss);
            }
            10..=39 => self.restart(id),
            40..=44 => self.isolate(End::Node(id)),
            45..=49 => {
                let other = self.rng.below(u64::from(n)) as ReplicaId;
                if other != id {
                    self.cut(End::Node(id), End::Node(other));
                }
            }
            50..=64 => self.heal(),
            65..=67 => {
                // A power cut of the whole cluster at once.
                for id in 0..n {
                    self.crash(id, true);
                }
            }
            _ => {}
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        let Envelope { from, to, msg } = envelope;
        match to {
            End::Controller => self.controller_receive(from, msg),
            End::Node(id) => self.node_receive(id as usize, from, msg),
            End::Client(client) => self.client_receive(client, msg),
        }
    }

    // ---- controller ----

    fn controller_receive(&mut self, from: End, msg: Msg) {
        let End::Node(id) = from else {
            return;
        };
        match msg {
            Msg::Heartbeat { incarnation } => {
                let known = self.last_seen.get(&id).map(|&(_, i)| i);
                let live = self.controller.live_replicas().contains(&id);
                self.last_seen.insert(id, (self.now, incarnation));
                if !live || known != Some(incarnation) {
                    let changed = self.controller.replica_online(id);
                    self.note_elections(&changed);
                    self.broadcast(&changed);
                }
            }
            Msg::AlterIsr(request) => {
                let state = match self.controller.alter_isr(&request) {
                    Ok(state) => {
                        self.broadcast(std::slice::from_ref(&state));
                        state
                    }
                    Err(Error::ControllerRefused { .. }) => self.state(),
                    Err(e) => {
                        self.violation(format!("alter_isr failed: {e}"));
                        return;
                    }
                };
                self.send(End::Controller, from, Msg::State(state));
            }
            _ => {}
        }
    }

    fn note_elections(&mut self, changed: &[PartitionState]) {
        self.elections += changed.len() as u64;
    }

    fn controller_tick(&mut self) {
        let expired: Vec<ReplicaId> = self
            .controller
            .live_replicas()
            .into_iter()
            .filter(|id| {
                self.last_seen
                    .get(id)
                    .is_none_or(|&(at, _)| self.now.saturating_sub(at) > SESSION_TIMEOUT)
            })
            .collect();
        for id in expired {
            let changed = self.controller.replica_offline(id);
            self.note_elections(&changed);
            self.broadcast(&changed);
        }
        if self.now - self.last_broadcast >= STATE_BROADCAST_EVERY {
            self.last_broadcast = self.now;
            let states = self.controller.states();
            self.broadcast(&states);
        }
    }

    // ---- replicas ----

    fn node_receive(&mut self, index: usize, from: End, msg: Msg) {
        let now = self.instant();
        let Some(replica) = self.nodes[index].replica.clone() else {
            return;
        };
        let me = End::Node(self.nodes[index].id);
        match msg {
            Msg::State(state) => {
                // A restarted leader refuses its old epoch until the
                // controller elects anew; anything else is a bug.
                if let Err(e) = replica.apply(&state)
                    && !matches!(e, Error::LeaderEpochMismatch { .. })
                {
                    self.violation(format!("replica {index}: apply failed: {e}"));
                }
                self.check_pending(index);
            }
            Msg::Fetch(fetch) => {
                let answer = match replica.handle_fetch(&fetch, now) {
                    Ok(response) => Msg::FetchResponse(response),
                    Err(Error::NotLeader { .. } | Error::LeaderEpochMismatch { .. }) => {
                        Msg::FetchFailed
                    }
                    Err(e) => {
                        self.violation(format!("replica {index}: fetch failed: {e}"));
                        Msg::FetchFailed
                    }
                };
                self.send(me, from, answer);
                self.check_pending(index);
            }
            Msg::FetchResponse(response) => {
                self.nodes[index].fetch_sent = None;
                if let Err(e) = replica.handle_fetch_response(response) {
                    self.violation(format!("replica {index}: fetch response failed: {e}"));
                }
            }
            Msg::FetchFailed => self.nodes[index].fetch_sent = None,
            Msg::Produce(request) => {
                let End::Client(client) = from else {
                    return;
                };
                let sequence = request.producer.map_or(-1, |p| p.base_sequence);
                match replica.write(&request) {
                    Ok((appended, epoch)) => {
                        if self.setup.sync_every.is_none()
                            && let Err(e) = replica.partition().sync()
                        {
                            self.violation(format!("replica {index}: sync failed: {e}"));
                        }
                        self.nodes[index].pending.push(PendingAck {
                            client,
                            sequence,
                            appended,
                            epoch,
                            deadline: self.now + PRODUCE_TIMEOUT,
                        });
                        self.check_pending(index);
                    }
                    Err(e) => self.send(
                        me,
                        from,
                        Msg::ProduceResult {
                            sequence,
                            result: Err(e),
                        },
                    ),
                }
            }
            _ => {}
        }
    }

    /// Answers writes whose fate is known: committed, no longer led, or
    /// timed out.
    fn check_pending(&mut self, index: usize) {
        let Some(replica) = self.nodes[index].replica.clone() else {
            return;
        };
        let me = End::Node(self.nodes[index].id);
        let watermark = replica.high_watermark();
        let leads = replica.is_leader();
        let epoch = replica.leader_epoch();
        let pending = std::mem::take(&mut self.nodes[index].pending);
        for ack in pending {
            let result = if !leads || epoch != ack.epoch {
                Err(Error::NotLeader {
                    partition: 0,
                    replica: self.nodes[index].id,
                    leader: replica.leader(),
                    leader_epoch: epoch,
                })
            } else if watermark > ack.appended.last_offset {
                Ok(ack.appended)
            } else if self.now >= ack.deadline {
                Err(Error::ReplicationTimeout {
                    partition: 0,
                    offset: ack.appended.last_offset,
                    high_watermark: watermark,
                })
            } else {
                self.nodes[index].pending.push(ack);
                continue;
            };
            self.send(
                me,
                End::Client(ack.client),
                Msg::ProduceResult {
                    sequence: ack.sequence,
                    result,
                },
            );
        }
    }

    fn node_tick(&mut self, index: usize) {
        let Some(replica) = self.nodes[index].replica.clone() else {
            return;
        };
        let me = End::Node(self.nodes[index].id);
        let now = self.instant();
        if let Some(every) = self.setup.sync_every
            && self.now % every < TICK
            && let Err(e) = replica.partition().sync()
        {
            self.violation(format!("replica {index}: sync failed: {e}"));
        }
        match replica.tick(now) {
            Ok(Some(request)) => self.send(me, End::Controller, Msg::AlterIsr(request)),
            Ok(None) => {}
            Err(e) => self.violation(format!("replica {index}: tick failed: {e}")),
        }
        self.check_pending(index);
        let node = &self.nodes[index];
        let stale = node
            .fetch_sent
            .is_none_or(|at| self.now.saturating_sub(at) >= FETCH_TIMEOUT);
        if stale && let Some((leader, fetch)) = replica.fetch_request() {
            self.nodes[index].fetch_sent = Some(self.now);
            self.send(me, End::Node(leader), Msg::Fetch(fetch));
        }
        if self.now - self.nodes[index].last_heartbeat >= HEARTBEAT_EVERY {
            self.nodes[index].last_heartbeat = self.now;
            let incarnation = self.nodes[index].incarnation;
            self.send(me, End::Controller, Msg::Heartbeat { incarnation });
        }
    }

    // ---- producers ----

    fn client_tick(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if client.current.is_none() && client.budget > 0 {
            client.budget -= 1;
            let count = 1 + (client.next_value % 3);
            let values: Vec<String> = (0..count)
                .map(|i| format!("c{index}-{}", client.next_value + i))
                .collect();
            client.next_value += count;
            let records = values.iter().map(|v| Record::new(v.clone())).collect();
            let request = ProduceRequest::new(0, records)
                .timeout(Duration::from_millis(PRODUCE_TIMEOUT))
                .idempotent(ProducerSequence {
                    producer_id: client.producer_id,
                    producer_epoch: 0,
                    base_sequence: client.next_sequence,
                });
            client.current = Some(Current {
                request,
                values,
                retry_at: self.now,
            });
        }
        let due = client
            .current
            .as_ref()
            .is_some_and(|c| self.now >= c.retry_at);
        if !due {
            return;
        }
        let guess = client.leader_guess.or_else(|| self.leader());
        let target = guess.unwrap_or_else(|| self.rng.below(u64::from(self.setup.replicas)) as u32);
        let client = &mut self.clients[index];
        let current = client.current.as_mut().expect("checked above");
        current.retry_at = self.now + CLIENT_RETRY;
        let msg = Msg::Produce(current.request.clone());
        self.send(End::Client(index), End::Node(target), msg);
    }

    fn client_receive(&mut self, index: usize, msg: Msg) {
        let Msg::ProduceResult { sequence, result } = msg else {
            return;
        };
        let now = self.now;
        let current = self.clients[index]
            .current
            .as_ref()
            .and_then(|c| c.request.producer)
            .map(|p| p.base_sequence);
        if current != Some(sequence) {
            // An answer to an earlier request, acknowledged already: an
            // acknowledgement must name the same offsets.
            if let Ok(appended) = result
                && self.clients[index].acked_by_sequence.get(&sequence)
                    != Some(&appended.base_offset)
            {
                self.violation(format!(
                    "client {index}: sequence {sequence} acknowledged again at {}",
                    appended.base_offset
                ));
            }
            return;
        }
        match result {
            Ok(appended) => self.acknowledged(index, appended),
            Err(Error::NotLeader { leader, .. }) => {
                let client = &mut self.clients[index];
                client.leader_guess = leader;
                if let Some(current) = client.current.as_mut() {
                    current.retry_at = current.retry_at.min(now + 5);
                }
            }
            Err(Error::OutOfOrderSequence {
                expected, found, ..
            }) if expected < found => {
                // A leader that lacks this producer's acknowledged batches
                // has lost its leadership without knowing it yet.
                let client = &mut self.clients[index];
                client.leader_guess = None;
                if let Some(current) = client.current.as_mut() {
                    current.retry_at = current.retry_at.min(now + 50);
                }
            }
            Err(
                Error::NotEnoughReplicas { .. }
                | Error::ReplicationTimeout { .. }
                | Error::LeaderEpochMismatch { .. },
            ) => {
                let client = &mut self.clients[index];
                client.leader_guess = None;
                if let Some(current) = client.current.as_mut() {
                    current.retry_at = current.retry_at.min(now + 50);
                }
            }
            Err(e) => self.violation(format!("client {index}: unexpected produce error: {e}")),
        }
    }

    fn acknowledged(&mut self, index: usize, appended: Appended) {
        let client = &mut self.clients[index];
        let Some(current) = client.current.as_ref() else {
            return;
        };
        let sequence = current
            .request
            .producer
            .expect("idempotent requests")
            .base_sequence;
        if appended.record_count() != current.values.len() as u64 {
            let what = format!(
                "client {index}: {} records acknowledged for a batch of {}",
                appended.record_count(),
                current.values.len()
            );
            self.violation(what);
            return;
        }
        let values = current.values.clone();
        client
            .acked_by_sequence
            .insert(sequence, appended.base_offset);
        client.next_sequence += values.len() as i32;
        client.current = None;
        for (i, value) in values.into_iter().enumerate() {
            let offset = appended.base_offset + i as u64;
            if let Some(&before) = self.acked.get(&value)
                && before != offset
            {
                self.violation(format!(
                    "{value} acknowledged at offsets {before} and {offset}"
                ));
            }
            self.acked.insert(value, offset);
            self.acks += 1;
        }
    }

    // ---- consumers and the history of committed records ----

    fn consumer_tick(&mut self, index: usize) {
        let Some(leader) = self.leader() else {
            return;
        };
        let Some(replica) = self.nodes[leader as usize].replica.clone() else {
            return;
        };
        let position = self.consumers[index].position;
        match replica.read(position, 2048) {
            Ok(records) => {
                for record in records {
                    let expected = self.consumers[index].position;
                    if record.offset != expected {
                        self.violation(format!(
                            "consumer {index}: offset {} after {}: not monotonic",
                            record.offset,
                            expected.wrapping_sub(1)
                        ));
                    }
                    let value = value_of(&record);
                    self.consumers[index].seen.push((record.offset, value));
                    self.consumers[index].position = record.offset + 1;
                }
            }
            Err(e) => self.violation(format!(
                "consumer {index}: read at {position} from replica {leader} failed: {e}"
            )),
        }
    }

    /// Every record below any replica's high watermark is committed: it
    /// must never change, anywhere.
    fn check_committed(&mut self) {
        for index in 0..self.nodes.len() {
            let Some(replica) = self.nodes[index].replica.clone() else {
                continue;
            };
            let watermark = replica.high_watermark();
            let mut offset = self.nodes[index].verified;
            while offset < watermark {
                let records = match replica.partition().read(offset, 4096) {
                    Ok(records) if !records.is_empty() => records,
                    Ok(_) => break,
                    Err(e) => {
                        self.violation(format!("replica {index}: read at {offset} failed: {e}"));
                        break;
                    }
                };
                for record in records.iter().filter(|r| r.offset < watermark) {
                    let value = value_of(record);
                    match self.committed.get(&record.offset) {
                        Some(before) if *before != value => {
                            let what = format!(
                                "offset {} committed as {before}, replica {index} holds {value}",
                                record.offset
                            );
                            self.violation(what);
                        }
                        Some(_) => {}
                        None => {
                            self.committed.insert(record.offset, value);
                        }
                    }
                    offset = record.offset + 1;
                }
            }
            self.nodes[index].verified = offset;
        }
    }

    // ---- the end ----

    /// Heals the network, restarts every replica, lets producers finish
    /// and waits for every replica to hold the same log; then checks.
    pub(super) fn settle_and_check(&mut self) -> Result<Summary, String> {
        self.faults_on = false;
        self.heal();
        for id in 0..self.setup.replicas {
            self.restart(id);
        }
        let mut converged = false;
        for _ in 0..2000 {
            self.run_for(TICK);
            if self.converged() {
                converged = true;
                break;
            }
        }
        // Consumers read to the end.
        self.run_for(100);
        if !converged {
            let state = self.state();
            let ends: Vec<String> = self
                .nodes
                .iter()
                .filter_map(|n| {
                    n.replica.as_ref().map(|r| {
                        format!(
                            "replica {}: end {} hw {} epoch {} epochs {:?}",
                            n.id,
                            r.log_end_offset(),
                            r.high_watermark(),
                            r.leader_epoch(),
                            r.leader_epochs()
                        )
                    })
                })
                .collect();
            self.violation(format!(
                "did not converge in 20 s: {state:?}; {ends:?}; clients waiting: {}",
                self.clients.iter().filter(|c| c.current.is_some()).count()
            ));
        }
        self.final_check();
        if self.violations.is_empty() {
            Ok(Summary {
                acks: self.acks,
                crashes: self.crashes,
                elections: self.elections,
            })
        } else {
            Err(self.violations.join("\n"))
        }
    }

    fn converged(&self) -> bool {
        let state = self.state();
        let Some(leader) = state.leader else {
            return false;
        };
        if state.isr.len() != self.setup.replicas as usize {
            return false;
        }
        let Some(leading) = self.nodes[leader as usize].replica.as_ref() else {
            return false;
        };
        let end = leading.log_end_offset();
        let clients_done = self
            .clients
            .iter()
            .all(|c| c.current.is_none() && c.budget == 0);
        clients_done
            && leading.is_leader()
            && leading.high_watermark() == end
            && self.nodes.iter().all(|n| {
                n.replica
                    .as_ref()
                    .is_some_and(|r| r.log_end_offset() == end && r.leader() == Some(leader))
            })
    }

    fn final_check(&mut self) {
        let logs: Vec<Option<Vec<(u64, String)>>> = self
            .nodes
            .iter()
            .map(|n| {
                let replica = n.replica.as_ref()?;
                let partition = replica.partition();
                let mut out = Vec::new();
                let mut offset = partition.start_offset();
                while offset < partition.end_offset() {
                    let records = partition.read(offset, 1 << 20).ok()?;
                    if records.is_empty() {
                        break;
                    }
                    for r in &records {
                        out.push((r.offset, value_of(r)));
                        offset = r.offset + 1;
                    }
                }
                Some(out)
            })
            .collect();
        let Some(leader) = self.leader() else {
            self.violations.push("no leader at the end".into());
            return;
        };
        let Some(reference) = logs[leader as usize].clone() else {
            self.violations
                .push(format!("the leader {leader} is down at the end"));
            return;
        };
        // Inconsistent offsets: one offset, two values on two replicas.
        for (id, log) in logs.iter().enumerate() {
            let Some(log) = log else {
                self.violations
                    .push(format!("replica {id} is down at the end"));
                continue;
            };
            if log != &reference {
                let at = log
                    .iter()
                    .zip(&reference)
                    .position(|(a, b)| a != b)
                    .unwrap_or(log.len().min(reference.len()));
                let what = format!(
                    "replica {id} differs from leader {leader} at index {at}: {:?} vs {:?}",
                    log.get(at),
                    reference.get(at)
                );
                self.violations.push(what);
            }
        }
        let by_offset: BTreeMap<u64, String> = reference.iter().cloned().collect();
        // Duplicates.
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for (_, value) in &reference {
            *counts.entry(value.as_str()).or_default() += 1;
        }
        let duplicates: Vec<String> = counts
            .iter()
            .filter(|&(_, &n)| n > 1)
            .map(|(v, n)| format!("{v} x{n}"))
            .collect();
        if !duplicates.is_empty() {
            self.violations.push(format!("duplicates: {duplicates:?}"));
        }
        // Lost acknowledged writes.
        let lost: Vec<String> = self
            .acked
            .iter()
            .filter(|&(value, offset)| by_offset.get(offset) != Some(value))
            .map(|(value, offset)| format!("{value}@{offset}"))
            .collect();
        if !lost.is_empty() {
            self.violations
                .push(format!("lost {} acknowledged writes: {lost:?}", lost.len()));
        }
        // Records seen below a high watermark or by a consumer that later
        // disappeared.
        let committed = std::mem::take(&mut self.committed);
        for (offset, value) in &committed {
            if by_offset.get(offset) != Some(value) {
                self.violations
                    .push(format!("committed {value}@{offset} disappeared"));
            }
        }
        for (index, consumer) in self.consumers.iter().enumerate() {
            for (offset, value) in &consumer.seen {
                if by_offset.get(offset) != Some(value) {
                    let what = format!("consumer {index} saw {value}@{offset}, which disappeared");
                    self.violations.push(what);
                }
            }
        }
        // Every client's every record is in, exactly once, after the
        // settle (producers retry until acknowledged).
        for (index, client) in self.clients.iter().enumerate() {
            for n in 0..client.next_value {
                let value = format!("c{index}-{n}");
                if !counts.contains_key(value.as_str()) && client.current.is_none() {
                    self.violations
                        .push(format!("{value} was acknowledged yet is missing"));
                }
            }
        }
    }
}

/// What a run did, for the test's output.
#[derive(Debug, Clone, Copy)]
pub(super) struct Summary {
    pub acks: u64,
    pub crashes: u64,
    pub elections: u64,
}
