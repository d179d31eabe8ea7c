//! TLS's files: the core's sans-IO TLS layer ([`ServerTls`], [`ClientTls`]) loaded from PEM
//! files and the system's root certificates. Without the `tls` feature both say that this build
//! has no TLS, and every connection is the protocol's plain TCP.

use std::path::Path;

use simple_im_core::tls::{ClientTls, ServerTls};

/// What a build without the `tls` feature answers.
#[cfg(not(feature = "tls"))]
const NO_TLS: &str = "this build has no TLS (the `tls` feature)";

/// Loads a PEM certificate chain (the server's certificate first) and its PEM private key.
/// The error is one line naming the file.
#[cfg(feature = "tls")]
pub fn load_server_tls(cert: &Path, key: &Path) -> Result<ServerTls, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;

    let certs = pem_certs(cert)?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|err| format!("{}: {err}", key.display()))?;
    ServerTls::new(certs, key).map_err(|err| err.to_string())
}

/// Says that this build has no TLS.
#[cfg(not(feature = "tls"))]
pub fn load_server_tls(_cert: &Path, _key: &Path) -> Result<ServerTls, String> {
    Err(NO_TLS.to_owned())
}

/// What a client trusts: the certificates in the PEM file `ca` (a private CA), or the system's
/// root certificates without one; it expects `name` (a DNS name or an IP address) in the
/// server's certificate. The error is one line.
#[cfg(feature = "tls")]
pub fn client_tls(ca: Option<&Path>, name: &str) -> Result<ClientTls, String> {
    let mut roots = simple_im_core::tls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let (added, _) = roots.add_parsable_certificates(pem_certs(ca)?);
            if added == 0 {
                return Err(format!(
                    "{}: no usable CA certificate in the file",
                    ca.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no system root certificates found; give the server's CA with --ca FILE"
                        .to_owned(),
                );
            }
        }
    }
    ClientTls::new(roots, name).map_err(|err| err.to_string())
}

/// Says that this build has no TLS.
#[cfg(not(feature = "tls"))]
pub fn client_tls(_ca: Option<&Path>, _name: &str) -> Result<ClientTls, String> {
    Err(NO_TLS.to_owned())
}

/// The certificates in the PEM file at `path`; the error is one line naming the file.
#[cfg(feature = "tls")]
fn pem_certs(path: &Path) -> Result<Vec<simple_im_core::tls::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{}: {err}", path.display()))
}

/// What `--make-cert` wrote: the two files, and the certificate's last day.
#[derive(Debug)]
pub struct MadeCert {
    /// The PEM certificate, for `--tls-cert` and the clients' `--ca`.
    pub cert: std::path::PathBuf,
    /// The PEM private key (mode 0600), for `--tls-key`.
    pub key: std::path::PathBuf,
    /// The last day it is valid, `YYYY-MM-DD`.
    pub until: String,
}

/// How long a made certificate is valid: the clients pin it (`--ca`), so each renewal means
/// handing it out again.
#[cfg(feature = "tls")]
const MADE_CERT_DAYS: i64 = 5 * 365;

/// Makes a self-signed server certificate for `names` (DNS names or IP addresses) that TLS
/// clients accept with `--ca cert.pem`: CA:FALSE, for serverAuth, the names as
/// subjectAltNames, an ECDSA P-256 key. Writes `out/cert.pem` and `out/key.pem`, never over an
/// existing file. The error is one line.
#[cfg(feature = "tls")]
pub fn make_cert(names: &[String], out: &Path) -> Result<MadeCert, String> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };

    let Some(first) = names.first() else {
        return Err("--make-cert needs at least one name".to_owned());
    };
    for name in names {
        // rcgen takes anything ASCII as a DNS name; the client would refuse such a one.
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            return Err(format!("{name:?} is not a DNS name or an IP address"));
        }
    }
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|err| format!("cannot make a certificate for {names:?}: {err}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, first.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clients whose clocks are a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(MADE_CERT_DAYS);
    let until = params.not_after.date().to_string();
    let key = KeyPair::generate().map_err(|err| format!("cannot make a key: {err}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|err| format!("cannot sign the certificate: {err}"))?;

    std::fs::create_dir_all(out).map_err(|err| format!("{}: {err}", out.display()))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(format!(
                "{} exists already: remove it, or choose another --out",
                path.display()
            ));
        }
    }
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(MadeCert {
        cert: cert_path,
        key: key_path,
        until,
    })
}

/// Says that this build has no TLS.
#[cfg(not(feature = "tls"))]
pub fn make_cert(_names: &[String], _out: &Path) -> Result<MadeCert, String> {
    Err(NO_TLS.to_owned())
}

/// Writes a file that must not exist yet, with this mode on Unix (a key: readable by its owner
/// alone from the start, not after a chmod).
#[cfg(feature = "tls")]
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|err| format!("{}: {err}", path.display()))
}
