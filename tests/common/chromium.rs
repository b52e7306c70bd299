//! Headless Chromium for the tests that open what boottrace drew (the
//! flamegraph, `report --html`, sweep charts) in a real browser: one
//! driver, the same flags everywhere, and a hard time limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary in PATH; a test that needs it fails without it
/// (project rule: a test that cannot run fails with its reason).
pub fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(move |dir| dir.join(name))
        })
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("cannot run: no chromium in PATH (apt-get install chromium)"))
}

/// The longest a test waits for one Chromium process.
pub const LIMIT: Duration = Duration::from_secs(120);

/// One headless Chromium profile: each [`Headless::run`] starts the browser
/// on it with the given virtual-time budget (how long, in page time, the
/// page's scripts may run before Chromium dumps or shoots it).
pub struct Headless {
    bin: PathBuf,
    profile: tempfile::TempDir,
    budget_ms: u32,
}

/// What one Chromium process printed.
pub struct Shown {
    /// stdout: the DOM with `--dump-dom`.
    pub stdout: String,
    /// stderr: Chromium's log (page console messages are `CONSOLE` lines).
    pub log: String,
}

impl Headless {
    /// A fresh profile; pages get `budget_ms` of virtual time.
    pub fn new(budget_ms: u32) -> Headless {
        Headless {
            bin: chromium(),
            profile: tempfile::tempdir().expect("chromium profile dir"),
            budget_ms,
        }
    }

    /// Runs Chromium with `args` (e.g. `--dump-dom URL`), killed and the
    /// test failed after [`LIMIT`]. Output goes to files, not pipes, so a
    /// large DOM cannot fill a pipe and stall the browser.
    pub fn run(&self, args: &[String]) -> Shown {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--virtual-time-budget={}", self.budget_ms))
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&out_path).expect("out")))
            .stderr(Stdio::from(std::fs::File::create(&err_path).expect("err")))
            .spawn()
            .expect("start chromium");
        let deadline = Instant::now() + LIMIT;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Shown {
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            log: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    /// The DOM of `url` after its scripts ran, and Chromium's log.
    pub fn dump_dom(&self, url: &str) -> Shown {
        self.run(&["--dump-dom".into(), url.into()])
    }

    /// A `width`×`height` screenshot of `url` to `png`; its size in bytes
    /// (0 when none was written).
    pub fn screenshot(&self, url: &str, png: &Path, width: u32, height: u32) -> u64 {
        self.run(&[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ]);
        std::fs::metadata(png).map(|m| m.len()).unwrap_or(0)
    }
}
