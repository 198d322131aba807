//! Replication driven the way a threaded host drives it, through the public
//! surface only: a fetch thread per replica (`Replica::fetch_once`), ticks
//! sent to the controller (`Replica::maintain`), states handed out by the
//! controller, an `Acks::All` `ReplicatedProducer` blocking on the leader's
//! high watermark, and the leader cut off mid-run.

#![cfg(feature = "replication")]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use durable_log::replication::{
    Controller, ControllerConfig, Fetch, FetchResponse, InMemoryController, ProduceRequest,
    Replica, ReplicaId, ReplicatedProducer, ReplicationConfig, Transport,
};
use durable_log::{Appended, Config, Error, Log, Record};
use parking_lot::Mutex;

/// Replicas reachable in this process; a cut-off one answers nothing.
struct Network {
    replicas: Mutex<Vec<Option<Replica>>>,
}

impl Network {
    fn get(&self, id: ReplicaId) -> durable_log::Result<Replica> {
        self.replicas.lock()[id as usize].clone().ok_or_else(|| {
            Error::Io(
                format!("replica {id}").into(),
                Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            )
        })
    }
}

/// The host's handle on the network.
#[derive(Clone)]
struct Net(Arc<Network>);

impl Transport for Net {
    fn fetch(&self, to: ReplicaId, request: Fetch) -> durable_log::Result<FetchResponse> {
        self.0.get(to)?.handle_fetch(&request, Instant::now())
    }

    fn produce(&self, to: ReplicaId, request: ProduceRequest) -> durable_log::Result<Appended> {
        self.0.get(to)?.produce(&request)
    }
}

fn records(values: &[String]) -> Vec<Record> {
    values.iter().map(|v| Record::new(v.clone())).collect()
}

fn stored(replica: &Replica) -> Vec<(u64, String)> {
    let p = replica.partition();
    p.read(p.start_offset(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn acks_all_survive_losing_the_leader_mid_run() {
    let ids: Vec<ReplicaId> = vec![0, 1, 2];
    let controller = Arc::new(
        InMemoryController::new(1, &ids, ControllerConfig::default().min_insync_replicas(2))
            .unwrap(),
    );
    let dirs: Vec<_> = ids.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let mut logs = Vec::new();
    let network = Arc::new(Network {
        replicas: Mutex::new(Vec::new()),
    });
    let net = Net(network.clone());
    for (&id, dir) in ids.iter().zip(&dirs) {
        let log = Log::open(dir.path(), Config::default()).unwrap();
        let config = ReplicationConfig::default()
            .replica_lag_max(Duration::from_millis(300))
            .isr_change_retry(Duration::from_millis(50));
        let replica = Replica::open(id, log.partition(0).unwrap(), config).unwrap();
        replica.apply(&controller.state(0).unwrap()).unwrap();
        network.replicas.lock().push(Some(replica));
        logs.push(log);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for &id in &ids {
        let (network, controller, stop) = (network.clone(), controller.clone(), stop.clone());
        let net = net.clone();
        threads.push(thread::spawn(move || {
            let mut last_tick = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // A cut-off replica does nothing any more.
                let Ok(replica) = network.get(id) else {
                    return;
                };
                // The host hands out the controller's state.
                let _ = replica.apply(&controller.state(0).unwrap());
                match replica.fetch_once(&net) {
                    Ok(_) => {}
                    Err(Error::NotLeader { .. } | Error::LeaderEpochMismatch { .. }) => {}
                    Err(Error::Io(..)) => {}
                    Err(e) => panic!("replica {id}: {e}"),
                }
                if last_tick.elapsed() >= Duration::from_millis(10) {
                    last_tick = Instant::now();
                    replica
                        .maintain(&*controller as &dyn Controller, Instant::now())
                        .unwrap();
                }
                thread::sleep(Duration::from_millis(1));
            }
        }));
    }

    let mut producer = ReplicatedProducer::new(net.clone(), 0, &ids, 7)
        .unwrap()
        .request_timeout(Duration::from_millis(300))
        .delivery_timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(10));
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut killed = None;
    for batch in 0..150u32 {
        if batch == 60 {
            let leader = controller.state(0).unwrap().leader.unwrap();
            network.replicas.lock()[leader as usize] = None;
            controller.replica_offline(leader);
            killed = Some(leader);
        }
        let values: Vec<String> = (0..2).map(|i| format!("b{batch}-{i}")).collect();
        let appended = producer.send(records(&values)).unwrap();
        for (i, value) in values.into_iter().enumerate() {
            acked.insert(value, appended.base_offset + i as u64);
        }
    }
    let killed = killed.unwrap();
    let state = controller.state(0).unwrap();
    assert_ne!(state.leader, Some(killed));
    assert!(state.leader_epoch >= 1);

    // The survivors converge on one log holding every acknowledged record
    // once, at its offset.
    let survivors: Vec<Replica> = ids
        .iter()
        .filter(|&&id| id != killed)
        .map(|&id| network.get(id).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ends: HashSet<u64> = survivors.iter().map(|r| r.log_end_offset()).collect();
        let committed = survivors
            .iter()
            .all(|r| r.high_watermark() == r.log_end_offset());
        if ends.len() == 1 && committed {
            break;
        }
        assert!(Instant::now() < deadline, "the survivors did not converge");
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let reference = stored(&survivors[0]);
    assert_eq!(stored(&survivors[1]), reference);
    let mut seen = HashSet::new();
    for (_, value) in &reference {
        assert!(seen.insert(value.clone()), "{value} twice");
    }
    let by_offset: BTreeMap<u64, String> = reference.into_iter().collect();
    for (value, offset) in &acked {
        assert_eq!(by_offset.get(offset), Some(value), "acknowledged {value}");
    }
    assert_eq!(acked.len(), 300);
}
