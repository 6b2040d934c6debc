//! `Content-Encoding: gzip` and `deflate` request bodies (what the Python, Go and JS OTLP
//! exporters can send), inflated with a cap on the decompressed size, so a small body cannot
//! unpack into gigabytes (413).
//!
//! Inflating is miniz_oxide's. The gzip wrapper around it (RFC 1952: a 10-byte header with
//! optional fields, then a CRC-32 and length trailer) and the CRC-32 are ours: miniz_oxide
//! has neither, and flate2, which has both, would add a 16 KB CRC table and its stream
//! machinery for what is one call here (DESIGN §7: dispatch <= 4 MiB).

use std::borrow::Cow;

use super::{Limits, Refusal};

/// The body's encoding, from `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    /// From a `Content-Encoding` value (lowercase); `Err` holds one we do not support.
    pub(super) fn from_header(value: &str) -> Result<Encoding, String> {
        match value {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            other => Err(other.to_string()),
        }
    }
}

/// Decompresses a request body (as is when it is not compressed).
pub(super) fn inflate<'a>(
    encoding: Encoding,
    body: &'a [u8],
    limits: &Limits,
) -> Result<Cow<'a, [u8]>, Refusal> {
    Ok(match encoding {
        Encoding::Identity => Cow::Borrowed(body),
        Encoding::Gzip => Cow::Owned(gunzip(body, limits)?),
        Encoding::Deflate => {
            // HTTP's `deflate` is zlib-wrapped; some clients send raw deflate instead.
            use miniz_oxide::inflate::{
                decompress_to_vec_with_limit, decompress_to_vec_zlib_with_limit,
            };
            let max = limits.max_decoded_bytes;
            let result = if looks_like_zlib(body) {
                decompress_to_vec_zlib_with_limit(body, max)
            } else {
                decompress_to_vec_with_limit(body, max)
            };
            Cow::Owned(result.map_err(|e| inflate_refusal(&e, "deflate", limits))?)
        }
    })
}

fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn inflate_refusal(
    error: &miniz_oxide::inflate::DecompressError,
    name: &str,
    limits: &Limits,
) -> Refusal {
    if error.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput {
        Refusal::new(
            413,
            format!(
                "the body is over {} bytes once decompressed",
                limits.max_decoded_bytes
            ),
        )
    } else {
        Refusal::new(400, format!("the body is not valid {name}: {error}"))
    }
}

/// A gzip member (RFC 1952) as exporters send it: one member, its CRC-32 and length
/// checked. (Several concatenated members, which no OTLP exporter sends, are refused.)
fn gunzip(body: &[u8], limits: &Limits) -> Result<Vec<u8>, Refusal> {
    let bad = |why: &str| Refusal::new(400, format!("the body is not valid gzip: {why}"));
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let [0x1f, 0x8b, 8, flags, _, _, _, _, _, _, rest @ ..] = body else {
        return Err(bad("no gzip header"));
    };
    let mut rest = rest;
    if flags & FEXTRA != 0 {
        let [low, high, tail @ ..] = rest else {
            return Err(bad("truncated header"));
        };
        let length = usize::from(*low) | usize::from(*high) << 8;
        rest = tail.get(length..).ok_or_else(|| bad("truncated header"))?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("truncated header"))?;
            rest = &rest[end + 1..];
        }
    }
    if flags & FHCRC != 0 {
        rest = rest.get(2..).ok_or_else(|| bad("truncated header"))?;
    }
    let split = rest.len().checked_sub(8).ok_or_else(|| bad("truncated"))?;
    let (deflated, trailer) = rest.split_at(split);
    let out =
        miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, limits.max_decoded_bytes)
            .map_err(|e| inflate_refusal(&e, "gzip", limits))?;
    let word = |at: usize| {
        u32::from_le_bytes([
            trailer[at],
            trailer[at + 1],
            trailer[at + 2],
            trailer[at + 3],
        ])
    };
    if word(0) != crc32(&out) || word(4) != out.len() as u32 {
        return Err(bad("checksum or length mismatch"));
    }
    Ok(out)
}

/// CRC-32 (IEEE), byte at a time: gzip bodies are small, and a 1 KB table built at compile
/// time beats a dependency's 16 KB one.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::test_requests::{exchange, post, request, span, status_of};
    use crate::listen::LIMITS;
    use prost::Message;
    use std::io::Write;

    #[test]
    fn gzip_and_deflate_bodies_are_inflated() {
        let body = request(vec![span("a", 1)]).encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&body).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&body).unwrap();
        let raw = raw.finish().unwrap();
        for (encoding, bytes) in [("gzip", &gz), ("deflate", &zlib), ("deflate", &raw)] {
            let extra = format!("Content-Encoding: {encoding}\r\n");
            let (out, received, _) = exchange(&post("application/x-protobuf", &extra, bytes));
            assert!(out.starts_with("HTTP/1.1 200"), "{encoding}: {out}");
            assert_eq!(received.spans, 1, "{encoding}");
        }
        let (out, _, _) = exchange(&post(
            "application/x-protobuf",
            "Content-Encoding: gzip\r\n",
            &body,
        ));
        assert_eq!(status_of(&out), 400, "not gzip at all: {out}");
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn gzip_headers_with_optional_fields_and_bad_trailers() {
        let body = request(vec![span("a", 1)]).encode_to_vec();
        let mut named = flate2::GzBuilder::new()
            .filename("spans.pb")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        named.write_all(&body).unwrap();
        let named = named.finish().unwrap();
        assert_eq!(gunzip(&named, &LIMITS).unwrap(), body);
        let mut corrupt = named.clone();
        let at = corrupt.len() - 8;
        corrupt[at] ^= 1;
        assert!(gunzip(&corrupt, &LIMITS)
            .unwrap_err()
            .message
            .contains("checksum"));
        for truncated in [
            &named[..5],
            &named[..named.len() - 3],
            &[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0, 9, 0][..],
        ] {
            assert_eq!(gunzip(truncated, &LIMITS).unwrap_err().status, 400);
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_decompressed_cap() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; LIMITS.max_decoded_bytes + 1])
            .unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < LIMITS.max_body_bytes);
        let (out, received, _) = exchange(&post(
            "application/x-protobuf",
            "Content-Encoding: gzip\r\n",
            &gz,
        ));
        assert_eq!(status_of(&out), 413, "{out}");
        assert_eq!(received.refused, 1);
    }
}
