//! Sizes, durations and CPU counts as people write them in flags and profiles (`64M`, `30s`, `1.5`).
//!
//! The parsers are strict on purpose: a limit that is silently read as something else (`512` meant as megabytes,
//! `1.5.2G`, `5 m`) is a limit that does not protect. Anything outside the small grammar below is an error whose
//! message shows the expected form.

use std::time::Duration;

use crate::names::Quoted;

/// The longest duration accepted: a year. Longer than any real run, and small enough that adding it to a clock
/// can never overflow (`Instant + Duration` panics on overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The largest CPU count accepted. cgroup v2's `cpu.max` has no such limit, but no machine airlock runs on has
/// more, so a bigger number is a typo.
pub const MAX_CPUS: f64 = 1024.0;

/// The smallest CPU count accepted: the kernel's shortest CFS quota is 1 ms per 100 ms period.
pub const MIN_CPUS: f64 = 0.01;

/// At most this many digits after the decimal point; more precision than this means nothing for a limit.
const MAX_FRACTION_DIGITS: usize = 9;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a size at all.
    #[error("invalid size {}: expected a number with an optional K, M, G or T suffix (e.g. 64M)", Quoted(.value))]
    Size { value: String },
    /// A size without a suffix is a byte count, and a byte cannot be split.
    #[error("invalid size {}: a byte count must be a whole number; add a suffix (e.g. 1.5G) or drop the fraction", Quoted(.value))]
    FractionalBytes { value: String },
    /// The size does not fit in 64 bits.
    #[error("size {} is too large: the most is 16777215T", Quoted(.value))]
    SizeTooLarge { value: String },
    /// Zero where the caller needs a real amount (a limit of zero would stop everything).
    #[error("size {} must be greater than zero", Quoted(.value))]
    SizeZero { value: String },
    /// The text is not a duration at all.
    #[error("invalid duration {}: expected a number with an optional ms, s, m, h or d suffix (e.g. 30s, 5m, 2h)", Quoted(.value))]
    Duration { value: String },
    /// A zero duration would end the run before it starts.
    #[error("duration {} must be greater than zero", Quoted(.value))]
    DurationZero { value: String },
    /// Longer than [`MAX_DURATION`].
    #[error("duration {} is too long: the most is 365d", Quoted(.value))]
    DurationTooLong { value: String },
    /// The text is not a number.
    #[error("invalid CPU count {}: expected a number of CPUs (e.g. 2 or 0.5)", Quoted(.value))]
    Cpus { value: String },
    /// A number, but not a usable CPU count.
    #[error("CPU count {} is out of range: expected a number from 0.01 to 1024", Short(*.value))]
    CpusOutOfRange { value: f64 },
}

/// Parses a byte size: `512`, `64K`, `64M`, `2G`, `1T`, in either case, optionally followed by `B` or `iB`
/// (`64MiB`, `64mb`). Multipliers are powers of 1024 whatever the spelling, because that is what the kernel's
/// memory and tmpfs limits mean. A fraction is allowed with a suffix (`1.5G`) and rounded down to whole bytes.
/// Zero is accepted; use [`parse_nonzero_size`] for limits.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Size { value: text.to_owned() };
    let digits_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number = Decimal::parse(number).ok_or_else(bad)?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    if shift == 0 && number.has_fraction() {
        return Err(UnitError::FractionalBytes { value: text.to_owned() });
    }
    let bytes = number.times(1u128 << shift);
    u64::try_from(bytes).map_err(|_| UnitError::SizeTooLarge { value: text.to_owned() })
}

/// [`parse_size`], refusing zero: for limits and tmpfs sizes, where zero cannot be what anyone meant.
pub fn parse_nonzero_size(text: &str) -> Result<u64, UnitError> {
    match parse_size(text)? {
        0 => Err(UnitError::SizeZero { value: text.to_owned() }),
        bytes => Ok(bytes),
    }
}

