//! Tests of the replication module: the deterministic cluster simulation
//! with random faults, the named regression scenarios, and the replica's
//! rules one at a time.

mod rules;
mod sim;

use std::panic::{AssertUnwindSafe, catch_unwind};

use sim::{Cluster, End, Rng, Setup};

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// One seeded run with random faults: the setup (3 to 5 replicas, message
/// loss, delays), the faults and the workload all come from the seed.
fn random_run(seed: u64) -> Result<sim::Summary, String> {
    let setup = Setup::random(&mut Rng::new(seed));
    let mut cluster = Cluster::new(seed, setup.clone());
    cluster.run_for(4000);
    cluster
        .settle_and_check()
        .map_err(|e| format!("{e}\nsetup: {setup:?}"))
}

/// `DURABLE_LOG_REPLICATION_SEEDS` seeded runs (default 200) from
/// `DURABLE_LOG_REPLICATION_SEED_START` (default 0). A failing seed prints
/// itself and replays with those two variables.
#[test]
fn cluster_simulation_loses_nothing_acknowledged() {
    let first = env_count("DURABLE_LOG_REPLICATION_SEED_START", 0);
    let seeds = env_count("DURABLE_LOG_REPLICATION_SEEDS", 200);
    let mut acks = 0;
    let mut crashes = 0;
    let mut elections = 0;
    for seed in first..first + seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| random_run(seed)));
        let message = match outcome {
            Ok(Ok(summary)) => {
                acks += summary.acks;
                crashes += summary.crashes;
                elections += summary.elections;
                continue;
            }
            Ok(Err(message)) => message,
            Err(panic) => panic_message(panic),
        };
        panic!(
            "replication seed {seed} failed (replay with DURABLE_LOG_REPLICATION_SEED_START={seed} \
             DURABLE_LOG_REPLICATION_SEEDS=1):\n{message}"
        );
    }
    // The runs must have exercised what they claim to.
    assert!(seeds == 0 || acks > 0, "no write was acknowledged");
    println!(
        "{seeds} seeds: {acks} acknowledged records, {crashes} crashes, {elections} state changes"
    );
}

fn expect_clean(cluster: &mut Cluster) -> sim::Summary {
    match cluster.settle_and_check() {
        Ok(summary) => summary,
        Err(e) => panic!("seed {}: {e}", cluster.seed),
    }
}

/// aphyr's 2013 finding: the ISR shrinks to the leader alone, then the
/// leader is lost. With `min_insync_replicas = 2` nothing acknowledged may
/// be lost: writes while the leader is alone are refused or time out, and
/// the replicas that left the ISR stay eligible.
#[test]
fn isr_shrinks_to_the_leader_alone_then_the_leader_is_lost() {
    for seed in 0..4 {
        let mut cluster = Cluster::new(seed, Setup::quiet(3, 2));
        cluster.run_for(300);
        let leader = cluster.leader().expect("a leader");
        let followers: Vec<u32> = (0..3).filter(|&r| r != leader).collect();
        // The followers stay alive and in touch with the controller, but
        // cannot fetch: the leader drops them from the ISR.
        for &f in &followers {
            cluster.cut(End::Node(f), End::Node(leader));
        }
        cluster.run_for(600);
        let state = cluster.state();
        assert_eq!(state.isr, vec![leader], "seed {seed}: {state:?}");
        assert_eq!(state.elr.len(), 2, "seed {seed}: {state:?}");
        let acks_alone = cluster.acks;
        cluster.run_for(300);
        assert_eq!(
            cluster.acks, acks_alone,
            "seed {seed}: a write was acknowledged while the leader was alone"
        );
        // The leader's disk loses what it did not sync, and it stays down.
        cluster.crash(leader, true);
        cluster.heal();
        cluster.run_for(600);
        let state = cluster.state();
        assert!(
            state.leader.is_some_and(|l| followers.contains(&l)),
            "seed {seed}: an eligible follower must lead: {state:?}"
        );
        expect_clean(&mut cluster);
    }
}

/// Two failovers in quick succession (KIP-101): the first new leader dies
/// before its followers have caught up with its epoch, the replicas'
/// logs diverge in several epochs, and they must be reconciled by epochs,
/// not by remembered high watermarks.
#[test]
fn two_failovers_in_quick_succession() {
    for seed in 0..4 {
        let mut cluster = Cluster::new(seed, Setup::quiet(3, 2));
        cluster.run_for(400);
        let first = cluster.leader().expect("a leader");
        cluster.crash(first, seed % 2 == 0);
        cluster.run_for(200);
        let second = cluster.leader().expect("a second leader");
        assert_ne!(second, first);
        cluster.run_for(20);
        cluster.crash(second, true);
        cluster.run_for(60);
        cluster.restart(first);
        cluster.run_for(200);
        cluster.restart(second);
        cluster.run_for(300);
        expect_clean(&mut cluster);
    }
}

/// KIP-966: every follower is lost, then the last replica standing — the
/// leader, alone in the ISR — shuts down uncleanly and comes back first.
/// It may lead again only because what it counted toward the high
/// watermark was synced; nothing acknowledged may be lost.
#[test]
fn the_last_replica_standing_restarts_after_an_unclean_shutdown() {
    for seed in 0..4 {
        let mut cluster = Cluster::new(seed, Setup::quiet(3, 2));
        cluster.run_for(400);
        let leader = cluster.leader().expect("a leader");
        let followers: Vec<u32> = (0..3).filter(|&r| r != leader).collect();
        for &f in &followers {
            cluster.crash(f, true);
        }
        cluster.run_for(400);
        assert_eq!(cluster.state().isr, vec![leader]);
        cluster.crash(leader, true);
        cluster.run_for(300);
        assert_eq!(cluster.state().leader, None, "no eligible replica is up");
        cluster.restart(leader);
        cluster.run_for(300);
        assert_eq!(cluster.state().leader, Some(leader));
        for &f in &followers {
            cluster.restart(f);
        }
        cluster.run_for(300);
        expect_clean(&mut cluster);
    }
}
