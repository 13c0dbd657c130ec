//! A small finished job in a temporary store, and its report checked end to end.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};
use pastiche_spec::store::Store;
use pastiche_spec::{
    layout, sha256_hex, task_id, Backbone, LossRecord, RenderParams, StyleWeight, LOSSES_CSV_HEADER,
};

use crate::load::THUMB;
use crate::sheet::{
    CELL_H, CELL_W, CORNER_H, CROSS, HEAD_THUMB, LINE_H, PAD, ROW_HEADER_W, TITLE_H,
};
use crate::table::parse_csv;
use crate::*;

const BACKBONES: [Backbone; 2] = [Backbone::Vgg16, Backbone::Vgg19];
const STYLE_WEIGHTS: [f64; 3] = [1e4, 1e5, 1e6];
const ITERATIONS: [u32; 3] = [50, 100, 150];
const COLOURS: [[u8; 3]; 6] = [
    [230, 120, 20],
    [20, 160, 60],
    [40, 90, 220],
    [160, 40, 180],
    [20, 190, 190],
    [120, 80, 30],
];
const CONTENT_COLOUR: [u8; 3] = [250, 235, 60];
const STYLE_COLOUR: [u8; 3] = [70, 20, 110];

fn png(width: u32, height: u32, colour: [u8; 3]) -> Vec<u8> {
    let img = RgbImage::from_pixel(width, height, Rgb(colour));
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    job: ReportJob,
    /// Per task id: its colour, its loss log, its grid position (style weight, backbone).
    colour: HashMap<String, [u8; 3]>,
    losses: HashMap<String, Vec<LossRecord>>,
    position: HashMap<String, (usize, usize)>,
}

/// Tasks vgg16/vgg19 x 1e4/1e5/1e6, all done, with distinct pastiches and losses;
/// those in `without_outputs` have no outputs stored.
async fn finished_job(without_outputs: &[usize]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
    let content = png(60, 40, CONTENT_COLOUR);
    let style = png(40, 60, STYLE_COLOUR);
    let (content_sha, style_sha) = (sha256_hex(&content), sha256_hex(&style));
    let content_key = layout::input_key(&content_sha, "png");
    let style_key = layout::input_key(&style_sha, "png");
    store.put(&content_key, content).await.unwrap();
    store.put(&style_key, style).await.unwrap();

    let job_id = "study-1a2b";
    let mut fixture = Fixture {
        _dir: dir,
        store,
        job: ReportJob {
            slice: None,
            id: job_id.into(),
            name: "seed <study> & co".into(),
            tasks: Vec::new(),
        },
        colour: HashMap::new(),
        losses: HashMap::new(),
        position: HashMap::new(),
    };
    let mut n = 0;
    // Listed backbone-major, the sheet's rows being style weights: the layout must not
    // depend on the order the coordinator lists tasks in.
    for (b, backbone) in BACKBONES.into_iter().enumerate() {
        for (s, style_weight) in STYLE_WEIGHTS.into_iter().enumerate() {
            let params = RenderParams {
                style_weight: StyleWeight::Fixed(style_weight),
                iterations: 150,
                ..RenderParams::new(backbone)
            };
            let id = task_id(&params, &[("content", &content_sha), ("style", &style_sha)]);
            let records: Vec<LossRecord> = ITERATIONS
                .iter()
                .map(|&it| {
                    let content = 1000.0 / f64::from(it) + n as f64 * 0.37 + 0.001;
                    let style = 7.0e3 / f64::from(it) * (n + 1) as f64 + 1.0 / 3.0;
                    LossRecord {
                        iteration: it,
                        content,
                        style,
                        tv: 0.0,
                        total: content + style,
                    }
                })
                .collect();
            if !without_outputs.contains(&n) {
                let file = |name| layout::attempt_file_key(job_id, &id, 1, name).unwrap();
                let csv: String = std::iter::once(LOSSES_CSV_HEADER.to_owned())
                    .chain(records.iter().map(LossRecord::to_csv_row))
                    .map(|l| l + "\n")
                    .collect();
                let store = &fixture.store;
                store
                    .put(&file(layout::PASTICHE_PNG), png(40, 40, COLOURS[n]))
                    .await
                    .unwrap();
                store.put(&file(layout::LOSSES_CSV), csv).await.unwrap();
                store
                    .put(
                        &layout::task_record_key(job_id, &id).unwrap(),
                        r#"{"attempt": 1}"#,
                    )
                    .await
                    .unwrap();
            }
            fixture.colour.insert(id.clone(), COLOURS[n]);
            fixture.losses.insert(id.clone(), records);
            fixture.position.insert(id.clone(), (s, b));
            fixture.job.tasks.push(ReportTask {
                id,
                params,
                content_key: content_key.clone(),
                style_key: style_key.clone(),
                content_name: input_label(&content_key, &BTreeMap::new()),
                style_name: input_label(&style_key, &BTreeMap::new()),
                outcome: Outcome::Done,
                attempts: 1,
            });
            n += 1;
        }
    }
    fixture
}

