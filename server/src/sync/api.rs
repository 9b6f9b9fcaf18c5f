//! The sync admin API (admin role when authentication is on):
//!
//! - `GET  /v2/_signet/sync/jobs`: every job (configuration, redacted) and its last run;
//! - `POST /v2/_signet/sync/jobs`: creates a job (JSON as in `[[sync.jobs]]`), stored
//!   in the metadata database (kept across restarts, seen by every replica);
//! - `GET  /v2/_signet/sync/jobs/<name>`: the job and its current or last run, with
//!   live progress;
//! - `DELETE /v2/_signet/sync/jobs/<name>`: removes a job created through the API
//!   (cancelling its run here); jobs of the configuration file are refused (409);
//! - `POST /v2/_signet/sync/jobs/<name>/run`: starts a run (202 with its id; 409 when
//!   one is going);
//! - `POST /v2/_signet/sync/jobs/<name>/cancel`: stops the run between items (202;
//!   409 when none is going).

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::job::SyncJob;
use super::manager::{DeleteError, Source, StartError, SyncManager};
use crate::request::{resource, Kind, Route, Target};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(Kind::SyncJobs)
            .on(Method::GET, list)
            .on(Method::POST, create),
    )
    .service(
        resource(Kind::SyncJob)
            .on(Method::GET, show)
            .on(Method::DELETE, delete),
    )
    .service(resource(Kind::SyncJobRun).on(Method::POST, run))
    .service(resource(Kind::SyncJobCancel).on(Method::POST, cancel));
}

/// The job a request's route names.
fn job_of(target: Target) -> String {
    match target.route {
        Route::SyncJob(name) | Route::SyncJobRun(name) | Route::SyncJobCancel(name) => name,
        _ => String::new(),
    }
}

fn error(status: StatusCode, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(status)
        .json(json!({"errors": [{"code": code, "message": message, "detail": null}]}))
}

fn unavailable() -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "sync is not running in this server".into(),
    )
}

/// The manager with the jobs other replicas stored re-read, or the error to answer.
async fn manager(
    m: Option<web::Data<SyncManager>>,
) -> Result<std::sync::Arc<SyncManager>, HttpResponse> {
    let Some(m) = m.map(|m| m.into_inner()) else {
        return Err(unavailable());
    };
    match m.refresh().await {
        Ok(()) => Ok(m),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sync jobs could not be read");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "sync jobs could not be read".into(),
            ))
        }
    }
}

fn describe(m: &SyncManager, job: &SyncJob, source: Source) -> Value {
    let mut shown = job.clone();
    if !shown.password.is_empty() {
        shown.password = "***".into();
    }
    let (last, skipped) = m.last_run(&job.name);
    json!({
        "name": job.name,
        "source": source,
        "config": shown,
        "run": last,
        "scheduled_runs_skipped": skipped,
    })
}

async fn list(m: Option<web::Data<SyncManager>>) -> HttpResponse {
    let m = match manager(m).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let jobs: Vec<Value> = m.jobs().iter().map(|(j, s)| describe(&m, j, *s)).collect();
    HttpResponse::Ok().json(json!({ "jobs": jobs }))
}

async fn create(m: Option<web::Data<SyncManager>>, body: web::Bytes) -> HttpResponse {
    let m = match manager(m).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let job: SyncJob = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID", format!("job: {e}")),
    };
    if job.name.is_empty()
        || !job
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID",
            "job name: letters, digits, '-', '_', '.'".into(),
        );
    }
    // Checked before anything reads them: a file's error would tell the caller about it.
    if !m.may_read_files() {
        if let Some(file) = job.server_files().first() {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID",
                format!(
                    "{file:?}: jobs created through the API may not name files on the server \
                     ([sync] api_jobs_may_read_files)"
                ),
            );
        }
    }
    if let Err(e) = super::plan::Plan::new(&job).and_then(|_| super::source::check(&job)) {
        return error(StatusCode::BAD_REQUEST, "INVALID", format!("{e:#}"));
    }
    if !job.password.is_empty() && !m.seals_passwords() {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID",
            "a job with a password needs [sync] secret_key_file, which seals it at rest".into(),
        );
    }
    let name = job.name.clone();
    match m.create(&job).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::CONFLICT,
                "JOB_EXISTS",
                format!("sync job {name:?} exists"),
            )
        }
        Err(e) => {
            tracing::error!(job = %name, error = %format!("{e:#}"), "sync job could not be stored");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("sync job {name:?} could not be stored"),
            );
        }
    }
    HttpResponse::Created()
        .insert_header(("Location", format!("/v2/_signet/sync/jobs/{name}")))
        .json(describe(&m, &job, Source::Api))
}

async fn show(m: Option<web::Data<SyncManager>>, target: Target) -> HttpResponse {
    let path = job_of(target);
    let m = match manager(m).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    match m.job(&path) {
        Some((job, source)) => HttpResponse::Ok().json(describe(&m, &job, source)),
        None => unknown(&path),
    }
}

fn unknown(name: &str) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "JOB_UNKNOWN",
        format!("no sync job {name:?}"),
    )
}

async fn run(m: Option<web::Data<SyncManager>>, target: Target) -> HttpResponse {
    let path = job_of(target);
    let m = match manager(m).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    match m.start(&path, "api").await {
        Ok(handle) => HttpResponse::Accepted()
            .insert_header(("Location", format!("/v2/_signet/sync/jobs/{}", path)))
            .json(json!({"id": handle.id, "status": "running"})),
        Err(StartError::UnknownJob) => unknown(&path),
        Err(StartError::Elsewhere) => error(
            StatusCode::CONFLICT,
            "RUN_IN_PROGRESS",
            format!("sync job {:?} is running on another replica", path.as_str()),
        ),
        Err(StartError::Storage(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!("sync job {:?}: lease: {e}", path.as_str()),
        ),
        Err(StartError::Running(id)) => HttpResponse::Conflict().json(json!({
            "errors": [{"code": "RUN_IN_PROGRESS", "message": format!("sync job {:?} is running", path.as_str()), "detail": {"id": id}}],
            "id": id,
        })),
    }
}

async fn cancel(m: Option<web::Data<SyncManager>>, target: Target) -> HttpResponse {
    let path = job_of(target);
    let m = match manager(m).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if m.job(&path).is_none() {
        return unknown(&path);
    }
    match m.cancel(&path) {
        Some(handle) => {
            HttpResponse::Accepted().json(json!({"id": handle.id, "status": "cancelling"}))
        }
        None => error(
            StatusCode::CONFLICT,
            "NOT_RUNNING",
            format!("sync job {:?} has no run going", path.as_str()),
        ),
    }
}

async fn delete(m: Option<web::Data<SyncManager>>, target: Target) -> HttpResponse {
    let path = job_of(target);
    let m = match manager(m).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    match m.delete(&path).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(DeleteError::UnknownJob) => unknown(&path),
        Err(DeleteError::FromConfig) => error(
            StatusCode::CONFLICT,
            "JOB_FROM_CONFIG",
            format!(
                "sync job {:?} comes from the configuration file: change the file",
                path.as_str()
            ),
        ),
        Err(DeleteError::Storage(e)) => {
            tracing::error!(job = %path.as_str(), error = %e, "sync job could not be deleted");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("sync job {:?} could not be deleted", path.as_str()),
            )
        }
    }
}
