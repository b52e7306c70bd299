//! The four hardware breakpoints (DR0–DR3), shared by everything that wants
//! an exact point of the boot: the `--until FUNCTION` goal, the initcalls
//! (one slot walks `do_one_initcall` → the initcall → its return), the named
//! boundaries (`start_kernel` … the exec of init, one slot walking the chain),
//! and the user-mode detection (the kernel's return to user mode, `/init`'s entry).
//!
//! [`BoundaryPlan`] is the boot's shared state (every vCPU hits the same
//! kernel); [`BoundaryPlan::wanted`] turns it into the slots one vCPU should
//! program, by priority, so a fifth wish never takes a slot from a more
//! important one. Nothing here touches KVM: the vCPU loop programs the
//! slots and reports hits back, so the logic is unit-tested.
//!
//! Initcalls: at `do_one_initcall`'s entry RDI is the initcall; the slot
//! moves to that function's entry (its start: `do_one_initcall`'s own work
//! and initcall_debug's printing are outside), then to the return address
//! at `[RSP]` there (its end, RAX the return value), then back to
//! `do_one_initcall`. Each hit moves the slot away from the address the
//! vCPU resumes at, so no resume flag or single step is needed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Number of debug-register slots.
pub const SLOTS: usize = 4;

/// A named point of the boot caught at its function's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamedBoundary {
    /// `start_kernel`.
    StartKernel,
    /// `rest_init`.
    RestInit,
    /// `kernel_init` (the init thread).
    KernelInit,
    /// `free_initmem`.
    FreeInitmem,
    /// `kernel_execve` after `free_initmem`: the exec of init.
    ExecInit,
}

/// The named boundaries in boot order, with the function each is caught at.
pub const NAMED_CHAIN: &[(NamedBoundary, &str)] = &[
    (NamedBoundary::StartKernel, "start_kernel"),
    (NamedBoundary::RestInit, "rest_init"),
    (NamedBoundary::KernelInit, "kernel_init"),
    (NamedBoundary::FreeInitmem, "free_initmem"),
    (NamedBoundary::ExecInit, "kernel_execve"),
];

/// The function whose entry starts each initcall.
pub const DO_ONE_INITCALL: &str = "do_one_initcall";

/// What a slot watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The `--until FUNCTION` goal.
    Until,
    /// `do_one_initcall`'s entry.
    InitcallEntry,
    /// The entry of the initcall `do_one_initcall` is about to call.
    InitcallFn,
    /// The initcall's return address in `do_one_initcall`.
    InitcallReturn,
    /// The next named boundary (index into the plan's chain).
    Named(usize),
    /// The kernel's return-to-user path.
    UserReturn,
    /// `/init`'s entry (a user address).
    InitEntry,
}

/// The four slots of one vCPU: address and role each.
pub type Slots = [Option<(u64, Role)>; SLOTS];

/// Fills slots in the order given (most important first); wishes without an
/// address are skipped, wishes beyond [`SLOTS`] are left out.
pub fn allocate(wishes: &[(Role, Option<u64>)]) -> Slots {
    let mut slots: Slots = [None; SLOTS];
    let mut next = 0;
    for &(role, addr) in wishes {
        let Some(addr) = addr else { continue };
        if next == SLOTS {
            break;
        }
        slots[next] = Some((addr, role));
        next += 1;
    }
    slots
}

/// The role of the slot that fired, from DR6's low bits: the lowest set bit
/// whose slot is armed.
pub fn fired(slots: &Slots, dr6: u64) -> Option<(usize, u64, Role)> {
    (0..SLOTS).find_map(|i| {
        if dr6 & (1 << i) == 0 {
            return None;
        }
        slots[i].map(|(a, r)| (i, a, r))
    })
}

/// Where the initcall slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitcallState {
    /// Waiting at `do_one_initcall`'s entry.
    Idle,
    /// `do_one_initcall` was entered with `func` in RDI (stack pointer `rsp`).
    AwaitFn {
        /// The initcall (runtime address).
        func: u64,
        /// RSP at `do_one_initcall`'s entry.
        rsp: u64,
    },
    /// The initcall runs; it returns to `ret_addr` with RSP = `rsp` + 8.
    InFn {
        /// The initcall.
        func: u64,
        /// The return address in `do_one_initcall`.
        ret_addr: u64,
        /// RSP at the initcall's entry.
        rsp: u64,
    },
}

/// What a hit means, for the vCPU loop to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    /// An initcall started (its entry).
    InitcallStart,
    /// An initcall returned.
    InitcallEnd,
    /// A named boundary.
    Named(NamedBoundary),
    /// The `--until FUNCTION` goal.
    Until,
}

