//! `airlock init`: create what is missing (config, local CA, server certificate, state
//! dir) and never overwrite anything. Private keys are written with mode 0600.

use crate::config::{Config, EXAMPLE};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What `init` made, to tell the user.
#[derive(Debug, Default)]
pub struct Created {
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Other(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |e| InitError::Io(path.display().to_string(), e)
}

/// Writes a new file with `mode`; fails if it exists (nothing is ever overwritten).
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), InitError> {
    if let Some(parent) = path.parent() {
        // Explicit modes: a umask of 002 must not leave a directory others can write into.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err(parent))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

/// Creates the config (from the example) if missing, then whatever the config names that
/// is missing. Returns the loaded config and what was created.
pub fn init(config_path: &Path) -> Result<(Config, Created), InitError> {
    let mut created = Created::default();
    if !config_path.exists() {
        write_new(config_path, EXAMPLE.as_bytes(), 0o644)?;
        created.paths.push(config_path.to_path_buf());
    }
    let config = Config::load(config_path)?;

    if !config.state_dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(io_err(&config.state_dir))?;
        created.paths.push(config.state_dir.clone());
    }

    let (ca_cert, ca_key) = (config.ca_cert(), config.ca_key());
    match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {}
        (false, false) => {
            let (cert_pem, key_pem) = new_ca()?;
            write_new(&ca_key, key_pem.as_bytes(), 0o600)?;
            write_new(&ca_cert, cert_pem.as_bytes(), 0o644)?;
            created.paths.push(ca_cert.clone());
            created.paths.push(ca_key.clone());
        }
        _ => {
            return Err(InitError::Other(format!(
                "only one of {} and {} exists; remove the other to make a new CA",
                ca_cert.display(),
                ca_key.display()
            )))
        }
    }

    let (server_cert, server_key) = (config.server_cert(), config.server_key());
    match (server_cert.exists(), server_key.exists()) {
        (true, true) => {}
        (false, false) => {
            let ca_cert_pem = fs::read_to_string(&ca_cert).map_err(io_err(&ca_cert))?;
            let ca_key_pem = fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?;
            let (cert_pem, key_pem) = new_server_cert(&ca_cert_pem, &ca_key_pem)?;
            write_new(&server_key, key_pem.as_bytes(), 0o600)?;
            write_new(&server_cert, cert_pem.as_bytes(), 0o644)?;
            created.paths.push(server_cert.clone());
            created.paths.push(server_key.clone());
        }
        _ => {
            return Err(InitError::Other(format!(
                "only one of {} and {} exists; remove the other to make a new certificate",
                server_cert.display(),
                server_key.display()
            )))
        }
    }
    Ok((config, created))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// A new local CA: (certificate PEM, private key PEM).
fn new_ca() -> Result<(String, String), InitError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "airlock local CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "airlock");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // Only loopback and AWS's names: a leaked ca.key signs for nothing else that clients accept.
    params.name_constraints = Some(crate::connect::ca::name_constraints());
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 3650);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A server certificate for localhost, 127.0.0.1 and ::1, issued by the CA; the PEM holds
/// the leaf then the CA so clients get the whole chain.
fn new_server_cert(ca_cert_pem: &str, ca_key_pem: &str) -> Result<(String, String), InitError> {
    let (ca, ca_key) = crate::connect::ca::issuer(ca_cert_pem, ca_key_pem)?;
    let now = time::OffsetDateTime::now_utc();
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let (cert, key) = crate::connect::ca::server_leaf(
        names,
        &ca,
        &ca_key,
        now - time::Duration::days(1),
        now + time::Duration::days(825),
    )?;
    Ok((
        format!("{}{}", cert.pem(), ca_cert_pem),
        key.serialize_pem(),
    ))
}

/// `airlock init --rotate-ca`: a new (name-constrained) CA and server certificate in place
/// of the old ones. The old CA certificate is kept beside it (`ca.pem.replaced-UNIXTIME`)
/// for reference; its key and the old server key are deleted, since a key that is kept is
/// a key that can leak. Returns what was replaced and what was made.
pub fn rotate_ca(config_path: &Path) -> Result<(Config, Vec<PathBuf>, Created), InitError> {
    let config = Config::load(config_path)?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut replaced = Vec::new();
    let ca_cert = config.ca_cert();
    if ca_cert.exists() {
        let kept = ca_cert.with_file_name(format!("ca.pem.replaced-{stamp}"));
        fs::rename(&ca_cert, &kept).map_err(io_err(&ca_cert))?;
        replaced.push(kept);
    }
    for path in [config.ca_key(), config.server_cert(), config.server_key()] {
        match fs::remove_file(&path) {
            Ok(()) => replaced.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    let (config, created) = init(config_path)?;
    Ok((config, replaced, created))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_everything_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config/airlock.toml");
        let (config, created) = init(&cfg).unwrap();
        assert_eq!(created.paths.len(), 6, "{:?}", created.paths);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&config.ca_key()), 0o600);
        assert_eq!(mode(&config.server_key()), 0o600);
        assert_eq!(mode(&config.state_dir), 0o700);
        let before = fs::read(config.server_cert()).unwrap();
        let (_, again) = init(&cfg).unwrap();
        assert!(again.paths.is_empty());
        assert_eq!(before, fs::read(config.server_cert()).unwrap());
        // A missing server certificate is re-issued from the existing CA.
        fs::remove_file(config.server_cert()).unwrap();
        fs::remove_file(config.server_key()).unwrap();
        let (_, third) = init(&cfg).unwrap();
        assert_eq!(third.paths.len(), 2);
    }

    #[test]
    fn a_new_ca_is_name_constrained_and_rotation_replaces_it() {
        use crate::connect::ca::is_name_constrained;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config/airlock.toml");
        let (config, _) = init(&cfg).unwrap();
        let old = fs::read_to_string(config.ca_cert()).unwrap();
        assert!(is_name_constrained(&old).unwrap());
        let old_server = fs::read(config.server_cert()).unwrap();
        let (config, replaced, created) = rotate_ca(&cfg).unwrap();
        assert_eq!(replaced.len(), 4, "{replaced:?}");
        assert_eq!(created.paths.len(), 4, "{:?}", created.paths);
        let new = fs::read_to_string(config.ca_cert()).unwrap();
        assert_ne!(old, new);
        assert!(is_name_constrained(&new).unwrap());
        assert_eq!(fs::read_to_string(&replaced[0]).unwrap(), old);
        assert_ne!(old_server, fs::read(config.server_cert()).unwrap());
    }
}
