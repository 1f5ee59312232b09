//! Resource slots: what the agent declares it can hold, and what its kernels
//! hold now.
//!
//! Slot amounts travel as decimal strings (`"4"`, `"0.5"`,
//! `"17179869184"`); the agent does its arithmetic on them exactly, in
//! millionths ([`Amount`]), so that a capacity check never rounds a kernel in
//! or out. The configuration may also write byte slots with a binary suffix
//! (`"16g"`, `"512MiB"`), as the reference's `BinarySize` does.
//!
//! [`SlotTable`] keeps the declared capacity and the allocations of the
//! running kernels, and refuses an allocation that does not fit.

use std::collections::BTreeMap;
use std::fmt;

use agent_rpc::kernel::SlotMap;

/// Decimal places an [`Amount`] keeps.
const DECIMALS: u32 = 6;
const SCALE: i128 = 10i128.pow(DECIMALS);

/// Why an amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a decimal number (or a size with a binary suffix).
    #[error("{0:?} is not a decimal number or a size like \"16g\"")]
    NotDecimal(String),
    /// More than six decimal places.
    #[error("{0:?} has more than 6 decimal places")]
    TooPrecise(String),
    /// Negative, or too large to hold.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// A non-negative slot amount in millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i128);

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// Reads a plain decimal string (`"4"`, `"0.5"`).
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        let s = text.trim();
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(AmountError::NotDecimal(text.to_owned()));
        }
        let frac = frac.trim_end_matches('0');
        let places = u32::try_from(frac.len()).unwrap_or(u32::MAX);
        if places > DECIMALS {
            return Err(AmountError::TooPrecise(text.to_owned()));
        }
        let range = || AmountError::OutOfRange(text.to_owned());
        let whole: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| range())?
        };
        let fraction: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse::<i128>().map_err(|_| range())? * 10i128.pow(DECIMALS - places)
        };
        whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(fraction))
            .filter(|v| *v < i128::from(u64::MAX) * SCALE)
            .map(Amount)
            .ok_or_else(range)
    }

    /// Reads a decimal, or a size with a binary suffix (`k`, `m`, `g`, `t`,
    /// `p`, optionally followed by `i` and/or `b`, any case): `"16g"` and
    /// `"16GiB"` are 16 × 2³⁰. A size must come out a whole number.
    pub fn parse_size(text: &str) -> Result<Amount, AmountError> {
        let s = text.trim();
        let lower = s.to_ascii_lowercase();
        let stripped = lower.trim_end_matches('b').trim_end_matches('i');
        let (number, shift) = match stripped.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let shift = match c {
                    'k' => 10,
                    'm' => 20,
                    'g' => 30,
                    't' => 40,
                    'p' => 50,
                    _ => return Err(AmountError::NotDecimal(text.to_owned())),
                };
                (&stripped[..i], shift)
            }
            _ if stripped.len() != lower.len() => {
                // A bare "b" or "ib" suffix without a unit letter: bytes.
                (stripped, 0)
            }
            _ => return Amount::parse(s),
        };
        let base = Amount::parse(number)?;
        let value = base
            .0
            .checked_mul(1i128 << shift)
            .ok_or_else(|| AmountError::OutOfRange(text.to_owned()))?;
        if value % SCALE != 0 {
            return Err(AmountError::TooPrecise(text.to_owned()));
        }
        Ok(Amount(value))
    }

    /// A whole number.
    pub fn from_int(n: u64) -> Amount {
        Amount(i128::from(n) * SCALE)
    }

    /// `self + other`.
    pub fn plus(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    /// `self - other`, never below zero.
    pub fn minus(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0).max(0))
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    /// The shortest decimal string: `4`, `0.5`, `17179869184`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / SCALE;
        let frac = self.0 % SCALE;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// The type of a slot, as reported to the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotType {
    /// Countable units (`cpu`, `cuda.device`).
    Count,
    /// Bytes (`mem`, `cuda.mem`).
    Bytes,
    /// A device that is given whole to one kernel.
    Unique,
}

impl SlotType {
    /// The default type of a slot by its name: `mem` and `*.mem` are bytes,
    /// everything else counts.
    pub fn default_for(name: &str) -> SlotType {
        if name == "mem" || name.ends_with(".mem") {
            SlotType::Bytes
        } else {
            SlotType::Count
        }
    }

    /// Reads `count`, `bytes` or `unique`.
    pub fn parse(text: &str) -> Option<SlotType> {
        match text {
            "count" => Some(SlotType::Count),
            "bytes" => Some(SlotType::Bytes),
            "unique" => Some(SlotType::Unique),
            _ => None,
        }
    }

    /// `count`, `bytes` or `unique`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotType::Count => "count",
            SlotType::Bytes => "bytes",
            SlotType::Unique => "unique",
        }
    }
}

/// Whether `name` can name a slot: lower-case letters, digits, `_`, `-` and
/// `.` (`cpu`, `mem`, `cuda.device`), at most 64 characters.
pub fn valid_slot_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Why an allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The request names an amount that does not parse.
    #[error("slot {slot}: {error}")]
    BadAmount {
        /// The slot.
        slot: String,
        /// What is wrong with its amount.
        error: AmountError,
    },
    /// The request asks for a slot this agent does not have.
    #[error("this agent has no slot {0:?}")]
    UnknownSlot(String),
    /// Not enough of a slot is free.
    #[error("slot {slot}: {requested} requested, {free} free")]
    Insufficient {
        /// The slot.
        slot: String,
        /// The amount asked for.
        requested: Amount,
        /// The amount free.
        free: Amount,
    },
}

