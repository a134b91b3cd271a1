//! What the demo saw, on one clock, and the picture of it: request rate and
//! latency over the whole run with each rotation and each switch of the
//! app's login marked, then one close-up per rotation (its four steps, the
//! switch, the latency around them).

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use sm_local::RotationStatus;

use crate::load::{BUCKET_SECONDS, Bucket, Histogram};

/// Seconds since the demo started, for everything it records.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_epoch_ms: f64,
}

impl Clock {
    pub fn start() -> Clock {
        let start_epoch_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Clock { start: Instant::now(), start_epoch_ms }
    }

    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// A wall-clock time (milliseconds since the Unix epoch) on this clock.
    pub fn at_epoch_ms(&self, ms: f64) -> f64 {
        (ms - self.start_epoch_ms) / 1e3
    }
}

/// One step of a rotation, as the endpoint ran it.
#[derive(Debug, Clone)]
pub struct StepMark {
    pub name: String,
    pub start: f64,
    pub end: Option<f64>,
    pub ok: Option<bool>,
}

impl StepMark {
    pub fn ms(&self) -> Option<f64> {
        self.end.map(|end| (end - self.start) * 1e3)
    }
}

/// One rotation (one token) of the demo's secret.
#[derive(Debug, Clone)]
pub struct RotationMark {
    /// 1, 2, … in the order they began.
    pub number: usize,
    pub token: String,
    /// Started by the demo's RotateSecret (else by hand, or a schedule).
    pub by_demo: bool,
    pub started: f64,
    pub steps: Vec<StepMark>,
    pub finished: Option<f64>,
    pub status: Option<RotationStatus>,
    /// `step: errorType: errorMessage` of a failed rotation (never a secret:
    /// the function's errors name keys, users and codes only).
    pub error: Option<String>,
}

impl RotationMark {
    pub fn short(&self) -> &str {
        &self.token[..8.min(self.token.len())]
    }

    pub fn total_ms(&self) -> Option<f64> {
        self.finished.map(|f| (f - self.started) * 1e3)
    }
}

/// The app moved its new connections to another secret version.
#[derive(Debug, Clone)]
pub struct Switch {
    pub at: f64,
    pub version: String,
    pub user: String,
    /// `change check`, or the stage an authentication failure led to.
    pub why: String,
}

/// Everything the picture shows.
#[derive(Debug)]
pub struct Timeline {
    pub title: String,
    /// When the clients started and stopped.
    pub load: (f64, f64),
    pub buckets: Vec<Bucket>,
    pub rotations: Vec<RotationMark>,
    pub switches: Vec<Switch>,
}

const STEP_COLORS: [(&str, RGBColor); 4] = [
    ("createSecret", RGBColor(78, 121, 167)),
    ("setSecret", RGBColor(225, 87, 89)),
    ("testSecret", RGBColor(176, 122, 161)),
    ("finishSecret", RGBColor(242, 142, 43)),
];
const RATE: RGBColor = RGBColor(78, 121, 167);
const FAILED: RGBColor = RGBColor(214, 39, 40);
const P50: RGBColor = RGBColor(118, 183, 178);
const P99: RGBColor = RGBColor(156, 117, 95);
const ROTATION: RGBColor = RGBColor(237, 201, 72);
const SWITCH: RGBColor = RGBColor(89, 161, 79);
/// Overview windows (longer for a long run, so that the picture stays small);
/// the close-ups use the buckets as they are.
const WINDOW_SECONDS: f64 = 0.25;
const MAX_WINDOWS: f64 = 800.0;
/// How many rotations get a close-up (the latest ones).
const CLOSE_UPS: usize = 6;

type Drawn = Result<(), Box<dyn std::error::Error>>;

fn step_color(name: &str) -> RGBColor {
    STEP_COLORS.iter().find(|(n, _)| *n == name).map_or(RGBColor(128, 128, 128), |(_, c)| *c)
}

/// The requests that ended within one window of time.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// The window's middle, on the demo's clock.
    at: f64,
    per_second: f64,
    failed_per_second: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// Windows of `width` seconds (a whole number of buckets) between `from`
/// and `to`; buckets cut by `from` or `to` (the clients starting or
/// stopping) are left out.
fn windows(t: &Timeline, from: f64, to: f64, width: f64) -> Vec<Window> {
    let per = ((width / BUCKET_SECONDS).round() as usize).max(1);
    let first = (from.max(t.load.0) / BUCKET_SECONDS).max(0.0).ceil() as usize;
    let last = ((to.min(t.load.1) / BUCKET_SECONDS).floor().max(0.0) as usize).min(t.buckets.len());
    let mut out = Vec::new();
    let mut i = first;
    while i < last {
        let chunk = &t.buckets[i..(i + per).min(last)];
        let seconds = chunk.len() as f64 * BUCKET_SECONDS;
        let mut h = Histogram::default();
        chunk.iter().for_each(|b| h.add(b));
        let ok: u32 = chunk.iter().map(|b| b.ok).sum();
        let failed: u32 = chunk.iter().map(|b| b.failed).sum();
        let mid = (i as f64 + chunk.len() as f64 / 2.0) * BUCKET_SECONDS;
        out.push(Window {
            at: mid,
            per_second: f64::from(ok + failed) / seconds,
            failed_per_second: f64::from(failed) / seconds,
            p50_ms: h.quantile_ms(0.5),
            p99_ms: h.quantile_ms(0.99),
        });
        i += per;
    }
    out
}

