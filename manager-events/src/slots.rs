//! Resource slots: which slots the cluster knows, and slot amounts as the
//! reference writes them.
//!
//! A slot is a named, countable resource: `cpu` (cores, fractions allowed),
//! `mem` (bytes), and accelerator slots such as `cuda.device` or
//! `cuda.shares` that agents report. Amounts travel as decimal strings
//! (`"8"`, `"0.5"`, `"34359738368"`), unlimited as `"Infinity"`. The read
//! side does its slot arithmetic (limits minus usage, the least of several
//! remainders) with [`SlotAmount`], exactly, in fixed point.

use std::fmt;

/// The slots every cluster has, with their types (`count`, `bytes` or
/// `unique`): what `GET /config/resource-slots` answers and the slots every
/// REST slot map is filled out to. Accelerator slots join this list when
/// agents report them (there are no agents yet).
pub const KNOWN_SLOTS: &[(&str, &str)] = &[("cpu", "count"), ("mem", "bytes")];

/// The names of [`KNOWN_SLOTS`], in order.
pub fn known_slot_names() -> impl Iterator<Item = &'static str> {
    KNOWN_SLOTS.iter().map(|(name, _)| *name)
}

/// Whether `name` can name a slot: lower-case letters, digits, `_` and `.`
/// (`cpu`, `mem`, `cuda.device`, `rocm.device`), at most 64 characters.
pub fn valid_slot_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.'))
}

/// Decimal places kept by [`SlotAmount`]; the reference quantises counts to 3.
pub const SLOT_DECIMALS: u32 = 6;

const SCALE: i128 = 10i128.pow(SLOT_DECIMALS);

/// Why a slot amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotAmountError {
    /// Not a plain decimal number.
    #[error("{0:?} is not a decimal number")]
    NotDecimal(String),
    /// More decimal places than [`SLOT_DECIMALS`].
    #[error("{0:?} has more than 6 decimal places")]
    TooPrecise(String),
    /// Too large to hold.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// An amount of one slot: a fixed-point decimal, or unlimited.
///
/// Ordered as numbers, with every finite amount below [`SlotAmount::Infinity`],
/// so the least of several limits is [`Ord::min`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotAmount {
    /// A number, in millionths (see [`SLOT_DECIMALS`]).
    Finite(i128),
    /// No limit.
    Infinity,
}

impl SlotAmount {
    /// Nothing.
    pub const ZERO: SlotAmount = SlotAmount::Finite(0);

    /// Reads a decimal string (`"8"`, `"0.5"`, `"-1"`), or `Infinity`
    /// (also `inf`, `infinite`, any case) for unlimited.
    pub fn parse(text: &str) -> Result<SlotAmount, SlotAmountError> {
        let s = text.trim();
        if matches!(
            s.to_ascii_lowercase().as_str(),
            "infinity" | "inf" | "infinite"
        ) {
            return Ok(SlotAmount::Infinity);
        }
        let not_decimal = || SlotAmountError::NotDecimal(text.to_owned());
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(not_decimal());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > SLOT_DECIMALS as usize {
            return Err(SlotAmountError::TooPrecise(text.to_owned()));
        }
        let too_large = || SlotAmountError::TooLarge(text.to_owned());
        let whole: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| too_large())?
        };
        let mut fraction: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| not_decimal())?
        };
        fraction *= 10i128.pow(SLOT_DECIMALS - frac.len() as u32);
        let value = whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(fraction))
            .ok_or_else(too_large)?;
        Ok(SlotAmount::Finite(if negative { -value } else { value }))
    }

    /// A whole number.
    pub fn from_int(n: i64) -> SlotAmount {
        SlotAmount::Finite(i128::from(n) * SCALE)
    }

    /// `self + other`; unlimited stays unlimited.
    pub fn plus(self, other: SlotAmount) -> SlotAmount {
        match (self, other) {
            (SlotAmount::Finite(a), SlotAmount::Finite(b)) => {
                SlotAmount::Finite(a.saturating_add(b))
            }
            _ => SlotAmount::Infinity,
        }
    }

    /// `self - other`: unlimited minus a number stays unlimited; taking an
    /// unlimited amount away leaves nothing.
    pub fn minus(self, other: SlotAmount) -> SlotAmount {
        match (self, other) {
            (SlotAmount::Finite(a), SlotAmount::Finite(b)) => {
                SlotAmount::Finite(a.saturating_sub(b))
            }
            (SlotAmount::Infinity, SlotAmount::Finite(_)) => SlotAmount::Infinity,
            (_, SlotAmount::Infinity) => SlotAmount::ZERO,
        }
    }

    /// Whether the amount is a whole number (bytes are).
    pub fn is_whole(self) -> bool {
        matches!(self, SlotAmount::Finite(v) if v % SCALE == 0)
    }

    /// Whether the amount is below zero.
    pub fn is_negative(self) -> bool {
        matches!(self, SlotAmount::Finite(v) if v < 0)
    }
}

