//! `airlock serve`: wires the phases together and runs them until a shutdown signal.
//! [`run`] takes already-bound listeners, so tests run the whole server on port 0.

use crate::config::Config;
use crate::credentials::RealCredentials;
use crate::proxy::{self, Proxy};
use crate::state::agents::RELOAD_INTERVAL;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Tls(#[from] proxy::accept::TlsSetupError),
    #[error("{0}")]
    Agents(#[from] crate::state::agents::AgentError),
    #[error("{0}")]
    Proxy(String),
}

/// Runs the proxy and the approval page on the given listeners until `shutdown` resolves.
pub async fn run(
    config: Config,
    proxy_listener: TcpListener,
    approvals_listener: TcpListener,
    credentials: Arc<RealCredentials>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    run_with_connect(
        config,
        proxy_listener,
        approvals_listener,
        None,
        credentials,
        shutdown,
    )
    .await
}

/// [`run`], and the HTTPS_PROXY listener (`[listen] connect`) on `connect_listener`.
pub async fn run_with_connect(
    config: Config,
    proxy_listener: TcpListener,
    approvals_listener: TcpListener,
    connect_listener: Option<TcpListener>,
    credentials: Arc<RealCredentials>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let tls = proxy::accept::tls_config(&config)?;
    let minter = match connect_listener {
        Some(_) => Some(crate::connect::ca::Minter::load(&config).map_err(ServeError::Proxy)?),
        None => None,
    };
    let agents = crate::store::identities::Identities::open(&config)
        .map_err(ServeError::Proxy)?
        .prepare_serving(&config)
        .await
        .map_err(ServeError::Proxy)?;
    let proxy = Proxy::new(config, Arc::clone(&agents), credentials)
        .await
        .map_err(ServeError::Proxy)?;
    if let Ok(addr) = approvals_listener.local_addr() {
        proxy.gate.set_approvals_port(addr.port());
    }
    {
        // Learn the account in the background: receipts and ARNs carry it.
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            proxy.account().await;
        });
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Keep the agent index in step with the file (revocations apply within a second).
    let reload = {
        let agents = Arc::clone(&agents);
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match agents.reload_if_changed() {
                            Ok(true) => tracing::info!(agents = agents.len(), "agents reloaded"),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "could not reload agents; keeping the previous set"),
                        }
                    }
                    _ = rx.wait_for(|s| *s) => return,
                }
            }
        })
    };
    let approvals = tokio::spawn(crate::approvals::serve(
        approvals_listener,
        Arc::clone(&proxy.gate),
        stopped(stop_rx.clone()),
    ));
    let connect_task = match (connect_listener, minter) {
        (Some(listener), Some(minter)) => Some(tokio::spawn(crate::connect::serve(
            Arc::clone(&proxy),
            listener,
            minter,
            stopped(stop_rx.clone()),
        ))),
        _ => None,
    };
    let store = Arc::clone(&proxy.gate.store);
    let proxy_task = tokio::spawn(proxy::accept::serve(
        proxy,
        proxy_listener,
        tls,
        stopped(stop_rx),
    ));

    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    let _ = stop_tx.send(true);
    let _ = proxy_task.await;
    if let Some(task) = connect_task {
        let _ = task.await;
    }
    let _ = approvals.await;
    let _ = reload.await;
    if let Err(e) = store.audit_sync().await {
        tracing::error!(error = %e, "could not sync the audit log at shutdown");
    }
    Ok(())
}

/// The refusal, listing each problem.
fn refusal(problems: &[String]) -> String {
    format!(
        "refusing to start: other users could change or read airlock's files, so they \
         could turn the gate off, approve calls or take its keys (run `airlock doctor` to \
         see the whole picture):\n  {}",
        problems.join("\n  ")
    )
}

/// Reads the config only from a file that nobody but this user (and root) can change, on any
/// route to it, parsing the very file that was judged (see
/// [`crate::access::host::open_unchangeable`]). Its `[policy] mode`, `[[rule]]` and
/// `[[approver]]` could otherwise be anyone's, so this refuses whatever mode it names; so
/// does a config whose facts cannot be gathered.
pub fn load_trusted_config(config_path: &std::path::Path, own_uid: u32) -> Result<Config, String> {
    use crate::access::host;
    let mut file = host::open_unchangeable(config_path, own_uid).map_err(|x| {
        refusal(&[format!(
            "{} ([policy] mode, [[rule]] and [[approver]] are read only from a config nobody else can change)",
            x.describe(own_uid, &host::names())
        )])
    })?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)
        .map_err(|e| format!("{}: cannot read: {e}", config_path.display()))?;
    Config::parse(config_path, &text).map_err(|e| e.to_string())
}

/// `serve`'s startup check of the other paths it relies on (see `crate::access` and
/// [`crate::access::host::serve_paths`]): the state dir, certificates and private keys, its
/// AWS credential sources and its own binary. Any of them exposed to others, or that cannot
/// be checked, refuses an `enforce` start and is a warning in `shadow` mode. Each problem
/// names the path and the fix.
pub fn check_own_files(config: &Config, own_uid: u32) -> Result<(), String> {
    use crate::access::host;
    let names = host::names();
    let problems: Vec<String> = host::startup_exposures(config, own_uid)
        .iter()
        .map(|x| x.describe(own_uid, &names))
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    match config.policy.mode {
        crate::policy::Mode::Enforce => Err(refusal(&problems)),
        crate::policy::Mode::Shadow => {
            for p in &problems {
                tracing::warn!(
                    "shadow mode starts anyway, but in enforce mode this refuses to start: {p}"
                );
            }
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal sent right after the "listening" line is not lost.
pub fn signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}
