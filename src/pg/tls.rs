//! TLS to PostgreSQL, with libpq's `sslmode` meanings: what a `postgres://` URL asks for, as
//! connection settings and a rustls connector for every connection reachd makes (pool,
//! listener, admin commands, the copy).
//!
//! | `sslmode` | reachd |
//! |---|---|
//! | `disable` | no TLS |
//! | `prefer` (the default) | TLS when the server offers it, the certificate not checked |
//! | `require` | TLS or no connection; the certificate not checked — unless `sslrootcert` is given, then as `verify-ca` (libpq does the same) |
//! | `verify-ca` | TLS, the certificate signed by a trusted CA (any host name) |
//! | `verify-full` | TLS, the certificate signed by a trusted CA and naming the host |
//!
//! Trusted CAs: the PEM file `sslrootcert` names, or, without it (or with `system`), the
//! public web CAs (webpki-roots). The handshake's signatures are always verified; "not
//! checked" means the certificate's chain and name, as in libpq.
//!
//! May depend on: postgres, rustls, tokio-postgres-rustls, webpki-roots, anyhow, config (the
//! URL's TLS parameters).

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{SslRequest, postgres_target};
use postgres::config::SslMode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The connector every PostgreSQL connection uses.
pub type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// What the certificate check covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Chain and host name are not checked (`prefer`, `require`).
    None,
    /// The chain only (`verify-ca`).
    Chain,
    /// Chain and host name (`verify-full`).
    Full,
}

/// The connection settings and TLS connector `url` asks for.
pub fn settings(url: &str) -> anyhow::Result<(postgres::Config, Tls)> {
    let target = postgres_target(url).map_err(|e| anyhow::anyhow!(e))?;
    let mut config = postgres::Config::from_str(&target.url)
        .map_err(|e| anyhow::anyhow!("database URL: {e}"))?;
    let root = target.root_cert.as_deref();
    let (ssl_mode, check) = match (target.ssl, root.is_some()) {
        (SslRequest::Disable, _) => (SslMode::Disable, Check::None),
        (SslRequest::Prefer, _) => (SslMode::Prefer, Check::None),
        (SslRequest::Require, false) => (SslMode::Require, Check::None),
        (SslRequest::Require, true) | (SslRequest::VerifyCa, _) => (SslMode::Require, Check::Chain),
        (SslRequest::VerifyFull, _) => (SslMode::Require, Check::Full),
    };
    config.ssl_mode(ssl_mode);
    Ok((config, connector(check, root)?))
}

fn connector(check: Check, root: Option<&str>) -> anyhow::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS for PostgreSQL")?;
    // Unchecked modes read no CA file (as libpq); the verifier then only checks signatures.
    let root = if check == Check::None { None } else { root };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(trusted(root)?), provider)
        .build()
        .context("TLS for PostgreSQL: the trusted CAs")?;
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki, check }))
        .with_no_client_auth();
    Ok(Tls::new(config))
}

/// The CAs in the PEM file `root` names, or the public web CAs.
fn trusted(root: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root {
        None | Some("system") => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("sslrootcert {path}: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            anyhow::ensure!(added > 0, "sslrootcert {path}: no certificate in it");
        }
    }
    Ok(store)
}

/// rustls's verifier, asked only what the mode checks: nothing of the certificate itself for
/// `prefer` and `require` (libpq's meaning), its chain but not its name for `verify-ca`, both
/// for `verify-full`. The handshake's signatures are always verified.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    check: Check,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::None {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verified {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_become_settings_not_server_options() {
        let (config, _) = settings("postgres://u@db:5432/x?sslmode=verify-full&application_name=a")
            .expect("parses");
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_application_name(), Some("a"));
        let (config, _) = settings("postgres://u@db/x").expect("parses");
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer);
        let (config, _) = settings("postgres://u@db/x?sslmode=disable").expect("parses");
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        // A Unix socket folder in the query survives the TLS parameters' removal.
        let (config, _) =
            settings("postgres:///reachd?host=/run/postgresql&sslmode=disable").expect("parses");
        assert_eq!(
            config.get_hosts(),
            &[postgres::config::Host::Unix("/run/postgresql".into())]
        );
    }

    #[test]
    fn an_unknown_sslmode_or_a_missing_root_file_is_refused_by_name() {
        let e = settings("postgres://u@db/x?sslmode=allow")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("sslmode=allow"), "{e}");
        let e = settings("postgres://u@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("sslrootcert /nonexistent/ca.pem"),
            "{e}"
        );
    }
}
