//! `ubox-bench plot`: SVG charts of the JSON results the scenarios write.
//!
//! Reads result files (`bench/results/*.json` by default, or the files and
//! directories given) and writes up to three charts with `plotters`' SVG
//! backend:
//!
//! - `throughput.svg`: every result where higher is better, ubox's bar next
//!   to its peer's, one panel per unit (Mpps, Gbit/s, req/s), the ratio on
//!   ubox's bar and the peer's name on its own;
//! - `events.svg`: the event path (`events-*` results) by number of NFs in
//!   the chain: Mpps, and the worker's and the NF's ns per event, sequential
//!   chains as lines and the parallel group of 3 as its own points;
//! - `latency-cdf.svg`: a latency CDF per wrk case of `e2e` and `l7lb`, one
//!   curve per contender, from the percentiles wrk reports (50, 75, 90, 99
//!   and its maximum as 100): five points per curve, joined by straight
//!   lines, so a sketch of the distribution rather than all of it.
//!
//! Text is written as SVG `<text>` elements (the viewer picks the font);
//! plotters is built without its `ttf` feature, so nothing here reads font
//! files or needs fontconfig (widths for layout are estimated).
//!
//! A file that is not a result (not JSON, or JSON of another shape) is an
//! error naming it; so is finding no file at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

use crate::result::{Better, ScenarioResult};

const FONT: &str = "sans-serif";
const UBOX: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PEER: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
/// Curve colours, ubox contenders first.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// `l7lb.json`, as far as the charts read it.
#[derive(Debug, Deserialize)]
pub struct L7lbSummary {
    pub scenario: String,
    pub contenders: Vec<L7lbContender>,
}

#[derive(Debug, Deserialize)]
pub struct L7lbContender {
    pub label: String,
    pub status: String,
    pub cases: Vec<L7lbCase>,
}

#[derive(Debug, Deserialize)]
pub struct L7lbCase {
    pub case: String,
    #[serde(default)]
    pub latency_percentiles: Vec<f64>,
    #[serde(default)]
    pub latency_ms: Vec<f64>,
}

/// What the result files held.
#[derive(Debug, Default)]
pub struct Loaded {
    pub results: Vec<ScenarioResult>,
    pub l7lb: Vec<L7lbSummary>,
    pub files: usize,
}

/// The JSON files among `inputs`: files as given, directories' `*.json`.
pub fn result_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).with_context(|| format!("{}: cannot read it", p.display()))?;
        if meta.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot list it", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "json") && f.is_file())
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        let list: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "no result file (*.json) in {}: run a scenario first (e.g. `sudo ubox-bench wire`) or name the files",
            list.join(", ")
        );
    }
    Ok(files)
}

/// Reads one result file: a scenario result or the l7lb summary.
fn load_file(path: &Path, into: &mut Loaded) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read it", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not JSON (not a ubox-bench result)", path.display()))?;
    if v.get("contenders").is_some() {
        let s: L7lbSummary =
            serde_json::from_value(v).with_context(|| format!("{}: not a ubox-bench l7lb summary", path.display()))?;
        into.l7lb.push(s);
    } else {
        let r: ScenarioResult =
            serde_json::from_value(v).with_context(|| format!("{}: not a ubox-bench result", path.display()))?;
        if !(r.ubox.is_finite() && r.peer.is_finite()) {
            bail!("{}: not a ubox-bench result: ubox or peer is not a number", path.display());
        }
        into.results.push(r);
    }
    into.files += 1;
    Ok(())
}

pub fn load(inputs: &[PathBuf]) -> anyhow::Result<Loaded> {
    let mut l = Loaded::default();
    for f in result_files(inputs)? {
        load_file(&f, &mut l)?;
    }
    Ok(l)
}