/// A recorded hit: what, and of which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// What it marks.
    pub kind: HitKind,
    /// Runtime address of the function.
    pub addr: u64,
    /// The return value (initcall end: `int`, sign-extended).
    pub ret: Option<i64>,
}

/// Register values at a breakpoint hit.
#[derive(Debug, Clone, Copy, Default)]
pub struct HitRegs {
    /// RIP (the breakpoint's address).
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RDI (first argument).
    pub rdi: u64,
    /// RAX (return value).
    pub rax: u64,
    /// The u64 at RSP (return address at a function entry), if readable.
    pub at_rsp: Option<u64>,
}

/// Most bytes an initcall's entry RSP may lie below `do_one_initcall`'s: a
/// hit farther away is the same function called by someone else.
const MAX_FRAME: u64 = 4096;

/// The addresses the plan watches (link-time; the slide is applied per vCPU).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundaryLinks {
    /// `--until FUNCTION`: its name and link-time address.
    pub until: Option<(String, u64)>,
    /// `do_one_initcall`'s link-time address (`None`: no initcall timing).
    pub do_one_initcall: Option<u64>,
    /// Named boundaries found in the symbols, in boot order.
    pub named: Vec<(NamedBoundary, u64)>,
}

/// One boot's shared breakpoint state.
#[derive(Debug)]
pub struct BoundaryPlan {
    /// Set once the kernel analysis (running beside the boot) has the symbols.
    links: Arc<OnceLock<BoundaryLinks>>,
    next_named: AtomicUsize,
    initcall: Mutex<InitcallState>,
    generation: AtomicU64,
}

impl BoundaryPlan {
    /// A plan watching `links`.
    pub fn new(links: BoundaryLinks) -> BoundaryPlan {
        let cell = OnceLock::new();
        let _ = cell.set(links);
        BoundaryPlan::late(Arc::new(cell))
    }

    /// A plan watching what `links` will hold once the symbols are read;
    /// nothing is watched before.
    pub fn late(links: Arc<OnceLock<BoundaryLinks>>) -> BoundaryPlan {
        BoundaryPlan {
            links,
            next_named: AtomicUsize::new(0),
            initcall: Mutex::new(InitcallState::Idle),
            generation: AtomicU64::new(0),
        }
    }

    /// The addresses watched (`None` until the symbols are known).
    pub fn links(&self) -> Option<&BoundaryLinks> {
        self.links.get()
    }

    /// True when some kernel address is watched (they need the KASLR slide).
    pub fn watches_kernel(&self) -> bool {
        let Some(l) = self.links.get() else {
            return false;
        };
        l.until.is_some() || l.do_one_initcall.is_some() || !l.named.is_empty()
    }

    /// Changes every time a slot should move; a vCPU re-plans when it differs
    /// from the one it programmed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The initcall slot's state.
    pub fn initcall_state(&self) -> InitcallState {
        self.initcall.lock().map_or(InitcallState::Idle, |s| *s)
    }

    /// The slots one vCPU should program: `slide` is the KASLR slide when
    /// known (kernel addresses wait for it), `user` the user-mode detection
    /// wishes (return-to-user link, `/init` entry) until user mode was seen.
    pub fn wanted(&self, slide: Option<i64>, user: (Option<u64>, Option<u64>)) -> Slots {
        let at = |link: u64| slide.map(|s| link.wrapping_add(s as u64));
        let links = self.links.get();
        let until = links
            .and_then(|l| l.until.as_ref())
            .and_then(|(_, l)| at(*l));
        let initcall = match self.initcall_state() {
            InitcallState::Idle => (
                Role::InitcallEntry,
                links.and_then(|l| l.do_one_initcall).and_then(at),
            ),
            InitcallState::AwaitFn { func, .. } => (Role::InitcallFn, Some(func)),
            InitcallState::InFn { ret_addr, .. } => (Role::InitcallReturn, Some(ret_addr)),
        };
        let i = self.next_named.load(Ordering::Acquire);
        let named = (
            Role::Named(i),
            links.and_then(|l| l.named.get(i)).and_then(|(_, l)| at(*l)),
        );
        allocate(&[
            (Role::Until, until),
            initcall,
            named,
            (Role::UserReturn, user.0.and_then(at)),
            (Role::InitEntry, user.1),
        ])
    }

