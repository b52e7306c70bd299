//! Hostile guests and hostile command-line values (issue 10, upper layers):
//! tiny flat "kernels" built here (an ELF whose 64-bit entry runs a few
//! bytes of code) spin, write the boot marker in a loop, flood the console
//! with terminal escape sequences, panic or triple-fault. Each test runs the
//! real binary and checks the exit status, the message, the time taken and,
//! where the attack is on memory, the child's peak RSS (wait4's rusage).
// Children are reaped by wait4 (for their rusage), not by Child::wait.
#![allow(clippy::zombie_processes)]

mod common;

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boottrace::trace::{EndKind, PhaseName, Trace};
use common::scratch;

/// `common::flat_kernel` in the shared scratch directory.
fn flat_kernel(name: &str, code: &[u8]) -> PathBuf {
    common::flat_kernel(scratch(), name, code)
}

/// `jmp $`.
const SPIN: &[u8] = &[0xeb, 0xfe];

/// `mov eax, 0xd0000000; l: mov byte [rax], 123; jmp l`: the boot marker in a loop.
const MARKER_LOOP: &[u8] = &[0xb8, 0x00, 0x00, 0x00, 0xd0, 0xc6, 0x00, 0x7b, 0xeb, 0xfb];

/// Prints `text` on COM1 once (then spins) or forever.
fn printer(text: &[u8], forever: bool) -> Vec<u8> {
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x48, 0x8d, 0x35, 10, 0, 0, 0,    // lea rsi, [rip+10] (the text at 21)
        0xac, // 11: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz 19
        0xee, // out dx, al
        0xeb, 0xf8, // jmp 11
    ];
    // 19: the end of the text.
    code.extend_from_slice(if forever { &[0xeb, 0xeb] } else { SPIN }); // jmp 0 / jmp $
    code.extend_from_slice(text);
    code.push(0);
    code
}

/// An escape-sequence attack: window title, clipboard write (OSC 52), screen clear.
const ESCAPES: &[u8] = b"\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[Hhello\n";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn spawn(args: &[&str], stderr: Stdio) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boottrace"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // Fork, not posix_spawn: a vfork-style child runs in this process's
    // memory until it execs, and Linux then counts this process's peak RSS
    // (which the in-process boots below raise) as the child's `ru_maxrss`.
    // SAFETY: the hook does nothing; having one only makes Command fork.
    unsafe { cmd.pre_exec(|| Ok(())) };
    cmd.spawn().expect("run boottrace")
}

/// How a child ended.
struct Ended {
    code: Option<i32>,
    /// Since `spawn`-time `start`.
    elapsed: Duration,
    max_rss_kib: i64,
}

/// Peak RSS any of these recordings may reach: a flat guest touches a few
/// pages, the VMM and its trace writer some tens of MiB. A guest-driven
/// leak shows as hundreds (the marker loop took 432 MB before).
const MAX_RSS_MIB: i64 = 300;

impl Ended {
    /// Prints what was measured (`--nocapture` shows it): exit code, time,
    /// peak RSS and the line saying how the boot ended or what was wrong.
    fn print_figures(&self, what: &[&str], text: &str) {
        let said = text
            .lines()
            .find(|l| l.contains("boot ended:") || l.starts_with("boottrace: error:"))
            .unwrap_or("");
        let said: String = said.chars().take(160).collect();
        eprintln!(
            "figures: boottrace {} -> exit {:?}, {:.2} s, peak RSS {} MiB; {said}",
            what.join(" "),
            self.code,
            self.elapsed.as_secs_f64(),
            self.max_rss_kib >> 10
        );
    }

    /// Asserts the peak RSS bound.
    fn rss_bounded(&self, text: &str) {
        assert!(
            self.max_rss_kib < MAX_RSS_MIB << 10,
            "peak RSS {} MiB:\n{text}",
            self.max_rss_kib >> 10
        );
    }
}

/// Reaps `child` with wait4 (for its rusage), killing it once `limit` has
/// passed since `start` (the caller's time bound then fails).
// The child is reaped by wait4, not by Child::wait.
#[allow(clippy::zombie_processes)]
fn reap(child: &Child, start: Instant, limit: Duration) -> Ended {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child `pid`, writing into the two locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            // SAFETY: `pid` is our child and wait4 just said it is not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ended {
        code: std::process::ExitStatus::from_raw(status).code(),
        elapsed: start.elapsed(),
        max_rss_kib: usage.ru_maxrss,
    }
}

