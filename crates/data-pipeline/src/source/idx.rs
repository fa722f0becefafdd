//! IDX files, the format MNIST and Fashion-MNIST ship in (gzipped or not).
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of
//! dimensions, then each dimension as a big-endian u32, then the data.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most bytes a gzipped IDX file may expand to: 2 GiB (the largest IDX
/// file in use, EMNIST ByClass's training images, is 550 MB). A plain file
/// is bounded by its size on disk; a gzipped one only by this and its
/// header.
pub const MAX_GUNZIPPED_BYTES: u64 = 1 << 31;

/// Reads an IDX file, transparently gunzipping it when it starts with the
/// gzip magic; decompression stops where the header says the data ends
/// (and at [`MAX_GUNZIPPED_BYTES`]).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    gunzip_if_needed(path, raw)
}

/// `raw` itself, or, when it starts with the gzip magic, the IDX bytes it
/// decompresses to. Decompression is bounded by the IDX header: the header
/// is decompressed first, dimensions that need more than
/// [`MAX_GUNZIPPED_BYTES`] are an error before any data is read, and a
/// stream that holds more data than its dimensions describe is an error as
/// soon as the first byte too many comes out (a few hundred kilobytes of
/// gzip can expand to gigabytes).
pub(crate) fn gunzip_if_needed(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut z = GzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    let mut read_up_to = |out: &mut Vec<u8>, n: u64| {
        (&mut z)
            .take(n)
            .read_to_end(out)
            .map_err(|e| Error::Format {
                path: path.to_path_buf(),
                format: "gzip",
                reason: e.to_string(),
            })
    };
    read_up_to(&mut out, 4)?;
    if out.len() == 4 {
        let ndims = u64::from(out[3]);
        read_up_to(&mut out, 4 * ndims)?;
    }
    let header = parse_header(path, &out)?;
    let total = header.len as u64 + header.data_len as u64;
    if total > MAX_GUNZIPPED_BYTES {
        return Err(Error::Format {
            path: path.to_path_buf(),
            format: "IDX",
            reason: format!(
                "dimensions {:?} need {} bytes of data, more than the {} GiB a gzipped IDX file \
                 may expand to (gunzip it to read it as a plain file)",
                header.dims,
                header.data_len,
                MAX_GUNZIPPED_BYTES >> 30
            ),
        });
    }
    // One byte more than the dimensions need: a longer stream is an error
    // without decompressing the rest, and a stream that ends exactly there
    // has its gzip trailer (CRC and length) checked.
    read_up_to(&mut out, header.data_len as u64 + 1)?;
    if out.len() as u64 > total {
        return Err(Error::Format {
            path: path.to_path_buf(),
            format: "IDX",
            reason: format!(
                "dimensions {:?} need {} bytes of data, and the gzipped stream holds more",
                header.dims, header.data_len
            ),
        });
    }
    Ok(out)
}

/// The header of an IDX file: its dimensions, its length in bytes and the
/// bytes of data the dimensions need.
struct Header {
    dims: Vec<usize>,
    len: usize,
    data_len: usize,
}

fn format_error(path: &Path, reason: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "IDX",
        reason,
    }
}

/// Parses the header at the start of `bytes` (which may stop right after it).
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let bad = |reason: String| format_error(path, reason);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("missing the 00 00 magic prefix".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type 0x{:02x}; only 0x08 (unsigned byte) is supported",
            bytes[2]
        )));
    }
    let ndims = usize::from(bytes[3]);
    let len = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < len {
        return Err(bad(format!("header of {ndims} dimensions is truncated")));
    }
    let dims: Vec<usize> = bytes[4..len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let Some(data_len) = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(bad(format!(
            "dimensions {dims:?} describe more bytes than memory holds"
        )));
    };
    Ok(Header {
        dims,
        len,
        data_len,
    })
}

