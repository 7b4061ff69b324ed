//! The peerlet host: the registry of peerlet types, the running instances by GUID, start on
//! demand and idle stop. Sans-IO like the router: the driver hands it envelopes and the time, and
//! routes whatever the instances emit.
//!
//! Instance choice: an envelope naming an instance goes to that instance, which is started (with
//! that GUID) if it is not running, so that one conversation is one GUID on every node taking
//! part and two conversations never share an instance. An envelope naming none goes to the
//! type's default instance, started on first use. An instance that has handled nothing for the
//! configured idle time is stopped; its state goes with it (peerlets keep what must last in
//! their own storage).
//!
//! Built-in peerlets run inside [`Host::deliver`], so there is nothing to queue for them; an
//! external peerlet (a process) gets a bounded queue that holds envelopes until it is up.

pub mod external;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dci_peerlet::{
    error_payload, Context, Directory, Envelope, Identity, Kind, Outbox, Peerlet, PeerletType,
    Refusal, Sender, Uuid,
};

/// The application name the host signs its own refusals with.
pub const HOST_APP: &str = "peerlet-host";

/// The most instances one agent runs at once; more are refused, not started.
pub const MAX_INSTANCES: usize = 10_000;

/// Registers the peerlets built into `dcid`.
pub fn register_builtins(host: &mut Host) {
    host.register(Arc::new(dci_peerlet_echo::EchoType));
    host.register(Arc::new(dci_peerlet_chat::ChatType));
    host.register(Arc::new(dci_peerlet_sysinfo::SysinfoType));
}

/// How an instance runs.
enum Body {
    /// In the agent's process, called inline.
    Builtin(Box<dyn Peerlet>),
    /// A process fed through a bounded queue.
    External(external::Handle),
}

struct Instance {
    identity: Identity,
    body: Body,
    last_used: Duration,
}

/// What the host did so far.
#[derive(Debug, Default, Clone)]
pub struct HostStats {
    /// Instances started.
    pub started: u64,
    /// Instances stopped for idleness.
    pub stopped_idle: u64,
    /// Envelopes handed to instances.
    pub delivered: u64,
    /// Envelopes refused (unknown type, instance limit, peerlet refusal, full queue).
    pub refused: u64,
}

/// The registry and the running instances.
pub struct Host {
    builtins: HashMap<String, Arc<dyn PeerletType>>,
    externals: HashMap<String, Arc<external::Manifest>>,
    instances: HashMap<Uuid, Instance>,
    defaults: HashMap<String, Uuid>,
    node: String,
    blade: Option<String>,
    directory: Directory,
    outbox: Arc<dyn Outbox>,
    idle_after: Duration,
    stats: HostStats,
}

impl Host {
    /// An empty host for node `node` (holding `blade`), stopping instances idle for
    /// `idle_after`; instances post late envelopes to `outbox`.
    pub fn new(
        node: String,
        blade: Option<String>,
        outbox: Arc<dyn Outbox>,
        idle_after: Duration,
    ) -> Host {
        Host {
            builtins: HashMap::new(),
            externals: HashMap::new(),
            instances: HashMap::new(),
            defaults: HashMap::new(),
            node,
            blade,
            directory: Arc::new(Vec::new()),
            outbox,
            idle_after,
            stats: HostStats::default(),
        }
    }

    /// Registers a built-in peerlet type (replacing one of the same app type).
    pub fn register(&mut self, kind: Arc<dyn PeerletType>) {
        self.builtins.insert(kind.app().to_owned(), kind);
    }

    /// Registers an external peerlet described by a manifest; answers the one it replaced.
    /// Instances of the replaced one keep running until restarted or stopped for idleness.
    pub fn register_external(
        &mut self,
        manifest: external::Manifest,
    ) -> Result<Option<Arc<external::Manifest>>, Refusal> {
        if self.builtins.contains_key(&manifest.app) {
            return Err(Refusal::new(
                "built-in",
                format!("{} is a built-in peerlet", manifest.app),
            ));
        }
        Ok(self
            .externals
            .insert(manifest.app.clone(), Arc::new(manifest)))
    }

    /// Removes an external peerlet type and stops its instances.
    pub fn unregister_external(&mut self, app: &str) {
        if self.externals.remove(app).is_some() {
            self.restart(app);
        }
    }

