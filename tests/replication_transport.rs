//! A host carries the replication messages over its own RPC, so the
//! receiving side must be able to rebuild every message from its fields.
//! This test does what such a host does, outside the crate: each message
//! that crosses the "wire" is taken apart and built again from its public
//! fields before it is delivered.

#![cfg(feature = "replication")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use durable_log::replication::{
    Acks, AlterIsr, Controller, ControllerConfig, Fetch, FetchOutcome, FetchResponse,
    InMemoryController, PartitionState, ProduceRequest, ProducerSequence, Replica, ReplicaId,
    ReplicatedProducer, ReplicationConfig, Transport,
};
use durable_log::{Appended, Config, Log, Record, Result};

fn rebuild_fetch(f: Fetch) -> Fetch {
    Fetch {
        replica: f.replica,
        partition: f.partition,
        leader_epoch: f.leader_epoch,
        fetch_offset: f.fetch_offset,
        last_fetched_epoch: f.last_fetched_epoch,
        durable_offset: f.durable_offset,
        max_bytes: f.max_bytes,
    }
}

fn rebuild_fetch_response(r: FetchResponse) -> FetchResponse {
    let outcome = match r.outcome {
        FetchOutcome::Batches(batches) => FetchOutcome::Batches(
            batches
                .iter()
                .map(|b| bytes::Bytes::from(b.to_vec()))
                .collect(),
        ),
        FetchOutcome::Diverging { epoch, end_offset } => {
            FetchOutcome::Diverging { epoch, end_offset }
        }
        FetchOutcome::OffsetOutOfRange => FetchOutcome::OffsetOutOfRange,
    };
    FetchResponse {
        partition: r.partition,
        leader: r.leader,
        leader_epoch: r.leader_epoch,
        fetch_offset: r.fetch_offset,
        high_watermark: r.high_watermark,
        log_start_offset: r.log_start_offset,
        outcome,
    }
}

fn rebuild_produce(p: ProduceRequest) -> ProduceRequest {
    ProduceRequest {
        partition: p.partition,
        records: p.records,
        acks: p.acks,
        timeout: p.timeout,
        producer: p.producer.map(|s| ProducerSequence {
            producer_id: s.producer_id,
            producer_epoch: s.producer_epoch,
            base_sequence: s.base_sequence,
        }),
    }
}

fn rebuild_appended(a: Appended) -> Appended {
    Appended {
        partition: a.partition,
        base_offset: a.base_offset,
        last_offset: a.last_offset,
        max_timestamp: a.max_timestamp,
    }
}

fn rebuild_state(s: &PartitionState) -> PartitionState {
    PartitionState {
        partition: s.partition,
        replicas: s.replicas.clone(),
        leader: s.leader,
        leader_epoch: s.leader_epoch,
        isr: s.isr.clone(),
        elr: s.elr.clone(),
        partition_epoch: s.partition_epoch,
    }
}

fn rebuild_alter_isr(r: &AlterIsr) -> AlterIsr {
    AlterIsr {
        partition: r.partition,
        leader: r.leader,
        leader_epoch: r.leader_epoch,
        partition_epoch: r.partition_epoch,
        isr: r.isr.clone(),
    }
}

/// Delivers every message rebuilt, as the far end of an RPC would.
struct Rebuilding(Vec<Replica>);

impl Transport for Rebuilding {
    fn fetch(&self, to: ReplicaId, request: Fetch) -> Result<FetchResponse> {
        let response =
            self.0[to as usize].handle_fetch(&rebuild_fetch(request), std::time::Instant::now())?;
        Ok(rebuild_fetch_response(response))
    }

    fn produce(&self, to: ReplicaId, request: ProduceRequest) -> Result<Appended> {
        let appended = self.0[to as usize].produce(&rebuild_produce(request))?;
        Ok(rebuild_appended(appended))
    }
}

#[test]
fn messages_rebuilt_from_their_fields_replicate_a_producers_batches() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let controller = InMemoryController::new(1, &[0, 1], ControllerConfig::default()).unwrap();
    let logs: Vec<Log> = dirs
        .iter()
        .map(|d| Log::open(d.path(), Config::default()).unwrap())
        .collect();
    let replicas: Vec<Replica> = logs
        .iter()
        .enumerate()
        .map(|(id, log)| {
            let config = ReplicationConfig::default().min_insync_replicas(2);
            Replica::open(id as u32, log.partition(0).unwrap(), config).unwrap()
        })
        .collect();
    let state = controller.state(0).unwrap();
    for replica in &replicas {
        replica.apply(&rebuild_state(&state)).unwrap();
    }
    assert_eq!(replicas[0].leader(), Some(0));

    // The leader's ISR change, rebuilt on the controller's side; its
    // answer, rebuilt on the replicas' side.
    let change = AlterIsr {
        partition: 0,
        leader: 0,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        isr: vec![0, 1],
    };
    let new_state = controller.alter_isr(&rebuild_alter_isr(&change)).unwrap();
    assert_eq!(new_state.partition_epoch, state.partition_epoch + 1);
    for replica in &replicas {
        replica.apply(&rebuild_state(&new_state)).unwrap();
    }

    let transport = Rebuilding(replicas.clone());
    let stop = AtomicBool::new(false);
    let appended = thread::scope(|s| {
        s.spawn(|| {
            let follower_transport = Rebuilding(replicas.clone());
            while !stop.load(Ordering::Acquire) {
                replicas[1].fetch_once(&follower_transport).unwrap();
                thread::sleep(Duration::from_millis(1));
            }
        });
        let mut producer =
            ReplicatedProducer::new(transport, 0, &[1, 0], controller.allocate_producer_id())
                .unwrap()
                .acks(Acks::All);
        let appended: Vec<Appended> = (0..3)
            .map(|i| {
                producer
                    .send(vec![
                        Record::new(format!("a{i}")),
                        Record::new(format!("b{i}")),
                    ])
                    .unwrap()
            })
            .collect();
        stop.store(true, Ordering::Release);
        appended
    });

    let offsets: Vec<(u64, u64)> = appended
        .iter()
        .map(|a| (a.base_offset, a.last_offset))
        .collect();
    assert_eq!(offsets, vec![(0, 1), (2, 3), (4, 5)]);
    // Acks::All: committed, so on the follower too.
    assert!(replicas[0].high_watermark() >= 6);
    let copied: Vec<_> = replicas[1]
        .partition()
        .reader(0)
        .map(|r| r.unwrap().value.unwrap())
        .collect();
    assert_eq!(copied, ["a0", "b0", "a1", "b1", "a2", "b2"]);
}
