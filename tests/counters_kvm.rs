//! Host-side counters against a real KVM guest: KVM exit statistics, and which
//! page-fault counter sees the faults KVM takes on guest memory.
//!
//! Needs `/dev/kvm`. The guests are a few bytes of real- or protected-mode code
//! (emulated instruction by instruction on a PVM host, so they stay small).

use std::time::Instant;

use boottrace::sample::counters::{
    thread_faults, CounterDeltas, KvmStats, PerfError, PerfFaults, PerfScope, VcpuCounters,
};
use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

const PAGE: usize = 4096;
/// Guest-physical address of the test code.
const CODE: u64 = 0x1000;
/// First guest page the page-touching guest writes to.
const TOUCH_BASE: u32 = 0x10_0000;
/// Pages the page-touching guest writes to (one byte each).
const TOUCH_PAGES: u32 = 512;

/// An anonymous mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// A fresh private anonymous mapping without transparent huge pages, so
    /// that every 4 KiB page is faulted in on its own.
    fn new(len: usize) -> Mapping {
        // SAFETY: anonymous private mapping at a kernel-chosen address; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        // SAFETY: advising on exactly the mapping created above.
        let rc = unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        assert_eq!(rc, 0, "madvise(MADV_NOHUGEPAGE)");
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len);
        // SAFETY: bounds checked above; the mapping is writable and owned here.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
    }

    fn read(&self, offset: usize) -> u8 {
        assert!(offset < self.len);
        // SAFETY: bounds checked above; the mapping is readable.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset)) }
    }

    /// Writes one byte into each of the first `pages` pages.
    fn touch_pages(&mut self, pages: usize) {
        assert!(pages * PAGE <= self.len);
        for i in 0..pages {
            // SAFETY: i * PAGE < len (checked above), inside the mapping.
            unsafe { std::ptr::write_volatile(self.ptr.add(i * PAGE), 1) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; the VM that
        // used it as guest memory is dropped before (field order of `Guest`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A one-vCPU VM whose memory is a fresh anonymous mapping at guest address 0.
struct Guest {
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    mem: Mapping,
}

impl Guest {
    fn new(mem_size: usize, code: &[u8]) -> Guest {
        let kvm = Kvm::new().expect("open /dev/kvm");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let mut mem = Mapping::new(mem_size);
        let region = kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: mem_size as u64,
            userspace_addr: mem.ptr as u64,
            flags: 0,
        };
        // SAFETY: the region is backed by `mem`, which outlives the VM (it is
        // the last field of `Guest`).
        unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
        mem.write(CODE as usize, code);
        let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        Guest {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            mem,
        }
    }

    /// Starts the vCPU in real mode at `CODE`.
    fn real_mode(&self) {
        let mut sregs = self.vcpu.get_sregs().expect("get_sregs");
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        self.vcpu.set_sregs(&sregs).expect("set_sregs");
        self.set_rip(CODE);
    }

    /// Starts the vCPU in flat 32-bit protected mode (no paging) at `CODE`.
    fn protected_mode(&self) {
        let mut sregs = self.vcpu.get_sregs().expect("get_sregs");
        let seg = |selector: u16, type_: u8| kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.cs = seg(0x8, 0xb);
        let data = seg(0x10, 0x3);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.cr0 |= 1;
        self.vcpu.set_sregs(&sregs).expect("set_sregs");
        self.set_rip(CODE);
    }

    fn set_rip(&self, rip: u64) {
        let mut regs = self.vcpu.get_regs().expect("get_regs");
        regs.rip = rip;
        regs.rflags = 2;
        self.vcpu.set_regs(&regs).expect("set_regs");
    }

    /// Runs until `hlt`; returns the number of port writes seen.
    fn run_to_hlt(&mut self) -> u64 {
        let mut outs = 0;
        for _ in 0..1_000_000 {
            match self.vcpu.run().expect("KVM_RUN") {
                VcpuExit::IoOut(_, _) => outs += 1,
                VcpuExit::Hlt => return outs,
                other => panic!("unexpected exit {other:?}"),
            }
        }
        panic!("guest did not halt");
    }
}

/// Whether /dev/kvm is the nested "PVM" kind (see docs/ENVIRONMENT.md).
fn is_pvm_host() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Real-mode code: `out 0x3f8, 'a'` `n` times, then `hlt`.
fn out_loop(n: u16) -> Vec<u8> {
    let [lo, hi] = n.to_le_bytes();
    vec![
        0xb9, lo, hi, // mov cx, n
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'a', // mov al, 'a'
        0xee, // l: out dx, al
        0x49, // dec cx
        0x75, 0xfc, // jnz l
        0xf4, // hlt
    ]
}

/// 32-bit code: write one byte to each of `pages` pages from `base`, then `hlt`.
fn touch_loop(base: u32, pages: u32) -> Vec<u8> {
    let mut code = vec![0xbf]; // mov edi, base
    code.extend_from_slice(&base.to_le_bytes());
    code.push(0xb9); // mov ecx, pages
    code.extend_from_slice(&pages.to_le_bytes());
    code.extend_from_slice(&[
        0xc6, 0x07, 0x01, // l: mov byte [edi], 1
        0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, // add edi, 0x1000
        0x49, // dec ecx
        0x75, 0xf4, // jnz l
        0xf4, // hlt
    ]);
    code
}

/// The KVM stat names of a `VcpuCounters`, copied out so that they can be
/// used while a `CounterDeltas` borrows the counters.
fn names(c: &VcpuCounters) -> Vec<String> {
    c.stat_names().to_vec()
}

fn kvm_delta(names: &[String], d: &CounterDeltas<'_>, name: &str) -> u64 {
    let id = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("KVM stat {name} missing from {names:?}"));
    d.kvm
        .iter()
        .find(|(i, _)| usize::from(*i) == id)
        .map_or(0, |&(_, v)| v)
}

fn describe(names: &[String], d: &CounterDeltas<'_>) -> String {
    let kvm: Vec<String> = d
        .kvm
        .iter()
        .map(|&(i, v)| {
            let name = names.get(usize::from(i)).map_or("?", String::as_str);
            format!("{name}={v}")
        })
        .collect();
    format!(
        "minflt={} majflt={} perf_faults={:?} perf_majflt={:?} kvm[{}]",
        d.minflt,
        d.majflt,
        d.perf_faults,
        d.perf_majflt,
        kvm.join(" ")
    )
}

#[test]
fn kvm_stats_count_the_guests_port_writes() {
    const N: u16 = 200;
    let mut g = Guest::new(1 << 20, &out_loop(N));
    g.real_mode();
    let mut c = VcpuCounters::new(&g.vcpu);
    let n = names(&c);
    assert!(
        c.kvm_stats_unavailable().is_none(),
        "{:?}",
        c.kvm_stats_unavailable()
    );
    let stats = KvmStats::from_vcpu(&g.vcpu).expect("stats fd");
    eprintln!(
        "KVM stats id {:?}, {} descriptors, {} cumulative scalars: {:?}",
        stats.id(),
        stats.descriptors().len(),
        stats.len(),
        stats.stat_names()
    );

    let outs = g.run_to_hlt();
    assert_eq!(
        outs,
        u64::from(N),
        "guest did not do what it was written to do"
    );
    let d = c.sample();
    eprintln!("after {N} port writes + hlt: {}", describe(&n, &d));
    let (io, exits, halts) = (
        kvm_delta(&n, &d, "io_exits"),
        kvm_delta(&n, &d, "exits"),
        kvm_delta(&n, &d, "halt_exits"),
    );
    // Every port write is a KVM_EXIT_IO to user space, so at least N exits.
    assert!(exits >= u64::from(N), "exits delta {exits} < {N}");
    if is_pvm_host() {
        // PVM emulates CPL-0 guest code: the `out` is handled by the
        // instruction emulator, not by an I/O-instruction intercept, and
        // io_exits (incremented only by the VMX/SVM intercepts) stays 0.
        eprintln!("PVM host: io_exits delta {io} (not incremented by PVM's emulator)");
    } else {
        assert!(io >= u64::from(N), "io_exits delta {io} < {N}");
        assert!(exits >= io, "exits delta {exits} < io_exits delta {io}");
    }
    assert!(halts >= 1, "halt_exits delta {halts}");

    // Nothing ran since: the next sample shows no KVM activity at all.
    let d = c.sample();
    assert_eq!(kvm_delta(&n, &d, "io_exits"), 0, "{}", describe(&n, &d));
    assert_eq!(kvm_delta(&n, &d, "exits"), 0, "{}", describe(&n, &d));
}

#[test]
fn guest_memory_faults_show_in_rusage_not_in_perf() {
    let pages = u64::from(TOUCH_PAGES);
    let mut g = Guest::new(4 << 20, &touch_loop(TOUCH_BASE, TOUCH_PAGES));
    g.protected_mode();
    let mut c = VcpuCounters::new(&g.vcpu);
    let n = names(&c);
    let perf_available = c.perf_unavailable().is_none();
    if !perf_available {
        eprintln!("perf unavailable: {:?}", c.perf_unavailable());
    }
    // For the record only: perf counting kernel-mode (uaccess) faults too.
    let mut perf_all = PerfFaults::open(PerfScope::UserAndKernel).ok();
    let all_before = perf_all.as_mut().and_then(|p| p.read().ok());

    // First run: the guest touches TOUCH_PAGES fresh pages.
    let t = Instant::now();
    g.run_to_hlt();
    let elapsed = t.elapsed();
    let d = c.sample();
    let all_after = perf_all.as_mut().and_then(|p| p.read().ok());
    let perf_all_delta = all_before.zip(all_after).map(|(b, a)| a.faults - b.faults);
    eprintln!(
        "guest touched {pages} fresh pages in {elapsed:?}: {}; perf (user+kernel) faults {:?}",
        describe(&n, &d),
        perf_all_delta
    );
    let (fresh_minflt, fresh_perf) = (d.minflt, d.perf_faults);
    // The guest did write every page it was meant to (and so faulted each in).
    for i in 0..TOUCH_PAGES as usize {
        assert_eq!(g.mem.read(TOUCH_BASE as usize + i * PAGE), 1, "page {i}");
    }
    assert!(
        fresh_minflt >= pages,
        "rusage minflt {fresh_minflt} < {pages} pages touched"
    );
    if let Some(p) = fresh_perf {
        assert!(
            p < pages / 8,
            "perf saw {p} faults, expected far below {pages}"
        );
    }
    assert!(perf_available || fresh_perf.is_none());

    // Second run over the same, now resident, pages: no new faults.
    g.protected_mode();
    g.run_to_hlt();
    let d = c.sample();
    eprintln!(
        "guest touched the same {pages} pages again: {}",
        describe(&n, &d)
    );
    assert!(
        d.minflt < pages / 8,
        "rusage minflt {} on resident pages",
        d.minflt
    );
}

#[test]
fn host_memset_shows_in_both_counters() {
    let pages = TOUCH_PAGES as usize;
    let g = Guest::new(1 << 20, &[0xf4]);
    let mut c = VcpuCounters::new(&g.vcpu);
    let n = names(&c);
    let mut fresh = Mapping::new(pages * PAGE);
    fresh.touch_pages(pages);
    let d = c.sample();
    eprintln!("host wrote {pages} fresh pages: {}", describe(&n, &d));
    assert!(d.minflt >= pages as u64, "rusage minflt {}", d.minflt);
    match d.perf_faults {
        Some(p) => assert!(p >= pages as u64, "perf faults {p} < {pages}"),
        None => eprintln!("perf unavailable: {:?}", c.perf_unavailable()),
    }
    // The pages are resident now: touching them again costs nothing.
    fresh.touch_pages(pages);
    let d = c.sample();
    assert!(d.minflt < pages as u64 / 8, "{}", describe(&n, &d));
}

/// `VcpuCounters` reads perf only when getrusage moved (user-only scope):
/// its perf deltas must be those of a perf group read at every sample.
#[test]
fn skipped_perf_reads_give_what_reads_give() {
    let pages = 64;
    let g = Guest::new(1 << 20, &[0xf4]);
    let mut c = VcpuCounters::new(&g.vcpu);
    let mut every = PerfFaults::open(PerfScope::UserOnly)
        .unwrap_or_else(|e| panic!("cannot open a perf software event here: {e}"));
    let mut fresh = Mapping::new(pages * PAGE);
    let mut prev = every.read().expect("perf read").faults;
    let mut step = |c: &mut VcpuCounters| {
        let d = c.sample();
        let now = every.read().expect("perf read").faults;
        let r = (d.perf_faults, Some(now - prev), d.minflt);
        prev = now;
        r
    };
    // The first rounds fault this code's own pages in, between the reads.
    for _ in 0..3 {
        step(&mut c);
    }
    let mut check = |c: &mut VcpuCounters, what: &str| {
        let (skipped_or_read, read, minflt) = step(c);
        assert_eq!(skipped_or_read, read, "{what}");
        minflt
    };
    // Nothing happens: getrusage still, perf skipped, 0 as a read says.
    for _ in 0..100 {
        check(&mut c, "idle");
    }
    // The host faults pages in from user mode: both move, perf is read.
    fresh.touch_pages(pages);
    assert!(check(&mut c, "fresh pages") >= pages as u64);
    for _ in 0..10 {
        check(&mut c, "idle again");
    }
}

/// Not a timed assertion: prints the cost of `sample()` and of its parts.
#[test]
fn per_sample_cost() {
    const CALLS: u32 = 10_000;
    let g = Guest::new(1 << 20, &[0xf4]);
    let mut c = VcpuCounters::new(&g.vcpu);
    let io = c.stat_id("io_exits").expect("io_exits stat");

    let t = Instant::now();
    let mut io_sum = 0;
    for _ in 0..CALLS {
        let d = c.sample();
        io_sum += d
            .kvm
            .iter()
            .filter(|(i, _)| *i == io)
            .map(|&(_, v)| v)
            .sum::<u64>();
    }
    let total = t.elapsed().as_nanos() / u128::from(CALLS);
    // The guest never ran: no KVM activity may be reported.
    assert_eq!(io_sum, 0);

    let mut no_perf = VcpuCounters::with_perf_scope(&g.vcpu, None);
    let t = Instant::now();
    for _ in 0..CALLS {
        let d = no_perf.sample();
        assert_eq!(d.perf_faults, None);
        std::hint::black_box(d);
    }
    let without_perf = t.elapsed().as_nanos() / u128::from(CALLS);
    assert!(matches!(
        no_perf.perf_unavailable(),
        Some(PerfError::NotRequested)
    ));

    let t = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(thread_faults().expect("getrusage"));
    }
    let rusage = t.elapsed().as_nanos() / u128::from(CALLS);

    let perf = PerfFaults::open(PerfScope::UserOnly).ok().map(|mut p| {
        let t = Instant::now();
        for _ in 0..CALLS {
            std::hint::black_box(p.read().expect("perf read"));
        }
        t.elapsed().as_nanos() / u128::from(CALLS)
    });

    let mut stats = KvmStats::from_vcpu(&g.vcpu).expect("stats fd");
    let mut vals = vec![0; stats.len()];
    let t = Instant::now();
    for _ in 0..CALLS {
        stats.read_into(&mut vals).expect("stats read");
        std::hint::black_box(&vals);
    }
    let kvm = t.elapsed().as_nanos() / u128::from(CALLS);

    eprintln!(
        "sample(): {total} ns/call over {CALLS} calls, {without_perf} ns without perf (getrusage {rusage} ns, perf read {perf:?} ns, \
         KVM stats pread {kvm} ns for {} stats)",
        stats.len()
    );
}
