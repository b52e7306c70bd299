//! The flamegraph SVG in a real browser: headless Chromium loads it with
//! `?s=start_kernel` (inferno's script restores a search from the URL on
//! load), and the DOM it dumps afterwards must show the frames and the
//! search's result. Skipped, with a message, when no Chromium is installed.
//! Set `BOOTTRACE_KEEP_SVG=DIR` to keep the SVG, DOM and a screenshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boottrace::analysis::fold::Weight;
use boottrace::profile::symbols::SymbolConfig;
use boottrace::render::flame::{self, FlameConfig};
use boottrace::trace::synth::{self, SynthOptions};

/// inferno's default search highlight colour.
const SEARCH_FILL: &str = "rgb(230,0,230)";

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(move |dir| dir.join(name))
        })
        .find(|p| p.is_file())
}

/// Runs chromium with `args`, killing it after `limit`; returns stdout.
fn run_chromium(bin: &Path, profile: &Path, args: &[String], limit: Duration) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn svg_renders_and_search_finds_start_kernel() {
    // Project rule: a test that cannot run fails with its reason.
    let Some(bin) = chromium() else {
        panic!("cannot run: no chromium in PATH (apt-get install chromium)");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("boottrace.data");
    synth::write(&trace, &SynthOptions::default()).expect("trace");
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map()).expect("map");
    let svg = dir.path().join("flame.svg");
    flame::run(&FlameConfig {
        output: svg.clone(),
        input: trace,
        weight: Weight::Samples,
        chart: false,
        run: None,
        width: 1200,
        by_task: false,
        extra_inputs: Vec::new(),
        allow_mixed: false,
        symbols: SymbolConfig {
            system_map: Some(map),
            ..SymbolConfig::default()
        },
    })
    .expect("flame");
    let url = format!("file://{}?s=start_kernel", svg.display());
    let profile = dir.path().join("chromium-profile");
    let dom = run_chromium(
        &bin,
        &profile,
        &["--dump-dom".into(), url.clone()],
        Duration::from_secs(120),
    );
    let png = dir.path().join("flame.png");
    run_chromium(
        &bin,
        &profile,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1200,700".into(),
            url,
        ],
        Duration::from_secs(120),
    );
    if let Some(keep) = std::env::var_os("BOOTTRACE_KEEP_SVG") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("mkdir");
        std::fs::copy(&svg, keep.join("flame.svg")).expect("copy svg");
        std::fs::write(keep.join("flame.dom.html"), &dom).expect("dom");
        let _ = std::fs::copy(&png, keep.join("flame.png"));
    }

    assert!(
        dom.contains("<svg"),
        "no SVG in the dumped DOM: {:.300}",
        dom
    );
    // Frames were laid out: one <g> per frame with a title and a rect.
    let frames = dom.matches("<rect").count();
    assert!(frames >= 15, "only {frames} rects rendered");
    // inferno's search ran (from `?s=`): it reports the matched share and
    // repaints the matching frames in the search colour.
    let matched = regex::Regex::new(r#"id="matched"[^>]*>Matched: ([0-9.]+)%<"#).expect("regex");
    let pct: f64 = matched
        .captures(&dom)
        .and_then(|c| c[1].parse().ok())
        .expect("search did not report a match");
    assert!(pct > 50.0, "start_kernel matched only {pct}%");
    let re = regex::Regex::new(r#"<title>start_kernel \([^<]*</title><rect[^>]*? fill="([^"]+)""#)
        .expect("regex");
    let fills: Vec<String> = re.captures_iter(&dom).map(|c| c[1].to_string()).collect();
    assert!(!fills.is_empty(), "start_kernel frame not in the DOM");
    assert!(
        fills.iter().all(|f| f == SEARCH_FILL),
        "start_kernel not highlighted: {fills:?}"
    );
    // Frames that do not match keep their own colours.
    assert!(dom.matches(SEARCH_FILL).count() < frames);
    // The screenshot shows a picture, not a blank page (a blank PNG is a few KB).
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 15_000, "screenshot is {size} bytes");
}