/// Writes the charts there is data for into `dir`; returns their paths and,
/// for each chart not written, why.
pub fn plot(loaded: &Loaded, dir: &Path) -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut skipped = Vec::new();
    // Higher-is-better results, less the baselines a scenario compares
    // with themselves (events-0nf, monitor-wire, l4lb-*-wire: the very
    // samples on both sides).
    let tp: Vec<&ScenarioResult> = loaded
        .results
        .iter()
        .filter(|r| r.better == Better::Higher)
        .filter(|r| r.samples_ubox.is_empty() || r.samples_ubox != r.samples_peer)
        .collect();
    if tp.is_empty() {
        skipped.push("throughput.svg: no throughput result".to_string());
    } else {
        let p = dir.join("throughput.svg");
        throughput(&tp, &p).with_context(|| format!("drawing {}", p.display()))?;
        written.push(p);
    }
    let ev = events_points(&loaded.results);
    if ev.is_empty() {
        skipped.push("events.svg: no events-* result".to_string());
    } else {
        let p = dir.join("events.svg");
        events(&ev, &p).with_context(|| format!("drawing {}", p.display()))?;
        written.push(p);
    }
    let lat = latency_curves(loaded);
    if lat.is_empty() {
        skipped.push("latency-cdf.svg: no latency percentiles (e2e or l7lb wrk results of this version)".to_string());
    } else {
        let p = dir.join("latency-cdf.svg");
        latency_cdf(&lat, &p).with_context(|| format!("drawing {}", p.display()))?;
        written.push(p);
    }
    Ok((written, skipped))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// A figure as read: 3 significant digits, no exponent for usual values.
fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// An axis tick: no trailing zeros.
fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Estimated width in pixels of `s` at font size `px`.
fn text_w(s: &str, px: u32) -> u32 {
    (s.chars().count() as u32 * px * 55) / 100
}

fn unit_rank(u: &str) -> (u8, String) {
    let r = match u {
        "Mpps" => 0,
        "Gbit/s" => 1,
        "req/s" => 2,
        _ => 3,
    };
    (r, u.to_string())
}

const BAR_ROW: u32 = 40;
const PANEL_EXTRA: u32 = 80;

