//! airlock: a credential broker between AI agents and AWS.
//!
//! # Layout
//!
//! The file tree is the request path (see `ARCHITECTURE.md`):
//!
//! - [`sigv4`]: SigV4 as the server sees it (pure: parse, canonicalise, verify, aws-chunked).
//! - [`proxy`]: the server: `accept` (TLS, HTTP) → `authenticate` (a `VerifiedRequest`)
//!   → `resign` (real credentials) → `forward` (upstream), and `error`, the one place where
//!   a failure becomes an AWS-shaped response.
//! - [`connect`]: `[listen] connect`, the HTTPS_PROXY listener (CONNECT tunnels, leaf
//!   certificates from the name-constrained CA).
//! - [`aws`]: facts about AWS from its own models (services, protocols, endpoints).
//! - [`credentials`]: airlock's own real credentials, cached and refreshed ahead of expiry.
//! - [`accounts`]: `[[account]]`, the other accounts airlock reaches by role or profile.
//! - [`state`]: what lives in the state dir (agents).
//! - [`store`]: what must hold across replicas (ledger, audit chain, pending approvals,
//!   revocations): the state dir's files, or PostgreSQL.
//! - [`config`], [`init`], [`cli`]: the configuration file, first-run setup, the command line.
//! - [`access`]: who can read or change airlock's files (serve's startup check, `doctor`).
//! - [`doctor`]: `airlock doctor`, every way the agent's user could get around airlock.
//! - [`secret`]: the type that keeps secrets out of logs and `Debug`.
//! - [`metrics`]: `/metrics` (Prometheus) and `/healthz`, served on the approval listener.

#![forbid(unsafe_code)]

pub mod access;
pub mod accounts;
pub mod approvals;
pub mod audit;
pub mod aws;
pub mod cli;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod describe;
pub mod doctor;
pub mod exec;
pub mod explain;
pub mod gate;
pub mod identify;
pub mod init;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod proxy;
pub mod receipt;
pub mod secret;
pub mod serve;
pub mod signing;
pub mod sigv4;
pub mod state;
pub mod store;
pub mod tty;
