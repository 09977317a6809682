//! `--report FILE.html`: the run as one self-contained HTML page. This module owns the page and its
//! charts, drawn with `plotters` to SVG and inlined (no scripts, no style sheets or fonts fetched,
//! no images to load): attempts, units sold and p50/p99 latency per second of the run (from the
//! [`Timeline`]), the outcomes, and the `--compare` contenders; above them the headline figures.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::{CHECKOUT, Report, Timeline};

/// Width of every chart, pixels (the page scales them down on a narrow screen).
const WIDTH: u32 = 900;
/// Height of a chart over the run's time, pixels.
const HEIGHT: u32 = 320;
/// The first series' colour.
const FIRST: RGBColor = RGBColor(31, 119, 180);
/// The second series' colour.
const SECOND: RGBColor = RGBColor(214, 39, 40);
/// The fine grid lines.
const GRID: RGBColor = RGBColor(238, 238, 238);
/// Axis labels and captions.
const FONT: &str = "sans-serif";

/// Writes the page of `report` and its `timeline` to `path`.
pub fn write(path: &Path, report: &Report, timeline: &Timeline) -> anyhow::Result<()> {
    let page = html(report, timeline).context("drawing the HTML report")?;
    std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))
}

/// What the second chart counts: a flash sale's units, or (other scenarios) 2xx answers.
struct Sold {
    /// The headline's name for the total.
    total_name: &'static str,
    /// The chart's title.
    title: &'static str,
    /// The total, from the report.
    total: u64,
    /// Whether the timeline's `sold` (else its `ok`) is the series.
    units: bool,
}

impl Sold {
    fn of(report: &Report) -> Self {
        if report.scenario == "flash-sale" {
            let total = report
                .endpoints
                .get(CHECKOUT)
                .and_then(|e| e.outcomes.get("201"))
                .copied()
                .unwrap_or(0);
            Self {
                total_name: "units sold (checkouts answered 201)",
                title: "Units sold per second (checkouts answered 201)",
                total,
                units: true,
            }
        } else {
            let total = report
                .endpoints
                .values()
                .flat_map(|e| e.outcomes.iter())
                .filter(|(outcome, _)| outcome.starts_with('2'))
                .map(|(_, n)| n)
                .sum();
            Self {
                total_name: "requests answered 2xx",
                title: "Requests answered 2xx per second (all endpoints)",
                total,
                units: false,
            }
        }
    }
}

