//! Unwind quality: the share of kernel-mode samples, taken after
//! `start_kernel` began, whose outermost frame is a known stack root.
//!
//! A stack that ends anywhere else was cut short (a guest read failed, a
//! frame was implausible, the unwinder lost the chain), so its outer
//! functions get too little total time. Counted in samples, not time.

use std::collections::HashMap;

use serde::Serialize;

use crate::profile::{FrameKind, Profile, Run, StackMemo};

/// Functions where a complete kernel stack ends.
pub const KNOWN_ROOTS: &[&str] = &[
    // The boot CPU's stack: head code hands over to these and never returns.
    "x86_64_start_kernel",
    "x86_64_start_reservations",
    "start_kernel",
    "startup_64",
    "pvh_start_xen",
    "common_startup_64",
    "secondary_startup_64",
    "secondary_startup_64_no_verify",
    // Kernel threads (kernel_init, kthreadd, workers) start here.
    "ret_from_fork",
    "ret_from_fork_asm",
    // Secondary CPUs' idle loop.
    "cpu_startup_entry",
    "start_secondary",
    // Entry code of arch/x86/entry/entry_64.S that runs between an asm_*
    // entry point and the C handler, or on the way back to iret, without a
    // frame of its own: the interrupted context's pt_regs lie right below.
    "error_entry",
    "error_return",
    "paranoid_entry",
    "paranoid_exit",
    "restore_regs_and_return_to_kernel",
    "swapgs_restore_regs_and_return_to_usermode",
    "native_irq_return_iret",
];

/// Name prefixes of entry code (interrupts, exceptions, syscalls): a stack
/// that unwinds to its entry frame is complete.
pub const ENTRY_PREFIXES: &[&str] = &["asm_", "entry_"];

/// True when a stack whose outermost frame is `name` is complete.
pub fn is_known_root(name: &str) -> bool {
    KNOWN_ROOTS.contains(&name) || ENTRY_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// How many at most of the most common bad roots are listed.
pub const BAD_ROOTS_LISTED: usize = 8;

/// Unwind quality of one run, or of several added together.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnwindQuality {
    /// Kernel-mode samples taken at or after the first `start_kernel` sample.
    pub considered: u64,
    /// Of those, samples whose outermost frame is a known root.
    pub rooted: u64,
    /// `rooted / considered` in percent; `None` when nothing was considered.
    pub percent: Option<f64>,
    /// Of the considered samples, those the unwinder marked truncated.
    pub truncated: u64,
    /// Most common outermost frames of the samples that were not rooted, with counts.
    pub bad_roots: Vec<(String, u64)>,
}

impl UnwindQuality {
    /// Adds up the quality of several runs.
    pub fn merge(all: &[UnwindQuality]) -> UnwindQuality {
        let mut bad: HashMap<String, u64> = HashMap::new();
        let mut q = UnwindQuality::default();
        for u in all {
            q.considered += u.considered;
            q.rooted += u.rooted;
            q.truncated += u.truncated;
            for (n, c) in &u.bad_roots {
                *bad.entry(n.clone()).or_default() += c;
            }
        }
        q.percent = percent(q.rooted, q.considered);
        q.bad_roots = top(bad);
        q
    }
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

fn top(m: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(BAD_ROOTS_LISTED);
    v
}

/// Unwind quality of `run`; `start_kernel_ns` is the run's first
/// `start_kernel` sample, ns since t0 (nothing is considered without one).
pub fn unwind_quality(p: &Profile, run: &Run, start_kernel_ns: Option<u64>) -> UnwindQuality {
    let Some(start) = start_kernel_ns else {
        return UnwindQuality::default();
    };
    // Decide once per stack: there are far fewer stacks than samples.
    // Per stack: rooted, and the index of its root's name in `roots`.
    let mut root_of: StackMemo<(bool, usize)> = StackMemo::new(&p.stacks);
    let mut roots: Vec<(String, u64)> = Vec::new();
    let mut root_index: HashMap<String, usize> = HashMap::new();
    let mut q = UnwindQuality::default();
    for s in run
        .samples
        .iter()
        .filter(|s| s.kind == FrameKind::Kernel && run.rel_ns(s) >= start)
    {
        q.considered += 1;
        if s.truncated {
            q.truncated += 1;
        }
        let (ok, root) = *root_of.get_or_insert_with(s.stack, || {
            let outermost = p.stacks.path(s.stack).last().and_then(|n| p.frame(n.frame));
            let (ok, name) = match outermost {
                Some(f) => {
                    let name = p.name_text(f.name).into_owned();
                    (is_known_root(&name), name)
                }
                None => (false, "[no frames]".to_string()),
            };
            let i = *root_index.entry(name).or_insert_with_key(|name| {
                roots.push((name.clone(), 0));
                roots.len() - 1
            });
            (ok, i)
        });
        if ok {
            q.rooted += 1;
        } else if let Some((_, n)) = roots.get_mut(root) {
            *n += 1;
        }
    }
    q.percent = percent(q.rooted, q.considered);
    q.bad_roots = top(roots.into_iter().filter(|(_, n)| *n > 0).collect());
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Sample;

    #[test]
    fn roots_and_entry_frames_count_as_complete() {
        for n in [
            "start_kernel",
            "ret_from_fork_asm",
            "asm_sysvec_apic_timer_interrupt",
            "entry_SYSCALL_64",
            "cpu_startup_entry",
        ] {
            assert!(is_known_root(n), "{n}");
        }
        for n in ["do_one_initcall", "kernel_init", "setup_arch", "assembler"] {
            assert!(!is_known_root(n), "{n}");
        }
    }

    #[test]
    fn counts_kernel_samples_after_start_kernel_only() {
        let mut p = Profile::default();
        let good = p.stack_of(&["x86_64_start_kernel", "start_kernel", "setup_arch"]);
        let cut = p.stack_of(&["do_one_initcall", "foo_init"]);
        let head = p.stack_of(&["__startup_64"]);
        let mk = |t_ns: u64, stack, kind: FrameKind, truncated: bool| Sample {
            kind,
            truncated,
            ..Sample::kernel_at(stack, t_ns, 1)
        };
        let run = Run {
            samples: vec![
                mk(0, head, FrameKind::Kernel, false),
                mk(10, good, FrameKind::Kernel, false),
                mk(11, good, FrameKind::Kernel, false),
                mk(12, good, FrameKind::Kernel, false),
                mk(13, cut, FrameKind::Kernel, true),
                mk(14, head, FrameKind::User, false),
            ],
            ..Run::default()
        };
        let q = unwind_quality(&p, &run, Some(10));
        assert_eq!((q.considered, q.rooted, q.truncated), (4, 3, 1));
        assert_eq!(q.percent, Some(75.0));
        assert_eq!(q.bad_roots, vec![("do_one_initcall".to_string(), 1)]);
        assert_eq!(unwind_quality(&p, &run, None).percent, None);

        let m = UnwindQuality::merge(&[q.clone(), q]);
        assert_eq!((m.considered, m.rooted, m.percent), (8, 6, Some(75.0)));
        assert_eq!(m.bad_roots, vec![("do_one_initcall".to_string(), 2)]);
    }
}
