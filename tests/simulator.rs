//! The real SWIM + Lifeguard core in the deterministic simulator, over many seeds, checked against
//! the membership invariants. Bounds are in simulated time, so they are exact, not timing-sensitive.
//! A failure names its seed: replay it with `dci-sim membership ... --seed S` (or DCI_SIM_SEED=S).

use std::time::Duration;

use dci::sim::membership::{run, Partition, SimConfig, Summary};

fn small_mesh(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(30, seed);
    cfg.loss = 0.01;
    cfg.duration = Duration::from_secs(180);
    cfg.kills = 3;
    cfg.joins = 2;
    cfg
}

fn explain(s: &Summary) -> String {
    format!("replay with DCI_SIM_SEED={}: {s:?}", s.seed)
}

#[test]
fn every_crashed_node_is_declared_dead_by_every_survivor_within_the_bound() {
    // The slowest legitimate path: the longest suspicion (no confirmations) plus probing and gossip.
    let bound_ms = 8_000.0;
    for seed in 1..=20 {
        let s = run(small_mesh(seed));
        assert_eq!(s.detected, s.kills, "{}", explain(&s));
        assert!(s.detect_p99_ms <= bound_ms, "{}", explain(&s));
    }
}

#[test]
fn no_live_reachable_node_stays_declared_dead_and_joins_reach_everyone() {
    for seed in 1..=20 {
        let s = run(small_mesh(seed));
        assert_eq!(s.false_dead, 0, "{}", explain(&s));
        assert_eq!(s.stuck_dead, 0, "{}", explain(&s));
        assert_eq!(s.joins_disseminated, 2, "{}", explain(&s));
    }
}

#[test]
fn loss_jitter_a_stalling_node_and_a_starved_node_get_no_live_node_declared_dead() {
    // The accuracy target's scenario at its size (100 nodes), for 5 minutes per seed.
    for seed in 1..=3 {
        let mut cfg = SimConfig::new(100, seed);
        cfg.loss = 0.05;
        cfg.jitter = Duration::from_millis(50);
        cfg.stall = Some(Duration::from_millis(500));
        cfg.slow_by = Some(Duration::from_millis(400));
        cfg.duration = Duration::from_secs(300);
        let s = run(cfg);
        assert_eq!(s.false_dead, 0, "{}", explain(&s));
    }
}

#[test]
fn a_healed_partition_converges_and_no_death_crosses_to_the_same_side() {
    for seed in 1..=8 {
        let mut cfg = SimConfig::new(30, seed);
        cfg.loss = 0.01;
        cfg.duration = Duration::from_secs(240);
        cfg.partition = Some(Partition {
            size: 10,
            at: Duration::from_secs(30),
            lasting: Duration::from_secs(40),
        });
        let s = run(cfg);
        // Deaths across the cut are expected; a death of a same-side node is not.
        assert_eq!(s.false_dead, 0, "{}", explain(&s));
        assert_eq!(s.stuck_dead, 0, "{}", explain(&s));
        // Both sides hear from each other at once after healing, and refute.
        assert!(
            s.heal_ms.is_some_and(|ms| ms <= 10_000.0),
            "{}",
            explain(&s)
        );
    }
}

#[test]
fn crashed_nodes_that_restart_are_declared_dead_then_rejoin_everywhere() {
    for seed in 1..=8 {
        let mut cfg = small_mesh(seed);
        cfg.joins = 0;
        cfg.restart_after = Some(Duration::from_secs(20));
        let s = run(cfg);
        assert_eq!((s.detected, s.restarts), (3, 3), "{}", explain(&s));
        assert_eq!(s.false_dead, 0, "{}", explain(&s));
        assert_eq!(s.stuck_dead, 0, "{}", explain(&s));
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(small_mesh(7));
    let b = run(small_mesh(7));
    assert_eq!(
        (
            a.events,
            a.bytes_per_node_per_s,
            a.detect_p99_ms,
            a.disseminate_p9999_ms
        ),
        (
            b.events,
            b.bytes_per_node_per_s,
            b.detect_p99_ms,
            b.disseminate_p9999_ms
        )
    );
    let c = run(small_mesh(8));
    assert_ne!(a.events, c.events, "different seeds should differ");
}
