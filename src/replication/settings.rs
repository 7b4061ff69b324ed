//! The `[backup]` settings: what is backed up, how, when, and where to.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backup::Method;

/// The `[backup]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// The blade's data set.
    pub root: Option<PathBuf>,
    /// Holders per blade, besides its own node.
    pub replication_factor: Option<usize>,
    /// Directory names (or paths relative to the root) left out.
    pub exclude_dirs: Option<Vec<String>>,
    /// File extensions left out.
    pub exclude_extensions: Option<Vec<String>>,
    /// `snapshot` or `delta`.
    pub method: Option<Method>,
    /// zstd-compress blocks.
    pub compress: Option<bool>,
    /// When to back up: `hourly`, `daily HH:MM`, `weekly DAY HH:MM`, `every DURATION` (UTC).
    pub schedule: Option<Vec<String>>,
    /// Archives older than this are removed, e.g. `30d`.
    pub aging: Option<String>,
    /// Only nodes in these zones hold data.
    pub zones: Option<Vec<String>>,
    /// Node names that hold this blade's data instead of the automatic choice.
    pub holders: Option<Vec<String>>,
    /// How long a holder must be dead before another takes its place, e.g. `60s`.
    pub repair_grace: Option<String>,
    /// Time between peersync rounds, e.g. `2s`.
    pub sync_interval: Option<String>,
    /// Time between garbage collections, e.g. `10m`.
    pub gc_interval: Option<String>,
    /// An unreferenced block younger than this is kept (a push may still need it), e.g. `1h`.
    pub gc_grace: Option<String>,
    /// Time between scrubs (every stored block read and checked), e.g. `1d`.
    pub scrub_interval: Option<String>,
    /// Watch the root (inotify) and back changes up as they happen.
    pub continuous: Option<bool>,
    /// Directories a restore asked by another node may write into, besides the backup root and
    /// `<data-dir>/restores` (an operator on this node's own socket may restore anywhere).
    pub restore_into: Option<Vec<PathBuf>>,
}

/// One schedule rule, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// At the top of every hour.
    Hourly,
    /// Every day at this second of the day.
    Daily(u64),
    /// Every week on this day (0 = Monday) at this second of the day.
    Weekly(u64, u64),
    /// Every so many seconds since the epoch.
    Every(u64),
}

/// The settings an operator changed at run time (`dcish configure`, the console), kept in the
/// data dir: each field that is set wins over the config file, so a change survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// The backup root.
    pub root: Option<PathBuf>,
    /// Holders per blade.
    pub replication_factor: Option<usize>,
    /// Directory exclusions.
    pub exclude_dirs: Option<Vec<String>>,
    /// Extension exclusions.
    pub exclude_extensions: Option<Vec<String>>,
    /// Schedule rules, as written.
    pub schedule: Option<Vec<String>>,
}

impl Overrides {
    /// `later`'s set fields replace these.
    pub fn merge(&mut self, later: Overrides) {
        let Overrides {
            root,
            replication_factor,
            exclude_dirs,
            exclude_extensions,
            schedule,
        } = later;
        self.root = root.or(self.root.take());
        self.replication_factor = replication_factor.or(self.replication_factor);
        self.exclude_dirs = exclude_dirs.or(self.exclude_dirs.take());
        self.exclude_extensions = exclude_extensions.or(self.exclude_extensions.take());
        self.schedule = schedule.or(self.schedule.take());
    }
}

/// Validated backup settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupConfig {
    /// The data set; `None` on a node that only holds others' data.
    pub root: Option<PathBuf>,
    /// Holders per blade.
    pub factor: usize,
    /// Directory exclusions.
    pub exclude_dirs: Vec<String>,
    /// Extension exclusions.
    pub exclude_exts: Vec<String>,
    /// Snapshot or delta.
    pub method: Method,
    /// zstd.
    pub compress: bool,
    /// When to back up.
    pub schedule: Vec<Rule>,
    /// Archive age limit.
    pub aging: Option<Duration>,
    /// Zones allowed to hold data.
    pub zones: Vec<String>,
    /// Manual holders.
    pub holders: Vec<String>,
    /// Dead time before repair.
    pub repair_grace: Duration,
    /// Peersync period.
    pub sync_interval: Duration,
    /// Garbage collection period.
    pub gc_interval: Duration,
    /// Minimum age of a collected block.
    pub gc_grace: Duration,
    /// Scrub period.
    pub scrub_interval: Duration,
    /// Back changes up as they happen.
    pub continuous: bool,
    /// Where a restore asked by another node may write (the backup root counts too).
    pub restore_into: Vec<PathBuf>,
    /// Where a blade taken over lives (`<dir>/BLADE`; see [`data_set`]); set by the agent to
    /// `<data-dir>/blades`, not by configuration.
    pub takeover_dir: Option<PathBuf>,
    /// This node is a spare: it has no blade of its own. Set by the agent from its role.
    pub spare: bool,
}