    /// Stops every running instance of `app`, so that the next envelope starts it afresh (from
    /// its current manifest); answers how many were stopped.
    pub fn restart(&mut self, app: &str) -> usize {
        let before = self.instances.len();
        self.instances.retain(|_, i| i.identity.app != app);
        self.defaults.remove(app);
        before - self.instances.len()
    }

    /// The app types this host can start.
    pub fn apps(&self) -> Vec<String> {
        let mut apps: Vec<String> = self
            .builtins
            .keys()
            .chain(self.externals.keys())
            .cloned()
            .collect();
        apps.sort();
        apps
    }

    /// Replaces the directory instances read.
    pub fn set_directory(&mut self, directory: Directory) {
        self.directory = directory;
    }

    /// Running instances.
    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Running instances as (app, instance, idle for), by app then instance.
    pub fn running(&self, now: Duration) -> Vec<(String, Uuid, Duration)> {
        let mut rows: Vec<_> = self
            .instances
            .iter()
            .map(|(id, i)| {
                let idle = now.saturating_sub(i.last_used);
                (i.identity.app.clone(), *id, idle)
            })
            .collect();
        rows.sort();
        rows
    }

    /// Stops the instances of `app` (only `instance` when given); answers how many stopped.
    pub fn stop(&mut self, app: &str, instance: Option<Uuid>) -> usize {
        let Some(id) = instance else {
            return self.restart(app);
        };
        if self
            .instances
            .get(&id)
            .is_none_or(|i| i.identity.app != app)
        {
            return 0;
        }
        self.instances.remove(&id);
        self.defaults.retain(|_, d| *d != id);
        1
    }

    /// What the host did so far.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// Hands `env` to its instance (starting it if needed) and appends what the instance emitted,
    /// or the host's refusal, to `out`.
    pub fn deliver(&mut self, env: &Envelope, now: Duration, out: &mut Vec<Envelope>) {
        let Some(app) = env.target.app.clone() else {
            return self.refuse(env, out, "no-app", "the envelope names no application");
        };
        let id = match self.instance_for(&app, env.target.instance, now) {
            Ok(id) => id,
            Err(r) => return self.refuse(env, out, &r.code, &r.message),
        };
        let Some(instance) = self.instances.get_mut(&id) else {
            return self.refuse(env, out, "internal", "instance vanished");
        };
        instance.last_used = now;
        self.stats.delivered += 1;
        match &mut instance.body {
            Body::Builtin(peerlet) => {
                let mut ctx = Context::new(&instance.identity, &self.directory, &self.outbox, out);
                if let Err(refusal) = peerlet.handle(env, &mut ctx) {
                    self.stats.refused += 1;
                    if env.kind == Kind::Request {
                        out.push(
                            instance
                                .identity
                                .reply(env, Kind::Error, refusal.to_payload()),
                        );
                    } else {
                        tracing::info!(app = %app, id = %env.id, "peerlet refused an envelope: {}: {}", refusal.code, refusal.message);
                    }
                }
            }
            Body::External(handle) => {
                if let Err(r) = handle.push(env.clone()) {
                    let reply = instance.identity.reply(env, Kind::Error, r.to_payload());
                    self.stats.refused += 1;
                    if env.kind == Kind::Request {
                        out.push(reply);
                    }
                }
            }
        }
    }

    /// Stops every instance idle since before `now - idle_after`; returns how many.
    pub fn stop_idle(&mut self, now: Duration) -> usize {
        let idle_after = self.idle_after;
        let before = self.instances.len();
        self.instances
            .retain(|_, i| now.saturating_sub(i.last_used) < idle_after);
        let instances = &self.instances;
        self.defaults.retain(|_, id| instances.contains_key(id));
        let stopped = before - self.instances.len();
        self.stats.stopped_idle += stopped as u64;
        stopped
    }