fn file<'a>(files: &'a [ReportFile], name: &str) -> &'a [u8] {
    &files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name} in the report"))
        .bytes
}

fn sheet_of(files: &[ReportFile]) -> RgbImage {
    image::load_from_memory(file(files, CONTACT_SHEET))
        .unwrap()
        .to_rgb8()
}

/// The top-left corner of the thumbnail box of the cell at (row, col).
fn thumb_box(header_h: u32, row: usize, col: usize) -> (u32, u32) {
    (
        ROW_HEADER_W + col as u32 * CELL_W + PAD,
        TITLE_H + header_h + row as u32 * CELL_H + PAD,
    )
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2)
}

/// This job's sheet has one column-label line, and the corner holds the job's
/// content and style images.
const HEADER_H: u32 = if PAD + LINE_H + PAD > CORNER_H {
    PAD + LINE_H + PAD
} else {
    CORNER_H
};

#[tokio::test]
async fn the_contact_sheet_puts_each_pastiche_in_its_cell() {
    let fx = finished_job(&[]).await;
    let files = build_report(&fx.store, &fx.job, &ReportOptions::default())
        .await
        .unwrap();
    let sheet = sheet_of(&files);
    // Rows: the style weight (3 values, the most); columns: the backbone.
    assert_eq!(
        sheet.dimensions(),
        (ROW_HEADER_W + 2 * CELL_W, TITLE_H + HEADER_H + 3 * CELL_H)
    );
    for task in &fx.job.tasks {
        let (row, col) = fx.position[&task.id];
        let (x, y) = thumb_box(HEADER_H, row, col);
        let centre = sheet.get_pixel(x + THUMB / 2, y + THUMB / 2).0;
        assert!(
            close(centre, fx.colour[&task.id]),
            "cell ({row}, {col}) shows {centre:?}"
        );
        // The 40 px pastiche fills its box: a corner of the box is the pastiche too.
        assert!(close(
            sheet.get_pixel(x + 3, y + THUMB - 4).0,
            fx.colour[&task.id]
        ));
    }
    // The job's content and style images sit in the top-left corner.
    let left = PAD + (ROW_HEADER_W - 2 * PAD - (2 * HEAD_THUMB + PAD)) / 2;
    let y = TITLE_H + PAD + HEAD_THUMB / 2;
    assert!(close(
        sheet.get_pixel(left + HEAD_THUMB / 2, y).0,
        CONTENT_COLOUR
    ));
    assert!(close(
        sheet
            .get_pixel(left + HEAD_THUMB + PAD + HEAD_THUMB / 2, y)
            .0,
        STYLE_COLOUR
    ));

    // --rows backbone turns the sheet.
    let options = ReportOptions {
        rows: Some("backbone".into()),
        ..Default::default()
    };
    let files = build_report(&fx.store, &fx.job, &options).await.unwrap();
    let sheet = sheet_of(&files);
    assert_eq!(
        sheet.dimensions(),
        (ROW_HEADER_W + 3 * CELL_W, TITLE_H + HEADER_H + 2 * CELL_H)
    );
    for task in &fx.job.tasks {
        let (col, row) = fx.position[&task.id];
        let (x, y) = thumb_box(HEADER_H, row, col);
        assert!(close(
            sheet.get_pixel(x + THUMB / 2, y + THUMB / 2).0,
            fx.colour[&task.id]
        ));
    }
}

