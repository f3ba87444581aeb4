//! `airlock plan submit|approve|deny|show|list`: the commands (the module's only I/O besides
//! reading a binary plan's bytes). With `[state] database_url` they read and decide the plans
//! in PostgreSQL and append to its audit chain, as every replica's page does; otherwise the
//! files of `[state] dir`.

use super::mapping::{self, Coverage, Defaults};
use super::{Plan, MAX_PLAN_BYTES};
use crate::config::Config;
use crate::plan::shared::Plans;
use crate::plan::store::{PlanRecord, PlanStatus, PlanStore};
use crate::receipt::Decision;
use crate::store::postgres::PgStore;
use clap::Subcommand;
use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Submit a plan for approval: the output of `terraform show -json plan.bin`, or the
    /// binary plan itself (then `terraform show -json` runs in its directory). Submitting
    /// grants nothing; it prints the approval link and what the plan destroys.
    Submit {
        file: std::path::PathBuf,
        /// The agent whose calls the plan's receipt will cover (default: the only agent).
        #[arg(long)]
        agent: Option<String>,
    },
    /// Approve a submitted plan: signs one plan receipt for every call it covers (or adds
    /// this approver to it, when the plan needs several). The key's passphrase is asked for
    /// on the terminal (/dev/tty) only.
    Approve {
        id: String,
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        insecure_plaintext_key: bool,
    },
    /// Deny a submitted plan: one denial denies it, whatever approvals came before.
    Deny {
        id: String,
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        insecure_plaintext_key: bool,
    },
    /// Print a submitted plan: what it destroys, what is covered, its status.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List the submitted plans, newest first: id, status, agent, environment.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a plan's stored receipt (JSON), for `airlock receipt verify` (with a database
    /// the receipt is not a file).
    Receipt { id: String },
}

pub fn run(config_path: &Path, command: PlanCommand) -> Result<(), String> {
    match command {
        PlanCommand::Submit { file, agent } => submit(config_path, &file, agent.as_deref()),
        PlanCommand::Approve {
            id,
            key,
            insecure_plaintext_key,
        } => decide(
            config_path,
            &id,
            (&key, insecure_plaintext_key),
            Decision::Approve,
        ),
        PlanCommand::Deny {
            id,
            key,
            insecure_plaintext_key,
        } => decide(
            config_path,
            &id,
            (&key, insecure_plaintext_key),
            Decision::Deny,
        ),
        PlanCommand::Show { id, json } => show(config_path, &id, json),
        PlanCommand::List { json } => list(config_path, json),
        PlanCommand::Receipt { id } => print_receipt(config_path, &id),
    }
}

/// Where the commands find the plans, and the audit chain they append to: PostgreSQL with
/// `[state] database_url` (its schema must be current: `airlock db migrate`), else the files
/// of `[state] dir`. Each step runs on a runtime of the command's own.
struct Opened {
    runtime: tokio::runtime::Runtime,
    plans: std::sync::Arc<dyn Plans>,
    /// With a database: the store whose audit chain the records go to.
    database: Option<std::sync::Arc<PgStore>>,
}

impl Opened {
    fn open(config: &Config) -> Result<Opened, String> {
        let runtime = crate::store::commands::runtime()?;
        if config.database_url.is_none() {
            let files = PlanStore::open(&config.state_dir).map_err(|e| e.to_string())?;
            return Ok(Opened {
                runtime,
                plans: std::sync::Arc::new(files),
                database: None,
            });
        }
        let pool = crate::store::commands::database_pool(config)?;
        runtime.block_on(crate::store::postgres::check_schema(&pool))?;
        let database = std::sync::Arc::new(PgStore::new(pool));
        Ok(Opened {
            runtime,
            plans: std::sync::Arc::clone(&database) as std::sync::Arc<dyn Plans>,
            database: Some(database),
        })
    }

    fn run<T>(&self, step: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(step)
    }

    fn get(&self, id: &str) -> Result<PlanRecord, String> {
        self.run(self.plans.get(id)).map_err(|e| e.to_string())
    }

    /// Appends `record` to the audit chain, durably.
    fn audit(
        &self,
        config: &Config,
        record: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        match &self.database {
            None => crate::audit::append_now(&config.state_dir, record).map_err(|e| e.to_string()),
            Some(db) => {
                use crate::store::Store as _;
                if self.run(db.audit_append_durable(record.into())) {
                    Ok(())
                } else {
                    Err("the audit chain in PostgreSQL cannot be written".into())
                }
            }
        }
    }
}

