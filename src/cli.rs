//! The command line. Each command is a small function over the library.

use crate::config::{Config, DEFAULT_PATH};
use crate::credentials::RealCredentials;
use crate::init;
use crate::state::agents::{AgentRecord, AgentStore};
use crate::store::identities::run_blocking;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "A credential broker between AI agents and AWS"
)]
struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create what is missing: config, local CA and server certificate, state dir. Never overwrites.
    Init {
        /// Replace the CA (and the server certificate) with a new, name-constrained one.
        #[arg(long)]
        rotate_ca: bool,
    },
    /// Run the proxy and the approval page (runs `init` first when needed).
    Serve,
    /// Manage agents and their proxy-only credentials.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Make an approver's Ed25519 key: writes the private key (mode 0600) locked with a
    /// passphrase asked for twice on the terminal, and prints the `[[approver]]` block to add
    /// to the config.
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The approver's name.
        #[arg(long, default_value = "approver")]
        name: String,
        /// Write the key unencrypted (no passphrase): anyone who can read the file can approve.
        #[arg(long)]
        insecure_plaintext_key: bool,
    },
    /// List calls waiting for approval (and recent decisions).
    Approvals {
        #[arg(long)]
        json: bool,
        /// Also list decided and closed approvals.
        #[arg(long)]
        all: bool,
    },
    /// Approve a pending call: signs a receipt for exactly that call. The key's passphrase is
    /// asked for on the terminal (/dev/tty) only.
    Approve {
        id: String,
        /// The approver's private key (from `airlock keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Accept a key file that is not locked with a passphrase (prints a warning).
        #[arg(long)]
        insecure_plaintext_key: bool,
    },
    /// Deny a pending call: signs a denial.
    Deny {
        id: String,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        insecure_plaintext_key: bool,
    },
    /// Approve a Terraform plan once: everything it destroys, before it runs.
    Plan {
        #[command(subcommand)]
        command: crate::plan::cli::PlanCommand,
    },
    /// Work with receipts.
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The PostgreSQL store (`[state] database_url`).
    Db {
        #[command(subcommand)]
        command: crate::store::commands::DbCommand,
    },
    /// Manage approvers' passkeys.
    Approver {
        #[command(subcommand)]
        command: ApproverCommand,
    },
    /// Run a command with an agent's environment (credentials, endpoint, CA bundle) and
    /// nothing of the real credentials: `airlock exec AGENT -- terraform destroy`.
    Exec {
        agent: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List every way the agent's user could get around airlock on this host (real AWS
    /// credentials it can read, airlock's files it can read or change, a `serve` it can kill,
    /// docker); exits 1 when it finds one. Run it as the agent's user, or as root with
    /// `--agent-user NAME`.
    Doctor {
        /// Judge this user's access (needs root); default: the user running doctor.
        #[arg(long)]
        agent_user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The policy airlock applies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Show what airlock would make of raw HTTP/1.1 requests (one JSON line each); nothing is forwarded.
    Explain {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The account to assume for ARNs and environments (default: unknown).
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the built-in catalogue: every class, its rules, and the operations of AWS's
    /// model each matches (counted per service).
    Builtin {
        /// One JSON document, every matched operation listed.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ApproverCommand {
    /// Print a one-time link (valid for minutes, usable once) that registers a passkey for NAME.
    /// Only the owner of the state dir may run it; once any passkey is enrolled, a new one
    /// counts only after an enrolled approver confirms it on the approval page.
    Enroll { name: String },
    /// Remove NAME's passkeys (and pending enrollments); a running `serve` refuses them
    /// within a second.
    Revoke { name: String },
    /// List who may approve: the config's approver keys, the enrolled passkeys and the
    /// passkeys waiting for confirmation (never a secret).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exits non-zero naming the first broken record (segment, line).
    Verify {
        /// Check from this segment on (`00000042.jsonl` or `42`), taking its first
        /// record's link to the one before as given.
        #[arg(long, value_name = "SEGMENT")]
        from: Option<String>,
    },
    /// Print the audit log readably (`-f` follows it).
    Tail {
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last records to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Verify a receipt offline against the config's approver keys.
    Verify { file: PathBuf },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Issue proxy-only credentials for a new agent and print its environment.
    Add {
        name: String,
        /// Print one JSON object instead of `export` lines.
        #[arg(long)]
        json: bool,
        /// Bind the agent to this `[[account]]` (repeatable): one key per account, printed as
        /// an AWS config with one profile each (`airlock-ACCOUNT`). Binds an existing agent
        /// to more accounts.
        #[arg(long = "account", value_name = "ACCOUNT")]
        accounts: Vec<String>,
    },
    /// List agents (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent's credentials; a running `serve` refuses them within a second.
    Revoke { name: String },
}

/// The environment as the process started, before `main` drops `AWS_ENDPOINT_URL*`.
static ORIGINAL_ENVIRONMENT: std::sync::OnceLock<Vec<(String, String)>> =
    std::sync::OnceLock::new();

/// Keeps a copy of the environment for `airlock doctor`; call before changing it.
pub fn remember_environment() {
    let env = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let _ = ORIGINAL_ENVIRONMENT.set(env);
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { rotate_ca } => cmd_init(&cli.config, rotate_ca),
        Command::Serve => cmd_serve(&cli.config),
        Command::Agent { command } => match command {
            AgentCommand::Add {
                name,
                json,
                accounts,
            } if !accounts.is_empty() => {
                crate::exec::profiles::cmd_agent_add(&cli.config, &name, &accounts, json)
            }
            AgentCommand::Add { name, json, .. } => cmd_agent_add(&cli.config, &name, json),
            AgentCommand::List { json } => cmd_agent_list(&cli.config, json),
            AgentCommand::Revoke { name } => cmd_agent_revoke(&cli.config, &name),
        },
        Command::Keygen {
            out,
            name,
            insecure_plaintext_key,
        } => cmd_keygen(&out, &name, insecure_plaintext_key),
        Command::Approvals { json, all } => cmd_approvals(&cli.config, json, all),
        Command::Approve {
            id,
            key,
            insecure_plaintext_key,
        } => cmd_decide(&cli.config, &id, &key, true, insecure_plaintext_key),
        Command::Deny {
            id,
            key,
            insecure_plaintext_key,
        } => cmd_decide(&cli.config, &id, &key, false, insecure_plaintext_key),
        Command::Plan { command } => crate::plan::cli::run(&cli.config, command),
        Command::Receipt {
            command: ReceiptCommand::Verify { file },
        } => cmd_receipt_verify(&cli.config, &file),
        Command::Audit {
            command: AuditCommand::Verify { from },
        } => cmd_audit_verify(&cli.config, from.as_deref()),
        Command::Audit {
            command: AuditCommand::Tail { follow, lines },
        } => cmd_audit_tail(&cli.config, follow, lines),
        Command::Db { command } => Config::load_existing(&cli.config)
            .and_then(|config| crate::store::commands::run(&config, command)),
        Command::Explain { files, account } => cmd_explain(&cli.config, &files, account.as_deref()),
        Command::Policy {
            command: PolicyCommand::Builtin { json },
        } => cmd_policy_builtin(json),
        Command::Approver {
            command: ApproverCommand::Enroll { name },
        } => crate::approvals::enroll::cmd_enroll(&cli.config, &name),
        Command::Doctor { agent_user, json } => {
            match cmd_doctor(&cli.config, agent_user.as_deref(), json) {
                Ok(clean) => return ExitCode::from(if clean { 0 } else { 1 }),
                Err(e) => Err(e),
            }
        }
        Command::Approver {
            command: ApproverCommand::Revoke { name },
        } => crate::approvals::enroll::cmd_revoke(&cli.config, &name),
        Command::Approver {
            command: ApproverCommand::List { json },
        } => crate::approvals::enroll::cmd_list(&cli.config, json),
        Command::Exec { agent, command } => match crate::exec::run(&cli.config, &agent, &command) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("airlock: {message}");
            ExitCode::from(2)
        }
    }
}

type CmdResult = Result<(), String>;

/// The config at `config`; a missing one says to run `init`, an unreadable one says why.
fn print_created(created: &init::Created) {
    for p in &created.paths {
        println!("created {}", p.display());
    }
}

fn cmd_init(config_path: &Path, rotate_ca: bool) -> CmdResult {
    if rotate_ca {
        Config::load_existing(config_path)?;
        let (config, replaced, created) =
            init::rotate_ca(config_path).map_err(|e| e.to_string())?;
        for p in &replaced {
            println!("replaced {}", p.display());
        }
        print_created(&created);
        println!(
            "made a new CA, name-constrained to localhost, the loopback addresses and AWS's endpoint names; \
             restart `airlock serve`, and give every client that trusted the old CA the new {} \
             (`airlock exec` and `airlock agent add` point at it)",
            config.ca_cert().display()
        );
        return Ok(());
    }
    let (config, created) = init::init(config_path).map_err(|e| e.to_string())?;
    if created.paths.is_empty() {
        println!("nothing to do: everything already exists");
    } else {
        print_created(&created);
    }
    println!("next: `airlock agent add NAME --config {}` to issue credentials, then `airlock serve --config {}`", config.path.display(), config.path.display());
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:=+@%,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn print_agent_env(config: &Config, agent: &AgentRecord, json: bool) {
    let env = crate::exec::agent_env(config, agent);
    if json {
        let obj: serde_json::Map<String, serde_json::Value> = env
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
            .collect();
        println!("{}", serde_json::Value::Object(obj));
    } else {
        for (k, v) in env {
            println!("export {k}={}", shell_quote(&v));
        }
    }
}

fn cmd_agent_add(config_path: &Path, name: &str, json: bool) -> CmdResult {
    let config = Config::load_existing(config_path)?;
    let agent = run_blocking(&config, async |ids| ids.add_agent(name).await)?;
    print_agent_env(&config, &agent, json);
    Ok(())
}

fn cmd_agent_list(config_path: &Path, json: bool) -> CmdResult {
    let config = Config::load_existing(config_path)?;
    let file = run_blocking(&config, async |ids| ids.agents().await)?;
    if json {
        let rows: Vec<_> = file
            .agents
            .iter()
            .map(|a| serde_json::json!({"name": a.name, "access_key_id": a.access_key_id, "account": a.account, "created_at": a.created_at, "revoked_at": a.revoked_at}))
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if file.agents.is_empty() {
        println!("no agents yet: `airlock agent add NAME`");
    }
    for a in &file.agents {
        let status = a
            .revoked_at
            .as_deref()
            .map(|t| format!("revoked {t}"))
            .unwrap_or_else(|| "active".into());
        let account = a
            .account
            .as_deref()
            .map(|n| format!("account {n}  "))
            .unwrap_or_default();
        println!(
            "{:<24} {}  {account}created {}  {}",
            a.name, a.access_key_id, a.created_at, status
        );
    }
    Ok(())
}

fn cmd_agent_revoke(config_path: &Path, name: &str) -> CmdResult {
    let config = Config::load_existing(config_path)?;
    run_blocking(&config, async |ids| ids.revoke_agent(name).await)?;
    println!("revoked {name}: a running airlock refuses its key within a second");
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "airlock=info,{},warn",
            crate::credentials::QUIET_CHAIN
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The first and last four characters of an access key id, for the log.
fn masked(id: &str) -> String {
    if id.len() > 8 {
        format!("{}…{}", &id[..4], &id[id.len() - 4..])
    } else {
        "…".to_string()
    }
}

fn cmd_serve(config_path: &Path) -> CmdResult {
    init_tracing();
    // First, before any credential is in memory: no other process of this user may read
    // this one's environment or memory, or attach to it.
    if let Err(e) = crate::access::host::make_undumpable() {
        tracing::warn!("could not make airlock non-dumpable: {e}");
    }
    let own_uid = crate::access::host::current_principal().uid;
    let fresh = !config_path.exists();
    if !fresh {
        // Judged before `init` acts on what it names.
        crate::serve::load_trusted_config(config_path, own_uid)?;
    }
    let (_, created) = init::init(config_path).map_err(|e| e.to_string())?;
    print_created(&created);
    let config = crate::serve::load_trusted_config(config_path, own_uid)?;
    crate::serve::check_own_files(&config, own_uid)?;
    if config.database_url.is_some() {
        // Another serve with this state dir's spool is refused before anything is written
        // there (`listen.json`); the store takes the lock for good when it opens.
        drop(crate::store::postgres::spool::lock(&config.state_dir)?);
    }
    crate::connect::ca::warn_if_unconstrained(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        // Checked before any port is bound: a broken TLS setup is a config error.
        crate::proxy::accept::tls_config(&config).map_err(|e| e.to_string())?;
        let credentials =
            RealCredentials::from_default_chain(config.credentials.profile.as_deref(), config.credentials.refresh_ahead).await;
        match tokio::time::timeout(std::time::Duration::from_secs(20), credentials.get()).await {
            Ok(Ok(c)) => tracing::info!(access_key_id = %masked(c.access_key_id()), "using airlock's own AWS credentials"),
            Ok(Err(e)) => tracing::warn!(
                "{e}; airlock starts anyway and answers forwarded calls with InternalFailure until it has some: {} ({} shows the lookup)",
                crate::credentials::HOW_TO_GIVE_CREDENTIALS,
                crate::credentials::SHOW_THE_LOOKUP
            ),
            Err(_) => tracing::warn!("looking up AWS credentials timed out; airlock starts anyway and keeps trying"),
        }
        let bind = |addr: std::net::SocketAddr, key: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("{}: {key}: cannot listen on {addr}: {e}", config_path.display()))
        };
        let proxy_listener = bind(config.proxy_addr, "[listen] proxy").await?;
        let approvals_listener = bind(config.approvals_addr, "[listen] approvals").await?;
        let connect_listener = match config.connect_addr {
            Some(addr) => Some(bind(addr, "[listen] connect").await?),
            None => None,
        };
        let proxy_addr = proxy_listener.local_addr().map_err(|e| e.to_string())?;
        let approvals_addr = approvals_listener.local_addr().map_err(|e| e.to_string())?;
        let connect_addr = connect_listener.as_ref().and_then(|l| l.local_addr().ok());
        let listening = crate::state::listen::Listening { proxy: proxy_addr, approvals: approvals_addr, connect: connect_addr, pid: Some(std::process::id()) };
        listening.write(&config.state_dir).map_err(|e| format!("{}: {e}", config.state_dir.display()))?;
        if fresh {
            let agent = AgentStore::new(&config.state_dir).add("default").map_err(|e| e.to_string())?;
            println!("# a first agent, \"default\"; give its environment to your agent:");
            print_agent_env(&config, &agent, false);
        }
        let shutdown = crate::serve::signal();
        let connect = connect_addr.map(|a| format!(" connect=http://{a}")).unwrap_or_default();
        println!("airlock listening proxy=https://{proxy_addr} approvals=http://{approvals_addr}{connect}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        crate::serve::run_with_connect(config, proxy_listener, approvals_listener, connect_listener, credentials, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}

/// Runs doctor; `Ok(true)` when it found no way around airlock.
fn cmd_doctor(config_path: &Path, agent_user: Option<&str>, json: bool) -> Result<bool, String> {
    use crate::access::host;
    let me = host::current_principal();
    let (agent, env) = match agent_user {
        Some(name) => {
            if me.uid != 0 {
                return Err("--agent-user needs root (to look at files as that user would); run doctor as the agent's user instead".into());
            }
            let agent = host::account_named(name)
                .ok_or_else(|| format!("no user {name:?} in /etc/passwd"))?;
            (agent, None)
        }
        None => {
            let mut agent = host::account_of_uid(me.uid)
                .ok_or_else(|| format!("uid {} is not in /etc/passwd", me.uid))?;
            // The kernel's view of this process, not /etc/group's.
            agent.principal = me;
            if let Some(home) = std::env::var_os("HOME") {
                agent.home = PathBuf::from(home);
            }
            let env = ORIGINAL_ENVIRONMENT
                .get()
                .cloned()
                .unwrap_or_else(|| std::env::vars().collect());
            (agent, Some(env))
        }
    };
    let report = crate::doctor::examine(&agent, config_path, env.as_deref());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.render());
    }
    Ok(report.findings.is_empty())
}

fn cmd_keygen(out: &Path, name: &str, plaintext: bool) -> CmdResult {
    use crate::receipt::keys::{check_name, MIN_PASSPHRASE_CHARS};
    check_name(name).map_err(|e| e.to_string())?;
    if out.symlink_metadata().is_ok() {
        return Err(crate::receipt::KeyError::Exists {
            path: out.to_owned(),
        }
        .to_string());
    }
    let public = if plaintext {
        eprintln!("{}", crate::signing::PLAINTEXT_WARNING);
        crate::receipt::keygen(out, name)
    } else {
        let passphrase =
            crate::tty::read_new_passphrase(&format!("{name:?}'s key"), MIN_PASSPHRASE_CHARS)?;
        crate::receipt::keygen_locked(out, name, &passphrase)
    }
    .map_err(|e| e.to_string())?;
    let locked = if plaintext {
        "NOT locked with a passphrase"
    } else {
        "locked with your passphrase"
    };
    println!("# wrote the private key for {name:?} to {} (mode 0600, {locked}); keep it where agents cannot read it", out.display());
    println!("# add this to the [[approver]] list in the config:");
    print!("{}", crate::receipt::config_block(&public));
    Ok(())
}

fn cmd_approvals(config_path: &Path, json: bool, all: bool) -> CmdResult {
    use crate::state::approvals::Status;
    let config = Config::load_existing(config_path)?;
    let (runtime, store) = crate::store::for_command(&config)?;
    let list: Vec<_> = runtime
        .block_on(store.list_approvals(if all { None } else { Some(0) }))
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|a| all || a.status == Status::Pending)
        .collect();
    let port = config.listening().approvals.port();
    if json {
        let rows: Vec<_> = list
            .iter()
            .map(|a| {
                serde_json::json!({
                    "id": a.id, "status": a.status, "agent": a.agent, "environment": a.environment,
                    "action": a.call.action(), "resources": a.call.resources, "params": a.call.params,
                    "rule": a.rule, "irreversible": a.irreversible, "attempts": a.attempts,
                    "created_at": a.created_at, "link": config.approval_link(port, &a.id),
                    "approvals": a.approved_by, "quorum": a.quorum.approvals,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if list.is_empty() {
        println!("no calls are waiting for approval");
    }
    for a in &list {
        let flag = if a.irreversible { "  IRREVERSIBLE" } else { "" };
        let quorum = if a.quorum.approvals > 1 {
            format!("  {}", a.progress())
        } else {
            String::new()
        };
        println!(
            "{}  {:?}  {}  agent={} env={} rule={} attempts={}{flag}{quorum}",
            a.id,
            a.status,
            a.summary(),
            a.agent,
            a.environment,
            a.rule,
            a.attempts
        );
        for (k, v) in &a.call.params {
            println!("    {k} = {v}");
        }
    }
    Ok(())
}

fn cmd_decide(
    config_path: &Path,
    id: &str,
    key_path: &Path,
    approve: bool,
    allow_plaintext: bool,
) -> CmdResult {
    use crate::receipt::{self, Binding, Decision, ReceiptBody, Validity};
    let config = Config::load_existing(config_path)?;
    // What is signed is shown before the passphrase is asked for, so the human decides on
    // the call itself, not on an id an agent may have handed them. The agent wrote these
    // values: control characters are escaped, so none can rewrite the terminal.
    let (runtime, store) = crate::store::for_command(&config)?;
    let store = &*store;
    let pending = runtime
        .block_on(store.get_approval(id))
        .map_err(|e| e.to_string())?;
    let shown = |text: &str| text.escape_debug().to_string();
    eprintln!(
        "{} {}: {} by agent {} in environment {} (rule {}){}",
        if approve { "Approving" } else { "Denying" },
        shown(&pending.id),
        shown(&pending.summary()),
        shown(&pending.agent),
        shown(&pending.environment),
        shown(&pending.rule),
        if pending.irreversible {
            " IRREVERSIBLE"
        } else {
            ""
        }
    );
    eprintln!("  {}", shown(&crate::describe::destroys(&pending.call)));
    for (name, value) in &pending.call.params {
        eprintln!("  {} = {}", shown(name), shown(value));
    }
    let (key, approver) = crate::signing::load_approver_key(&config, key_path, allow_plaintext)?;
    let decision = if approve {
        Decision::Approve
    } else {
        Decision::Deny
    };
    if approve {
        runtime.block_on(crate::approvals::quorum::may_approve(
            store,
            &pending,
            approver.name(),
        ))?;
    }
    let trusted = runtime.block_on(store.trusted_keys())?;
    let body = runtime
        .block_on(crate::approvals::quorum::body_to_sign(
            store,
            &pending,
            decision,
            (approver.name(), approver.key_id()),
            || {
                let binding = Binding::of(&pending.call, &pending.agent, &pending.environment);
                let mut validity = Validity::starting(time::OffsetDateTime::now_utc());
                validity.ttl = config.approval.receipt_ttl;
                validity.uses = config.approval.uses;
                ReceiptBody::new(&binding, &pending.id, decision, &approver, validity)
            },
        ))
        .map_err(|e| e.to_string())?;
    let signed = receipt::sign(body, &key).map_err(|e| e.to_string())?;
    let expires_at = signed.body.expires_at;
    let recorded = runtime
        .block_on(crate::approvals::quorum::record(store, &trusted, signed))
        .map_err(|e| e.to_string())?;
    let (a, receipt_id) = (&recorded.approval, &recorded.receipt_id);
    for record in crate::approvals::quorum::audit_records(&recorded, approver.name(), "cli") {
        if !runtime.block_on(store.audit_append_durable(record.into())) {
            return Err(
                "the decision is recorded, but the audit log could not be written (see above)"
                    .into(),
            );
        }
    }
    if a.status == crate::state::approvals::Status::Pending {
        println!(
            "approved {} by {}: {} — waiting for another approver (receipt {receipt_id})",
            a.id,
            approver.name(),
            a.progress()
        );
        println!("receipt: {}", store.receipt_location(receipt_id));
        let port = config.listening().approvals.port();
        crate::notify::again(&config, a, &config.approval_link(port, &a.id));
        return Ok(());
    }
    let verb = if approve { "approved" } else { "denied" };
    println!(
        "{verb} {}: {} (receipt {receipt_id}, valid until {expires_at})",
        a.id,
        a.summary(),
    );
    println!("receipt: {}", store.receipt_location(receipt_id));
    Ok(())
}

fn cmd_receipt_verify(config_path: &Path, file: &Path) -> CmdResult {
    use crate::receipt::{self, Decision, Receipt};
    let config = Config::load_existing(config_path)?;
    let trusted = crate::store::identities::trusted_keys_now(&config)?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let r = Receipt::from_json(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let v = receipt::verify(&r, &trusted)
        .map_err(|e| format!("{}: does not verify: {e}", file.display()))?;
    let b = v.body();
    // A plan receipt: each entry's quorum under this config, worked out from the entry.
    let (tally, basis) = match crate::plan::quorum::tally_now(&config.policy, &v) {
        Some(t) => (
            t,
            ", as airlock's config requires for every call the plan covers",
        ),
        None => {
            let (required, in_state) = config_quorum(&config, b);
            let basis = if in_state {
                ", as airlock's config requires for this call"
            } else {
                "; the call is not in airlock's state, so against the most any rule matching what the receipt binds requires"
            };
            (v.tally(&required), basis)
        }
    };
    let signers: Vec<String> = v
        .signers()
        .iter()
        .map(|s| format!("{} ({})", s.name, s.key_id.as_str()))
        .collect();
    println!(
        "{}: valid signature by {}\n  decision {}  agent {}  environment {}  {}:{} on {}\n  valid {} .. {}  uses {}",
        file.display(),
        signers.join(", "),
        b.decision,
        b.agent,
        b.environment,
        b.service,
        b.operation,
        b.resources.join(", "),
        b.not_before,
        b.expires_at,
        b.uses
    );
    println!(
        "  quorum {} of {} distinct approvers ({}){basis}",
        tally.have(),
        tally.need,
        v.approvers().join(", "),
    );
    if let Some(grant) = b.plan_grant() {
        crate::plan::cli::print_grant(grant);
    }
    if b.decision == Decision::Deny {
        return Err("the receipt is a denial: it authorizes nothing".into());
    }
    if !tally.complete() {
        return Err(format!(
            "{}: does not verify: needs {} distinct approvers under this config; the receipt has {}",
            file.display(),
            tally.need,
            tally.have(),
        ));
    }
    Ok(())
}

/// The quorum the config requires now for the call a receipt answers, and whether airlock's
/// state still holds that call. Held: the policy's decision on the call. Not held (pruned,
/// another machine, a copied receipt): the receipt binds only its parameters' digest, which
/// the rules cannot be matched against, so the most any rule matching the rest could require
/// ([`crate::policy::Policy::quorum_bound`]), never the receipt's own word.
fn config_quorum(
    config: &Config,
    body: &crate::receipt::ReceiptBody,
) -> (crate::receipt::Quorum, bool) {
    let held = crate::store::for_command(config)
        .ok()
        .and_then(|(runtime, store)| runtime.block_on(store.get_approval(&body.approval_id)).ok())
        .filter(|a| {
            crate::receipt::Binding::of(&a.call, &a.agent, &a.environment) == body.binding()
        });
    match held {
        Some(a) => (
            config
                .policy
                .decide(&a.call, &a.agent, &a.environment)
                .quorum()
                .clone(),
            true,
        ),
        None => (
            config
                .policy
                .quorum_bound(&body.bound_call(), &body.agent, &body.environment),
            false,
        ),
    }
}

fn cmd_explain(config_path: &Path, files: &[PathBuf], account: Option<&str>) -> CmdResult {
    let config = if config_path.exists() {
        Config::load(config_path).map_err(|e| e.to_string())?
    } else {
        Config::parse(config_path, crate::config::EXAMPLE).map_err(|e| e.to_string())?
    };
    let mut failed = false;
    for f in files {
        let v = crate::explain::explain_file(&config, f, account);
        failed |= v.get("error").is_some() && v.get("operation").is_none();
        println!("{v}");
    }
    if failed {
        return Err("some files could not be read as requests".into());
    }
    Ok(())
}

/// Operations listed one by one in the text output up to this many per rule; past it,
/// per-service counts (the JSON lists them all).
const LISTED_OPERATIONS: usize = 60;

fn cmd_policy_builtin(json: bool) -> CmdResult {
    let classes = crate::policy::builtin::resolve();
    if json {
        let text = serde_json::to_string_pretty(&classes).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    let per_service = |services: &std::collections::BTreeMap<String, usize>| {
        services
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for c in &classes {
        println!(
            "builtin:{} ({}): {} operations in {} services",
            c.class.name,
            c.class.effect.as_str(),
            c.operations,
            c.services.len()
        );
        println!("  why: {}", c.class.why);
        println!("  on the approval page: {}", c.class.line);
        println!("  per service: {}", per_service(&c.services));
        for r in &c.rules {
            let mut conditions: Vec<String> =
                r.when.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
            conditions.extend(r.check.clone());
            let when = if conditions.is_empty() {
                String::new()
            } else {
                format!(" when {}", conditions.join(" and "))
            };
            let irreversible = if r.irreversible {
                " [irreversible]"
            } else {
                ""
            };
            println!(
                "  rule {}{when}{irreversible}: {} ({} operations)",
                r.name,
                r.reason,
                r.operations.len()
            );
            if r.operations.len() <= LISTED_OPERATIONS {
                println!("    {}", r.operations.join(" "));
            } else {
                let mut counts = std::collections::BTreeMap::new();
                for op in &r.operations {
                    let service = op.split(':').next().unwrap_or(op).to_string();
                    *counts.entry(service).or_insert(0usize) += 1;
                }
                println!("    {}", per_service(&counts));
            }
        }
        println!();
    }
    Ok(())
}

fn cmd_audit_verify(config_path: &Path, from: Option<&str>) -> CmdResult {
    let config = Config::load_existing(config_path)?;
    if config.database_url.is_some() {
        if from.is_some() {
            return Err(
                "--from names a segment of the file log; the chain in PostgreSQL is verified whole"
                    .into(),
            );
        }
        return crate::store::commands::audit_verify(&config);
    }
    let from = match from {
        None => None,
        Some(name) => Some(crate::audit::segment_number(name).ok_or_else(|| {
            format!("--from {name:?}: not a segment (such as 00000042.jsonl or 42)")
        })?),
    };
    match crate::audit::verify_from(&config.state_dir, from) {
        Ok(v) => {
            let start = match from {
                Some(n) => format!(
                    " from segment {} (record {} on; the chain before it is not checked)",
                    crate::audit::segment_name(n),
                    v.first_seq
                ),
                None if v.first_seq > 0 => format!(
                    " (the kept chain starts at record {}, as its retention record says)",
                    v.first_seq
                ),
                None => String::new(),
            };
            let segments = match v.segments {
                1 => "1 segment".to_string(),
                n => format!("{n} segments"),
            };
            println!(
                "audit log intact: {} records in {segments}{start}",
                v.records
            );
            Ok(())
        }
        Err(e) => Err(format!("audit log broken: {e}")),
    }
}

fn cmd_audit_tail(config_path: &Path, follow: bool, lines: usize) -> CmdResult {
    let config = Config::load_existing(config_path)?;
    let print = |line: &[u8]| match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(v) => println!("{}", crate::audit::render(&v)),
        Err(_) => println!("(unreadable) {}", String::from_utf8_lossy(line)),
    };
    let (last, cursor) =
        crate::audit::last_records(&config.state_dir, lines).map_err(|e| e.to_string())?;
    for l in &last {
        print(l);
    }
    if !follow {
        return Ok(());
    }
    crate::audit::follow(&config.state_dir, cursor, |l| {
        print(l);
        true
    })
    .map_err(|e| e.to_string())
}
