//! Money as integer micro-dollars.
//!
//! Budgets are summed across thousands of steps; binary floating point would
//! drift and make `cost > limit` depend on summation order, which would break
//! INV-005 determinism. Policy authors still write dollars (`max: 12.50`); the
//! conversion happens once, when a policy is compiled.

use std::fmt;

/// An amount of US dollars, held as whole micro-dollars (1 USD = 1,000,000).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct MicroUsd(pub u64);

/// Why a dollar amount could not be represented.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoneyError {
    /// NaN or infinite.
    #[error("amount must be a finite number")]
    NotFinite,
    /// Below zero.
    #[error("amount must not be negative, got {0}")]
    Negative(f64),
    /// Above [`MicroUsd::MAX_USD`].
    #[error("amount {0} exceeds the maximum of 1000000000000 USD")]
    TooLarge(f64),
}

impl MicroUsd {
    /// Largest amount accepted from a policy author: one trillion dollars.
    pub const MAX_USD: f64 = 1e12;
    /// Micro-dollars per dollar.
    pub const PER_USD: u64 = 1_000_000;

    /// Converts dollars to micro-dollars, rounding to the nearest micro-dollar.
    pub fn from_usd(usd: f64) -> Result<Self, MoneyError> {
        if !usd.is_finite() {
            return Err(MoneyError::NotFinite);
        }
        if usd < 0.0 {
            return Err(MoneyError::Negative(usd));
        }
        if usd > Self::MAX_USD {
            return Err(MoneyError::TooLarge(usd));
        }
        // In range by the checks above: 1e12 * 1e6 = 1e18 < u64::MAX.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "value is finite, non-negative and below 1e18"
        )]
        let micros = (usd * 1e6).round() as u64;
        Ok(Self(micros))
    }

    /// The amount in dollars (lossy above 2^53 micro-dollars).
    #[expect(clippy::cast_precision_loss, reason = "display and JSON only")]
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / Self::PER_USD as f64
    }

    /// Adds without wrapping; budgets saturate at `u64::MAX` micro-dollars.
    pub fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dollars = self.0 / Self::PER_USD;
        let micros = self.0 % Self::PER_USD;
        let frac = format!("{micros:06}");
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 { &frac[..2] } else { trimmed };
        write!(f, "${dollars}.{shown}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_dollars_exactly() {
        assert_eq!(MicroUsd::from_usd(12.5), Ok(MicroUsd(12_500_000)));
        assert_eq!(MicroUsd::from_usd(0.1), Ok(MicroUsd(100_000)));
        assert_eq!(MicroUsd::from_usd(0.0), Ok(MicroUsd(0)));
        assert_eq!(MicroUsd::from_usd(0.000_000_4), Ok(MicroUsd(0)));
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!(MicroUsd::from_usd(-1.0), Err(MoneyError::Negative(-1.0)));
        assert_eq!(MicroUsd::from_usd(f64::NAN), Err(MoneyError::NotFinite));
        assert_eq!(MicroUsd::from_usd(f64::INFINITY), Err(MoneyError::NotFinite));
        assert_eq!(MicroUsd::from_usd(2e12), Err(MoneyError::TooLarge(2e12)));
    }

    #[test]
    fn displays_dollars() {
        assert_eq!(MicroUsd(12_500_000).to_string(), "$12.50");
        assert_eq!(MicroUsd(1).to_string(), "$0.000001");
        assert_eq!(MicroUsd(3_000_000).to_string(), "$3.00");
        assert_eq!(MicroUsd(1_234_560).to_string(), "$1.23456");
    }
}
