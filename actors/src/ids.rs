//! Identifier and quantity newtypes whose parse is their only constructor.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::DomainError;

/// A stock-keeping unit: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    /// Parses a SKU.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::Invalid {
                field: "sku".into(),
                reason: "1 to 64 characters of letters, digits, `.`, `_` or `-`".into(),
            })
        }
    }

    /// The SKU text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sku::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Units of one SKU on a cart or order line: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    /// The most units of one SKU on a line.
    pub const MAX: u32 = 100;

    /// Parses a line quantity.
    pub fn new(qty: u32) -> Result<Self, DomainError> {
        if (1..=Self::MAX).contains(&qty) {
            Ok(Self(qty))
        } else {
            Err(DomainError::Invalid {
                field: "qty".into(),
                reason: format!("must be between 1 and {}", Self::MAX),
            })
        }
    }

    /// The number of units.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Quantity::new(u32::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_and_quantity_parse() {
        assert!(Sku::parse("ABC-123_x.1").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65), "a/b"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Quantity::new(1).is_ok() && Quantity::new(100).is_ok());
        assert!(Quantity::new(0).is_err() && Quantity::new(101).is_err());
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<Quantity>("-1").is_err());
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
    }
}
