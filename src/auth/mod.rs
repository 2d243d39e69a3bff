//! Authentication: the admin bearer token, the users' HS256 JWTs, and passwords
//! (`password.rs`).
//!
//! A user token carries the account's token generation (`gen`): raising it in the store (a
//! revoke, a password change) refuses every token issued before, also one issued in the same
//! second. A sign-in link is a token with a `link` number, good for one exchange into a user
//! token and never accepted as one itself. Whether a token is still good is
//! [`Auth::authenticate`]'s answer: signature and expiry, then the account (generation,
//! deactivation) in the store.
//!
//! Both secrets come from the environment (`ROLLCALL_ADMIN_TOKEN`, `ROLLCALL_JWT_SECRET`) or are
//! generated once into the data directory with mode 0600, so a restart keeps every issued token
//! valid. Tokens are never logged or stored beyond handing them out; the admin token is printed
//! once, when it is generated. JWT handling is the `jsonwebtoken` crate's, not ours.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::store::{AccountRecord, Store, StoreError};

pub mod password;

/// The file names of the generated secrets inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const JWT_SECRET_FILE: &str = "jwt-secret";

/// Default lifetime of a user token handed out by the admin API.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// The longest a token minted by `rollcall token` may be valid: a year.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

/// The default lifetime of a sign-in link.
pub const DEFAULT_LINK_TTL_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Optional: tokens minted by a team's own backend need only `sub` and `exp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    /// The account's token generation when issued (absent in a backend's tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gen: Option<u64>,
    /// Set in a sign-in link: its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<u64>,
}

/// What a well-signed, unexpired token says. Whether it is still good depends on the account:
/// see [`Credential::is_current`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub user: UserId,
    gen: Option<u64>,
    iat: Option<u64>,
    link: Option<u64>,
}

impl Credential {
    /// Whether the account still accepts this token: active, and issued in the current
    /// generation (a token without one, from a backend, only if issued after the second of the
    /// last revoke).
    pub fn is_current(&self, account: &AccountRecord) -> bool {
        if account.deactivated {
            return false;
        }
        match self.gen {
            Some(gen) => gen == account.token_gen,
            None => {
                account.token_gen == 0 || self.iat.is_some_and(|iat| iat > account.revoked_at_secs)
            }
        }
    }

    /// The link number, when this is a sign-in link.
    pub fn link(&self) -> Option<u64> {
        self.link
    }
}

/// Why a token was refused.
#[derive(Debug)]
pub enum Refused {
    /// Bad signature, expired, malformed, revoked, a link used as a token, or deactivated.
    Invalid,
    /// The account could not be read.
    Storage(StoreError),
}

