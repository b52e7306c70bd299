//! `report --html` in a real browser: headless Chromium loads the page of
//! the quickstart recording (tiny-fp, the suite's shared one-run
//! recording) with `?s=start_kernel`, and the DOM it dumps must show the
//! headline, the tables, the flame chart, the layout, the console log, the
//! flamegraph with the search's result; Chromium's log must have no console
//! message (no script error); a screenshot must be taken; and a search for
//! a console line (`?s=Run /init`) must mark it in the console log.
//! `BOOTTRACE_KEEP_HTML=DIR` keeps the page, DOM and screenshot.

mod common;

use std::path::{Path, PathBuf};

use common::chromium::Headless;
use common::{boottrace, standard_recording, text};

#[test]
fn html_report_renders_searches_and_has_no_script_errors() {
    // Fails with its reason when there is no Chromium (project rule).
    let browser = Headless::new(5000);
    let (trace, _) = standard_recording("tiny-fp");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    let out = boottrace(&["report", "-i", &s(&trace), "--html", &s(&page)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "the page goes to the file only");
    let html = std::fs::read_to_string(&page).expect("page");
    // Self-contained: nothing is loaded from anywhere else — no attribute,
    // style or import that fetches a remote resource. (URLs as text — the
    // xmlns declarations, inferno's credits and bug-report message — load
    // nothing.)
    let lower = html.to_ascii_lowercase();
    for load in [
        "src=\"http",
        "src='http",
        "src=\"//",
        "href=\"http",
        "href='http",
        "href=\"//",
        "url(http",
        "url(\"http",
        "url('http",
        "url(//",
        "@import",
    ] {
        assert_eq!(lower.matches(load).count(), 0, "{load} in the page");
    }

    let url = format!("file://{}?s=start_kernel", page.display());
    let shown = browser.dump_dom(&url);
    let (dom, log) = (shown.stdout, shown.log);
    let png = dir.path().join("report.png");
    let size = browser.screenshot(&url, &png, 1280, 2400);
    if let Some(keep) = std::env::var_os("BOOTTRACE_KEEP_HTML") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("mkdir");
        std::fs::copy(&page, keep.join("report.html")).expect("copy");
        std::fs::write(keep.join("report.dom.html"), &dom).expect("dom");
        let _ = std::fs::copy(&png, keep.join("report.png"));
    }

    // No script error or other console message.
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    // What is on the page: headline, tables, console log, flamegraph.
    for want in [
        "boot time (median)",
        "Kernel phases",
        "Initcalls",
        "Top functions by self time",
        "Host page faults by function",
        "Console (host time",
        "Run /init as init process",
        "Flame chart (run ",
        "VMM phases",
        "Layout (where the kernel ran)",
        "Sampler cost",
    ] {
        assert!(dom.contains(want), "{want} not on the page");
    }
    let rects = dom.matches("<rect").count();
    assert!(rects >= 50, "only {rects} flamegraph frames rendered");
    // The search ran from ?s=: inferno reported its match inside the SVG,
    // the page copied it, and the start_kernel phase row is marked.
    let result = regex::Regex::new(r#"id="bt-result">([^<]*)<"#).expect("regex");
    let shown = result
        .captures(&dom)
        .map(|c| c[1].to_string())
        .expect("no search result");
    assert!(shown.contains("flamegraph: Matched:"), "{shown}");
    assert!(
        dom.contains(r#"<tr data-name="start_kernel" class="hit">"#),
        "start_kernel row not marked"
    );
    assert!(
        dom.contains("rgb(230,0,230)"),
        "no frame in the search colour"
    );
    assert!(size > 20_000, "screenshot of {size} bytes");

    // The same search box searches the console log: a console line is
    // marked, and the count includes it.
    let url = format!("file://{}?s=Run%20%2Finit", page.display());
    let dom = browser.dump_dom(&url).stdout;
    let line =
        regex::Regex::new(r#"<span data-line="" class="hit">[^<]*Run /init as init process"#)
            .expect("regex");
    assert!(line.is_match(&dom), "console line not marked by the search");
    let count = regex::Regex::new(r#"id="bt-result">([0-9]+) table rows and console lines match"#)
        .expect("regex");
    let n: u32 = count
        .captures(&dom)
        .and_then(|c| c[1].parse().ok())
        .expect("no search count");
    assert!(n >= 1, "{n} matches");
}
