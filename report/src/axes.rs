//! Which parameters vary across a job's tasks, and how the contact sheet lays them out.

use std::collections::{BTreeMap, BTreeSet};

use pastiche_spec::params::table::{Shown, PARAMS};
use pastiche_spec::Style;

use crate::{ReportError, ReportTask};

pub(crate) use pastiche_spec::params::table::format_number;

/// What a task is made of, named as in grid files: its images, and the render
/// parameters of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Content,
    Style,
    Render(&'static pastiche_spec::params::table::Param),
}

impl Param {
    /// Every parameter, in the order the report lists them: the backbone, the
    /// images, then the table's order.
    pub fn all() -> impl Iterator<Item = Param> {
        let (backbone, rest) = PARAMS.split_first().expect("the table is not empty");
        std::iter::once(Param::Render(backbone))
            .chain([Param::Content, Param::Style])
            .chain(rest.iter().map(Param::Render))
    }

    /// The render parameter called `name` (tests and fixed uses).
    pub(crate) fn render(name: &str) -> Param {
        Param::Render(
            pastiche_spec::params::table::Param::find(name).expect("a parameter of the table"),
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Param::Content => "content",
            Param::Style => "style",
            Param::Render(param) => param.name,
        }
    }

    /// A grid-file key (or a common spelling of one).
    pub(crate) fn parse(name: &str) -> Option<Param> {
        match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "content" | "content_image" => Some(Param::Content),
            "style" | "style_image" => Some(Param::Style),
            other => pastiche_spec::params::table::Param::find(other).map(Param::Render),
        }
    }

    /// The content and style images: shown as pictures where they label the sheet.
    pub(crate) fn is_image(self) -> bool {
        matches!(self, Param::Content | Param::Style)
    }

    /// Whether `task` has `wanted` for this parameter, written as the report
    /// shows it (or as the full store key, or the image's name without its
    /// extension); numbers compare as numbers, words regardless of case.
    pub(crate) fn matches(self, task: &ReportTask, wanted: &str) -> bool {
        let value = self.value(task);
        let wanted = wanted.trim();
        if let (Param::Render(param), Some(rank), Ok(number)) =
            (self, value.rank, wanted.parse::<f64>())
        {
            if param.is_numeric() {
                return rank == number;
            }
        }
        let stem = value.label.split('.').next().unwrap_or_default();
        let blend = value.label.contains(" + ");
        [value.id.as_str(), value.label.as_str()]
            .iter()
            .any(|shown| shown.eq_ignore_ascii_case(wanted))
            || (self.is_image() && !blend && stem.eq_ignore_ascii_case(wanted))
    }

    /// The task's value: what tells it apart (the full store key for an image),
    /// how it is shown, and where it sorts.
    fn value(self, task: &ReportTask) -> Shown {
        let image = |key: &str, name: &str| Shown {
            id: key.to_owned(),
            label: name.to_owned(),
            rank: None,
        };
        match self {
            Param::Content => image(&task.content_key, &task.content_name),
            Param::Style => image(&task.style_key, &task.style_name),
            Param::Render(param) => param.shown(&task.params),
        }
    }
}

/// An input (its store key or URL) as people read it: the name `names` gives
/// it (the grid's `[names]`: `chelsea.png`), else its key shortened
/// (`3fa9c2d1.png`).
pub fn input_label(key: &str, names: &BTreeMap<String, String>) -> String {
    names.get(key).cloned().unwrap_or_else(|| short_key(key))
}

/// A task's style (its `style_key`) as people read it: `starry.jpg`, or
/// `starry.jpg 75% + scream.jpg 25%` for a blend, each image by [`input_label`].
pub fn style_label(style_key: &str, names: &BTreeMap<String, String>) -> String {
    match Style::parse(style_key) {
        Ok(style) => style.label(|key| input_label(key, names)),
        Err(_) => input_label(style_key, names),
    }
}

/// `inputs/<sha256>.png` as `3fa9c2d1.png`; other keys by their file name.
pub(crate) fn short_key(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    let (stem, ext) = name.split_once('.').unwrap_or((name, ""));
    if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        if ext.is_empty() {
            stem[..8].to_owned()
        } else {
            format!("{}.{ext}", &stem[..8])
        }
    } else {
        name.to_owned()
    }
}

