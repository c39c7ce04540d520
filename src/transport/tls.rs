//! TLS client settings built at load (roots, client certificate, verification) and the
//! handshake, with what it showed of the server's certificates (expiry, the leaf's names and
//! fingerprint, the protocol version), whether it succeeded or not.

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

use super::{ErrorKind, TransportError};
use crate::poison::LockUnpoisoned;
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
    /// The oldest TLS version accepted (`TLS12`, the default, or `TLS13`).
    pub min_version: Option<TlsVersion>,
    /// The newest TLS version offered (`TLS12` or `TLS13`, the default).
    pub max_version: Option<TlsVersion>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            verify: true,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            min_version: None,
            max_version: None,
        }
    }
}

/// A TLS version, as blackbox_exporter's `tls_config` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLS12")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLS13")]
    Tls13,
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

/// What a client config that reads no file is made of.
type Shared = (bool, Option<TlsVersion>, Option<TlsVersion>, Vec<Vec<u8>>);

/// Builds the client config for `spec` (found at `path`); errors are recorded in `ctx`. Specs
/// that read no file share one config per settings (a config is a few hundred bytes, and a
/// config of 100,000 probes would otherwise hold 100,000 copies of the same).
pub fn client_config(spec: &TlsSpec, alpn: &[&[u8]], ctx: &mut BuildContext, path: &str) -> Option<Arc<ClientConfig>> {
    static SHARED: OnceLock<std::sync::Mutex<std::collections::HashMap<Shared, Arc<ClientConfig>>>> = OnceLock::new();
    let reads_files = spec.ca_file.is_some() || spec.cert_file.is_some() || spec.key_file.is_some();
    if reads_files {
        return build_client_config(spec, alpn, ctx, path);
    }
    let key = (
        spec.verify,
        spec.min_version,
        spec.max_version,
        alpn.iter().map(|p| p.to_vec()).collect(),
    );
    let shared = SHARED.get_or_init(Default::default);
    if let Some(config) = shared.lock_unpoisoned().get(&key) {
        return Some(config.clone());
    }
    let config = build_client_config(spec, alpn, ctx, path)?;
    shared.lock_unpoisoned().insert(key, config.clone());
    Some(config)
}

fn build_client_config(
    spec: &TlsSpec,
    alpn: &[&[u8]],
    ctx: &mut BuildContext,
    path: &str,
) -> Option<Arc<ClientConfig>> {
    let (min, max) = (
        spec.min_version.unwrap_or(TlsVersion::Tls12),
        spec.max_version.unwrap_or(TlsVersion::Tls13),
    );
    if min > max {
        ctx.error(format!("{path}.max_version"), "max_version is below min_version");
        return None;
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = match ClientConfig::builder_with_provider(provider()).with_protocol_versions(&versions) {
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

/// What a handshake showed of the server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsSeen {
    /// The protocol version agreed (`TLS 1.2`, `TLS 1.3`), once the handshake finished.
    pub version: Option<&'static str>,
    /// Earliest `notAfter` among the certificates the server presented.
    pub earliest_expiry: Option<SystemTime>,
    /// Earliest `notAfter` of the chain that was verified (`None`: not verified, as with
    /// `verify: false`).
    pub verified_chain_expiry: Option<SystemTime>,
    /// The leaf certificate.
    pub leaf: Option<Leaf>,
    /// The `notAfter` of an expired certificate that made the handshake fail, so the expiry
    /// stays known (and an expiry alert stays firing) while handshakes fail.
    pub refused_expiry: Option<SystemTime>,
}

/// What identifies the server's certificate (blackbox's `probe_ssl_last_chain_info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaf {
    /// SHA-256 of its DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// Its subject, as Go prints a `pkix.Name` (`CN=host,O=Org,C=DE`).
    pub subject: String,
    /// Its issuer, the same way.
    pub issuer: String,
    /// Its DNS names, comma-separated.
    pub dns_names: String,
}

/// Runs the TLS handshake over `stream`, naming the server `server_name`; `verified` says
/// whether `config` verifies the chain. `seen` gets what the handshake showed, also when it
/// fails.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    config: &Arc<ClientConfig>,
    server_name: &str,
    verified: bool,
    stream: S,
    seen: &mut TlsSeen,
) -> Result<TlsStream<S>, TransportError> {
    let name = server_name.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| TransportError::new(ErrorKind::Tls, format!("invalid TLS server name {server_name}: {e}")))?;
    let stream = match TlsConnector::from(config.clone()).connect(name, stream).await {
        Ok(stream) => stream,
        Err(e) => {
            seen.refused_expiry = expired_not_after(&e);
            return Err(TransportError::new(ErrorKind::Tls, format!("TLS handshake: {e}")));
        }
    };
    let connection = stream.get_ref().1;
    seen.version = connection.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2",
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3",
        _ => "unknown",
    });
    if let Some(chain) = connection.peer_certificates() {
        seen.earliest_expiry = earliest_not_after(chain);
        seen.verified_chain_expiry = if verified { seen.earliest_expiry } else { None };
        seen.leaf = chain.first().and_then(|der| leaf(der));
    }
    Ok(stream)
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
        .map(from_unix)
}

fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn leaf(der: &CertificateDer<'_>) -> Option<Leaf> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let fingerprint_sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some(*name),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Some(Leaf {
        fingerprint_sha256,
        subject: go_name(cert.subject()),
        issuer: go_name(cert.issuer()),
        dns_names,
    })
}

/// A distinguished name as Go's `pkix.Name.String()` prints it: the attributes it knows in its
/// own order, reversed (`CN=...,O=...,C=...`), the others after them as dotted OIDs.
fn go_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    // The order Go's `ToRDNSequence` builds: C, ST, L, STREET, POSTALCODE, O, OU, CN, SERIALNUMBER.
    const KNOWN: [(&str, &str); 9] = [
        ("2.5.4.6", "C"),
        ("2.5.4.8", "ST"),
        ("2.5.4.7", "L"),
        ("2.5.4.9", "STREET"),
        ("2.5.4.17", "POSTALCODE"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.3", "CN"),
        ("2.5.4.5", "SERIALNUMBER"),
    ];
    let attributes: Vec<(String, String)> = name
        .iter_attributes()
        .map(|a| (a.attr_type().to_id_string(), a.as_str().unwrap_or_default().to_string()))
        .collect();
    // Go puts attributes it does not know first in the sequence, in reverse, so last in print.
    let mut rdns: Vec<String> = Vec::new();
    for (oid, value) in &attributes {
        if !KNOWN.iter().any(|(k, _)| k == oid) {
            rdns.insert(0, format!("{oid}={}", escape_rdn(value)));
        }
    }
    for (oid, short) in KNOWN {
        let values: Vec<String> = attributes
            .iter()
            .filter(|(o, _)| o == oid)
            .map(|(_, v)| format!("{short}={}", escape_rdn(v)))
            .collect();
        if !values.is_empty() {
            rdns.push(values.join("+"));
        }
    }
    rdns.reverse();
    rdns.join(",")
}

/// An attribute value escaped as RFC 2253 (Go's `AttributeTypeAndValue` printing).
fn escape_rdn(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let escape = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
