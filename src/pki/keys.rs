//! Private keys: read any of the three PEM encodings kubeadm-era tools write, generate a fresh
//! key of the same algorithm and size, and write it back in the encoding the file had.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::pki::pem;

/// A key algorithm and size, as kubeadm's `encryptionAlgorithm` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// RSA with this modulus size in bits (2048, 3072 or 4096).
    Rsa(usize),
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyAlgorithm::Rsa(bits) => write!(f, "RSA-{bits}"),
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA-P256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA-P384"),
        }
    }
}

/// How a private key is wrapped in PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEncoding {
    /// `RSA PRIVATE KEY` (what kubeadm writes for RSA).
    Pkcs1,
    /// `EC PRIVATE KEY` (what kubeadm writes for ECDSA).
    Sec1,
    /// `PRIVATE KEY`.
    Pkcs8,
}

impl KeyEncoding {
    /// The PEM label of this encoding.
    pub fn label(self) -> &'static str {
        match self {
            KeyEncoding::Pkcs1 => "RSA PRIVATE KEY",
            KeyEncoding::Sec1 => "EC PRIVATE KEY",
            KeyEncoding::Pkcs8 => "PRIVATE KEY",
        }
    }

    fn from_label(label: &str) -> Option<KeyEncoding> {
        match label {
            "RSA PRIVATE KEY" => Some(KeyEncoding::Pkcs1),
            "EC PRIVATE KEY" => Some(KeyEncoding::Sec1),
            "PRIVATE KEY" => Some(KeyEncoding::Pkcs8),
            _ => None,
        }
    }
}

const OID_EC_P256: &str = "1.2.840.10045.3.1.7";
const OID_EC_P384: &str = "1.3.132.0.34";

/// The algorithm of a certificate's public key (what a fresh key must match).
pub fn algorithm_of_spki(spki_der: &[u8]) -> Result<KeyAlgorithm, String> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| format!("bad public key info: {e}"))?;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(KeyAlgorithm::Rsa(rsa.key_size())),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_EC_P256 => Ok(KeyAlgorithm::EcdsaP256),
                OID_EC_P384 => Ok(KeyAlgorithm::EcdsaP384),
                other => Err(format!("unsupported elliptic curve {other}")),
            }
        }
        Ok(_) => Err(format!(
            "unsupported public key algorithm {}",
            spki.algorithm.algorithm.to_id_string()
        )),
        Err(e) => Err(format!("cannot parse public key: {e}")),
    }
}

/// A private key as read from a file or a kubeconfig.
#[derive(Debug)]
pub struct PrivateKey {
    /// The usable key.
    pub pair: KeyPair,
    /// How the file encoded it.
    pub encoding: KeyEncoding,
    /// The exact PEM text read (written back unchanged when keys are reused).
    pub pem: Vec<u8>,
}

/// Reads the first private key of a PEM text.
pub fn parse_private_key(data: &[u8]) -> Result<PrivateKey, String> {
    let blocks = pem::parse(data)?;
    let block = blocks
        .iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or("no PRIVATE KEY block")?;
    let encoding = KeyEncoding::from_label(&block.label)
        .ok_or_else(|| format!("unsupported key type {:?}", block.label))?;
    let text = pem::encode(&block.label, &block.der);
    let pair =
        KeyPair::from_pem(&text).map_err(|e| format!("unusable {} key: {e}", block.label))?;
    Ok(PrivateKey {
        pair,
        encoding,
        pem: data.to_vec(),
    })
}

/// True when `pair` is the private half of the public key in `spki_der`.
pub fn matches_spki(pair: &KeyPair, spki_der: &[u8]) -> bool {
    match SubjectPublicKeyInfo::from_der(spki_der) {
        Ok((_, spki)) => spki.subject_public_key.data.as_ref() == pair.public_key_raw(),
        Err(_) => false,
    }
}

/// True when `key_pem` is the private key of one certificate of `bundle` (a CA file may hold
/// several during a rotation).
pub fn key_matches_bundle(key_pem: &[u8], bundle: &[crate::pki::cert::CertFacts]) -> bool {
    parse_private_key(key_pem)
        .is_ok_and(|k| bundle.iter().any(|c| matches_spki(&k.pair, &c.spki_der)))
}

/// True when `pub_pem` (PEM `PUBLIC KEY`, as `sa.pub`) is the public half of `key_pem`.
pub fn public_matches(pub_pem: &[u8], key_pem: &[u8]) -> bool {
    let Ok(blocks) = pem::parse(pub_pem) else {
        return false;
    };
    let Ok(key) = parse_private_key(key_pem) else {
        return false;
    };
    blocks
        .iter()
        .any(|b| b.label == "PUBLIC KEY" && matches_spki(&key.pair, &b.der))
}