/// What tells each of `tasks` apart: its values of the parameters that vary
/// across them (`backbone` = `vgg19`, `content` = `chelsea.png`), as reports
/// show them, in [`Param::all`] order.
pub fn varied_values(tasks: &[ReportTask]) -> Vec<Vec<(&'static str, String)>> {
    let axes = Axes::analyse(tasks);
    (0..tasks.len())
        .map(|t| {
            axes.varied
                .iter()
                .map(|axis| (axis.param.name(), axis.values[axis.of_task[t]].clone()))
                .collect()
        })
        .collect()
}

/// A parameter that takes more than one value across the job.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub param: Param,
    /// Its values as shown, sorted (numbers ascending, backbones in their usual
    /// order, anything else as first seen).
    pub values: Vec<String>,
    /// What tells each value apart: the label, or an image's full store key.
    pub ids: Vec<String>,
    /// For each task of the job, the index of its value.
    pub of_task: Vec<usize>,
}

/// The job's parameters, split into those that vary and those that do not.
#[derive(Debug, Clone)]
pub(crate) struct Axes {
    /// In [`Param::all`] order.
    pub varied: Vec<Axis>,
    /// Parameters every task shares, with their value.
    pub fixed: Vec<(Param, String)>,
    /// `determines[j][i]`: the value of axis `j` decides the value of axis `i`
    /// (`backbone` decides the default `content_layers`; `optimizer` and its default
    /// `lr` decide each other).
    pub determines: Vec<Vec<bool>>,
    /// Axes that another axis decides, and that split the tasks no finer: the
    /// sheet gives them no place of their own, nor a plot, nor a say in grouping.
    pub dependent: Vec<bool>,
}

/// Which varied axes (indices into [`Axes::varied`]) label the sheet's rows and
/// columns; the first of each list is the outermost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SheetAxes {
    pub rows: Vec<usize>,
    pub cols: Vec<usize>,
}

/// Above this many columns, the default layout moves axes to the rows.
const MAX_BALANCED_COLUMNS: usize = 8;

impl Axes {
    pub(crate) fn analyse(tasks: &[ReportTask]) -> Axes {
        let mut varied = Vec::new();
        let mut fixed = Vec::new();
        for param in Param::all() {
            let values: Vec<Shown> = tasks.iter().map(|t| param.value(t)).collect();
            let mut distinct: Vec<&Shown> = Vec::new();
            for value in &values {
                if !distinct.iter().any(|d| d.id == value.id) {
                    distinct.push(value);
                }
            }
            if distinct.iter().all(|v| v.rank.is_some()) {
                distinct.sort_by(|a, b| a.rank.partial_cmp(&b.rank).expect("finite ranks"));
            }
            let ids: Vec<String> = distinct.iter().map(|v| v.id.clone()).collect();
            match ids.len() {
                0 => {}
                1 => fixed.push((param, distinct[0].label.clone())),
                _ => {
                    let of_task = values
                        .iter()
                        .map(|v| ids.iter().position(|id| *id == v.id).expect("seen"))
                        .collect();
                    varied.push(Axis {
                        param,
                        values: distinct.iter().map(|v| v.label.clone()).collect(),
                        ids,
                        of_task,
                    });
                }
            }
        }
        let determines: Vec<Vec<bool>> = (0..varied.len())
            .map(|j| {
                (0..varied.len())
                    .map(|i| decides(&varied[j], &varied[i]))
                    .collect()
            })
            .collect();
        // An axis is dependent when a finer one decides it, or an equal one listed
        // before it. The images keep their own place: they label the sheet with pictures.
        let dependent = (0..varied.len())
            .map(|i| {
                !varied[i].param.is_image()
                    && (0..varied.len()).any(|j| {
                        let (nj, ni) = (varied[j].values.len(), varied[i].values.len());
                        j != i && determines[j][i] && (nj > ni || (nj == ni && j < i))
                    })
            })
            .collect();
        Axes {
            varied,
            fixed,
            determines,
            dependent,
        }
    }

    pub(crate) fn find(&self, param: Param) -> Option<usize> {
        self.varied.iter().position(|a| a.param == param)
    }

    pub(crate) fn varied_names(&self) -> Vec<String> {
        self.varied
            .iter()
            .map(|a| a.param.name().to_owned())
            .collect()
    }

