//! TLS for the endpoints: `tls_server_config` of the exporter-toolkit web configuration, with
//! the meaning Go's `crypto/tls` gives each key (exporter-toolkit is a thin layer over it).
//!
//! What rustls cannot do is refused by name rather than quietly served differently: TLS 1.0
//! and 1.1, the CBC cipher suites and the P-521 curve. Go accepts a client certificate that is
//! itself one of the client CAs (a self-signed certificate, what `openssl req -x509` makes);
//! webpki refuses it as "CA used as end entity", so `ClientVerifier` accepts that case the way
//! Go does and hands every other chain to webpki.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    SupportedCipherSuite,
};
use serde::Deserialize;

/// `tls_server_config`, as exporter-toolkit reads it (an empty string is the same as absent).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    client_ca: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    #[serde(default)]
    client_auth_type: String,
    #[serde(default)]
    client_ca_file: String,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
}

impl TlsFile {
    /// Whether the section turns TLS on: exporter-toolkit's `IsEnabled`, a certificate, a key, a
    /// client CA or a client-auth policy.
    pub(super) fn is_enabled(&self) -> bool {
        [
            &self.cert_file,
            &self.cert,
            &self.key_file,
            &self.key,
            &self.client_ca_file,
            &self.client_ca,
            &self.client_auth_type,
        ]
        .iter()
        .any(|s| !s.is_empty())
    }

    /// The keys that only matter with TLS on, when set.
    pub(super) fn tls_only_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if !self.cipher_suites.is_empty() {
            keys.push("cipher_suites");
        }
        if !self.curve_preferences.is_empty() {
            keys.push("curve_preferences");
        }
        if self.min_version.is_some() {
            keys.push("min_version");
        }
        if self.max_version.is_some() {
            keys.push("max_version");
        }
        if self.prefer_server_cipher_suites == Some(false) {
            keys.push("prefer_server_cipher_suites");
        }
        if self.client_allowed_sans.is_some() {
            keys.push("client_allowed_sans");
        }
        keys
    }
}

/// Go's `tls.ClientAuthType`, by exporter-toolkit's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// Asks for a certificate; none or any is accepted, unverified.
    RequestClientCert,
    /// Requires a certificate; any is accepted, unverified.
    RequireAnyClientCert,
    /// Asks for a certificate; one given must chain to a client CA.
    VerifyClientCertIfGiven,
    /// Requires a certificate that chains to a client CA.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            // exporter-toolkit keeps the old name for compatibility.
            "RequireAnyClientCert" | "RequireClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            other => {
                return Err(format!(
                    "tls_server_config.client_auth_type: invalid ClientAuth {other:?} (NoClientCert, \
                     RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                     RequireAndVerifyClientCert)"
                ));
            }
        })
    }

    fn mandatory(self) -> bool {
        matches!(
            self,
            Self::RequireAnyClientCert | Self::RequireAndVerifyClientCert
        )
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

/// A TLS 1.2 suite by Go's name: `Ok(Some)` a suite rustls has, `Ok(None)` a TLS 1.3 suite
/// (Go does not let TLS 1.3 suites be configured and ignores them in the list; so does this).
fn cipher_suite(name: &str) -> Result<Option<SupportedCipherSuite>, String> {
    use aws_lc_rs::cipher_suite as cs;
    Ok(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Ok(None);
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" => {
            return Err(format!(
                "tls_server_config.cipher_suites: {name} is not supported here (rustls implements \
                 no CBC suites); list the GCM or CHACHA20_POLY1305 suites"
            ));
        }
        other => {
            return Err(format!(
                "tls_server_config.cipher_suites: unknown cipher {other}"
            ));
        }
    }))
}

/// A key-exchange group by exporter-toolkit's name.
fn curve(name: &str) -> Result<&'static dyn SupportedKxGroup, String> {
    use aws_lc_rs::kx_group;
    match name {
        "X25519" => Ok(kx_group::X25519),
        "CurveP256" => Ok(kx_group::SECP256R1),
        "CurveP384" => Ok(kx_group::SECP384R1),
        "CurveP521" => Err(
            "tls_server_config.curve_preferences: CurveP521 is not supported here (rustls has no \
             P-521 key exchange); use X25519, CurveP256 or CurveP384"
                .into(),
        ),
        other => Err(format!(
            "tls_server_config.curve_preferences: unknown curve {other}"
        )),
    }
}

