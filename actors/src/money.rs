//! Money in ISO 4217 currencies, and conversion between them.
//!
//! [`Money`] is a `rust_decimal` amount with exactly its currency's minor digits; it is built only
//! by parsing or from minor units, so an amount with more digits than the currency allows cannot
//! exist. Conversion rule (the only rounding in the crate): the exact product of amount and rate is
//! rounded once, half away from zero, to the target currency's minor digits.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DomainError;

macro_rules! currencies {
    ($($code:ident => $minor:literal),* $(,)?) => {
        /// A supported ISO 4217 currency.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Currency { $(#[allow(missing_docs)] $code),* }

        impl Currency {
            /// Every supported currency.
            pub const ALL: &'static [Currency] = &[$(Currency::$code),*];

            /// The ISO 4217 code.
            pub fn code(self) -> &'static str {
                match self { $(Currency::$code => stringify!($code)),* }
            }

            /// Digits after the decimal point (ISO 4217 minor unit).
            pub fn minor_digits(self) -> u32 {
                match self { $(Currency::$code => $minor),* }
            }

            /// Parses an upper-case ISO 4217 code.
            pub fn parse(code: &str) -> Result<Self, DomainError> {
                match code {
                    $(stringify!($code) => Ok(Currency::$code),)*
                    other => Err(DomainError::UnknownCurrency(other.to_owned())),
                }
            }
        }
    };
}

currencies! {
    USD => 2, EUR => 2, GBP => 2, JPY => 0, CHF => 2, CAD => 2, AUD => 2, KWD => 3,
    SEK => 2, NOK => 2, DKK => 2, PLN => 2, CZK => 2, NZD => 2, SGD => 2, HKD => 2,
    CNY => 2, INR => 2, KRW => 0, BRL => 2, MXN => 2, ZAR => 2, BHD => 3, JOD => 3,
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount of money in one currency, with exactly the currency's minor digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Parses a decimal string such as `"19.99"`. Fewer digits than the currency's minor unit are
    /// padded; more are rejected, as are exponents, signs other than a leading `-`, and blanks.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, DomainError> {
        let bad = |why: &str| DomainError::InvalidMoney(format!("`{amount}` {why}"));
        let digits = amount.strip_prefix('-').unwrap_or(amount);
        let valid = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && digits.bytes().filter(|&b| b == b'.').count() <= 1
            && !digits.starts_with('.')
            && !digits.ends_with('.');
        if !valid {
            return Err(bad("is not a decimal number"));
        }
        let value = Decimal::from_str_exact(amount).map_err(|_| bad("is out of range"))?;
        if value.scale() > currency.minor_digits() {
            return Err(bad(&format!(
                "has more than {} decimal digits for {currency}",
                currency.minor_digits()
            )));
        }
        Self::from_decimal(value, currency)
    }

    /// An amount of `minor` minor units (cents for USD, yen for JPY, fils for KWD).
    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Self { amount: Decimal::new(minor, currency.minor_digits()), currency }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::from_minor(0, currency)
    }

    fn from_decimal(mut amount: Decimal, currency: Currency) -> Result<Self, DomainError> {
        if amount.scale() > currency.minor_digits() {
            return Err(DomainError::InvalidMoney(format!("{amount} has too many digits")));
        }
        amount.rescale(currency.minor_digits());
        // Rescaling can only grow the mantissa; it overflowed if the value changed.
        if amount.scale() != currency.minor_digits() {
            return Err(DomainError::Overflow);
        }
        amount.set_sign_negative(amount.is_sign_negative() && !amount.is_zero());
        Ok(Self { amount, currency })
    }

    /// The amount, with exactly the currency's minor digits.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units, if it fits an `i64`.
    pub fn minor_units(&self) -> Option<i64> {
        i64::try_from(self.amount.mantissa()).ok()
    }

    /// `self + other`, in the same currency.
    pub fn checked_add(&self, other: &Money) -> Result<Money, DomainError> {
        self.same_currency(other)?;
        let sum = self.amount.checked_add(other.amount).ok_or(DomainError::Overflow)?;
        Self::from_decimal(sum, self.currency)
    }

    /// `self - other`, in the same currency.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, DomainError> {
        self.same_currency(other)?;
        let diff = self.amount.checked_sub(other.amount).ok_or(DomainError::Overflow)?;
        Self::from_decimal(diff, self.currency)
    }

    /// `self * qty` (a line total).
    pub fn checked_mul(&self, qty: u32) -> Result<Money, DomainError> {
        let product = self.amount.checked_mul(Decimal::from(qty)).ok_or(DomainError::Overflow)?;
        Self::from_decimal(product, self.currency)
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative()
    }

    fn same_currency(&self, other: &Money) -> Result<(), DomainError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(DomainError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// `{"amount": "19.99", "currency": "USD"}`, the contract's Money object.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyRepr<'a> {
    #[serde(borrow)]
    amount: std::borrow::Cow<'a, str>,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MoneyRepr { amount: self.amount.to_string().into(), currency: self.currency }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = MoneyRepr::deserialize(d)?;
        Money::parse(&repr.amount, repr.currency).map_err(serde::de::Error::custom)
    }
}