/// Runs `boottrace ARGS` to its end (killed after `limit`), output captured.
fn run(args: &[&str], limit: Duration) -> (Ended, String) {
    let start = Instant::now();
    let mut child = spawn(args, Stdio::piped());
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        e.extend_from_slice(&o);
        e
    });
    let ended = reap(&child, start, limit);
    let bytes = reader.join().expect("reader");
    // Paths left out: the command and its options are what identify a run.
    let shown: Vec<&str> = args.iter().copied().filter(|a| !a.contains('/')).collect();
    ended.print_figures(&shown, &String::from_utf8_lossy(&bytes));
    assert!(
        !bytes.contains(&0x1b),
        "raw ESC reached the terminal:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    (ended, String::from_utf8_lossy(&bytes).into_owned())
}

fn assert_exit(e: &Ended, code: i32, text: &str) {
    assert_eq!(e.code, Some(code), "exit status:\n{text}");
    assert!(!text.contains("panicked"), "panic:\n{text}");
    e.rss_bounded(text);
}

/// Waits until the recording has written its first sample or console line
/// (the guest runs), at most 60 s.
fn wait_until_running(trace: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::fs::metadata(trace).is_ok_and(|m| m.len() > 4096) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never grew: the guest did not start", trace.display());
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: our own child, not yet reaped (reap comes after).
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// Starts `record` of `kernel` into `trace` with a long timeout, its stderr
/// read on a thread; returns once the boot is running.
fn record_until_signalled(kernel: &Path, trace: &Path) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = spawn(
        &[
            "record",
            s(kernel),
            "--timeout",
            "600",
            "-F",
            "1000",
            "-q",
            "-o",
            s(trace),
        ],
        Stdio::piped(),
    );
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        e
    });
    wait_until_running(trace);
    (child, reader)
}

/// SIGINT and SIGTERM end a spinning boot within about a second (the
/// trace is finished), whatever the vCPU is doing; the status is 130.
#[test]
fn sigint_and_sigterm_end_a_boot_within_a_second() {
    let k = flat_kernel("spin-sig.elf", SPIN);
    for (name, sig) in [("int", libc::SIGINT), ("term", libc::SIGTERM)] {
        let trace = scratch().join(format!("sig-{name}.data"));
        let (child, reader) = record_until_signalled(&k, &trace);
        std::thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        signal(&child, sig);
        let ended = reap(&child, sent, Duration::from_secs(20));
        let text = reader.join().expect("reader");
        ended.print_figures(&["record", name], &text);
        assert_exit(&ended, 130, &text);
        assert!(
            ended.elapsed < Duration::from_millis(1500),
            "{name}: took {:?} after the signal:\n{text}",
            ended.elapsed
        );
        assert!(
            text.contains("boot ended: interrupted by the user"),
            "{text}"
        );
        let t = Trace::open(&trace).expect("trace reads back");
        assert!(t.complete, "{name}: trace not finished: {:?}", t.warnings);
        assert_eq!(
            t.runs[0].end.as_ref().map(|e| &e.reason),
            Some(&EndKind::Interrupted)
        );
        eprintln!("{name}: exited {:?} after the signal", ended.elapsed);
    }
}

/// Waits until no `sig` is pending for the process `child` (a handler took
/// it), polling its shared pending-signal mask in /proc.
fn wait_until_taken(child: &Child, sig: libc::c_int) {
    let path = format!("/proc/{}/status", child.id());
    let bit = 1u64 << (sig - 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = std::fs::read_to_string(&path).unwrap_or_default();
        let pending = status
            .lines()
            .find_map(|l| l.strip_prefix("ShdPnd:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
        match pending {
            Some(m) if m & bit != 0 && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(50));
            }
            // Taken, or the process is gone (its exit is checked next).
            _ => return,
        }
    }
}

/// A second Ctrl-C exits at once with 130.
#[test]
fn a_second_sigint_exits_at_once() {
    let k = flat_kernel("spin-sig2.elf", SPIN);
    let trace = scratch().join("sig2.data");
    let (child, reader) = record_until_signalled(&k, &trace);
    let sent = Instant::now();
    signal(&child, libc::SIGINT);
    // The second once the first was taken (two pending SIGINTs would merge
    // into one), but before the clean end the first started is over: it can
    // take only a few ms, so a fixed pause could let it finish first.
    wait_until_taken(&child, libc::SIGINT);
    signal(&child, libc::SIGINT);
    let ended = reap(&child, sent, Duration::from_secs(20));
    let text = reader.join().expect("reader");
    ended.print_figures(&["record", "(second SIGINT)"], &text);
    assert_eq!(ended.code, Some(130), "{text}");
    ended.rss_bounded(&text);
    assert!(text.contains("interrupted again: exiting now"), "{text}");
    assert!(
        ended.elapsed < Duration::from_secs(1),
        "{:?}",
        ended.elapsed
    );
    // What reached the file is readable.
    Trace::open(&trace).expect("trace after a second Ctrl-C reads back");
}

