//! Prices between the display currency of a search and the base-currency minor units the index
//! holds: exact bounds for the price filter (the lowest or highest stored price whose shown price
//! passes, found by bisection over the conversion the API shows prices with, so a filter and the
//! prices shown never disagree at a rounding edge), and the price facet's buckets (round numbers
//! of the display currency).

use std::sync::Arc;

use rust_decimal::Decimal;
use storefront_actors::{Currency, FxRates, Money};

use super::{CatalogError, MAX_PRICE_UNITS, backend};

/// Where the price facet's buckets start, in units of the base currency, before they are
/// carried to the display currency and rounded.
const BUCKET_STARTS: [i64; 7] = [10, 25, 50, 100, 250, 500, 1000];

/// One bucket of the price facet, in the display currency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PriceBucket {
    /// Inclusive.
    pub from: Money,
    /// Exclusive; `None` on the last bucket.
    pub to: Option<Money>,
    /// Results in it.
    pub count: u64,
}

/// Prices of one base currency as shown in one display currency.
pub(super) struct Shown {
    rates: Arc<FxRates>,
    base: Currency,
    display: Currency,
    /// The highest stored price, in base minor units.
    max_minor: i64,
}

impl Shown {
    pub(super) fn new(
        rates: Arc<FxRates>,
        base: Currency,
        display: Currency,
    ) -> Result<Self, CatalogError> {
        rates.rate(display).ok_or_else(|| CatalogError::Invalid {
            field: "currency",
            reason: format!("no rate for {display}"),
        })?;
        let max_minor = MAX_PRICE_UNITS * 10_i64.pow(base.minor_digits());
        Ok(Self { rates, base, display, max_minor })
    }

    /// `minor` units of the base currency as the API shows them.
    fn show(&self, minor: i64) -> Result<Money, CatalogError> {
        self.rates.convert(&Money::from_minor(minor, self.base), self.display).map_err(backend)
    }

    /// The lowest base price (minor units) whose shown price passes `passes` (monotonic: false
    /// then true), or one above the highest price when none does.
    fn lowest(&self, passes: impl Fn(&Money) -> bool) -> Result<i64, CatalogError> {
        let (mut low, mut high) = (0, self.max_minor + 1);
        while low < high {
            let mid = low + (high - low) / 2;
            if passes(&self.show(mid)?) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Ok(low)
    }

    /// The lowest base price shown at or above `min`.
    pub(super) fn lowest_at_or_above(&self, min: &Money) -> Result<i64, CatalogError> {
        self.lowest(|shown| shown.amount() >= min.amount())
    }

    /// The highest base price shown at or below `max` (-1 when none is).
    pub(super) fn highest_at_or_below(&self, max: &Money) -> Result<i64, CatalogError> {
        Ok(self.lowest(|shown| shown.amount() > max.amount())? - 1)
    }

    /// The facet's bucket starts: round amounts of the display currency, each with the lowest
    /// base price shown at or above it.
    pub(super) fn bucket_bounds(&self) -> Result<Vec<(Money, i64)>, CatalogError> {
        let rate = self.rates.rate(self.display).unwrap_or(Decimal::ONE)
            / self.rates.rate(self.base).unwrap_or(Decimal::ONE);
        let mut bounds: Vec<(Money, i64)> = Vec::new();
        for start in BUCKET_STARTS {
            let amount =
                round_number(Decimal::from(start) * rate).round_dp(self.display.minor_digits());
            if amount <= Decimal::ZERO || bounds.iter().any(|(m, _)| m.amount() >= amount) {
                continue;
            }
            let from =
                Money::parse(&amount.normalize().to_string(), self.display).map_err(backend)?;
            let base = self.lowest_at_or_above(&from)?;
            bounds.push((from, base));
        }
        Ok(bounds)
    }

    /// The non-empty buckets, from the counts per bucket (`[0, b1)`, ..., `[bn, ∞)`).
    pub(super) fn buckets(&self, bounds: &[(Money, i64)], counts: &[u64]) -> Vec<PriceBucket> {
        let zero = Money::zero(self.display);
        let starts = std::iter::once(&zero).chain(bounds.iter().map(|(m, _)| m));
        let ends = bounds.iter().map(|(m, _)| Some(*m)).chain(std::iter::once(None));
        starts
            .zip(ends)
            .zip(counts)
            .filter(|(_, count)| **count > 0)
            .map(|((from, to), count)| PriceBucket { from: *from, to, count: *count })
            .collect()
    }
}

/// The round number nearest `x` (> 0): 1, 2, 2.5 or 5 times a power of ten.
fn round_number(x: Decimal) -> Decimal {
    if x <= Decimal::ZERO {
        return x;
    }
    let ten = Decimal::TEN;
    let mut power = Decimal::ONE;
    while x / power >= ten {
        power *= ten;
    }
    while x / power < Decimal::ONE {
        power /= ten;
    }
    let mantissa = x / power;
    let steps = [Decimal::ONE, Decimal::TWO, Decimal::new(25, 1), Decimal::new(5, 0), ten];
    let nearest =
        steps.iter().min_by_key(|step| (mantissa - **step).abs()).copied().unwrap_or(Decimal::ONE);
    nearest * power
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn shown(display: Currency, rate: &str) -> Shown {
        let rates = FxRates::new(Currency::USD, BTreeMap::from([(display, rate.parse().unwrap())]))
            .unwrap();
        Shown::new(Arc::new(rates), Currency::USD, display).unwrap()
    }

    #[test]
    fn filter_bounds_agree_with_the_prices_shown_at_rounding_edges() {
        let eur = shown(Currency::EUR, "0.9210");
        for euros in ["0.01", "9.21", "9.22", "18.42", "100.00"] {
            let limit = Money::parse(euros, Currency::EUR).unwrap();
            let low = eur.lowest_at_or_above(&limit).unwrap();
            assert!(eur.show(low).unwrap().amount() >= limit.amount(), "{euros}");
            assert!(eur.show(low - 1).unwrap().amount() < limit.amount(), "{euros}");
            let high = eur.highest_at_or_below(&limit).unwrap();
            assert!(eur.show(high).unwrap().amount() <= limit.amount(), "{euros}");
            assert!(eur.show(high + 1).unwrap().amount() > limit.amount(), "{euros}");
        }
        let usd = shown(Currency::EUR, "1");
        let ten = Money::parse("10", Currency::USD).unwrap();
        let same = Shown::new(usd.rates.clone(), Currency::USD, Currency::USD).unwrap();
        assert_eq!(same.lowest_at_or_above(&ten).unwrap(), 1000);
        assert_eq!(same.highest_at_or_below(&ten).unwrap(), 1000);
    }

    #[test]
    fn buckets_start_at_round_numbers_of_the_display_currency() {
        let starts = |s: &Shown| -> Vec<String> {
            s.bucket_bounds().unwrap().iter().map(|(m, _)| m.amount().to_string()).collect()
        };
        assert_eq!(
            starts(&shown(Currency::EUR, "1")),
            ["10.00", "25.00", "50.00", "100.00", "250.00", "500.00", "1000.00"]
        );
        assert_eq!(
            starts(&shown(Currency::JPY, "151.20")),
            ["2000", "5000", "10000", "20000", "50000", "100000", "200000"]
        );
        assert_eq!(round_number(Decimal::new(23, 0)), Decimal::new(25, 0));
        assert_eq!(round_number(Decimal::new(7, 2)), Decimal::new(5, 2));
    }
}