    fn instance_for(
        &mut self,
        app: &str,
        wanted: Option<Uuid>,
        now: Duration,
    ) -> Result<Uuid, Refusal> {
        let id = match wanted {
            Some(id) => {
                if let Some(i) = self.instances.get(&id) {
                    if i.identity.app != app {
                        return Err(Refusal::new(
                            "wrong-instance",
                            format!("instance {id} is a {} peerlet, not {app}", i.identity.app),
                        ));
                    }
                    return Ok(id);
                }
                id
            }
            None => match self.defaults.get(app) {
                Some(id) => return Ok(*id),
                None => Uuid::new_v4(),
            },
        };
        if self.instances.len() >= MAX_INSTANCES {
            return Err(Refusal::new(
                "too-many-instances",
                format!("this agent already runs {MAX_INSTANCES} peerlet instances"),
            ));
        }
        let identity = Identity {
            node: self.node.clone(),
            blade: self.blade.clone(),
            // No seat table yet: a blade is held at epoch 0.
            epoch: self.blade.as_ref().map(|_| 0),
            app: app.to_owned(),
            instance: id,
        };
        let body = if let Some(kind) = self.builtins.get(app) {
            Body::Builtin(kind.create(id))
        } else if let Some(manifest) = self
            .externals
            .get(app)
            .filter(|m| m.mode == external::Mode::Wrap)
        {
            Body::Builtin(Box::new(external::Wrapped(Arc::clone(manifest))))
        } else if let Some(manifest) = self.externals.get(app) {
            Body::External(external::Handle::start(
                Arc::clone(manifest),
                identity.clone(),
                Arc::clone(&self.outbox),
            ))
        } else {
            return Err(Refusal::new(
                "unknown-app",
                format!("no peerlet of type {app} here"),
            ));
        };
        tracing::debug!(app, instance = %id, "peerlet instance started");
        self.stats.started += 1;
        self.instances.insert(
            id,
            Instance {
                identity,
                body,
                last_used: now,
            },
        );
        if wanted.is_none() {
            self.defaults.insert(app.to_owned(), id);
        }
        Ok(id)
    }

    /// Each app type's read-only message types, as its peerlet declares them.
    pub fn read_only(&self) -> HashMap<String, Vec<String>> {
        let builtins = self.builtins.iter().map(|(app, t)| {
            let types = t.read_only().iter().map(|s| s.to_string()).collect();
            (app.clone(), types)
        });
        let externals = self
            .externals
            .iter()
            .map(|(app, m)| (app.clone(), m.read_only.clone()));
        builtins
            .chain(externals)
            .filter(|(_, types): &(String, Vec<String>)| !types.is_empty())
            .collect()
    }

    /// Whether `app` is a type this host can start.
    pub fn knows(&self, app: &str) -> bool {
        self.builtins.contains_key(app) || self.externals.contains_key(app)
    }

