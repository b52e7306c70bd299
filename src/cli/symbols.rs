//! The symbol options every reading command shares.

use std::path::PathBuf;

use crate::profile::symbols::SymbolConfig;

/// Symbol options every report command shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SymbolArgs {
    /// vmlinux of the recorded kernel (ELF symbols; DWARF adds inline frames).
    /// Default: the one given to `record`, or `vmlinux` next to the kernel image.
    #[arg(long, value_name = "FILE")]
    pub vmlinux: Option<PathBuf>,
    /// System.map of the recorded kernel. Default: `System.map` next to the kernel image.
    #[arg(long, value_name = "FILE")]
    pub system_map: Option<PathBuf>,
    /// Kernel image to recover kallsyms from. Default: the image recorded in the trace.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Decompressor ELF (`arch/x86/boot/compressed/vmlinux`), to name decompressor samples.
    /// Default: `decompressor.elf` next to the kernel image.
    #[arg(long, value_name = "FILE")]
    pub decompressor: Option<PathBuf>,
    /// Use a vmlinux or image even if its identity does not match the recorded kernel.
    #[arg(long)]
    pub force: bool,
}

impl SymbolArgs {
    /// The library's symbol configuration.
    pub fn into_config(self) -> SymbolConfig {
        SymbolConfig {
            vmlinux: self.vmlinux,
            system_map: self.system_map,
            kernel: self.kernel,
            decompressor: self.decompressor,
            force: self.force,
        }
    }
}

/// Symbol options of the commands that compare two sides (`diff`, `check`):
/// A, the baseline, and B, the candidate.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SidesSymbolArgs {
    /// vmlinux for the baseline's (A's) symbols (default: found from its traces).
    #[arg(long, value_name = "FILE")]
    pub vmlinux_a: Option<PathBuf>,
    /// vmlinux for the candidate's (B's) symbols (default: found from its traces).
    #[arg(long, value_name = "FILE")]
    pub vmlinux_b: Option<PathBuf>,
    /// System.map for the baseline's (A's) symbols (when no vmlinux is found).
    #[arg(long, value_name = "FILE")]
    pub system_map_a: Option<PathBuf>,
    /// System.map for the candidate's (B's) symbols.
    #[arg(long, value_name = "FILE")]
    pub system_map_b: Option<PathBuf>,
    /// Use a vmlinux even if its identity does not match the recorded kernel.
    #[arg(long)]
    pub force: bool,
}

impl SidesSymbolArgs {
    /// The library's symbol configurations of A and of B.
    pub fn into_configs(self) -> (SymbolConfig, SymbolConfig) {
        let side = |vmlinux, system_map| SymbolConfig {
            vmlinux,
            system_map,
            force: self.force,
            ..SymbolConfig::default()
        };
        (
            side(self.vmlinux_a, self.system_map_a),
            side(self.vmlinux_b, self.system_map_b),
        )
    }
}

/// What a flamegraph's or export's widths measure, on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightArg {
    /// Samples (time, at a fixed sampling rate).
    #[default]
    Samples,
    /// Host page faults (minor + major) of the vCPU thread, including KVM's
    /// faults on first guest touch of memory.
    #[value(alias = "page-faults")]
    Faults,
    /// KVM exits.
    Exits,
    /// Wall-clock time of the boot thread (the boot CPU's task, then pid 1):
    /// its running stacks plus its blocked stacks, which end in a `[wait]`
    /// (sleeping) or `[runnable]` (preempted) frame; needs a trace with wait
    /// stacks (format 3, recorded with type info).
    Wall,
}

impl WeightArg {
    /// The weight for flamegraphs and exports (`samples` counts samples).
    pub fn for_samples(self) -> crate::analysis::fold::Weight {
        use crate::analysis::fold::Weight;
        match self {
            WeightArg::Samples => Weight::Samples,
            WeightArg::Faults => Weight::Faults,
            WeightArg::Exits => Weight::Exits,
            WeightArg::Wall => Weight::Wall,
        }
    }

    /// The weight for diffs (`samples` is the host time they stand for).
    pub fn for_time(self) -> crate::analysis::fold::Weight {
        use crate::analysis::fold::Weight;
        match self {
            WeightArg::Samples => Weight::Time,
            WeightArg::Faults => Weight::Faults,
            WeightArg::Exits => Weight::Exits,
            WeightArg::Wall => Weight::Wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        symbols: SymbolArgs,
        #[arg(long, value_enum, default_value_t)]
        weight: WeightArg,
    }

    #[test]
    fn defaults_find_everything_and_page_faults_is_an_alias() {
        let c = Cli::try_parse_from(["x"]).expect("parse");
        assert_eq!(c.symbols.into_config(), SymbolConfig::default());
        assert_eq!(c.weight, WeightArg::Samples);
        let c = Cli::try_parse_from(["x", "--weight", "page-faults", "--force"]).expect("parse");
        assert_eq!(c.weight, WeightArg::Faults);
        assert!(c.symbols.into_config().force);
    }

    #[test]
    fn each_side_gets_its_own_files_and_both_the_force() {
        #[derive(Parser)]
        struct Sides {
            #[command(flatten)]
            symbols: SidesSymbolArgs,
        }
        let c =
            Sides::try_parse_from(["x", "--vmlinux-a", "va", "--system-map-b", "mb", "--force"])
                .expect("parse");
        let (a, b) = c.symbols.into_configs();
        let file = |p: &str| Some(PathBuf::from(p));
        assert_eq!((a.vmlinux, a.system_map), (file("va"), None));
        assert_eq!((b.vmlinux, b.system_map), (None, file("mb")));
        assert!(a.force && b.force);
        assert_eq!((a.kernel, b.decompressor), (None, None));
    }
}
