//! The dashboard (`--http-listen`): the farm's jobs with their progress, and
//! each job's live contact sheet (previews while rendering, pastiches when
//! done, failed cells marked), its running tasks' latest losses and the
//! workers at work. Server-rendered HTML; a small script of our own refreshes
//! the live part every two seconds, so pages need nothing from the network.
//! Images come from the farm's store through here, resized and cached.
//! Cancelling a job takes the farm's token when it has one, as gRPC calls do;
//! reading needs none. With the farm's TLS certificate, pages are served over
//! HTTPS only.

mod html;
mod images;
mod live;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pastiche_proto::security::Token;
use pastiche_spec::layout;
use pastiche_spec::store::StoreError;
use tokio::net::TcpListener;

use crate::core::Coordinator;
use crate::error::CoordinatorError;
use crate::server::ServerSecurity;
use images::Images;
use live::Live;

/// How many tasks a job's page shows (the first, in grid order).
pub const SHOWN_TASKS: u32 = 500;

/// What the handlers share.
struct Dashboard {
    coordinator: Arc<Coordinator>,
    token: Option<Token>,
    live: Arc<Live>,
    images: Images,
}

type Shared = State<Arc<Dashboard>>;

/// Binds `addr`, says where on stdout (`dashboard on http://ADDR`, or
/// `https://` with TLS, for the scripts and tests that asked for port 0), and
/// serves the dashboard there in the background.
pub async fn start(
    addr: SocketAddr,
    coordinator: Arc<Coordinator>,
    security: ServerSecurity,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    serve(listener, coordinator, security);
    tracing::info!(dashboard = %format!("{scheme}://{bound}"), "serving the dashboard");
    println!("dashboard on {scheme}://{bound}");
    Ok(bound)
}

/// Serves the dashboard on `listener` in the background: over TLS when
/// `security` has it, as gRPC is; cancelling takes its token when it has one.
pub fn serve(listener: TcpListener, coordinator: Arc<Coordinator>, security: ServerSecurity) {
    let dashboard = Arc::new(Dashboard {
        live: Live::follow(&coordinator),
        images: Images::new(coordinator.store().cloned()),
        coordinator,
        token: security.token,
    });
    let app = router(dashboard);
    tokio::spawn(async move {
        let served = match security.tls {
            Some(tls) => axum::serve(tls.https(listener), app).await,
            None => axum::serve(listener, app).await,
        };
        if let Err(err) = served {
            tracing::error!(error = %err, "the dashboard stopped");
        }
    });
}

fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(jobs_page))
        .route("/live/jobs", get(jobs_part))
        .route("/jobs/{job}", get(job_page))
        .route("/live/jobs/{job}", get(job_part))
        .route("/jobs/{job}/cancel", post(cancel))
        .route("/jobs/{job}/tasks/{task}/preview.png", get(preview))
        .route("/jobs/{job}/tasks/{task}/pastiche.png", get(pastiche))
        .route(
            "/jobs/{job}/tasks/{task}/{attempt}/{file}",
            get(attempt_file),
        )
        .route("/jobs/{job}/report/{*file}", get(report_file))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .with_state(dashboard)
}

/// An error page, plain text.
pub(crate) fn refused(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

fn html_response(body: String) -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn jobs_page(State(d): Shared) -> Result<Response, CoordinatorError> {
    let part = html::jobs(&d.coordinator.list_jobs()?);
    Ok(html_response(html::page("pastiche", "/live/jobs", &part)))
}

async fn jobs_part(State(d): Shared) -> Result<Response, CoordinatorError> {
    Ok(html_response(html::jobs(&d.coordinator.list_jobs()?)))
}

async fn job_page(State(d): Shared, Path(job): Path<String>) -> Result<Response, CoordinatorError> {
    let (name, part) = job_html(&d, &job).await?;
    let title = format!("{name} · pastiche");
    Ok(html_response(html::page(
        &title,
        &format!("/live/jobs/{job}"),
        &part,
    )))
}

async fn job_part(State(d): Shared, Path(job): Path<String>) -> Result<Response, CoordinatorError> {
    Ok(html_response(job_html(&d, &job).await?.1))
}

/// The job's name, and the live part of its page.
async fn job_html(d: &Dashboard, job: &str) -> Result<(String, String), CoordinatorError> {
    let coordinator = Arc::clone(&d.coordinator);
    let id = job.to_owned();
    // The task list is a database read: off the runtime's threads.
    let (status, tasks, names) = crate::core::blocking(move || {
        let status = coordinator.status(&id)?;
        let tasks = coordinator.tasks_page(&id, 0, Some(SHOWN_TASKS))?;
        Ok((status, tasks, coordinator.input_names(&id)?))
    })
    .await?;
    let report = match (status.ended(), d.coordinator.store()) {
        (true, Some(store)) => {
            let index = format!("{}index.html", layout::report_prefix(job).map_err(bad_id)?);
            store.exists(&index).await.unwrap_or(false)
        }
        _ => false,
    };
    let part = html::job(&html::JobView {
        status: &status,
        tasks: &tasks,
        names: &names,
        running: &d.live.running(job),
        workers: &d.coordinator.workers(),
        images: d.coordinator.store().is_some(),
        report,
        token_required: d.token.is_some(),
    });
    Ok((status.name, part))
}

fn bad_id(err: layout::BadId) -> CoordinatorError {
    CoordinatorError::BadRequest(err.to_string())
}

/// The header the page's script sends with a cancel: a form another site
/// posts cannot set it, so without a token no other page can cancel a job.
pub const CANCEL_HEADER: &str = "x-pastiche-cancel";

/// Cancels a job, if the request carries the farm's token (when it has one)
/// and comes from the page's script.
async fn cancel(
    State(d): Shared,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Response, CoordinatorError> {
    if !headers.contains_key(CANCEL_HEADER) {
        return Ok(refused(
            StatusCode::FORBIDDEN,
            format!("cancelling needs the {CANCEL_HEADER} header the dashboard's page sends"),
        ));
    }
    if let Some(token) = &d.token {
        let presented = headers
            .get(AUTHORIZATION)
            .map_or(&[][..], |value| value.as_bytes());
        if !token.authorizes(presented) {
            return Ok(refused(
                StatusCode::UNAUTHORIZED,
                "cancelling needs the farm's token (Authorization: Bearer TOKEN)",
            ));
        }
    }
    let coordinator = Arc::clone(&d.coordinator);
    let cancelled = job.clone();
    crate::core::blocking(move || coordinator.cancel(&cancelled)).await?;
    Ok(refused(StatusCode::OK, format!("job {job} cancelled")))
}

/// The `w` (width in pixels) of a query, if any: images are resized to it.
fn width_of(query: Option<&str>) -> Result<Option<u32>, CoordinatorError> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("w="))
    else {
        return Ok(None);
    };
    match value.parse() {
        Ok(width @ 16..=1024) => Ok(Some(width)),
        _ => Err(CoordinatorError::BadRequest(format!(
            "w={value}: a width from 16 to 1024 pixels"
        ))),
    }
}