fn throughput(results: &[&ScenarioResult], path: &Path) -> anyhow::Result<()> {
    // A panel per unit and scenario family (the name up to its first
    // `-`: wire, events, monitor, l4lb, e2e, l7lb), so that one axis never
    // holds figures of different kinds (a replay's Gbit/s next to iperf3's).
    let mut by_unit: BTreeMap<((u8, String), String), Vec<&ScenarioResult>> = BTreeMap::new();
    for r in results {
        let family = r.scenario.split('-').next().unwrap_or_default().to_string();
        by_unit.entry((unit_rank(&r.metric), family)).or_default().push(r);
    }
    for v in by_unit.values_mut() {
        v.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    }
    let label_w = results.iter().map(|r| text_w(&r.scenario, 14)).max().unwrap_or(100) + 20;
    let width = 760 + label_w;
    let title_h = 70;
    let heights: Vec<u32> = by_unit.values().map(|v| PANEL_EXTRA + BAR_ROW * v.len() as u32).collect();
    let height = title_h + heights.iter().sum::<u32>();
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    root.draw(&Text::new(
        "Throughput: ubox against its peer (medians of the rounds)",
        (20, 14),
        (FONT, 22).into_font().style(FontStyle::Bold),
    ))
    .map_err(err)?;
    let legend = (FONT, 14).into_font();
    root.draw(&Rectangle::new([(20, 46), (34, 58)], UBOX.filled())).map_err(err)?;
    root.draw(&Text::new("ubox", (40, 45), legend.clone())).map_err(err)?;
    root.draw(&Rectangle::new([(100, 46), (114, 58)], PEER.filled())).map_err(err)?;
    root.draw(&Text::new("peer (named at its bar; ×N on ubox's bar = ubox / peer)", (120, 45), legend)).map_err(err)?;
    let body = root.margin(title_h, 0, 0, 0);
    let mut breaks = Vec::new();
    let mut y = 0;
    for h in &heights[..heights.len() - 1] {
        y += *h as i32;
        breaks.push(y);
    }
    let panels = body.split_by_breakpoints(Vec::<i32>::new(), breaks);
    for ((((_, unit), family), rs), area) in by_unit.iter().zip(&panels) {
        bar_panel(&root, area, &format!("{family}: {unit}"), unit, rs, label_w)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn bar_panel(
    root: &Area,
    area: &Area,
    caption: &str,
    unit: &str,
    rs: &[&ScenarioResult],
    label_w: u32,
) -> anyhow::Result<()> {
    let n = rs.len();
    let max = rs.iter().map(|r| r.ubox.max(r.peer)).fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.45 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18).into_font().style(FontStyle::Bold))
        .margin_left(10)
        .margin_right(30)
        .margin_top(6)
        .x_label_area_size(34)
        .y_label_area_size(label_w)
        .build_cartesian_2d(0.0..max, 0.0..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(8)
        .x_desc(unit)
        .x_label_formatter(&|v| tick(*v))
        .label_style((FONT, 12))
        .draw()
        .map_err(err)?;
    let small = (FONT, 12).into_font();
    for (i, r) in rs.iter().enumerate() {
        let top = (n - 1 - i) as f64;
        let ub = [(0.0, top + 0.52), (r.ubox.max(0.0), top + 0.88)];
        let pb = [(0.0, top + 0.12), (r.peer.max(0.0), top + 0.48)];
        chart.draw_series([Rectangle::new(ub, UBOX.filled()), Rectangle::new(pb, PEER.filled())]).map_err(err)?;
        let ratio = if r.peer > 0.0 { format!("  ×{:.2}", r.ubox / r.peer) } else { String::new() };
        let pos = |x: f64, y: f64| {
            let (px, py) = chart.backend_coord(&(x, y));
            (px + 4, py)
        };
        let anchor = Pos::new(HPos::Left, VPos::Center);
        root.draw(&Text::new(
            format!("{}{ratio}", fmt(r.ubox)),
            pos(r.ubox.max(0.0), top + 0.70),
            TextStyle::from(small.clone()).pos(anchor),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            format!("{}  {}", fmt(r.peer), r.peer_name),
            pos(r.peer.max(0.0), top + 0.30),
            TextStyle::from(small.clone()).pos(anchor),
        ))
        .map_err(err)?;
        let (lx, ly) = chart.backend_coord(&(0.0, top + 0.5));
        root.draw(&Text::new(
            r.scenario.clone(),
            (lx - 8, ly),
            TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// One `events-*` result on the chart: NFs in the chain, parallel or not.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPoint {
    pub nfs: u32,
    pub parallel: bool,
    pub mpps: f64,
    pub worker_ns: Option<f64>,
    pub nf_ns: Option<f64>,
}

/// `events-<N>nf` and `events-parallel<N>`, by NFs.
pub fn events_points(results: &[ScenarioResult]) -> Vec<EventPoint> {
    let mut v: Vec<EventPoint> = results
        .iter()
        .filter_map(|r| {
            let rest = r.scenario.strip_prefix("events-")?;
            let (nfs, parallel) = if let Some(n) = rest.strip_suffix("nf") {
                (n.parse().ok()?, false)
            } else {
                (rest.strip_prefix("parallel")?.parse().ok()?, true)
            };
            let x = |k: &str| r.extra.get(k).copied().filter(|v| v.is_finite());
            Some(EventPoint {
                nfs,
                parallel,
                mpps: r.ubox,
                worker_ns: x("worker_ns_per_event"),
                nf_ns: x("nf_ns_per_event"),
            })
        })
        .collect();
    v.sort_by_key(|p| (p.parallel, p.nfs));
    v
}

/// One panel of the event-path chart: NFs in the chain (0..=`max_nfs`) on
/// x, `y_desc` from 0 to `ymax` on y, with its mesh drawn.
fn nf_panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    y_desc: &str,
    xr: std::ops::Range<f64>,
    ymax: f64,
    max_nfs: f64,
) -> anyhow::Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
> {
    let mut c = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(xr, 0.0..ymax)
        .map_err(err)?;
    c.configure_mesh()
        .x_labels(max_nfs as usize + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("NFs in the chain")
        .y_desc(y_desc)
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 12))
        .draw()
        .map_err(err)?;
    Ok(c)
}

fn events(points: &[EventPoint], path: &Path) -> anyhow::Result<()> {
    let full = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    full.fill(&WHITE).map_err(err)?;
    let root = full
        .titled(
            "Event path: every packet through a chain of counter NFs",
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .map_err(err)?;
    let (left, right) = root.split_horizontally(550);
    let max_nfs = points.iter().map(|p| p.nfs).max().unwrap_or(3).max(1) as f64;
    let xr = -0.3..max_nfs + 0.3;
    let seq = |f: &dyn Fn(&EventPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points.iter().filter(|p| !p.parallel).filter_map(|p| Some((p.nfs as f64, f(p)?))).collect()
    };
    let par = |f: &dyn Fn(&EventPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points.iter().filter(|p| p.parallel).filter_map(|p| Some((p.nfs as f64, f(p)?))).collect()
    };

    // Throughput.
    let mpps_max = points.iter().map(|p| p.mpps).fold(0.0, f64::max).max(0.001) * 1.2;
    let mut c = nf_panel(&left, "throughput", "Mpps", xr.clone(), mpps_max, max_nfs)?;
    let s = seq(&|p| Some(p.mpps));
    c.draw_series(LineSeries::new(s.clone(), UBOX.stroke_width(2)))
        .map_err(err)?
        .label("sequential")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], UBOX.stroke_width(2)));
    c.draw_series(s.iter().map(|&p| Circle::new(p, 4, UBOX.filled()))).map_err(err)?;
    c.draw_series(par(&|p| Some(p.mpps)).into_iter().map(|p| TriangleMarker::new(p, 7, PEER.filled())))
        .map_err(err)?
        .label("parallel group")
        .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, PEER.filled()));
    for p in points {
        let (px, py) = c.backend_coord(&(p.nfs as f64, p.mpps));
        // Backend coordinates: drawn on the whole picture. Sequential
        // figures above their point, the parallel group's below its own.
        let (dy, anchor) = if p.parallel { (10, VPos::Top) } else { (-10, VPos::Bottom) };
        full.draw(&Text::new(
            fmt(p.mpps),
            (px + 8, py + dy),
            TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, anchor)),
        ))
        .map_err(err)?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;

    // Cost per event.
    let ns_max = points.iter().flat_map(|p| [p.worker_ns, p.nf_ns]).flatten().fold(0.0, f64::max).max(1.0) * 1.3;
    let mut c = nf_panel(&right, "cost per event", "ns per event", xr, ns_max, max_nfs)?;
    let green = PALETTE[2];
    for (name, col, f) in [
        ("worker ns/event", UBOX, (|p: &EventPoint| p.worker_ns) as fn(&EventPoint) -> Option<f64>),
        ("NF ns/event", green, |p: &EventPoint| p.nf_ns),
    ] {
        let s: Vec<(f64, f64)> = seq(&f).into_iter().filter(|p| p.0 > 0.0).collect();
        c.draw_series(LineSeries::new(s.clone(), col.stroke_width(2)))
            .map_err(err)?
            .label(format!("{name}, sequential"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], col.stroke_width(2)));
        c.draw_series(s.iter().map(|&p| Circle::new(p, 4, col.filled()))).map_err(err)?;
        c.draw_series(par(&f).into_iter().map(|p| TriangleMarker::new(p, 7, col.mix(0.6).filled())))
            .map_err(err)?
            .label(format!("{name}, parallel group"))
            .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, col.mix(0.6).filled()));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One contender's latency distribution in one case.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub contender: String,
    /// (ms, percentile), ascending.
    pub points: Vec<(f64, f64)>,
}