/// The page of `report` and its `timeline`.
pub fn html(report: &Report, timeline: &Timeline) -> anyhow::Result<String> {
    let sold = Sold::of(report);
    let seconds = &timeline.seconds;
    let count = |f: fn(&crate::stats::Second) -> u64| -> Vec<Option<f64>> {
        seconds.iter().map(|s| Some(f(s) as f64)).collect()
    };
    let quantile = |q: f64| -> Vec<Option<f64>> {
        seconds
            .iter()
            .map(|s| {
                (!s.latency.is_empty()).then(|| s.latency.value_at_quantile(q) as f64 / 1000.0)
            })
            .collect()
    };
    let attempts_chart = over_time(
        "Attempts (iterations ended) per second",
        "per second",
        &[("attempts", count(|s| s.iterations))],
    )?;
    let sold_chart = over_time(
        sold.title,
        "per second",
        &[(
            if sold.units { "units sold" } else { "2xx" },
            if sold.units { count(|s| s.sold) } else { count(|s| s.ok) },
        )],
    )?;
    let latency_chart = over_time(
        "Latency per second (all requests ended in that second)",
        "ms",
        &[("p50", quantile(0.50)), ("p99", quantile(0.99))],
    )?;
    let single = report.endpoints.len() == 1;
    let outcomes: Vec<(String, f64)> = report
        .endpoints
        .iter()
        .flat_map(|(endpoint, e)| {
            e.outcomes.iter().map(move |(outcome, n)| {
                let label = if single { outcome.clone() } else { format!("{endpoint}: {outcome}") };
                (label, *n as f64)
            })
        })
        .collect();
    let outcomes_chart = bars("Outcomes", "requests", &outcomes)?;

    let mut out = String::new();
    let title = format!("storefront-load: {}", report.scenario);
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    )?;
    let mode = match report.rate {
        Some(rate) => format!("open loop at {rate}/s"),
        None => "closed loop".to_owned(),
    };
    // The node URLs are all `http://`; without the scheme the page names no address to fetch.
    let nodes: Vec<&str> =
        report.nodes.iter().map(|n| n.strip_prefix("http://").unwrap_or(n)).collect();
    writeln!(
        out,
        "<p>{} connections, {}, {} node(s) over HTTP: {}; set-up {:.1} s.</p>",
        report.connections,
        escape(&mode),
        nodes.len(),
        escape(&nodes.join(", ")),
        report.setup_s
    )?;

    out += "<table>\n";
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&value));
    };
    row("duration (release to last answer)", format!("{:.3} s", report.duration_s));
    row("attempts (iterations)", report.iterations.to_string());
    row("attempts per second", format!("{:.0}", report.iterations_per_s));
    row(sold.total_name, sold.total.to_string());
    for (endpoint, e) in &report.endpoints {
        row(
            &format!("{endpoint} latency p50 / p95 / p99"),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                e.latency.p50_ms, e.latency.p95_ms, e.latency.p99_ms
            ),
        );
    }
    out += "</table>\n";

    out += "<h2>Over the run</h2>\n";
    let last = report.duration_s - seconds.len().saturating_sub(1) as f64;
    writeln!(
        out,
        "<p>Each point is one whole second since the release ({} in all), counting what ended in \
         it; the last one covers {:.3} s of the run. Latencies per second are read from histograms \
         at 2 significant digits.</p>",
        seconds.len(),
        last.clamp(0.0, 1.0)
    )?;
    figure(&mut out, &attempts_chart);
    figure(&mut out, &sold_chart);
    figure(&mut out, &latency_chart);

    out += "<h2>Outcomes</h2>\n";
    figure(&mut out, &outcomes_chart);
    out += "<table>\n<tr><th>outcome</th><th>requests</th></tr>\n";
    for (label, n) in &outcomes {
        writeln!(out, "<tr><td>{}</td><td>{n}</td></tr>", escape(label))?;
    }
    out += "</table>\n";

    if !report.compare.is_empty() {
        let contenders: Vec<(String, f64)> =
            report.compare.iter().map(|c| (c.name.clone(), c.units_per_s)).collect();
        let compare_chart = bars(
            "The same sale decided by: units sold per second until sold out",
            "units per second",
            &contenders,
        )?;
        out += "<h2>The same sale decided by</h2>\n";
        figure(&mut out, &compare_chart);
        out += "<table>\n<tr><th>contender</th><th>sold</th><th>sold out</th><th>units/s</th>\
                <th>p50 ms</th><th>p99 ms</th></tr>\n";
        for c in &report.compare {
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{:.3} s</td><td>{:.0}</td><td>{:.2}</td>\
                 <td>{:.2}</td></tr>",
                escape(&c.name),
                c.sold,
                c.sold_out_s,
                c.units_per_s,
                c.latency.p50_ms,
                c.latency.p99_ms
            )?;
        }
        out += "</table>\n";
    }

    if !report.checks.is_empty() {
        out += "<h2>Checks</h2>\n<ul>\n";
        for c in &report.checks {
            writeln!(
                out,
                "<li class=\"{}\">[{}] {}: {}</li>",
                if c.ok { "ok" } else { "fail" },
                if c.ok { "ok" } else { "FAIL" },
                escape(&c.name),
                escape(&c.detail)
            )?;
        }
        out += "</ul>\n";
    }
    out += "</body>\n</html>\n";
    Ok(out)
}

