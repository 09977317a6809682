//! The shop's default FX rates. The rates in use are part of the catalog (changed by an admin
//! through its change feed); until an admin sets rates, this fixed table of indicative rates
//! (mid-market, late 2026, to 4-6 significant digits) is used so every supported currency can be
//! shown out of the box; replace them before taking real money.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use storefront_actors::{Currency, DomainError, FxRates};

/// Indicative units of each currency per US dollar.
const PER_USD: [(&str, &str); 24] = [
    ("USD", "1"),
    ("EUR", "0.9210"),
    ("GBP", "0.7890"),
    ("JPY", "151.20"),
    ("CHF", "0.8830"),
    ("CAD", "1.3870"),
    ("AUD", "1.5340"),
    ("KWD", "0.3075"),
    ("SEK", "10.480"),
    ("NOK", "10.920"),
    ("DKK", "6.8720"),
    ("PLN", "3.9650"),
    ("CZK", "23.180"),
    ("NZD", "1.6920"),
    ("SGD", "1.3410"),
    ("HKD", "7.7850"),
    ("CNY", "7.2140"),
    ("INR", "84.310"),
    ("KRW", "1386.5"),
    ("BRL", "5.7720"),
    ("MXN", "20.140"),
    ("ZAR", "18.120"),
    ("BHD", "0.3770"),
    ("JOD", "0.7090"),
];

/// The indicative rates from `base`.
pub fn default_rates(base: Currency) -> Result<FxRates, DomainError> {
    let per_usd = |code: &str| -> Result<Decimal, DomainError> {
        let (_, rate) = PER_USD
            .iter()
            .find(|(c, _)| *c == code)
            .ok_or_else(|| DomainError::InvalidRate(format!("no default rate for {code}")))?;
        Decimal::from_str(rate).map_err(|e| DomainError::InvalidRate(e.to_string()))
    };
    let base_per_usd = per_usd(base.code())?;
    let mut rates = BTreeMap::new();
    for currency in Currency::ALL {
        if *currency != base {
            let rate = per_usd(currency.code())?
                .checked_div(base_per_usd)
                .ok_or(DomainError::Overflow)?
                .round_dp(6)
                .normalize();
            rates.insert(*currency, rate);
        }
    }
    FxRates::new(base, rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_every_currency_from_any_base() {
        for base in Currency::ALL {
            let rates = default_rates(*base).unwrap();
            for currency in Currency::ALL {
                assert!(rates.rate(*currency).unwrap() > Decimal::ZERO, "{base}->{currency}");
            }
            assert_eq!(rates.rate(*base), Some(Decimal::ONE));
        }
    }
}