/// `--timeout` ends a spinning boot on time, with status 4.
#[test]
fn timeout_exits_4_on_time() {
    let k = flat_kernel("spin-timeout.elf", SPIN);
    let trace = scratch().join("timeout.data");
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "1",
            "-F",
            "1000",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(30),
    );
    assert_exit(&e, 4, &text);
    assert!(text.contains("boot ended: timeout after 1.0 s"), "{text}");
    assert!(e.elapsed < Duration::from_secs(6), "{:?}", e.elapsed);
}

/// A guest writing the boot marker in a loop adds one phase, not one per
/// write: bounded memory, summary and trace (before: 432 MB RSS, 3.4 M lines).
#[test]
fn marker_in_a_loop_is_one_phase() {
    let k = flat_kernel("marker-loop.elf", MARKER_LOOP);
    let trace = scratch().join("marker-loop.data");
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "5",
            "-F",
            "0",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(40),
    );
    assert_exit(&e, 4, &text);
    assert!(text.contains("boot ended: timeout after 5.0 s"), "{text}");
    assert!(e.elapsed < Duration::from_secs(20), "{:?}", e.elapsed);
    assert!(
        text.lines().count() < 60,
        "{} lines:\n{text}",
        text.lines().count()
    );
    assert!(e.max_rss_kib < 200 << 10, "peak RSS {} KiB", e.max_rss_kib);
    let t = Trace::open(&trace).expect("trace");
    let markers = t.runs[0]
        .phases
        .iter()
        .filter(|p| p.name == PhaseName::BootMarker)
        .count();
    assert_eq!(markers, 1, "{:?}", t.runs[0].phases.len());
    let size = std::fs::metadata(&trace).expect("trace").len();
    assert!(size < 1 << 20, "trace of {size} bytes");
    eprintln!(
        "marker loop: {:?}, peak RSS {} MiB, {} output lines, trace {size} bytes",
        e.elapsed,
        e.max_rss_kib >> 10,
        text.lines().count()
    );
    // What `report --json` makes of it is as small (before: 396 MB).
    let (e, json) = run(
        &["report", "--json", "-i", s(&trace)],
        Duration::from_secs(30),
    );
    assert_exit(&e, 0, &json);
    assert!(
        json.len() < 1 << 20,
        "report --json of {} bytes",
        json.len()
    );
    assert!(e.elapsed < Duration::from_secs(10), "{:?}", e.elapsed);
    eprintln!("marker loop: report --json of {} bytes", json.len());
    // With --until marker the first write is the goal: status 0.
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--until",
            "marker",
            "-F",
            "0",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(40),
    );
    assert_exit(&e, 0, &text);
}

/// Escape sequences from the guest console reach the terminal escaped
/// (`run` fails on any raw ESC), and so does a stored panic line in
/// `record`'s summary and `report`'s text; a panic exits 3.
#[test]
fn console_escapes_are_escaped_and_a_panic_exits_3() {
    let k = flat_kernel("escapes.elf", &printer(ESCAPES, true));
    let trace = scratch().join("escapes.data");
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "3",
            "-F",
            "0",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(30),
    );
    assert_exit(&e, 4, &text);
    assert!(text.contains("\\x1b]52;c;cHduZWQ=\\x07"), "{text}");
    assert!(e.elapsed < Duration::from_secs(15), "{:?}", e.elapsed);

    let mut panic_text = b"Kernel panic - not syncing: ".to_vec();
    panic_text.extend_from_slice(ESCAPES);
    let k = flat_kernel("panic.elf", &printer(&panic_text, false));
    let trace = scratch().join("panic.data");
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "60",
            "-F",
            "0",
            "-q",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(90),
    );
    assert_exit(&e, 3, &text);
    assert!(
        text.contains("boot ended: kernel panic: Kernel panic"),
        "{text}"
    );
    assert!(e.elapsed < Duration::from_secs(60), "{:?}", e.elapsed);
    let (e, text) = run(&["report", "-i", s(&trace)], Duration::from_secs(30));
    assert_exit(&e, 0, &text);
    assert!(text.contains("\\x1b]0;pwned"), "{text}");
    assert!(e.elapsed < Duration::from_secs(10), "{:?}", e.elapsed);
}

