//! Accounts: passwords, sign-in, sign-in links, revoking tokens and deactivating users
//! (docs/PROTOCOL.md §2.1).
//!
//! Every change to an account is a read-modify-write of its [`AccountRecord`], serialized by one
//! lock (held for the write in memory, not for the flush, so concurrent changes share a flush)
//! and answered once durable; a change that refuses earlier tokens (a revoke, a new
//! password, a deactivation) also closes the user's open sessions with 4001. Hashing runs on
//! tokio's blocking pool, at most [`MAX_CONCURRENT_HASHES`] at a time, so a flood of logins
//! neither stalls the actor threads nor takes a hash's 19 MiB per request. Repeated failed
//! logins of one user are limited by [`LoginLimiter`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::auth::{password, Auth, Credential, DEFAULT_TOKEN_TTL_SECS};
use crate::ids::UserId;
use crate::protocol::{ErrorCode, Refusal};
use crate::registry::Registry;
use crate::store::{now_ms, AccountRecord, StoreError, UserRecord};

/// Failed logins of one user allowed within [`LOGIN_WINDOW`] before `rate_limited`.
pub const MAX_LOGIN_FAILURES: u32 = 5;
/// The window in which failed logins are counted.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Password hashes computed at the same time, at most.
pub const MAX_CONCURRENT_HASHES: usize = 4;

/// The accounts of every user, and the admin's and users' tokens.
pub struct Accounts {
    auth: Auth,
    registry: Arc<Registry>,
    limiter: LoginLimiter,
    hashing: Semaphore,
    /// Serializes read-modify-writes of account records.
    writing: tokio::sync::Mutex<()>,
}

fn storage(e: StoreError) -> Refusal {
    log::error!("an account change failed in storage: {e}");
    Refusal::new(ErrorCode::Storage, format!("not stored ({e}); retry later"))
}

fn bad_credentials() -> Refusal {
    Refusal::new(ErrorCode::BadCredentials, "wrong user or password")
}

fn no_such_user(user: &UserId) -> Refusal {
    Refusal::new(ErrorCode::NoSuchUser, format!("no user {user}"))
}

fn signing(e: jsonwebtoken::errors::Error) -> Refusal {
    log::error!("signing a token failed: {e}");
    Refusal::new(ErrorCode::Internal, "cannot sign a token")
}