/// The page's own style sheet (inline).
const STYLE: &str = "body { font-family: sans-serif; max-width: 960px; margin: 2em auto; \
padding: 0 1em; color: #222; }\n\
table { border-collapse: collapse; margin: 1em 0; }\n\
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }\n\
td { text-align: right; font-variant-numeric: tabular-nums; }\n\
td:first-child { text-align: left; }\n\
figure { margin: 1.5em 0; }\n\
svg { max-width: 100%; height: auto; }\n\
li.fail { color: #b00; font-weight: bold; }\n";

/// Appends `svg` as a figure.
fn figure(out: &mut String, svg: &str) {
    out.push_str("<figure>\n");
    out.push_str(svg);
    out.push_str("</figure>\n");
}

/// `text` safe in HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `value` with at most two decimals and none that are zero: `50`, `1.5`, `0.25`.
fn number(value: &f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

/// A chart of `series` (name, value per second or none) over the seconds of the run; points of
/// consecutive seconds are joined, a second without a value leaves a gap.
fn over_time(
    title: &str,
    y_desc: &str,
    series: &[(&str, Vec<Option<f64>>)],
) -> anyhow::Result<String> {
    let seconds = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0).max(1);
    let top = series.iter().flat_map(|(_, v)| v.iter().flatten()).fold(0.0, |a: f64, &b| a.max(b));
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..seconds as f64, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the release")
            .y_desc(y_desc)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_labels(seconds.min(20) + 1)
            .x_label_formatter(&number)
            .y_label_formatter(&number)
            .light_line_style(GRID)
            .draw()?;
        for (k, (name, values)) in series.iter().enumerate() {
            let color = if k == 0 { FIRST } else { SECOND };
            // Runs of consecutive seconds with a value; each point at the middle of its second.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for (i, value) in values.iter().enumerate() {
                match (value, runs.last_mut()) {
                    (Some(v), Some(run)) => run.push((i as f64 + 0.5, *v)),
                    (None, Some(run)) if !run.is_empty() => runs.push(Vec::new()),
                    _ => {}
                }
            }
            let points: Vec<(f64, f64)> = runs.iter().flatten().copied().collect();
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            for run in runs.into_iter().filter(|r| r.len() > 1) {
                chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
            }
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 15))
                .draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// A horizontal bar chart of `bars` (label, value), the first at the top, each with its value.
