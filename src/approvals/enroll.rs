//! `airlock approver enroll NAME`: a one-time link that registers a passkey.

use std::path::Path;

pub fn cmd_enroll(_config_path: &Path, _name: &str) -> Result<(), String> {
    Err("passkey enrollment is not available in this build".into())
}
