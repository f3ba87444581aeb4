//! `airlock exec AGENT -- CMD ARGS…`: run a command with that agent's environment.

use std::path::Path;

pub fn run(_config_path: &Path, _agent: &str, _command: &[String]) -> Result<i32, String> {
    Err("airlock exec is not available in this build".into())
}