fn curve(contender: &str, pcts: &[f64], ms: &[f64]) -> Option<Curve> {
    if pcts.is_empty() || pcts.len() != ms.len() {
        return None;
    }
    let points: Vec<(f64, f64)> = ms
        .iter()
        .zip(pcts)
        .map(|(&m, &p)| (m, p))
        .filter(|(m, p)| m.is_finite() && *m > 0.0 && p.is_finite())
        .collect();
    (!points.is_empty()).then(|| Curve { contender: contender.to_string(), points })
}

/// Curves per case (`e2e wrk-keepalive`, `l7lb close`, ...), one per
/// contender: from the results' `latency` and l7lb.json's cases.
pub fn latency_curves(l: &Loaded) -> BTreeMap<String, Vec<Curve>> {
    let mut out: BTreeMap<String, Vec<Curve>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut add = |case: &str, c: Option<Curve>| {
        if let Some(c) = c {
            if seen.insert((case.to_string(), c.contender.clone())) {
                out.entry(case.to_string()).or_default().push(c);
            }
        }
    };
    for s in &l.l7lb {
        for c in s.contenders.iter().filter(|c| c.status != "skipped") {
            for k in &c.cases {
                add(&format!("{} {}", s.scenario, k.case), curve(&c.label, &k.latency_percentiles, &k.latency_ms));
            }
        }
    }
    for r in &l.results {
        if let Some(lat) = &r.latency {
            add(&lat.case, curve(&lat.ubox_label, &lat.percentiles, &lat.ubox_ms));
            add(&lat.case, curve(&r.peer_name, &lat.percentiles, &lat.peer_ms));
        }
    }
    for v in out.values_mut() {
        // ubox's contenders first, then the peers, by name.
        v.sort_by(|a, b| {
            (!a.contender.starts_with("ubox"), &a.contender).cmp(&(!b.contender.starts_with("ubox"), &b.contender))
        });
    }
    out
}

