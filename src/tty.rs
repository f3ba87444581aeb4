//! Asking a person for a passphrase, on the controlling terminal only.
//!
//! An approver key's passphrase is what an agent with a shell cannot have, so it is read
//! from `/dev/tty` and from nowhere else: never from stdin (a pipe an agent can feed), an
//! argument (visible in `ps`) or an environment variable (inherited by children, readable
//! in `/proc`). A process without a controlling terminal — a daemon, an agent's tool call,
//! anything started with `setsid` — cannot open `/dev/tty`, and is told so.
//!
//! Echo is switched off while the passphrase is typed (termios, via `rustix`) and restored
//! afterwards, also when reading fails. What is read is wiped from memory when dropped.

use std::fs::File;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// The terminal every prompt goes to.
const TTY: &str = "/dev/tty";

/// Longest passphrase read; a longer line is refused rather than cut.
const MAX_PASSPHRASE_BYTES: usize = 1024;

/// What a missing terminal is told.
pub const NO_TERMINAL: &str = "no terminal: the key's passphrase is read only from the controlling terminal (/dev/tty), \
                               never from stdin, an argument or the environment; run this command yourself in a terminal";

/// Restores the terminal's settings when dropped.
struct EchoOff<'a> {
    tty: &'a File,
    saved: rustix::termios::Termios,
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            self.tty,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn open_tty() -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(TTY)
        .map_err(|_| NO_TERMINAL.to_owned())
}

/// Shows `prompt` on the terminal and reads one line with echo off.
pub fn read_passphrase(prompt: &str) -> Result<Zeroizing<String>, String> {
    let tty = open_tty()?;
    read_on(&tty, prompt)
}

/// Asks for a new passphrase twice; both must match and be long enough.
pub fn read_new_passphrase(what: &str, min_chars: usize) -> Result<Zeroizing<String>, String> {
    let tty = open_tty()?;
    let first = read_on(&tty, &format!("New passphrase for {what}: "))?;
    if first.chars().count() < min_chars {
        return Err(format!(
            "the passphrase must be at least {min_chars} characters"
        ));
    }
    let second = read_on(&tty, "The same passphrase again: ")?;
    if first.as_str() != second.as_str() {
        return Err("the two passphrases differ; nothing was written".into());
    }
    Ok(first)
}

fn read_on(tty: &File, prompt: &str) -> Result<Zeroizing<String>, String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let saved = tcgetattr(tty).map_err(|_| NO_TERMINAL.to_owned())?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(tty, OptionalActions::Now, &quiet)
        .map_err(|e| format!("{TTY}: cannot switch echo off: {e}"))?;
    let _restore = EchoOff { tty, saved };
    let mut out = tty;
    out.write_all(prompt.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("{TTY}: {e}"))?;

    let mut line = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE_BYTES + 1));
    let mut reader = tty;
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => return Err("no passphrase was typed (end of input)".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if line.len() >= MAX_PASSPHRASE_BYTES {
                    return Err("the passphrase is too long".into());
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{TTY}: {e}")),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = std::str::from_utf8(&line).map_err(|_| "the passphrase is not UTF-8".to_owned())?;
    Ok(Zeroizing::new(text.to_owned()))
}
