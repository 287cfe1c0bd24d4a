//! Re-issue one certificate exactly as it was, with a new validity, serial and (usually) key.
//!
//! Every extension of the old certificate except the key identifiers is copied byte for byte,
//! with its criticality and in its order: key usage, EKU, SANs (every one, in order), basic
//! constraints and anything unknown. The subject is rebuilt attribute by attribute keeping string
//! types; a subject rcgen cannot express faithfully is refused, never approximated.

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, Issuer, KeyPair,
    SerialNumber, SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Fills `bytes` from the system CSPRNG.
pub fn random_fill(bytes: &mut [u8]) -> Result<(), String> {
    aws_lc_rs::rand::fill(bytes).map_err(|_| "the system random generator failed".to_string())
}

/// A fresh random positive 128-bit serial (kubeadm uses random serials too; rcgen's default
/// repeats whenever a key is reused).
pub fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    random_fill(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The CA that signs: its certificate (DER) and private key.
pub struct Signer<'a> {
    /// DER of the CA certificate whose key is `key`.
    pub cert_der: &'a [u8],
    /// The CA's private key.
    pub key: &'a KeyPair,
}

/// The validity window a renewal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// NotBefore (now − 5 min, like kubeadm ≥ 1.31, to absorb clock skew).
    pub not_before: OffsetDateTime,
    /// NotAfter.
    pub not_after: OffsetDateTime,
    /// NotAfter was cut to the CA's NotAfter.
    pub capped: bool,
}

/// kubeadm's backdate for NotBefore.
pub const BACKDATE: Duration = Duration::minutes(5);

/// The window of a certificate renewed at `now` for `days`, capped at the CA's NotAfter.
pub fn validity(now: OffsetDateTime, days: u32, ca_not_after: OffsetDateTime) -> Validity {
    let wanted = now + Duration::days(i64::from(days));
    let not_after = wanted.min(ca_not_after);
    Validity {
        not_before: now - BACKDATE,
        not_after: not_after.replace_nanosecond(0).unwrap_or(not_after),
        capped: wanted > ca_not_after,
    }
}

const OID_SKI: &str = "2.5.29.14";
const OID_AKI: &str = "2.5.29.35";

fn dn_type(oid: &str, components: Vec<u64>) -> DnType {
    match oid {
        "2.5.4.3" => DnType::CommonName,
        "2.5.4.10" => DnType::OrganizationName,
        "2.5.4.11" => DnType::OrganizationalUnitName,
        "2.5.4.6" => DnType::CountryName,
        "2.5.4.7" => DnType::LocalityName,
        "2.5.4.8" => DnType::StateOrProvinceName,
        _ => DnType::CustomDnType(components),
    }
}

/// Rebuilds the subject, keeping attribute order and string types.
fn copy_subject(cert: &X509Certificate<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    let mut seen = Vec::new();
    for rdn in cert.subject().iter() {
        if rdn.iter().count() != 1 {
            return Err(
                "the subject has a multi-valued RDN, which cannot be copied faithfully".into(),
            );
        }
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            if seen.contains(&oid) {
                return Err(format!(
                    "the subject repeats attribute {oid} (e.g. two O= values), which cannot be copied faithfully"
                ));
            }
            seen.push(oid.clone());
            let components: Vec<u64> = attr
                .attr_type()
                .iter()
                .ok_or_else(|| format!("subject attribute {oid} has an oversized OID"))?
                .collect();
            let value = attr.attr_value();
            let text = || {
                attr.as_str()
                    .map(str::to_string)
                    .map_err(|_| format!("subject attribute {oid} is not a readable string"))
            };
            let dn_value = match value.tag() {
                Tag::PrintableString => DnValue::PrintableString(
                    text()?
                        .try_into()
                        .map_err(|_| format!("bad PrintableString in {oid}"))?,
                ),
                Tag::Utf8String => DnValue::Utf8String(text()?),
                Tag::Ia5String => DnValue::Ia5String(
                    text()?
                        .try_into()
                        .map_err(|_| format!("bad IA5String in {oid}"))?,
                ),
                other => {
                    return Err(format!(
                        "subject attribute {oid} uses string type {other:?}, which cannot be copied faithfully"
                    ));
                }
            };
            dn.push(dn_type(&oid, components), dn_value);
        }
    }
    Ok(dn)
}