/// `record … 2>&1 | head -c100`: the closed pipe ends the echo quietly; the
/// boot ends as it would (timeout, 4), no panic (before: exit 101).
#[test]
fn a_closed_pipe_ends_the_echo_quietly() {
    let k = flat_kernel("epipe.elf", &printer(b"a console line\n", true));
    let trace = scratch().join("epipe.data");
    let start = Instant::now();
    let mut child = spawn(
        &[
            "record",
            s(&k),
            "--timeout",
            "3",
            "-F",
            "1000",
            "-o",
            s(&trace),
        ],
        Stdio::piped(),
    );
    let mut err = child.stderr.take().expect("stderr");
    let mut first = [0u8; 100];
    err.read_exact(&mut first).expect("100 bytes of stderr");
    drop(err);
    let ended = reap(&child, start, Duration::from_secs(40));
    ended.print_figures(&["record", "2>&1 | head -c100"], "");
    assert_eq!(ended.code, Some(4), "after {:?}", ended.elapsed);
    // The boot's 3 s and start-up: the closed pipe held nothing up.
    assert!(
        ended.elapsed < Duration::from_secs(15),
        "{:?}",
        ended.elapsed
    );
    ended.rss_bounded("");
    let t = Trace::open(&trace).expect("trace");
    assert!(t.complete, "{:?}", t.warnings);
}

/// `record … 2>&1 | sleep 45`: a terminal that never reads holds up neither
/// the vCPU nor the end of the boot: the trace is finished on time (before:
/// the vCPU thread blocked past --timeout).
#[test]
fn a_stalled_terminal_does_not_hold_up_the_boot() {
    let k = flat_kernel(
        "stall.elf",
        &printer(b"a console line that fills pipes\n", true),
    );
    let trace = scratch().join("stall.data");
    let start = Instant::now();
    let mut child = spawn(
        &[
            "record",
            s(&k),
            "--timeout",
            "4",
            "-F",
            "1000",
            "-o",
            s(&trace),
        ],
        Stdio::piped(),
    );
    let err = child.stderr.take().expect("stderr");
    // Nobody reads stderr until the trace is finished.
    let deadline = start + Duration::from_secs(30);
    let finished = loop {
        if let Ok(t) = Trace::open(&trace) {
            if t.complete {
                break t;
            }
        }
        assert!(Instant::now() < deadline, "trace not finished after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    // The boot's 4 s, start-up, and at most one wait for the stopped terminal.
    assert!(
        took < Duration::from_secs(8),
        "trace finished after {took:?}"
    );
    let reader = std::thread::spawn(move || {
        let mut e = err;
        let mut v = Vec::new();
        let _ = e.read_to_end(&mut v);
        v
    });
    let ended = reap(&child, start, Duration::from_secs(60));
    let bytes = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&bytes);
    ended.print_figures(&["record", "2>&1 | sleep"], &text);
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(ended.code, Some(4), "{text}");
    ended.rss_bounded(&text);
    assert_eq!(
        finished.runs[0].end.as_ref().map(|e| &e.reason),
        Some(&EndKind::Timeout)
    );
    assert!(
        finished.runs[0].serial.len() > 100,
        "the guest kept printing: {} lines",
        finished.runs[0].serial.len()
    );
    eprintln!("stalled terminal: trace finished after {took:?}");
}

/// A triple fault (`ud2` with no IDT) is a guest crash under the default
/// `--until user` (status 3; before: 0), and the goal under `--until shutdown`.
#[test]
fn a_triple_fault_is_a_crash_unless_it_is_the_goal() {
    let k = flat_kernel("ud2.elf", &[0x0f, 0x0b]);
    let trace = scratch().join("ud2.data");
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "60",
            "-F",
            "0",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(90),
    );
    assert_exit(&e, 3, &text);
    assert!(text.contains("boot ended: guest shut down"), "{text}");
    assert!(e.elapsed < Duration::from_secs(30), "{:?}", e.elapsed);
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "60",
            "-F",
            "0",
            "--until",
            "shutdown",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(90),
    );
    assert_exit(&e, 0, &text);
}