/// Writes the picture to `path` (SVG).
pub fn draw(t: &Timeline, path: &Path) -> Drawn {
    let close_ups = t.rotations.len().min(CLOSE_UPS);
    let height = if close_ups == 0 { 640 } else { 980 };
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&t.title, ("sans-serif", 22))?;
    let (legend, rest) = root.split_vertically(28);
    draw_legend(&legend)?;
    let (overview, bottom) = rest.split_vertically(580);
    let (rate, latency) = overview.split_vertically(270);
    let x = (t.load.0, t.load.1.max(t.load.0 + 1.0));
    let width = WINDOW_SECONDS.max(((x.1 - x.0) / MAX_WINDOWS / WINDOW_SECONDS).ceil() * WINDOW_SECONDS);
    let data = windows(t, x.0, x.1, width);
    let per = if width < 1.0 { format!("{:.0} ms", width * 1e3) } else { format!("{width:.0} s") };
    draw_rate(&rate, t, x, &data, &per)?;
    draw_latency(&latency, t, x, &data, &per)?;
    if close_ups > 0 {
        let shown = &t.rotations[t.rotations.len() - close_ups..];
        let panels = bottom.split_evenly((1, close_ups));
        for (panel, rotation) in panels.iter().zip(shown) {
            draw_close_up(panel, t, rotation)?;
        }
    }
    root.present()?;
    Ok(())
}