impl BackupConfig {
    /// Where `blade`'s data set lives on node `node`: the backup root for the node's own blade,
    /// and on a spare (no blade of its own) for the blade it took over; `<takeover_dir>/BLADE`
    /// for a blade that an active node took over, so that its root, which keeps its own blade's
    /// stale copy, never mixes two blades' files (and for a blade a spare without a root took
    /// over).
    pub fn data_set(&self, node: &str, blade: &str) -> Option<PathBuf> {
        match (&self.root, &self.takeover_dir) {
            (Some(root), _) if blade == node || self.spare => Some(root.clone()),
            (_, Some(dir)) if blade != node => Some(dir.join(blade)),
            // Without a takeover directory (the service's unit tests), everything is in the root.
            (root, _) => root.clone(),
        }
    }
}

impl std::fmt::Display for Rule {
    /// The written form [`parse_rule`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let hm = |t: u64| format!("{:02}:{:02}", t / 3600, t / 60 % 60);
        match *self {
            Rule::Hourly => write!(f, "hourly"),
            Rule::Daily(t) => write!(f, "daily {}", hm(t)),
            Rule::Weekly(d, t) => write!(f, "weekly {} {}", DAYS[d as usize % 7], hm(t)),
            Rule::Every(s) => write!(f, "every {s}s"),
        }
    }
}

/// A bad setting: field, value, reason.
pub type SettingError = (&'static str, String, String);

/// Parses `90s`, `5m`, `2h`, `30d`, `1w` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "ms" => return Some(Duration::from_millis(n)),
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(mult)?))
}

fn time_of_day(s: &str) -> Option<u64> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

/// Parses one schedule rule.
pub fn parse_rule(s: &str) -> Option<Rule> {
    let words: Vec<&str> = s.split_whitespace().collect();
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    match words.as_slice() {
        ["hourly"] => Some(Rule::Hourly),
        ["daily"] => Some(Rule::Daily(0)),
        ["daily", t] => Some(Rule::Daily(time_of_day(t)?)),
        ["weekly"] => Some(Rule::Weekly(0, 0)),
        ["weekly", d, t] => Some(Rule::Weekly(
            DAYS.iter().position(|x| d.eq_ignore_ascii_case(x))? as u64,
            time_of_day(t)?,
        )),
        ["every", d] => {
            let d = parse_duration(d)?.as_secs();
            (d > 0).then_some(Rule::Every(d))
        }
        _ => None,
    }
}

/// The first time strictly after `now` (seconds since the epoch, UTC) that a rule fires.
pub fn next_due(rules: &[Rule], now: u64) -> Option<u64> {
    rules
        .iter()
        .map(|r| {
            let (period, offset) = match *r {
                Rule::Hourly => (3600, 0),
                Rule::Daily(t) => (86_400, t),
                // The epoch was a Thursday: Monday 00:00 is 4 days later in the week's cycle.
                Rule::Weekly(day, t) => (604_800, (4 * 86_400 + day * 86_400 + t) % 604_800),
                Rule::Every(p) => (p, 0),
            };
            // The last firing at or before now, then one period on.
            let (now, period, offset) = (i128::from(now), i128::from(period), i128::from(offset));
            let last = now - (now - offset).rem_euclid(period);
            (last + period) as u64
        })
        .min()
}