/// How long `terraform show -json` may take.
const SHOW_TIMEOUT: Duration = Duration::from_secs(120);

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(format!(
            "{}: larger than {MAX_PLAN_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// `terraform show -json FILE`, run in the plan's directory (where `terraform init` ran).
/// Terraform starts the provider plugins found there, which whoever wrote that directory
/// chose, so it runs without what reaches airlock's database
/// ([`crate::config::reaches_the_database`]) nor any `AWS_*` variable (it reads the plan;
/// it calls no AWS API).
fn terraform_show(path: &Path) -> Result<Vec<u8>, String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or("the plan file has no name")?;
    let mut child = std::process::Command::new("terraform")
        .args(["show", "-json", "-no-color"])
        .arg(name)
        .current_dir(dir)
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| {
            let k = k.to_string_lossy();
            !k.starts_with("AWS_") && !crate::config::reaches_the_database(&k)
        }))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!("a binary plan needs `terraform` on the PATH to read it ({e}); or submit `terraform show -json plan.bin` output")
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or("terraform's output is not readable")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout
            .take(MAX_PLAN_BYTES + 1)
            .read_to_end(&mut out)
            .map(|_| out)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > SHOW_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`terraform show -json` took longer than {SHOW_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(format!("`terraform show -json` failed ({status})"));
    }
    let out = reader
        .join()
        .map_err(|_| "reading terraform's output failed".to_string())?
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > MAX_PLAN_BYTES {
        return Err(format!(
            "`terraform show -json` wrote more than {MAX_PLAN_BYTES} bytes"
        ));
    }
    Ok(out)
}

