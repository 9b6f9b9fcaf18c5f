//! Signet, an OCI registry in which Sigstore signatures are first-class.
//!
//! `api` speaks the distribution spec over HTTP; `state` holds the stores from
//! `signet-storage`; `config` layers the configuration; `error` is the one table of
//! OCI errors.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod commands;
pub mod config;
pub mod error;
pub mod ext;
pub mod layout;
pub mod maintenance;
pub mod notify;
pub mod ops;
pub mod pipeline;
pub mod plain_http;
pub mod request;
pub mod retention;
pub mod send_file;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod ui;
pub mod verify;
