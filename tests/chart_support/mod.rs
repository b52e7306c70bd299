//! Opening a chart SVG in headless Chromium (shared by the sweep tests):
//! the DOM it parsed and a screenshot, so a test can see that the browser
//! read the file as SVG without an XML error and drew something. Drives
//! Chromium through `common::chromium` (a test using this module declares
//! `mod common;` too).
#![allow(dead_code)]

use std::path::Path;

use crate::common::chromium::Headless;

/// What Chromium made of an SVG file.
pub struct Opened {
    /// The DOM after loading.
    pub dom: String,
    /// Size of a 1600×500 screenshot, bytes.
    pub png_bytes: u64,
}

/// Loads `svg` in headless Chromium: its DOM and a screenshot.
pub fn open(svg: &Path) -> Opened {
    let browser = Headless::new(3000);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", svg.canonicalize().expect("svg path").display());
    let dom = browser.dump_dom(&url).stdout;
    let png_bytes = browser.screenshot(&url, &dir.path().join("chart.png"), 1600, 500);
    Opened { dom, png_bytes }
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