impl BackupConfig {
    /// Validates the file's table with the command line's `--backup-root` and
    /// `--replication-factor` over it.
    pub fn from_file(
        file: &BackupFile,
        root: Option<PathBuf>,
        factor: Option<usize>,
    ) -> Result<BackupConfig, SettingError> {
        let dur = |field: &'static str, v: &Option<String>, d: Duration| match v {
            None => Ok(d),
            Some(s) => parse_duration(s).ok_or_else(|| {
                (
                    field,
                    s.clone(),
                    "not a duration like 90s, 5m, 2h, 30d".to_string(),
                )
            }),
        };
        let schedule = parse_schedule(file.schedule.iter().flatten())?;
        let factor = check_factor(factor.or(file.replication_factor).unwrap_or(2))?;
        let sync_interval = dur(
            "backup.sync_interval",
            &file.sync_interval,
            Duration::from_secs(2),
        )?;
        if sync_interval.is_zero() {
            return Err((
                "backup.sync_interval",
                "0".into(),
                "must be greater than zero".into(),
            ));
        }
        let gc_interval = dur(
            "backup.gc_interval",
            &file.gc_interval,
            Duration::from_secs(600),
        )?;
        if gc_interval.is_zero() {
            return Err((
                "backup.gc_interval",
                "0".into(),
                "must be greater than zero".into(),
            ));
        }
        let restore_into = file.restore_into.clone().unwrap_or_default();
        if let Some(dir) = restore_into.iter().find(|d| !d.is_absolute()) {
            return Err((
                "backup.restore_into",
                dir.display().to_string(),
                "must be an absolute path".into(),
            ));
        }
        Ok(BackupConfig {
            restore_into,
            takeover_dir: None,
            spare: false,
            root: root.or(file.root.clone()),
            factor,
            exclude_dirs: file.exclude_dirs.clone().unwrap_or_default(),
            exclude_exts: file.exclude_extensions.clone().unwrap_or_default(),
            method: file.method.unwrap_or(Method::Delta),
            compress: file.compress.unwrap_or(true),
            schedule,
            aging: file
                .aging
                .as_ref()
                .map(|a| dur("backup.aging", &Some(a.clone()), Duration::ZERO))
                .transpose()?,
            zones: file.zones.clone().unwrap_or_default(),
            holders: file.holders.clone().unwrap_or_default(),
            repair_grace: dur(
                "backup.repair_grace",
                &file.repair_grace,
                Duration::from_secs(60),
            )?,
            sync_interval,
            gc_interval,
            gc_grace: dur("backup.gc_grace", &file.gc_grace, Duration::from_secs(3600))?,
            scrub_interval: match dur(
                "backup.scrub_interval",
                &file.scrub_interval,
                Duration::from_secs(86_400),
            )? {
                d if d.is_zero() => {
                    return Err((
                        "backup.scrub_interval",
                        "0".into(),
                        "must be greater than zero".into(),
                    ))
                }
                d => d,
            },
            continuous: file.continuous.unwrap_or(false),
        })
    }
}

fn parse_schedule<'a>(
    rules: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<Rule>, SettingError> {
    rules
        .into_iter()
        .map(|s| {
            parse_rule(s).ok_or_else(|| {
                (
                    "backup.schedule",
                    s.clone(),
                    "expected hourly, daily HH:MM, weekly DAY HH:MM or every DURATION".into(),
                )
            })
        })
        .collect()
}

fn check_factor(factor: usize) -> Result<usize, SettingError> {
    if factor > 16 {
        return Err((
            "replication-factor",
            factor.to_string(),
            "at most 16".into(),
        ));
    }
    Ok(factor)
}

/// Exclusion entries: neither empty nor holding a NUL (a name no file system has); a directory
/// entry neither absolute nor climbing out, since it is matched relative to the root.
fn check_names(field: &'static str, names: &[String], dirs: bool) -> Result<(), SettingError> {
    for n in names {
        let bad = if n.trim().is_empty() {
            Some("an entry is empty")
        } else if n.contains('\0') {
            Some("an entry holds a NUL byte")
        } else if dirs && (n.starts_with('/') || n.split('/').any(|p| p == "..")) {
            Some("a directory is a name or a path relative to the backup root")
        } else if !dirs && n.trim_start_matches('.').contains(['/', '.']) {
            Some("an extension is one word like mp3, with or without its dot")
        } else {
            None
        };
        if let Some(why) = bad {
            return Err((field, n.clone(), why.into()));
        }
    }
    Ok(())
}

