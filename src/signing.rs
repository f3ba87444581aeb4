//! The approver's own key, for the commands that sign with it (`approve`, `deny`,
//! `plan approve`): unlocked with a passphrase from the terminal only, and accepted only when
//! airlock's config trusts it; and the keys every receipt is checked against.

/// What `--insecure-plaintext-key` prints.
pub const PLAINTEXT_WARNING: &str =
    "airlock: WARNING: this approver key is not locked with a passphrase: \
     any process that can read the file can approve; make a locked one with `airlock keygen`";

/// An approver's key, unlocked with its passphrase from the terminal, and the config's
/// `[[approver]]` it belongs to: what `approve`, `deny` and `plan approve` sign with.
pub fn load_approver_key(
    config: &crate::config::Config,
    key_path: &std::path::Path,
    allow_plaintext: bool,
) -> Result<(crate::receipt::ApproverKey, crate::receipt::ApproverPublic), String> {
    use crate::receipt::{self, ApproverKey, Unlock};
    let mut ask = |name: &str, key_id: &receipt::KeyId| {
        crate::tty::read_passphrase(&format!(
            "Passphrase for {name:?}'s key {key_id} ({}): ",
            key_path.display()
        ))
    };
    let loaded = ApproverKey::load_approver(
        key_path,
        Unlock {
            allow_plaintext,
            passphrase: &mut ask,
        },
    )
    .map_err(|e| e.to_string())?;
    if loaded.plaintext {
        eprintln!("{PLAINTEXT_WARNING}");
    }
    let key = loaded.key;
    // Only a key the config trusts may sign: say so now rather than at the proxy.
    let approver = config
        .approvers
        .iter()
        .find(|p| p.key_id() == &key.key_id())
        .cloned()
        .ok_or_else(|| {
            format!(
                "the key in {} is not an [[approver]] in {}",
                key_path.display(),
                config.path.display()
            )
        })?;
    Ok((key, approver))
}

/// The keys receipts are checked against: the config's approvers, airlock's own key, and the
/// enrolled passkeys, all from `[state] dir`. Nothing from a request or a receipt.
pub fn trusted_keys(config: &crate::config::Config) -> Result<crate::receipt::TrustedKeys, String> {
    trusted_keys_in(&config.approvers, &config.state_dir)
}

/// `approvers`, and airlock's own key and the passkeys in `state_dir`.
pub fn trusted_keys_in(
    approvers: &[crate::receipt::ApproverPublic],
    state_dir: &std::path::Path,
) -> Result<crate::receipt::TrustedKeys, String> {
    let airlock = crate::state::trust::airlock_public(state_dir)?;
    let passkeys = crate::state::trust::PasskeyStore::new(state_dir).load()?;
    assemble_trusted_keys(approvers, airlock.as_slice(), &passkeys)
}

/// The trusted set from its parts, wherever they are kept (`[state] dir`, or PostgreSQL,
/// where each replica's own key is one of `airlock_keys`).
pub fn assemble_trusted_keys(
    approvers: &[crate::receipt::ApproverPublic],
    airlock_keys: &[crate::receipt::ApproverPublic],
    passkeys: &[crate::state::trust::PasskeyRecord],
) -> Result<crate::receipt::TrustedKeys, String> {
    let mut keys = crate::receipt::TrustedKeys::new();
    for approver in approvers {
        keys.add_approver(approver).map_err(|e| e.to_string())?;
    }
    for public in airlock_keys {
        keys.add_airlock(public).map_err(|e| e.to_string())?;
    }
    for record in passkeys {
        keys.add_passkey(&record.public()?)
            .map_err(|e| e.to_string())?;
    }
    Ok(keys)
}
