//! `report --html` in a real browser: headless Chromium loads the page of
//! the quickstart recording (tiny-fp, the suite's shared one-run
//! recording) with `?s=start_kernel`, and the DOM it dumps must show the
//! headline, the tables, the console log, the flamegraph with the search's
//! result; Chromium's log must have no console message (no script error);
//! a screenshot must be taken. `BOOTTRACE_KEEP_HTML=DIR` keeps the page,
//! DOM and screenshot (how flamegraphs/report.html is made).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{boottrace, kernel_dir, shared_recording, text};

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

/// Runs chromium with `args`, killing it after `limit`; returns (stdout, stderr).
fn run_chromium(bin: &Path, profile: &Path, args: &[String], limit: Duration) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&out_path).expect("out")))
        .stderr(Stdio::from(std::fs::File::create(&err_path).expect("err")))
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
    (
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

#[test]
fn html_report_renders_searches_and_has_no_script_errors() {
    let Some(bin) = chromium() else {
        panic!("cannot run: no chromium in PATH (apt-get install chromium)");
    };
    let k = kernel_dir("tiny-fp");
    let (bz, init) = (k.join("bzImage"), k.join("initramfs.cpio"));
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let (trace, _) = shared_recording(&[
        &s(&bz),
        "--initrd",
        &s(&init),
        "-F",
        "1000",
        "--timeout",
        "900",
    ]);
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
    let profile = dir.path().join("chromium-profile");
    let (dom, log) = run_chromium(
        &bin,
        &profile,
        &["--dump-dom".into(), url.clone()],
        Duration::from_secs(120),
    );
    let png = dir.path().join("report.png");
    run_chromium(
        &bin,
        &profile,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,2400".into(),
            url,
        ],
        Duration::from_secs(120),
    );
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
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "screenshot of {size} bytes");
}