/// An instruction the host cannot run ends the boot with status 5. Only a
/// PVM host fails to emulate `int3` (with `--compat none`, no workaround);
/// real KVM delivers #BP, which without an IDT is a triple fault (3).
#[test]
fn an_emulation_failure_exits_5() {
    let k = flat_kernel("int3.elf", &[0xcc, 0xeb, 0xfe]);
    let trace = scratch().join("int3.data");
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "60",
            "-F",
            "0",
            "--compat",
            "none",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(90),
    );
    if boottrace::vmm::compat::host_is_pvm() {
        assert_exit(&e, 5, &text);
        assert!(
            text.contains("host could not run a guest instruction"),
            "{text}"
        );
    } else {
        assert_exit(&e, 3, &text);
    }
    assert!(e.elapsed < Duration::from_secs(30), "{:?}", e.elapsed);
}

/// Out-of-range values are usage errors: one line, status 2, at once
/// (before: `inf`/`1e20` panicked, `nan` became 1 ms, `-F 200000` livelocked,
/// `-F 4294967295` disarmed the timer).
#[test]
fn bad_values_are_usage_errors() {
    let k = flat_kernel("spin-values.elf", SPIN);
    for (opt, value, needle) in [
        ("--timeout", "inf", "--timeout must be between"),
        ("--timeout", "nan", "--timeout must be between"),
        ("--timeout", "1e20", "--timeout must be between"),
        ("--timeout", "0", "--timeout must be between"),
        ("-F", "200000", "at most 50000"),
        ("-F", "1e9", "whole number"),
        ("-F", "4294967295", "at most 50000"),
        ("--mem", "12Q", "--mem"),
        ("--cpus", "0", "--cpus"),
        ("--runs", "0", "--runs"),
    ] {
        let (e, text) = run(&["record", s(&k), opt, value], Duration::from_secs(10));
        assert_exit(&e, 2, &text);
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("boottrace: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{opt} {value}:\n{text}");
        assert!(errors[0].contains(needle), "{opt} {value}: {}", errors[0]);
        assert!(
            e.elapsed < Duration::from_secs(2),
            "{opt} {value}: {:?}",
            e.elapsed
        );
    }
}

/// A full disk ends the recording at once with the write error (status 1),
/// keeping what was written (before: the boot ran to its timeout).
#[test]
fn a_full_disk_ends_the_recording_promptly() {
    let dir = scratch().join("full");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200k", "tmpfs", s(&dir)])
        .status()
        .expect("run mount");
    assert!(mounted.success(), "cannot mount a small tmpfs (needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(dir.clone());
    let k = flat_kernel("spin-full.elf", SPIN);
    let trace = dir.join("full.data");
    let (e, text) = run(
        &[
            "record",
            s(&k),
            "--timeout",
            "120",
            "-F",
            "10000",
            "-q",
            "-o",
            s(&trace),
        ],
        Duration::from_secs(150),
    );
    assert_exit(&e, 1, &text);
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        text.contains("recording stopped: cannot write the trace"),
        "{text}"
    );
    assert!(e.elapsed < Duration::from_secs(60), "{:?}", e.elapsed);
    let t = Trace::open(&trace).expect("what was written reads back");
    assert!(!t.runs.is_empty() && !t.runs[0].samples.is_empty());
    eprintln!(
        "disk full: ended after {:?} with {} samples kept",
        e.elapsed,
        t.runs[0].samples.len()
    );
}

