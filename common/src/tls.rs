//! The cluster's own certificate authority and mutual TLS on every connection.
//!
//! Each party holds one *bundle* file: its certificate, the cluster CA's certificate and its
//! private key, in PEM. A certificate names its holder (common name) and its role
//! (organizational unit `herzog-role:<role>`); herzog checks the role of the peer on every
//! connection and the name on every worker call. herzog's own certificate carries the DNS
//! name `herzog`, which clients verify whatever address they dialed, so addresses can change
//! without reissuing certificates. One crypto provider (ring) everywhere.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name clients verify herzog's certificate against.
pub const SERVER_NAME: &str = "herzog";
const ROLE_PREFIX: &str = "herzog-role:";

/// What a certificate allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A user: submit, remove, schedule, read.
    Admin,
    /// A kinski: register, heartbeat, report its own attempts, serve starts.
    Worker,
    /// herzog itself.
    Coordinator,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
            Role::Coordinator => "coordinator",
        })
    }
}

impl Role {
    /// The role with its article, for sentences: "an admin", "a worker", "a coordinator".
    pub fn with_article(self) -> &'static str {
        match self {
            Role::Admin => "an admin",
            Role::Worker => "a worker",
            Role::Coordinator => "a coordinator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Role, TlsError> {
        match s {
            "admin" => Ok(Role::Admin),
            "worker" => Ok(Role::Worker),
            "coordinator" => Ok(Role::Coordinator),
            other => Err(TlsError::BadRole {
                role: other.to_string(),
            }),
        }
    }
}

/// Why certificates could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to read the certificate bundle {path}: {source}; give the right path, or make one with `herzog certs`"
    )]
    ReadBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a herzog certificate bundle: {reason}; make one with `herzog certs issue`")]
    BadBundle { path: PathBuf, reason: String },
    #[error("unknown role '{role}': use admin or worker")]
    BadRole { role: String },
    #[error("failed to make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("failed to build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("the peer's certificate names no herzog role: it was not issued by `herzog certs`")]
    NoRole,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A party's certificate, key and the CA it trusts, with the name and role it was issued.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    /// The certificate's expiry, as Unix seconds.
    pub not_after: i64,
    cert: CertificateDer<'static>,
    ca: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            name: self.name.clone(),
            role: self.role,
            not_after: self.not_after,
            cert: self.cert.clone(),
            ca: self.ca.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// The holder name and role written in a certificate.
pub fn name_and_role(cert: &CertificateDer<'_>) -> Result<(String, Role, i64), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| TlsError::NoRole)?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let role = subject
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .find_map(|ou| ou.strip_prefix(ROLE_PREFIX))
        .ok_or(TlsError::NoRole)?
        .parse()?;
    Ok((name, role, parsed.validity().not_after.timestamp()))
}

impl Identity {
    /// Parses a bundle: the holder's certificate first, the CA's last, and the private key.
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<Identity, TlsError> {
        let bad = |reason: &str| TlsError::BadBundle {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&format!("unreadable certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| bad("no private key"))?;
        let (cert, ca) = match certs.as_slice() {
            [cert, .., ca] => (cert.clone(), ca.clone()),
            _ => return Err(bad("it needs the holder's certificate and the CA's certificate")),
        };
        let (name, role, not_after) = name_and_role(&cert).map_err(|e| bad(&e.to_string()))?;
        Ok(Identity {
            name,
            role,
            not_after,
            cert,
            ca,
            key,
        })
    }

    /// Reads a bundle file.
    pub fn load(path: &Path) -> Result<Identity, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::ReadBundle {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&pem, path)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    /// The server side: herzog requires a client certificate from the cluster's CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone(), self.ca.clone()], self.key.clone_key())?;
        Ok(Arc::new(config))
    }

    /// The client side: trusts only the cluster's CA and presents this identity.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.cert.clone(), self.ca.clone()], self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

/// The server name every client verifies.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// The cluster's certificate authority.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority")
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, so a clock a little behind does not reject a fresh certificate.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

impl Authority {
    /// A new CA, valid for `days`.
    pub fn generate(days: u32) -> Result<Authority, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "herzog cluster CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and key files.
    pub fn load(cert: &Path, key: &Path) -> Result<Authority, TlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TlsError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key = KeyPair::from_pem(&read(key)?)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Authority { cert_pem, issuer })
    }