impl Accounts {
    pub fn new(auth: Auth, registry: Arc<Registry>) -> Accounts {
        Accounts {
            auth,
            registry,
            limiter: LoginLimiter::default(),
            hashing: Semaphore::new(MAX_CONCURRENT_HASHES),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// A user's account (the defaults when never written).
    pub fn account(&self, user: &UserId) -> Result<AccountRecord, Refusal> {
        Ok(self
            .registry
            .store()
            .account(user)
            .map_err(storage)?
            .unwrap_or_default())
    }

    /// The account of an existing user.
    fn existing(&self, user: &UserId) -> Result<(UserRecord, AccountRecord), Refusal> {
        let record = self
            .registry
            .store()
            .user(user)
            .map_err(storage)?
            .ok_or_else(|| no_such_user(user))?;
        Ok((record, self.account(user)?))
    }

    /// Whether a user token is good now; its credential if so.
    pub fn authenticate(&self, token: &str) -> Result<Credential, Refusal> {
        self.auth
            .authenticate(self.registry.store().as_ref(), token)
            .map_err(|e| match e {
                crate::auth::Refused::Invalid => Refusal::new(
                    ErrorCode::Unauthorized,
                    "a valid user token is required (it may have expired or been revoked)",
                ),
                crate::auth::Refused::Storage(e) => storage(e),
            })
    }

    /// A user token of `user`'s current generation.
    pub fn token(&self, user: &UserId, ttl_secs: u64) -> Result<String, Refusal> {
        let account = self.account(user)?;
        self.auth.mint(user, &account, ttl_secs).map_err(signing)
    }

    /// Hashes `password` on the blocking pool.
    async fn hash(&self, password: String) -> Result<String, Refusal> {
        let _permit = self.hashing.acquire().await;
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|e| e.to_string())
            .and_then(|hashed| hashed)
            .map_err(|e| {
                log::error!("{e}");
                Refusal::new(ErrorCode::Internal, "cannot hash the password")
            })
    }

    /// Verifies `password` against `stored` (the dummy hash for `None`) on the blocking pool.
    async fn verify(&self, stored: Option<String>, password: String) -> bool {
        let _permit = self.hashing.acquire().await;
        tokio::task::spawn_blocking(move || password::verify(stored.as_deref(), &password))
            .await
            .unwrap_or(false)
    }

    /// Writes an account (in memory: durable with the next flush).
    fn put(&self, user: &UserId, account: &AccountRecord) -> Result<(), Refusal> {
        self.registry
            .store()
            .put_account(user, account)
            .map_err(storage)
    }

    /// Waits for a flush covering every write so far.
    async fn flush(&self) -> Result<(), Refusal> {
        self.registry.flush().await.map_err(Refusal::from)
    }

    /// Creates a user, with a password or without, answering once durable; `false` when the
    /// id is taken.
    pub async fn create_user(
        &self,
        user: &UserId,
        name: &str,
        password: Option<String>,
    ) -> Result<bool, Refusal> {
        let hashed = match password {
            Some(password) => Some(self.hash(password).await?),
            None => None,
        };
        let writing = self.writing.lock().await;
        let record = UserRecord {
            name: name.to_owned(),
            created_ms: now_ms(),
        };
        let store = self.registry.store();
        if !store.create_user(user, &record).map_err(storage)? {
            return Ok(false);
        }
        // A new user's account starts clean, also where an old one was left behind.
        let account = AccountRecord {
            password: hashed,
            ..AccountRecord::default()
        };
        self.put(user, &account)?;
        drop(writing);
        self.flush().await?;
        log::info!("user {user} created");
        Ok(true)
    }

    /// Checks a user's password: their id and a token on success. Every refusal is the same
    /// `bad_credentials` and takes the same time (an unknown user verifies a dummy hash);
    /// more than [`MAX_LOGIN_FAILURES`] in [`LOGIN_WINDOW`] is `rate_limited`.
    pub async fn login(&self, user: &str, password: String) -> Result<(UserId, String), Refusal> {
        self.limiter.check(user, Instant::now())?;
        let found = match UserId::parse(user) {
            Ok(id) => match self.existing(&id) {
                Ok((_, account)) => Some((id, account)),
                Err(refusal) if refusal.code == ErrorCode::NoSuchUser => None,
                Err(refusal) => return Err(refusal),
            },
            Err(_) => None,
        };
        let stored = found.as_ref().and_then(|(_, a)| a.password.clone());
        let matched = self.verify(stored, password).await;
        match found {
            Some((id, account)) if matched && !account.deactivated => {
                self.limiter.succeeded(user);
                let token = self
                    .auth
                    .mint(&id, &account, DEFAULT_TOKEN_TTL_SECS)
                    .map_err(signing)?;
                log::info!("{id} signed in with a password");
                Ok((id, token))
            }
            _ => {
                self.limiter.failed(user, Instant::now());
                log::info!(
                    "a failed sign-in as {:?}",
                    user.chars().take(64).collect::<String>()
                );
                Err(bad_credentials())
            }
        }
    }

    /// A sign-in link for `user`: good for one exchange into a token, within `ttl_secs`, and
    /// only while no later link has been used. Returns the link token.
    pub async fn mint_link(&self, user: &UserId, ttl_secs: u64) -> Result<String, Refusal> {
        let writing = self.writing.lock().await;
        let (_, mut account) = self.existing(user)?;
        account.links_minted += 1;
        self.put(user, &account)?;
        drop(writing);
        self.flush().await?;
        self.auth
            .mint_link(user, &account, account.links_minted, ttl_secs)
            .map_err(signing)
    }

    /// Exchanges a sign-in link for a token, once.
    pub async fn redeem_link(&self, link: &str) -> Result<(UserId, String), Refusal> {
        let credential = self.auth.verify(link).ok_or_else(bad_credentials)?;
        let number = credential.link().ok_or_else(bad_credentials)?;
        let user = credential.user.clone();
        let writing = self.writing.lock().await;
        let (_, mut account) = self.existing(&user).map_err(|_| bad_credentials())?;
        if !credential.is_current(&account) || number <= account.links_used {
            log::info!("a used, revoked or superseded sign-in link of {user} was refused");
            return Err(bad_credentials());
        }
        account.links_used = number;
        self.put(&user, &account)?;
        drop(writing);
        self.flush().await?;
        let token = self
            .auth
            .mint(&user, &account, DEFAULT_TOKEN_TTL_SECS)
            .map_err(signing)?;
        log::info!("{user} signed in with a link");
        Ok((user, token))
    }

    /// Raises the token generation (every earlier token refused); returns the new account.
    /// The caller flushes, then closes the user's sessions ([`Accounts::close_sessions`]).
    fn bump(&self, user: &UserId, mut account: AccountRecord) -> Result<AccountRecord, Refusal> {
        account.token_gen += 1;
        account.revoked_at_secs = now_ms() / 1000;
        self.put(user, &account)?;
        Ok(account)
    }

    /// Closes the user's sessions (4001), once the change that refuses their token is durable.
    fn close_sessions(&self, user: &UserId, why: &'static str) {
        let n_closed = self.registry.presence().close_user(user, why);
        log::info!("{user}: tokens refused ({why}); {n_closed} sessions closed");
    }

    /// `POST /api/me/password`: checks `old` (not needed while the user has no password),
    /// stores `new`, refuses every earlier token; answers a new token.
    pub async fn change_password(
        &self,
        credential: &Credential,
        old: Option<String>,
        new: String,
    ) -> Result<String, Refusal> {
        let user = &credential.user;
        if let Some(why) = password::check_new(&new) {
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        self.limiter.check(user.as_str(), Instant::now())?;
        let (_, account) = self.existing(user)?;
        if account.password.is_some() {
            let matched = self
                .verify(account.password.clone(), old.unwrap_or_default())
                .await;
            if !matched {
                self.limiter.failed(user.as_str(), Instant::now());
                return Err(Refusal::new(
                    ErrorCode::BadCredentials,
                    "the old password is wrong",
                ));
            }
        }
        let hashed = self.hash(new).await?;
        let writing = self.writing.lock().await;
        // Read again under the lock: a revoke may have come in meanwhile.
        let mut account = self.account(user)?;
        if !credential.is_current(&account) {
            return Err(Refusal::new(
                ErrorCode::Unauthorized,
                "this token was revoked meanwhile",
            ));
        }
        account.password = Some(hashed);
        let account = self.bump(user, account)?;
        drop(writing);
        self.flush().await?;
        self.close_sessions(user, "password changed");
        self.auth
            .mint(user, &account, DEFAULT_TOKEN_TTL_SECS)
            .map_err(signing)
    }

    /// `POST /api/users/{uid}/revoke`.
    pub async fn revoke(&self, user: &UserId) -> Result<(), Refusal> {
        let writing = self.writing.lock().await;
        let (_, account) = self.existing(user)?;
        self.bump(user, account)?;
        drop(writing);
        self.flush().await?;
        self.close_sessions(user, "tokens revoked");
        Ok(())
    }

    /// `PUT /api/users/{uid}`'s account part: a new name, a new password (refusing earlier
    /// tokens), deactivated or not.
    pub async fn update(
        &self,
        user: &UserId,
        name: Option<String>,
        new_password: Option<String>,
        deactivated: Option<bool>,
    ) -> Result<(), Refusal> {
        if let Some(why) = new_password.as_deref().and_then(password::check_new) {
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        self.existing(user)?;
        let hashed = match new_password {
            Some(password) => Some(self.hash(password).await?),
            None => None,
        };
        let writing = self.writing.lock().await;
        let (mut record, mut account) = self.existing(user)?;
        if let Some(name) = name {
            record.name = name;
            self.registry
                .store()
                .put_user(user, &record)
                .map_err(storage)?;
        }
        let was_active = !account.deactivated;
        if let Some(deactivated) = deactivated {
            account.deactivated = deactivated;
        }
        let reset = hashed.is_some();
        match hashed {
            Some(hashed) => {
                account.password = Some(hashed);
                self.bump(user, account)?;
            }
            None => self.put(user, &account)?,
        }
        drop(writing);
        self.flush().await?;
        if was_active && deactivated == Some(true) {
            self.close_sessions(user, "account deactivated");
        } else if reset {
            self.close_sessions(user, "password reset");
        } else if !was_active && deactivated == Some(false) {
            log::info!("{user} reactivated");
        }
        Ok(())
    }
}

/// Failed logins per user name (as typed, also for names that do not exist, so the limit says
/// nothing about which users exist).
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Entries kept at most; older windows are dropped first when it fills.
const MAX_TRACKED_NAMES: usize = 10_000;

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refuses while `user` has had [`MAX_LOGIN_FAILURES`] failures in the current window.
    pub fn check(&self, user: &str, now: Instant) -> Result<(), Refusal> {
        let failures = self.lock();
        match failures.get(user) {
            Some(&(count, since)) if count >= MAX_LOGIN_FAILURES => {
                let elapsed = now.saturating_duration_since(since);
                match LOGIN_WINDOW.checked_sub(elapsed) {
                    Some(wait) if !wait.is_zero() => Err(Refusal::rate_limited(
                        format!(
                            "{MAX_LOGIN_FAILURES} failed sign-ins in a row; wait before trying again"
                        ),
                        wait,
                    )),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, user: &str, now: Instant) {
        let mut failures = self.lock();
        if failures.len() >= MAX_TRACKED_NAMES {
            failures.retain(|_, (_, since)| now.saturating_duration_since(*since) < LOGIN_WINDOW);
        }
        let entry = failures.entry(user.to_owned()).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= LOGIN_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, user: &str) {
        self.lock().remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_user_within_the_window() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_LOGIN_FAILURES {
            assert!(limiter.check("alice", t0).is_ok());
            limiter.failed("alice", t0);
        }
        let refused = limiter
            .check("alice", t0 + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_ms, Some(59_000));
        // Another user is not affected; the window ends; a success forgets.
        assert!(limiter.check("bob", t0).is_ok());
        assert!(limiter.check("alice", t0 + LOGIN_WINDOW).is_ok());
        limiter.succeeded("alice");
        assert!(limiter.check("alice", t0 + Duration::from_secs(1)).is_ok());
    }
}