    fn resolve(&self, flag: &'static str, name: &str) -> Result<usize, ReportError> {
        let param = Param::parse(name).ok_or_else(|| ReportError::UnknownParameter {
            flag,
            name: name.to_owned(),
            valid: self.varied_names(),
        })?;
        self.find(param).ok_or_else(|| ReportError::NotVaried {
            flag,
            name: name.to_owned(),
            valid: self.varied_names(),
        })
    }

    /// The sheet's layout: `rows`/`cols` as the user named them, the other varied
    /// parameters nested in the columns (or the rows, when only `cols` is given).
    /// By default the content image labels the rows when it varies, else the
    /// parameter with the most values does; the style image prefers the columns;
    /// when the columns would be many, more parameters move to the rows.
    pub(crate) fn choose(
        &self,
        rows: Option<&str>,
        cols: Option<&str>,
    ) -> Result<SheetAxes, ReportError> {
        let row = rows.map(|n| self.resolve("rows", n)).transpose()?;
        let col = cols.map(|n| self.resolve("cols", n)).transpose()?;
        if let (Some(r), Some(c)) = (row, col) {
            if r == c {
                return Err(ReportError::SameAxis(
                    self.varied[r].param.name().to_owned(),
                ));
            }
        }
        // The others: those that vary on their own, and that the chosen ones do not decide.
        let chosen: Vec<usize> = row.iter().chain(col.iter()).copied().collect();
        let rest: Vec<usize> = (0..self.varied.len())
            .filter(|&i| !self.dependent[i] && !chosen.iter().any(|&c| self.determines[c][i]))
            .collect();
        Ok(match (row, col) {
            (Some(r), Some(c)) => SheetAxes {
                rows: vec![r],
                cols: std::iter::once(c).chain(rest).collect(),
            },
            (Some(r), None) => SheetAxes {
                rows: vec![r],
                cols: rest,
            },
            (None, Some(c)) => SheetAxes {
                rows: rest,
                cols: vec![c],
            },
            (None, None) => self.default_layout(rest),
        })
    }

    fn default_layout(&self, mut rest: Vec<usize>) -> SheetAxes {
        if rest.is_empty() {
            return SheetAxes {
                rows: vec![],
                cols: vec![],
            };
        }
        let len = |i: &usize| self.varied[*i].values.len();
        let is = |param| move |i: &usize| self.varied[*i].param == param;
        // The axis with the most values (the first of equals), keeping the style
        // image for the columns while anything else can take the rows.
        let widest = |candidates: &[usize], avoid_style: bool| -> Option<usize> {
            let mut best: Option<usize> = None;
            for &i in candidates {
                if avoid_style && is(Param::Style)(&i) {
                    continue;
                }
                if best.is_none_or(|b| len(&i) > len(&b)) {
                    best = Some(i);
                }
            }
            best
        };
        let first = rest
            .iter()
            .copied()
            .find(is(Param::Content))
            .or_else(|| widest(&rest, rest.len() > 1))
            .expect("rest is not empty");
        rest.retain(|&i| i != first);
        let mut rows = vec![first];
        let product = |axes: &[usize]| axes.iter().map(len).product::<usize>();
        while rest.len() > 1 && product(&rest) > MAX_BALANCED_COLUMNS.max(product(&rows)) {
            let Some(next) = widest(&rest, true) else {
                break;
            };
            rest.retain(|&i| i != next);
            rows.push(next);
        }
        SheetAxes { rows, cols: rest }
    }

    /// The value indices of `task` along `axes`.
    pub(crate) fn key(&self, axes: &[usize], task: usize) -> Vec<usize> {
        axes.iter().map(|&a| self.varied[a].of_task[task]).collect()
    }

    /// The combinations of values along `axes` that some task has, in order.
    pub(crate) fn combinations(&self, axes: &[usize], tasks: usize) -> Vec<Vec<usize>> {
        let set: BTreeSet<Vec<usize>> = (0..tasks).map(|t| self.key(axes, t)).collect();
        set.into_iter().collect()
    }

    /// Each axis of a combination with its value.
    pub(crate) fn describe(&self, axes: &[usize], key: &[usize]) -> Vec<Label> {
        axes.iter()
            .zip(key)
            .map(|(&a, &v)| Label {
                param: self.varied[a].param,
                value: self.varied[a].values[v].clone(),
                id: self.varied[a].ids[v].clone(),
            })
            .collect()
    }
}

