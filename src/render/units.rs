//! Quantities as people read them, shared by the renderers that print
//! durations (the text report, the HTML page, the sweep's table and chart),
//! so that none of them has to reach into another for it.

/// Formats nanoseconds with a unit that keeps 3–4 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    let a = ns.abs();
    if !ns.is_finite() {
        "-".to_string()
    } else if a >= 10e9 {
        format!("{:.1} s", ns / 1e9)
    } else if a >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if a >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_formatting_picks_a_readable_unit() {
        assert_eq!(fmt_ns(512.0), "512 ns");
        assert_eq!(fmt_ns(12_345.0), "12.3 µs");
        assert_eq!(fmt_ns(1_234_567.0), "1.235 ms");
        assert_eq!(fmt_ns(2_500_000_000.0), "2.500 s");
        assert_eq!(fmt_ns(45_200_000_000.0), "45.2 s");
        assert_eq!(fmt_ns(f64::NAN), "-");
    }
}