fn tls_version(v: &str, key: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {v} is not supported here (rustls implements TLS12 and TLS13)"
        )),
        _ => Err(format!(
            "tls_server_config.{key}: unknown TLS version {v:?} (TLS12 or TLS13)"
        )),
    }
}

/// Reads files relative to the web configuration's folder, and remembers which it read (the
/// reloader watches them).
pub(super) struct Files<'a> {
    pub base: &'a Path,
    pub read: &'a mut Vec<PathBuf>,
}

impl Files<'_> {
    fn path(&mut self, p: &str) -> PathBuf {
        let p = Path::new(p);
        let full = if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        };
        if !self.read.contains(&full) {
            self.read.push(full.clone());
        }
        full
    }

    fn bytes(&mut self, key: &str, p: &str) -> Result<Vec<u8>, String> {
        let full = self.path(p);
        std::fs::read(&full).map_err(|e| {
            format!(
                "tls_server_config.{key}: cannot read {}: {e}",
                full.display()
            )
        })
    }
}

/// What `http_server_config` changes about TLS.
pub(super) struct HttpOptions {
    pub http2: bool,
}

/// The server's certificate chain and key: inline or from files, exactly one of each.
fn cert_and_key(
    t: &TlsFile,
    files: &mut Files<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if t.cert_file.is_empty() && t.cert.is_empty() {
        return Err("tls_server_config: missing one of cert or cert_file".into());
    }
    if t.key_file.is_empty() && t.key.is_empty() {
        return Err("tls_server_config: missing one of key or key_file".into());
    }
    let cert_pem = match (t.cert_file.is_empty(), t.cert.is_empty()) {
        (false, false) => return Err("tls_server_config: give cert or cert_file, not both".into()),
        (false, true) => files.bytes("cert_file", &t.cert_file)?,
        _ => t.cert.as_bytes().to_vec(),
    };
    let key_pem = match (t.key_file.is_empty(), t.key.is_empty()) {
        (false, false) => return Err("tls_server_config: give key or key_file, not both".into()),
        (false, true) => files.bytes("key_file", &t.key_file)?,
        _ => t.key.as_bytes().to_vec(),
    };
    let cert_key = if t.cert.is_empty() {
        "cert_file"
    } else {
        "cert"
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.{cert_key}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.{cert_key}: no PEM certificate in it"
        ));
    }
    let key_key = if t.key.is_empty() { "key_file" } else { "key" };
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls_server_config.{key_key}: no PEM private key in it ({e})"))?;
    Ok((certs, key))
}