/// One parameter's value in a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    pub param: Param,
    /// As shown.
    pub value: String,
    /// The full value: for an image, its store key.
    pub id: String,
}

impl Label {
    /// `name=value`.
    pub(crate) fn text(&self) -> String {
        format!("{}={}", self.param.name(), self.value)
    }
}

/// Whether `a`'s value decides `b`'s in every task.
fn decides(a: &Axis, b: &Axis) -> bool {
    let mut a_to_b = vec![None; a.values.len()];
    a.of_task
        .iter()
        .zip(&b.of_task)
        .all(|(&x, &y)| match a_to_b[x] {
            None => {
                a_to_b[x] = Some(y);
                true
            }
            Some(seen) => seen == y,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use pastiche_spec::{Backbone, OptimizerKind, RenderParams, StyleLayer, StyleWeight};

    fn task(id: &str, f: impl FnOnce(&mut RenderParams)) -> ReportTask {
        let mut params = RenderParams::new(Backbone::Vgg19);
        f(&mut params);
        ReportTask {
            id: id.into(),
            params,
            content_key: "inputs/c.png".into(),
            style_key: "inputs/s.png".into(),
            content_name: "c.png".into(),
            style_name: "s.png".into(),
            outcome: Outcome::Done,
            attempts: 1,
        }
    }

    #[test]
    fn numbers_read_as_written_in_a_grid() {
        assert_eq!(format_number(1e4), "1e4");
        assert_eq!(format_number(1e6), "1e6");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(300.0), "300");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(0.002), "2e-3");
        let sha = "a".repeat(64);
        assert_eq!(short_key(&format!("inputs/{sha}.png")), "aaaaaaaa.png");
        assert_eq!(short_key("photos/cat.jpg"), "cat.jpg");
    }

    #[test]
    fn varied_axes_are_found_sorted_and_laid_out() {
        let mut tasks = Vec::new();
        for (i, sw) in [1e6, 1e4, 1e5].into_iter().enumerate() {
            for (j, b) in [Backbone::Vgg19, Backbone::Vgg16].into_iter().enumerate() {
                tasks.push(task(&format!("t{i}{j}"), |p| {
                    p.style_weight = StyleWeight::Fixed(sw);
                    p.backbone = b;
                }));
            }
        }
        let axes = Axes::analyse(&tasks);
        let names: Vec<_> = axes.varied.iter().map(|a| a.param.name()).collect();
        assert_eq!(names, ["backbone", "style_weight"]);
        assert_eq!(axes.varied[0].values, ["vgg16", "vgg19"]);
        assert_eq!(axes.varied[1].values, ["1e4", "1e5", "1e6"]);
        assert_eq!(axes.varied[1].of_task, [2, 2, 0, 0, 1, 1]);
        assert!(axes
            .fixed
            .iter()
            .any(|(p, v)| *p == Param::render("size") && v == "512"));

        let layout = axes.choose(None, None).unwrap();
        assert_eq!((layout.rows, layout.cols), (vec![1], vec![0]));
        let layout = axes.choose(Some("backbone"), None).unwrap();
        assert_eq!((layout.rows, layout.cols), (vec![0], vec![1]));
        let layout = axes.choose(None, Some("style-weight")).unwrap();
        assert_eq!((layout.rows, layout.cols), (vec![0], vec![1]));
        assert!(matches!(
            axes.choose(Some("backbone"), Some("backbone")),
            Err(ReportError::SameAxis(_))
        ));
        let err = axes.choose(None, Some("size")).unwrap_err().to_string();
        assert!(
            err.contains("--cols") && err.contains("'size' does not vary"),
            "{err}"
        );
        assert!(err.contains("backbone, style_weight"), "{err}");
    }

    #[test]
    fn axes_that_move_together_share_a_place() {
        let tasks: Vec<_> = [OptimizerKind::Lbfgs, OptimizerKind::Adam]
            .into_iter()
            .flat_map(|kind| {
                [1u64, 2, 3].map(|seed| {
                    task(&format!("{kind}{seed}"), |p| {
                        p.optimizer.kind = kind;
                        p.optimizer.lr = kind.default_lr();
                        p.seed = seed;
                    })
                })
            })
            .collect();
        let axes = Axes::analyse(&tasks);
        let names: Vec<_> = axes.varied.iter().map(|a| a.param.name()).collect();
        assert_eq!(names, ["optimizer", "lr", "seed"]);
        assert_eq!(axes.dependent, [false, true, false]);
        let layout = axes.choose(None, None).unwrap();
        assert_eq!((layout.rows, layout.cols), (vec![2], vec![0]));
        let layout = axes.choose(Some("lr"), None).unwrap();
        assert_eq!((layout.rows, layout.cols), (vec![1], vec![2]));
    }

    #[test]
    fn style_layers_by_depth_are_one_axis_across_backbones() {
        let tasks: Vec<_> = [Backbone::Vgg16, Backbone::GoogLeNet]
            .into_iter()
            .flat_map(|b| {
                [3, 5].map(|depth| {
                    let mut t = task("t", |_| {});
                    t.params = RenderParams::new(b);
                    t.params.style_layers = b
                        .first_conv_layers(depth)
                        .unwrap()
                        .into_iter()
                        .map(|name| StyleLayer {
                            name: name.into(),
                            weight: 1.0,
                        })
                        .collect();
                    t
                })
            })
            .collect();
        let axes = Axes::analyse(&tasks);
        let depth = axes
            .varied
            .iter()
            .position(|a| a.param == Param::render("style_layers"))
            .unwrap();
        assert!(
            !axes.dependent[depth],
            "depth is not decided by the backbone"
        );
        let labels: BTreeSet<String> = tasks
            .iter()
            .map(|t| Param::render("style_layers").value(t).label)
            .collect();
        assert_eq!(labels, BTreeSet::from(["first 3".into(), "first 5".into()]));
        // Named layers that are not a prefix keep their names.
        let named = task("n", |_| {});
        assert_eq!(
            Param::render("style_layers").value(&named).label,
            "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"
        );
    }

    #[test]
    fn what_the_backbone_decides_gets_no_place_of_its_own() {
        let tasks: Vec<_> = Backbone::ALL
            .into_iter()
            .flat_map(|b| {
                [1e4, 1e5].map(|sw| {
                    let mut t = task("t", |p| p.style_weight = StyleWeight::Fixed(sw));
                    t.params = RenderParams {
                        style_weight: StyleWeight::Fixed(sw),
                        ..RenderParams::new(b)
                    };
                    t
                })
            })
            .collect();
        let axes = Axes::analyse(&tasks);
        let names: Vec<_> = axes.varied.iter().map(|a| a.param.name()).collect();
        assert_eq!(
            names,
            ["backbone", "content_layers", "style_layers", "style_weight"]
        );
        assert_eq!(axes.dependent, [false, true, true, false]);
        assert!(axes.determines[0][1] && !axes.determines[1][0]);
        let layout = axes.choose(None, None).unwrap();
        assert_eq!((layout.rows, layout.cols), (vec![0], vec![3]));
        // Asked for, a dependent axis goes where it is put; the backbone still has a place.
        let layout = axes.choose(Some("content_layers"), None).unwrap();
        assert_eq!((layout.rows, layout.cols), (vec![1], vec![0, 3]));
    }

    #[test]
    fn many_columns_are_balanced_onto_the_rows() {
        let mut tasks = Vec::new();
        for b in Backbone::ALL {
            for sw in [1e4, 1e5, 1e6] {
                for size in [64, 128] {
                    for seed in [0, 1] {
                        tasks.push(task("t", |p| {
                            p.backbone = b;
                            p.style_weight = StyleWeight::Fixed(sw);
                            p.size = size;
                            p.seed = seed;
                        }));
                    }
                }
            }
        }
        let axes = Axes::analyse(&tasks);
        let layout = axes.choose(None, None).unwrap();
        let count = |a: &[usize]| {
            a.iter()
                .map(|&i| axes.varied[i].values.len())
                .product::<usize>()
        };
        // Every task has a cell of its own.
        assert_eq!(count(&layout.rows) * count(&layout.cols), tasks.len());
        assert!(count(&layout.cols) <= MAX_BALANCED_COLUMNS, "{layout:?}");
        assert_eq!(
            axes.combinations(&layout.rows, tasks.len()).len(),
            count(&layout.rows)
        );
    }
}