#[tokio::test]
async fn the_summary_holds_the_logged_losses() {
    let fx = finished_job(&[]).await;
    let files = build_report(&fx.store, &fx.job, &ReportOptions::default())
        .await
        .unwrap();
    let rows = parse_csv(std::str::from_utf8(file(&files, SUMMARY_CSV)).unwrap());
    let header = &rows[0];
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    assert_eq!(rows.len(), 1 + fx.job.tasks.len());
    for task in &fx.job.tasks {
        let row = rows
            .iter()
            .find(|r| r[column("task")] == task.id)
            .unwrap_or_else(|| panic!("no row for {}", task.id));
        assert_eq!(row.len(), header.len());
        assert_eq!(row[column("outcome")], "done");
        assert_eq!(row[column("backbone")], task.params.backbone.name());
        assert_eq!(
            row[column("style_weight")].parse::<StyleWeight>().unwrap(),
            task.params.style_weight
        );
        let number = |name: &str| row[column(name)].parse::<f64>().unwrap();
        for record in &fx.losses[&task.id] {
            let n = record.iteration;
            assert_eq!(number(&format!("content@{n}")), record.content);
            assert_eq!(number(&format!("style@{n}")), record.style);
            assert_eq!(number(&format!("total@{n}")), record.total);
        }
        let last = fx.losses[&task.id].last().unwrap();
        assert_eq!(number("final_total"), last.total);
        assert_eq!(number("final_iteration"), f64::from(last.iteration));
    }

    // The Markdown has the study's table: iterations down, backbones side by side.
    let md = std::str::from_utf8(file(&files, SUMMARY_MD)).unwrap();
    assert!(
        md.contains("| Runs | VGG16 Content Loss | VGG16 Style Loss | VGG19 Content Loss | VGG19 Style Loss |"),
        "{md}"
    );
    let first = &fx.job.tasks[0];
    let vgg19 = fx
        .job
        .tasks
        .iter()
        .find(|t| {
            t.params.backbone == Backbone::Vgg19
                && t.params.style_weight == first.params.style_weight
        })
        .unwrap();
    let (a, b) = (&fx.losses[&first.id][0], &fx.losses[&vgg19.id][0]);
    let expected = format!(
        "| 50 | {:.2} | {:.2} | {:.2} | {:.2} |",
        a.content, a.style, b.content, b.style
    );
    assert!(md.contains(&expected), "{expected} not in\n{md}");
    assert!(md.contains("seed &lt;study&gt; &amp; co"));
}

#[tokio::test]
async fn failed_and_cancelled_tasks_are_marked() {
    // Task 1 failed and task 4 was cancelled, neither with outputs; task 5 is done but
    // its outputs are gone; task 2 has not finished.
    let mut fx = finished_job(&[1, 4, 5]).await;
    let error = "CUDA out of memory, at <step 3>";
    fx.job.tasks[1].outcome = Outcome::Failed {
        error: error.into(),
    };
    fx.job.tasks[1].attempts = 3;
    fx.job.tasks[4].outcome = Outcome::Cancelled;
    fx.job.tasks[2].outcome = Outcome::Unfinished;
    let files = build_report(&fx.store, &fx.job, &ReportOptions::default())
        .await
        .unwrap();

    let sheet = sheet_of(&files);
    for (t, task) in fx.job.tasks.iter().enumerate() {
        let (row, col) = fx.position[&task.id];
        let (x, y) = thumb_box(HEADER_H, row, col);
        let centre = sheet.get_pixel(x + THUMB / 2, y + THUMB / 2).0;
        let on_cross = sheet.get_pixel(x + 12, y + 12).0;
        match t {
            1 | 4 => {
                assert_eq!(on_cross, CROSS.0, "task {t} is not crossed");
                assert_eq!(sheet.get_pixel(x + THUMB - 13, y + 12).0, CROSS.0);
            }
            2 | 5 => {
                assert!(!close(centre, fx.colour[&task.id]));
                assert_ne!(on_cross, CROSS.0, "task {t} is crossed");
            }
            _ => assert!(close(centre, fx.colour[&task.id])),
        }
    }

    let rows = parse_csv(std::str::from_utf8(file(&files, SUMMARY_CSV)).unwrap());
    let column = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    let row_of = |t: usize| rows.iter().find(|r| r[0] == fx.job.tasks[t].id).unwrap();
    assert_eq!(row_of(1)[column("outcome")], "failed");
    assert_eq!(row_of(1)[column("error")], error);
    assert_eq!(row_of(1)[column("attempts")], "3");
    assert_eq!(row_of(1)[column("total@50")], "");
    assert_eq!(row_of(4)[column("outcome")], "cancelled");
    assert_eq!(row_of(2)[column("outcome")], "unfinished");
    assert_eq!(row_of(5)[column("outcome")], "done");
    assert!(row_of(5)[column("notes")].contains("task.json is missing"));
    assert_eq!(
        row_of(0)[column("total@50")].parse::<f64>().unwrap(),
        fx.losses[&fx.job.tasks[0].id][0].total
    );

    let html = std::str::from_utf8(file(&files, INDEX_HTML)).unwrap();
    assert!(
        html.contains("CUDA out of memory, at &lt;step 3&gt;"),
        "the error is not shown"
    );
    assert!(!html.contains("<step 3>"), "the error is not escaped");
    assert!(html.contains("class=\"failed\"") && html.contains("class=\"cancelled\""));
    assert!(!html.contains(&format!("{}/attempt-", fx.job.tasks[1].id)));
    assert!(html.contains(&format!("{}/attempt-1/pastiche.png", fx.job.tasks[0].id)));
    let md = std::str::from_utf8(file(&files, SUMMARY_MD)).unwrap();
    assert!(
        md.contains("| failed | CUDA out of memory, at &lt;step 3&gt; | 3 |"),
        "{md}"
    );
    assert!(
        md.contains("failed: CUDA out of memory"),
        "the study table notes the failure"
    );
}