/// The latest preview of a task (`?w=` to resize it; `?v=` tells versions apart).
async fn preview(
    State(d): Shared,
    Path((job, task)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, CoordinatorError> {
    let key = layout::preview_key(&job, &task).map_err(bad_id)?;
    // The preview's iteration: a number, so that the cache holds one entry per
    // stored version and size, whatever a client asks.
    let version: u32 = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("v="))
        .map_or(Ok(0), str::parse)
        .map_err(|_| CoordinatorError::BadRequest("v: a preview's iteration".into()))?;
    image(&d, &key, version, width_of(query.as_deref())?, false).await
}

/// A done task's pastiche: the winning attempt's, as its `task.json` says.
async fn pastiche(
    State(d): Shared,
    Path((job, task)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, CoordinatorError> {
    let width = width_of(query.as_deref())?;
    let key = match d.images.pastiche_key(&job, &task).await {
        Ok(key) => key,
        Err(images::ImageError::BadId(err)) => return Err(bad_id(err)),
        Err(err) => return Ok(refused(StatusCode::SERVICE_UNAVAILABLE, err.to_string())),
    };
    let Some(key) = key else {
        return Ok(refused(
            StatusCode::NOT_FOUND,
            format!("task {task} has no result yet"),
        ));
    };
    image(&d, &key, 0, width, true).await
}

/// An object as the store has it, resized to `width` if given.
async fn image(
    d: &Dashboard,
    key: &str,
    version: u32,
    width: Option<u32>,
    immutable: bool,
) -> Result<Response, CoordinatorError> {
    let bytes = match width {
        Some(width) => d.images.thumbnail(key, version, width).await,
        None => d.images.get(key).await,
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(
            images::ImageError::Store(StoreError::NotFound { .. }) | images::ImageError::NoStore,
        ) => {
            return Ok(refused(
                StatusCode::NOT_FOUND,
                format!("{key} is not in the store"),
            ))
        }
        Err(err @ images::ImageError::Store(_)) => {
            return Ok(refused(StatusCode::SERVICE_UNAVAILABLE, err.to_string()))
        }
        Err(err) => return Ok(refused(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())),
    };
    let cache = if immutable {
        "max-age=86400, immutable"
    } else {
        "no-cache"
    };
    Ok((
        [(CONTENT_TYPE, content_type(key)), (CACHE_CONTROL, cache)],
        Body::from(bytes),
    )
        .into_response())
}

/// A file of one attempt at a task (what a job's report links to).
async fn attempt_file(
    State(d): Shared,
    Path((job, task, attempt, file)): Path<(String, String, String, String)>,
) -> Result<Response, CoordinatorError> {
    let number = attempt
        .strip_prefix("attempt-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| CoordinatorError::BadRequest(format!("{attempt}: not attempt-<n>")))?;
    if !layout::ATTEMPT_FILES.contains(&file.as_str()) {
        return Ok(refused(StatusCode::NOT_FOUND, format!("no {file} here")));
    }
    let key = layout::attempt_file_key(&job, &task, number, &file).map_err(bad_id)?;
    image(&d, &key, 0, None, true).await
}

/// A file of a job's report in the store.
async fn report_file(
    State(d): Shared,
    Path((job, file)): Path<(String, String)>,
) -> Result<Response, CoordinatorError> {
    if file
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(CoordinatorError::BadRequest(format!(
            "{file}: not a report file"
        )));
    }
    let key = format!("{}{file}", layout::report_prefix(&job).map_err(bad_id)?);
    image(&d, &key, 0, None, false).await
}

/// What a file is, by its name's extension.
fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next().unwrap_or_default() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "html" => "text/html; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

async fn script() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("dashboard.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("dashboard.css"),
    )
}
