//! Runs of sync jobs inside `signet serve`: one run of a job at a time, started by the
//! admin API or the schedule, watched (live progress) and cancelled through the API.
//!
//! Jobs come from the configuration and from `POST /v2/_signet/sync/jobs`; the latter
//! are stored in the metadata database (`sync_jobs`), so they survive restarts and
//! every replica sharing the database runs them on schedule; each replica re-reads
//! them every tick. The run history (the current and the last run of each job) is kept
//! in memory. Across replicas, a run holds the lease `sync:<job>` (renewed while it
//! goes): another replica's run of the same job — scheduled or asked for — does not
//! start meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::job::{SyncJob, SyncReport};
use super::runner::{run_controlled, Control};
use super::sealed::Sealer;
use crate::state::AppState;

/// One run, going or finished.
pub struct RunHandle {
    pub id: String,
    /// `api` or `schedule`.
    pub trigger: &'static str,
    pub started_at: DateTime<Utc>,
    pub control: Control,
    last_line: Mutex<String>,
    outcome: Mutex<Option<Outcome>>,
}

struct Outcome {
    status: &'static str,
    finished_at: DateTime<Utc>,
    report: Option<SyncReport>,
    error: Option<String>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub id: String,
    pub trigger: &'static str,
    /// `running`, `succeeded`, `failed` (the run stopped, or some items failed) or
    /// `cancelled`.
    pub status: &'static str,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The report so far (the final one once finished).
    pub progress: SyncReport,
    /// The last progress line.
    pub last: String,
    /// Why the run stopped, when it could not go on at all.
    pub error: Option<String>,
}

impl RunHandle {
    pub fn running(&self) -> bool {
        self.outcome.lock().expect("outcome lock").is_none()
    }

    pub fn status(&self) -> RunStatus {
        let outcome = self.outcome.lock().expect("outcome lock");
        let last = self.last_line.lock().expect("line lock").clone();
        match &*outcome {
            None => RunStatus {
                id: self.id.clone(),
                trigger: self.trigger,
                status: if self.control.cancelled() {
                    "cancelling"
                } else {
                    "running"
                },
                started_at: self.started_at,
                finished_at: None,
                progress: self.control.snapshot(),
                last,
                error: None,
            },
            Some(o) => RunStatus {
                id: self.id.clone(),
                trigger: self.trigger,
                status: o.status,
                started_at: self.started_at,
                finished_at: Some(o.finished_at),
                progress: o.report.clone().unwrap_or_else(|| self.control.snapshot()),
                last,
                error: o.error.clone(),
            },
        }
    }
}

/// Why a run did not start.
#[derive(Debug)]
pub enum StartError {
    UnknownJob,
    /// The id of the run still going.
    Running(String),
    /// Another replica holds the job's lease.
    Elsewhere,
    /// The lease could not be checked.
    Storage(String),
}

/// Why a job was not deleted.
#[derive(Debug)]
pub enum DeleteError {
    UnknownJob,
    /// Jobs of the configuration file change with the file.
    FromConfig,
    Storage(String),
}

/// How long a run's lease lasts without renewal (a replica that dies mid-run blocks
/// the job this long), and how often a running replica renews it.
const LEASE_SECS: i64 = 60;
const LEASE_RENEW: Duration = Duration::from_secs(20);

/// Where a job was defined.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Api,
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<RunHandle>>,
    /// The id of a run waiting for its lease.
    starting: Option<String>,
    /// Scheduled runs skipped because one was still going.
    skipped: u64,
    next_due: Option<Instant>,
}

pub struct SyncManager {
    state: Arc<AppState>,
    /// Seals the passwords of jobs created through the API (`[sync] secret_key_file`).
    sealer: Option<Sealer>,
    /// Jobs created through the API, as last read from the database.
    created: Mutex<Vec<SyncJob>>,
    slots: Mutex<HashMap<String, Slot>>,
    next_id: AtomicU64,
    /// This process, as a lease holder.
    holder: String,
}

