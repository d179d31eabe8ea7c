//! Certificates for the TLS tests, made per test with rcgen: a private CA, the server's, an
//! impostor's. Each test file that includes it uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A private CA, a server certificate it signed for `localhost` and 127.0.0.1, and an
/// impostor's certificate it signed for the same names, as PEM files in a fresh folder.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub impostor_cert: PathBuf,
    pub impostor_key: PathBuf,
}

impl Pki {
    /// Makes them in `dir` (created; removed again when the `Pki` is dropped).
    pub fn new(dir: PathBuf) -> Pki {
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "im test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (cert, key) = leaf("im server");
        let (impostor_cert, impostor_key) = leaf("impostor");
        Pki {
            ca: write("ca.pem", &ca.pem()),
            cert: write("cert.pem", &cert),
            key: write("key.pem", &key),
            impostor_cert: write("impostor.pem", &impostor_cert),
            impostor_key: write("impostor-key.pem", &impostor_key),
            dir,
        }
    }

    /// The server's options for this certificate.
    pub fn server_options(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_owned(),
            self.cert.display().to_string(),
            "--tls-key".to_owned(),
            self.key.display().to_string(),
        ]
    }

    /// The client's options, trusting this CA.
    pub fn client_options(&self) -> Vec<String> {
        vec![
            "--tls".to_owned(),
            "--ca".to_owned(),
            self.ca.display().to_string(),
        ]
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in pem_certs(&self.ca) {
            roots.add(cert).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    pub fn server_config(&self, cert: &PathBuf, key: &PathBuf) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(pem_certs(cert), key)
                .unwrap(),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn pem_certs(path: &PathBuf) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
