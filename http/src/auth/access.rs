//! Access tokens: HS256 JWTs (about a microsecond to check, against tens for a signature), with
//! a `kid` header naming the key, so several keys can be live while one rotates out.
//!
//! Tokens are signed with the active key and verified with whichever configured key their `kid`
//! names; a token naming no key, an unknown key, another algorithm (`none` included), a bad
//! signature or an expiry past the tolerance is refused.

use std::collections::HashMap;

use jwt_simple::prelude::{
    Claims, Clock, Duration as JwtDuration, HS256Key, MACLike, Token, UnixTimeStamp,
    VerificationOptions,
};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// Shortest accepted HMAC secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Buys: own cart and orders.
    Customer,
    /// Runs the shop: catalog, stock, all orders, the cluster.
    Admin,
}

impl Role {
    /// The role's name in tokens and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RoleClaims {
    roles: Vec<Role>,
}

/// One HMAC key: its id (the `kid` of the tokens it signs) and secret.
#[derive(Clone)]
pub struct SigningKey {
    /// The key id.
    pub id: String,
    /// The secret, at least [`MIN_SECRET_LEN`] bytes.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user_id: String,
    /// Their roles.
    pub roles: Vec<Role>,
}

impl Principal {
    /// Whether the caller holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Tokens [`AccessTokens`] remembers as verified.
const VERIFIED_CAPACITY: usize = 16_384;

/// Issues and verifies access tokens.
pub struct AccessTokens {
    keys: HashMap<String, HS256Key>,
    active: String,
    ttl: std::time::Duration,
    tolerance: std::time::Duration,
    /// Tokens verified lately, by their text, with their caller and when they stop being
    /// accepted: a client's token is checked once, not on each request (the check was a tenth
    /// of a node's time answering a sold-out flash sale). Tokens are stateless, so nothing but
    /// the expiry can end one early.
    verified: quick_cache::sync::Cache<String, (Principal, UnixTimeStamp)>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("active", &self.active)
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn invalid(reason: impl std::fmt::Display) -> AuthError {
    AuthError::InvalidToken(reason.to_string())
}

impl AccessTokens {
    /// Tokens signed with the key `active` (one of `keys`), valid for `ttl`, accepted up to
    /// `tolerance` past their expiry to absorb clock skew.
    pub fn new(
        keys: Vec<SigningKey>,
        active: &str,
        ttl: std::time::Duration,
        tolerance: std::time::Duration,
    ) -> Result<Self, AuthError> {
        let mut by_id = HashMap::new();
        for key in keys {
            if key.id.is_empty() || key.secret.len() < MIN_SECRET_LEN {
                return Err(AuthError::Config(format!(
                    "key `{}` needs an id and a secret of at least {MIN_SECRET_LEN} bytes",
                    key.id
                )));
            }
            let hmac = HS256Key::from_bytes(&key.secret).with_key_id(&key.id);
            if by_id.insert(key.id.clone(), hmac).is_some() {
                return Err(AuthError::Config(format!("key id `{}` appears twice", key.id)));
            }
        }
        if !by_id.contains_key(active) {
            return Err(AuthError::Config(format!("the active key `{active}` is not configured")));
        }
        let verified = quick_cache::sync::Cache::new(VERIFIED_CAPACITY);
        Ok(Self { keys: by_id, active: active.to_owned(), ttl, tolerance, verified })
    }

    /// How long a token is valid.
    pub fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// A token for `user_id` with `roles`, signed with the active key.
    pub fn issue(&self, user_id: &str, roles: &[Role]) -> Result<String, AuthError> {
        let key =
            self.keys.get(&self.active).ok_or_else(|| AuthError::Config("no active key".into()))?;
        let claims = Claims::with_custom_claims(
            RoleClaims { roles: roles.to_vec() },
            JwtDuration::from_secs(self.ttl.as_secs()),
        )
        .with_subject(user_id);
        key.authenticate(claims).map_err(|e| AuthError::Backend(e.to_string()))
    }

    /// The caller a token names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, None)
    }