    /// Handles a hit of a kernel-boundary slot (`Until`, the initcall roles,
    /// `Named`) at `addr` with `regs`: moves the plan on and returns what to
    /// record, or `None` for a hit that is not the one expected (the slot's
    /// program was stale, or another caller of the same function).
    pub fn hit(&self, role: Role, addr: u64, regs: &HitRegs) -> Option<Hit> {
        if regs.rip != addr {
            return None;
        }
        match role {
            Role::Until => Some(Hit {
                kind: HitKind::Until,
                addr,
                ret: None,
            }),
            Role::Named(i) => {
                let (kind, _) = *self.links.get()?.named.get(i)?;
                // Only the vCPU that moves the chain on records the hit.
                self.next_named
                    .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                    .ok()?;
                self.bump();
                Some(Hit {
                    kind: HitKind::Named(kind),
                    addr,
                    ret: None,
                })
            }
            Role::InitcallEntry | Role::InitcallFn | Role::InitcallReturn => {
                self.initcall_hit(role, addr, regs)
            }
            Role::UserReturn | Role::InitEntry => None,
        }
    }

    fn initcall_hit(&self, role: Role, addr: u64, regs: &HitRegs) -> Option<Hit> {
        let mut st = self.initcall.lock().ok()?;
        let (next, hit) = match (*st, role) {
            (InitcallState::Idle, Role::InitcallEntry) => (
                InitcallState::AwaitFn {
                    func: regs.rdi,
                    rsp: regs.rsp,
                },
                None,
            ),
            (InitcallState::AwaitFn { func, rsp }, Role::InitcallFn)
                if func == addr && regs.rsp < rsp && rsp - regs.rsp <= MAX_FRAME =>
            {
                let ret_addr = regs.at_rsp?;
                (
                    InitcallState::InFn {
                        func,
                        ret_addr,
                        rsp: regs.rsp,
                    },
                    Some(Hit {
                        kind: HitKind::InitcallStart,
                        addr: func,
                        ret: None,
                    }),
                )
            }
            (
                InitcallState::InFn {
                    func,
                    ret_addr,
                    rsp,
                },
                Role::InitcallReturn,
            ) if ret_addr == addr && regs.rsp == rsp.wrapping_add(8) => {
                (
                    InitcallState::Idle,
                    Some(Hit {
                        kind: HitKind::InitcallEnd,
                        addr: func,
                        // An initcall returns `int`.
                        ret: Some(i64::from(regs.rax as u32 as i32)),
                    }),
                )
            }
            _ => return None,
        };
        *st = next;
        drop(st);
        self.bump();
        hit
    }

