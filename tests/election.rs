//! The election core in the simulator: split-brain never happens under random fault schedules, and
//! scripted scenarios behave as an operator expects. Runs are seeded; a failure names the seed to
//! replay with `dci-sim election --schedules 1 --seed S`.

use std::time::Duration;

use dci::sim::election::{run_many, run_schedule, ElectionSummary, Fault, Mesh, ScheduleConfig};

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// `nodes` nodes, blade `i` held by node `i`, a quiet LAN, and these faults.
fn scripted(nodes: u32, blades: u32, script: Vec<(Duration, u32, Fault)>) -> ScheduleConfig {
    let mut c = ScheduleConfig::random(1);
    c.nodes = nodes;
    c.blades = blades;
    c.loss = 0.0;
    c.latency = Duration::from_micros(250);
    c.jitter = Duration::ZERO;
    c.duration = s(40.0);
    c.script = Some(script);
    c.extra = 0;
    c
}

/// The first seed of the random schedules: `DCI_SIM_SEED`, else 1.
fn first_seed() -> u64 {
    std::env::var("DCI_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn assert_safe(summary: &ElectionSummary) {
    assert_eq!(
        (
            summary.split_brain,
            summary.stale_epoch,
            summary.epoch_won_twice
        ),
        (0, 0, 0),
        "replay with DCI_SIM_SEED={:?}: {:?}",
        summary.first_failing_seed,
        summary.first_violation
    );
}

#[test]
fn no_random_fault_schedule_lets_two_nodes_act_as_one_blade() {
    let first = first_seed();
    let summary = run_many(first, 300, Mesh::Random);
    assert_safe(&summary);
    assert!(
        summary.takeovers > 50,
        "the schedules exercise takeovers: {summary:?}"
    );
    assert!(
        summary.won_beside_another > 0,
        "and nodes allowed an extra blade taking one beside their own: {summary:?}"
    );
}

/// No spare at all, every node allowed one extra blade: every takeover is by a node that holds a
/// blade already, under the same faults, and still no two nodes act as one blade.
#[test]
fn with_no_spare_nodes_allowed_an_extra_blade_take_them_without_split_brain() {
    let first = first_seed();
    let summary = run_many(first, 200, Mesh::NoSpare);
    assert_safe(&summary);
    assert!(
        summary.won_beside_another > 50,
        "the schedules exercise takeovers by nodes holding a blade: {summary:?}"
    );
}

#[test]
fn a_killed_holder_is_replaced_by_a_spare_within_three_seconds() {
    let c = scripted(
        5,
        2,
        vec![(
            s(10.0),
            0,
            Fault::Crash {
                restart_after: None,
            },
        )],
    );
    let (summary, takeovers) = run_schedule(c);
    assert_safe(&summary);
    assert_eq!(takeovers.len(), 1, "{summary:?}");
    assert!(takeovers[0] < 3000.0, "took {} ms", takeovers[0]);
    assert_eq!(summary.unserved_at_end, 0);
}

#[test]
fn the_minority_side_of_a_partition_never_elects() {
    // Blade 0's holder is on the majority side: nobody elects anything.
    let c = scripted(
        5,
        1,
        vec![(
            s(10.0),
            0,
            Fault::Partition {
                minority: vec![3, 4],
                lasting: s(15.0),
            },
        )],
    );
    let (summary, _) = run_schedule(c);
    assert_safe(&summary);
    // The minority's failed claims leave promises behind; the holder may claim a higher epoch
    // to get past them, but nobody else ever serves.
    assert_eq!(summary.served_by, vec![vec![0]], "{summary:?}");
    assert_eq!(summary.serving_at_end, vec![Some(0)]);
}

#[test]
fn a_holder_cut_off_with_a_minority_is_replaced_once_and_fenced() {
    let c = scripted(
        5,
        1,
        vec![(
            s(10.0),
            0,
            Fault::Partition {
                minority: vec![0, 1],
                lasting: s(15.0),
            },
        )],
    );
    let (summary, _) = run_schedule(c);
    assert_safe(&summary);
    assert_eq!(
        summary.elections, 1,
        "only the majority side elects: {summary:?}"
    );
    let holder = summary.serving_at_end[0];
    assert!(
        holder.is_some_and(|h| h >= 2),
        "a majority-side node serves: {holder:?}"
    );
}

#[test]
fn a_paused_holder_past_detection_is_replaced_and_stops_when_it_resumes() {
    let c = scripted(4, 1, vec![(s(10.0), 0, Fault::Pause { lasting: s(5.0) })]);
    let (summary, _) = run_schedule(c);
    assert_safe(&summary);
    assert_eq!(summary.elections, 1, "{summary:?}");
    assert_ne!(
        summary.serving_at_end,
        vec![Some(0)],
        "the old holder was fenced"
    );
    assert!(summary.serving_at_end[0].is_some());
}

#[test]
fn a_move_hands_the_blade_to_the_chosen_node() {
    let c = scripted(4, 1, vec![(s(10.0), 0, Fault::Move { blade: 0, to: 3 })]);
    let (summary, _) = run_schedule(c);
    assert_safe(&summary);
    assert_eq!(summary.elections, 1, "{summary:?}");
    assert_eq!(summary.serving_at_end, vec![Some(3)]);
}

#[test]
fn a_seed_replays_identically() {
    let a = run_many(77, 5, Mesh::Random);
    let b = run_many(77, 5, Mesh::Random);
    assert_eq!(
        (a.events, a.elections, a.takeovers, a.unserved_at_end),
        (b.events, b.elections, b.takeovers, b.unserved_at_end)
    );
}
