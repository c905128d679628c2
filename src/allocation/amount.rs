//! Amounts: normalised, and as floating-point numbers for the formats that carry them so (JSON,
//! the Prometheus exposition, threshold rules). Both give what `rust_decimal` gives, bit for
//! bit, taking a shorter way where the mantissa fits in 64 bits (every amount a bill holds).

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;

/// `d` as `Decimal::to_f64` gives it, bit for bit (not a number where that gives none), without
/// its two 128-bit divisions where the mantissa fits in 64 bits (every amount a bill holds):
/// the same integer parts, converted and combined by the same float operations.
pub fn as_f64(d: Decimal) -> f64 {
    let scale = d.scale();
    let mantissa = u64::try_from(d.mantissa().unsigned_abs());
    let m = match mantissa {
        Ok(m) if (1..=19).contains(&scale) => m,
        _ => return d.to_f64().unwrap_or(f64::NAN),
    };
    let precision = 10_u64.pow(scale);
    let integral = (m / precision) as f64;
    let frac = (m % precision) as f64 / precision as f64;
    let value = if frac == 0.0 {
        integral
    } else {
        let round_to = 10_f64.powi(scale as i32);
        ((integral + frac) * round_to).round() / round_to
    };
    if d.is_sign_negative() { -value } else { value }
}

/// `d.normalize()`: without trailing zeros, zero as positive zero with scale 0.
pub fn normalized(d: Decimal) -> Decimal {
    let Ok(mut m) = u64::try_from(d.mantissa().unsigned_abs()) else {
        return d.normalize();
    };
    if m == 0 {
        return Decimal::ZERO;
    }
    let mut scale = d.scale();
    while scale > 0 && m % 10 == 0 {
        m /= 10;
        scale -= 1;
    }
    Decimal::from_parts(m as u32, (m >> 32) as u32, 0, d.is_sign_negative(), scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decimals of mantissa `lo` (fits in 64 bits) and `lo + hi·2⁶⁴` (does not, unless
    /// `hi` is 0), at `scale`, negative if `neg`.
    fn decimals(lo: u64, hi: u32, scale: u32, neg: bool) -> [Decimal; 2] {
        [0, hi].map(|hi| {
            let m = i128::from(lo) | (i128::from(hi) << 64);
            Decimal::from_i128_with_scale(if neg { -m } else { m }, scale)
        })
    }

    #[test]
    fn as_f64_is_decimals_own_to_f64_bit_for_bit() {
        use proptest::prelude::*;
        let cases = (any::<u64>(), 0u32..=28, any::<bool>(), any::<u32>());
        proptest::proptest!(|((lo, scale, neg, hi) in cases)| {
            for d in decimals(lo, hi, scale, neg) {
                let want = d.to_f64().unwrap();
                prop_assert_eq!(as_f64(d).to_bits(), want.to_bits(), "{}", d);
            }
        });
        for text in [
            "0",
            "-0.10",
            "19.99999999",
            "1005855.17",
            "-390.0",
            "0.0000000001",
        ] {
            let d: Decimal = text.parse().unwrap();
            let want = d.to_f64().unwrap();
            assert_eq!(as_f64(d).to_bits(), want.to_bits(), "{text}");
        }
    }

    #[test]
    fn normalized_is_decimals_own_normalize_bit_for_bit() {
        use proptest::prelude::*;
        let zeros = prop_oneof![Just(0u32), 1u32..=19];
        let cases = (any::<u64>(), zeros, 0u32..=28, any::<bool>(), any::<u32>());
        proptest::proptest!(|((lo, zeros, scale, neg, hi) in cases)| {
            // Mantissas with trailing zeros, as sums at a fixed scale have.
            let lo = lo - lo % 10u64.pow(zeros);
            for d in decimals(lo, hi, scale, neg) {
                let want = d.normalize();
                prop_assert_eq!(normalized(d).serialize(), want.serialize(), "{}", d);
            }
        });
        for text in [
            "0",
            "-0.000",
            "0.000",
            "19.9900000000",
            "-390.0",
            "100",
            "1E-28",
        ] {
            let d: Decimal = text
                .parse()
                .unwrap_or_else(|_| Decimal::from_scientific(text).unwrap());
            assert_eq!(
                normalized(d).serialize(),
                d.normalize().serialize(),
                "{text}"
            );
        }
    }
}
