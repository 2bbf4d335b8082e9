//! JSON Schema's `integer`, the contract's type of `limit` and `buckets`,
//! read the same in a query string and in a JSON body: any number whose
//! fractional part is zero, so `1922`, `1922.0` and `1.922e3` are one page
//! size. (`str::parse::<u32>` and serde's `u32` read the first form only;
//! a client that computes a size as a float, or a JSON encoder that writes
//! every number with a point, sends the others.)

use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer};

/// The `u32` a query parameter's text writes: decimal digits, or any
/// number with a zero fractional part. `None` for anything else, a
/// fraction or a value out of range.
pub(crate) fn u32_of_text(text: &str) -> Option<u32> {
    if let Ok(value) = text.parse::<u32>() {
        return Some(value);
    }
    u32_of_float(text.parse().ok()?)
}

/// `number` as a `u32` if it is one exactly (NaN and infinities are not).
fn u32_of_float(number: f64) -> Option<u32> {
    if number.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&number) {
        return None;
    }
    // Exact: integral and within range.
    Some(number as u32)
}

/// `deserialize_with` for an optional `u32` field of a JSON body: absent
/// or `null` is `None`; a number must be integral and within range.
pub(crate) fn optional_u32<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let value = match number.as_u64() {
        Some(integer) => u32::try_from(integer).ok(),
        None => number.as_f64().and_then(u32_of_float),
    };
    value.map(Some).ok_or_else(|| {
        D::Error::invalid_value(
            Unexpected::Other(&format!("number {number}")),
            &"an integer from 0 to 4294967295",
        )
    })
}
