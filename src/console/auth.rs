//! Who may use the console: operators from the config file with argon2 password hashes, sessions
//! behind random cookies, a CSRF token per session, and a brake on password guessing.
//!
//! Everything here is bookkeeping with the time passed in (`now`), so the rules are tested
//! without a clock or a server. Session ids and CSRF tokens are 256 random bits from the
//! operating system; only a session's holder can read its token (the page asks for it with the
//! cookie), and a cross-site page can neither send the cookie (`SameSite=Strict`) nor learn the
//! token, so a state-changing request must carry both.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// The session cookie's name.
pub const COOKIE: &str = "dci_session";
/// The header a state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session lasts at most this long, however busy.
pub const MAX_SESSION_AGE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a new login beyond it ends the least recently used one.
pub const MAX_SESSIONS: usize = 256;
/// The wait after a first failed login from an address; it doubles with each further failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between login attempts from one address.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Addresses whose failures are remembered; the oldest are forgotten beyond it.
const MAX_TRACKED: usize = 4096;

/// Makes an argon2id hash (PHC string) of `password` with a random salt, for the config file.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// 256 random bits, hex.
fn token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Equal strings, compared in time that depends only on their lengths.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// One logged-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The operator's name.
    pub user: String,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    /// When it was made (time since the server started).
    created: Duration,
    /// When it was last used.
    used: Duration,
}

/// Why a request is refused; each is one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No cookie, an unknown id, or an expired session.
    #[error("not logged in, or the session expired: log in again")]
    NoSession,
    /// The CSRF token is absent.
    #[error("missing CSRF token (the {CSRF_HEADER} header)")]
    MissingCsrf,
    /// The CSRF token is not this session's.
    #[error("wrong CSRF token")]
    WrongCsrf,
    /// Wrong name or password.
    #[error("wrong user name or password")]
    BadLogin,
    /// Too many failed logins from this address: wait.
    #[error("too many failed logins from this address: try again in {0} s")]
    Throttled(u64),
}

/// The users, the sessions and the failed logins of one console.
#[derive(Debug)]
pub struct Auth {
    /// (name, PHC hash).
    users: Vec<(String, String)>,
    idle: Duration,
    sessions: HashMap<String, Session>,
    /// Per client address: failures in a row and when the next attempt is allowed.
    failures: HashMap<IpAddr, (u32, Duration)>,
    /// A hash checked when the name is unknown, so that a wrong name takes as long as a wrong
    /// password and does not tell which names exist.
    decoy: String,
}

impl Auth {
    /// An authority over `users` whose sessions end after `idle` without use.
    pub fn new(users: Vec<(String, String)>, idle: Duration) -> Auth {
        Auth {
            users,
            idle,
            sessions: HashMap::new(),
            failures: HashMap::new(),
            decoy: hash_password("decoy").unwrap_or_default(),
        }
    }

    /// Whether `ip` may try a login at `now`; if not, how many seconds to wait.
    pub fn may_try(&self, ip: IpAddr, now: Duration) -> Result<(), Refusal> {
        match self.failures.get(&ip) {
            Some((_, next)) if now < *next => {
                Err(Refusal::Throttled((*next - now).as_secs_f64().ceil() as u64))
            }
            _ => Ok(()),
        }
    }

    /// The PHC hash to check a login for `user` against (a decoy for unknown names), and
    /// whether the name is known.
    pub fn hash_of(&self, user: &str) -> (String, bool) {
        match self.users.iter().find(|(n, _)| n == user) {
            Some((_, h)) => (h.clone(), true),
            None => (self.decoy.clone(), false),
        }
    }

    /// Records a checked login; on success, a new session and its id (the cookie's value).
    pub fn finish_login(
        &mut self,
        ip: IpAddr,
        user: &str,
        ok: bool,
        now: Duration,
    ) -> Result<(String, Session), Refusal> {
        if !ok {
            if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&ip) {
                let oldest = self
                    .failures
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(a, _)| *a);
                if let Some(a) = oldest {
                    self.failures.remove(&a);
                }
            }
            let (n, next) = self.failures.entry(ip).or_insert((0, now));
            *n += 1;
            let delay = FIRST_DELAY
                .saturating_mul(1 << (*n - 1).min(16))
                .min(MAX_DELAY);
            *next = now + delay;
            return Err(Refusal::BadLogin);
        }
        self.failures.remove(&ip);
        self.expire(now);
        if self.sessions.len() >= MAX_SESSIONS {
            let lru = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone());
            if let Some(id) = lru {
                self.sessions.remove(&id);
            }
        }
        let id = token();
        let session = Session {
            user: user.to_owned(),
            csrf: token(),
            created: now,
            used: now,
        };
        self.sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session behind cookie value `id`, marked used at `now`.
    pub fn session(&mut self, id: Option<&str>, now: Duration) -> Result<Session, Refusal> {
        self.expire(now);
        let s = id
            .and_then(|id| self.sessions.get_mut(id))
            .ok_or(Refusal::NoSession)?;
        s.used = now;
        Ok(s.clone())
    }

    /// The session of a state-changing request: its cookie and its CSRF token must both match.
    pub fn session_for_change(
        &mut self,
        id: Option<&str>,
        csrf: Option<&str>,
        now: Duration,
    ) -> Result<Session, Refusal> {
        let s = self.session(id, now)?;
        match csrf {
            None | Some("") => Err(Refusal::MissingCsrf),
            Some(t) if !same(t, &s.csrf) => Err(Refusal::WrongCsrf),
            Some(_) => Ok(s),
        }
    }

    /// Ends the session behind `id`.
    pub fn logout(&mut self, id: &str) {
        self.sessions.remove(id);
    }

    fn expire(&mut self, now: Duration) {
        let idle = self.idle;
        self.sessions.retain(|_, s| {
            now.saturating_sub(s.used) < idle && now.saturating_sub(s.created) < MAX_SESSION_AGE
        });
    }
}