/// As the reference writes amounts: integers without exponent or trailing
/// zeros (`"8"`, `"34359738368"`), fractions as plain decimals (`"0.5"`),
/// unlimited as `"Infinity"`.
impl fmt::Display for SlotAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SlotAmount::Infinity => f.write_str("Infinity"),
            SlotAmount::Finite(v) => {
                let sign = if v < 0 { "-" } else { "" };
                let abs = v.unsigned_abs();
                let scale = SCALE.unsigned_abs();
                let (whole, fraction) = (abs / scale, abs % scale);
                if fraction == 0 {
                    write!(f, "{sign}{whole}")
                } else {
                    let digits = format!("{fraction:0width$}", width = SLOT_DECIMALS as usize);
                    write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
                }
            }
        }
    }
}

impl std::str::FromStr for SlotAmount {
    type Err = SlotAmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SlotAmount::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(s: &str) -> SlotAmount {
        SlotAmount::parse(s).unwrap()
    }

    #[test]
    fn amounts_read_and_print_as_the_reference_writes_them() {
        for (input, printed) in [
            ("8", "8"),
            ("8.000", "8"),
            ("2.0", "2"),
            ("0.5", "0.5"),
            (".25", "0.25"),
            ("34359738368", "34359738368"),
            ("-1", "-1"),
            ("0.000001", "0.000001"),
            ("Infinity", "Infinity"),
            ("inf", "Infinity"),
        ] {
            assert_eq!(amount(input).to_string(), printed, "{input}");
        }
        for bad in ["", ".", "1e3", "abc", "1.2.3", "NaN", "+1", "1g"] {
            assert!(SlotAmount::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(
            SlotAmount::parse("0.0000001"),
            Err(SlotAmountError::TooPrecise(_))
        ));
        assert!(matches!(
            SlotAmount::parse(&"9".repeat(40)),
            Err(SlotAmountError::TooLarge(_))
        ));
    }

    #[test]
    fn arithmetic_and_order_treat_infinity_as_unlimited() {
        assert!(amount("0.5") < amount("1"));
        assert!(amount("549755813888") < SlotAmount::Infinity);
        assert_eq!(amount("8").min(SlotAmount::Infinity), amount("8"));
        assert_eq!(amount("8").minus(amount("0.5")), amount("7.5"));
        assert_eq!(
            SlotAmount::Infinity.minus(amount("3")),
            SlotAmount::Infinity
        );
        assert_eq!(amount("3").minus(SlotAmount::Infinity), SlotAmount::ZERO);
        assert_eq!(amount("1").plus(SlotAmount::Infinity), SlotAmount::Infinity);
        assert!(amount("1").minus(amount("2")).is_negative());
        assert_eq!(SlotAmount::from_int(24), amount("24"));
        assert!(amount("24.000").is_whole() && !amount("0.5").is_whole());
        assert!(!SlotAmount::Infinity.is_whole());
    }

    #[test]
    fn slot_names() {
        for good in ["cpu", "mem", "cuda.device", "cuda.shares", "rocm_x.y2"] {
            assert!(valid_slot_name(good), "{good}");
        }
        for bad in ["", "CPU", "cuda-device", "a b", "mém"] {
            assert!(!valid_slot_name(bad), "{bad:?}");
        }
        assert_eq!(known_slot_names().collect::<Vec<_>>(), ["cpu", "mem"]);
    }
}
