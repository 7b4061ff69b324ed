//! `dcish backup now`, `archives` and `restore`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use dci_proto::archive::ArchiveRef;
use dci_proto::backup::{
    archives_from_payload, restored_from_payload, settings_from_payload, ArchiveInfo,
    BackupRequest, BladeSettings, ListEntry, RestoreArgs, SettingsChange,
};

use super::client::{Client, ClientError};

/// Waited backups and restores move whole data sets; they get this long.
const LONG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `dcish backup ...`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Make an archive now and return when every holder has it (exit 0) or it failed.
    Now {
        /// The blade [default: the agent's own].
        blade: Option<String>,
        /// Return once the archive is made, without waiting for the holders.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `dcish restore ...`.
#[derive(Debug, Args)]
pub struct RestoreCommand {
    /// The blade whose archives are restored.
    pub blade: String,
    /// Restore sequentially up to and including this archive: EPOCH.NUMBER, or the number
    /// alone where only one archive has it [default: the latest].
    #[arg(long, value_name = "ID")]
    pub archive: Option<ArchiveRef>,
    /// Restore only paths matching this glob (relative to the backup root); repeatable.
    #[arg(long = "path", value_name = "GLOB")]
    pub paths: Vec<String>,
    /// Directory to restore into, on the restoring node [default: its backup root].
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// The node (by name) that restores [default: the agent's own].
    #[arg(long, value_name = "NODE")]
    pub on: Option<String>,
}

/// `dcish configure BLADE ...`: each option given replaces that setting.
#[derive(Debug, Args)]
pub struct ConfigureCommand {
    /// The blade.
    pub blade: String,
    /// The backup root, an absolute directory on the node acting as the blade.
    #[arg(long, value_name = "DIR")]
    pub root: Option<String>,
    /// How many other nodes keep the blade's archives (0 to 16).
    #[arg(long, value_name = "N")]
    pub factor: Option<u64>,
    /// Directories left out, comma-separated (names, or paths relative to the root); an empty
    /// value clears the list.
    #[arg(long, value_name = "LIST")]
    pub exclude_dirs: Option<String>,
    /// File extensions left out, comma-separated; an empty value clears the list.
    #[arg(long, value_name = "LIST")]
    pub exclude_exts: Option<String>,
    /// When to back up (UTC): `hourly`, `daily HH:MM`, `weekly DAY HH:MM`, `every DURATION`;
    /// repeatable. Replaces the schedule.
    #[arg(long, value_name = "RULE")]
    pub schedule: Vec<String>,
    /// Back up only on demand: clear the schedule.
    #[arg(long, conflicts_with = "schedule")]
    pub no_schedule: bool,
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

fn settings_out(b: &BladeSettings, json: bool) -> String {
    if json {
        return serde_json::json!({
            "blade": b.blade, "root": b.root, "factor": b.factor,
            "exclude_dirs": b.exclude_dirs, "exclude_exts": b.exclude_exts,
            "schedule": b.schedule, "method": b.method, "continuous": b.continuous,
        })
        .to_string();
    }
    let none = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "blade               {}\nroot                {}\nreplication factor  {}\nexclude dirs        {}\nexclude extensions  {}\nschedule (UTC)      {}\nmethod              {}{}",
        b.blade,
        b.root.as_deref().unwrap_or("- (holds others' data only)"),
        b.factor,
        none(&b.exclude_dirs),
        none(&b.exclude_exts),
        none(&b.schedule),
        b.method,
        if b.continuous { ", continuous" } else { "" }
    )
}

/// `dcish settings BLADE`.
pub async fn settings(client: &mut Client, blade: &str, json: bool) -> Result<String, ClientError> {
    let request = BackupRequest::GetSettings {
        blade: blade.into(),
    };
    let payload = client.request(request.to_payload()).await?;
    Ok(settings_out(
        &settings_from_payload(&payload).map_err(protocol)?,
        json,
    ))
}

/// `dcish configure BLADE ...`.
pub async fn configure(
    client: &mut Client,
    c: &ConfigureCommand,
    json: bool,
) -> Result<String, ClientError> {
    let request = BackupRequest::Configure(SettingsChange {
        blade: c.blade.clone(),
        root: c.root.clone(),
        factor: c.factor,
        exclude_dirs: c.exclude_dirs.as_deref().map(comma_list),
        exclude_exts: c.exclude_exts.as_deref().map(comma_list),
        schedule: (c.no_schedule || !c.schedule.is_empty()).then(|| c.schedule.clone()),
    });
    let payload = client.request(request.to_payload()).await?;
    Ok(settings_out(
        &settings_from_payload(&payload).map_err(protocol)?,
        json,
    ))
}

fn protocol(e: dci_proto::ProtoError) -> ClientError {
    ClientError::Protocol {
        path: PathBuf::from("control socket"),
        reason: e.to_string(),
    }
}

fn time(ms: u64) -> String {
    // UTC, to the second, without a date crate: days since the epoch to a civil date.
    let s = ms / 1000;
    let (days, rem) = (s / 86_400, s % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The `archives --json` document.
pub fn archives_json(archives: &[ArchiveInfo]) -> String {
    let rows: Vec<serde_json::Value> = archives
        .iter()
        .map(|a| {
            serde_json::json!({
                "id": a.id.to_string(),
                "epoch": a.id.epoch,
                "time": a.time_ms,
                "kind": a.kind,
                "bytes": a.bytes,
                "files": a.files,
                "skipped": a.skipped,
                "complete": a.complete,
                "holders": a.holders,
                "lacking": a.lacking,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

fn archives_text(archives: &[ArchiveInfo]) -> String {
    if archives.is_empty() {
        return "no archives".into();
    }
    let mut out = format!(
        "{:>4}  {:<19}  {:<8}  {:>10}  {:>7}  {:<10}  {}\n",
        "ID", "TIME (UTC)", "KIND", "BYTES", "FILES", "COMPLETE", "HOLDERS"
    );
    for a in archives {
        let complete = if a.complete {
            "yes".to_string()
        } else if a.lacking.is_empty() {
            "no".to_string()
        } else {
            format!("no (lacking: {})", a.lacking.join(", "))
        };
        out.push_str(&format!(
            "{:>4}  {:<19}  {:<8}  {:>10}  {:>7}  {:<10}  {}\n",
            a.id,
            time(a.time_ms),
            a.kind,
            bytes(a.bytes),
            a.files,
            complete,
            a.holders.join(", ")
        ));
    }
    out.trim_end().to_string()
}

/// `dcish backup now`.
pub async fn backup(
    client: &mut Client,
    command: &BackupCommand,
    json: bool,
) -> Result<String, ClientError> {
    let BackupCommand::Now { blade, no_wait } = command;
    let request = BackupRequest::Now {
        blade: blade.clone(),
        wait: !no_wait,
    };
    let payload = client
        .request_within(request.to_payload(), LONG_TIMEOUT)
        .await?;
    let archives = archives_from_payload(&payload).map_err(protocol)?;
    Ok(match (json, archives.first()) {
        (true, _) => archives_json(&archives),
        (false, Some(a)) if a.complete => format!(
            "archive {} ({}, {} files, {}) is complete on {}",
            a.id,
            a.kind,
            a.files,
            bytes(a.bytes),
            if a.holders.is_empty() {
                "this node (replication factor 0)".to_string()
            } else {
                a.holders.join(", ")
            }
        ),
        (false, Some(a)) => format!(
            "archive {} ({}, {} files, {}) made; pushing to the holders",
            a.id,
            a.kind,
            a.files,
            bytes(a.bytes)
        ),
        (false, None) => "no archive made".into(),
    })
}

/// `dcish archives BLADE`.
pub async fn archives(client: &mut Client, blade: &str, json: bool) -> Result<String, ClientError> {
    let archives = archive_list(client, blade).await?;
    Ok(if json {
        archives_json(&archives)
    } else {
        archives_text(&archives)
    })
}

/// A listing as `--json` prints it.
pub(crate) fn listing_json(entries: &[ListEntry]) -> String {
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "path": e.path, "kind": e.kind, "size": e.size,
                "mode": format!("{:o}", e.mode), "mtime": e.mtime, "target": e.target,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// A listing for people: mode, size, name (`/` after directories, `-> target` after links).
pub(crate) fn listing_text(entries: &[ListEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            let name = e.path.rsplit('/').next().unwrap_or(&e.path);
            let suffix = match (&e.kind[..], &e.target) {
                ("dir", _) => "/".to_string(),
                (_, Some(t)) => format!(" -> {t}"),
                _ => String::new(),
            };
            format!("{:04o}  {:>10}  {name}{suffix}", e.mode, bytes(e.size))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A directory of a blade's archived tree (the latest archive unless one is named), or
/// everything under it when `recursive`.
pub async fn ls(
    client: &mut Client,
    blade: &str,
    path: &str,
    archive: Option<ArchiveRef>,
    recursive: bool,
) -> Result<Vec<ListEntry>, ClientError> {
    let request = BackupRequest::Ls {
        blade: blade.into(),
        path: path.into(),
        archive,
        recursive,
    };
    let payload = client
        .request_within(request.to_payload(), Duration::from_secs(120))
        .await?;
    dci_proto::backup::listing_from_payload(&payload).map_err(protocol)
}

/// A file of a blade's archived tree (the latest archive unless one is named): its bytes.
pub async fn cat(
    client: &mut Client,
    blade: &str,
    path: &str,
    archive: Option<ArchiveRef>,
) -> Result<Vec<u8>, ClientError> {
    let request = BackupRequest::Cat {
        blade: blade.into(),
        path: path.into(),
        archive,
    };
    let payload = client
        .request_within(request.to_payload(), Duration::from_secs(300))
        .await?;
    dci_proto::backup::file_from_payload(&payload).map_err(protocol)
}

/// A blade's archives.
pub async fn archive_list(
    client: &mut Client,
    blade: &str,
) -> Result<Vec<ArchiveInfo>, ClientError> {
    let request = BackupRequest::Archives {
        blade: blade.into(),
    };
    let payload = client
        .request_within(request.to_payload(), Duration::from_secs(120))
        .await?;
    archives_from_payload(&payload).map_err(protocol)
}

/// `dcish restore BLADE ...`.
pub async fn restore(
    client: &mut Client,
    c: &RestoreCommand,
    json: bool,
) -> Result<String, ClientError> {
    // A relative target means the shell's directory when the local agent restores; another
    // node has no such directory, so there it must be absolute.
    let to = match &c.to {
        Some(p) if p.is_relative() && c.on.is_none() => Some(
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.clone()),
        ),
        other => other.clone(),
    };
    let request = BackupRequest::Restore(RestoreArgs {
        blade: c.blade.clone(),
        archive: c.archive,
        paths: c.paths.clone(),
        to: to.map(|p| p.display().to_string()),
        on: c.on.clone(),
    });
    let payload = client
        .request_within(request.to_payload(), LONG_TIMEOUT)
        .await?;
    let r = restored_from_payload(&payload).map_err(protocol)?;
    Ok(if json {
        serde_json::json!({
            "node": r.node,
            "target": r.target,
            "archives": r.archives,
            "entries": r.entries,
            "bytes": r.bytes,
            "refused": r.refused,
        })
        .to_string()
    } else {
        format!(
            "restored {} entries ({}) from {} archive(s) of {} into {} on {}{}",
            r.entries,
            bytes(r.bytes),
            r.archives,
            c.blade,
            r.target,
            r.node,
            if r.refused > 0 {
                format!("; refused {} unsafe entries", r.refused)
            } else {
                String::new()
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_printed_as_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
