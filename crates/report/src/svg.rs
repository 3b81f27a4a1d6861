//! SVG plots written by hand as plain deterministic text (two renders of the same numbers are
//! byte-identical, on any machine): scatter plots of accuracy against a cost (one colour and
//! marker per series, sweeps joined in sweep order, the computed Pareto front as a step line
//! with its points ringed, log axes with 1k / 10k / 100k ticks) and grouped bar charts
//! (per-layer channels). The legend sits right of the plot and the picture grows to hold it,
//! so it always fits. Plotting crates lay text out with the fonts of the machine they run on,
//! which would make the files differ between machines; here text widths are estimated.
//!
//! For tests, each series is a `<g class="series" data-name=…>` and each legend entry a
//! `<g class="legend-entry" data-bbox="x y w h">` holding its marker and text.

use std::fmt::Write;

/// One group of points drawn with one colour and marker and listed in the legend.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    /// (x, y, label) — the label is shown as a tooltip (`<title>`).
    pub points: Vec<(f64, f64, String)>,
    /// Point indices joined by a line, in this order (one list per sweep).
    pub lines: Vec<Vec<usize>>,
    /// Error bars: (x, y) half-widths per point, e.g. standard deviations over seeds (empty:
    /// none; a zero or non-finite half-width draws no bar on that axis).
    pub errors: Vec<(f64, f64)>,
    /// The colour and marker of series number `style` instead of the series' own position,
    /// so that variants of one family share them (see [`Series::hollow`]).
    pub style: Option<usize>,
    /// Markers drawn as outlines (a variant of the series with the same style).
    pub hollow: bool,
}

/// A scatter plot of `series` with the Pareto front of all points (x ↓, y ↑) drawn on top.
#[derive(Clone, Debug, Default)]
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    /// The y axis never extends past these (e.g. 0–100 for percentages).
    pub y_bounds: Option<(f64, f64)>,
    /// Short texts written next to points (x, y, text), e.g. which point is the seed.
    pub notes: Vec<(f64, f64, String)>,
    /// The front minimises y too (an error), instead of maximising it (an accuracy).
    pub lower_is_better: bool,
    /// No Pareto front (a plot of counts, not of a trade-off).
    pub no_front: bool,
}

const FONT: f64 = 12.0;
const LEFT: f64 = 72.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 58.0;
const PW: f64 = 520.0;
const PH: f64 = 330.0;
const ROW: f64 = 18.0;
/// Twelve colours that stay apart on white (Tableau 10, black, dark gold); with six marker
/// shapes, series k gets colour k mod 12 and shape k mod 6, so neighbours differ in both.
pub const COLOURS: [&str; 12] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#1a1a1a", "#b8860b",
];
const SHAPES: usize = 6;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Estimated width of `s` in sans-serif at `size` px (generous: 0.62 em per character).
pub fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.62
}

/// The colour and shape of series `k`.
pub fn style(k: usize) -> (&'static str, usize) {
    (COLOURS[k % COLOURS.len()], (k + k / COLOURS.len()) % SHAPES)
}

/// A marker of `shape` (circle, square, triangle up, diamond, triangle down, pentagon)
/// centred on (x, y).
fn marker(shape: usize, x: f64, y: f64, r: f64, colour: &str, extra: &str) -> String {
    let poly = |pts: &[(f64, f64)]| {
        let p: Vec<String> = pts
            .iter()
            .map(|(dx, dy)| format!("{:.1},{:.1}", x + dx * r, y + dy * r))
            .collect();
        format!(
            r#"<polygon points="{}" fill="{colour}"{extra}/>"#,
            p.join(" ")
        )
    };
    match shape % SHAPES {
        0 => format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r:.1}" fill="{colour}"{extra}/>"#),
        1 => format!(
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"{extra}/>"#,
            x - 0.85 * r,
            y - 0.85 * r,
            1.7 * r,
            1.7 * r
        ),
        2 => poly(&[(0.0, -1.15), (1.05, 0.8), (-1.05, 0.8)]),
        3 => poly(&[(0.0, -1.25), (1.0, 0.0), (0.0, 1.25), (-1.0, 0.0)]),
        4 => poly(&[(0.0, 1.15), (1.05, -0.8), (-1.05, -0.8)]),
        _ => poly(&[
            (0.0, -1.1),
            (1.05, -0.34),
            (0.65, 0.9),
            (-0.65, 0.9),
            (-1.05, -0.34),
        ]),
    }
}

