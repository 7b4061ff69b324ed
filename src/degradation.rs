//! Sustained degradation, after the seeds' fail-over on performance loss: a node raises
//! `degraded` when a watched figure stays above its high mark for a whole window, and
//! `recovered` when, afterwards, it stays below its low mark for another window. A spike shorter
//! than the window raises nothing, and a figure between the marks keeps the current state. While
//! degraded, each further whole window above the high mark raises `sustained` (seed `000`: "a
//! further decrease in performance" adds another helper).
//!
//! Sans-IO: fed readings with their time, it answers with the transitions.

use std::collections::HashMap;
use std::time::Duration;

use crate::resources::{Metric, Resources};

/// Marks and windows. Defaults after `000`: above 80% for 10 minutes, below 20% for 20 minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct DegradationConfig {
    /// The figures watched.
    pub metrics: Vec<Metric>,
    /// Above this (percent) counts towards `degraded`.
    pub high: u8,
    /// Below this (percent) counts towards `recovered`.
    pub low: u8,
    /// How long the figure must stay above `high`.
    pub raise_after: Duration,
    /// How long it must then stay below `low`.
    pub clear_after: Duration,
    /// Time between readings.
    pub sample_interval: Duration,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        DegradationConfig {
            metrics: vec![Metric::Cpu],
            high: 80,
            low: 20,
            raise_after: Duration::from_secs(600),
            clear_after: Duration::from_secs(1200),
            sample_interval: Duration::from_secs(5),
        }
    }
}

/// A change of state of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The metric stayed above the high mark for the window; the reading that completed it.
    Degraded(Metric, u8),
    /// Degraded already, it stayed above the high mark for another whole window.
    Sustained(Metric, u8),
    /// The metric stayed below the low mark for the window; the reading that completed it.
    Recovered(Metric, u8),
}

#[derive(Debug, Default)]
struct Watch {
    degraded: bool,
    /// Since when the figure has been on the far side of the mark that would change the state.
    run_since: Option<Duration>,
    /// While degraded, since when it has stayed above the high mark (or the last `sustained`).
    high_since: Option<Duration>,
}

/// The detector.
pub struct Detector {
    config: DegradationConfig,
    watches: HashMap<Metric, Watch>,
}

impl Detector {
    /// Watches the configured metrics, none degraded.
    pub fn new(config: DegradationConfig) -> Detector {
        let watches = config
            .metrics
            .iter()
            .map(|m| (*m, Watch::default()))
            .collect();
        Detector { config, watches }
    }

    /// Applies new marks and windows; the state of each metric still watched is kept.
    pub fn set_config(&mut self, config: DegradationConfig) {
        self.watches.retain(|m, _| config.metrics.contains(m));
        for m in &config.metrics {
            self.watches.entry(*m).or_default();
        }
        self.config = config;
    }

    /// Whether any watched metric is degraded now.
    pub fn degraded(&self) -> bool {
        self.watches.values().any(|w| w.degraded)
    }