impl BackupConfig {
    /// These settings with an operator's `overrides` applied, validated like the file's.
    pub fn with_overrides(&self, o: &Overrides) -> Result<BackupConfig, SettingError> {
        let mut cfg = self.clone();
        if let Some(root) = &o.root {
            if !root.is_absolute() {
                return Err((
                    "backup.root",
                    root.display().to_string(),
                    "must be an absolute path".into(),
                ));
            }
            cfg.root = Some(root.clone());
        }
        if let Some(f) = o.replication_factor {
            cfg.factor = check_factor(f)?;
        }
        if let Some(d) = &o.exclude_dirs {
            check_names("backup.exclude_dirs", d, true)?;
            cfg.exclude_dirs = d.clone();
        }
        if let Some(x) = &o.exclude_extensions {
            check_names("backup.exclude_extensions", x, false)?;
            cfg.exclude_exts = x.clone();
        }
        if let Some(s) = &o.schedule {
            cfg.schedule = parse_schedule(s)?;
        }
        Ok(cfg)
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig::from_file(&BackupFile::default(), None, None)
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rules_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_rule("daily 02:30"), Some(Rule::Daily(9000)));
        assert_eq!(parse_rule("weekly sun 00:00"), Some(Rule::Weekly(6, 0)));
        assert_eq!(parse_rule("daily 25:00"), None);
        assert_eq!(parse_rule("every 0s"), None);
        let file = BackupFile {
            schedule: Some(vec!["sometimes".into()]),
            ..BackupFile::default()
        };
        assert_eq!(
            BackupConfig::from_file(&file, None, None).unwrap_err().0,
            "backup.schedule"
        );
    }

    #[test]
    fn overrides_replace_only_what_they_set_and_bad_ones_say_which_field() {
        let base = BackupConfig::default();
        let o = Overrides {
            exclude_dirs: Some(vec!["cache".into(), "build/out".into()]),
            exclude_extensions: Some(vec![".iso".into(), "mp3".into()]),
            schedule: Some(vec!["weekly sun 06:00".into()]),
            ..Overrides::default()
        };
        let cfg = base.with_overrides(&o).unwrap();
        assert_eq!(cfg.exclude_dirs, ["cache", "build/out"]);
        assert_eq!(cfg.exclude_exts, [".iso", "mp3"]);
        assert_eq!(cfg.schedule, [Rule::Weekly(6, 6 * 3600)]);
        assert_eq!((cfg.factor, &cfg.root), (base.factor, &base.root));

        let mut merged = o.clone();
        merged.merge(Overrides {
            replication_factor: Some(3),
            exclude_dirs: Some(Vec::new()),
            ..Overrides::default()
        });
        assert_eq!(merged.replication_factor, Some(3));
        assert_eq!(merged.exclude_dirs, Some(Vec::new()));
        assert_eq!(merged.schedule, o.schedule);

        for (bad, field) in [
            (
                Overrides {
                    root: Some("rel/dir".into()),
                    ..Overrides::default()
                },
                "backup.root",
            ),
            (
                Overrides {
                    replication_factor: Some(17),
                    ..Overrides::default()
                },
                "replication-factor",
            ),
            (
                Overrides {
                    exclude_dirs: Some(vec!["../up".into()]),
                    ..Overrides::default()
                },
                "backup.exclude_dirs",
            ),
            (
                Overrides {
                    exclude_dirs: Some(vec![" ".into()]),
                    ..Overrides::default()
                },
                "backup.exclude_dirs",
            ),
            (
                Overrides {
                    exclude_extensions: Some(vec!["tar.gz".into()]),
                    ..Overrides::default()
                },
                "backup.exclude_extensions",
            ),
            (
                Overrides {
                    schedule: Some(vec!["now and then".into()]),
                    ..Overrides::default()
                },
                "backup.schedule",
            ),
        ] {
            assert_eq!(base.with_overrides(&bad).unwrap_err().0, field);
        }
    }

    #[test]
    fn every_rule_is_written_as_it_is_read() {
        for r in [
            Rule::Hourly,
            Rule::Daily(9000),
            Rule::Weekly(6, 60),
            Rule::Every(90),
        ] {
            assert_eq!(parse_rule(&r.to_string()), Some(r));
        }
    }

    #[test]
    fn the_next_due_time_follows_each_rule() {
        // 1970-01-05 was a Monday; 1 hour and 10 s past midnight.
        let monday = 4 * 86_400;
        let now = monday + 3610;
        assert_eq!(next_due(&[Rule::Hourly], now), Some(monday + 7200));
        assert_eq!(
            next_due(&[Rule::Daily(1800)], now),
            Some(monday + 86_400 + 1800)
        );
        assert_eq!(next_due(&[Rule::Daily(7200)], now), Some(monday + 7200));
        assert_eq!(next_due(&[Rule::Weekly(0, 7200)], now), Some(monday + 7200));
        assert_eq!(next_due(&[Rule::Weekly(1, 0)], now), Some(monday + 86_400));
        assert_eq!(next_due(&[Rule::Every(60)], now), Some(now - 10 + 60));
        assert_eq!(
            next_due(&[Rule::Hourly, Rule::Every(60)], now),
            Some(now - 10 + 60)
        );
        assert_eq!(next_due(&[], now), None);
    }
}