    /// [`AccessTokens::verify`] as if the time were `now` (`None`: the clock).
    fn verify_at(&self, token: &str, now: Option<UnixTimeStamp>) -> Result<Principal, AuthError> {
        let now = now.unwrap_or_else(Clock::now_since_epoch);
        if let Some((principal, until)) = self.verified.get(token)
            && now <= until
        {
            return Ok(principal);
        }
        let metadata = Token::decode_metadata(token).map_err(invalid)?;
        if metadata.algorithm() != "HS256" {
            return Err(invalid(format!("algorithm {} is not accepted", metadata.algorithm())));
        }
        let kid = metadata.key_id().ok_or_else(|| invalid("no key id"))?;
        let key = self.keys.get(kid).ok_or_else(|| invalid(format!("unknown key id `{kid}`")))?;
        let options = VerificationOptions {
            time_tolerance: Some(JwtDuration::from_secs(self.tolerance.as_secs())),
            required_key_id: Some(kid.to_owned()),
            artificial_time: Some(now),
            ..VerificationOptions::default()
        };
        let claims = key.verify_token::<RoleClaims>(token, Some(options)).map_err(invalid)?;
        let user_id = claims.subject.ok_or_else(|| invalid("no subject"))?;
        let principal = Principal { user_id, roles: claims.custom.roles };
        if let Some(expires_at) = claims.expires_at {
            let until = expires_at + JwtDuration::from_secs(self.tolerance.as_secs());
            self.verified.insert(token.to_owned(), (principal.clone(), until));
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jwt_simple::prelude::{Base64UrlSafeNoPadding, Clock};
    use jwt_simple::reexports::ct_codecs::Encoder as _;

    use super::*;

    fn key(id: &str, byte: u8) -> SigningKey {
        SigningKey { id: id.into(), secret: vec![byte; 32] }
    }

    fn tokens(keys: Vec<SigningKey>, active: &str) -> AccessTokens {
        AccessTokens::new(keys, active, Duration::from_secs(900), Duration::from_secs(30)).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_caller() {
        let t = tokens(vec![key("k1", 1)], "k1");
        let token = t.issue("user-1", &[Role::Customer]).unwrap();
        let principal = t.verify(&token).unwrap();
        assert_eq!(principal, Principal { user_id: "user-1".into(), roles: vec![Role::Customer] });
        assert!(!principal.has(Role::Admin));
    }

    #[test]
    fn expiry_is_enforced_with_the_tolerance() {
        let t = tokens(vec![key("k1", 1)], "k1");
        let token = t.issue("u", &[Role::Customer]).unwrap();
        let now = Clock::now_since_epoch();
        let at = |secs: u64| Some(now + JwtDuration::from_secs(secs));
        assert!(t.verify_at(&token, at(900 + 20)).is_ok(), "inside the 30 s tolerance");
        assert!(matches!(t.verify_at(&token, at(900 + 60)), Err(AuthError::InvalidToken(_))));
    }

    #[test]
    fn tampered_foreign_and_unsigned_tokens_are_refused() {
        let t = tokens(vec![key("k1", 1)], "k1");
        let token = t.issue("u", &[Role::Customer]).unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        // A payload rewritten to claim admin, keeping the signature.
        let forged_claims = br#"{"sub":"u","roles":["admin"],"exp":99999999999,"iat":1}"#;
        let tampered = format!("{}.{}.{}", parts[0], b64(forged_claims), parts[2]);
        assert!(t.verify(&tampered).is_err());

        // The same kid with another secret.
        let other = tokens(vec![key("k1", 2)], "k1");
        assert!(t.verify(&other.issue("u", &[Role::Admin]).unwrap()).is_err());

        // alg: none, with and without a signature.
        let header = b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert!(t.verify(&format!("{header}.{}.", parts[1])).is_err());
        assert!(t.verify(&format!("{header}.{}.{}", parts[1], parts[2])).is_err());

        // An unknown kid, and garbage (no kid, no signature, not a JWT).
        let unknown_kid = tokens(vec![key("k9", 1)], "k9").issue("u", &[]).unwrap();
        assert!(t.verify(&unknown_kid).is_err());
        for garbage in ["", "a.b", "a.b.c", "....", &"x".repeat(10_000)] {
            assert!(t.verify(garbage).is_err(), "{garbage:.20}");
        }
    }

    #[test]
    fn keys_rotate() {
        let old = tokens(vec![key("k1", 1)], "k1").issue("u", &[Role::Admin]).unwrap();
        let rotating = tokens(vec![key("k1", 1), key("k2", 2)], "k2");
        assert!(rotating.verify(&old).is_ok(), "tokens of the retiring key still verify");
        let new = rotating.issue("u", &[Role::Admin]).unwrap();
        assert_eq!(Token::decode_metadata(&new).unwrap().key_id(), Some("k2"));
        let rotated = tokens(vec![key("k2", 2)], "k2");
        assert!(rotated.verify(&old).is_err(), "a removed key's tokens are refused");
        assert!(rotated.verify(&new).is_ok());
    }

    #[test]
    fn bad_key_configuration_is_refused() {
        let ttl = Duration::from_secs(900);
        let short = SigningKey { id: "k".into(), secret: vec![1; 31] };
        assert!(AccessTokens::new(vec![short], "k", ttl, ttl).is_err());
        assert!(AccessTokens::new(vec![key("k", 1), key("k", 2)], "k", ttl, ttl).is_err());
        assert!(AccessTokens::new(vec![key("k", 1)], "other", ttl, ttl).is_err());
        assert!(!format!("{:?}", key("k", 7)).contains('7'), "secrets never print");
    }
}
