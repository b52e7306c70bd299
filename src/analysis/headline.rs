//! The one-line summary every rendering carries in its title: kernel, boot
//! time, sample count and what sampling cost.

use super::fold::RunSelect;
use crate::profile::{Profile, Run};

/// Facts for a title.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// Short kernel name, e.g. "Linux 6.12.38".
    pub kernel: String,
    /// Boot duration of each selected run, ns.
    pub boot_ns: Vec<u64>,
    /// Samples in the selected runs.
    pub samples: usize,
    /// Time the sampler spent (kick, capture, unwind, write) in the selected runs, ns.
    pub sampler_ns: u64,
}

/// "Linux version 6.12.38 (user@host) …" → "Linux 6.12.38".
pub fn short_kernel_version(banner: &str) -> String {
    let mut words = banner.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("Linux"), Some("version"), Some(v)) => format!("Linux {v}"),
        _ => banner.chars().take(40).collect(),
    }
}

/// A duration in the most readable unit ("45.2 s", "812 ms", "3.4 µs", "120 ns").
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns >= 10_000_000_000 {
        format!("{:.1} s", f / 1e9)
    } else if ns >= 1_000_000_000 {
        format!("{:.2} s", f / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1} ms", f / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", f / 1e3)
    } else {
        format!("{ns} ns")
    }
}

impl Headline {
    /// Gathers the facts for the selected runs.
    pub fn new(profile: &Profile, runs: RunSelect) -> Headline {
        let selected: Vec<&Run> = runs.runs(profile).collect();
        let kernel = profile
            .info
            .kernel_version
            .as_deref()
            .map(short_kernel_version)
            .unwrap_or_else(|| {
                let p = std::path::Path::new(&profile.info.kernel_path);
                p.file_name()
                    .map_or_else(|| "kernel".into(), |f| f.to_string_lossy().into_owned())
            });
        Headline {
            kernel,
            boot_ns: selected.iter().map(|r| r.boot_ns.unwrap_or(0)).collect(),
            samples: selected.iter().map(|r| r.samples.len()).sum(),
            sampler_ns: selected
                .iter()
                .map(|r| r.sampler_ns())
                .fold(0, u64::saturating_add),
        }
    }

    /// Median boot time of the selected runs.
    pub fn median_boot_ns(&self) -> Option<u64> {
        let mut v = self.boot_ns.clone();
        v.sort_unstable();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some(v[n / 2 - 1] / 2 + v[n / 2] / 2),
        }
    }

    /// Sampler time as a percentage of the total boot time.
    pub fn overhead_pct(&self) -> Option<f64> {
        let total: u64 = self.boot_ns.iter().fold(0, |a, b| a.saturating_add(*b));
        (total > 0).then(|| 100.0 * self.sampler_ns as f64 / total as f64)
    }

    /// e.g. "Linux 6.12.38: boot 45.2 s (median of 3 runs), 43712 samples, sampler overhead 4.1%".
    pub fn title(&self) -> String {
        let mut t = self.kernel.clone();
        match (self.median_boot_ns(), self.boot_ns.len()) {
            (Some(b), 1) => t.push_str(&format!(": boot {}", fmt_ns(b))),
            (Some(b), n) => t.push_str(&format!(": boot {} (median of {n} runs)", fmt_ns(b))),
            (None, _) => t.push_str(": no runs"),
        }
        t.push_str(&format!(", {} samples", self.samples));
        if let Some(p) = self.overhead_pct() {
            t.push_str(&format!(", sampler overhead {p:.1}%"));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            short_kernel_version("Linux version 6.12.38 (a@b) (gcc) #1 SMP"),
            "Linux 6.12.38"
        );
        assert_eq!(fmt_ns(45_200_000_000), "45.2 s");
        assert_eq!(fmt_ns(1_500_000_000), "1.50 s");
        assert_eq!(fmt_ns(812_000_000), "812.0 ms");
        assert_eq!(fmt_ns(3_400), "3.4 µs");
        assert_eq!(fmt_ns(12), "12 ns");
    }

    #[test]
    fn median_and_overhead() {
        let h = Headline {
            kernel: "k".into(),
            boot_ns: vec![30, 10, 20, 40],
            samples: 4,
            sampler_ns: 10,
        };
        assert_eq!(h.median_boot_ns(), Some(25));
        assert_eq!(h.overhead_pct(), Some(10.0));
        assert!(h.title().contains("median of 4 runs"), "{}", h.title());
    }
}
