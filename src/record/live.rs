//! The live progress line while a boot runs: a ticker thread reads the
//! run's counters a few times a second and hands a [`LiveState`] to the
//! caller's [`LiveStatus`] (the command line draws one terminal line). The
//! guest cannot slow it down: it only reads atomics and a short phase list.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sample::sampler::{
    CostTotals, REGION_DECOMPRESSOR, REGION_KERNEL, REGION_SETUP, REGION_USER,
};

/// What the live line shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveState {
    /// Run number, from 1.
    pub run: u32,
    /// Runs asked for.
    pub runs: u32,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Samples so far in this run.
    pub samples: u64,
    /// The furthest the boot got: the code sampled (decompressor, kernel,
    /// user mode), else the VMM's last phase.
    pub phase: String,
}

impl LiveState {
    /// The line: `run 2/5  12.3 s  4,210 samples  kernel`.
    pub fn line(&self) -> String {
        format!(
            "run {}/{}  {:.1} s  {} samples  {}",
            self.run,
            self.runs,
            self.elapsed.as_secs_f64(),
            self.samples,
            self.phase
        )
    }
}

/// Shows [`LiveState`]s as they come (from the ticker thread).
pub trait LiveStatus: Send + Sync {
    /// The state now.
    fn update(&self, state: &LiveState);
    /// The run is over: take the line away.
    fn clear(&self);
}

/// How often the line is refreshed.
pub const TICK: Duration = Duration::from_millis(250);

/// The name of a region code of [`CostTotals::reached`].
pub fn region_name(code: u8) -> Option<&'static str> {
    match code {
        REGION_SETUP => Some("setup code"),
        REGION_DECOMPRESSOR => Some("decompressor"),
        REGION_KERNEL => Some("kernel"),
        REGION_USER => Some("user mode"),
        _ => None,
    }
}

/// A running ticker; [`Ticker::stop`] ends it and clears the line.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking for run `run` (from 0) of `runs`, started at `t0`;
    /// `vmm_phase` gives the VMM's last phase (shown until code is sampled).
    pub fn start(
        live: Arc<dyn LiveStatus>,
        run: u32,
        runs: u32,
        t0: Instant,
        totals: Arc<CostTotals>,
        vmm_phase: Box<dyn Fn() -> Option<String> + Send>,
    ) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let handle = std::thread::Builder::new()
            .name("live".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    let reached = totals.reached.load(Ordering::Relaxed);
                    let phase = match region_name(reached) {
                        Some(r) => r.to_string(),
                        None => vmm_phase().unwrap_or_else(|| "starting".to_string()),
                    };
                    live.update(&LiveState {
                        run: run + 1,
                        runs,
                        elapsed: t0.elapsed(),
                        samples: totals.samples.load(Ordering::Relaxed),
                        phase,
                    });
                    std::thread::sleep(TICK);
                }
                live.clear();
            })
            .ok();
        Ticker { stop, handle }
    }

    /// Stops the ticker and waits for it (at most one tick).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Option<LiveState>>>);

    impl LiveStatus for Collect {
        fn update(&self, s: &LiveState) {
            if let Ok(mut v) = self.0.lock() {
                v.push(Some(s.clone()));
            }
        }
        fn clear(&self) {
            if let Ok(mut v) = self.0.lock() {
                v.push(None);
            }
        }
    }

    #[test]
    fn ticker_reports_samples_and_the_furthest_region_then_clears() {
        let live = Arc::new(Collect::default());
        let totals = Arc::new(CostTotals::default());
        totals.samples.store(42, Ordering::Relaxed);
        let phase = Box::new(|| Some("first_instruction".to_string()));
        let t = Ticker::start(live.clone(), 1, 3, Instant::now(), totals.clone(), phase);
        std::thread::sleep(TICK / 2);
        t.stop();
        let got = live.0.lock().expect("lock").clone();
        let first = got.first().cloned().flatten().expect("an update");
        assert_eq!(first.phase, "first_instruction", "no code sampled yet");

        let live = Arc::new(Collect::default());
        totals.reached.store(REGION_KERNEL, Ordering::Relaxed);
        let phase = Box::new(|| None);
        let t = Ticker::start(live.clone(), 1, 3, Instant::now(), totals, phase);
        std::thread::sleep(TICK / 2);
        t.stop();
        let got = live.0.lock().expect("lock").clone();
        let first = got.first().cloned().flatten().expect("an update");
        assert_eq!((first.run, first.runs, first.samples), (2, 3, 42));
        assert_eq!(first.phase, "kernel");
        assert!(first.line().starts_with("run 2/3  "), "{}", first.line());
        assert_eq!(got.last(), Some(&None), "the line is cleared at the end");
    }
}