/// A data point's marker: translucent fill, or an outline on white when `hollow`.
fn point(shape: usize, x: f64, y: f64, colour: &str, hollow: bool) -> String {
    if hollow {
        let extra = format!(r#" stroke="{colour}" stroke-width="1.8""#);
        marker(shape, x, y, 5.0, "white", &extra)
    } else {
        let extra = format!(r#" stroke="{colour}" stroke-width="1.5" fill-opacity="0.45""#);
        marker(shape, x, y, 5.0, colour, &extra)
    }
}

/// "Nice" tick values covering [lo, hi] (1, 2, 5 × 10^k steps).
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let exp = raw.log10().floor() as i32;
    // Step = m × 10^exp with m ∈ {1, 2, 5, 10}, the one giving the count closest to target.
    let count = |m: f64| (hi - lo) / (m * 10f64.powi(exp));
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .min_by(|a, b| {
            (count(*a) - target as f64)
                .abs()
                .total_cmp(&(count(*b) - target as f64).abs())
        })
        .unwrap_or(1.0);
    // Tick i is i·m·10^exp, computed so that decimal ticks come out exact (0.6, not 0.6000000000000001).
    let at = |i: i64| {
        if exp >= 0 {
            i as f64 * m * 10f64.powi(exp)
        } else {
            i as f64 * m / 10f64.powi(-exp)
        }
    };
    let step = m * 10f64.powi(exp);
    let start = (lo / step).ceil() as i64;
    let end = (hi / step).floor() as i64;
    (start..=end).map(at).collect()
}

/// m × 10^k, exact for negative k too (5 × 10⁻² is 0.05).
fn pow10(m: f64, k: i32) -> f64 {
    if k >= 0 {
        m * 10f64.powi(k)
    } else {
        m / 10f64.powi(-k)
    }
}

/// Ticks of a log axis over [lo, hi] (data units, lo > 0): (labelled, unlabelled minor).
/// Labels at 1 × 10^k when that gives at least three, else at 1, 2, 5 × 10^k, else at every
/// 1…9 × 10^k; minor ticks at the remaining 1…9 × 10^k.
pub fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return (vec![], vec![]);
    }
    let k0 = lo.log10().floor() as i32 - 1;
    let k1 = hi.log10().ceil() as i32 + 1;
    let within = |ms: &[f64]| -> Vec<f64> {
        (k0..=k1)
            .flat_map(|k| ms.iter().map(move |&m| pow10(m, k)))
            .filter(|&v| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9))
            .collect()
    };
    let all = within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let major = [vec![1.0], vec![1.0, 2.0, 5.0]]
        .into_iter()
        .map(|ms| within(&ms))
        .find(|t| t.len() >= 3)
        .unwrap_or_else(|| all.clone());
    let minor = all.into_iter().filter(|v| !major.contains(v)).collect();
    (major, minor)
}

/// A short number label: 12500 → "12.5k", 0.9 → "0.9", 0.005 → "0.005".
pub fn short(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if a > 0.0 && a < 0.1 {
        (-a.log10().floor()) as usize + 1
    } else {
        2
    };
    let s = format!("{x:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{suffix}")
}

/// A legend entry: its text and a function drawing its marker centred on (x, y).
type Entry<'a> = (String, Box<dyn Fn(f64, f64) -> String + 'a>);

/// The legend right of a plot area that ends at `x`: entries (name, marker drawer) from `top`.
/// Returns the SVG text and the right edge and bottom of the legend.
fn legend(x: f64, top: f64, entries: &[Entry]) -> (String, f64, f64) {
    let widest = entries
        .iter()
        .map(|(n, _)| text_width(n, FONT))
        .fold(0.0f64, f64::max);
    let w = 36.0 + widest;
    let h = 10.0 + ROW * entries.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<g class="legend"><rect x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="white" stroke="#bbb"/>"##
    );
    for (k, (name, draw)) in entries.iter().enumerate() {
        let cy = top + 5.0 + ROW * (k as f64 + 0.5);
        let _ = writeln!(
            s,
            r#"<g class="legend-entry" data-bbox="{:.1} {:.1} {:.1} {:.1}">{}<text x="{:.1}" y="{:.1}">{}</text></g>"#,
            x + 4.0,
            cy - ROW / 2.0 + 1.0,
            28.0 + text_width(name, FONT),
            ROW - 2.0,
            draw(x + 16.0, cy),
            x + 30.0,
            cy + 4.0,
            esc(name)
        );
    }
    s.push_str("</g>\n");
    (s, x + w, top + h)
}