/// Builds the server's TLS configuration from the section (which [`TlsFile::is_enabled`]).
pub(super) fn server_config(
    t: &TlsFile,
    http: &HttpOptions,
    files: &mut Files<'_>,
) -> Result<rustls::ServerConfig, String> {
    // exporter-toolkit's order: names of versions, suites and curves (checked as it parses
    // the file), then the certificate and key (named, then read), then the client policy.
    let min = tls_version(t.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = tls_version(t.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    let mut tls12_suites = Vec::new();
    for name in &t.cipher_suites {
        if let Some(s) = cipher_suite(name)?
            && !tls12_suites.contains(&s)
        {
            tls12_suites.push(s);
        }
    }
    let groups: Vec<&'static dyn SupportedKxGroup> = t
        .curve_preferences
        .iter()
        .map(|c| curve(c))
        .collect::<Result<_, _>>()?;
    let (certs, key) = cert_and_key(t, files)?;

    let tls12_allowed = min.version == rustls::ProtocolVersion::TLSv1_2;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match (
        min.version == rustls::ProtocolVersion::TLSv1_2,
        max.version == rustls::ProtocolVersion::TLSv1_3,
    ) {
        (true, true) => vec![&rustls::version::TLS12, &rustls::version::TLS13],
        (true, false) => vec![&rustls::version::TLS12],
        (false, true) => vec![&rustls::version::TLS13],
        (false, false) => {
            return Err("tls_server_config: min_version is above max_version".into());
        }
    };

    let mut provider = aws_lc_rs::default_provider();
    if !t.cipher_suites.is_empty() {
        // TLS 1.3 suites are always on (as in Go); the list chooses the TLS 1.2 ones, in order.
        let mut chosen: Vec<SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .collect();
        chosen.extend(tls12_suites);
        if tls12_allowed && http.http2 {
            // Go's HTTP/2 server refuses a TLS 1.2 suite list without the suite HTTP/2 requires.
            let required = [
                aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ];
            if !required.iter().any(|r| chosen.contains(r)) {
                return Err(
                    "tls_server_config.cipher_suites: missing an HTTP/2-required AES_128_GCM_SHA256 \
                     cipher (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or \
                     TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); add one, or set \
                     http_server_config.http2: false"
                        .into(),
                );
            }
        }
        provider.cipher_suites = chosen;
    }
    if !groups.is_empty() {
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);

    let mode = ClientAuth::parse(&t.client_auth_type)?;
    let has_ca = !t.client_ca_file.is_empty() || !t.client_ca.is_empty();
    let ca_pem = if !t.client_ca_file.is_empty() {
        Some(files.bytes("client_ca_file", &t.client_ca_file)?)
    } else if !t.client_ca.is_empty() {
        Some(t.client_ca.as_bytes().to_vec())
    } else {
        None
    };
    if has_ca && mode == ClientAuth::NoClientCert {
        return Err(
            "tls_server_config: client CA's have been configured without a Client Auth Policy \
             (set client_auth_type, e.g. RequireAndVerifyClientCert)"
                .into(),
        );
    }
    let verifier = ClientVerifier::new(
        mode,
        ca_pem.as_deref(),
        !t.client_ca_file.is_empty(),
        t.client_allowed_sans.clone(),
        provider.clone(),
    )?;

    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| {
            format!("tls_server_config: no cipher suite is left for the TLS versions allowed ({e})")
        })?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(Arc::new(v)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!("tls_server_config: the certificate and key do not go together: {e}")
    })?;
    // Go has ignored prefer_server_cipher_suites since 1.18 and picks by its own order; here
    // true (the default) makes the server's order (cipher_suites as listed) win, false the
    // client's.
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = if http.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// How a client certificate is verified.
#[derive(Debug)]
enum Chains {
    /// Not at all (`RequestClientCert`, `RequireAnyClientCert`).
    Unverified,
    /// It must chain to the client CAs (or, without `client_ca_file`, the system's roots).
    To(Arc<dyn ClientCertVerifier>),
    /// A verifying mode without a client CA on a system without trusted roots: Go verifies
    /// against the empty system pool, so every presented certificate is refused.
    Nothing,
}

/// Client certificates with Go's meaning of each client-auth policy, plus
/// `client_allowed_sans`.
#[derive(Debug)]
struct ClientVerifier {
    mode: ClientAuth,
    /// How a presented certificate is verified.
    chains: Chains,
    /// The client CA certificates as given: one presented as the client's own certificate is
    /// accepted, as Go accepts it.
    anchors: Vec<CertificateDer<'static>>,
    /// Subjects of the client CAs, sent as hints (Go sends its ClientCAs' subjects).
    hints: Vec<DistinguishedName>,
    /// The client CAs' subjects as DER, to tell an unknown issuer from a known one.
    anchor_subjects: Vec<Vec<u8>>,
    allowed_sans: Option<Vec<String>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    /// `None` for `NoClientCert`.
    fn new(
        mode: ClientAuth,
        ca_pem: Option<&[u8]>,
        ca_file: bool,
        allowed_sans: Option<Vec<String>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Option<Self>, String> {
        if mode == ClientAuth::NoClientCert {
            if allowed_sans.is_some() {
                return Err(
                    "tls_server_config.client_allowed_sans: needs a client_auth_type that asks \
                     for a client certificate"
                        .into(),
                );
            }
            return Ok(None);
        }
        let ca_key = if ca_file {
            "client_ca_file"
        } else {
            "client_ca"
        };
        let mut anchors = Vec::new();
        if let Some(pem) = ca_pem {
            for c in CertificateDer::pem_slice_iter(pem) {
                anchors.push(c.map_err(|e| format!("tls_server_config.{ca_key}: {e}"))?);
            }
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in &anchors {
            roots.add(c.clone()).map_err(|e| {
                format!("tls_server_config.{ca_key}: not a usable CA certificate: {e}")
            })?;
        }
        let hints = roots.subjects();
        let anchor_subjects = anchors
            .iter()
            .filter_map(|a| x509_parser::parse_x509_certificate(a).ok())
            .map(|(_, c)| c.subject().as_raw().to_vec())
            .collect();
        let chains = if mode.verifies() {
            if ca_pem.is_none() {
                // Go verifies against the system's roots when no client CA is given.
                let native = rustls_native_certs::load_native_certs();
                let _ = roots.add_parsable_certificates(native.certs);
            }
            if roots.is_empty() {
                if ca_pem.is_some() {
                    return Err(format!(
                        "tls_server_config.{ca_key}: no PEM certificate in it; {mode:?} would \
                         refuse every client"
                    ));
                }
                Chains::Nothing
            } else {
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls_server_config.{ca_key}: {e}"))?;
                Chains::To(v)
            }
        } else {
            Chains::Unverified
        };
        Ok(Some(Self {
            mode,
            chains,
            anchors,
            hints,
            anchor_subjects,
            allowed_sans,
            algorithms: provider.signature_verification_algorithms,
        }))
    }
}

/// The names in a certificate's subject alternative names as Go lists them: DNS names, e-mail
/// addresses, IP addresses and URIs.
pub fn subject_alt_names(der: &[u8]) -> Result<Vec<String>, Error> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                out.push((*s).to_owned());
            }
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                    _ => None,
                };
                if let Some(ip) = ip {
                    out.push(ip.to_canonical().to_string());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A client CA presented as the client's own certificate: valid now, and for client
/// authentication if it limits its uses (what Go checks of a one-certificate chain).
fn check_anchor_as_client(der: &[u8], now: UnixTime) -> Result<(), Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if secs < validity.not_before.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if secs > validity.not_after.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    if let Ok(Some(eku)) = cert.extended_key_usage()
        && !(eku.value.any || eku.value.client_auth)
    {
        return Err(Error::InvalidCertificate(
            CertificateError::InvalidPurposeContext {
                required: rustls::ExtendedKeyPurpose::ClientAuth,
                presented: Vec::new(),
            },
        ));
    }
    Ok(())
}

impl ClientVerifier {
    /// A CA certificate (self-signed, what `openssl req -x509` makes) that no client CA
    /// issued, while client CAs are named.
    fn is_unknown_ca(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        !self.anchor_subjects.is_empty()
            && is_ca
            && !self
                .anchor_subjects
                .iter()
                .any(|s| s.as_slice() == cert.issuer().as_raw())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Go calls exporter-toolkit's SAN check even without a certificate, and that check
        // fails; so with allowed SANs a certificate is needed in every mode.
        self.mode.mandatory() || self.allowed_sans.is_some()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match &self.chains {
            Chains::Unverified => {}
            Chains::Nothing => {
                return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
            }
            Chains::To(chains) => {
                if self
                    .anchors
                    .iter()
                    .any(|a| a.as_ref() == end_entity.as_ref())
                {
                    check_anchor_as_client(end_entity, now)?;
                } else if self.is_unknown_ca(end_entity) {
                    // webpki would say "CA used as end entity"; Go says what matters here.
                    return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
                } else {
                    chains.verify_client_cert(end_entity, intermediates, now)?;
                }
            }
        }
        if let Some(allowed) = &self.allowed_sans {
            let names = subject_alt_names(end_entity)?;
            if !names.iter().any(|n| allowed.contains(n)) {
                return Err(Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(SanNotAllowed { presented: names })),
                )));
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client certificate names none of `client_allowed_sans`.
#[derive(Debug)]
struct SanNotAllowed {
    presented: Vec<String>,
}

impl std::fmt::Display for SanNotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the client certificate's names {:?} include none of client_allowed_sans",
            self.presented
        )
    }
}

impl std::error::Error for SanNotAllowed {}