/// The plan in `file`, JSON or binary.
fn read_plan(file: &Path) -> Result<Plan, String> {
    let bytes = read_limited(file)?;
    if super::is_binary_plan(&bytes) {
        let json = terraform_show(file)?;
        Plan::from_json(&json)
            .and_then(|p| p.with_state_of(&bytes))
            .map_err(|e| format!("{}: {e}", file.display()))
    } else {
        Plan::from_json(&bytes).map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// The agent named, or the only one.
fn pick_agent(config: &Config, wanted: Option<&str>) -> Result<String, String> {
    let agents = crate::store::identities::run_blocking(config, async |ids| ids.agents().await)?;
    if let Some(name) = wanted {
        return agents
            .active_keys_of(name)
            .map(|_| name.to_owned())
            .map_err(|e| e.to_string());
    }
    let active: Vec<String> = agents
        .agents
        .into_iter()
        .filter(|a| a.revoked_at.is_none())
        .map(|a| a.name)
        .collect();
    match active.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("there is no agent; add one with `airlock agent add NAME`".into()),
        _ => Err(
            "several agents exist: name the one that will apply the plan with --agent NAME".into(),
        ),
    }
}

/// The plan page's link, for an approval page on `approvals_port`.
pub fn page_link(config: &Config, approvals_port: u16, id: &str) -> String {
    format!("{}/plans/{id}", config.approval_page(approvals_port).base())
}

fn plan_link(config: &Config, id: &str) -> String {
    page_link(config, config.listening().approvals.port(), id)
}

fn submit(config_path: &Path, file: &Path, agent: Option<&str>) -> Result<(), String> {
    let config = Config::load_existing(config_path)?;
    let agent = pick_agent(&config, agent)?;
    let plan = read_plan(file)?;
    let account = mapping::plan_account(&plan.resource_changes);
    let destroyed = mapping::destroyed(
        &plan.resource_changes,
        &Defaults {
            region: plan.default_region.as_deref(),
            account: account.as_deref(),
        },
    );
    if destroyed.is_empty() {
        return Err(format!(
            "{}: the plan destroys nothing; there is nothing to approve",
            file.display()
        ));
    }
    let entries = super::entries(&destroyed, |a, r| config.environment_of(a, r));
    let quorums = super::quorum::entry_quorums(&config.policy, &agent, &entries);
    let mut environments: Vec<String> = entries.iter().map(|e| e.environment.clone()).collect();
    environments.sort();
    environments.dedup();
    let opened = Opened::open(&config)?;
    let submitted = opened.plans.submit(PlanRecord {
        agent,
        digest: plan.digest(),
        digest_scope: plan.digest_scope(),
        plan_created_at: plan.timestamp.clone(),
        terraform_version: plan.terraform_version.clone(),
        environments,
        destroyed,
        entries,
        quorums,
        // Pending, undecided; the store gives the id and the submission time.
        ..PlanRecord::default()
    });
    let record = opened.run(submitted).map_err(|e| e.to_string())?;
    opened
        .audit(&config, super::records::submitted(&record))
        .map_err(|e| format!("the plan is stored, but the audit log could not be written: {e}"))?;
    print_plan(&record);
    println!("approve at {}", plan_link(&config, &record.id));
    println!("  (or: airlock plan approve {} --key FILE)", record.id);
    Ok(())
}

/// What a plan destroys, for a terminal. Values come from the plan: escaped, so none can
/// rewrite the terminal.
fn print_plan(p: &PlanRecord) {
    let shown = |text: &str| text.escape_debug().to_string();
    println!(
        "plan {} by agent {} in environment {} — {} ({} resources destroyed, {} calls covered)",
        p.id,
        shown(&p.agent),
        shown(&p.environment_label()),
        p.status_at(time::OffsetDateTime::now_utc()).as_str(),
        p.destroyed.len(),
        p.entries.len()
    );
    println!(
        "digest {} ({})  created {}",
        p.digest,
        p.digest_scope.as_str(),
        shown(p.plan_created_at.as_deref().unwrap_or("unknown"))
    );
    if let Some(warning) = p.digest_scope.warning() {
        println!("WARNING: {warning}");
    }
    let irreversible: Vec<String> = p
        .destroyed
        .iter()
        .flat_map(|d| {
            d.irreversible
                .iter()
                .map(move |w| format!("{}: {w}", d.address))
        })
        .collect();
    for line in p.quorum_lines() {
        println!("{}", shown(&line));
    }
    if p.status == PlanStatus::Pending && !p.approved_by.is_empty() {
        println!(
            "{} — waiting for another approver (approved by {})",
            p.progress(),
            shown(&p.approved_by.join(", "))
        );
    }
    if !irreversible.is_empty() {
        println!("IRREVERSIBLE:");
        for line in irreversible {
            println!("  {}", shown(&line));
        }
    }
    for d in &p.destroyed {
        let what = if d.replaced { "replaced" } else { "destroyed" };
        println!(
            "{what} {} ({}) {}",
            shown(&d.address),
            shown(&d.resource_type),
            shown(d.arn.as_deref().or(d.id.as_deref()).unwrap_or(""))
        );
        match &d.coverage {
            Coverage::Covered { calls } => {
                for c in calls {
                    let params: Vec<String> = c
                        .params
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .chain(c.free.iter().map(|f| format!("{f}=(any)")))
                        .collect();
                    println!(
                        "    {}:{} {}",
                        c.service,
                        c.operation,
                        shown(&params.join(" "))
                    );
                }
            }
            Coverage::StateOnly { why } => println!("    no AWS call: {}", shown(why)),
            Coverage::NotCovered { why } => println!("    NOT COVERED: {}", shown(why)),
        }
    }
}

/// A verified plan receipt's grant, for `airlock receipt verify`.
pub fn print_grant(grant: &crate::receipt::PlanGrant) {
    let shown = |text: &str| text.escape_debug().to_string();
    println!(
        "  plan {} digest {} ({}) created {}: {} calls covered",
        grant.plan_id,
        grant.digest,
        grant.digest_scope.as_str(),
        shown(grant.created_at.as_deref().unwrap_or("unknown")),
        grant.entries.len()
    );
    for e in &grant.entries {
        let uses = e.uses.map_or("while valid".to_owned(), |n| {
            format!("{n} use{}", if n == 1 { "" } else { "s" })
        });
        let free = if e.free.is_empty() {
            String::new()
        } else {
            format!(" (any {})", e.free.join(", "))
        };
        println!(
            "    {} {} in {} {}: {} [{uses}]{free}",
            shown(&e.address),
            e.action(),
            shown(&e.environment),
            shown(&e.region),
            shown(&e.resources.join(", "))
        );
    }
}

fn show(config_path: &Path, id: &str, json: bool) -> Result<(), String> {
    let config = Config::load_existing(config_path)?;
    let opened = Opened::open(&config)?;
    let record = opened.get(id)?;
    if json {
        let text = serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print_plan(&record);
        if let Some(r) = &record.receipt_id {
            println!("receipt: {}", opened.plans.receipt_location(r));
        }
    }
    Ok(())
}

fn print_receipt(config_path: &Path, id: &str) -> Result<(), String> {
    let config = Config::load_existing(config_path)?;
    let opened = Opened::open(&config)?;
    let record = opened.get(id)?;
    let receipt_id = record
        .receipt_id
        .ok_or_else(|| format!("plan {id} has no receipt yet"))?;
    let bytes = opened
        .run(opened.plans.read_receipt(&receipt_id))
        .map_err(|e| e.to_string())?;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| e.to_string())
}

