//! SVG charts of a finished run (`--plots PREFIX`):
//!
//! - `PREFIX-latency.svg`: the latency CDF of successful requests (log time
//!   axis) next to latency by percentile on a "nines" axis (50 %, 90 %, 99 %,
//!   ...), which shows the tail the CDF squeezes into its top edge;
//! - `PREFIX-rate.svg`: completed requests per second and received Mbit/s over
//!   the measured window, per [`crate::stats::TICK`].
//!
//! Drawn with plotters' SVG backend without its `ttf` feature: text becomes SVG
//! `<text>` elements laid out with plotters' built-in size estimate, so no font
//! library (fontconfig, freetype) is needed at build or run time.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Run;

/// Size of each SVG.
pub const SIZE: (u32, u32) = (1000, 480);

const FONT: &str = "sans-serif";
const LINE: RGBColor = RGBColor(31, 119, 180);
const MEAN: RGBColor = RGBColor(214, 39, 40);
/// Deepest percentile axis: 99.9999 %.
const MAX_NINES: f64 = 6.0;

/// Writes `PREFIX-latency.svg` and `PREFIX-rate.svg` (creating the directory
/// if needed) and returns their paths.
pub fn write_plots(run: &Run, prefix: &Path) -> Result<[PathBuf; 2], String> {
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let name = prefix
        .file_name()
        .ok_or_else(|| format!("--plots {}: needs a file name prefix", prefix.display()))?
        .to_string_lossy()
        .into_owned();
    let latency = prefix.with_file_name(format!("{name}-latency.svg"));
    let rate = prefix.with_file_name(format!("{name}-rate.svg"));
    for (path, svg) in [(&latency, latency_svg(run)?), (&rate, rate_svg(run)?)] {
        std::fs::write(path, svg).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok([latency, rate])
}

/// The latency chart of `run` as an SVG document.
pub fn latency_svg(run: &Run) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let r = &run.results;
        let title = format!(
            "{}: latency of {} successful requests",
            run.label(),
            thousands(r.successes)
        );
        let root = root.titled(&title, (FONT, 20)).map_err(err)?;
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        let hist = &run.latency_hist;
        if hist.is_empty() {
            for area in [&left, &right] {
                no_data(area, "no successful requests")?;
            }
        } else {
            cdf_panel(&left, hist, &r.latency)?;
            percentile_panel(&right, hist)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The rate-over-time chart of `run` as an SVG document.
pub fn rate_svg(run: &Run) -> Result<String, String> {
    let r = &run.results;
    let tick_s = r.timeline.interval_ms as f64 / 1000.0;
    let per_s = |n: u64| n as f64 / tick_s;
    let successes: Vec<f64> = r.timeline.successes.iter().map(|&n| per_s(n)).collect();
    let mbit: Vec<f64> = r
        .timeline
        .bytes
        .iter()
        .map(|&n| per_s(n) * 8.0 / 1e6)
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!(
            "{}: rate over time ({} ms steps)",
            run.label(),
            r.timeline.interval_ms
        );
        let root = root.titled(&title, (FONT, 20)).map_err(err)?;
        let (top, bottom) = root.split_vertically((SIZE.1 - 30) / 2);
        let conn_mean = r.connections_per_sec;
        series_panel(
            &top,
            tick_s,
            &successes,
            "completed requests/s",
            conn_mean,
            &format!("mean {}/s", thousands(conn_mean.round() as u64)),
        )?;
        let bits_mean = r.gbit_per_sec * 1000.0;
        series_panel(
            &bottom,
            tick_s,
            &mbit,
            "received Mbit/s",
            bits_mean,
            &format!("mean {bits_mean:.1} Mbit/s"),
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// `(latency ms, cumulative %)` points of the CDF, one per recorded value.
pub fn cdf_points(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = hist.len() as f64;
    let mut seen = 0u64;
    let mut points = Vec::new();
    for v in hist.iter_recorded() {
        seen += v.count_since_last_iteration();
        let ms = hist.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        points.push((ms, 100.0 * seen as f64 / total));
    }
    points
}

/// Drops points whose log10(x) is within `step` of the last point kept (the
/// last point is always kept): a CDF of a few thousand distinct values would
/// otherwise draw several points per pixel.
pub fn thin_log_x(points: &[(f64, f64)], step: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len().min(2048));
    for (i, &(x, y)) in points.iter().enumerate() {
        let last = i + 1 == points.len();
        match out.last_mut() {
            Some(prev) if (x.log10() - prev.0.log10()).abs() < step => {
                if last {
                    *prev = (x, y);
                }
            }
            _ => out.push((x, y)),
        }
    }
    out
}

/// `(nines, latency ms)` points, nines = -log10(1 - quantile), capped where the
/// sample count gives no more resolution.
pub fn percentile_points(hist: &Histogram<u64>) -> (Vec<(f64, f64)>, f64) {
    // n samples resolve 1 - 1/n: 1,000 samples reach 99.9 %, not 99.99 %.
    let cap = (hist.len().max(1) as f64)
        .log10()
        .floor()
        .clamp(1.0, MAX_NINES);
    let mut points: Vec<(f64, f64)> = Vec::new();
    for v in hist.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let nines = if q >= 1.0 {
            cap
        } else {
            (-(1.0 - q).log10()).min(cap)
        };
        let ms = hist.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        if points.last().is_some_and(|&(x, _)| x >= nines) {
            // Same x (the cap): keep the largest latency.
            if let Some(last) = points.last_mut() {
                last.1 = last.1.max(ms);
            }
            continue;
        }
        points.push((nines, ms));
    }
    (points, cap)
}

fn cdf_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    hist: &Histogram<u64>,
    lat: &crate::stats::Latency,
) -> Result<(), String> {
    let points = thin_log_x(&cdf_points(hist), 0.002);
    let lo = points.first().map_or(0.001, |p| p.0).max(0.001);
    let hi = points.last().map_or(1.0, |p| p.0).max(lo);
    // At least one 1-2-5 step either side so a single value still has an axis.
    let (lo, hi) = (lo / 1.2, hi * 1.2);
    let (bold, light) = log_ticks(lo, hi);
    let x = (lo..hi)
        .log_scale()
        .with_key_points(bold)
        .with_light_points(light);
    let mut chart = ChartBuilder::on(area)
        .caption("CDF", (FONT, 16))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x, 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("requests at or below (%)")
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 13))
        .light_line_style(BLACK.mix(0.04))
        .max_light_lines(4)
        .draw()
        .map_err(err)?;
    // Steps: the share stays flat until the next recorded value.
    let mut steps = Vec::with_capacity(points.len() * 2 + 1);
    let mut prev = 0.0;
    for &(ms, pct) in &points {
        steps.push((ms, prev));
        steps.push((ms, pct));
        prev = pct;
    }
    chart
        .draw_series(LineSeries::new(steps, LINE.stroke_width(2)))
        .map_err(err)?;
    let notes = [
        format!("p50   {}", ms_text(lat.p50_us)),
        format!("p99   {}", ms_text(lat.p99_us)),
        format!("p99.9 {}", ms_text(lat.p999_us)),
        format!("max   {}", ms_text(lat.max_us)),
    ];
    // Top left inside the plot, in the panel's own pixel coordinates.
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let (bx, by) = area.get_base_pixel();
    for (i, n) in notes.iter().enumerate() {
        area.draw(&Text::new(
            n.clone(),
            (xs.start - bx + 8, ys.start - by + 8 + 16 * i as i32),
            (FONT, 13).into_font().color(&BLACK),
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn percentile_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    hist: &Histogram<u64>,
) -> Result<(), String> {
    let (points, cap) = percentile_points(hist);
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile", (FONT, 16))
        .margin(12)
        .margin_right(32)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..cap, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(cap as usize + 1)
        .x_label_formatter(&|v| nines_label(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 13))
        .light_line_style(BLACK.mix(0.04))
        .max_light_lines(4)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(points, LINE.stroke_width(2)))
        .map_err(err)?;
    Ok(())
}

fn series_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    tick_s: f64,
    values: &[f64],
    what: &str,
    mean: f64,
    mean_label: &str,
) -> Result<(), String> {
    let end = (values.len() as f64 * tick_s).max(tick_s);
    let top = values.iter().copied().fold(mean, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured window")
        .y_desc(what)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 13))
        .light_line_style(BLACK.mix(0.04))
        .max_light_lines(4)
        .draw()
        .map_err(err)?;
    // One point per step, at its end (the rate over the step just finished).
    let line = values
        .iter()
        .enumerate()
        .map(|(i, &v)| ((i + 1) as f64 * tick_s, v));
    chart
        .draw_series(LineSeries::new(line, LINE.stroke_width(2)))
        .map_err(err)?
        .label(what)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], LINE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new([(0.0, mean), (end, mean)], MEAN))
        .map_err(err)?
        .label(mean_label)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], MEAN));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn no_data(area: &DrawingArea<SVGBackend<'_>, Shift>, text: &str) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        text.to_string(),
        (w as i32 / 2 - 80, h as i32 / 2),
        (FONT, 16).into_font().color(&BLACK),
    ))
    .map_err(err)
}

