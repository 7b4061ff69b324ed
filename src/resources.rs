//! This host's resource figures (CPU, memory, disk use, load), as carried in member metadata and
//! watched by the degradation detector. Read from `/proc` and `statvfs`; a figure that cannot be
//! read is left out rather than guessed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A resource figure the degradation detector can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// CPU busy, percent of all cores, over the last sampling interval.
    Cpu,
    /// Memory in use (total less available), percent.
    Memory,
    /// Disk in use on the data dir's file system, percent.
    Disk,
    /// One-minute load average per core, in percent (100 = one runnable task per core).
    Load,
}

impl Metric {
    /// The spelling in config, logs and notices.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::Disk => "disk",
            Metric::Load => "load",
        }
    }
}

/// One reading, in whole percent; `None` for a figure that could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU busy.
    pub cpu: Option<u8>,
    /// Memory used.
    pub memory: Option<u8>,
    /// Disk used.
    pub disk: Option<u8>,
    /// Load per core (may exceed 100; capped at 255).
    pub load: Option<u8>,
}

impl Resources {
    /// The value of one metric.
    pub fn get(&self, metric: Metric) -> Option<u8> {
        match metric {
            Metric::Cpu => self.cpu,
            Metric::Memory => self.memory,
            Metric::Disk => self.disk,
            Metric::Load => self.load,
        }
    }

    /// Whether `other` differs enough to be worth announcing (5 points on any figure), so that
    /// metadata gossip is not spent on noise.
    pub fn differs(&self, other: &Resources, points: u8) -> bool {
        [Metric::Cpu, Metric::Memory, Metric::Disk, Metric::Load]
            .into_iter()
            .any(|m| match (self.get(m), other.get(m)) {
                (Some(a), Some(b)) => a.abs_diff(b) >= points,
                (a, b) => a.is_some() != b.is_some(),
            })
    }
}

/// Reads the figures; keeps the previous CPU counters to compute busy time between calls.
pub struct Sampler {
    disk_path: PathBuf,
    last_cpu: Option<(u64, u64)>,
}

impl Sampler {
    /// Measures disk use on the file system holding `disk_path`.
    pub fn new(disk_path: &Path) -> Sampler {
        Sampler {
            disk_path: disk_path.into(),
            last_cpu: None,
        }
    }

    /// One reading. The CPU figure is `None` on the first call (there is no interval yet).
    pub fn sample(&mut self) -> Resources {
        let cpu_now = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cpu_counters(&s));
        let cpu = match (self.last_cpu, cpu_now) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some(percent(busy1.saturating_sub(busy0), total1 - total0))
            }
            _ => None,
        };
        if cpu_now.is_some() {
            self.last_cpu = cpu_now;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Resources {
            cpu,
            memory: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|s| memory_used(&s)),
            disk: disk_used(&self.disk_path),
            load: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .map(|l| (l / cores * 100.0).round().clamp(0.0, 255.0) as u8),
        }
    }
}

fn percent(part: u64, whole: u64) -> u8 {
    if whole == 0 {
        return 0;
    }
    ((part as f64 / whole as f64) * 100.0)
        .round()
        .clamp(0.0, 100.0) as u8
}

/// (busy, total) jiffies from the `cpu` line of `/proc/stat`.
fn cpu_counters(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn memory_used(meminfo: &str) -> Option<u8> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some(percent(total.saturating_sub(available), total))
}

fn disk_used(path: &Path) -> Option<u8> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized, writable struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let total = st.f_blocks as u64;
    let free = st.f_bavail as u64;
    Some(percent(total.saturating_sub(free), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_figures_come_from_proc_text() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_counters(stat), Some((200, 1000)));
        assert_eq!(cpu_counters("intr 1 2\n"), None);
        let meminfo = "MemTotal:       1000 kB\nMemFree: 10 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory_used(meminfo), Some(75));
        assert_eq!(memory_used("MemTotal: 1000 kB\n"), None);
    }

    #[test]
    fn a_real_sample_reads_this_host() {
        let mut s = Sampler::new(Path::new("/"));
        let first = s.sample();
        assert_eq!(first.cpu, None, "no interval yet");
        assert!(first.memory.is_some_and(|m| m <= 100));
        assert!(first.disk.is_some_and(|d| d <= 100));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(s.sample().cpu.is_some_and(|c| c <= 100));
    }

    #[test]
    fn only_real_changes_are_worth_announcing() {
        let a = Resources {
            cpu: Some(10),
            memory: Some(50),
            disk: None,
            load: Some(3),
        };
        let mut b = a;
        b.cpu = Some(13);
        assert!(!a.differs(&b, 5));
        b.cpu = Some(15);
        assert!(a.differs(&b, 5));
        b = a;
        b.disk = Some(1);
        assert!(a.differs(&b, 5));
    }
}