fn draw_legend(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Drawn {
    let mut entries: Vec<(&str, RGBColor)> = STEP_COLORS.to_vec();
    entries.push(("the app switched logins", SWITCH));
    entries.push(("a rotation (above: RotateSecret to its end; below: close-ups)", ROTATION));
    let mut x = 70;
    for (name, color) in entries {
        area.draw(&Rectangle::new([(x, 8), (x + 14, 22)], color.mix(0.6).filled()))?;
        area.draw(&Text::new(name.to_owned(), (x + 20, 9), ("sans-serif", 14)))?;
        x += 30 + (name.len() as i32) * 8;
    }
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_rate(area: &Area<'_>, t: &Timeline, x: (f64, f64), data: &[Window], per: &str) -> Drawn {
    let top = data.iter().map(|d| d.per_second).fold(10.0, f64::max) * 1.25;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .caption(format!("requests per second (all clients, per {per})"), ("sans-serif", 16))
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(x.0..x.1, 0.0..top)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| format!("{v:.0} s"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .max_light_lines(2)
        .draw()?;
    mark_rotations(&mut chart, t, 0.0, top)?;
    chart
        .draw_series(LineSeries::new(data.iter().map(|d| (d.at, d.per_second)), RATE.stroke_width(2)))?
        .label("answered or failed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RATE.stroke_width(2)));
    if data.iter().any(|d| d.failed_per_second > 0.0) {
        chart
            .draw_series(LineSeries::new(data.iter().map(|d| (d.at, d.failed_per_second)), FAILED.stroke_width(2)))?
            .label("failed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], FAILED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_latency(area: &Area<'_>, t: &Timeline, x: (f64, f64), data: &[Window], per: &str) -> Drawn {
    let top = data.iter().filter_map(|d| d.p99_ms).fold(1.0, f64::max) * 2.0;
    let bottom = data.iter().filter_map(|d| d.p50_ms).fold(top, f64::min).max(0.05) / 2.0;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .caption(format!("latency of answered requests, ms (log scale; p50 and p99 per {per})"), ("sans-serif", 16))
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(x.0..x.1, (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| format!("{v:.0} s"))
        .y_label_formatter(&|v| format!("{v}"))
        .max_light_lines(2)
        .draw()?;
    mark_rotations(&mut chart, t, bottom, top)?;
    let p99 = |d: &Window| d.p99_ms;
    let p50 = |d: &Window| d.p50_ms;
    for (label, color, pick) in [("p99", P99, &p99 as &dyn Fn(&Window) -> Option<f64>), ("p50", P50, &p50)] {
        let points: Vec<(f64, f64)> = data.iter().filter_map(|d| pick(d).map(|v| (d.at, v))).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Each rotation as a band (at least 0.15 s wide, to be seen) labelled `#n`,
/// each switch as a green line labelled with the user it logs in as.
fn mark_rotations<Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    t: &Timeline,
    y0: f64,
    y1: f64,
) -> Drawn
where
    Y: Ranged<ValueType = f64>,
{
    for r in &t.rotations {
        let end = r.finished.unwrap_or(t.load.1).max(r.started + 0.15);
        chart
            .draw_series(std::iter::once(Rectangle::new([(r.started, y0), (end, y1)], ROTATION.mix(0.35).filled())))?;
        chart.draw_series(std::iter::once(Text::new(format!("#{}", r.number), (r.started, y1), ("sans-serif", 13))))?;
    }
    for s in &t.switches {
        chart.draw_series(std::iter::once(PathElement::new(vec![(s.at, y0), (s.at, y1)], SWITCH.stroke_width(2))))?;
    }
    Ok(())
}

/// One rotation up close: time in ms from its start, its steps as bands, the
/// switch to its version, latency per 50 ms bucket, failed requests as crosses.
fn draw_close_up(area: &Area<'_>, t: &Timeline, r: &RotationMark) -> Drawn {
    let switch = t.switches.iter().find(|s| s.version == r.token);
    let end = r.finished.unwrap_or(r.started + 0.5).max(switch.map_or(0.0, |s| s.at));
    let x = (-250.0, ((end - r.started) * 1e3 + 250.0).min(4000.0));
    let from = r.started + x.0 / 1e3;
    let to = r.started + x.1 / 1e3;
    let data = windows(t, from, to, BUCKET_SECONDS);
    let top = data.iter().filter_map(|d| d.p99_ms).fold(1.0, f64::max) * 3.0;
    let bottom = data.iter().filter_map(|d| d.p50_ms).fold(top, f64::min).max(0.05) / 2.0;
    let total = r.total_ms().map_or_else(|| "unfinished".to_owned(), |ms| format!("{ms:.0} ms"));
    let who = if r.by_demo { "" } else { ", by hand" };
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .caption(format!("#{} {} ({total}{who})", r.number, r.short()), ("sans-serif", 14))
        .x_label_area_size(40)
        .y_label_area_size(44)
        .build_cartesian_2d(x.0..x.1, (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(4)
        .y_labels(4)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .x_desc("ms from RotateSecret")
        .y_desc("latency, ms")
        .max_light_lines(1)
        .draw()?;
    for s in &r.steps {
        let start = (s.start - r.started) * 1e3;
        let stop = s.end.map_or(x.1, |e| (e - r.started) * 1e3).max(start + 2.0);
        let color = step_color(&s.name);
        chart.draw_series(std::iter::once(Rectangle::new([(start, bottom), (stop, top)], color.mix(0.45).filled())))?;
    }
    if let Some(s) = switch {
        let at = (s.at - r.started) * 1e3;
        chart.draw_series(std::iter::once(PathElement::new(vec![(at, bottom), (at, top)], SWITCH.stroke_width(3))))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("-> {}", s.user),
            (at + 10.0, top / 1.6),
            ("sans-serif", 12),
        )))?;
    }
    let at = |d: &Window| (d.at - r.started) * 1e3;
    chart
        .draw_series(LineSeries::new(data.iter().filter_map(|d| d.p99_ms.map(|v| (at(d), v))), P99.stroke_width(2)))?;
    chart
        .draw_series(LineSeries::new(data.iter().filter_map(|d| d.p50_ms.map(|v| (at(d), v))), P50.stroke_width(2)))?;
    chart.draw_series(
        data.iter()
            .filter(|d| d.failed_per_second > 0.0)
            .map(|d| Cross::new((at(d), bottom * 1.5), 5, FAILED.stroke_width(2))),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_of_a_small_run_is_an_svg_with_every_rotation() {
        let mut buckets = vec![Bucket::default(); 200];
        for b in &mut buckets {
            b.ok = 40;
        }
        let step = |name: &str, start: f64, ms: f64| StepMark {
            name: name.into(),
            start,
            end: Some(start + ms / 1e3),
            ok: Some(true),
        };
        let rotation = RotationMark {
            number: 1,
            token: "0123456789abcdef".into(),
            by_demo: true,
            started: 4.0,
            steps: vec![step("createSecret", 4.0, 20.0), step("setSecret", 4.02, 50.0)],
            finished: Some(4.1),
            status: Some(RotationStatus::Succeeded),
            error: None,
        };
        let t = Timeline {
            title: "test".into(),
            load: (0.5, 10.0),
            buckets,
            rotations: vec![rotation],
            switches: vec![Switch { at: 4.5, version: "0123456789abcdef".into(), user: "app".into(), why: "x".into() }],
        };
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.svg");
        draw(&t, &path).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
        assert!(svg.contains("#1 01234567"), "the close-up is captioned");
        assert!(svg.contains("-&gt; app") || svg.contains("-> app"), "the switch is labelled");
    }
}
