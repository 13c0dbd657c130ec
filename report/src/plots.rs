//! Loss curves: for each varied parameter, one SVG with three panels (content,
//! style and total loss against iteration, log scale), one line per task coloured
//! by that parameter's value. SVG text is drawn by the viewer: no font is needed here.

use plotters::prelude::*;

use crate::axes::Axes;
use crate::load::JobData;
use crate::{ReportError, ReportJob};

pub(crate) const WIDTH: u32 = 1200;
pub(crate) const HEIGHT: u32 = 420;

/// Tableau's ten colours: distinct, and readable on white.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(crate) struct Plot {
    /// File name in the report, e.g. `plots/loss-style_weight.svg`.
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// One series: a task's points and the legend entry it stands for.
struct Series {
    group: usize,
    points: [Vec<(f64, f64)>; 3],
}

const PANELS: [&str; 3] = ["content loss", "style loss", "total loss"];

pub(crate) fn loss_plots(
    job: &ReportJob,
    axes: &Axes,
    data: &JobData<'_>,
) -> Result<Vec<Plot>, ReportError> {
    let series_for = |group_of: &dyn Fn(usize) -> usize| -> Vec<Series> {
        data.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.losses.is_empty())
            .map(|(i, t)| Series {
                group: group_of(i),
                points: [
                    t.losses
                        .iter()
                        .map(|r| (f64::from(r.iteration), r.content))
                        .collect(),
                    t.losses
                        .iter()
                        .map(|r| (f64::from(r.iteration), r.style))
                        .collect(),
                    t.losses
                        .iter()
                        .map(|r| (f64::from(r.iteration), r.total))
                        .collect(),
                ],
            })
            .collect()
    };
    if axes.varied.is_empty() {
        let file = "plots/loss.svg".to_owned();
        let title = format!("{}: losses", job.name);
        let svg = draw(&title, &["all tasks".to_owned()], &series_for(&|_| 0))
            .map_err(|message| plot_error(&file, message))?;
        return Ok(vec![Plot { file, title, svg }]);
    }
    // An axis that another decides (`lr` by `optimizer`) would repeat that one's plot.
    axes.varied
        .iter()
        .zip(&axes.dependent)
        .filter(|(_, &dependent)| !dependent)
        .map(|(axis, _)| {
            let name = axis.param.name();
            let file = format!("plots/loss-{name}.svg");
            let title = format!("{}: losses by {name}", job.name);
            let legend: Vec<String> = axis.values.clone();
            let svg = draw(&title, &legend, &series_for(&|t| axis.of_task[t]))
                .map_err(|message| plot_error(&file, message))?;
            Ok(Plot { file, title, svg })
        })
        .collect()
}

fn plot_error(file: &str, message: String) -> ReportError {
    ReportError::Plot {
        name: file.to_owned(),
        message,
    }
}

fn draw(title: &str, legend: &[String], series: &[Series]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((1, 3));
        for (p, area) in panels.iter().enumerate() {
            panel(area, PANELS[p], legend, series, p).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type Area<'a, 'b> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area<'_, '_>,
    caption: &str,
    legend: &[String],
    series: &[Series],
    which: usize,
) -> Result<(), Box<dyn std::error::Error + 'static>> {
    // Log scale: only positive losses can be drawn.
    let points = || {
        series
            .iter()
            .flat_map(move |s| s.points[which].iter())
            .filter(|(_, y)| y.is_finite() && *y > 0.0)
    };
    let x_max = points().map(|(x, _)| *x).fold(1.0, f64::max);
    let (lo, hi) = points().fold((f64::INFINITY, 0.0f64), |(lo, hi), (_, y)| {
        (lo.min(*y), hi.max(*y))
    });
    let (lo, hi) = if hi > 0.0 {
        if hi / lo < 10.0 {
            let mid = (lo * hi).sqrt();
            (mid / 4.0, mid * 4.0)
        } else {
            (lo / 1.5, hi * 1.5)
        }
    } else {
        (0.1, 10.0)
    };

    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v| tick(*v))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;

    let mut labelled = vec![false; legend.len()];
    for s in series {
        let color = PALETTE[s.group % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s.points[which]
            .iter()
            .copied()
            .filter(|(_, y)| y.is_finite() && *y > 0.0)
            .collect();
        let drawn = chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if !std::mem::replace(&mut labelled[s.group], true) {
            // plotters sizes the legend box from a rough estimate of the text's
            // width (no font is loaded), short of what viewers draw: pad it.
            let label = &legend[s.group];
            let padded = format!("{label}{}", " ".repeat(label.chars().count() / 3 + 2));
            drawn.label(padded).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        }
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if labelled.iter().any(|&l| l) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A log-axis tick: `0.05`, `20`, `3000`, `2e6`.
fn tick(v: f64) -> String {
    let a = v.abs();
    if (1.0..1e5).contains(&a) {
        format!("{v:.0}")
    } else if (0.01..1.0).contains(&a) {
        format!("{v:.2}")
    } else {
        format!("{v:.0e}")
    }
}
