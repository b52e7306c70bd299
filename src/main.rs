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
    Record(boottrace::record::RecordArgs),
}

fn main() -> ExitCode {
    let t_process = Instant::now();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => boottrace::record::run(&args, t_process),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boottrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
