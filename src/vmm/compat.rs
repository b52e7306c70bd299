//! Workarounds for hosts whose KVM cannot run some guest instructions — all
//! of them, in one place. Today that is the "PVM" nested KVM described in
//! docs/ENVIRONMENT.md: it emulates guest kernel code and fails on a few
//! instructions. Nothing here applies on a normal KVM host.

use std::path::Path;

/// Which workarounds a boot runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatMode {
    /// A normal KVM host: no workarounds.
    None,
    /// A PVM host: command-line switches plus emulation-failure fixes.
    Pvm,
}

/// The `--compat` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatChoice {
    /// Detect the host.
    Auto,
    /// Never apply workarounds.
    None,
    /// Always apply the PVM workarounds.
    Pvm,
}

/// True when the host's KVM is the PVM module.
pub fn host_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

impl CompatMode {
    /// Resolves the user's choice against the host.
    pub fn resolve(choice: CompatChoice) -> CompatMode {
        match choice {
            CompatChoice::None => CompatMode::None,
            CompatChoice::Pvm => CompatMode::Pvm,
            CompatChoice::Auto if host_is_pvm() => CompatMode::Pvm,
            CompatChoice::Auto => CompatMode::None,
        }
    }

    /// Kernel command-line arguments this mode adds. The PVM emulator cannot
    /// run XSAVE/XRSTOR, CLAC/STAC, POPCNT or CMPXCHG16B; masking them through
    /// KVM_SET_CPUID2 does not reach the guest there, the command line does.
    pub fn cmdline(self) -> &'static str {
        match self {
            CompatMode::None => "",
            CompatMode::Pvm => "clearcpuid=xsave,smap,popcnt,cx16",
        }
    }

    /// Human-readable list of what this mode changes, for output and the trace.
    pub fn workarounds(self) -> Vec<String> {
        match self {
            CompatMode::None => Vec::new(),
            CompatMode::Pvm => vec![
                format!("cmdline: {}", self.cmdline()),
                "int3 at RIP after emulation failure: skip it and inject #BP".into(),
                "fwait at RIP after emulation failure: skip it (no pending x87 exception at boot)"
                    .into(),
            ],
        }
    }
}

/// What to do about an instruction the host failed to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmulationFix {
    /// `int3` (0xCC): step over it and inject #BP so the kernel's handler runs
    /// (int3_selftest always runs at boot).
    SkipAndInjectBreakpoint,
    /// `fwait` (0x9B): step over it.
    Skip,
}

/// The fix for the instruction starting with `bytes`, if this mode has one.
pub fn fix_for(mode: CompatMode, bytes: &[u8]) -> Option<EmulationFix> {
    if mode != CompatMode::Pvm {
        return None;
    }
    match bytes.first()? {
        0xcc => Some(EmulationFix::SkipAndInjectBreakpoint),
        0x9b => Some(EmulationFix::Skip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_only_apply_on_pvm() {
        assert_eq!(
            fix_for(CompatMode::Pvm, &[0xcc]),
            Some(EmulationFix::SkipAndInjectBreakpoint)
        );
        assert_eq!(
            fix_for(CompatMode::Pvm, &[0x9b, 0x90]),
            Some(EmulationFix::Skip)
        );
        assert_eq!(fix_for(CompatMode::Pvm, &[0x0f, 0xae]), None);
        assert_eq!(fix_for(CompatMode::None, &[0xcc]), None);
        assert!(CompatMode::None.cmdline().is_empty());
        assert_eq!(CompatMode::resolve(CompatChoice::None), CompatMode::None);
    }
}