/// Declared capacity and current allocations, by slot name.
#[derive(Debug, Clone, Default)]
pub struct SlotTable {
    capacity: BTreeMap<String, (SlotType, Amount)>,
    allocated: BTreeMap<String, Amount>,
}

impl SlotTable {
    /// A table with the given capacity and nothing allocated.
    pub fn new(capacity: BTreeMap<String, (SlotType, Amount)>) -> SlotTable {
        SlotTable {
            capacity,
            allocated: BTreeMap::new(),
        }
    }

    /// Replaces the capacity (a configuration reload); allocations stay.
    pub fn set_capacity(&mut self, capacity: BTreeMap<String, (SlotType, Amount)>) {
        self.capacity = capacity;
    }

    /// The capacity as the agent reports it: amounts as decimal strings.
    pub fn available(&self) -> SlotMap {
        self.capacity
            .iter()
            .map(|(k, (_, a))| (k.clone(), a.to_string()))
            .collect()
    }

    /// Each slot's type.
    pub fn types(&self) -> BTreeMap<String, String> {
        self.capacity
            .iter()
            .map(|(k, (t, _))| (k.clone(), t.as_str().to_owned()))
            .collect()
    }

    /// What the running kernels hold, by slot.
    pub fn allocated(&self) -> SlotMap {
        self.allocated
            .iter()
            .map(|(k, a)| (k.clone(), a.to_string()))
            .collect()
    }

    /// Reads a request's slots; zero amounts of slots the agent does not have
    /// are ignored (managers fill slot maps out with every known slot).
    pub fn parse_request(&self, slots: &SlotMap) -> Result<BTreeMap<String, Amount>, AllocError> {
        let mut out = BTreeMap::new();
        for (slot, text) in slots {
            let amount = Amount::parse_size(text).map_err(|error| AllocError::BadAmount {
                slot: slot.clone(),
                error,
            })?;
            if amount.is_zero() {
                continue;
            }
            if !self.capacity.contains_key(slot) {
                return Err(AllocError::UnknownSlot(slot.clone()));
            }
            out.insert(slot.clone(), amount);
        }
        Ok(out)
    }

    /// Allocates all of `request` or nothing.
    pub fn allocate(&mut self, request: &BTreeMap<String, Amount>) -> Result<(), AllocError> {
        for (slot, amount) in request {
            let Some((_, capacity)) = self.capacity.get(slot) else {
                return Err(AllocError::UnknownSlot(slot.clone()));
            };
            let used = self.allocated.get(slot).copied().unwrap_or_default();
            let free = capacity.minus(used);
            if *amount > free {
                return Err(AllocError::Insufficient {
                    slot: slot.clone(),
                    requested: *amount,
                    free,
                });
            }
        }
        for (slot, amount) in request {
            let used = self.allocated.entry(slot.clone()).or_default();
            *used = used.plus(*amount);
        }
        Ok(())
    }

    /// Gives an allocation back.
    pub fn release(&mut self, request: &BTreeMap<String, Amount>) {
        for (slot, amount) in request {
            if let Some(used) = self.allocated.get_mut(slot) {
                *used = used.minus(*amount);
                if used.is_zero() {
                    self.allocated.remove(slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_and_print_exactly() {
        assert_eq!(Amount::parse("4").unwrap().to_string(), "4");
        assert_eq!(Amount::parse("0.5").unwrap().to_string(), "0.5");
        assert_eq!(Amount::parse("1.250000").unwrap().to_string(), "1.25");
        assert!(Amount::parse("-1").is_err());
        assert!(Amount::parse("1e3").is_err());
        assert!(Amount::parse("0.0000001").is_err());
        assert!(Amount::parse("").is_err());
        assert_eq!(
            Amount::parse_size("16g").unwrap().to_string(),
            "17179869184"
        );
        assert_eq!(
            Amount::parse_size("1GiB").unwrap().to_string(),
            "1073741824"
        );
        assert_eq!(
            Amount::parse_size("512MB").unwrap().to_string(),
            "536870912"
        );
        assert_eq!(Amount::parse_size("1.5k").unwrap().to_string(), "1536");
        assert_eq!(Amount::parse_size("100").unwrap().to_string(), "100");
        assert!(Amount::parse_size("1x").is_err());
    }

    #[test]
    fn allocation_is_all_or_nothing() {
        let mut t = SlotTable::new(BTreeMap::from([
            ("cpu".to_owned(), (SlotType::Count, Amount::from_int(2))),
            ("mem".to_owned(), (SlotType::Bytes, Amount::from_int(100))),
        ]));
        let req = t
            .parse_request(&SlotMap::from([
                ("cpu".into(), "1.5".into()),
                ("mem".into(), "60".into()),
                ("cuda.device".into(), "0".into()),
            ]))
            .unwrap();
        t.allocate(&req).unwrap();
        assert!(matches!(
            t.allocate(&req),
            Err(AllocError::Insufficient { .. })
        ));
        assert_eq!(t.allocated().get("cpu").map(String::as_str), Some("1.5"));
        t.release(&req);
        assert!(t.allocated().is_empty());
        assert!(matches!(
            t.parse_request(&SlotMap::from([("tpu".into(), "1".into())])),
            Err(AllocError::UnknownSlot(_))
        ));
    }
}
