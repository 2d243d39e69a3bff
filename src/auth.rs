//! Authentication: the admin bearer token and the users' HS256 JWTs.
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

/// The file names of the generated secrets inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const JWT_SECRET_FILE: &str = "jwt-secret";

/// Default lifetime of a user token handed out by the admin API.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// The longest a token minted by `rollcall token` may be valid: a year.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Optional: tokens minted by a team's own backend need only `sub` and `exp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
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
        auth.mint(user, ttl_secs).map_err(io::Error::other)
    }

    /// Whether `token` is the admin token (compared in constant time).
    pub fn is_admin(&self, token: &str) -> bool {
        let (a, b) = (token.as_bytes(), self.admin_token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// A signed token for `user`, valid for `ttl_secs`.
    pub fn mint(
        &self,
        user: &UserId,
        ttl_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            exp: iat.saturating_add(ttl_secs),
            iat: Some(iat),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The user a token was issued to, if it is well signed, unexpired and names a valid id.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => UserId::parse(&data.claims.sub).ok(),
            Err(e) => {
                log::debug!("refused a user token: {e}");
                None
            }
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
        let token = auth.mint(&alice, 60).unwrap();
        assert_eq!(auth.verify(&token), Some(alice.clone()));
        assert_eq!(auth.verify(&format!("{token}x")), None);
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: now_secs() - 10,
                iat: None,
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
        assert_eq!(auth.verify(&minimal), UserId::parse("bob").ok());
        // A second start reads the stored admin token and does not print it again.
        let (again, generated) = Auth::load(dir.path(), None, Some("s3cret".into())).unwrap();
        assert!(generated.is_none());
        assert!(again.is_admin(&admin));
    }
}