    /// Answers `env` (a request or event) with an error from the host, into `out`.
    pub fn refuse(&mut self, env: &Envelope, out: &mut Vec<Envelope>, code: &str, message: &str) {
        self.stats.refused += 1;
        match env.kind {
            Kind::Request | Kind::Event => {
                let me = Sender {
                    node: self.node.clone(),
                    blade: self.blade.clone(),
                    app: HOST_APP.into(),
                    instance: None,
                };
                out.push(env.reply_to(me, Kind::Error, error_payload(code, message)));
            }
            Kind::Reply | Kind::Error => {
                tracing::debug!(id = %env.id, "dropped an answer nobody waits for: {message}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_peerlet::{Destination, Payload, Target};

    struct NoOutbox;
    impl Outbox for NoOutbox {
        fn post(&self, _env: Envelope) -> bool {
            false
        }
    }

    fn host() -> Host {
        let mut h = Host::new(
            "n1".into(),
            Some("blade-1".into()),
            Arc::new(NoOutbox),
            Duration::from_secs(10),
        );
        h.register(Arc::new(dci_peerlet_echo::EchoType));
        h.register(Arc::new(dci_peerlet_chat::ChatType));
        h
    }

    fn to(app: &str, instance: Option<Uuid>, payload: &str) -> Envelope {
        Envelope::request(
            Sender {
                node: "n2".into(),
                blade: None,
                app: "test".into(),
                instance: None,
            },
            Target {
                to: Destination::Node("n1".into()),
                app: Some(app.into()),
                instance,
            },
            Payload::new(payload).unwrap(),
        )
    }

    #[test]
    fn an_envelope_for_a_type_with_no_instance_starts_one_and_is_answered() {
        let mut h = host();
        let mut out = Vec::new();
        h.deliver(
            &to("echo", None, "<x xmlns=\"urn:t\"/>"),
            Duration::ZERO,
            &mut out,
        );
        assert_eq!(h.instances(), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Kind::Reply);
        assert_eq!(out[0].payload.as_str(), "<x xmlns=\"urn:t\"/>");
        assert_eq!(out[0].epoch, Some(0));
        h.deliver(&to("echo", None, ""), Duration::ZERO, &mut out);
        assert_eq!(h.instances(), 1, "the default instance is reused");
    }

    #[test]
    fn two_chat_sessions_keep_their_lines_apart() {
        let mut h = host();
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
        let mut out = Vec::new();
        let say = |who: &str, text: &str| {
            format!("<say xmlns=\"urn:dci:chat:1\" from=\"{who}\">{text}</say>")
        };
        h.deliver(
            &to("chat", Some(s1), &say("ann", "one")),
            Duration::ZERO,
            &mut out,
        );
        h.deliver(
            &to("chat", Some(s2), &say("bob", "two")),
            Duration::ZERO,
            &mut out,
        );
        out.clear();
        h.deliver(
            &to("chat", Some(s1), "<history xmlns=\"urn:dci:chat:1\"/>"),
            Duration::ZERO,
            &mut out,
        );
        assert!(out[0].payload.as_str().contains("one"));
        assert!(!out[0].payload.as_str().contains("two"));
        assert_eq!(out[0].sender.instance, Some(s1));
    }

    #[test]
    fn an_unknown_type_and_a_refused_payload_are_answered_with_errors() {
        let mut h = host();
        let mut out = Vec::new();
        h.deliver(&to("nope", None, ""), Duration::ZERO, &mut out);
        h.deliver(
            &to("chat", None, "<x xmlns=\"urn:t\"/>"),
            Duration::ZERO,
            &mut out,
        );
        let codes: Vec<String> = out
            .iter()
            .map(|e| dci_peerlet::error_from_payload(&e.payload).unwrap().0)
            .collect();
        assert_eq!(codes, vec!["unknown-app", "bad-payload"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_external_peerlets_queue_is_bounded_and_what_does_not_fit_is_refused_busy() {
        let mut h = host();
        h.register_external(external::Manifest {
            app: "slow".into(),
            command: vec!["sleep".into(), "5".into()],
            queue: 2,
            max_envelope_bytes: 1 << 20,
            mode: external::Mode::Envelopes,
            timeout_ms: 1000,
            max_output: 1024,
            read_only: Vec::new(),
            dir: std::env::temp_dir(),
        })
        .unwrap();
        let mut out = Vec::new();
        // The process has not even started (this task has not yielded): the first two wait in
        // the queue, the rest are refused rather than buffered.
        for _ in 0..5 {
            h.deliver(&to("slow", None, ""), Duration::ZERO, &mut out);
        }
        let codes: Vec<String> = out
            .iter()
            .map(|e| dci_peerlet::error_from_payload(&e.payload).unwrap().0)
            .collect();
        assert_eq!(codes, vec!["busy", "busy", "busy"]);
        assert_eq!(h.instances(), 1);
    }

    #[test]
    fn idle_instances_are_stopped_and_busy_ones_kept() {
        let mut h = host();
        let mut out = Vec::new();
        h.deliver(&to("echo", None, ""), Duration::ZERO, &mut out);
        h.deliver(
            &to("chat", None, "<history xmlns=\"urn:dci:chat:1\"/>"),
            Duration::from_secs(8),
            &mut out,
        );
        assert_eq!(h.stop_idle(Duration::from_secs(12)), 1);
        assert_eq!(h.instances(), 1);
        h.deliver(&to("echo", None, ""), Duration::from_secs(12), &mut out);
        assert_eq!(h.instances(), 2, "a stopped type starts again on demand");
    }

    #[test]
    fn running_instances_are_listed_with_their_idle_time_and_stopped_by_type_or_id() {
        let mut h = host();
        let mut out = Vec::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        h.deliver(&to("echo", Some(a), ""), Duration::from_secs(1), &mut out);
        h.deliver(&to("echo", Some(b), ""), Duration::from_secs(3), &mut out);
        h.deliver(&to("echo", None, ""), Duration::from_secs(3), &mut out);
        let running = h.running(Duration::from_secs(4));
        assert_eq!(running.len(), 3);
        let idle_a = running.iter().find(|r| r.1 == a).unwrap().2;
        assert_eq!(idle_a, Duration::from_secs(3));
        assert_eq!(
            h.stop("chat", Some(a)),
            0,
            "an instance of another type is left"
        );
        assert_eq!(h.stop("echo", Some(a)), 1);
        assert_eq!(h.stop("echo", Some(a)), 0);
        assert_eq!(h.stop("echo", None), 2);
        assert!(h.running(Duration::from_secs(5)).is_empty());
    }
}
