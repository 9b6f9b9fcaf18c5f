//! Results: the readable table, JUnit XML, JSON, and the closing summary line.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::context::Area;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub id: String,
    pub area: Area,
    pub about: String,
    pub status: Status,
    /// Why it failed or was skipped.
    pub message: Option<String>,
    /// The expected-results file lists it, with this reason.
    pub expected: Option<String>,
    pub duration: Duration,
}

impl CheckResult {
    /// A failure nobody expected: this is what makes the run red.
    pub fn is_unexpected_failure(&self) -> bool {
        self.status == Status::Fail && self.expected.is_none()
    }

    pub fn is_expected_failure(&self) -> bool {
        self.status == Status::Fail && self.expected.is_some()
    }

    /// Listed as expected to fail, yet passed: the expected file is stale.
    pub fn is_fixed(&self) -> bool {
        self.status == Status::Pass && self.expected.is_some()
    }

    fn label(&self) -> &'static str {
        match self.status {
            Status::Pass if self.expected.is_some() => "XPASS",
            Status::Pass => "PASS",
            Status::Fail if self.expected.is_some() => "XFAIL",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }

    fn status_name(&self) -> &'static str {
        match self.status {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub expected_failures: usize,
    pub unexpected_failures: usize,
    pub fixed: usize,
}

impl Summary {
    pub fn of(results: &[CheckResult]) -> Self {
        let mut s = Summary::default();
        for r in results {
            match r.status {
                Status::Pass => s.passed += 1,
                Status::Fail => s.failed += 1,
                Status::Skip => s.skipped += 1,
            }
            s.expected_failures += usize::from(r.is_expected_failure());
            s.unexpected_failures += usize::from(r.is_unexpected_failure());
            s.fixed += usize::from(r.is_fixed());
        }
        s
    }

    /// The last line of every run, exactly this shape. A failure the expected file
    /// lists (a documented gap of that registry) is counted with the skipped checks, so
    /// "failed" counts exactly what makes the run red.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed,
            self.unexpected_failures,
            self.skipped + self.expected_failures
        )
    }
}

/// The readable table, grouped by area, without the summary line.
pub fn table(results: &[CheckResult]) -> String {
    let width = results.iter().map(|r| r.id.len()).max().unwrap_or(0);
    let mut out = String::new();
    for area in Area::ALL {
        let in_area: Vec<&CheckResult> = results.iter().filter(|r| r.area == area).collect();
        if in_area.is_empty() {
            continue;
        }
        let s = Summary::of(&in_area.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
        let _ = writeln!(
            out,
            "\n{area} ({} checks: {} passed, {} failed, {} skipped)",
            in_area.len(),
            s.passed,
            s.failed,
            s.skipped
        );
        for r in in_area {
            let detail = match (r.status, &r.message, &r.expected) {
                (Status::Pass, _, Some(_)) => {
                    "listed as expected to fail, but passes: remove it from the expected file"
                        .to_owned()
                }
                (Status::Pass, _, None) => String::new(),
                (Status::Fail, Some(m), Some(why)) => format!("{m} [expected: {why}]"),
                (_, Some(m), _) => m.clone(),
                (_, None, _) => String::new(),
            };
            let row = format!("  {:<5}  {:<width$}  {detail}", r.label(), r.id);
            let _ = writeln!(out, "{}", row.trim_end());
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML, one test suite per area. An expected failure is written as
/// `<skipped>` (JUnit has no "expected failure"), so CI dashboards stay as
/// green as the exit status.
pub fn junit(results: &[CheckResult], registry: &str) -> String {
    let total = Summary::of(results);
    let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let all_time: Duration = results.iter().map(|r| r.duration).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"signet-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{}\">",
        results.len(),
        total.unexpected_failures,
        total.skipped + total.expected_failures,
        secs(all_time)
    );
    for area in Area::ALL {
        let rs: Vec<&CheckResult> = results.iter().filter(|r| r.area == area).collect();
        if rs.is_empty() {
            continue;
        }
        let failures = rs.iter().filter(|r| r.is_unexpected_failure()).count();
        let skipped = rs
            .iter()
            .filter(|r| r.status == Status::Skip || r.is_expected_failure())
            .count();
        let time: Duration = rs.iter().map(|r| r.duration).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{area}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">",
            rs.len(),
            secs(time)
        );
        let _ = writeln!(
            out,
            "    <properties><property name=\"registry\" value=\"{}\"/></properties>",
            xml_escape(registry)
        );
        for r in rs {
            let _ = write!(
                out,
                "    <testcase classname=\"{area}\" name=\"{}\" time=\"{}\"",
                xml_escape(&r.id),
                secs(r.duration)
            );
            let msg = xml_escape(r.message.as_deref().unwrap_or(""));
            match (r.status, &r.expected) {
                (Status::Fail, None) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{msg}\">{}: {msg}</failure>\n    </testcase>",
                        xml_escape(&r.about)
                    );
                }
                (Status::Fail, Some(why)) => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"expected failure: {}; {msg}\"/>\n    </testcase>",
                        xml_escape(why)
                    );
                }
                (Status::Skip, _) => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{msg}\"/>\n    </testcase>"
                    );
                }
                (Status::Pass, Some(_)) => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>listed as an expected failure, but passes</system-out>\n    </testcase>"
                    );
                }
                (Status::Pass, None) => {
                    let _ = writeln!(out, "/>");
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// The JSON report.
pub fn json(results: &[CheckResult], registry: &str, run_id: &str) -> serde_json::Value {
    let s = Summary::of(results);
    json!({
        "registry": registry,
        "run": run_id,
        "summary": {
            "passed": s.passed,
            "failed": s.failed,
            "skipped": s.skipped,
            "expected_failures": s.expected_failures,
            "unexpected_failures": s.unexpected_failures,
            "expected_failures_now_passing": s.fixed,
        },
        "checks": results.iter().map(|r| json!({
            "id": r.id,
            "area": r.area.name(),
            "description": r.about,
            "status": r.status_name(),
            "message": r.message,
            "expected_failure": r.expected,
            "duration_ms": r.duration.as_millis() as u64,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, status: Status, expected: Option<&str>) -> CheckResult {
        CheckResult {
            id: id.into(),
            area: Area::Pull,
            about: "about <this>".into(),
            status,
            message: (status != Status::Pass).then(|| "got 500 & \"x\"".into()),
            expected: expected.map(str::to_owned),
            duration: Duration::from_millis(5),
        }
    }

    #[test]
    fn summary_counts_and_line() {
        let rs = vec![
            result("pull.a", Status::Pass, None),
            result("pull.b", Status::Fail, Some("known")),
            result("pull.c", Status::Fail, None),
            result("pull.d", Status::Skip, None),
            result("pull.e", Status::Pass, Some("was broken")),
        ];
        let s = Summary::of(&rs);
        assert_eq!(s.line(), "2 passed, 1 failed, 2 skipped");
        assert_eq!(
            (s.expected_failures, s.unexpected_failures, s.fixed),
            (1, 1, 1)
        );
    }

    #[test]
    fn junit_escapes_and_marks_expected_failures_skipped() {
        let rs = vec![
            result("pull.b", Status::Fail, Some("known")),
            result("pull.c", Status::Fail, None),
        ];
        let x = junit(&rs, "http://r");
        assert!(x.contains("&amp; &quot;x&quot;"));
        assert!(x.contains("<skipped message=\"expected failure: known;"));
        assert!(x.contains("failures=\"1\""));
        assert!(!x.contains("<this>"));
    }
}