/// Checks `password` against a PHC hash (slow on purpose: run it off the async threads).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn auth() -> Auth {
        let hash = hash_password("s3cret").unwrap();
        Auth::new(vec![("ops".into(), hash)], Duration::from_secs(60))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cret ", &h));
        assert!(!verify("s3cret", "not a hash"));
        assert_ne!(
            h,
            hash_password("s3cret").unwrap(),
            "each hash has its own salt"
        );
    }

    #[test]
    fn an_unknown_name_is_checked_against_a_decoy_and_fails() {
        let a = auth();
        let (decoy, known) = a.hash_of("nobody");
        assert!(!known);
        assert!(!verify("s3cret", &decoy));
        assert!(a.hash_of("ops").1);
    }

    #[test]
    fn a_session_needs_its_cookie_and_expires_when_idle_or_old() {
        let mut a = auth();
        let (id, s) = a.finish_login(IP, "ops", true, secs(0)).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(id, s.csrf);
        assert_eq!(a.session(Some(&id), secs(30)).unwrap().user, "ops");
        // Used at 30 s, so still alive at 89 s; idle from 89 s, over at 149 s.
        assert!(a.session(Some(&id), secs(89)).is_ok());
        assert_eq!(a.session(Some(&id), secs(149)), Err(Refusal::NoSession));
        assert_eq!(a.session(None, secs(0)), Err(Refusal::NoSession));
        assert_eq!(a.session(Some("forged"), secs(0)), Err(Refusal::NoSession));

        // However busy, a session ends at the maximum age.
        let mut a = Auth::new(auth().users, MAX_SESSION_AGE * 2);
        let (id, _) = a.finish_login(IP, "ops", true, secs(0)).unwrap();
        assert!(a.session(Some(&id), MAX_SESSION_AGE - secs(1)).is_ok());
        assert!(a.session(Some(&id), MAX_SESSION_AGE).is_err());
    }

    #[test]
    fn a_change_needs_the_sessions_own_csrf_token() {
        let mut a = auth();
        let (id, s) = a.finish_login(IP, "ops", true, secs(0)).unwrap();
        let (other, t) = a.finish_login(IP, "ops", true, secs(0)).unwrap();
        let now = secs(1);
        assert_eq!(
            a.session_for_change(Some(&id), None, now),
            Err(Refusal::MissingCsrf)
        );
        assert_eq!(
            a.session_for_change(Some(&id), Some(""), now),
            Err(Refusal::MissingCsrf)
        );
        assert_eq!(
            a.session_for_change(Some(&id), Some(&t.csrf), now),
            Err(Refusal::WrongCsrf),
            "another session's token"
        );
        assert!(a.session_for_change(Some(&id), Some(&s.csrf), now).is_ok());
        assert_eq!(
            a.session_for_change(None, Some(&s.csrf), now),
            Err(Refusal::NoSession)
        );
        a.logout(&id);
        assert_eq!(
            a.session_for_change(Some(&id), Some(&s.csrf), now),
            Err(Refusal::NoSession)
        );
        assert!(
            a.session(Some(&other), now).is_ok(),
            "only that session ended"
        );
    }

    #[test]
    fn failed_logins_from_an_address_wait_longer_each_time_and_a_success_resets() {
        let mut a = auth();
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let mut now = secs(100);
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(a.may_try(IP, now).is_ok());
            assert_eq!(
                a.finish_login(IP, "ops", false, now).unwrap_err(),
                Refusal::BadLogin
            );
            assert!(matches!(a.may_try(IP, now), Err(Refusal::Throttled(_))));
            let mut waited = Duration::ZERO;
            while a.may_try(IP, now + waited).is_err() {
                waited += Duration::from_millis(100);
            }
            waits.push(waited);
            now += waited;
        }
        assert_eq!(waits[0], FIRST_DELAY);
        assert_eq!(waits[1], FIRST_DELAY * 2);
        assert_eq!(*waits.last().unwrap(), MAX_DELAY);
        assert!(
            a.may_try(other, now - secs(1)).is_ok(),
            "other addresses are not slowed"
        );
        a.finish_login(IP, "ops", true, now).unwrap();
        a.finish_login(IP, "ops", false, now).unwrap_err();
        assert!(
            a.may_try(IP, now + FIRST_DELAY).is_ok(),
            "back to the first delay"
        );
    }

    #[test]
    fn sessions_beyond_the_limit_end_the_least_recently_used() {
        let mut a = auth();
        let (first, _) = a.finish_login(IP, "ops", true, secs(0)).unwrap();
        let mut last = String::new();
        for i in 1..=MAX_SESSIONS as u64 {
            last = a
                .finish_login(IP, "ops", true, Duration::from_millis(i))
                .unwrap()
                .0;
        }
        assert!(a.session(Some(&first), secs(1)).is_err());
        assert!(a.session(Some(&last), secs(1)).is_ok());
    }
}