/// Every `src` and `href` of the page, less the links within it.
fn links_of(html: &str) -> Vec<String> {
    let mut links = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (start, _) in html.match_indices(attribute) {
            let rest = &html[start + attribute.len()..];
            let value = &rest[..rest.find('"').unwrap()];
            if !value.starts_with('#') {
                links.push(value.replace("&amp;", "&"));
            }
        }
    }
    links
}

/// `base` + `link`, with `..` resolved; `None` if it climbs above the root.
fn resolve(base: &str, link: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in link.split('/') {
        match part {
            ".." => {
                parts.pop()?;
            }
            "." | "" => {}
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

#[tokio::test]
async fn every_link_of_the_page_resolves_in_both_placements() {
    let mut fx = finished_job(&[3]).await;
    fx.job.tasks[3].outcome = Outcome::Failed {
        error: "boom".into(),
    };
    let done = fx.job.tasks.len() - 1;

    // In the store: links climb from jobs/<job>/report/ to the task outputs.
    let files = build_report(&fx.store, &fx.job, &ReportOptions::default())
        .await
        .unwrap();
    write_to_store(&fx.store, &fx.job.id, &files).await.unwrap();
    let report = layout::report_prefix(&fx.job.id).unwrap();
    let html = String::from_utf8(
        fx.store
            .get(&format!("{report}{INDEX_HTML}"))
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let links = links_of(&html);
    let pastiches = links
        .iter()
        .filter(|l| l.ends_with("/pastiche.png"))
        .count();
    assert!(
        pastiches >= done,
        "{pastiches} links to pastiches for {done} done tasks"
    );
    assert!(links.iter().any(|l| l.ends_with(".svg")));
    for link in &links {
        assert!(
            !link.contains("://") && !link.starts_with('/'),
            "{link} is not relative"
        );
        let key = resolve(&report, link).unwrap_or_else(|| panic!("{link} leaves the store"));
        assert!(
            fx.store.exists(&key).await.unwrap(),
            "{link} -> {key} is not in the store"
        );
    }

    // Standalone: the report carries copies of what it links.
    let options = ReportOptions {
        placement: Placement::Standalone,
        ..Default::default()
    };
    let files = build_report(&fx.store, &fx.job, &options).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("report");
    write_to_dir(&dir, &files).unwrap();
    let html = std::fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
    let links = links_of(&html);
    assert!(
        links
            .iter()
            .filter(|l| l.ends_with("/pastiche.png"))
            .count()
            >= done
    );
    for link in &links {
        assert!(
            !link.contains("..") && !link.contains("://"),
            "{link} leaves the report"
        );
        assert!(
            dir.join(link).is_file(),
            "{link} is not in {}",
            dir.display()
        );
    }
    let first = &fx.job.tasks[0].id;
    let stored = layout::attempt_file_key(&fx.job.id, first, 1, layout::PASTICHE_PNG).unwrap();
    assert_eq!(
        std::fs::read(dir.join(format!("tasks/{first}/pastiche.png"))).unwrap(),
        fx.store.get(&stored).await.unwrap().to_vec()
    );
    // Nothing but the report's files: no temporary files left behind.
    let mut names = Vec::new();
    collect_files(&dir, &dir, &mut names);
    names.sort();
    let mut expected: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
}

#[tokio::test]
async fn unknown_or_constant_sheet_axes_are_refused_with_the_choices() {
    let fx = finished_job(&[]).await;
    let options = |rows: &str| ReportOptions {
        rows: Some(rows.into()),
        ..Default::default()
    };
    let err = build_report(&fx.store, &fx.job, &options("colour"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReportError::UnknownParameter { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("--rows")
            && message.contains("'colour'")
            && message.contains("backbone, style_weight"),
        "{message}"
    );
    let err = build_report(&fx.store, &fx.job, &options("size"))
        .await
        .unwrap_err();
    assert!(matches!(err, ReportError::NotVaried { .. }), "{err:?}");
    assert!(err.to_string().contains("'size' does not vary"), "{err}");
}

#[tokio::test]
async fn varied_inputs_label_the_rows_and_columns_with_their_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let mut tasks = Vec::new();
    let mut keys = Vec::new();
    let mut names = BTreeMap::new();
    let mut short_names = Vec::new();
    let colours = [[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]];
    for (colour, name) in colours.into_iter().zip(["red", "green", "blue", "yellow"]) {
        let bytes = png(30, 30, colour);
        let sha = sha256_hex(&bytes);
        let key = layout::input_key(&sha, "png");
        store.put(&key, bytes).await.unwrap();
        // As `submit` names them: the file names the grid gave.
        names.insert(key.clone(), format!("{name}.png"));
        short_names.push(format!("{}.png", &sha[..8]));
        keys.push(key);
    }
    for (c, content) in keys[..2].iter().enumerate() {
        for (s, style) in keys[2..].iter().enumerate() {
            tasks.push(ReportTask {
                id: format!("t{c}{s}"),
                params: RenderParams::new(Backbone::Vgg19),
                content_key: content.clone(),
                style_key: style.clone(),
                content_name: input_label(content, &names),
                style_name: style_label(style, &names),
                outcome: Outcome::Unfinished,
                attempts: 0,
            });
        }
    }
    let job = ReportJob {
        slice: None,
        id: "pairs".into(),
        name: "pairs".into(),
        tasks,
    };
    let files = build_report(&store, &job, &ReportOptions::default())
        .await
        .unwrap();
    // People read the names the grid gave; the hashes stay in the links.
    let html = String::from_utf8(file(&files, INDEX_HTML).to_vec()).unwrap();
    for name in ["red.png", "green.png", "blue.png", "yellow.png"] {
        assert!(html.contains(name), "{name} not in the page");
    }
    for short in &short_names {
        assert!(!html.contains(short.as_str()), "{short} in the page");
    }
    let sheet = sheet_of(&files);
    // Rows: content; columns: style, each header with its picture.
    let header_h = PAD + HEAD_THUMB + 4 + LINE_H + PAD;
    assert_eq!(
        sheet.dimensions(),
        (ROW_HEADER_W + 2 * CELL_W, TITLE_H + header_h + 2 * CELL_H)
    );
    let mid = HEAD_THUMB / 2;
    let row_header_top = (CELL_H - (HEAD_THUMB + 4 + LINE_H)) / 2;
    for c in 0..2 {
        let y = TITLE_H + header_h + c as u32 * CELL_H + row_header_top + mid;
        let content = [[200, 0, 0], [0, 200, 0]][c];
        assert!(
            close(sheet.get_pixel(ROW_HEADER_W / 2, y).0, content),
            "row {c}"
        );
        let x = ROW_HEADER_W + c as u32 * CELL_W + CELL_W / 2;
        let style = [[0, 0, 200], [200, 200, 0]][c];
        assert!(
            close(sheet.get_pixel(x, TITLE_H + PAD + mid).0, style),
            "column {c}"
        );
    }
}

#[tokio::test]
async fn an_empty_or_single_task_job_still_has_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let mut job = ReportJob {
        slice: None,
        id: "empty".into(),
        name: "empty".into(),
        tasks: vec![],
    };
    let files = build_report(&store, &job, &ReportOptions::default())
        .await
        .unwrap();
    assert!(files.iter().any(|f| f.name == INDEX_HTML));
    job.tasks.push(ReportTask {
        id: "only".into(),
        params: RenderParams::new(Backbone::Vgg16),
        content_key: "inputs/missing.png".into(),
        style_key: "inputs/missing-too.png".into(),
        content_name: "missing.png".into(),
        style_name: "missing-too.png".into(),
        outcome: Outcome::Done,
        attempts: 1,
    });
    let files = build_report(&store, &job, &ReportOptions::default())
        .await
        .unwrap();
    let sheet = sheet_of(&files);
    assert_eq!(sheet.width(), ROW_HEADER_W + CELL_W);
    let html = std::str::from_utf8(file(&files, INDEX_HTML)).unwrap();
    assert!(html.contains("task.json is missing"));
    assert!(files.iter().any(|f| f.name == "plots/loss.svg"));

    let bad = ReportJob {
        slice: None,
        id: "../up".into(),
        ..job
    };
    assert!(matches!(
        build_report(&store, &bad, &ReportOptions::default()).await,
        Err(ReportError::BadId(_))
    ));
}

#[tokio::test]
async fn a_new_report_in_the_store_leaves_nothing_of_the_old_one() {
    let fx = finished_job(&[]).await;
    let report = layout::report_prefix(&fx.job.id).unwrap();
    let stale = format!("{report}plots/loss-a_parameter_gone.svg");
    fx.store.put(&stale, "<svg/>").await.unwrap();
    let outputs_before = fx.store.list(&format!("jobs/{}/tasks/", fx.job.id)).await;

    let files = build_report(&fx.store, &fx.job, &ReportOptions::default())
        .await
        .unwrap();
    write_to_store(&fx.store, &fx.job.id, &files).await.unwrap();

    let mut expected: Vec<String> = files
        .iter()
        .map(|f| format!("{report}{}", f.name))
        .collect();
    expected.sort();
    assert_eq!(fx.store.list(&report).await.unwrap(), expected);
    assert!(!fx.store.exists(&stale).await.unwrap());
    assert_eq!(
        fx.store
            .list(&format!("jobs/{}/tasks/", fx.job.id))
            .await
            .unwrap(),
        outputs_before.unwrap(),
        "the tasks' outputs are not the report's to delete"
    );
}

#[tokio::test]
async fn a_job_too_large_for_one_report_is_reported_in_slices() {
    let fx = finished_job(&[]).await;
    let mut job = fx.job.clone();
    let first = job.tasks[0].clone();
    for seed in 1..=MAX_REPORT_TASKS as u64 - job.tasks.len() as u64 + 1 {
        let mut task = first.clone();
        task.id = format!("{}-{seed}", first.id);
        task.params.seed = seed;
        task.outcome = Outcome::Unfinished;
        job.tasks.push(task);
    }
    assert_eq!(job.tasks.len(), MAX_REPORT_TASKS + 1);
    let err = build_report(&fx.store, &job, &ReportOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--only PARAM=VALUE"), "{err}");
    assert!(err.contains("backbone, style_weight, seed"), "{err}");

    let slice = slice(&job, &["seed=0".to_owned()]).unwrap();
    assert_eq!(slice.tasks.len(), fx.job.tasks.len());
    let files = build_report(&fx.store, &slice, &ReportOptions::default())
        .await
        .unwrap();
    let summary = String::from_utf8(file(&files, SUMMARY_CSV).to_vec()).unwrap();
    assert_eq!(summary.lines().count(), 1 + fx.job.tasks.len());
    // The page and the table say which part of the job they show.
    let said = format!(
        "a slice of the job, seed=0 ({} of its {} tasks)",
        fx.job.tasks.len(),
        MAX_REPORT_TASKS + 1
    );
    for name in [INDEX_HTML, SUMMARY_MD] {
        let text = String::from_utf8(file(&files, name).to_vec()).unwrap();
        assert!(text.contains(&said), "{name}: {text}");
    }
}