/// Labelled and grid-only ticks of a log axis over `lo..hi` (> 0): 1, 2 and
/// 5 times powers of ten, thinned to powers of ten over wide ranges so the
/// labels never crowd; every multiple of a power of ten gets a grid line.
pub fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let decades = (hi / lo).log10();
    let labelled: &[f64] = if decades > 2.5 {
        &[1.0]
    } else if decades > 1.2 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0, 2.0, 3.0, 5.0, 7.0]
    };
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    for k in first..=last {
        let p = 10f64.powi(k);
        for m in 1..10 {
            let v = m as f64 * p;
            if v < lo || v > hi {
                continue;
            }
            light.push(v);
            if labelled.contains(&(m as f64)) {
                bold.push(v);
            }
        }
    }
    if bold.len() < 2 {
        bold.clone_from(&light);
    }
    if bold.len() < 2 {
        bold = vec![lo, hi];
    }
    (bold, light)
}

/// Percentile label of a nines position: 0 -> "0%", 1 -> "90%", 3 -> "99.9%".
fn nines_label(nines: f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-nines));
    let digits = (nines.ceil() as usize).saturating_sub(2);
    format!("{pct:.digits$}%")
}

/// A compact axis number: 0.05, 1.5, 20, 1,500, 2.5M.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1000.0 {
        thousands(v.round() as u64)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn ms_text(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// 1234567 -> "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn cdf_ends_at_100_and_rises() {
        let h = hist(&[100, 200, 200, 300, 10_000]);
        let p = cdf_points(&h);
        assert_eq!(p.len(), 4);
        assert!((p.last().unwrap().1 - 100.0).abs() < 1e-9);
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert!((p[0].1 - 20.0).abs() < 1e-9);
        assert!((p[1].1 - 60.0).abs() < 1e-9);
    }

    #[test]
    fn thinning_keeps_the_ends() {
        let points: Vec<(f64, f64)> = (1..=1000)
            .map(|i| (1.0 + i as f64 / 1e4, i as f64))
            .collect();
        let thin = thin_log_x(&points, 0.002);
        assert!(thin.len() < 30, "{}", thin.len());
        assert_eq!(thin.first(), points.first());
        assert_eq!(thin.last(), points.last());
        assert!(thin.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn percentile_axis_is_capped_by_sample_count() {
        let h = hist(&(1..=1000).collect::<Vec<_>>());
        let (p, cap) = percentile_points(&h);
        assert_eq!(cap, 3.0);
        assert_eq!(
            percentile_points(&hist(&(1..=9999).collect::<Vec<_>>())).1,
            3.0
        );
        assert_eq!(percentile_points(&hist(&[5, 6, 7])).1, 1.0);
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(p.last().unwrap().0, 3.0);
        assert!((p.last().unwrap().1 - 1.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn log_axis_ticks() {
        // Three decades: powers of ten only.
        let (bold, light) = log_ticks(0.5, 2000.0);
        assert_eq!(bold, vec![1.0, 10.0, 100.0, 1000.0]);
        assert!(light.contains(&0.5) && light.contains(&2000.0) && light.contains(&40.0));
        // Two decades: 1-2-5.
        let (bold, _) = log_ticks(30.0, 3000.0);
        assert_eq!(bold, vec![50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]);
        // Narrow: more labels, never fewer than two.
        let (bold, _) = log_ticks(11.0, 19.0);
        assert_eq!(bold, vec![11.0, 19.0]);
        let (bold, _) = log_ticks(8.0, 30.0);
        assert_eq!(bold, vec![10.0, 20.0, 30.0]);
    }

    #[test]
    fn labels() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
        assert_eq!(short(0.05), "0.05");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(250.0), "250");
        assert_eq!(short(16912.0), "16,912");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
