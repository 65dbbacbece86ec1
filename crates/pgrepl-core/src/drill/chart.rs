//! A run as a picture, for a class or an incident review: acknowledged commits per 100 ms
//! above, each standby's replay lag below, on one time axis, with the event and the outage
//! marked. SVG and PNG from the same drawing code.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::drill::{DrillReport, Trace};
use crate::error::{Error, Result};

/// DejaVu Sans, shipped inside the binary so that charts have text on any machine (its
/// license is in assets/DejaVuSans-LICENSE.txt).
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1280, 800);

const COMMITS: RGBColor = RGBColor(31, 119, 180);
const EVENT: RGBColor = RGBColor(214, 39, 40);
const RESUMED: RGBColor = RGBColor(44, 160, 44);
/// One colour per standby, in node order.
const LINES: [RGBColor; 6] = [
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is ours and valid; a failure here would only mean text-free charts.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Draws `trace` into `path`, as SVG or PNG by its extension.
pub fn draw(report: &DrillReport, trace: &Trace, path: &Path) -> Result<()> {
    register();
    let failed = |e: String| Error::Command {
        what: format!("drawing {}", path.display()),
        detail: e,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => plot(
            SVGBackend::new(path, SIZE).into_drawing_area(),
            report,
            trace,
        )
        .map_err(|e| failed(e.to_string())),
        Some("png") => plot(
            BitMapBackend::new(path, SIZE).into_drawing_area(),
            report,
            trace,
        )
        .map_err(|e| failed(e.to_string())),
        _ => Err(Error::Invalid(format!(
            "{}: a chart is written as .svg or .png",
            path.display()
        ))),
    }
}

type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn plot<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    report: &DrillReport,
    t: &Trace,
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let run = report.runs.iter().find(|r| r.run == t.run);
    let primary = run.map(|r| r.primary_before.as_str());
    let promoted = run.and_then(|r| r.event.detail.get("new_primary")?.as_str());
    let sync = if report.sync_standbys.is_empty() {
        "no synchronous standby".to_string()
    } else {
        format!("synchronous: {}", report.sync_standbys.join(", "))
    };
    let subtitle = run
        .map(|r| {
            format!(
                "{}{sync} · write gap {:.0} ms · recovered {:.0} ms after the event · {} lost acknowledged · {} failed writes · {}",
                promoted.map(|p| format!("promoted {p} · ")).unwrap_or_default(),
                r.write_gap_ms,
                r.recovery_ms,
                r.lost_acknowledged,
                r.failed_writes,
                if r.converged { "converged" } else { "NOT converged" }
            )
        })
        .unwrap_or_default();
    let root = root.margin(10, 0, 0, 0).titled(
        &format!(
            "pgrepl drill: {} of {}, {} (run {}, {} writers at {}/s)",
            report.event,
            primary.unwrap_or("?"),
            mode_title(&report.replication),
            t.run,
            report.writers,
            report.rate
        ),
        (FAMILY, 26),
    )?;
    let (sub, body) = root.split_vertically(30);
    sub.draw(&Text::new(
        subtitle,
        (70, 5),
        (FAMILY, 15).into_font().color(&BLACK.mix(0.8)),
    ))?;
    let (upper, lower) = body.split_vertically((body.dim_in_pixel().1 as f64 * 0.5) as u32);

    let x_max = (t.acks_per_bin.len() as f64 * t.bin_ms / 1000.0).max(0.1);
    let (event_s, resumed_s) = (t.event_ms / 1000.0, t.first_ack_after_ms / 1000.0);
    let bin_s = t.bin_ms / 1000.0;

    // Commits per bin.
    // Headroom above the data for the legend (upper right), which then covers none of it.
    let y_max = t.acks_per_bin.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.6;
    let mut c = panel(
        &upper,
        "Acknowledged commits per 100 ms",
        "commits / 100 ms",
        x_max,
        y_max,
    )?;
    outage_band(&mut c, event_s, resumed_s, y_max)?;
    c.draw_series(t.acks_per_bin.iter().enumerate().map(|(i, &n)| {
        let x0 = i as f64 * bin_s;
        Rectangle::new([(x0, 0.0), (x0 + bin_s * 0.9, n as f64)], COMMITS.filled())
    }))?
    .label("acknowledged commits")
    .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], COMMITS.filled()));
    markers(&mut c, report, primary, event_s, resumed_s, y_max)?;
    legend(&mut c)?;

    // Replay lag per standby.
    let lag_max = t
        .lag
        .values()
        .flatten()
        .map(|&(_, b)| b as f64 / 1024.0)
        .fold(0.0, f64::max)
        .max(1.0)
        * (1.4 + 0.12 * t.lag.len() as f64);
    let mut c = panel(
        &lower,
        "Replay lag of each standby behind the primary",
        "replay lag (kB)",
        x_max,
        lag_max,
    )?;
    outage_band(&mut c, event_s, resumed_s, lag_max)?;
    let n = t.lag.len() as u32;
    for (i, (node, points)) in t.lag.iter().enumerate() {
        let color = LINES[i % LINES.len()];
        // Lines that lie on each other (standbys equally caught up) stay visible: the first
        // is drawn widest, each next one narrower on top of it, each with its own markers.
        let width = 2 + 2 * (n - 1 - i as u32);
        let shape = i % 3;
        let mut points: Vec<(f64, u64)> = points.clone();
        let promoted_here = promoted == Some(node.as_str());
        if promoted_here {
            // From its promotion on it is the primary: nothing to replay, lag 0 to the end.
            // A point a bin, as sampled: `segments` breaks a line at a longer step.
            let mut at = points
                .last()
                .map_or(t.event_end_ms, |p| p.0)
                .max(t.event_ms);
            while at + t.bin_ms <= x_max * 1000.0 {
                at += t.bin_ms;
                points.push((at, 0));
            }
        }
        // No line across the times a node could not be sampled (the primary down or frozen).
        for (k, segment) in segments(&points, t.bin_ms * 2.5).enumerate() {
            let xy: Vec<(f64, f64)> = segment
                .iter()
                .map(|&(ms, b)| (ms / 1000.0, b as f64 / 1024.0))
                .collect();
            let series = c.draw_series(LineSeries::new(
                xy.iter().copied(),
                color.mix(0.85).stroke_width(width),
            ))?;
            if k == 0 {
                let label = if promoted_here {
                    format!("{node} (promoted: 0 as the primary)")
                } else {
                    node.clone()
                };
                series.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(3))
                });
            }
            c.draw_series(
                xy.iter()
                    .step_by(2)
                    .map(|&p| marker(p, shape, color, 3 + width as i32 / 2)),
            )?;
        }
    }
    markers(&mut c, report, primary, event_s, resumed_s, lag_max)?;
    legend(&mut c)?;
    root.present()
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One of the two charts: time since the run started across, `y_desc` up.
fn panel<'a, DB: DrawingBackend + 'a>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    x_max: f64,
    y_max: f64,
) -> std::result::Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut c = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    c.configure_mesh()
        .x_desc("time since the run started (s)")
        .y_desc(y_desc)
        .axis_desc_style((FAMILY, 16))
        .label_style((FAMILY, 14))
        .draw()?;
    Ok(c)
}