/// Parses a duration: `1500ms`, `30s`, `5m`, `2h`, `1d`, or a bare number of seconds. Fractions are allowed
/// (`1.5h`) and rounded down to whole milliseconds. Zero and anything over [`MAX_DURATION`] are refused. Units
/// are lower-case only, so `5M` cannot be misread as months.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::Duration { value: text.to_owned() };
    let digits_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number = Decimal::parse(number).ok_or_else(bad)?;
    let millis_per_unit: u128 = match suffix {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis = number.times(millis_per_unit);
    if millis == 0 {
        return Err(UnitError::DurationZero { value: text.to_owned() });
    }
    if millis > MAX_DURATION.as_millis() {
        return Err(UnitError::DurationTooLong { value: text.to_owned() });
    }
    // Cannot fail: the value is at most MAX_DURATION in milliseconds, far below u64::MAX.
    let millis = u64::try_from(millis).map_err(|_| UnitError::DurationTooLong { value: text.to_owned() })?;
    Ok(Duration::from_millis(millis))
}

/// Parses a CPU count (`2`, `0.5`, `1.5`) and checks it with [`validate_cpus`].
pub fn parse_cpus(text: &str) -> Result<f64, UnitError> {
    // Rust's float parser also takes `inf`, `NaN`, `1e3` and a leading `+`; only plain decimals are wanted here.
    let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
    let cpus: f64 = match text.parse() {
        Ok(cpus) if plain => cpus,
        _ => return Err(UnitError::Cpus { value: text.to_owned() }),
    };
    validate_cpus(cpus)
}

/// Checks a CPU count given as a number (a profile's `cpus = 1.5`): finite, from [`MIN_CPUS`] to [`MAX_CPUS`].
pub fn validate_cpus(cpus: f64) -> Result<f64, UnitError> {
    if cpus.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(&cpus) {
        Ok(cpus)
    } else {
        Err(UnitError::CpusOutOfRange { value: cpus })
    }
}

/// A float for a message: `1e308` would otherwise print as 309 digits.
struct Short(f64);

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.abs() < 1e6 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

/// A non-negative decimal number held exactly (`1.5` is 15 tenths), so `1.5G` is exactly 1610612736 bytes
/// without going through a float.
struct Decimal {
    whole: u128,
    fraction: u128,
    fraction_digits: u32,
}

impl Decimal {
    /// `DIGITS` or `DIGITS.DIGITS`; `None` for anything else (empty, `.5`, `5.`, `1.2.3`, signs, too many digits).
    fn parse(text: &str) -> Option<Decimal> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let whole = parse_digits(whole)?;
        let (fraction, fraction_digits) = match fraction {
            None => (0, 0),
            Some(digits) if digits.len() > MAX_FRACTION_DIGITS => return None,
            Some(digits) => (parse_digits(digits)?, u32::try_from(digits.len()).ok()?),
        };
        Some(Decimal { whole, fraction, fraction_digits })
    }

    fn has_fraction(&self) -> bool {
        self.fraction_digits > 0
    }

    /// The number times `unit`, rounded down; saturates at `u128::MAX`, which every caller then rejects as too
    /// large.
    fn times(&self, unit: u128) -> u128 {
        let scale = 10u128.pow(self.fraction_digits);
        let whole = self.whole.saturating_mul(unit);
        // fraction < 10^9 and unit <= 2^40, so this product cannot overflow.
        let fraction = self.fraction.saturating_mul(unit) / scale;
        whole.saturating_add(fraction)
    }
}

