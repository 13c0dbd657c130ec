//! A slice of a job (`pastiche report --only PARAM=VALUE`): the tasks a
//! researcher wants to look at out of a grid too large to look at whole.

use std::collections::BTreeMap;

use crate::axes::{Axes, Param};
use crate::{ReportError, ReportJob};

/// The tasks of `job` that match every `PARAM=VALUE` of `only`; several values
/// for one parameter are alternatives (`--only backbone=vgg16 --only
/// backbone=vgg19`). Values are written as the report shows them: `1e4`,
/// `vgg19`, `noise`, `first 5` (or `style_depth=5`), an image's short name.
pub fn slice(job: &ReportJob, only: &[String]) -> Result<ReportJob, ReportError> {
    // Per parameter: the values wanted, and the filters as the user wrote them.
    let mut wanted: BTreeMap<usize, (Param, Vec<String>, Vec<&str>)> = BTreeMap::new();
    for filter in only {
        let (param, value) = parse_filter(filter)?;
        let position = Param::all().position(|p| p == param).expect("listed");
        let entry = wanted
            .entry(position)
            .or_insert_with(|| (param, Vec::new(), Vec::new()));
        entry.1.push(value);
        entry.2.push(filter.trim());
    }
    let mut tasks = job.tasks.clone();
    for (param, values, filters) in wanted.values() {
        let kept: Vec<_> = tasks
            .iter()
            .filter(|task| values.iter().any(|v| param.matches(task, v)))
            .cloned()
            .collect();
        if kept.is_empty() {
            return Err(ReportError::EmptySlice {
                filter: filters.join(" or "),
                values: values_of(*param, &tasks),
            });
        }
        tasks = kept;
    }
    let filters: Vec<&str> = only.iter().map(|f| f.trim()).collect();
    Ok(ReportJob {
        slice: Some(format!(
            "{} ({} of its {} tasks)",
            filters.join(", "),
            tasks.len(),
            job.tasks.len()
        )),
        id: job.id.clone(),
        name: job.name.clone(),
        tasks,
    })
}

fn parse_filter(filter: &str) -> Result<(Param, String), ReportError> {
    let bad = |why: &str| ReportError::BadFilter {
        filter: filter.to_owned(),
        why: why.to_owned(),
    };
    let (name, value) = filter
        .split_once('=')
        .ok_or_else(|| bad("write it as PARAM=VALUE, e.g. backbone=vgg19"))?;
    let value = value.trim();
    if value.is_empty() {
        return Err(bad("the value is empty"));
    }
    // The grid file's `style_depth = N` reads as style layers "first N".
    if name.trim().eq_ignore_ascii_case("style_depth") {
        return Ok((Param::render("style_layers"), format!("first {value}")));
    }
    let param = Param::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Param::all().map(Param::name).collect();
        bad(&format!(
            "unknown parameter '{}'; parameters: {}",
            name.trim(),
            names.join(", ")
        ))
    })?;
    Ok((param, value.to_owned()))
}

/// What `param` takes among `tasks`, as the report shows it.
fn values_of(param: Param, tasks: &[crate::ReportTask]) -> Vec<String> {
    let axes = Axes::analyse(tasks);
    match axes.find(param) {
        Some(axis) => axes.varied[axis].values.clone(),
        None => axes
            .fixed
            .iter()
            .filter(|(p, _)| *p == param)
            .map(|(_, v)| v.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use pastiche_spec::{Backbone, Init, RenderParams, StyleWeight};

    use super::*;
    use crate::{Outcome, ReportTask};

    /// 2 backbones x 3 style weights x 2 starts x 2 style depths = 24 tasks.
    fn job() -> ReportJob {
        let mut tasks = Vec::new();
        for backbone in [Backbone::Vgg16, Backbone::Vgg19] {
            for style_weight in [1e4, 1e5, 1e6] {
                for init in [Init::Content, Init::Noise] {
                    for depth in [3, 5] {
                        let mut params = RenderParams {
                            style_weight: StyleWeight::Fixed(style_weight),
                            init: init.clone(),
                            ..RenderParams::new(backbone)
                        };
                        params.style_layers = backbone
                            .first_conv_layers(depth)
                            .unwrap()
                            .into_iter()
                            .map(|name| pastiche_spec::StyleLayer {
                                name: name.to_owned(),
                                weight: 1.0,
                            })
                            .collect();
                        tasks.push(ReportTask {
                            id: format!("t{}", tasks.len()),
                            params,
                            content_key: "inputs/chelsea.png".into(),
                            style_key: format!("inputs/{}.jpg", ["a", "b"][tasks.len() % 2]),
                            content_name: "chelsea.png".into(),
                            style_name: format!("{}.jpg", ["a", "b"][tasks.len() % 2]),
                            outcome: Outcome::Done,
                            attempts: 1,
                        });
                    }
                }
            }
        }
        ReportJob {
            slice: None,
            id: "study-1".into(),
            name: "study".into(),
            tasks,
        }
    }

    fn only(filters: &[&str]) -> Result<Vec<RenderParams>, ReportError> {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        Ok(slice(&job(), &filters)?
            .tasks
            .into_iter()
            .map(|t| t.params)
            .collect())
    }

    #[test]
    fn filters_on_different_parameters_all_hold() {
        let tasks = only(&["backbone=VGG19", "style_weight=100000", "style_depth=5"]).unwrap();
        assert_eq!(tasks.len(), 2, "content and noise starts");
        for p in &tasks {
            assert_eq!(
                (p.backbone, p.style_weight, p.style_layers.len()),
                (Backbone::Vgg19, StyleWeight::Fixed(1e5), 5)
            );
        }
        assert_eq!(
            only(&["init=noise", "style_layers=first 3"]).unwrap().len(),
            6
        );
    }

    #[test]
    fn values_of_one_parameter_are_alternatives() {
        let tasks = only(&["style_weight=1e4", "style_weight=1e6"]).unwrap();
        assert_eq!(tasks.len(), 16);
        assert!(tasks
            .iter()
            .all(|p| p.style_weight != StyleWeight::Fixed(1e5)));
    }

    #[test]
    fn images_go_by_their_short_name_or_key() {
        assert_eq!(only(&["style=a"]).unwrap().len(), 12);
        assert_eq!(only(&["style=inputs/b.jpg"]).unwrap().len(), 12);
        assert_eq!(only(&["content=chelsea.png"]).unwrap().len(), 24);
    }

    #[test]
    fn a_filter_that_selects_nothing_says_what_there_is() {
        let err = only(&["backbone=vgg19", "style_weight=3"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--only style_weight=3: no task of the job has it; it takes 1e4, 1e5, 1e6"
        );
        let err = only(&["backbone=googlenet"]).unwrap_err().to_string();
        assert!(err.contains("it takes vgg16, vgg19"), "{err}");
        let err = only(&["style_depth=7"]).unwrap_err().to_string();
        assert!(err.starts_with("--only style_depth=7: "), "{err}");
        assert!(err.contains("first 3, first 5"), "{err}");
        // As the grid file says it, for the sheet's axes too.
        assert_eq!(
            Param::parse("style_depth"),
            Some(Param::render("style_layers"))
        );
    }

    #[test]
    fn malformed_filters_are_refused_clearly() {
        let err = only(&["backbone"]).unwrap_err().to_string();
        assert!(err.contains("PARAM=VALUE"), "{err}");
        let err = only(&["colour=red"]).unwrap_err().to_string();
        assert!(err.contains("unknown parameter 'colour'"), "{err}");
        assert!(err.contains("style_weight"), "{err}");
        assert!(only(&["init="]).unwrap_err().to_string().contains("empty"));
    }
}