/// Exchange rates from one base currency: `rates[c]` units of `c` buy one unit of `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxRates {
    base: Currency,
    rates: BTreeMap<Currency, Decimal>,
}

impl FxRates {
    /// Rates from `base`; every rate must be positive. The base's own rate is always 1.
    pub fn new(base: Currency, rates: BTreeMap<Currency, Decimal>) -> Result<Self, DomainError> {
        if let Some((currency, rate)) = rates.iter().find(|(_, r)| **r <= Decimal::ZERO) {
            return Err(DomainError::InvalidRate(format!(
                "{currency} rate {rate} is not positive"
            )));
        }
        if rates.get(&base).is_some_and(|r| *r != Decimal::ONE) {
            return Err(DomainError::InvalidRate(format!("the base {base} must have rate 1")));
        }
        let mut rates = rates;
        rates.insert(base, Decimal::ONE);
        Ok(Self { base, rates })
    }

    /// The base currency.
    pub fn base(&self) -> Currency {
        self.base
    }

    /// Units of `currency` per unit of the base, if known.
    pub fn rate(&self, currency: Currency) -> Option<Decimal> {
        self.rates.get(&currency).copied()
    }

    /// Every known currency and its rate.
    pub fn rates(&self) -> impl Iterator<Item = (Currency, Decimal)> + '_ {
        self.rates.iter().map(|(c, r)| (*c, *r))
    }

    /// Converts `money` to `to`: `amount * rate(to) / rate(from)`, computed exactly where the
    /// decimal range allows, then rounded once, half away from zero, to `to`'s minor digits.
    pub fn convert(&self, money: &Money, to: Currency) -> Result<Money, DomainError> {
        if money.currency == to {
            return Ok(*money);
        }
        let missing = |c: Currency| DomainError::InvalidRate(format!("no rate for {c}"));
        let from_rate = self.rate(money.currency).ok_or_else(|| missing(money.currency))?;
        let to_rate = self.rate(to).ok_or_else(|| missing(to))?;
        let exact = if money.currency == self.base {
            money.amount.checked_mul(to_rate)
        } else {
            money.amount.checked_mul(to_rate).and_then(|v| v.checked_div(from_rate))
        }
        .ok_or(DomainError::Overflow)?;
        let rounded =
            exact.round_dp_with_strategy(to.minor_digits(), RoundingStrategy::MidpointAwayFromZero);
        Money::from_decimal(rounded, to)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn usd(s: &str) -> Money {
        Money::parse(s, Currency::USD).unwrap()
    }

    #[test]
    fn parses_exact_minor_digits() {
        assert_eq!(usd("19.99").amount().to_string(), "19.99");
        assert_eq!(usd("19.9").amount().to_string(), "19.90");
        assert_eq!(usd("19").amount().to_string(), "19.00");
        assert_eq!(Money::parse("1500", Currency::JPY).unwrap().amount().to_string(), "1500");
        assert_eq!(Money::parse("1.234", Currency::KWD).unwrap().amount().to_string(), "1.234");
        assert_eq!(usd("-0").amount().to_string(), "0.00");
        for bad in ["19.999", "1e3", "", ".5", "5.", "+1", "1.2.3", " 1", "NaN", "1,00", "0x10"] {
            assert!(Money::parse(bad, Currency::USD).is_err(), "{bad} must be rejected");
        }
        assert!(Money::parse("1.5", Currency::JPY).is_err());
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("usd").is_err());
    }

    #[test]
    fn serializes_as_the_contract_says() {
        let json = serde_json::to_string(&usd("5")).unwrap();
        assert_eq!(json, r#"{"amount":"5.00","currency":"USD"}"#);
        let back: Money = serde_json::from_str(r#"{"amount":"0.1","currency":"EUR"}"#).unwrap();
        assert_eq!(back.amount().to_string(), "0.10");
        assert!(serde_json::from_str::<Money>(r#"{"amount":"0.001","currency":"USD"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":1.5,"currency":"USD"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1","currency":"XXX"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1","currency":"USD","x":1}"#).is_err());
    }

    #[test]
    fn mixing_currencies_is_an_error() {
        let eur = Money::parse("1", Currency::EUR).unwrap();
        assert!(matches!(usd("1").checked_add(&eur), Err(DomainError::CurrencyMismatch { .. })));
    }

    #[test]
    fn converts_with_one_documented_rounding() {
        let rates = FxRates::new(
            Currency::USD,
            [
                (Currency::EUR, Decimal::new(9210, 4)),
                (Currency::JPY, Decimal::new(15025, 2)),
                (Currency::KWD, Decimal::new(3075, 4)),
            ]
            .into(),
        )
        .unwrap();
        // 19.99 * 0.9210 = 18.41079 -> 18.41
        assert_eq!(
            rates.convert(&usd("19.99"), Currency::EUR).unwrap().amount().to_string(),
            "18.41"
        );
        // 0.05 * 0.9210 = 0.04605 -> 0.05 (half away from zero at the cent)
        assert_eq!(
            rates.convert(&usd("0.05"), Currency::EUR).unwrap().amount().to_string(),
            "0.05"
        );
        // 1.01 * 150.25 = 151.7525 -> 152 yen
        assert_eq!(rates.convert(&usd("1.01"), Currency::JPY).unwrap().amount().to_string(), "152");
        // 10 * 0.3075 = 3.075 KWD, three digits kept
        assert_eq!(rates.convert(&usd("10"), Currency::KWD).unwrap().amount().to_string(), "3.075");
        // EUR -> JPY goes through the base: 1 / 0.9210 * 150.25 = 163.1379... -> 163
        let eur = Money::parse("1", Currency::EUR).unwrap();
        assert_eq!(rates.convert(&eur, Currency::JPY).unwrap().amount().to_string(), "163");
        assert!(rates.convert(&usd("1"), Currency::GBP).is_err(), "no GBP rate");
        assert!(FxRates::new(Currency::USD, [(Currency::EUR, Decimal::ZERO)].into()).is_err());
    }

    fn currency() -> impl Strategy<Value = Currency> {
        proptest::sample::select(Currency::ALL)
    }

    fn money_in(c: Currency) -> impl Strategy<Value = Money> {
        (-1_000_000_000_000i64..1_000_000_000_000).prop_map(move |m| Money::from_minor(m, c))
    }

    fn rate() -> impl Strategy<Value = Decimal> {
        (1u64..10_000_000).prop_map(|r| Decimal::new(r as i64, 4))
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(c in currency(), minor in any::<i64>()) {
            let m = Money::from_minor(minor, c);
            prop_assert_eq!(Money::parse(&m.amount().to_string(), c).unwrap(), m);
            prop_assert_eq!(m.amount().scale(), c.minor_digits());
        }

        #[test]
        fn addition_is_commutative_associative_and_exact(
            (a, b, d) in currency().prop_flat_map(|c| (money_in(c), money_in(c), money_in(c)))
        ) {
            prop_assert_eq!(a.checked_add(&b).unwrap(), b.checked_add(&a).unwrap());
            prop_assert_eq!(
                a.checked_add(&b).unwrap().checked_add(&d).unwrap(),
                a.checked_add(&b.checked_add(&d).unwrap()).unwrap()
            );
            prop_assert_eq!(a.checked_add(&b).unwrap().checked_sub(&b).unwrap(), a);
            prop_assert_eq!(
                a.checked_add(&b).unwrap().minor_units(),
                Some(a.minor_units().unwrap() + b.minor_units().unwrap())
            );
        }

        #[test]
        fn multiplication_is_repeated_addition(
            m in currency().prop_flat_map(money_in), qty in 0u32..=100
        ) {
            let mut sum = Money::zero(m.currency());
            for _ in 0..qty {
                sum = sum.checked_add(&m).unwrap();
            }
            prop_assert_eq!(m.checked_mul(qty).unwrap(), sum);
        }

        #[test]
        fn conversion_rounds_once_to_the_nearest_minor_unit(
            from in currency(), to in currency(), r_from in rate(), r_to in rate(),
            minor in -1_000_000_000i64..1_000_000_000,
        ) {
            let rates = FxRates::new(Currency::USD, [(from, r_from), (to, r_to)].into());
            prop_assume!(rates.is_ok());
            let rates = rates.unwrap();
            let m = Money::from_minor(minor, from);
            let converted = rates.convert(&m, to).unwrap();
            prop_assert_eq!(converted.currency(), to);
            prop_assert_eq!(converted.amount().scale(), to.minor_digits());
            if from == to {
                prop_assert_eq!(converted, m);
            } else {
                let exact = m.amount() * rates.rate(to).unwrap() / rates.rate(from).unwrap();
                let half_unit = Decimal::new(5, to.minor_digits() + 1);
                // Within half a minor unit of the exact value (plus decimal division's last digit).
                prop_assert!((converted.amount() - exact).abs() <= half_unit + Decimal::new(1, 20));
            }
        }

        #[test]
        fn conversion_is_monotonic(
            to in currency(), r in rate(), a in -1_000_000_000i64..1_000_000_000, d in 0i64..1_000_000,
        ) {
            let rates = FxRates::new(Currency::USD, [(to, r)].into());
            prop_assume!(rates.is_ok());
            let rates = rates.unwrap();
            let low = rates.convert(&Money::from_minor(a, Currency::USD), to).unwrap();
            let high = rates.convert(&Money::from_minor(a + d, Currency::USD), to).unwrap();
            prop_assert!(low <= high);
        }
    }
}
