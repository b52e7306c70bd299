//! boottrace command line: parse, dispatch, report errors in one line.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

/// Boot tracer: boots a Linux kernel in its own microVM and samples it from the first instruction.
#[derive(Parser)]
#[command(name = "boottrace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a kernel, sample it, write boottrace.data.
    Record(boottrace::cli::record::RecordArgs),
    /// Flamegraph (or time-ordered flame chart) of the recorded boot(s).
    Flame(boottrace::cli::flame::FlameArgs),
    /// Compare two recordings (or two kernels): differential flamegraph + table.
    Diff(boottrace::cli::diff::DiffArgs),
    /// CI gate: is the candidate's boot slower than the baseline's, beyond a
    /// threshold and beyond noise? Exit 0 pass, 1 regressed, 2 could not compare.
    Check(boottrace::cli::check::CheckArgs),
    /// Text (or JSON) report: phases, initcalls, top functions, faults, overhead.
    Report(boottrace::cli::report::ReportArgs),
    /// Export for other tools: folded stacks, speedscope, Chrome/Perfetto trace.
    Export(boottrace::cli::export::ExportArgs),
    /// Boot over a range of settings (--vary cpus=1,2,4 …, or several kernels): chart + table.
    Sweep(boottrace::cli::sweep::SweepArgs),
}

fn main() -> ExitCode {
    let t_process = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        Err(e) => {
            // One line, like every other boottrace error.
            let text = e.to_string();
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let msg = msg.join(" ");
            say(&format!(
                "boottrace: error: {} (see --help)",
                msg.trim_start_matches("error: ")
            ));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Check(args) => return check(args),
        Command::Record(args) => record(args, t_process),
        Command::Flame(args) => {
            boottrace::render::flame::run(&args.into_config()).map(|m| print_messages(&m))
        }
        Command::Diff(args) => boottrace::render::diff::run(
            &args.into_config(),
            &mut boottrace::cli::diff::record_side,
            &mut std::io::stdout().lock(),
            &mut |m| print_messages(&[m]),
        ),
        Command::Report(args) => {
            boottrace::render::report::run(&args.into_config(), &mut std::io::stdout().lock())
                .map(|m| print_messages(&m))
        }
        Command::Sweep(args) => boottrace::cli::sweep::run(args, t_process),
        Command::Export(args) => {
            boottrace::render::export::run(&args.into_config(), &mut std::io::stdout().lock())
                .map(|m| print_messages(&m))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("boottrace: error: {}", one_line(&e)));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// Exit status of a failed command (documented in the README):
/// 1 any other error, 2 usage, 3 guest crash (kernel panic, triple fault,
/// shutdown or reset that was not the goal), 4 timeout, 5 the host could not
/// run a guest instruction, 6 a vCPU error, 130 interrupted.
fn exit_status(e: &anyhow::Error) -> u8 {
    use boottrace::vmm::control::EndReason;
    if e.downcast_ref::<boottrace::cli::sweep::SweepUsage>()
        .is_some()
        || e.downcast_ref::<boottrace::record::kernel::UnknownFunction>()
            .is_some()
    {
        return 2;
    }
    let Some(missed) = e.downcast_ref::<boottrace::record::GoalMissed>() else {
        return 1;
    };
    match missed.end {
        EndReason::Panic(_) | EndReason::Shutdown(_) | EndReason::Reset => 3,
        EndReason::Timeout(_) => 4,
        EndReason::EmulationFailure { .. } => 5,
        EndReason::VcpuError(_) => 6,
        EndReason::HostError(_) => 1,
        EndReason::Interrupted => 130,
        // A goal end that was not this boot's goal (e.g. the marker under --until user).
        EndReason::UserMode { .. }
        | EndReason::Marker
        | EndReason::SerialMatch(_)
        | EndReason::FirstInstruction
        | EndReason::Function(_) => 1,
    }
}

/// One line to stderr; a closed or broken stderr is not worth a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `boottrace record`: status on stderr (via the CLI's reporter), nothing on stdout.
fn record(args: boottrace::cli::record::RecordArgs, t_process: Instant) -> anyhow::Result<()> {
    use boottrace::cli::progress::{StderrProgress, Verbosity};
    let mut progress = StderrProgress::new(Verbosity {
        console: !args.quiet,
        detail: args.verbose,
    });
    let cfg = args.into_config(std::env::args().collect(), t_process)?;
    boottrace::record::record(&cfg, &mut progress).map(|_| ())
}

/// `boottrace check`: its own exit statuses (0 pass, 1 regressed, 2 could
/// not compare: any error, including too few runs to decide).
fn check(args: boottrace::cli::check::CheckArgs) -> ExitCode {
    use boottrace::render::check::{exit_status, run};
    match run(&args.into_config(), &mut std::io::stdout().lock()) {
        Ok((verdict, msgs)) => {
            print_messages(&msgs);
            ExitCode::from(exit_status(verdict))
        }
        Err(e) => {
            say(&format!("boottrace: error: {}", one_line(&e)));
            ExitCode::from(2)
        }
    }
}

/// Status lines of the reading commands, on stderr (stdout is the output).
fn print_messages(msgs: &[boottrace::render::Message]) {
    use boottrace::render::Level;
    for m in msgs {
        match m.level {
            Level::Warning => say(&format!("boottrace: warning: {}", m.text)),
            Level::Note => say(&format!("boottrace: note: {}", m.text)),
            Level::Info => say(&format!("boottrace: {}", m.text)),
        }
    }
}

/// The error chain on one line, leaving out a cause whose text the message
/// before it already contains (typed errors often quote their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use boottrace::record::GoalMissed;
    use boottrace::vmm::control::EndReason;
    use std::time::Duration;

    fn status_of(end: EndReason) -> u8 {
        exit_status(&anyhow::Error::new(GoalMissed {
            failed: 1,
            runs: 1,
            end,
        }))
    }

    /// The README's exit statuses, by how the (last) boot ended; the boot
    /// tests check the same through the binary where a guest can cause it
    /// (a vCPU thread dying cannot be caused from outside: 6 is checked here).
    #[test]
    fn exit_status_follows_how_the_boot_ended() {
        assert_eq!(status_of(EndReason::Panic("Kernel panic".into())), 3);
        assert_eq!(status_of(EndReason::Shutdown("triple fault".into())), 3);
        assert_eq!(status_of(EndReason::Reset), 3);
        assert_eq!(status_of(EndReason::Timeout(Duration::from_secs(1))), 4);
        assert_eq!(
            status_of(EndReason::VcpuError("vCPU 0 thread died".into())),
            6
        );
        assert_eq!(status_of(EndReason::HostError("disk full".into())), 1);
        assert_eq!(status_of(EndReason::Interrupted), 130);
        assert_eq!(exit_status(&anyhow::anyhow!("no such file")), 1);
    }
}
