//! Operator commands the agent runs at given moments (paging on a notice, before a hand-over,
//! after a takeover): program and arguments from the config, the facts in environment variables,
//! standard input closed, killed after a timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The `[moves]` commands: what an operator runs around a hand-over, e.g. to quiesce an
/// application before the holder's last backup, and to start it on the new holder.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MoveHooks {
    /// Run on the holder before it hands a blade over (a declared failover, a move, a step of a
    /// cascade or swap), before its last backup; the hand-over goes on if it fails. Environment:
    /// `DCI_BLADE`, `DCI_EPOCH` (the holder's), `DCI_TO` (the taker's name).
    pub pre: Vec<String>,
    /// Run on the new holder once its takeover's restore is done. Environment: `DCI_BLADE`,
    /// `DCI_EPOCH` (the new one), `DCI_RESTORE` (`ok`, or the restore's error code).
    pub post: Vec<String>,
    /// How long either may run before it is killed.
    pub timeout: Duration,
}

/// Runs `command` (program and arguments; it must not be empty) with `env` added to the agent's
/// environment, and waits for it. `Err` says in one line why it failed: it could not start, was
/// killed after `timeout`, or exited non-zero (with its standard error).
pub async fn run(
    command: &[String],
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("no command".into());
    };
    let mut cmd = tokio::process::Command::new(PathBuf::from(program));
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!("{program} killed after {timeout:?}")),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(crate::config::one_line(&format!(
            "{program} {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        ["sh", "-c", script].map(String::from).to_vec()
    }

    #[tokio::test]
    async fn a_command_gets_its_environment_and_fails_in_one_line() {
        let t = Duration::from_secs(10);
        let env = [("DCI_BLADE", "b1".to_string())];
        assert_eq!(run(&sh("test \"$DCI_BLADE\" = b1"), &env, t).await, Ok(()));
        let err = run(&sh("echo no >&2; echo such >&2; exit 3"), &env, t)
            .await
            .unwrap_err();
        assert!(
            err.contains("exit status: 3") && !err.contains('\n'),
            "{err}"
        );
        let err = run(&sh("sleep 5"), &env, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        let missing = ["/no/such/program".to_string()];
        assert!(run(&missing, &env, t)
            .await
            .unwrap_err()
            .contains("cannot run"));
    }
}
