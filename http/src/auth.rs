//! Who is calling: password hashing, access tokens (JWT) and rotating refresh tokens.
//!
//! Owns the credentials' cryptography, the user directory and the refresh-token families in the
//! store. Does not own the HTTP routes that use them (the auth and users handlers).

mod access;
mod passwords;
mod refresh;
mod resets;
mod users;

pub use access::{AccessTokens, Principal, Role, SigningKey};
pub use passwords::{hash_password, validate_password, verify_password};
pub use refresh::{RefreshTokens, Rotated};
pub use resets::{PasswordResets, RESET_TTL};
pub use users::{User, Users, normalize_email};

/// `bytes` random bytes from the OS, as hex: the secret part of a token.
fn random_hex(bytes: usize) -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The SHA-256 of a token's secret, as hex: what the store keeps instead of the secret.
fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Why authentication failed or could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, forged, expired, or signed with an unknown key.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A refresh token that was already spent was presented again: its family is revoked.
    #[error("refresh token reused; its family is revoked")]
    Reused,
    /// The refresh token's family was revoked (logout or reuse).
    #[error("refresh token revoked")]
    Revoked,
    /// The refresh token has expired.
    #[error("refresh token expired")]
    Expired,
    /// The configuration of keys is unusable.
    #[error("invalid auth configuration: {0}")]
    Config(String),
    /// The password does not meet the rules.
    #[error("weak password: {0}")]
    WeakPassword(String),
    /// Not an email address.
    #[error("invalid email address")]
    InvalidEmail,
    /// The email belongs to another account.
    #[error("email already registered")]
    EmailTaken,
    /// Unknown email or wrong password (deliberately not saying which).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The current password given to change it is not the account's.
    #[error("the current password is not right")]
    WrongPassword,
    /// A password-reset token that is unknown, spent or expired.
    #[error("the reset token is unknown, spent or expired")]
    InvalidResetToken,
    /// Hashing failed or the store failed.
    #[error("auth backend failed: {0}")]
    Backend(String),
}
