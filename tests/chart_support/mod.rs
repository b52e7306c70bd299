//! Opening a chart SVG in headless Chromium (shared by the sweep tests):
//! the DOM it parsed and a screenshot, so a test can see that the browser
//! read the file as SVG without an XML error and drew something.
#![allow(dead_code)]

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

fn run(bin: &Path, profile: &Path, args: &[String], limit: Duration) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What Chromium made of an SVG file.
pub struct Opened {
    /// The DOM after loading.
    pub dom: String,
    /// Size of a 1600×500 screenshot, bytes.
    pub png_bytes: u64,
}

/// Loads `svg` in headless Chromium: its DOM and a screenshot.
pub fn open(svg: &Path) -> Opened {
    let bin = chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("profile");
    let url = format!("file://{}", svg.canonicalize().expect("svg path").display());
    let dom = run(
        &bin,
        &profile,
        &["--dump-dom".into(), url.clone()],
        Duration::from_secs(120),
    );
    let png = dir.path().join("chart.png");
    run(
        &bin,
        &profile,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1600,500".into(),
            url,
        ],
        Duration::from_secs(120),
    );
    Opened {
        dom,
        png_bytes: std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0),
    }
}

/// Asserts Chromium read `svg` as a well-formed SVG that shows every one
/// of `labels` and drew a picture.
pub fn assert_chart_opens(svg: &Path, labels: &[&str]) {
    let o = open(svg);
    let name = svg.display();
    assert!(
        o.dom.contains("<svg"),
        "{name}: no SVG in the DOM: {:.300}",
        o.dom
    );
    // An XML error makes Chromium show its error page instead of the picture.
    assert!(
        !o.dom.contains("parsererror") && !o.dom.contains("following errors"),
        "{name}: Chromium found XML errors: {:.500}",
        o.dom
    );
    for l in labels {
        let shown = l.replace('&', "&amp;").replace('"', "&quot;");
        assert!(
            o.dom.contains(l) || o.dom.contains(&shown),
            "{name}: label {l:?} not in the DOM"
        );
    }
    assert!(
        o.dom.matches("<rect").count() >= 2 * labels.len(),
        "{name}: too few bars drawn"
    );
    // A blank 1600×500 page is a few KB; axes, bars and text are more.
    assert!(
        o.png_bytes > 12_000,
        "{name}: screenshot is {} bytes",
        o.png_bytes
    );
}
