//! The report as JSON: the document of [`crate::analysis::doc`] (its schema
//! is documented there), pretty-printed, one trailing newline.

use std::io::Write;

use anyhow::Context;

use crate::analysis::doc::ReportDoc;

/// Writes `report` as pretty JSON followed by a newline.
pub fn write(report: &ReportDoc, mut out: impl Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut out, report).context("cannot encode the report")?;
    out.write_all(b"\n").context("writing the report")?;
    Ok(())
}