impl SyncManager {
    pub fn new(state: Arc<AppState>) -> anyhow::Result<SyncManager> {
        let sealer = Sealer::load(&state.config.sync.secret_key_file)?;
        Ok(SyncManager {
            state,
            sealer,
            created: Mutex::default(),
            slots: Mutex::default(),
            next_id: AtomicU64::new(1),
            holder: format!("sync-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// Whether jobs created through the API may name files on the server.
    pub fn may_read_files(&self) -> bool {
        self.state.config.sync.api_jobs_may_read_files
    }

    /// Whether jobs created through the API may carry a password (sealed at rest).
    pub fn seals_passwords(&self) -> bool {
        self.sealer.is_some()
    }

    /// Every job (configuration first), with where it comes from.
    pub fn jobs(&self) -> Vec<(SyncJob, Source)> {
        let mut out: Vec<(SyncJob, Source)> = self
            .state
            .config
            .sync
            .jobs
            .iter()
            .map(|j| (j.clone(), Source::Config))
            .collect();
        out.extend(
            self.created
                .lock()
                .expect("jobs lock")
                .iter()
                .map(|j| (j.clone(), Source::Api)),
        );
        out
    }

    pub fn job(&self, name: &str) -> Option<(SyncJob, Source)> {
        self.jobs().into_iter().find(|(j, _)| j.name == name)
    }

    /// Re-reads the jobs created through the API (by any replica). A stored job that no
    /// longer parses (written by another version) is logged and left out.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let stored = self.state.meta.sync_jobs().await?;
        let jobs = stored
            .into_iter()
            .filter_map(|(name, config)| match SyncJob::from_stored(&config, self.sealer.as_ref()) {
                Ok(job) => Some(job),
                Err(e) => {
                    tracing::warn!(job = %name, error = %e, "stored sync job is unreadable; skipped");
                    None
                }
            })
            .collect();
        *self.created.lock().expect("jobs lock") = jobs;
        Ok(())
    }

    /// Stores a job; false when the name is taken (by the configuration or the API).
    pub async fn create(&self, job: &SyncJob) -> anyhow::Result<bool> {
        if self.state.config.sync.job(&job.name).is_some() {
            return Ok(false);
        }
        let created = self
            .state
            .meta
            .sync_job_create(&job.name, &job.to_stored(self.sealer.as_ref())?)
            .await?;
        self.refresh().await?;
        Ok(created)
    }

    /// Removes a job created through the API and cancels its run here if one is going
    /// (a run going on another replica finishes; no replica schedules the job again).
    pub async fn delete(&self, name: &str) -> Result<(), DeleteError> {
        if self.state.config.sync.job(name).is_some() {
            return Err(DeleteError::FromConfig);
        }
        let removed = self
            .state
            .meta
            .sync_job_delete(name)
            .await
            .map_err(|e| DeleteError::Storage(e.to_string()))?;
        if !removed {
            return Err(DeleteError::UnknownJob);
        }
        self.cancel(name);
        self.created
            .lock()
            .expect("jobs lock")
            .retain(|j| j.name != name);
        Ok(())
    }

    /// The current (or last) run of `name`, and the scheduled runs it skipped.
    pub fn last_run(&self, name: &str) -> (Option<RunStatus>, u64) {
        let slots = self.slots.lock().expect("slots lock");
        match slots.get(name) {
            Some(slot) => (slot.current.as_ref().map(|h| h.status()), slot.skipped),
            None => (None, 0),
        }
    }

    pub fn cancel(&self, name: &str) -> Option<Arc<RunHandle>> {
        let slots = self.slots.lock().expect("slots lock");
        let handle = slots.get(name)?.current.clone()?;
        if !handle.running() {
            return None;
        }
        handle.control.cancel();
        Some(handle)
    }

    /// Starts a run of `name` in the background.
    pub async fn start(
        self: &Arc<Self>,
        name: &str,
        trigger: &'static str,
    ) -> Result<Arc<RunHandle>, StartError> {
        let (job, _) = self.job(name).ok_or(StartError::UnknownJob)?;
        let handle = {
            let mut slots = self.slots.lock().expect("slots lock");
            let slot = slots.entry(name.to_string()).or_default();
            if let Some(current) = slot.current.as_ref().filter(|h| h.running()) {
                if trigger == "schedule" {
                    slot.skipped += 1;
                }
                return Err(StartError::Running(current.id.clone()));
            }
            if let Some(id) = &slot.starting {
                if trigger == "schedule" {
                    slot.skipped += 1;
                }
                return Err(StartError::Running(id.clone()));
            }
            // Reserved (not yet shown) while the lease is asked for, so a second start
            // here does not slip in meanwhile.
            let handle = Arc::new(RunHandle {
                id: format!(
                    "{}-{}",
                    Utc::now().format("%Y%m%dT%H%M%SZ"),
                    self.next_id.fetch_add(1, Ordering::Relaxed)
                ),
                trigger,
                started_at: Utc::now(),
                control: Control::default(),
                last_line: Mutex::default(),
                outcome: Mutex::default(),
            });
            slot.starting = Some(handle.id.clone());
            handle
        };
        let lease = format!("sync:{name}");
        let taken = self
            .state
            .meta
            .lease_acquire(&lease, &self.holder, LEASE_SECS)
            .await;
        {
            let mut slots = self.slots.lock().expect("slots lock");
            let slot = slots.entry(name.to_string()).or_default();
            slot.starting = None;
            if matches!(taken, Ok(true)) {
                slot.current = Some(handle.clone());
            } else if trigger == "schedule" {
                slot.skipped += 1;
            }
        }
        match taken {
            Ok(true) => {}
            Ok(false) => return Err(StartError::Elsewhere),
            Err(e) => return Err(StartError::Storage(e.to_string())),
        }
        let holder = self.holder.clone();
        let state = self.state.clone();
        let run = handle.clone();
        tracing::info!(job = %job.name, run = %run.id, trigger, "sync run started");
        actix_web::rt::spawn(async move {
            let line_of = run.clone();
            let job_name = job.name.clone();
            let progress = move |line: &str| {
                tracing::debug!(job = %job_name, "{line}");
                *line_of.last_line.lock().expect("line lock") = line.to_string();
            };
            let renew = async {
                loop {
                    tokio::time::sleep(LEASE_RENEW).await;
                    match state.meta.lease_acquire(&lease, &holder, LEASE_SECS).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(job = %job.name, "sync run lost its lease"),
                        Err(e) => {
                            tracing::warn!(job = %job.name, error = %e, "sync lease renewal failed")
                        }
                    }
                }
            };
            let result = tokio::select! {
                r = run_controlled(&state, &job, &progress, &run.control) => r,
                () = renew => unreachable!("the renewal loop never ends"),
            };
            if let Err(e) = state.meta.lease_release(&lease, &holder).await {
                tracing::warn!(job = %job.name, error = %e, "sync lease release failed");
            }
            let outcome = match result {
                Ok(report) => Outcome {
                    status: status_of(&report),
                    finished_at: Utc::now(),
                    report: Some(report),
                    error: None,
                },
                Err(e) => Outcome {
                    status: "failed",
                    finished_at: Utc::now(),
                    report: None,
                    error: Some(format!("{e:#}")),
                },
            };
            tracing::info!(job = %job.name, run = %run.id, status = outcome.status, "sync run finished");
            let event = finished_event(
                &job,
                &run.id,
                outcome.status,
                outcome.report.as_ref(),
                outcome.error.as_deref(),
            );
            state.events.append(event).await;
            *run.outcome.lock().expect("outcome lock") = Some(outcome);
        });
        Ok(handle)
    }

    /// Starts the jobs whose interval has come round; called every second by the
    /// scheduler. A job still running is skipped (and logged) until the next interval.
    pub async fn tick(self: &Arc<Self>, now: Instant) {
        if let Err(e) = self.refresh().await {
            // The jobs last read stay scheduled.
            tracing::warn!(error = %format!("{e:#}"), "sync jobs could not be read");
        }
        for (job, _) in self.jobs() {
            if job.interval_secs == 0 {
                continue;
            }
            let every = Duration::from_secs(job.interval_secs);
            let due = {
                let mut slots = self.slots.lock().expect("slots lock");
                let slot = slots.entry(job.name.clone()).or_default();
                match slot.next_due {
                    None => {
                        slot.next_due = Some(now + every);
                        false
                    }
                    Some(at) if at <= now => {
                        slot.next_due = Some(now + every);
                        true
                    }
                    Some(_) => false,
                }
            };
            if !due {
                continue;
            }
            match self.start(&job.name, "schedule").await {
                Ok(_) => {}
                Err(StartError::Running(id)) => tracing::info!(
                    job = %job.name,
                    running = %id,
                    "scheduled sync run skipped: the previous run is still going"
                ),
                Err(StartError::Elsewhere) => tracing::info!(
                    job = %job.name,
                    "scheduled sync run skipped: another replica is running the job"
                ),
                Err(StartError::Storage(e)) => tracing::warn!(
                    job = %job.name,
                    error = %e,
                    "scheduled sync run skipped: its lease could not be checked"
                ),
                Err(StartError::UnknownJob) => {}
            }
        }
    }
}

/// How a run that returned a report ended.
pub fn status_of(report: &SyncReport) -> &'static str {
    if report.cancelled {
        "cancelled"
    } else if report.errors.is_empty() {
        "succeeded"
    } else {
        "failed"
    }
}

/// The `sync.finished` event of a run (`run` names it: its id, or `cli`): its status
/// and counters, and how many items failed (the list is in the admin API).
pub fn finished_event(
    job: &SyncJob,
    run: &str,
    status: &str,
    report: Option<&SyncReport>,
    error: Option<&str>,
) -> Vec<signet_storage::events::NewEvent> {
    use signet_storage::events::{EventData, EventType, NewEvent};
    let mut counters = report
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or(serde_json::Value::Null);
    if let Some(map) = counters.as_object_mut() {
        let errors = report.map_or(0, |r| r.errors.len());
        map.insert("errors".into(), serde_json::json!(errors));
    }
    vec![NewEvent::new(
        EventType::SyncFinished,
        EventData {
            repository: job.destination_prefix.clone(),
            actor: Some(format!("sync:{}", job.name)),
            reason: error.map(str::to_string),
            detail: Some(serde_json::json!({
                "job": job.name,
                "run": run,
                "status": status,
                "report": counters,
            })),
            ..EventData::default()
        },
    )]
}
