//! `sysinfo`: this node's resource figures (load, memory, uptime, read from `/proc`), and
//! threshold alerts: a request may name limits, and the answer lists every figure past its limit.
//!
//! Request (namespace [`NAMESPACE`]): `<get/>`, or `<get memory-pct="90" load-per-core="2"/>`;
//! answer: `<figures load1 cores load-per-core memory-pct mem-total-kb mem-available-kb
//! uptime-s><alert metric value limit/>…</figures>`.
#![deny(missing_docs)]

use dci_peerlet::{
    first_attribute, Context, Envelope, Kind, Payload, Peerlet, PeerletType, Refusal, Uuid,
};

/// The sysinfo peerlet's namespace.
pub const NAMESPACE: &str = "urn:dci:sysinfo:1";
/// Its application type.
pub const APP: &str = "sysinfo";

/// Makes sysinfo instances.
pub struct SysinfoType;

impl PeerletType for SysinfoType {
    fn app(&self) -> &str {
        APP
    }

    fn create(&self, _instance: Uuid) -> Box<dyn Peerlet> {
        Box::new(Sysinfo)
    }

    fn read_only(&self) -> &[&str] {
        &["get"]
    }
}

/// One sysinfo instance (it keeps no state).
pub struct Sysinfo;

/// The figures read now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// One-minute load average.
    pub load1: f64,
    /// Online CPUs.
    pub cores: usize,
    /// Memory in use, percent.
    pub memory_pct: f64,
    /// Total memory, KiB.
    pub mem_total_kb: u64,
    /// Available memory, KiB.
    pub mem_available_kb: u64,
    /// Seconds since boot.
    pub uptime_s: u64,
}

/// Reads the figures from `/proc`; a missing file reads as zeros.
pub fn read() -> Figures {
    let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let first_f64 = |s: &str| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let meminfo = text("/proc/meminfo");
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (total, available) = (field("MemTotal:"), field("MemAvailable:"));
    Figures {
        load1: first_f64(&text("/proc/loadavg")),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_pct: if total == 0 {
            0.0
        } else {
            100.0 * (total - available.min(total)) as f64 / total as f64
        },
        mem_total_kb: total,
        mem_available_kb: available,
        uptime_s: first_f64(&text("/proc/uptime")) as u64,
    }
}

/// The answer payload for `f` under the limits of `request` (if any).
pub fn answer(f: &Figures, request: &Payload) -> Result<Payload, Refusal> {
    let per_core = f.load1 / f.cores.max(1) as f64;
    let mut alerts = String::new();
    for (metric, value) in [("memory-pct", f.memory_pct), ("load-per-core", per_core)] {
        if let Some(limit) = first_attribute(request, metric) {
            let limit: f64 = limit
                .parse()
                .map_err(|_| Refusal::new("bad-payload", format!("{metric} is not a number")))?;
            if value > limit {
                alerts.push_str(&format!(
                    "<alert metric=\"{metric}\" value=\"{value:.2}\" limit=\"{limit}\"/>"
                ));
            }
        }
    }
    let xml = format!(
        "<figures xmlns=\"{NAMESPACE}\" load1=\"{:.2}\" cores=\"{}\" load-per-core=\"{per_core:.2}\" memory-pct=\"{:.1}\" mem-total-kb=\"{}\" mem-available-kb=\"{}\" uptime-s=\"{}\">{alerts}</figures>",
        f.load1, f.cores, f.memory_pct, f.mem_total_kb, f.mem_available_kb, f.uptime_s
    );
    Payload::new(xml).map_err(|e| Refusal::new("internal", e.to_string()))
}

impl Peerlet for Sysinfo {
    fn handle(&mut self, env: &Envelope, ctx: &mut Context<'_>) -> Result<(), Refusal> {
        if env.kind != Kind::Request {
            return Ok(());
        }
        let p = env.payload.as_str();
        let is_get = p.trim_start().starts_with("<get") && p.contains(NAMESPACE);
        if !(p.is_empty() || is_get) {
            return Err(Refusal::new(
                "bad-payload",
                "sysinfo expects <get xmlns=\"urn:dci:sysinfo:1\"/>",
            ));
        }
        let payload = answer(&read(), &env.payload)?;
        ctx.reply(env, payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_past_their_limits_raise_alerts_and_others_do_not() {
        let f = Figures {
            load1: 4.0,
            cores: 2,
            memory_pct: 50.0,
            mem_total_kb: 100,
            mem_available_kb: 50,
            uptime_s: 1,
        };
        let req = Payload::new(
            "<get xmlns=\"urn:dci:sysinfo:1\" memory-pct=\"90\" load-per-core=\"1.5\"/>",
        )
        .unwrap();
        let a = answer(&f, &req).unwrap();
        assert!(a.as_str().contains("metric=\"load-per-core\""));
        assert!(!a.as_str().contains("metric=\"memory-pct\""));
    }

    #[test]
    fn this_host_has_figures() {
        let f = read();
        assert!(f.cores >= 1 && f.mem_total_kb > 0);
    }
}