    /// Issues a certificate for `name` with `role`, valid for `days` (a negative number makes
    /// an already expired one, for tests), and returns its bundle.
    pub fn issue(&self, name: &str, role: Role, days: i64) -> Result<String, TlsError> {
        let sans = if role == Role::Coordinator {
            vec![SERVER_NAME.to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, format!("{ROLE_PREFIX}{role}"));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Coordinator => vec![ExtendedKeyUsagePurpose::ServerAuth],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let now = time::OffsetDateTime::now_utc();
        if days < 0 {
            params.not_before = now + time::Duration::days(days - 1);
            params.not_after = now + time::Duration::days(days);
        } else {
            validity(&mut params, days as u32);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(format!("{}{}{}", cert.pem(), self.cert_pem, key.serialize_pem()))
    }
}

/// The files `herzog certs init` writes: the CA's certificate and key, herzog's bundle and the
/// first admin's. None of them is ever written again.
pub const INIT_FILES: [&str; 4] = ["ca.pem", "ca.key", "herzog.pem", "admin.pem"];
/// Private keys and bundles: the owner alone reads them.
const PRIVATE: u32 = 0o600;
/// The CA's certificate is public: every party holds a copy in its bundle.
const PUBLIC: u32 = 0o644;

/// The directory `herzog certs` keeps the cluster's CA and bundles in. Files are made with
/// exactly their mode (whatever the umask), never over an existing file unless asked, never
/// through a symbolic link, and the directory itself must be writable by its owner alone, or
/// another user could swap a file in it between two calls.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// Why `herzog certs` refused to write.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("failed to create the PKI directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the PKI directory {dir}: {source}; make one with `herzog certs init --dir DIR`")]
    OpenDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is not a directory: give the PKI directory `herzog certs init` made")]
    NotADirectory { dir: PathBuf },
    #[error(
        "the PKI directory {dir} is writable by other users (mode {mode:o}), who could swap its files: `chmod 700 {dir}` first"
    )]
    Shared { dir: PathBuf, mode: u32 },
    #[error(
        "the PKI directory {dir} belongs to uid {owner}, not to you: its owner could swap its files; run as its owner or use your own directory"
    )]
    NotMine { dir: PathBuf, owner: u32 },
    #[error(
        "{dir} already holds a CA (or part of one: {file}): issue certificates from it with `herzog certs issue`, or choose another --dir"
    )]
    AlreadyInitialised { dir: PathBuf, file: &'static str },
    #[error(
        "'{name}' is reserved: {file} is written by `herzog certs init` (the CA and herzog's own and the first admin's bundles) and never replaced; choose another name"
    )]
    Reserved { name: String, file: &'static str },
    #[error(
        "{path} already exists: give --force to replace that bundle (its holder's old one stops being yours to hand out)"
    )]
    Exists { path: PathBuf },
    #[error("{path} is a symbolic link: herzog certs never writes through one; remove it and try again")]
    Symlink { path: PathBuf },
    #[error("{path} exists and is not a regular file: remove it or choose another name")]
    NotAFile { path: PathBuf },
}

