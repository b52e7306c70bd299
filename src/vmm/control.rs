//! How a boot ends, and the shared state that ends it: the first end reason
//! wins, every vCPU thread stops, and the main thread is woken.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Why a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The first user-mode instruction ran (init started).
    UserMode {
        /// vCPU that ran it.
        vcpu: u32,
        /// Its address.
        rip: u64,
        /// How it was seen: "hw-breakpoint at init entry", "exit", "sample".
        how: &'static str,
    },
    /// The guest reset the machine through the i8042.
    Reset,
    /// KVM reported a shutdown (triple fault) or a system event.
    Shutdown(String),
    /// The kernel panicked (console line).
    Panic(String),
    /// The guest wrote the boot marker.
    Marker,
    /// The guest was about to run its first instruction (`--until first-instruction`).
    FirstInstruction,
    /// The guest entered the kernel function (`--until FUNCTION`) named.
    Function(String),
    /// A console line matched `--until serial:REGEX`.
    SerialMatch(String),
    /// `--timeout` passed.
    Timeout(Duration),
    /// The host could not run a guest instruction and no workaround applies.
    EmulationFailure {
        /// vCPU.
        vcpu: u32,
        /// Guest RIP.
        rip: u64,
        /// Up to 15 instruction bytes at RIP (empty when unreadable).
        bytes: Vec<u8>,
        /// Privilege level.
        cpl: u8,
        /// KVM's internal error suberror.
        suberror: u32,
    },
    /// KVM_RUN failed or reported a failed entry.
    VcpuError(String),
    /// The user interrupted the recording (Ctrl-C / SIGTERM).
    Interrupted,
    /// The host could not go on recording (e.g. the trace's disk is full).
    HostError(String),
}

impl EndReason {
    /// A short stable name for scripts and the trace.
    pub fn kind(&self) -> &'static str {
        match self {
            EndReason::UserMode { .. } => "user",
            EndReason::Reset => "reset",
            EndReason::Shutdown(_) => "shutdown",
            EndReason::Panic(_) => "panic",
            EndReason::Marker => "marker",
            EndReason::FirstInstruction => "first-instruction",
            EndReason::Function(_) => "function",
            EndReason::SerialMatch(_) => "serial",
            EndReason::Timeout(_) => "timeout",
            EndReason::EmulationFailure { .. } => "emulation-failure",
            EndReason::VcpuError(_) => "vcpu-error",
            EndReason::Interrupted => "interrupted",
            EndReason::HostError(_) => "host-error",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::UserMode { vcpu, rip, how } => {
                write!(
                    f,
                    "init started: first user-mode instruction at {rip:#x} on vCPU {vcpu} ({how})"
                )
            }
            EndReason::Reset => write!(f, "guest reset the machine (i8042)"),
            EndReason::Shutdown(s) => write!(f, "guest shut down: {s}"),
            EndReason::Panic(line) => write!(f, "kernel panic: {line}"),
            EndReason::Marker => write!(f, "guest wrote the boot marker (MMIO 0xd0000000 = 123)"),
            EndReason::FirstInstruction => {
                write!(f, "stopped before the guest's first instruction")
            }
            EndReason::Function(name) => write!(f, "the guest entered {name}"),
            EndReason::SerialMatch(line) => write!(f, "console matched: {line}"),
            EndReason::Timeout(d) => write!(f, "timeout after {:.1} s", d.as_secs_f64()),
            EndReason::EmulationFailure {
                vcpu,
                rip,
                bytes,
                cpl,
                suberror,
            } => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write!(
                    f,
                    "host could not run a guest instruction on vCPU {vcpu}: RIP {rip:#x} (CPL {cpl}), bytes [{}], KVM internal error suberror {suberror}",
                    hex.join(" ")
                )
            }
            EndReason::VcpuError(s) => write!(f, "vCPU error: {s}"),
            EndReason::Interrupted => write!(f, "interrupted by the user"),
            EndReason::HostError(s) => write!(f, "recording stopped: {s}"),
        }
    }
}

/// Shared between the vCPU threads and the thread that waits for the end.
pub struct RunControl {
    /// Host time of the run's start; every `t_ns` counts from here.
    pub t0: Instant,
    stop: AtomicBool,
    end: Mutex<Option<(EndReason, u64)>>,
    cv: Condvar,
}

impl RunControl {
    /// A run that started at `t0`.
    pub fn new(t0: Instant) -> Self {
        RunControl {
            t0,
            stop: AtomicBool::new(false),
            end: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    /// Nanoseconds since the run's start.
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// True once the run has ended.
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Ends the run unless it already ended; the first reason wins.
    pub fn end(&self, reason: EndReason) {
        let t = self.now_ns();
        if let Ok(mut e) = self.end.lock() {
            if e.is_none() {
                *e = Some((reason, t));
            }
        }
        self.stop.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// Waits until the run ends or `deadline` passes; returns the end, if any.
    pub fn wait(&self, deadline: Instant) -> Option<(EndReason, u64)> {
        let mut guard = self.end.lock().ok()?;
        loop {
            if let Some(e) = guard.clone() {
                return Some(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = self.cv.wait_timeout(guard, deadline - now).ok()?.0;
        }
    }

    /// The end, if the run ended.
    pub fn ended(&self) -> Option<(EndReason, u64)> {
        self.end.lock().ok()?.clone()
    }
}
