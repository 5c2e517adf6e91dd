//! Byte sizes as written in the config (`"50MB"`, `"2GiB"`, `1048576`) and
//! the memory high watermark (a fraction of the memory available, or an
//! absolute size).

use serde::Deserialize;

/// A size in the config: a whole number of bytes or a string with a unit.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SizeSetting {
    /// Bytes.
    Bytes(u64),
    /// `"<number><unit>"`: B, kB/KB, MB, GB, TB (powers of 1000, as
    /// RabbitMQ) or KiB, MiB, GiB, TiB (powers of 1024).
    Text(String),
}

impl SizeSetting {
    /// The size in bytes, or why the text is not one.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeSetting::Bytes(n) => Ok(*n),
            SizeSetting::Text(t) => parse_size(t),
        }
    }
}

/// Parse `"50MB"`, `"1.5GiB"`, `"4096"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as \"50MB\" or \"2GiB\""))?;
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" | "k" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "TB" | "T" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit `{other}` in `{text}`")),
    };
    Ok((number * scale) as u64)
}

/// `memory_high_watermark`: a fraction (0 < f ≤ 1) of the memory
/// available to Warren, or an absolute size.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum WatermarkSetting {
    /// Fraction of total memory (or of the cgroup's limit).
    Fraction(f64),
    /// Absolute, as a size string.
    Absolute(String),
}

impl WatermarkSetting {
    /// Check the value; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            WatermarkSetting::Fraction(f) if !(*f > 0.0 && *f <= 1.0) => {
                Err("a fraction must be above 0 and at most 1".into())
            }
            WatermarkSetting::Fraction(_) => Ok(()),
            WatermarkSetting::Absolute(t) => parse_size(t).map(|_| ()),
        }
    }

    /// The watermark in bytes given the memory available.
    pub fn bytes(&self, available: u64) -> u64 {
        match self {
            WatermarkSetting::Fraction(f) => (available as f64 * f) as u64,
            WatermarkSetting::Absolute(t) => parse_size(t).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5kB"), Ok(1500));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 0 "), Ok(0));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
    }

    #[test]
    fn watermarks() {
        assert_eq!(WatermarkSetting::Fraction(0.5).bytes(1000), 500);
        assert_eq!(WatermarkSetting::Absolute("1MB".into()).bytes(1), 1_000_000);
        assert!(WatermarkSetting::Fraction(0.0).validate().is_err());
        assert!(WatermarkSetting::Fraction(1.5).validate().is_err());
        assert!(WatermarkSetting::Absolute("x".into()).validate().is_err());
    }
}
