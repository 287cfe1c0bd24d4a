//! What we need to know about one X.509 certificate, extracted once from its DER.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The facts of one certificate that reports and plans use. Owns its DER so it can be re-parsed
/// for signing and verification without lifetimes leaking into the rest of the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The certificate as DER.
    pub der: Vec<u8>,
    /// Subject in RFC 4514-ish form, for messages.
    pub subject: String,
    /// Issuer in the same form.
    pub issuer: String,
    /// First CN of the subject, if any.
    pub subject_cn: Option<String>,
    /// First CN of the issuer, if any.
    pub issuer_cn: Option<String>,
    /// Serial number, lower-case hex without separators.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The raw subjectPublicKeyInfo, to match a private key or a CA.
    pub spki_der: Vec<u8>,
}

impl CertFacts {
    /// Parses one DER certificate; the error says what is wrong with it.
    pub fn from_der(der: &[u8]) -> Result<CertFacts, String> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!(
                "{} stray bytes after the certificate's DER",
                rest.len()
            ));
        }
        let cn = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_string)
        };
        Ok(CertFacts {
            der: der.to_vec(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            subject_cn: cn(cert.subject()),
            issuer_cn: cn(cert.issuer()),
            serial_hex: hex(cert.raw_serial()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            spki_der: cert.public_key().raw.to_vec(),
        })
    }

    /// Whole seconds from `now` to NotAfter, negative once expired (kubeadm's `residualTime`).
    pub fn residual_seconds(&self, now: OffsetDateTime) -> i64 {
        let d = self.not_after - now;
        d.whole_seconds()
    }

    /// True when this is a CA certificate: basicConstraints CA:TRUE, or an X.509 v1 certificate
    /// (no extensions at all: old self-made CAs, which OpenSSL also accepts as CAs).
    pub fn is_ca(&self) -> bool {
        let Ok((_, cert)) = X509Certificate::from_der(&self.der) else {
            return false;
        };
        match cert.basic_constraints() {
            Ok(Some(bc)) => bc.value.ca,
            Ok(None) => cert.version() == x509_parser::x509::X509Version::V1,
            Err(_) => false,
        }
    }

    /// True when this certificate names `issuer` as its issuer, byte for byte (what Go and
    /// openssl match when they build a chain; a signature alone is not enough for them).
    pub fn names_issuer(&self, issuer: &CertFacts) -> bool {
        let (Ok((_, leaf)), Ok((_, ca))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&issuer.der),
        ) else {
            return false;
        };
        leaf.issuer().as_raw() == ca.subject().as_raw()
    }

    /// True when this certificate's signature verifies with `issuer`'s public key.
    pub fn is_signed_by(&self, issuer: &CertFacts) -> bool {
        let Ok((_, leaf)) = X509Certificate::from_der(&self.der) else {
            return false;
        };
        let Ok((_, ca)) = X509Certificate::from_der(&issuer.der) else {
            return false;
        };
        leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// Lower-case hex of a byte string (serials, key ids).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