impl Pki {
    /// Makes the directory for a new CA (mode 0700, its parents as the umask says), or takes
    /// an existing private one that holds none of [`INIT_FILES`].
    pub fn create(dir: &Path) -> Result<Pki, PkiError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let create = |source| PkiError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        };
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(create)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            // The umask may have taken bits from 0700 (never added any): set it exactly.
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(create)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(create(e)),
        }
        let pki = Pki::open(dir)?;
        for file in INIT_FILES {
            if std::fs::symlink_metadata(dir.join(file)).is_ok() {
                return Err(PkiError::AlreadyInitialised {
                    dir: dir.to_path_buf(),
                    file,
                });
            }
        }
        Ok(pki)
    }

    /// An existing PKI directory, checked to be writable by its owner alone.
    pub fn open(dir: &Path) -> Result<Pki, PkiError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir).map_err(|source| PkiError::OpenDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(PkiError::NotADirectory { dir: dir.to_path_buf() });
        }
        let mode = meta.permissions().mode() & 0o7777;
        let owner = std::os::unix::fs::MetadataExt::uid(&meta);
        if owner != rustix::process::geteuid().as_raw() {
            return Err(PkiError::NotMine {
                dir: dir.to_path_buf(),
                owner,
            });
        }
        if mode & 0o022 != 0 {
            return Err(PkiError::Shared {
                dir: dir.to_path_buf(),
                mode,
            });
        }
        Ok(Pki { dir: dir.to_path_buf() })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a new CA's `ca.pem` (0644) and `ca.key` (0600); neither may exist.
    pub fn save_authority(&self, ca: &Authority) -> Result<(), PkiError> {
        self.write("ca.pem", &ca.cert_pem, PUBLIC, false)?;
        self.write("ca.key", &ca.issuer.key().serialize_pem(), PRIVATE, false)?;
        Ok(())
    }

    /// The CA kept here.
    pub fn authority(&self) -> Result<Authority, PkiError> {
        Ok(Authority::load(&self.dir.join("ca.pem"), &self.dir.join("ca.key"))?)
    }

    /// Writes `FILE` (one of [`INIT_FILES`]'s bundles) for `certs init`: it may not exist.
    pub fn save_init_bundle(&self, file: &'static str, bundle: &str) -> Result<PathBuf, PkiError> {
        self.write(file, bundle, PRIVATE, false)
    }

    /// Writes `NAME.pem` (0600) for `certs issue`; a name whose file `init` wrote is refused,
    /// and an existing bundle is replaced only when `replace` says so.
    pub fn save_bundle(&self, name: &str, bundle: &str, replace: bool) -> Result<PathBuf, PkiError> {
        let file = format!("{name}.pem");
        // Case too: on a case-insensitive filesystem `CA.pem` is `ca.pem`.
        if let Some(reserved) = INIT_FILES.iter().find(|f| f.eq_ignore_ascii_case(&file)) {
            return Err(PkiError::Reserved {
                name: name.to_string(),
                file: reserved,
            });
        }
        self.write(&file, bundle, PRIVATE, replace)
    }

    /// Writes `dir/file` with exactly `mode`. A new file is created with `O_EXCL`, which never
    /// follows a link (not even a dangling one); a replacement is a new file renamed over the
    /// old one, which replaces a link rather than following it, and cannot keep the old mode.
    fn write(&self, file: &str, text: &str, mode: u32, replace: bool) -> Result<PathBuf, PkiError> {
        let path = self.dir.join(file);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(PkiError::Symlink { path }),
            Ok(meta) if !meta.is_file() => return Err(PkiError::NotAFile { path }),
            Ok(_) if !replace => return Err(PkiError::Exists { path }),
            Ok(_) => {
                let temp = self.dir.join(format!(".{file}.{}.new", std::process::id()));
                let written = write_new(&temp, text, mode).and_then(|()| {
                    std::fs::rename(&temp, &path).map_err(|source| TlsError::Write {
                        path: path.clone(),
                        source,
                    })
                });
                if written.is_err() {
                    let _ = std::fs::remove_file(&temp);
                }
                written?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new(&path, text, mode)?,
            Err(source) => return Err(TlsError::Read { path, source }.into()),
        }
        Ok(path)
    }
}

/// Creates `path`, which must not exist (nor be a link), with exactly `mode`, and writes
/// `text` to disk; a failed write removes the file again.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let write = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write)?;
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(write(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root to give a directory to another user: cargo test -p common --lib -- --ignored as_root"]
    fn a_pki_directory_of_another_user_is_refused_as_root() {
        use std::os::unix::fs::PermissionsExt;
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (CI runs it as root)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(Pki::open(&dir).is_ok());
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let Err(err) = Pki::open(&dir) else {
            panic!("a directory of another user was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("uid 65534") && err.contains("not to you"), "{err}");
    }

    #[test]
    fn issued_bundles_carry_name_and_role_and_build_configs() {
        let ca = Authority::generate(1).unwrap();
        for (name, role) in [
            ("herzog", Role::Coordinator),
            ("euclid", Role::Worker),
            ("ada", Role::Admin),
        ] {
            let id = Identity::from_pem(ca.issue(name, role, 30).unwrap().as_bytes(), Path::new("x")).unwrap();
            assert_eq!((id.name.as_str(), id.role), (name, role));
            id.server_config().unwrap();
            id.client_config().unwrap();
        }
    }

    #[test]
    fn a_saved_authority_loads_and_issues() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(&dir.path().join("pki")).unwrap();
        pki.save_authority(&Authority::generate(1).unwrap()).unwrap();
        let ca = pki.authority().unwrap();
        let id = Identity::from_pem(ca.issue("w", Role::Worker, 1).unwrap().as_bytes(), Path::new("x")).unwrap();
        assert_eq!(id.role, Role::Worker);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.dir().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_pki_directory_holding_any_file_of_init_is_not_initialised_again() {
        let dir = tempfile::tempdir().unwrap();
        for file in INIT_FILES {
            let pki = dir.path().join(file.replace('.', "-"));
            std::fs::create_dir(&pki).unwrap();
            std::fs::write(pki.join(file), "left from before").unwrap();
            let err = Pki::create(&pki).unwrap_err();
            assert!(matches!(err, PkiError::AlreadyInitialised { .. }), "{file}: {err}");
        }
    }

    #[test]
    fn bad_bundles_are_named() {
        let err = Identity::from_pem(b"not pem", Path::new("/etc/x.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/x.pem") && err.contains("herzog certs issue"),
            "{err}"
        );
    }
}
