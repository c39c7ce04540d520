//! TLS client settings built at load (roots, client certificate, verification) and the
//! handshake with its certificate-expiry reading, shared by the HTTP and TCP kinds.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Failure, Reason};
use crate::spec::BuildContext;

/// TLS settings of a probe (`tls_config:`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSpec {
    /// Verify the server's certificate chain and name (default true).
    pub verify: bool,
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for servers that ask for one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name to verify and send as SNI instead of the target's host.
    pub server_name: Option<String>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            verify: true,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trusted roots, loaded once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "could not load some system CA certificates");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "loaded system CA certificates");
            Arc::new(store)
        })
        .clone()
}

/// Builds the client config for `spec` (found at `path`); errors are recorded in `ctx`.
pub fn client_config(spec: &TlsSpec, alpn: &[&[u8]], ctx: &mut BuildContext, path: &str) -> Option<Arc<ClientConfig>> {
    let builder = match ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions() {
        Ok(b) => b,
        Err(e) => {
            ctx.error(path, format!("TLS setup failed: {e}"));
            return None;
        }
    };
    let builder = if spec.verify {
        let roots = match &spec.ca_file {
            None => system_roots(),
            Some(file) => {
                let key = format!("{path}.ca_file");
                let pem = ctx.read_file(&key, file)?;
                let mut store = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    match cert
                        .map_err(|e| e.to_string())
                        .and_then(|c| store.add(c).map_err(|e| e.to_string()))
                    {
                        Ok(()) => {}
                        Err(e) => ctx.error(&key, format!("{}: not a usable PEM certificate: {e}", file.display())),
                    }
                }
                if store.is_empty() {
                    ctx.error(&key, format!("{} holds no certificate", file.display()));
                    return None;
                }
                Arc::new(store)
            }
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
    };
    let mut config = match (&spec.cert_file, &spec.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert_file), Some(key_file)) => {
            let cert_key = format!("{path}.cert_file");
            let key_key = format!("{path}.key_file");
            let certs_pem = ctx.read_file(&cert_key, cert_file)?;
            let key_pem = ctx.read_file(&key_key, key_file)?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs_pem)
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                ctx.error(&cert_key, format!("{} holds no PEM certificate", cert_file.display()));
                return None;
            }
            let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
                Ok(key) => key,
                Err(e) => {
                    ctx.error(
                        &key_key,
                        format!("{} holds no usable PEM private key: {e}", key_file.display()),
                    );
                    return None;
                }
            };
            match builder.with_client_auth_cert(certs, key) {
                Ok(config) => config,
                Err(e) => {
                    ctx.error(
                        &cert_key,
                        format!("client certificate and key do not fit together: {e}"),
                    );
                    return None;
                }
            }
        }
        (Some(_), None) => {
            ctx.error(format!("{path}.key_file"), "cert_file needs key_file");
            return None;
        }
        (None, Some(_)) => {
            ctx.error(format!("{path}.cert_file"), "key_file needs cert_file");
            return None;
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every probe makes a full handshake, as a new client would, and sees the certificates.
    config.resumption = rustls::client::Resumption::disabled();
    Some(Arc::new(config))
}

/// A finished handshake.
#[derive(Debug)]
pub struct Handshake<S> {
    /// The encrypted stream.
    pub stream: TlsStream<S>,
    /// Earliest `notAfter` among the certificates the server presented.
    pub earliest_expiry: Option<SystemTime>,
}

/// Runs the TLS handshake over `stream`, naming the server `server_name`. When it fails because
/// the certificate has expired, `failed_expiry` gets its `notAfter`, so the expiry stays known
/// (and an expiry alert stays firing) while handshakes fail.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    config: &Arc<ClientConfig>,
    server_name: &str,
    stream: S,
    failed_expiry: &mut Option<SystemTime>,
) -> Result<Handshake<S>, Failure> {
    let name = server_name.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| Failure::new(Reason::Tls, format!("invalid TLS server name {server_name}: {e}")))?;
    let stream = match TlsConnector::from(config.clone()).connect(name, stream).await {
        Ok(stream) => stream,
        Err(e) => {
            *failed_expiry = expired_not_after(&e);
            return Err(Failure::new(Reason::Tls, format!("TLS handshake: {e}")));
        }
    };
    let earliest_expiry = stream.get_ref().1.peer_certificates().and_then(earliest_not_after);
    Ok(Handshake {
        stream,
        earliest_expiry,
    })
}

/// The `notAfter` of an expired certificate that made a handshake fail.
fn expired_not_after(error: &std::io::Error) -> Option<SystemTime> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { not_after, .. }) => {
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.as_secs()))
        }
        _ => None,
    }
}

/// The earliest `notAfter` of a certificate chain.
pub fn earliest_not_after(chain: &[CertificateDer<'_>]) -> Option<SystemTime> {
    chain
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
        .map(|secs| {
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        })
}

/// `verify: false`: any certificate is accepted, but handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