fn header(w: f64, h: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(s, r#"<rect width="{w:.0}" height="{h:.0}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="26" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        (LEFT + PW / 2.0).max(w / 2.0).min(w / 2.0 + 120.0),
        esc(title)
    );
    s
}

/// Width and height of the picture holding the plot area, a legend ending at (`right`,
/// `bottom`) and the title.
fn canvas(right: f64, bottom: f64, title: &str) -> (f64, f64) {
    let w = (right + 12.0).max(text_width(title, 15.0) + 40.0).ceil();
    let h = (TOP + PH + BOTTOM).max(bottom + 12.0).ceil();
    (w, h)
}

impl Scatter {
    /// Renders the plot. Points with non-finite coordinates (or x ≤ 0 on a log axis) are skipped.
    pub fn render(&self) -> String {
        let ok = |x: f64, y: f64| x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0);
        let all: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| (p.0, p.1)))
            .filter(|&(x, y)| ok(x, y))
            .collect();
        let mut entries: Vec<Entry> = self
            .series
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let (c, shape) = style(s.style.unwrap_or(k));
                let n = s.points.iter().filter(|p| ok(p.0, p.1)).count();
                let hollow = s.hollow;
                (
                    format!("{} ({n})", s.name),
                    Box::new(move |x: f64, y: f64| point(shape, x, y, c, hollow))
                        as Box<dyn Fn(f64, f64) -> String>,
                )
            })
            .collect();
        let front = if self.no_front {
            Vec::new()
        } else if self.lower_is_better {
            let flipped: Vec<(f64, f64)> = all.iter().map(|&(x, y)| (x, -y)).collect();
            crate::pareto::front(&flipped)
        } else {
            crate::pareto::front(&all)
        };
        // Error bars: (x, y, half-width x, half-width y) of the drawn points.
        let bar = |e: f64| if e.is_finite() && e > 0.0 { e } else { 0.0 };
        let bars: Vec<(f64, f64, f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .zip(&s.errors)
                    .filter(|(p, _)| ok(p.0, p.1))
                    .map(|(p, &(ex, ey))| (p.0, p.1, bar(ex), bar(ey)))
            })
            .collect();
        if !front.is_empty() {
            entries.push((
                "Pareto front".into(),
                Box::new(|x: f64, y: f64| {
                    format!(
                        r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#222" stroke-width="1.5" stroke-dasharray="5 3"/><circle cx="{x:.1}" cy="{y:.1}" r="7" fill="none" stroke="#222" stroke-width="1.2"/>"##,
                        x - 11.0,
                        x + 11.0
                    )
                }),
            ));
        }
        let (legend_svg, right, bottom) = legend(LEFT + PW + 16.0, TOP, &entries);
        let (w, h) = canvas(right, bottom, &self.title);
        let mut s = header(w, h, &self.title);
        if all.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no data</text>"#,
                LEFT + PW / 2.0,
                TOP + PH / 2.0
            );
            s.push_str(&legend_svg);
            s.push_str("</svg>\n");
            return s;
        }
        let tx = |x: f64| if self.log_x { x.log10() } else { x };
        let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
            (a.min(tx(p.0)), b.max(tx(p.0)))
        });
        let (mut y0, mut y1) = all
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        for &(x, y, ex, ey) in &bars {
            if !self.log_x || x - ex > 0.0 {
                x0 = x0.min(tx(x - ex));
            }
            x1 = x1.max(tx(x + ex));
            y0 = y0.min(y - ey);
            y1 = y1.max(y + ey);
        }
        let padx = if x1 > x0 {
            ((x1 - x0) * 0.06).max(if self.log_x { 0.08 } else { 0.0 })
        } else if self.log_x {
            0.3
        } else {
            x0.abs().max(1.0) * 0.1
        };
        let pady = if y1 > y0 { (y1 - y0) * 0.08 } else { 1.0 };
        x0 -= padx;
        x1 += padx;
        y0 -= pady;
        y1 += pady;
        if let Some((lo, hi)) = self.y_bounds {
            y0 = y0.max(lo);
            y1 = y1.min(hi);
        }
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * PW;
        let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * PH;
        // Grid, ticks and the frame.
        s.push_str("<g class=\"axes\">\n");
        for v in ticks(y0, y1, 6) {
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + PW,
                LEFT - 6.0,
                y + 4.0,
                short(v)
            );
        }
        let (major, minor) = if self.log_x {
            log_ticks(10f64.powf(x0), 10f64.powf(x1))
        } else {
            (ticks(x0, x1, 6), vec![])
        };
        for v in minor {
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/>"##,
                TOP + PH,
                x = px(v)
            );
        }
        for v in major {
            let x = px(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e3e3e3"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + PH,
                TOP + PH,
                TOP + PH + 5.0,
                TOP + PH + 18.0,
                short(v)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{PW}" height="{PH}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + PW / 2.0,
            TOP + PH + 42.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            TOP + PH / 2.0,
            TOP + PH / 2.0,
            esc(&self.y_label)
        );
        s.push_str("</g>\n");
        // Front: a step line through the non-dominated points, continued to the right edge.
        if !front.is_empty() {
            let mut d = String::new();
            for (k, &i) in front.iter().enumerate() {
                let (x, y) = (px(all[i].0), py(all[i].1));
                if k == 0 {
                    let _ = write!(d, "M{x:.1},{y:.1}");
                } else {
                    let _ = write!(d, " H{x:.1} V{y:.1}");
                }
            }
            let _ = write!(d, " H{:.1}", LEFT + PW);
            let _ = writeln!(
                s,
                r##"<path class="front" d="{d}" fill="none" stroke="#222" stroke-width="1.5" stroke-dasharray="5 3"/>"##
            );
        }
        // Error bars (clipped to the plot area), under the markers.
        let (xl, xr, yt, yb) = (LEFT, LEFT + PW, TOP, TOP + PH);
        for (k, series) in self.series.iter().enumerate() {
            let (c, _) = style(series.style.unwrap_or(k));
            for (p, &(ex, ey)) in series.points.iter().zip(&series.errors) {
                if !ok(p.0, p.1) {
                    continue;
                }
                let (x, y) = (px(p.0), py(p.1));
                let (ex, ey) = (bar(ex), bar(ey));
                // Bars shorter than a pixel (a spread of rounding noise) are not drawn.
                if ex > 0.0 {
                    let lo = if self.log_x && p.0 - ex <= 0.0 {
                        xl
                    } else {
                        px(p.0 - ex).max(xl)
                    };
                    let hi = px(p.0 + ex).min(xr);
                    if hi - lo >= 1.0 {
                        let _ = writeln!(
                            s,
                            r#"<path class="error-bar" d="M{lo:.1},{y:.1} H{hi:.1} M{lo:.1},{:.1} V{:.1} M{hi:.1},{:.1} V{:.1}" stroke="{c}" stroke-width="1.1" fill="none"/>"#,
                            y - 3.0,
                            y + 3.0,
                            y - 3.0,
                            y + 3.0
                        );
                    }
                }
                if ey > 0.0 {
                    let top = py(p.1 + ey).max(yt);
                    let bottom = py(p.1 - ey).min(yb);
                    if bottom - top >= 1.0 {
                        let _ = writeln!(
                            s,
                            r#"<path class="error-bar" d="M{x:.1},{top:.1} V{bottom:.1} M{:.1},{top:.1} H{:.1} M{:.1},{bottom:.1} H{:.1}" stroke="{c}" stroke-width="1.1" fill="none"/>"#,
                            x - 3.0,
                            x + 3.0,
                            x - 3.0,
                            x + 3.0
                        );
                    }
                }
            }
        }
        // Series: sweep lines, then markers.
        for (k, series) in self.series.iter().enumerate() {
            let (c, shape) = style(series.style.unwrap_or(k));
            let _ = writeln!(s, r#"<g class="series" data-name="{}">"#, esc(&series.name));
            for line in &series.lines {
                let pts: Vec<String> = line
                    .iter()
                    .filter_map(|&i| series.points.get(i))
                    .filter(|p| ok(p.0, p.1))
                    .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
                    .collect();
                if pts.len() > 1 {
                    let _ = writeln!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.3" stroke-opacity="0.7"/>"#,
                        pts.join(" ")
                    );
                }
            }
            for (x, y, label) in &series.points {
                if !ok(*x, *y) {
                    continue;
                }
                let m = point(shape, px(*x), py(*y), c, series.hollow);
                // The tooltip goes inside the marker element.
                let m = m.trim_end_matches("/>");
                let _ = writeln!(
                    s,
                    "{m}><title>{}: {}, {}</title></{}>",
                    esc(label),
                    short(*x),
                    short(*y),
                    m.trim_start_matches('<').split(' ').next().unwrap_or("g")
                );
            }
            s.push_str("</g>\n");
        }
        for &i in &front {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="7.5" fill="none" stroke="#222" stroke-width="1.2"/>"##,
                px(all[i].0),
                py(all[i].1)
            );
        }
        for (x, y, text) in &self.notes {
            if !ok(*x, *y) {
                continue;
            }
            // Below the point, centred, kept inside the plot area.
            let half = text_width(text, 11.0) / 2.0;
            let nx = px(*x).clamp(LEFT + half + 3.0, LEFT + PW - half - 3.0);
            let ny = py(*y) + 22.0;
            let ny = if ny > TOP + PH - 4.0 {
                py(*y) - 12.0
            } else {
                ny
            };
            let _ = writeln!(
                s,
                r##"<text x="{nx:.1}" y="{ny:.1}" font-size="11" fill="#222" text-anchor="middle">{}</text>"##,
                esc(text)
            );
        }
        s.push_str(&legend_svg);
        s.push_str("</svg>\n");
        s
    }
}

