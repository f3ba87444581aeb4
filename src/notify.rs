//! Telling the human that a call is waiting: a line on airlock's terminal (always), an
//! optional webhook (`[notify] webhook_url`, Slack-compatible JSON, retried with backoff,
//! never blocking the proxy), and a desktop notification where `notify-send` exists.

use crate::config::Config;
use crate::state::approvals::Approval;

/// Called once when a call first blocks. Must return at once (work happens in the background).
pub fn blocked(_config: &Config, _approval: &Approval, _link: &str) {}
