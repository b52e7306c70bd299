//! The flamegraph SVG in a real browser: headless Chromium loads it with
//! `?s=start_kernel` (inferno's script restores a search from the URL on
//! load), and the DOM it dumps afterwards must show the frames and the
//! search's result. Fails, with its reason, when no Chromium is installed.
//! Set `BOOTTRACE_KEEP_SVG=DIR` to keep the SVG, DOM and a screenshot.

mod common;

use std::path::PathBuf;

use boottrace::analysis::fold::Weight;
use boottrace::profile::symbols::SymbolConfig;
use boottrace::render::flame::{self, FlameConfig};
use boottrace::trace::synth::{self, SynthOptions};
use common::chromium::Headless;

/// inferno's default search highlight colour.
const SEARCH_FILL: &str = "rgb(230,0,230)";

#[test]
fn svg_renders_and_search_finds_start_kernel() {
    // Fails with its reason when there is no Chromium (project rule).
    let browser = Headless::new(5000);
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
    let dom = browser.dump_dom(&url).stdout;
    let png = dir.path().join("flame.png");
    let size = browser.screenshot(&url, &png, 1200, 700);
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
    assert!(size > 15_000, "screenshot is {size} bytes");
}