fn latency_cdf(cases: &BTreeMap<String, Vec<Curve>>, path: &Path) -> anyhow::Result<()> {
    let cols = if cases.len() > 1 { 2 } else { 1 };
    let rows = cases.len().div_ceil(cols);
    let (pw, ph) = (560u32, 400u32);
    let root = SVGBackend::new(path, (pw * cols as u32, ph * rows as u32 + 70)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            "Latency CDF (wrk: 50, 75, 90, 99 % and the maximum; medians of the rounds)",
            (FONT, 20).into_font().style(FontStyle::Bold),
        )
        .map_err(err)?;
    let areas = root.split_evenly((rows, cols));
    // One colour per contender across the panels, ubox's first.
    let mut labels: Vec<&str> = cases.values().flatten().map(|c| c.contender.as_str()).collect();
    labels.sort_by_key(|l| (!l.starts_with("ubox"), *l));
    labels.dedup();
    let colours: BTreeMap<&str, RGBColor> =
        labels.iter().enumerate().map(|(i, l)| (*l, PALETTE[i % PALETTE.len()])).collect();
    for ((case, curves), area) in cases.iter().zip(&areas) {
        let all = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0));
        let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = (lo * 0.8, (hi * 1.25).max(lo * 1.5));
        let mut c = ChartBuilder::on(area)
            .caption(case, (FONT, 16).into_font().style(FontStyle::Bold))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 40.0..101.0)
            .map_err(err)?;
        c.configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("latency ms (log scale)")
            .y_desc("percentile")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        for cv in curves {
            let col = colours[cv.contender.as_str()];
            c.draw_series(LineSeries::new(cv.points.clone(), col.stroke_width(2)))
                .map_err(err)?
                .label(cv.contender.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], col.stroke_width(2)));
            c.draw_series(cv.points.iter().map(|&p| Circle::new(p, 3, col.filled()))).map_err(err)?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE)
            .label_font((FONT, 13))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ubox-plot-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const E2E_P99: &str = r#"{
  "scenario": "e2e-wrk-keepalive-p99-ubox-afp-vs-testpmd-afp",
  "metric": "p99 latency ms", "ubox": 1.1, "peer_name": "testpmd-afp", "peer": 1.3, "ratio": 0.846,
  "better": "lower", "rounds": 1, "window_s": 2.0, "samples_ubox": [1.1], "samples_peer": [1.3],
  "latency": {"case": "e2e wrk-keepalive", "ubox_label": "ubox-afp", "percentiles": [50, 75, 90, 99, 100],
              "ubox_ms": [0.5, 0.7, 0.9, 1.1, 9.0], "peer_ms": [0.6, 0.8, 1.0, 1.3, 7.5]}
}"#;

    /// A result as an older run wrote it: no latency, no extra.
    const WIRE: &str = r#"{"scenario": "wire-vs-testpmd-io", "metric": "Mpps", "ubox": 11.26, "peer_name": "dpdk-testpmd io",
  "peer": 20.47, "ratio": 0.55, "better": "higher", "rounds": 3, "window_s": 4.0, "samples_ubox": [11.2], "samples_peer": [20.4]}"#;

    fn events_json(s: &str, mpps: f64, w: Option<f64>) -> String {
        let extra = w
            .map(|w| format!(r#", "extra": {{"worker_ns_per_event": {w}, "nf_ns_per_event": 38.0}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"scenario": "{s}", "metric": "Mpps", "ubox": {mpps}, "peer_name": "ubox 0 NFs", "peer": 11.0, "ratio": 1.0{extra}}}"#
        )
    }

    #[test]
    fn plots_fixture_results() {
        let d = tmp("fixture");
        let res = d.join("results");
        std::fs::create_dir_all(&res).unwrap();
        std::fs::write(res.join("wire-vs-testpmd-io.json"), WIRE).unwrap();
        std::fs::write(res.join("e2e-p99.json"), E2E_P99).unwrap();
        for (s, m, w) in [
            ("events-0nf", 11.0, None),
            ("events-1nf", 6.9, Some(53.0)),
            ("events-2nf", 5.0, Some(53.0)),
            ("events-3nf", 3.5, Some(64.0)),
            ("events-parallel3", 4.6, Some(41.0)),
        ] {
            std::fs::write(res.join(format!("{s}.json")), events_json(s, m, w)).unwrap();
        }
        std::fs::write(res.join("notes.txt"), "not a result, not read").unwrap();
        // A baseline compared with itself: not in the throughput chart.
        std::fs::write(
            res.join("monitor-wire.json"),
            r#"{"scenario": "monitor-wire", "metric": "Gbit/s", "ubox": 55.5, "peer_name": "ubox wire", "peer": 55.5,
                "ratio": 1.0, "samples_ubox": [55.5], "samples_peer": [55.5], "extra": {"mpps": null}}"#,
        )
        .unwrap();
        let l = load(std::slice::from_ref(&res)).unwrap();
        assert_eq!(l.files, 8);
        let pts = events_points(&l.results);
        assert_eq!(pts.len(), 5);
        assert_eq!((pts[4].nfs, pts[4].parallel, pts[4].worker_ns), (3, true, Some(41.0)));
        let curves = latency_curves(&l);
        let k = &curves["e2e wrk-keepalive"];
        assert_eq!(k.iter().map(|c| c.contender.as_str()).collect::<Vec<_>>(), ["ubox-afp", "testpmd-afp"]);
        assert_eq!(k[0].points[4], (9.0, 100.0));

        let out = d.join("plots");
        let (written, skipped) = plot(&l, &out).unwrap();
        assert_eq!(written.len(), 3, "{skipped:?}");
        assert_eq!((tick(5.0), tick(0.25), tick(-0.0001)), ("5".into(), "0.25".into(), "0".into()));
        let svg = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
        let t = svg("throughput.svg");
        assert!(t.starts_with("<svg"), "{}", &t[..80.min(t.len())]);
        // Higher-is-better results only: the wire and events ones, not p99.
        for s in ["wire-vs-testpmd-io", "dpdk-testpmd io", "events-3nf", "ubox", "Mpps", "×0.55"] {
            assert!(t.contains(s), "throughput.svg lacks {s}");
        }
        assert!(!t.contains("e2e-wrk-keepalive-p99"), "a lower-is-better result in the throughput chart");
        assert!(!t.contains("monitor-wire"), "a baseline against itself in the throughput chart");
        let e = svg("events.svg");
        for s in [
            "sequential",
            "parallel group",
            "worker ns/event, sequential",
            "NF ns/event, parallel group",
            "NFs in the chain",
        ] {
            assert!(e.contains(s), "events.svg lacks {s}");
        }
        let c = svg("latency-cdf.svg");
        for s in ["e2e wrk-keepalive", "ubox-afp", "testpmd-afp", "percentile"] {
            assert!(c.contains(s), "latency-cdf.svg lacks {s}");
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn l7lb_summary_gives_curves_and_nothing_else() {
        let d = tmp("l7lb");
        let f = d.join("l7lb.json");
        std::fs::write(
            &f,
            r#"{"scenario": "l7lb", "rounds": 1, "contenders": [
                {"label": "ubox", "status": "measured", "repeated": 0, "cases": [
                    {"case": "close", "latency_percentiles": [50, 75, 90, 99, 100], "latency_ms": [1, 1.2, 1.5, 2, 5]}]},
                {"label": "haproxy", "status": "measured", "cases": [
                    {"case": "close", "latency_percentiles": [50, 75, 90, 99, 100], "latency_ms": [2, 3, 5, 13, 20]}]},
                {"label": "kernel", "status": "skipped", "cases": [{"case": "close"}]}]}"#,
        )
        .unwrap();
        let l = load(&[f]).unwrap();
        let c = latency_curves(&l);
        assert_eq!(c["l7lb close"].len(), 2);
        let (written, skipped) = plot(&l, &d.join("p")).unwrap();
        assert_eq!(written, vec![d.join("p").join("latency-cdf.svg")]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn bad_input_names_the_file() {
        let d = tmp("bad");
        let e = load(std::slice::from_ref(&d)).unwrap_err().to_string();
        assert!(e.contains("no result file") && e.contains(&d.display().to_string()), "{e}");
        let missing = d.join("nope");
        let e = format!("{:#}", load(std::slice::from_ref(&missing)).unwrap_err());
        assert!(e.contains("nope"), "{e}");
        std::fs::write(d.join("a.json"), WIRE).unwrap();
        std::fs::write(d.join("b.json"), "{\"scenario\": \"x\", ").unwrap();
        let e = format!("{:#}", load(std::slice::from_ref(&d)).unwrap_err());
        assert!(e.contains("b.json") && e.contains("not JSON"), "{e}");
        std::fs::write(d.join("b.json"), r#"{"scenario": "x", "metric": "Mpps"}"#).unwrap();
        let e = format!("{:#}", load(std::slice::from_ref(&d)).unwrap_err());
        assert!(e.contains("b.json") && e.contains("not a ubox-bench result") && e.contains("ubox"), "{e}");
        std::fs::write(d.join("b.json"), r#"{"contenders": 3}"#).unwrap();
        let e = format!("{:#}", load(std::slice::from_ref(&d)).unwrap_err());
        assert!(e.contains("b.json") && e.contains("l7lb summary"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