/// Builds the re-issued certificate (DER). `public_key` is the subject's (new or kept) key.
pub fn reissue(
    old_der: &[u8],
    public_key_spki: &[u8],
    signer: &Signer<'_>,
    validity: Validity,
) -> Result<Vec<u8>, String> {
    let (_, old) = X509Certificate::from_der(old_der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let (_, ca) = X509Certificate::from_der(signer.cert_der)
        .map_err(|e| format!("cannot parse the CA certificate: {e}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = copy_subject(&old)?;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    params.is_ca = rcgen::IsCa::NoCa;
    let ca_has_ski = ca
        .extensions()
        .iter()
        .any(|e| e.oid.to_id_string() == OID_SKI);
    params.use_authority_key_identifier_extension = ca_has_ski;
    let mut had_ski = false;
    for ext in old.extensions() {
        let oid = ext.oid.to_id_string();
        if oid == OID_AKI {
            continue; // rewritten from the CA's SKI by rcgen
        }
        if oid == OID_SKI {
            had_ski = true;
            continue; // recomputed for the new key below
        }
        let components: Vec<u64> = ext
            .oid
            .iter()
            .ok_or_else(|| format!("extension {oid} has an oversized OID"))?
            .collect();
        let mut custom = CustomExtension::from_oid_content(&components, ext.value.to_vec());
        custom.set_criticality(ext.critical);
        params.custom_extensions.push(custom);
    }
    let spki = SubjectPublicKeyInfo::from_der(public_key_spki)
        .map_err(|e| format!("bad subject public key: {e}"))?;
    if had_ski {
        // RFC 5280 method 1: SHA-1 of the subjectPublicKey bits (what Go and openssl use).
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(public_key_spki)
            .map_err(|e| format!("bad subject public key: {e}"))?;
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            &parsed.subject_public_key.data,
        );
        let mut content = vec![0x04, digest.as_ref().len() as u8];
        content.extend_from_slice(digest.as_ref());
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 14], content));
    }
    sign(&params, &spki, signer)
}

/// Signs `params` for the subject key `spki` with `signer` (DER).
pub fn sign(
    params: &CertificateParams,
    spki: &SubjectPublicKeyInfo,
    signer: &Signer<'_>,
) -> Result<Vec<u8>, String> {
    let issuer = Issuer::from_ca_cert_der(&signer.cert_der.into(), signer.key)
        .map_err(|e| format!("cannot use the CA certificate: {e}"))?;
    let cert = params
        .signed_by(spki, &issuer)
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok(cert.der().to_vec())
}

/// Checks that `new` copies `old` faithfully: the same subject bytes and the same extensions
/// (OID, criticality, value, order) apart from the key identifiers.
pub fn check_faithful(old_der: &[u8], new_der: &[u8]) -> Result<(), String> {
    let (_, old) =
        X509Certificate::from_der(old_der).map_err(|e| format!("old certificate: {e}"))?;
    let (_, new) =
        X509Certificate::from_der(new_der).map_err(|e| format!("new certificate: {e}"))?;
    if old.subject().as_raw() != new.subject().as_raw() {
        return Err(format!(
            "the new subject ({}) differs from the old ({})",
            new.subject(),
            old.subject()
        ));
    }
    let copied = |c: &X509Certificate<'_>| -> Vec<(String, bool, Vec<u8>)> {
        c.extensions()
            .iter()
            .filter(|e| {
                let oid = e.oid.to_id_string();
                oid != OID_SKI && oid != OID_AKI
            })
            .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
            .collect()
    };
    if copied(&old) != copied(&new) {
        return Err("the new certificate's extensions differ from the old one's".into());
    }
    Ok(())
}