    /// Takes one reading at `now`. A missing figure breaks the run (no evidence either way).
    pub fn observe(&mut self, reading: &Resources, now: Duration) -> Vec<Transition> {
        let mut out = Vec::new();
        for metric in &self.config.metrics {
            let Some(w) = self.watches.get_mut(metric) else {
                continue;
            };
            let Some(value) = reading.get(*metric) else {
                w.run_since = None;
                w.high_since = None;
                continue;
            };
            if w.degraded && value > self.config.high {
                let since = *w.high_since.get_or_insert(now);
                if now.saturating_sub(since) >= self.config.raise_after {
                    w.high_since = Some(now);
                    out.push(Transition::Sustained(*metric, value));
                }
            } else {
                w.high_since = None;
            }
            let (toward_change, window) = if w.degraded {
                (value < self.config.low, self.config.clear_after)
            } else {
                (value > self.config.high, self.config.raise_after)
            };
            if !toward_change {
                w.run_since = None;
                continue;
            }
            let since = *w.run_since.get_or_insert(now);
            if now.saturating_sub(since) >= window {
                w.degraded = !w.degraded;
                w.run_since = None;
                w.high_since = w.degraded.then_some(now);
                out.push(if w.degraded {
                    Transition::Degraded(*metric, value)
                } else {
                    Transition::Recovered(*metric, value)
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(v: u8) -> Resources {
        Resources {
            cpu: Some(v),
            ..Resources::default()
        }
    }

    fn feed(d: &mut Detector, values: &[(u64, u8)]) -> Vec<(u64, Transition)> {
        values
            .iter()
            .flat_map(|(t, v)| {
                d.observe(&cpu(*v), Duration::from_secs(*t))
                    .into_iter()
                    .map(move |tr| (*t, tr))
            })
            .collect()
    }

    #[test]
    fn a_spike_raises_nothing_and_a_sustained_load_raises_once() {
        let mut d = Detector::new(DegradationConfig::default());
        // 9 minutes above, then a dip: nothing.
        let spike: Vec<_> = (0..=540).step_by(5).map(|t| (t, 95)).collect();
        assert!(feed(&mut d, &spike).is_empty());
        assert!(feed(&mut d, &[(545, 50)]).is_empty());
        // Then 10 full minutes above: degraded exactly once, at the end of the window.
        let load: Vec<_> = (550..=1300).step_by(5).map(|t| (t, 90)).collect();
        let got = feed(&mut d, &load);
        assert_eq!(got, vec![(1150, Transition::Degraded(Metric::Cpu, 90))]);
        assert!(d.degraded());
    }

    #[test]
    fn recovery_needs_the_whole_low_window_and_between_the_marks_holds_the_state() {
        let mut d = Detector::new(DegradationConfig::default());
        let load: Vec<_> = (0..=600).step_by(5).map(|t| (t, 90)).collect();
        assert_eq!(feed(&mut d, &load).len(), 1);
        // Between the marks for an hour: still degraded.
        let middle: Vec<_> = (605..=4200).step_by(5).map(|t| (t, 50)).collect();
        assert!(feed(&mut d, &middle).is_empty());
        assert!(d.degraded());
        // Low for 19 minutes, a blip to 30, then 20 minutes low.
        let low: Vec<_> = (4205..=5345).step_by(5).map(|t| (t, 5)).collect();
        assert!(feed(&mut d, &low).is_empty());
        assert!(feed(&mut d, &[(5350, 30)]).is_empty());
        let low: Vec<_> = (5355..=6600).step_by(5).map(|t| (t, 5)).collect();
        assert_eq!(
            feed(&mut d, &low),
            vec![(6555, Transition::Recovered(Metric::Cpu, 5))]
        );
        assert!(!d.degraded());
    }

    #[test]
    fn each_further_window_above_the_high_mark_raises_sustained() {
        let mut d = Detector::new(DegradationConfig {
            raise_after: Duration::from_secs(10),
            ..DegradationConfig::default()
        });
        let load: Vec<_> = (0..=35).step_by(5).map(|t| (t, 90)).collect();
        let got: Vec<(u64, Transition)> = feed(&mut d, &load);
        assert_eq!(
            got,
            vec![
                (10, Transition::Degraded(Metric::Cpu, 90)),
                (20, Transition::Sustained(Metric::Cpu, 90)),
                (30, Transition::Sustained(Metric::Cpu, 90)),
            ]
        );
        // A dip between the marks restarts the window.
        assert!(feed(&mut d, &[(36, 50), (40, 90), (45, 90)]).is_empty());
        assert_eq!(
            feed(&mut d, &[(50, 90)]),
            vec![(50, Transition::Sustained(Metric::Cpu, 90))]
        );
    }

    #[test]
    fn a_missing_reading_breaks_the_run() {
        let mut d = Detector::new(DegradationConfig {
            raise_after: Duration::from_secs(10),
            ..DegradationConfig::default()
        });
        assert!(feed(&mut d, &[(0, 90), (5, 90)]).is_empty());
        assert!(d
            .observe(&Resources::default(), Duration::from_secs(8))
            .is_empty());
        assert!(feed(&mut d, &[(10, 90), (15, 90)]).is_empty());
        assert_eq!(feed(&mut d, &[(20, 90)]).len(), 1);
    }
}
