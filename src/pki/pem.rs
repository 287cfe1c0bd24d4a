//! A strict PEM reader: every block found, with its label, and precise errors for the ways real
//! files break (truncated copy-paste, a missing END line, bad base64).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One `-----BEGIN <label>-----` … `-----END <label>-----` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The label, e.g. `CERTIFICATE`, `RSA PRIVATE KEY`.
    pub label: String,
    /// The decoded DER bytes.
    pub der: Vec<u8>,
}

/// Parses every PEM block in `data`. Text outside blocks is ignored, as openssl does.
pub fn parse(data: &[u8]) -> Result<Vec<Block>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not PEM text (binary data)".to_string())?;
    let mut blocks = Vec::new();
    let mut current: Option<(String, usize, String)> = None;
    for (index, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim();
        let line_no = index + 1;
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|s| s.strip_suffix("-----"))
        {
            if let Some((open, at, _)) = &current {
                return Err(format!(
                    "PEM block {open} opened at line {at} has no END line before line {line_no}"
                ));
            }
            current = Some((label.to_string(), line_no, String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|s| s.strip_suffix("-----"))
        {
            let Some((open, at, body)) = current.take() else {
                return Err(format!("PEM END {label} at line {line_no} without a BEGIN"));
            };
            if open != label {
                return Err(format!(
                    "PEM block {open} opened at line {at} is closed as {label} at line {line_no}"
                ));
            }
            let der = STANDARD
                .decode(body.as_bytes())
                .map_err(|e| format!("PEM block {open} at line {at}: bad base64: {e}"))?;
            if der.is_empty() {
                return Err(format!("PEM block {open} at line {at} is empty"));
            }
            blocks.push(Block { label: open, der });
        } else if let Some((_, _, body)) = current.as_mut() {
            // RFC 1421 headers (Proc-Type, DEK-Info) mean an encrypted key.
            if line.contains(':') {
                return Err(format!(
                    "line {line_no}: PEM headers ({line}) are not supported (encrypted key?)"
                ));
            }
            body.push_str(line);
        }
    }
    if let Some((open, at, _)) = current {
        return Err(format!(
            "PEM block {open} opened at line {at} is truncated (no END line)"
        ));
    }
    Ok(blocks)
}

/// Encodes DER as PEM with 64-column lines, the way Go and openssl write it.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so any chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_multiple_blocks() {
        let a = encode("CERTIFICATE", &[1, 2, 3]);
        let b = encode("RSA PRIVATE KEY", &[4; 100]);
        let blocks = parse(format!("junk\n{a}between\n{b}").as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(blocks[0].der, vec![1, 2, 3]);
        assert_eq!(blocks[1].der, vec![4; 100]);
    }

    #[test]
    fn truncated_block_is_an_error() {
        let a = encode("CERTIFICATE", &[7; 200]);
        let cut = &a[..a.len() / 2];
        let err = parse(cut.as_bytes()).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn bad_base64_is_an_error() {
        let err =
            parse(b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(err.contains("base64"), "{err}");
    }

    #[test]
    fn binary_is_an_error() {
        assert!(parse(&[0xff, 0xfe, 0x00]).is_err());
    }
}
