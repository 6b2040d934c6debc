//! The `certificate_transfer` interface (DESIGN §3): v1's app `certificates`, v0's unit
//! `ca`, `certificate` and `chain`; only certificates kept, each once.

use super::decode_value;

/// Only the `CERTIFICATE` blocks of a PEM text, each written back as one PEM block
/// (base64 in 64-column lines): whatever else a provider put there (a private key, by
/// mistake) is never kept, and neither is a block that does not decode. Read as the TLS
/// setup reads the stored CA (`transport::pem_certificates`: ureq's PEM parser, from
/// rustls-pki-types), so what is kept is what will be trusted, and the same certificate
/// written differently (CRLF, other line lengths) is kept once.
fn certificate_blocks(text: &str) -> Vec<String> {
    crate::ship::transport::pem_certificates(text.as_bytes())
        .iter()
        .map(|certificate| pem_block(certificate.der()))
        .collect()
}

fn pem_block(der: &[u8]) -> String {
    use base64::Engine;
    let base64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(base64.len() + base64.len() / 64 + 56);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in base64.as_bytes().chunks(64) {
        // Base64 is ASCII: every chunk is text.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----");
    pem
}

/// Drops repeated certificates, keeping the first of each in order (a v0 `chain` usually
/// repeats `ca` or `certificate`, and every unit of the provider publishes the same CA).
pub(super) fn keep_first_of_each(pems: &mut Vec<String>) {
    let mut at = 0;
    while at < pems.len() {
        if pems[..at].contains(&pems[at]) {
            pems.remove(at);
        } else {
            at += 1;
        }
    }
}

/// PEM certificates from a v1 provider app databag (`certificates`).
pub fn certificates_v1(databag: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let Some(value) = databag.get("certificates").and_then(|v| v.as_str()) else {
        return Vec::new();
    };
    serde_json::from_str::<Vec<String>>(value)
        .unwrap_or_default()
        .iter()
        .flat_map(|pem| certificate_blocks(pem))
        .collect()
}

/// PEM certificates from a v0 provider unit databag (`ca`, `certificate`, `chain`).
pub fn certificates_v0(databag: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut pems = Vec::new();
    for key in ["ca", "certificate", "chain"] {
        let Some(value) = databag.get(key).and_then(|v| v.as_str()) else {
            continue;
        };
        let decoded = decode_value(value);
        // `chain` may be a JSON list of PEMs.
        match serde_json::from_str::<Vec<String>>(&decoded) {
            Ok(list) => pems.extend(list.iter().flat_map(|pem| certificate_blocks(pem))),
            Err(_) => pems.extend(certificate_blocks(&decoded)),
        }
    }
    keep_first_of_each(&mut pems);
    pems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn certificates_are_read_from_v1_and_v0_databags() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let v1 = map(
            &serde_json::json!({"certificates": serde_json::to_string(&[pem]).unwrap()})
                .to_string(),
        );
        assert_eq!(certificates_v1(&v1), [pem]);
        let raw = map(&serde_json::json!({"ca": pem, "certificate": "not a cert"}).to_string());
        assert_eq!(certificates_v0(&raw), [pem]);
        let encoded = map(
            &serde_json::json!({"chain": serde_json::to_string(&[pem, pem]).unwrap()}).to_string(),
        );
        assert_eq!(certificates_v0(&encoded), [pem]);
    }

    /// A real self-signed certificate, as PEM (64-column lines, LF, as most tools write it).
    fn certificate(name: &str) -> String {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        made.cert.pem().trim_end().to_string()
    }

    /// The DER of each certificate a PEM text holds, read as the TLS setup reads the
    /// stored CA.
    fn loaded(pem: &str) -> Vec<Vec<u8>> {
        crate::ship::transport::pem_certificates(pem.as_bytes())
            .iter()
            .map(|cert| cert.der().to_vec())
            .collect()
    }

    #[test]
    fn a_v0_chain_that_repeats_the_ca_keeps_each_certificate_once() {
        let (ca, leaf) = (certificate("ca"), certificate("leaf"));
        let chain = serde_json::to_string(&[&leaf, &ca]).unwrap();
        let bag =
            map(&serde_json::json!({"ca": ca, "certificate": leaf, "chain": chain}).to_string());
        assert_eq!(certificates_v0(&bag), [ca, leaf]);
    }

    #[test]
    fn the_same_certificate_written_differently_is_kept_once() {
        let ca = certificate("ca");
        let crlf = ca.replace('\n', "\r\n");
        let bag = map(&serde_json::json!({"ca": ca, "chain": crlf}).to_string());
        assert_eq!(certificates_v0(&bag).len(), 1);
    }

    #[test]
    fn what_is_kept_is_pem_the_tls_setup_loads_and_nothing_it_cannot() {
        let ca = certificate("ca");
        let der = loaded(&ca);
        // CRLF line ends and 76-column lines (as some tools write PEM), JSON-encoded.
        let body: String = ca.lines().filter(|l| !l.starts_with("-----")).collect();
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let rewrapped = format!(
            "-----BEGIN CERTIFICATE-----\r\n{}\r\n-----END CERTIFICATE-----\r\n",
            lines.join("\r\n")
        );
        let broken = "-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----";
        let bag = map(&serde_json::json!({
            "ca": serde_json::to_string(&rewrapped).unwrap(),
            "certificate": broken,
        })
        .to_string());
        let kept = certificates_v0(&bag);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(loaded(&kept[0]), der);
        assert!(kept[0].starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(kept[0].ends_with("\n-----END CERTIFICATE-----"));
    }

    #[test]
    fn only_certificate_blocks_are_kept() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let mixed =
            format!("-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n{pem}");
        let bag = map(&serde_json::json!({"ca": mixed}).to_string());
        assert_eq!(certificates_v0(&bag), [pem]);
        // A real key, which decodes, is not kept either.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let v1 = map(
            &serde_json::json!({"certificates": serde_json::to_string(&[format!("{key}{pem}")]).unwrap()})
                .to_string(),
        );
        assert_eq!(certificates_v1(&v1), [pem]);
    }
}
