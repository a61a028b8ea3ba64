//! `%START_TIME(...)%`'s time formats: a strftime subset, always in UTC, plus Envoy's extras
//! (`%s`, `%f`/`%Nf`, and absl's `%E<N>S` used by the default form).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// One parsed piece of a time format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TimePiece {
    Literal(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// `%z`: always `+0000` (times are UTC).
    Offset,
    /// `%s`: seconds since the Unix epoch.
    EpochSeconds,
    /// `%Nf` (N digits of the fraction, `%f` = 9).
    Fraction(u8),
    /// `%E<N>S`: seconds with N fraction digits after a dot (`%ES`/`%E*S`: 9).
    SecondsWithFraction(u8),
}

/// Envoy's default START_TIME form, `2026-11-23T05:14:38.123Z`.
pub(super) fn default_pieces() -> Vec<TimePiece> {
    use TimePiece::*;
    vec![
        Year,
        Literal("-".into()),
        Month,
        Literal("-".into()),
        Day,
        Literal("T".into()),
        Hour,
        Literal(":".into()),
        Minute,
        Literal(":".into()),
        SecondsWithFraction(3),
        Literal("Z".into()),
    ]
}

/// Parses a time format; the error names the unsupported specifier.
pub(super) fn parse(fmt: &str) -> Result<Vec<TimePiece>, String> {
    use TimePiece::*;
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        let piece = match chars.next() {
            None => return Err("time format ends with a lone '%'".into()),
            Some('%') => {
                lit.push('%');
                continue;
            }
            Some('Y') => Year,
            Some('m') => Month,
            Some('d') => Day,
            Some('H') => Hour,
            Some('M') => Minute,
            Some('S') => Second,
            Some('z') => Offset,
            Some('s') => EpochSeconds,
            Some('f') => Fraction(9),
            Some('T') => {
                out_push(&mut out, &mut lit, Hour);
                lit.push(':');
                out_push(&mut out, &mut lit, Minute);
                lit.push(':');
                Second
            }
            Some('F') => {
                out_push(&mut out, &mut lit, Year);
                lit.push('-');
                out_push(&mut out, &mut lit, Month);
                lit.push('-');
                Day
            }
            Some(d @ '1'..='9') if chars.peek() == Some(&'f') => {
                chars.next();
                Fraction(d as u8 - b'0')
            }
            Some('E') => {
                let digits = match chars.next() {
                    Some(d @ '1'..='9') => d as u8 - b'0',
                    Some('*') => 9,
                    Some('S') => {
                        out_push(&mut out, &mut lit, SecondsWithFraction(9));
                        continue;
                    }
                    other => return Err(unsupported('E', other)),
                };
                if chars.next() != Some('S') {
                    return Err("unsupported time specifier '%E…': expected %E<1-9>S".into());
                }
                SecondsWithFraction(digits)
            }
            Some(other) => return Err(unsupported(other, None)),
        };
        out_push(&mut out, &mut lit, piece);
    }
    if !lit.is_empty() {
        out.push(Literal(lit));
    }
    Ok(out)
}

fn unsupported(c: char, next: Option<char>) -> String {
    match next {
        Some(n) => format!("unsupported time specifier '%{c}{n}'"),
        None => format!("unsupported time specifier '%{c}'"),
    }
}

fn out_push(out: &mut Vec<TimePiece>, lit: &mut String, piece: TimePiece) {
    if !lit.is_empty() {
        out.push(TimePiece::Literal(std::mem::take(lit)));
    }
    out.push(piece);
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Renders `t` (UTC; times before 1970 render as the epoch) with `pieces`.
pub(super) fn render(pieces: &[TimePiece], t: SystemTime, out: &mut String) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let nanos = since.subsec_nanos();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(days);
    let sod = secs % 86_400;
    let (hour, minute, second) = (sod / 3_600, (sod % 3_600) / 60, sod % 60);
    for piece in pieces {
        // Writing to a String cannot fail.
        let _ = match piece {
            TimePiece::Literal(s) => {
                out.push_str(s);
                Ok(())
            }
            TimePiece::Year => write!(out, "{year:04}"),
            TimePiece::Month => write!(out, "{month:02}"),
            TimePiece::Day => write!(out, "{day:02}"),
            TimePiece::Hour => write!(out, "{hour:02}"),
            TimePiece::Minute => write!(out, "{minute:02}"),
            TimePiece::Second => write!(out, "{second:02}"),
            TimePiece::Offset => {
                out.push_str("+0000");
                Ok(())
            }
            TimePiece::EpochSeconds => write!(out, "{secs}"),
            TimePiece::Fraction(n) => write_fraction(out, nanos, *n),
            TimePiece::SecondsWithFraction(n) => {
                let _ = write!(out, "{second:02}.");
                write_fraction(out, nanos, *n)
            }
        };
    }
}

fn write_fraction(out: &mut String, nanos: u32, digits: u8) -> std::fmt::Result {
    let digits = u32::from(digits.clamp(1, 9));
    let value = nanos / 10u32.pow(9 - digits);
    write!(out, "{value:0width$}", width = digits as usize)
}