/// The outage (no acknowledged commit) shaded.
fn outage_band<'a, DB: DrawingBackend + 'a>(
    c: &mut Chart<'a, DB>,
    from: f64,
    to: f64,
    y_max: f64,
) -> Drawn<DB> {
    c.draw_series(std::iter::once(Rectangle::new(
        [(from, 0.0), (to, y_max)],
        EVENT.mix(0.08).filled(),
    )))?
    .label("outage: no commit acknowledged")
    .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], EVENT.mix(0.15).filled()));
    Ok(())
}

/// A point marker: circle, triangle or cross, so that lines on top of each other differ.
fn marker<DB: DrawingBackend>(
    p: (f64, f64),
    shape: usize,
    color: RGBColor,
    size: i32,
) -> DynElement<'static, DB, (f64, f64)> {
    match shape {
        0 => Circle::new(p, size, color.filled()).into_dyn(),
        1 => TriangleMarker::new(p, size + 1, color.filled()).into_dyn(),
        _ => Cross::new(p, size, color.stroke_width(2)).into_dyn(),
    }
}

/// The mode in a title: `async`, `FIRST 1`, `ANY 1` (the names are in the subtitle).
fn mode_title(mode: &str) -> String {
    match mode.split_once(" (") {
        Some((head, _)) => head.to_string(),
        None if mode == "*" => "FIRST 1".to_string(),
        None => mode.to_string(),
    }
}

/// The event and the first acknowledged commit after it, as vertical lines.
fn markers<'a, DB: DrawingBackend + 'a>(
    c: &mut Chart<'a, DB>,
    report: &DrillReport,
    primary: Option<&str>,
    event_s: f64,
    resumed_s: f64,
    y_max: f64,
) -> Drawn<DB> {
    c.draw_series(std::iter::once(PathElement::new(
        vec![(event_s, 0.0), (event_s, y_max)],
        EVENT.stroke_width(3),
    )))?
    .label(format!(
        "event: {}{}",
        report.event,
        primary.map(|p| format!(" of {p}")).unwrap_or_default()
    ))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], EVENT.stroke_width(3)));
    c.draw_series(std::iter::once(PathElement::new(
        vec![(resumed_s, 0.0), (resumed_s, y_max)],
        RESUMED.stroke_width(2),
    )))?
    .label("writes resumed")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], RESUMED.stroke_width(3)));
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a>(c: &mut Chart<'a, DB>) -> Drawn<DB> {
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .draw()
}

/// Splits samples where consecutive ones are more than `max_gap_ms` apart.
fn segments(points: &[(f64, u64)], max_gap_ms: f64) -> impl Iterator<Item = &[(f64, u64)]> {
    points.chunk_by(move |a, b| b.0 - a.0 <= max_gap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_carry_the_mode() {
        assert_eq!(mode_title("async"), "async");
        assert_eq!(mode_title("FIRST 1 (\"sync2\", \"sync3\")"), "FIRST 1");
        assert_eq!(mode_title("ANY 1 (*)"), "ANY 1");
    }

    #[test]
    fn lag_lines_break_where_sampling_stopped() {
        let p = [(100.0, 1), (200.0, 2), (900.0, 3), (1000.0, 4)];
        let s: Vec<&[(f64, u64)]> = segments(&p, 250.0).collect();
        assert_eq!(s, vec![&p[..2], &p[2..]]);
    }
}
