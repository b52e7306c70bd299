//! Enums the trace stores by name: VMM phases, how a run ended, the unwinder.
//!
//! Each is stored (in the file and in JSON) as the same string that older
//! traces hold, so the on-disk bytes and the report output do not change;
//! a name this build does not know is kept as `Other` rather than rejected,
//! so a newer file still reads.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares an enum of named values plus `Other(String)`, with `as_str`,
/// `from_name`, `Display`, string serde and comparisons with `&str`.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A name this build does not know (written by a newer boottrace).
            Other(String),
        }

        impl $name {
            /// The stored name.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Other(s) => s,
                }
            }

            /// The value for a stored name; unknown names become `Other`.
            pub fn from_name(s: &str) -> Self {
                match s {
                    $( $text => $name::$variant, )+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::from_name(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::from_name(&s))
            }
        }
    };
}

named_enum! {
    /// A point in a run's timeline that the VMM (or `record`) marks.
    pub enum PhaseName {
        /// The analysis of the kernel image (decompression, symbols, type
        /// info, hash) ended; it runs beside the first run's VMM start-up
        /// and boot (first run only; before issue 11: before the VM existed).
        KernelAnalysis => "kernel_analysis",
        /// KVM_CREATE_VM done.
        CreateVm => "create_vm",
        /// Guest memory mapped.
        Memory => "memory",
        /// Kernel, initrd and boot parameters loaded.
        LoadKernel => "load_kernel",
        /// vCPUs created and set up.
        Vcpus => "vcpus",
        /// The boot vCPU entered the guest for the first time.
        FirstInstruction => "first_instruction",
        /// The guest wrote the boot marker.
        BootMarker => "boot_marker",
        /// The first user-mode instruction was seen.
        UserMode => "user_mode",
        /// The run ended.
        End => "end",
    }
}

named_enum! {
    /// Why a run ended, as stored in [`RunEnd`](super::RunEnd).
    pub enum EndKind {
        /// The first user-mode instruction ran.
        User => "user",
        /// The guest reset the machine.
        Reset => "reset",
        /// Triple fault, shutdown or system event.
        Shutdown => "shutdown",
        /// The kernel panicked.
        Panic => "panic",
        /// The guest wrote the boot marker.
        Marker => "marker",
        /// Stopped at the guest's first instruction (`--until first-instruction`).
        FirstInstruction => "first-instruction",
        /// The guest reached a kernel function (`--until FUNCTION`; the
        /// detail names it).
        Function => "function",
        /// A console line matched `--until serial:REGEX`.
        Serial => "serial",
        /// `--timeout` passed.
        Timeout => "timeout",
        /// The host could not run a guest instruction.
        EmulationFailure => "emulation-failure",
        /// KVM_RUN failed or a vCPU could not continue.
        VcpuError => "vcpu-error",
        /// The user interrupted the recording.
        Interrupted => "interrupted",
        /// The host could not go on recording (e.g. the trace's disk is full).
        HostError => "host-error",
    }
}

impl EndKind {
    /// True for the ends a boot is meant to reach (its `--until` goal, or a
    /// clean shutdown/reset): anything else means the boot failed.
    pub fn is_goal(&self) -> bool {
        matches!(
            self,
            EndKind::User
                | EndKind::Marker
                | EndKind::Serial
                | EndKind::Shutdown
                | EndKind::Reset
                | EndKind::FirstInstruction
                | EndKind::Function
        )
    }
}

named_enum! {
    /// How guest stacks were unwound at sample time.
    #[derive(Default)]
    pub enum UnwinderKind {
        /// No sampling, so no unwinding.
        #[default]
        None => "none",
        /// Frame-pointer chains.
        FramePointer => "frame-pointer",
        /// The kernel's ORC tables.
        Orc => "orc",
    }
}

named_enum! {
    /// What a [`Boundary`](super::Boundary) record marks (format 3).
    pub enum BoundaryKind {
        /// An initcall function was entered (`addr`: the function).
        InitcallStart => "initcall_start",
        /// An initcall function returned to `do_one_initcall` (`ret`: its value).
        InitcallEnd => "initcall_end",
        /// `start_kernel` was entered.
        StartKernel => "start_kernel",
        /// `rest_init` was entered.
        RestInit => "rest_init",
        /// The init thread's `kernel_init` was entered.
        KernelInit => "kernel_init",
        /// `free_initmem` was entered (initcalls done, init memory freed).
        FreeInitmem => "free_initmem",
        /// `kernel_execve` was entered after `free_initmem`: the exec of init.
        ExecInit => "exec_init",
        /// The `--until FUNCTION` function was entered.
        UntilFunction => "until_function",
        /// Run figure, written at the run's end: time the guest spent
        /// writing to the UART console (`value`: ns, `count`: port accesses).
        Console => "console",
        /// Run figure, written at the run's end: breakpoint exits (`count`)
        /// and the VMM's time handling them (`value`: ns).
        BreakpointCost => "breakpoint_cost",
        /// Run figure, written at the run's end: boundaries not written
        /// because of the per-run cap (`count`).
        Dropped => "dropped",
    }
}

impl Default for BoundaryKind {
    fn default() -> Self {
        BoundaryKind::Other(String::new())
    }
}

impl Default for PhaseName {
    fn default() -> Self {
        PhaseName::Other(String::new())
    }
}

impl Default for EndKind {
    fn default() -> Self {
        EndKind::Other(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_survive() {
        for p in [PhaseName::FirstInstruction, PhaseName::KernelAnalysis] {
            assert_eq!(PhaseName::from_name(p.as_str()), p);
        }
        assert_eq!(PhaseName::FirstInstruction, "first_instruction");
        assert_eq!(
            PhaseName::from_name("some_future_phase"),
            PhaseName::Other("some_future_phase".into())
        );
        assert_eq!(
            EndKind::from_name("emulation-failure"),
            EndKind::EmulationFailure
        );
        assert!(EndKind::Serial.is_goal());
        assert!(!EndKind::Timeout.is_goal());
        assert_eq!(UnwinderKind::from_name("orc").to_string(), "orc");
    }

    #[test]
    fn stored_as_the_same_bytes_as_a_string() {
        let as_enum = postcard::to_allocvec(&EndKind::VcpuError).expect("encode");
        let as_string = postcard::to_allocvec("vcpu-error").expect("encode");
        assert_eq!(as_enum, as_string);
        let back: UnwinderKind =
            postcard::from_bytes(&postcard::to_allocvec("frame-pointer").expect("encode"))
                .expect("decode");
        assert_eq!(back, UnwinderKind::FramePointer);
        assert_eq!(
            serde_json::to_string(&PhaseName::UserMode).expect("json"),
            "\"user_mode\""
        );
    }
}