/// Grouped bar chart: one group per layer, one bar per network (e.g. channels of the searched
/// networks next to their seed).
pub fn bars(
    title: &str,
    y_label: &str,
    layers: &[String],
    networks: &[(String, Vec<f64>)],
) -> String {
    let entries: Vec<Entry> = networks
        .iter()
        .enumerate()
        .map(|(k, (name, _))| {
            let c = COLOURS[k % COLOURS.len()];
            (
                name.clone(),
                Box::new(move |x: f64, y: f64| {
                    format!(
                        r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{c}"/>"#,
                        x - 6.0,
                        y - 6.0
                    )
                }) as Box<dyn Fn(f64, f64) -> String>,
            )
        })
        .collect();
    let (legend_svg, right, bottom) = legend(LEFT + PW + 16.0, TOP, &entries);
    let (w, h) = canvas(right, bottom, title);
    let mut s = header(w, h, title);
    let n = layers.len().max(1) as f64;
    let k = networks.len().max(1) as f64;
    let ymax = networks
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.08;
    for v in ticks(0.0, ymax, 5) {
        let y = TOP + (1.0 - v / ymax) * PH;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + PW,
            LEFT - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let gw = PW / n;
    let bw = gw * 0.8 / k;
    let widest = layers
        .iter()
        .map(|l| text_width(l, 10.0))
        .fold(0.0f64, f64::max);
    let rotate = widest > gw - 4.0;
    for (li, layer) in layers.iter().enumerate() {
        let gx = LEFT + gw * li as f64 + gw * 0.1;
        for (ni, (name, vals)) in networks.iter().enumerate() {
            let v = vals.get(li).copied().unwrap_or(0.0);
            if !v.is_finite() {
                continue;
            }
            let h = v / ymax * PH;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} = {}</title></rect>"#,
                gx + bw * ni as f64,
                TOP + PH - h,
                bw,
                h,
                COLOURS[ni % COLOURS.len()],
                esc(name),
                esc(layer),
                short(v)
            );
        }
        let (lx, ly) = (gx + gw * 0.4, TOP + PH + 14.0);
        if rotate {
            let _ = writeln!(
                s,
                r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="end" font-size="10" transform="rotate(-35 {lx:.1} {ly:.1})">{}</text>"#,
                esc(layer)
            );
        } else {
            let _ = writeln!(
                s,
                r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                esc(layer)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{PW}" height="{PH}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + PH / 2.0,
        TOP + PH / 2.0,
        esc(y_label)
    );
    if !rotate {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">layer</text>"#,
            LEFT + PW / 2.0,
            TOP + PH + 42.0
        );
    }
    s.push_str(&legend_svg);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks() {
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(3.0, 47.0, 4), vec![10.0, 20.0, 30.0, 40.0]);
    }

    #[test]
    fn log_ticks_label_decades_or_one_two_five() {
        let (major, minor) = log_ticks(800.0, 120_000.0);
        assert_eq!(major, vec![1e3, 1e4, 1e5]);
        assert_eq!(
            minor.len(),
            2 + 8 + 8,
            "0.8k, 0.9k, 2k…9k, 20k…90k: {minor:?}"
        );
        let (major, _) = log_ticks(1500.0, 30_000.0);
        assert_eq!(major, vec![2e3, 5e3, 1e4, 2e4]);
        assert_eq!(
            log_ticks(0.012, 0.09).0,
            vec![0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09],
            "1, 2, 5 give only two ticks: every 1…9 × 10^k"
        );
        assert_eq!(short(0.05), "0.05");
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(12500.0), "12.5k");
        assert_eq!(short(2_700_000.0), "2.7M");
        assert_eq!(short(0.9), "0.9");
        assert_eq!(short(78000.0), "78k");
        assert_eq!(short(1000.0), "1k");
        assert_eq!(short(100_000.0), "100k");
        assert_eq!(short(0.002), "0.002");
        assert_eq!(short(85.0), "85");
    }

    #[test]
    fn twelve_series_get_distinct_styles() {
        let styles: Vec<_> = (0..12).map(style).collect();
        for i in 0..12 {
            for j in 0..i {
                assert_ne!(styles[i].0, styles[j].0, "colours {i} and {j}");
            }
        }
        for i in 1..24 {
            assert_ne!(style(i).1, style(i - 1).1, "neighbours differ in shape");
        }
        let all: std::collections::BTreeSet<_> = (0..72).map(style).collect();
        assert_eq!(
            all.len(),
            72,
            "72 series before a (colour, shape) pair repeats"
        );
    }

    #[test]
    fn scatter_is_deterministic_and_draws_front() {
        let plot = Scatter {
            title: "accuracy vs params".into(),
            x_label: "parameters".into(),
            y_label: "test accuracy".into(),
            log_x: true,
            series: vec![
                Series {
                    name: "pit".into(),
                    points: vec![(1e4, 0.9, "a".into()), (2e4, 0.92, "b".into())],
                    lines: vec![vec![0, 1]],
                    ..Default::default()
                },
                Series {
                    name: "l1 <x>".into(),
                    points: vec![(1.5e4, 0.85, "c".into()), (f64::NAN, 0.5, "skip".into())],
                    lines: vec![],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let a = plot.render();
        assert_eq!(a, plot.render());
        assert!(a.starts_with("<svg"));
        assert!(a.trim_end().ends_with("</svg>"));
        assert_eq!(a.matches("<title>").count(), 3, "3 points with tooltips");
        assert_eq!(
            a.matches("class=\"legend-entry\"").count(),
            3,
            "2 series and the front"
        );
        assert_eq!(a.matches("<polyline").count(), 1, "the pit sweep is joined");
        assert!(a.contains("l1 &lt;x&gt; (1)"));
        // Front: a (1e4, 0.9) then b (2e4, 0.92); c is dominated by… nothing cheaper and
        // better, so it is not on it (a is cheaper and better).
        assert!(a.contains("<path class=\"front\" d=\"M"));
        assert_eq!(a.matches("r=\"7.5\"").count(), 2, "two front points ringed");
        assert!(!a.contains("skip"));
    }

    #[test]
    fn bars_render_every_layer() {
        let svg = bars(
            "channels",
            "channels",
            &["c0".into(), "c1".into()],
            &[
                ("seed".into(), vec![64.0, 64.0]),
                ("pit".into(), vec![20.0, 33.0]),
            ],
        );
        assert_eq!(svg.matches("<title>").count(), 4, "4 bars");
        assert_eq!(svg.matches("class=\"legend-entry\"").count(), 2);
    }
}