/// A vCPU thread that dies (here: its sampler panics on the vCPU thread)
/// ends the boot at once as "vCPU … thread died", not as a timeout later.
#[test]
fn a_dead_vcpu_thread_is_reported_as_such() {
    use std::sync::Arc;

    use boottrace::vmm::compat::{CompatChoice, CompatMode};
    use boottrace::vmm::control::EndReason;
    use boottrace::vmm::memory::MemoryOptions;
    use boottrace::vmm::{self, BootConfig, RunObserver, SamplerFactory, Until, VmmPhase};

    struct Quiet;
    impl RunObserver for Quiet {
        fn phase(&self, _: VmmPhase, _: u64) {}
        fn serial_line(&self, _: u64, _: &str) {}
    }
    struct Panicking;
    impl SamplerFactory for Panicking {
        fn frequency(&self) -> u32 {
            1000
        }
        fn create(
            &self,
            _: u32,
            _: &kvm_ioctls::VcpuFd,
            _: &vm_memory::GuestMemoryMmap,
        ) -> Box<dyn vmm::VcpuSampler> {
            panic!("sampler exploded")
        }
    }
    let cfg = BootConfig {
        kernel: flat_kernel("spin-panic.elf", SPIN),
        initrd: None,
        cmdline_extra: String::new(),
        mem: MemoryOptions {
            size: 64 << 20,
            ..MemoryOptions::default()
        },
        cpus: 1,
        timeout: Duration::from_secs(60),
        until: Until::User,
        compat: CompatMode::resolve(CompatChoice::Auto),
        user_return_link: std::sync::Arc::new(std::sync::OnceLock::from(None)),
        virtio: Default::default(),
        boundaries: Default::default(),
    };
    let start = Instant::now();
    let out = vmm::boot(
        &cfg,
        start,
        Arc::new(Quiet),
        Some(Arc::new(Panicking)),
        None,
        None,
    )
    .expect("boot starts");
    match &out.end {
        EndReason::VcpuError(m) => {
            assert!(m.contains("vCPU 0 thread died: sampler exploded"), "{m}")
        }
        other => panic!("ended as {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.unstopped_vcpus, 0);
    eprintln!(
        "figures: dead vCPU thread: boot ended as {:?} after {:?} (timeout 60 s)",
        out.end,
        start.elapsed()
    );
}

/// The vCPU threads run under a seccomp filter: a socket opened from the
/// vCPU loop (here by a sampler, which runs there) is refused with EPERM,
/// while the boot itself goes on to its timeout.
#[test]
fn the_vcpu_loop_cannot_open_a_socket() {
    use std::sync::{Arc, Mutex};

    use boottrace::vmm::compat::{CompatChoice, CompatMode};
    use boottrace::vmm::control::EndReason;
    use boottrace::vmm::memory::MemoryOptions;
    use boottrace::vmm::{
        self, BootConfig, RunObserver, SampleInfo, SamplerFactory, Until, VcpuSampler, VmmPhase,
    };

    /// socket(2)'s result and errno at each try.
    type Tries = Arc<Mutex<Vec<(i32, Option<i32>)>>>;
    struct Quiet;
    impl RunObserver for Quiet {
        fn phase(&self, _: VmmPhase, _: u64) {}
        fn serial_line(&self, _: u64, _: &str) {}
    }
    /// Tries socket(2) at every sample after the first.
    struct Prober(Tries);
    impl VcpuSampler for Prober {
        fn sample(
            &mut self,
            _: &mut kvm_ioctls::VcpuFd,
            _: u64,
            _: u64,
            fresh: bool,
        ) -> Option<SampleInfo> {
            if fresh {
                // SAFETY: socket(2) with constant arguments; closed if it opened.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                let errno = std::io::Error::last_os_error().raw_os_error();
                if fd >= 0 {
                    // SAFETY: closing the descriptor just opened.
                    unsafe { libc::close(fd) };
                }
                if let Ok(mut v) = self.0.lock() {
                    v.push((fd, errno));
                }
            }
            None
        }
    }
    struct Factory(Tries);
    impl SamplerFactory for Factory {
        fn frequency(&self) -> u32 {
            100
        }
        fn create(
            &self,
            _: u32,
            _: &kvm_ioctls::VcpuFd,
            _: &vm_memory::GuestMemoryMmap,
        ) -> Box<dyn VcpuSampler> {
            Box::new(Prober(self.0.clone()))
        }
    }
    let tries = Arc::new(Mutex::new(Vec::new()));
    let cfg = BootConfig {
        kernel: flat_kernel("spin-seccomp.elf", SPIN),
        initrd: None,
        cmdline_extra: String::new(),
        mem: MemoryOptions {
            size: 64 << 20,
            ..MemoryOptions::default()
        },
        cpus: 1,
        timeout: Duration::from_secs(2),
        until: Until::User,
        compat: CompatMode::resolve(CompatChoice::Auto),
        user_return_link: std::sync::Arc::new(std::sync::OnceLock::from(None)),
        virtio: Default::default(),
        boundaries: Default::default(),
    };
    let out = vmm::boot(
        &cfg,
        Instant::now(),
        Arc::new(Quiet),
        Some(Arc::new(Factory(tries.clone()))),
        None,
        None,
    )
    .expect("boot starts");
    assert!(matches!(out.end, EndReason::Timeout(_)), "{:?}", out.end);
    let tries = tries.lock().expect("lock");
    assert!(!tries.is_empty(), "no sample ran");
    assert!(
        tries.iter().all(|&t| t == (-1, Some(libc::EPERM))),
        "{tries:?}"
    );
}