fn list(config_path: &Path, json: bool) -> Result<(), String> {
    let config = Config::load_existing(config_path)?;
    let opened = Opened::open(&config)?;
    let plans = opened.run(opened.plans.list()).map_err(|e| e.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(&plans).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    if plans.is_empty() {
        println!("no plans submitted");
    }
    let now = time::OffsetDateTime::now_utc();
    for p in &plans {
        let status = p.status_at(now);
        let progress = if status == PlanStatus::Pending && !p.approved_by.is_empty() {
            format!(" ({})", p.progress())
        } else {
            String::new()
        };
        println!(
            "{} {}{progress} agent {} environment {} submitted {} ({} calls covered)",
            p.id,
            status.as_str(),
            p.agent.escape_debug(),
            p.environment_label().escape_debug(),
            p.submitted_at,
            p.entries.len()
        );
    }
    Ok(())
}

/// `plan approve` and `plan deny`: one approver's decision, joined to the plan's quorum
/// under way (`plan::quorum`).
fn decide(
    config_path: &Path,
    id: &str,
    (key_path, allow_plaintext): (&Path, bool),
    decision: Decision,
) -> Result<(), String> {
    use crate::receipt;
    let config = Config::load_existing(config_path)?;
    let opened = Opened::open(&config)?;
    let plans = &*opened.plans;
    let record = opened.get(id)?;
    if record.status != PlanStatus::Pending {
        return Err(format!(
            "plan {id} is {}, not pending",
            record.status.as_str()
        ));
    }
    // What is signed is shown before the passphrase is asked for.
    print_plan(&record);
    let (key, approver) = crate::signing::load_approver_key(&config, key_path, allow_plaintext)?;
    if decision == Decision::Approve {
        opened.run(super::quorum::may_approve(plans, &record, approver.name()))?;
    }
    let trusted = crate::store::identities::trusted_keys_now(&config)?;
    let body = opened.run(super::quorum::body_to_sign(
        plans,
        &record,
        decision,
        &approver,
        config.approval.receipt_ttl,
    ))?;
    let signed = receipt::sign(body, &key).map_err(|e| e.to_string())?;
    let expires_at = signed.body.expires_at;
    let recorded = opened
        .run(super::quorum::record(plans, &trusted, signed))
        .map_err(|e| e.to_string())?;
    let (p, receipt_id) = (&recorded.plan, &recorded.receipt_id);
    for r in super::quorum::audit_records(&recorded, approver.name(), "cli") {
        opened.audit(&config, r).map_err(|e| {
            format!("the decision is recorded, but the audit log could not be written: {e}")
        })?;
    }
    match p.status {
        PlanStatus::Pending => {
            println!(
                "approved plan {id} by {}: {} — waiting for another approver (receipt {receipt_id})",
                approver.name(),
                p.progress()
            );
            // Outside the command's runtime: a notification it spawned would end with it.
            super::quorum::notify_again(&config, p, &plan_link(&config, id));
        }
        PlanStatus::Denied => println!("denied plan {id} (receipt {receipt_id})"),
        _ => println!(
            "approved plan {id}: {} calls covered for agent {} by {} (receipt {receipt_id}, valid until {expires_at})",
            p.entries.len(),
            p.agent,
            p.approved_by.join(", "),
        ),
    }
    println!("receipt: {}", plans.receipt_location(receipt_id));
    Ok(())
}