/// One or more ASCII digits as a number; `None` when empty or not all digits. A number beyond `u128` becomes
/// `u128::MAX`, so that it is reported as too large rather than as not a number.
fn parse_digits(digits: &str) -> Option<u128> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u128::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_every_suffix() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64mib").unwrap(), 64 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("1tb").unwrap(), 1 << 40);
    }

    #[test]
    fn sizes_with_fractions_round_down_to_bytes() {
        assert_eq!(parse_size("1.5G").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        assert_eq!(parse_size("1.3K").unwrap(), 1331);
        assert_eq!(parse_size("1.000000001K").unwrap(), 1024);
        assert_eq!(parse_size("1.5").unwrap_err(), UnitError::FractionalBytes { value: "1.5".into() });
    }

    #[test]
    fn sizes_that_are_not_sizes() {
        for bad in [
            "",
            "lots",
            "-1G",
            "+1G",
            "G",
            "1.5.2G",
            ".5G",
            "5.G",
            "1 G",
            " 1G",
            "1G ",
            "1GG",
            "1Gi",
            "1KiBB",
            "1P",
            "1E",
            "0x10",
            "1e3",
            "１G",
            "1\0G",
            "1_000",
            "1.0000000001G",
        ] {
            assert_eq!(parse_size(bad).unwrap_err(), UnitError::Size { value: bad.into() }, "{bad:?}");
        }
    }

    #[test]
    fn sizes_that_overflow() {
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        for huge in
            ["18446744073709551616", "16777216T", "17179869184G", "99999999999999999999999999999999999999999999"]
        {
            assert_eq!(parse_size(huge).unwrap_err(), UnitError::SizeTooLarge { value: huge.into() }, "{huge}");
        }
        let ten_thousand_digits = "9".repeat(10_000);
        assert!(parse_size(&ten_thousand_digits).is_err());
        assert!(parse_size(&format!("{ten_thousand_digits}G")).is_err());
    }

    #[test]
    fn nonzero_sizes() {
        assert_eq!(parse_nonzero_size("1").unwrap(), 1);
        for zero in ["0", "0G", "0.0M", "0.0000001K"] {
            assert_eq!(parse_nonzero_size(zero).unwrap_err(), UnitError::SizeZero { value: zero.into() });
        }
        assert!(matches!(parse_nonzero_size("x"), Err(UnitError::Size { .. })));
    }

    #[test]
    fn size_message_shows_the_expected_form() {
        assert_eq!(
            parse_size("lots").unwrap_err().to_string(),
            r#"invalid size "lots": expected a number with an optional K, M, G or T suffix (e.g. 64M)"#
        );
    }

    #[test]
    fn durations_with_every_unit() {
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
    }

    #[test]
    fn durations_refused() {
        for bad in ["", "soon", "-5s", "5 s", "5S", "5M", "5H", "5min", "5sec", "s", "1.2.3s", "5s5", "1h30m", "\0"] {
            assert_eq!(parse_duration(bad).unwrap_err(), UnitError::Duration { value: bad.into() }, "{bad:?}");
        }
        for zero in ["0", "0s", "0ms", "0.0001s"] {
            assert_eq!(parse_duration(zero).unwrap_err(), UnitError::DurationZero { value: zero.into() });
        }
        for long in ["366d", "8785h", "18446744073709551616", &"9".repeat(10_000)] {
            assert_eq!(parse_duration(long).unwrap_err(), UnitError::DurationTooLong { value: long.into() });
        }
    }

    #[test]
    fn duration_message_shows_the_expected_form() {
        assert_eq!(
            parse_duration("soon").unwrap_err().to_string(),
            r#"invalid duration "soon": expected a number with an optional ms, s, m, h or d suffix (e.g. 30s, 5m, 2h)"#
        );
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("2").unwrap(), 2.0);
        assert_eq!(parse_cpus("1.5").unwrap(), 1.5);
        assert_eq!(parse_cpus("0.01").unwrap(), 0.01);
        assert_eq!(parse_cpus("1024").unwrap(), 1024.0);
        for bad in ["", "two", "-1", "+1", "inf", "NaN", "1e3", "1,5", "1.5.1", " 1"] {
            assert_eq!(parse_cpus(bad).unwrap_err(), UnitError::Cpus { value: bad.into() }, "{bad:?}");
        }
        for out in ["0", "0.001", "1025", &"9".repeat(400)] {
            assert!(matches!(parse_cpus(out), Err(UnitError::CpusOutOfRange { .. })), "{out}");
        }
        for out in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, 1e300] {
            assert!(validate_cpus(out).is_err(), "{out}");
        }
        assert_eq!(validate_cpus(4.0).unwrap(), 4.0);
        assert_eq!(
            validate_cpus(1e308).unwrap_err().to_string(),
            "CPU count 1e308 is out of range: expected a number from 0.01 to 1024"
        );
        assert_eq!(
            validate_cpus(0.001).unwrap_err().to_string(),
            "CPU count 0.001 is out of range: expected a number from 0.01 to 1024"
        );
    }

    #[test]
    fn messages_escape_and_shorten_hostile_values() {
        let message = parse_size("\u{1b}[31mred").unwrap_err().to_string();
        assert!(!message.contains('\u{1b}'), "{message}");
        let message = parse_size(&"x".repeat(10_000)).unwrap_err().to_string();
        assert!(message.len() < 300, "{}", message.len());
    }
}
