//! Diagnostic: each exact initcall of a recording next to initcall_debug's
//! figure for it, with the vCPUs of its two breakpoint hits, its time by
//! the guest's TSC, the printk timestamps of its two console lines and
//! where the init thread (pid 1) was sampled inside it:
//! `cargo run --release --example exact-vs-debug -- TRACE.data`.
//! With `DUMP=1` it first lists every boundary: vCPU, host time, guest TSC
//! and how far the TSC strayed from host time since the first one (µs).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use boottrace::analysis::initcalls::pair;
use boottrace::profile::build::open;
use boottrace::profile::symbols::SymbolConfig;
use boottrace::profile::ConsoleLine;

/// printk's `[  12.345678]` timestamp, µs.
fn printk_us(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (ts, _) = rest.split_once(']')?;
    ts.trim().parse::<f64>().ok().map(|s| s * 1e6)
}

/// The initcall name after `key` in an initcall_debug line.
fn name_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(key).nth(1)?.split(['+', ' ']).next()
}

struct Debug<'a> {
    calling: &'a ConsoleLine,
    returned: &'a ConsoleLine,
    us: u64,
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: exact-vs-debug TRACE.data")?;
    let p = open(Path::new(&path), &SymbolConfig::default())?;
    let run = p.runs.first().context("no run")?;
    // initcall_debug's lines by name (the last of each name).
    let mut calling: HashMap<&str, &ConsoleLine> = HashMap::new();
    let mut debug: HashMap<&str, Debug> = HashMap::new();
    for l in &run.console {
        if let Some(n) = name_after(&l.line, "calling  ") {
            calling.insert(n, l);
        } else if let Some(n) = name_after(&l.line, "initcall ") {
            let us = l
                .line
                .split("after ")
                .nth(1)
                .and_then(|r| r.strip_suffix(" usecs"))
                .and_then(|r| r.trim().parse().ok());
            if let (Some(c), Some(us)) = (calling.get(n), us) {
                debug.insert(
                    n,
                    Debug {
                        calling: c,
                        returned: l,
                        us,
                    },
                );
            }
        }
    }
    // TSC rate from the first and last boundary with a TSC on vCPU 0.
    let b0: Vec<_> = run
        .boundaries
        .iter()
        .filter(|b| b.vcpu == 0 && b.tsc.is_some())
        .collect();
    let tsc_per_ns = match (b0.first(), b0.last()) {
        (Some(a), Some(b)) if b.t_ns > a.t_ns => {
            (b.tsc.unwrap_or(0) - a.tsc.unwrap_or(0)) as f64 / (b.t_ns - a.t_ns) as f64
        }
        _ => 0.0,
    };
    println!("TSC {:.4} cycles/ns over vCPU 0's boundaries", tsc_per_ns);
    if std::env::var_os("DUMP").is_some() {
        let first = run.boundaries.iter().find(|b| b.tsc.is_some());
        for b in &run.boundaries {
            let drift = match (first, b.tsc) {
                (Some(f), Some(t)) if tsc_per_ns > 0.0 => {
                    (t.wrapping_sub(f.tsc.unwrap_or(0)) as f64 / tsc_per_ns
                        - (b.t_ns - f.t_ns) as f64)
                        / 1e3
                }
                _ => f64::NAN,
            };
            println!(
                "B {} {:>14} {:>20?} {:>9.1} {} {:?}",
                b.vcpu, b.t_ns, b.tsc, drift, b.kind, b.function
            );
        }
    }
    if let Some((n, ns)) = run.figures.breakpoints {
        println!(
            "breakpoint exits {n}, VMM handling {:.1} us each",
            ns as f64 / n.max(1) as f64 / 1e3
        );
    }
    println!(
        "{:<28} {:>4} {:>10} {:>10} {:>10} {:>9} | {:>10} {:>10} {:>10} | pid1 samples per vCPU",
        "initcall",
        "vcpu",
        "exact_us",
        "tsc_us",
        "debug_us",
        "diff_us",
        "call->st",
        "end->ret",
        "printk_d"
    );
    let (pairs, _) = pair(&run.boundaries);
    for (si, ei) in pairs {
        let (s, e) = (&run.boundaries[si], &run.boundaries[ei]);
        let name = s.function.clone().unwrap_or_default();
        let exact_us = e.t_ns.saturating_sub(s.t_ns) as f64 / 1e3;
        let tsc_us = match (s.tsc, e.tsc) {
            (Some(a), Some(b)) if tsc_per_ns > 0.0 => (b.wrapping_sub(a)) as f64 / tsc_per_ns / 1e3,
            _ => f64::NAN,
        };
        let mut per_vcpu = [0u32; 4];
        let mut other = [0u32; 4];
        for x in run
            .samples
            .iter()
            .filter(|x| x.t_ns >= s.t_ns && x.t_ns < e.t_ns)
        {
            let v = (x.vcpu as usize).min(3);
            if run.task(x).is_some_and(|t| t.pid == 1) {
                per_vcpu[v] += 1;
            } else {
                other[v] += 1;
            }
        }
        let Some(d) = debug.get(name.as_str()) else {
            continue;
        };
        let diff = exact_us - d.us as f64;
        // Host time from the "calling" line's completion to the start hit, and
        // from the end hit to the "returned" line's completion.
        let call_to_start = s.t_ns as f64 / 1e3 - d.calling.t_ns as f64 / 1e3;
        let end_to_ret = d.returned.t_ns as f64 / 1e3 - e.t_ns as f64 / 1e3;
        let printk_d = match (printk_us(&d.calling.line), printk_us(&d.returned.line)) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        println!(
            "{:<28} {:>1}>{:<2} {:>10.0} {:>10.0} {:>10} {:>9.0} | {:>10.0} {:>10.0} {:>10.0} | pid1 {:?} other {:?}",
            name.chars().take(28).collect::<String>(),
            s.vcpu,
            e.vcpu,
            exact_us,
            tsc_us,
            d.us,
            diff,
            call_to_start,
            end_to_ret,
            printk_d,
            &per_vcpu[..2],
            &other[..2]
        );
        // Where initcall_debug's span is longer, what pid 1 was doing just
        // outside the exact one (its wait stacks: not running, so neither
        // the entry nor the return breakpoint could see that time).
        if diff < -1000.0 {
            let gap = (-diff * 1e3) as u64 + 5_000_000;
            for (label, lo, hi) in [
                ("before entry", s.t_ns.saturating_sub(gap), s.t_ns),
                ("after return", e.t_ns, e.t_ns + gap),
            ] {
                let mut stacks: HashMap<String, (u32, u64)> = HashMap::new();
                for w in run.waits.iter().filter(|w| w.t_ns >= lo && w.t_ns < hi) {
                    let names = p.stack_names(w.stack);
                    let top: Vec<&str> = names.iter().rev().take(4).map(String::as_str).collect();
                    let e = stacks.entry(top.join(" <- ")).or_default();
                    e.0 += 1;
                    e.1 += w.interval_ns;
                }
                for x in run.samples.iter().filter(|x| {
                    x.t_ns >= lo && x.t_ns < hi && run.task(x).is_some_and(|t| t.pid == 1)
                }) {
                    let names = p.stack_names(x.stack);
                    let top: Vec<&str> = names.iter().rev().take(5).map(String::as_str).collect();
                    let e = stacks
                        .entry(format!("[on CPU] {}", top.join(" <- ")))
                        .or_default();
                    e.0 += 1;
                    e.1 += x.interval_ns;
                }
                let mut v: Vec<_> = stacks.into_iter().collect();
                v.sort_by_key(|x| std::cmp::Reverse(x.1 .1));
                for (stack, (n, ns)) in v.iter().take(4) {
                    println!(
                        "    pid 1 {label}: {n} samples, {:.1} ms: {stack}",
                        *ns as f64 / 1e6
                    );
                }
            }
        }
    }
    Ok(())
}