    /// Gives up on the initcall being watched (e.g. the same stale hit keeps
    /// coming): back to `do_one_initcall`'s entry.
    pub fn reset_initcall(&self) {
        if let Ok(mut st) = self.initcall.lock() {
            *st = InitcallState::Idle;
        }
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOIC: u64 = 0xffff_ffff_8100_1000;

    fn plan() -> BoundaryPlan {
        BoundaryPlan::new(BoundaryLinks {
            until: None,
            do_one_initcall: Some(DOIC),
            named: vec![
                (NamedBoundary::StartKernel, 0xffff_ffff_8200_0000),
                (NamedBoundary::FreeInitmem, 0xffff_ffff_8200_1000),
            ],
        })
    }

    fn regs(rip: u64, rsp: u64) -> HitRegs {
        HitRegs {
            rip,
            rsp,
            ..HitRegs::default()
        }
    }

    #[test]
    fn allocation_keeps_priority_order_and_skips_unknown_addresses() {
        let s = allocate(&[
            (Role::Until, None),
            (Role::InitcallEntry, Some(1)),
            (Role::Named(0), Some(2)),
            (Role::UserReturn, Some(3)),
            (Role::InitEntry, Some(4)),
            (Role::Until, Some(5)),
        ]);
        assert_eq!(
            s,
            [
                Some((1, Role::InitcallEntry)),
                Some((2, Role::Named(0))),
                Some((3, Role::UserReturn)),
                Some((4, Role::InitEntry))
            ]
        );
        assert_eq!(allocate(&[]), [None; SLOTS]);
    }

    #[test]
    fn until_takes_a_slot_first_and_init_entry_gives_way() {
        let mut links = plan().links().expect("links").clone();
        links.until = Some(("start_kernel".into(), 0xffff_ffff_8300_0000));
        let p = BoundaryPlan::new(links);
        let s = p.wanted(
            Some(0x20_0000),
            (Some(0xffff_ffff_8400_0000), Some(0x40_1000)),
        );
        assert_eq!(s[0], Some((0xffff_ffff_8320_0000, Role::Until)));
        assert_eq!(s[1], Some((DOIC + 0x20_0000, Role::InitcallEntry)));
        assert_eq!(s[2].map(|x| x.1), Some(Role::Named(0)));
        assert_eq!(s[3].map(|x| x.1), Some(Role::UserReturn));
        // Without the slide only the user address is known.
        let s = p.wanted(None, (Some(0xffff_ffff_8400_0000), Some(0x40_1000)));
        assert_eq!(s[0], Some((0x40_1000, Role::InitEntry)));
        assert_eq!(s[1], None);
    }

    #[test]
    fn fired_names_the_armed_slot() {
        let s = allocate(&[(Role::InitcallEntry, Some(1)), (Role::Named(0), Some(2))]);
        assert_eq!(fired(&s, 0b10), Some((1, 2, Role::Named(0))));
        assert_eq!(fired(&s, 0b1000), None, "slot 3 is not armed");
        assert_eq!(fired(&s, 0), None);
    }

    #[test]
    fn an_initcall_is_entry_start_and_end_in_order() {
        let p = plan();
        let g0 = p.generation();
        let f = 0xffff_ffff_8150_0000;
        let entry = HitRegs {
            rdi: f,
            ..regs(DOIC, 0x1000_0f00)
        };
        assert_eq!(p.hit(Role::InitcallEntry, DOIC, &entry), None);
        assert!(p.generation() > g0);
        assert_eq!(
            p.wanted(Some(0), (None, None))[0],
            Some((f, Role::InitcallFn))
        );
        let start = HitRegs {
            at_rsp: Some(DOIC + 0x80),
            ..regs(f, 0x1000_0ec8)
        };
        assert_eq!(
            p.hit(Role::InitcallFn, f, &start),
            Some(Hit {
                kind: HitKind::InitcallStart,
                addr: f,
                ret: None
            })
        );
        assert_eq!(
            p.wanted(Some(0), (None, None))[0],
            Some((DOIC + 0x80, Role::InitcallReturn))
        );
        // A return with the wrong stack (recursion, another caller) is not the end.
        assert_eq!(
            p.hit(
                Role::InitcallReturn,
                DOIC + 0x80,
                &regs(DOIC + 0x80, 0x1000_0e00)
            ),
            None
        );
        let end = HitRegs {
            rax: (-19i64) as u64 & 0xffff_ffff,
            ..regs(DOIC + 0x80, 0x1000_0ed0)
        };
        assert_eq!(
            p.hit(Role::InitcallReturn, DOIC + 0x80, &end),
            Some(Hit {
                kind: HitKind::InitcallEnd,
                addr: f,
                ret: Some(-19)
            })
        );
        assert_eq!(p.initcall_state(), InitcallState::Idle);
        assert_eq!(
            p.wanted(Some(0), (None, None))[0],
            Some((DOIC, Role::InitcallEntry))
        );
    }

    #[test]
    fn stale_or_foreign_hits_change_nothing() {
        let p = plan();
        let f = 0xffff_ffff_8150_0000;
        // A hit whose RIP is not the slot's address (stale program).
        assert_eq!(p.hit(Role::InitcallEntry, DOIC, &regs(DOIC + 1, 0)), None);
        assert_eq!(p.initcall_state(), InitcallState::Idle);
        // The initcall's function hit while idle: someone else called it.
        assert_eq!(p.hit(Role::InitcallFn, f, &regs(f, 0x100)), None);
        let entry = HitRegs {
            rdi: f,
            ..regs(DOIC, 0x1000_0f00)
        };
        p.hit(Role::InitcallEntry, DOIC, &entry);
        // The function entered on another stack: not this initcall.
        let far = HitRegs {
            at_rsp: Some(1),
            ..regs(f, 0x2000_0000)
        };
        assert_eq!(p.hit(Role::InitcallFn, f, &far), None);
        assert!(matches!(p.initcall_state(), InitcallState::AwaitFn { .. }));
        p.reset_initcall();
        assert_eq!(p.initcall_state(), InitcallState::Idle);
    }

    #[test]
    fn the_named_chain_moves_on_once_per_boundary() {
        let p = plan();
        let sk = 0xffff_ffff_8200_0000;
        assert_eq!(
            p.wanted(Some(0), (None, None))[1],
            Some((sk, Role::Named(0)))
        );
        let h = p.hit(Role::Named(0), sk, &regs(sk, 0));
        assert_eq!(
            h.map(|h| h.kind),
            Some(HitKind::Named(NamedBoundary::StartKernel))
        );
        // A second vCPU with the old program: not recorded twice.
        assert_eq!(p.hit(Role::Named(0), sk, &regs(sk, 0)), None);
        let fi = 0xffff_ffff_8200_1000;
        assert_eq!(
            p.wanted(Some(0), (None, None))[1],
            Some((fi, Role::Named(1)))
        );
        assert!(p.hit(Role::Named(1), fi, &regs(fi, 0)).is_some());
        // The chain is done: the slot goes to the next wish.
        assert_eq!(
            p.wanted(Some(0), (Some(0x99), None))[1],
            Some((0x99, Role::UserReturn))
        );
        assert_eq!(p.hit(Role::Named(2), fi, &regs(fi, 0)), None);
    }
}
