//! How events and snapshots become bytes: a format version byte, then postcard.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::DomainError;

const FORMAT_V1: u8 = 1;

/// Encodes a value for the journal.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DomainError> {
    let mut out = vec![FORMAT_V1];
    postcard::to_io(value, &mut out).map_err(|e| DomainError::Storage(format!("encode: {e}")))?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DomainError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            postcard::from_bytes(body).map_err(|e| DomainError::Storage(format!("decode: {e}")))
        }
        Some((version, _)) => Err(DomainError::Storage(format!("unknown event format {version}"))),
        None => Err(DomainError::Storage("empty record".into())),
    }
}