/// A fresh random key of `algorithm`.
pub fn generate(algorithm: KeyAlgorithm) -> Result<KeyPair, String> {
    let result = match algorithm {
        KeyAlgorithm::Rsa(bits) => {
            let size = match bits {
                2048 => RsaKeySize::_2048,
                3072 => RsaKeySize::_3072,
                4096 => RsaKeySize::_4096,
                other => {
                    return Err(format!(
                        "cannot generate an RSA-{other} key (2048, 3072 or 4096 only)"
                    ));
                }
            };
            KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, size)
        }
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
    };
    result.map_err(|e| format!("key generation failed: {e}"))
}

/// PEM text of `pair` in `encoding`. `algorithm` tells which curve a SEC1 key names.
pub fn encode(
    pair: &KeyPair,
    algorithm: KeyAlgorithm,
    encoding: KeyEncoding,
) -> Result<String, String> {
    let pkcs8 = pair.serialize_der();
    let der = match encoding {
        KeyEncoding::Pkcs8 => pkcs8,
        KeyEncoding::Pkcs1 => {
            if !matches!(algorithm, KeyAlgorithm::Rsa(_)) {
                return Err("PKCS#1 holds RSA keys only".into());
            }
            pkcs8_inner_key(&pkcs8)?
        }
        KeyEncoding::Sec1 => {
            let curve = match algorithm {
                KeyAlgorithm::EcdsaP256 => OID_P256_DER,
                KeyAlgorithm::EcdsaP384 => OID_P384_DER,
                KeyAlgorithm::Rsa(_) => return Err("SEC1 holds EC keys only".into()),
            };
            sec1_with_params(&pkcs8_inner_key(&pkcs8)?, curve, pair.public_key_raw())?
        }
    };
    Ok(pem::encode(encoding.label(), &der))
}

// DER of the curve OIDs (tag 06 included).
const OID_P256_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384_DER: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// One DER element: (tag, content, total length consumed).
fn der_element(data: &[u8]) -> Result<(u8, &[u8], usize), String> {
    let bad = || "malformed DER in private key".to_string();
    let tag = *data.first().ok_or_else(bad)?;
    let first = *data.get(1).ok_or_else(bad)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let bytes = data.get(2..2 + n).ok_or_else(bad)?;
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            2 + n,
        )
    };
    let content = data.get(header..header + len).ok_or_else(bad)?;
    Ok((tag, content, header + len))
}

/// One DER element: `tag`, its definite length, `content` (shared by the key encoder and the
/// certificate profiles, which build their extensions by hand).
pub(crate) fn der_encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The privateKey OCTET STRING of a PKCS#8 PrivateKeyInfo (a PKCS#1 or SEC1 structure).
fn pkcs8_inner_key(pkcs8: &[u8]) -> Result<Vec<u8>, String> {
    let (tag, seq, _) = der_element(pkcs8)?;
    if tag != 0x30 {
        return Err("PKCS#8 key is not a SEQUENCE".into());
    }
    let (_, _, n1) = der_element(seq)?; // version
    let (_, _, n2) = der_element(&seq[n1..])?; // algorithm
    let (tag, key, _) = der_element(&seq[n1 + n2..])?;
    if tag != 0x04 {
        return Err("PKCS#8 privateKey is not an OCTET STRING".into());
    }
    Ok(key.to_vec())
}

/// Rebuilds an ECPrivateKey so it carries `[0] parameters` and `[1] publicKey`, as Go and openssl
/// write `EC PRIVATE KEY` files.
fn sec1_with_params(sec1: &[u8], curve_oid: &[u8], public: &[u8]) -> Result<Vec<u8>, String> {
    let (tag, seq, _) = der_element(sec1)?;
    if tag != 0x30 {
        return Err("EC key is not a SEQUENCE".into());
    }
    let (_, _, n1) = der_element(seq)?; // version
    let (tag, _, n2) = der_element(&seq[n1..])?; // privateKey
    if tag != 0x04 {
        return Err("EC privateKey is not an OCTET STRING".into());
    }
    let mut content = seq[..n1 + n2].to_vec();
    content.extend(der_encode(0xa0, curve_oid));
    let mut bits = vec![0u8];
    bits.extend_from_slice(public);
    content.extend(der_encode(0xa1, &der_encode(0x03, &bits)));
    Ok(der_encode(0x30, &content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_round_trips_for_every_algorithm() {
        for algorithm in [
            KeyAlgorithm::Rsa(2048),
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
        ] {
            let pair = generate(algorithm).unwrap();
            let encodings: &[KeyEncoding] = match algorithm {
                KeyAlgorithm::Rsa(_) => &[KeyEncoding::Pkcs1, KeyEncoding::Pkcs8],
                _ => &[KeyEncoding::Sec1, KeyEncoding::Pkcs8],
            };
            for &encoding in encodings {
                let text = encode(&pair, algorithm, encoding).unwrap();
                assert!(text.starts_with(&format!("-----BEGIN {}-----", encoding.label())));
                let back = parse_private_key(text.as_bytes()).unwrap();
                assert_eq!(back.encoding, encoding);
                assert_eq!(back.pair.public_key_raw(), pair.public_key_raw());
            }
        }
    }
}