/// Parses IDX bytes; `path` only names the source in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let Header {
        dims,
        len,
        data_len,
    } = parse_header(path, bytes)?;
    let data = &bytes[len..];
    if data.len() != data_len {
        return Err(format_error(
            path,
            format!(
                "dimensions {dims:?} need {data_len} bytes of data, the file has {}",
                data.len()
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

/// Reads an IDX file (gzipped or not).
pub fn read(path: &Path) -> Result<IdxArray> {
    parse(path, &read_maybe_gz(path)?)
}

/// Writes IDX bytes for an unsigned-byte array (used by tests and tools).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = encode(&[2, 3, 4], &data);
        let plain = dir.path().join("x-idx3-ubyte");
        std::fs::write(&plain, &bytes).unwrap();
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&bytes).unwrap();
        let zipped = dir.path().join("x-idx3-ubyte.gz");
        std::fs::write(&zipped, gz.finish().unwrap()).unwrap();
        for p in [plain, zipped] {
            let a = read(&p).unwrap();
            assert_eq!(a.dims, [2, 3, 4]);
            assert_eq!(a.data, data);
        }
    }

    #[test]
    fn rejects_bad_headers_and_lengths_naming_the_file() {
        let p = Path::new("labels.idx");
        for (bytes, needle) in [
            (vec![1, 0, 8, 1, 0, 0, 0, 1, 5], "magic"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 5], "0x0d"),
            (vec![0, 0, 8, 2, 0, 0], "truncated"),
            (encode(&[3], &[1, 2]), "need 3 bytes"),
            (
                encode(&[0xffff_ffff; 3], &[1]),
                "more bytes than memory holds",
            ),
        ] {
            let err = parse(p, &bytes).unwrap_err().to_string();
            assert!(err.contains("labels.idx") && err.contains(needle), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let bad_gz = dir.path().join("bad.gz");
        std::fs::write(&bad_gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let err = read(&bad_gz).unwrap_err().to_string();
        assert!(err.contains("bad.gz") && err.contains("gzip"), "{err}");
    }

    fn gzip(parts: &[&[u8]]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        for part in parts {
            gz.write_all(part).unwrap();
        }
        gz.finish().unwrap()
    }

    /// A gzip bomb: 200 MB of zeros (about 200 KB of gzip) after a header
    /// that asks for 1,568 bytes is rejected at byte 1,569, and a header
    /// that asks for 60 GB is rejected before any data is decompressed.
    #[test]
    fn gzip_bombs_are_rejected_before_they_expand() {
        let p = Path::new("bomb-idx3-ubyte.gz");
        let zeros = vec![0u8; 1 << 20];
        let mut parts: Vec<&[u8]> = Vec::new();
        let header = encode(&[2, 28, 28], &[]);
        parts.push(&header);
        parts.extend(std::iter::repeat_n(&zeros[..], 200));
        let bomb = gzip(&parts);
        assert!(bomb.len() < 1 << 20, "{} bytes of gzip", bomb.len());
        let err = gunzip_if_needed(p, bomb).unwrap_err().to_string();
        assert!(
            err.contains("bomb-idx3-ubyte.gz")
                && err.contains("need 1568 bytes")
                && err.contains("the gzipped stream holds more"),
            "{err}"
        );

        let huge = encode(&[60_000, 1000, 1000], &[]);
        let err = gunzip_if_needed(p, gzip(&[&huge, &zeros]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[60000, 1000, 1000]")
                && err.contains("60000000000 bytes")
                && err.contains("gunzip it"),
            "{err}"
        );
        // Not IDX at all: only the first four bytes are decompressed.
        let err = gunzip_if_needed(p, gzip(&[b"PK\x03\x04", &zeros]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic"), "{err}");
    }

    /// Reading no further than the data still checks the gzip trailer.
    #[test]
    fn a_corrupt_gzip_trailer_is_still_an_error() {
        let p = Path::new("x.gz");
        let bytes = encode(&[3], &[1, 2, 3]);
        let mut gz = gzip(&[&bytes]);
        assert_eq!(gunzip_if_needed(p, gz.clone()).unwrap(), bytes);
        let crc = gz.len() - 8;
        gz[crc] ^= 0xff;
        let err = gunzip_if_needed(p, gz).unwrap_err().to_string();
        assert!(err.contains("x.gz") && err.contains("gzip"), "{err}");
        // Data cut short: the header's count is the error.
        let cut = gzip(&[&bytes[..bytes.len() - 1]]);
        let err = parse(p, &gunzip_if_needed(p, cut).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("need 3 bytes of data, the file has 2"),
            "{err}"
        );
    }
}
