//! A throwaway certificate authority for tests of TLS and node identities: node certificates
//! name their role as the organizational unit, as the installer's do.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};

/// A test CA.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A node certificate written to files: `<name>.crt` and `<name>.key` (0600).
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(TestCa {
            issuer: Issuer::from_ca_cert_pem(&cert_pem, key)?,
            cert_pem,
        })
    }

    /// A certificate and key (PEM) for node `name` in role `unit` (`master`, `agent`), valid
    /// for `localhost` and `127.0.0.1`, for servers and clients.
    pub fn issue(&self, name: &str, unit: &str) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Capstan");
        dn.push(DnType::OrganizationalUnitName, unit);
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// [`TestCa::issue`] written into `dir`.
    pub fn write_node(&self, dir: &Path, name: &str, unit: &str) -> anyhow::Result<NodeFiles> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let (cert_pem, key_pem) = self.issue(name, unit)?;
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, cert_pem)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)?;
        std::io::Write::write_all(&mut f, key_pem.as_bytes())?;
        Ok(NodeFiles { cert, key })
    }

    /// The CA certificate written to `dir/<file>`.
    pub fn write_cert(&self, dir: &Path, file: &str) -> anyhow::Result<PathBuf> {
        let path = dir.join(file);
        std::fs::write(&path, &self.cert_pem)?;
        Ok(path)
    }
}