fn bars(title: &str, x_desc: &str, bars: &[(String, f64)]) -> anyhow::Result<String> {
    let n = bars.len() as u32;
    let height = 110 + 30 * n.max(1);
    let longest = bars.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
    let label_area = (longest as u32 * 8 + 16).clamp(60, 460);
    let top = bars.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    // Bar `i` sits in segment `n - 1 - i`: segments count from the bottom. The axis has one more
    // (empty) segment above the bars: plotters draws an axis of a single value as a single point.
    let row = |i: usize| n.saturating_sub(1).saturating_sub(i as u32);
    let label_of = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(s) if *s < n => {
            bars.get((n - 1 - *s) as usize).map(|(label, _)| label.clone()).unwrap_or_default()
        }
        _ => String::new(),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(label_area)
            .build_cartesian_2d(0.0..top, (0..n.max(1)).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(GRID)
            .x_desc(x_desc)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .x_label_formatter(&number)
            .y_labels(bars.len() + 1)
            .y_label_formatter(&label_of)
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
            let s = row(i);
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(s)), (*value, SegmentValue::Exact(s + 1))],
                FIRST.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))?;
        let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
            EmptyElement::at((*value, SegmentValue::CenterOf(row(i))))
                + Text::new(number(value), (6, 0), style.clone())
        }))?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{Check, Contender, Latency, Stats};

    /// A flash sale of 3 seconds: 201s, out-of-stock 409s and one odd label to escape.
    fn sale(compare: bool) -> (Report, Stats) {
        let mut stats = Stats::default();
        let odd = "error: <odd> & \"quoted\" 'label'";
        for i in 0..300u64 {
            let at = Duration::from_millis(i * 10);
            let outcome = match i {
                0..100 => "201",
                100..299 => "409 /problems/out-of-stock",
                _ => odd,
            };
            stats.record(CHECKOUT, outcome.to_owned(), Duration::from_micros(500 + i * 20), at);
            stats.timeline.add_ended(&mut vec![(Timeline::index(at), 1)]);
        }
        let elapsed = Duration::from_millis(2_995);
        let latency = Latency { p50_ms: 1.0, p95_ms: 2.0, p99_ms: 3.0, max_ms: 4.0 };
        let contender = |name: &str, units_per_s| Contender {
            name: name.to_owned(),
            attempts: 300,
            sold: 100,
            attempts_per_s: 100.0,
            sold_out_s: 1.0,
            units_per_s,
            latency: latency.clone(),
            http_ratio: None,
            engine_ratio: None,
        };
        let report = Report {
            scenario: "flash-sale",
            mode: "closed",
            rate: None,
            connections: 8,
            nodes: vec!["http://127.0.0.1:8080".to_owned()],
            setup_s: 0.5,
            duration_s: elapsed.as_secs_f64(),
            iterations: 300,
            iterations_per_s: 100.0,
            endpoints: Report::endpoints(&stats, elapsed),
            checks: vec![Check::new("sold <= stock", true, "100 of 100")],
            compare: if compare {
                vec![contender("Storefront over HTTP (this run)", 100.0), contender("Redis", 50.0)]
            } else {
                Vec::new()
            },
            server_memory: None,
        };
        (report, stats)
    }

    #[test]
    fn report_has_a_chart_each_and_the_escaped_labels_and_fetches_nothing() {
        for (compare, charts) in [(true, 5), (false, 4)] {
            let (report, stats) = sale(compare);
            let page = html(&report, &stats.timeline).unwrap();
            assert_eq!(page.matches("<svg").count(), charts, "compare {compare}");
            assert_eq!(page.matches("</svg>").count(), charts);
            assert!(page.contains("<td>201</td><td>100</td>"));
            assert!(page.contains("<td>409 /problems/out-of-stock</td><td>199</td>"));
            assert!(page.contains("error: &lt;odd&gt; &amp; &quot;quoted&quot; &#39;label&#39;"));
            assert!(!page.contains("<odd>"));
            let outside = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!outside.contains("http://") && !outside.contains("https://"));
            for fetching in ["<script", "<link", "<img", "src=", "href=", "url(", "@import"] {
                assert!(!page.contains(fetching), "{fetching}");
            }
            assert_eq!(page.contains("The same sale decided by"), compare);
        }
    }

    #[test]
    fn report_timeline_buckets_by_whole_second() {
        let (_, stats) = sale(false);
        let seconds = &stats.timeline.seconds;
        assert_eq!(seconds.len(), 3);
        let per = |f: fn(&crate::stats::Second) -> u64| seconds.iter().map(f).collect::<Vec<_>>();
        assert_eq!(per(|s| s.iterations), [100, 100, 100]);
        assert_eq!(per(|s| s.requests), [100, 100, 100]);
        assert_eq!(per(|s| s.sold), [100, 0, 0]);
        assert_eq!(per(|s| s.ok), [100, 0, 0]);
        let outcomes: u64 = stats.endpoints.values().flat_map(|e| e.outcomes.values()).sum();
        assert_eq!(outcomes, 300);
        assert!(
            seconds[2].latency.value_at_quantile(0.5) > seconds[0].latency.value_at_quantile(0.5)
        );
    }

    #[test]
    fn report_numbers_drop_zero_decimals() {
        let numbers: Vec<String> = [50.0, 1.5, 0.25, 0.0, 1234.567].iter().map(number).collect();
        assert_eq!(numbers, ["50", "1.5", "0.25", "0", "1234.57"]);
    }

    #[test]
    fn report_escapes_the_five_characters() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