/// Verifies admin and user tokens and mints user tokens.
pub struct Auth {
    admin_token: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// A secret: given, or read from `file`, or generated into `file`. Returns it and whether it
/// was generated now.
fn load_secret(given: Option<String>, file: &Path) -> io::Result<(String, bool)> {
    if let Some(secret) = given.filter(|s| !s.is_empty()) {
        return Ok((secret, false));
    }
    match fs::read_to_string(file) {
        Ok(secret) if !secret.trim().is_empty() => return Ok((secret.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = random_hex(32);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(file)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    Ok((secret, true))
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    crate::store::now_ms() / 1000
}

impl Auth {
    /// Loads (or generates) both secrets. Returns the admin token too when it was generated
    /// now, so the caller can print it once.
    pub fn load(
        data_dir: &Path,
        admin_token: Option<String>,
        jwt_secret: Option<String>,
    ) -> io::Result<(Auth, Option<String>)> {
        let (admin_token, generated) = load_secret(admin_token, &data_dir.join(ADMIN_TOKEN_FILE))?;
        let (jwt_secret, _) = load_secret(jwt_secret, &data_dir.join(JWT_SECRET_FILE))?;
        let auth = Auth {
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            admin_token: admin_token.clone(),
        };
        Ok((auth, generated.then_some(admin_token)))
    }

    /// A token for `user` signed with the data directory's (or the given) secret, without
    /// touching the admin token (for `rollcall token`). Refuses a directory without a secret
    /// (never generates one) and a `ttl_secs` of 0 or above [`MAX_TOKEN_TTL_SECS`].
    pub fn mint_offline(
        data_dir: &Path,
        jwt_secret: Option<String>,
        user: &UserId,
        ttl_secs: u64,
    ) -> io::Result<String> {
        if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--ttl-secs must be 1-{MAX_TOKEN_TTL_SECS} (a year), not {ttl_secs}"),
            ));
        }
        let file = data_dir.join(JWT_SECRET_FILE);
        let given = jwt_secret.filter(|s| !s.is_empty());
        if given.is_none() && !file.exists() {
            // Generating one here would print a token the server refuses (a typo in --data).
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} holds no {JWT_SECRET_FILE}: is it the server's data directory? Start \
                     the server there once, or pass --jwt-secret (ROLLCALL_JWT_SECRET)",
                    data_dir.display()
                ),
            ));
        }
        let (secret, _) = load_secret(given, &file)?;
        let auth = Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            admin_token: String::new(),
        };
        // The generation is the store's; this token carries none, so it is good until the
        // user's tokens are next revoked (as a backend's token is).
        auth.sign(user, ttl_secs, None, None)
            .map_err(io::Error::other)
    }

    /// Whether `token` is the admin token (compared in constant time).
    pub fn is_admin(&self, token: &str) -> bool {
        let (a, b) = (token.as_bytes(), self.admin_token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn sign(
        &self,
        user: &UserId,
        ttl_secs: u64,
        gen: Option<u64>,
        link: Option<u64>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            exp: iat.saturating_add(ttl_secs),
            iat: Some(iat),
            gen,
            link,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// A user token for `user` in the account's current generation, valid for `ttl_secs`.
    pub fn mint(
        &self,
        user: &UserId,
        account: &AccountRecord,
        ttl_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(user, ttl_secs, Some(account.token_gen), None)
    }

    /// A sign-in link numbered `number` (good once, see `accounts`), valid for `ttl_secs`.
    pub fn mint_link(
        &self,
        user: &UserId,
        account: &AccountRecord,
        number: u64,
        ttl_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(user, ttl_secs, Some(account.token_gen), Some(number))
    }

    /// What a token says, if it is well signed, unexpired and names a valid id (the account
    /// is not consulted: see [`Auth::authenticate`]).
    pub fn verify(&self, token: &str) -> Option<Credential> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => Some(Credential {
                user: UserId::parse(&data.claims.sub).ok()?,
                gen: data.claims.gen,
                iat: data.claims.iat,
                link: data.claims.link,
            }),
            Err(e) => {
                log::debug!("refused a user token: {e}");
                None
            }
        }
    }

    /// The user token's credential, if it is good now: signed, unexpired, not a sign-in link,
    /// of the account's current generation, and the account active.
    pub fn authenticate(&self, store: &dyn Store, token: &str) -> Result<Credential, Refused> {
        let credential = self.verify(token).ok_or(Refused::Invalid)?;
        if credential.link.is_some() {
            return Err(Refused::Invalid);
        }
        let account = store
            .account(&credential.user)
            .map_err(Refused::Storage)?
            .unwrap_or_default();
        if credential.is_current(&account) {
            Ok(credential)
        } else {
            log::debug!("refused a revoked token of {}", credential.user);
            Err(Refused::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, generated) = Auth::load(dir.path(), None, Some("s3cret".into())).unwrap();
        let admin = generated.expect("admin token generated on first start");
        assert!(auth.is_admin(&admin));
        assert!(!auth.is_admin("nope"));
        let alice = UserId::parse("alice").unwrap();
        let fresh = AccountRecord::default();
        let token = auth.mint(&alice, &fresh, 60).unwrap();
        let credential = auth.verify(&token).unwrap();
        assert_eq!(credential.user, alice);
        assert!(credential.is_current(&fresh));
        assert_eq!(auth.verify(&format!("{token}x")), None);
        // A revoke (a new generation) refuses it, also within the same second.
        let revoked = AccountRecord {
            token_gen: 1,
            revoked_at_secs: now_secs(),
            ..AccountRecord::default()
        };
        assert!(!credential.is_current(&revoked));
        assert!(auth
            .verify(&auth.mint(&alice, &revoked, 60).unwrap())
            .unwrap()
            .is_current(&revoked));
        let deactivated = AccountRecord {
            deactivated: true,
            ..AccountRecord::default()
        };
        assert!(!credential.is_current(&deactivated));
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: now_secs() - 10,
                iat: None,
                gen: None,
                link: None,
            },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(auth.verify(&expired), None);
        // A backend's token with only `sub` and `exp` is accepted.
        #[derive(Serialize)]
        struct Minimal {
            sub: &'static str,
            exp: u64,
        }
        let minimal = encode(
            &Header::new(Algorithm::HS256),
            &Minimal {
                sub: "bob",
                exp: now_secs() + 60,
            },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let backend = auth.verify(&minimal).unwrap();
        assert_eq!(backend.user.as_str(), "bob");
        // Good until the user's tokens are first revoked: it has no generation and no `iat`.
        assert!(backend.is_current(&fresh));
        assert!(!backend.is_current(&revoked));
        // A second start reads the stored admin token and does not print it again.
        let (again, generated) = Auth::load(dir.path(), None, Some("s3cret".into())).unwrap();
        assert!(generated.is_none());
        assert!(again.is_admin(&admin));
    }
}
