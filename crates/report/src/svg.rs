//! SVG scatter plots (accuracy against a cost, Pareto front drawn as a step line) and bar
//! charts (per-layer channels), written by hand as plain deterministic text so that two
//! renders of the same numbers are byte-identical.

use std::fmt::Write;

/// One group of points drawn with one colour and listed in the legend.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// (x, y, label) — the label is shown as a tooltip (`<title>`).
    pub points: Vec<(f64, f64, String)>,
}

/// A scatter plot of `series` with the Pareto front of all points (x ↓, y ↑) drawn on top.
#[derive(Clone, Debug)]
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

/// A short number label: 12500 → "12.5k", 0.9 → "0.9".
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
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
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
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            LEFT + (W - LEFT - RIGHT) / 2.0,
            esc(&self.title)
        );
        if all.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">no data</text>"#,
                W / 2.0,
                H / 2.0
            );
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
        let padx = if x1 > x0 { (x1 - x0) * 0.05 } else { 0.5 };
        let pady = if y1 > y0 { (y1 - y0) * 0.08 } else { 0.05 };
        x0 -= padx;
        x1 += padx;
        y0 -= pady;
        y1 += pady;
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * ph;
        // Axes and grid.
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        for v in ticks(y0, y1, 5) {
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                short(v)
            );
        }
        let xt: Vec<f64> = if self.log_x {
            ticks(x0, x1, 5)
                .into_iter()
                .map(|e| 10f64.powf(e))
                .collect()
        } else {
            ticks(x0, x1, 6)
        };
        for v in xt {
            let x = px(v);
            if !(LEFT - 0.5..=LEFT + pw + 0.5).contains(&x) {
                continue;
            }
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                short(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 14.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        // Front as a step line through the non-dominated points.
        let front = crate::pareto::front(&all);
        if front.len() > 1 {
            let mut d = String::new();
            for (k, &i) in front.iter().enumerate() {
                let (x, y) = (px(all[i].0), py(all[i].1));
                if k == 0 {
                    let _ = write!(d, "M{x:.1},{y:.1}");
                } else {
                    let _ = write!(d, " H{x:.1} V{y:.1}");
                }
            }
            let _ = writeln!(
                s,
                r##"<path d="{d}" fill="none" stroke="#444" stroke-dasharray="4 3"/>"##
            );
        }
        // Points and legend.
        for (k, series) in self.series.iter().enumerate() {
            let c = COLOURS[k % COLOURS.len()];
            for (x, y, label) in &series.points {
                if !ok(*x, *y) {
                    continue;
                }
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}" fill-opacity="0.85"><title>{}</title></circle>"#,
                    px(*x),
                    py(*y),
                    esc(label)
                );
            }
            let ly = TOP + 10.0 + 18.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{ly:.1}" r="4" fill="{c}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                W - RIGHT + 16.0,
                W - RIGHT + 26.0,
                ly + 4.0,
                esc(&series.name)
            );
        }
        let ly = TOP + 10.0 + 18.0 * self.series.len() as f64;
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#444" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}">Pareto front</text>"##,
            W - RIGHT + 10.0,
            W - RIGHT + 22.0,
            W - RIGHT + 26.0,
            ly + 4.0
        );
        s.push_str("</svg>\n");
        s
    }
}

/// Grouped bar chart: one group per layer, one bar per network (e.g. channels of a searched
/// network next to its seed).
pub fn bars(
    title: &str,
    y_label: &str,
    layers: &[String],
    networks: &[(String, Vec<f64>)],
) -> String {
    let mut s = String::new();
    let n = layers.len().max(1) as f64;
    let k = networks.len().max(1) as f64;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let ymax = networks
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    for v in ticks(0.0, ymax, 5) {
        let y = TOP + (1.0 - v / ymax) * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let gw = pw / n;
    let bw = gw * 0.8 / k;
    for (li, layer) in layers.iter().enumerate() {
        let gx = LEFT + gw * li as f64 + gw * 0.1;
        for (ni, (name, vals)) in networks.iter().enumerate() {
            let v = vals.get(li).copied().unwrap_or(0.0);
            if !v.is_finite() {
                continue;
            }
            let h = v / ymax * ph;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} = {}</title></rect>"#,
                gx + bw * ni as f64,
                TOP + ph - h,
                bw,
                h,
                COLOURS[ni % COLOURS.len()],
                esc(name),
                esc(layer),
                short(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
            gx + gw * 0.4,
            TOP + ph + 14.0,
            esc(layer)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (ni, (name, _)) in networks.iter().enumerate() {
        let ly = TOP + 10.0 + 18.0 * ni as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            W - RIGHT + 12.0,
            ly - 5.0,
            COLOURS[ni % COLOURS.len()],
            W - RIGHT + 26.0,
            ly + 4.0,
            esc(name)
        );
    }
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
    fn short_labels() {
        assert_eq!(short(12500.0), "12.5k");
        assert_eq!(short(2_700_000.0), "2.7M");
        assert_eq!(short(0.9), "0.9");
        assert_eq!(short(78000.0), "78k");
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
                },
                Series {
                    name: "l1 <x>".into(),
                    points: vec![(1.5e4, 0.85, "c".into()), (f64::NAN, 0.5, "skip".into())],
                },
            ],
        };
        let a = plot.render();
        assert_eq!(a, plot.render());
        assert!(a.starts_with("<svg"));
        assert!(a.trim_end().ends_with("</svg>"));
        assert_eq!(
            a.matches("<circle cx").count(),
            3 + 2,
            "3 points and 2 legend markers"
        );
        assert!(a.contains("l1 &lt;x&gt;"));
        assert!(a.contains("<path d=\"M"), "front with two points is drawn");
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
        assert_eq!(
            svg.matches("<rect x=").count(),
            1 + 4 + 2,
            "frame, 4 bars, 2 legend swatches"
        );
    }
}
