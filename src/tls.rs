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
