//! Layer blobs: a tar stream compressed or not, with the two digests an image needs: the
//! diffID (sha256 of the uncompressed tar, in the config's `rootfs.diff_ids`) and the blob
//! digest (sha256 of the bytes stored, in the manifest).

use std::io::{self, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::ImageError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the output name: `.tar`, `.tar.gz` / `.tgz`, `.tar.zst`.
    pub fn from_name(path: &Path) -> Result<Compression, ImageError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Ok(Compression::Gzip)
        } else if name.ends_with(".tar.zst") || name.ends_with(".tar.zstd") {
            Ok(Compression::Zstd)
        } else if name.ends_with(".tar") {
            Ok(Compression::None)
        } else {
            Err(ImageError::OutputName(path.to_path_buf()))
        }
    }

    /// The OCI media type of a layer blob compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// `sha256:HEX` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:HEX` of the blob as stored.
    pub digest: String,
    /// Bytes stored.
    pub size: u64,
}

/// A writer that hashes and counts what goes through it.
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `sha256:HEX`, the byte count, and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (
            sha256_id(self.hasher.finalize().as_slice()),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `sha256:` and the lower-case hex of a digest.
pub fn sha256_id(digest: &[u8]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The compressor between the tar stream and the stored blob. Both compressors are run
/// single-threaded with fixed settings and no timestamps, so equal input gives equal bytes.
enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn new(out: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(out),
            // GzBuilder writes mtime 0 and no file name: the header is the same every time.
            Compression::Gzip => {
                Encoder::Gzip(flate2::GzBuilder::new().write(out, flate2::Compression::default()))
            }
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

/// The writer a layer's tar stream goes into: hashes the tar, compresses it, hashes and
/// writes the blob to `out`.
pub struct BlobWriter<W: Write> {
    tar: Hashing<Encoder<Hashing<W>>>,
}

impl<W: Write> BlobWriter<W> {
    pub fn new(out: W, compression: Compression) -> io::Result<Self> {
        Ok(BlobWriter {
            tar: Hashing::new(Encoder::new(Hashing::new(out), compression)?),
        })
    }

    /// Ends the compressed stream; returns the digests and `out`.
    pub fn finish(self) -> io::Result<(Digests, W)> {
        let (diff_id, _, encoder) = self.tar.finish();
        let (digest, size, out) = encoder.finish()?.finish();
        Ok((
            Digests {
                diff_id,
                digest,
                size,
            },
            out,
        ))
    }
}

impl<W: Write> Write for BlobWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tar.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tar.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_of(data: &[u8]) -> String {
        sha256_id(Sha256::digest(data).as_slice())
    }

    fn blob(data: &[u8], c: Compression) -> (Digests, Vec<u8>) {
        let mut w = BlobWriter::new(Vec::new(), c).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn digests_are_of_the_tar_and_of_the_blob() {
        let data = b"layer data ".repeat(1000);
        let (plain, bytes) = blob(&data, Compression::None);
        assert_eq!(bytes, data);
        assert_eq!(plain.diff_id, plain.digest);
        assert_eq!(plain.diff_id, sha256_of(&data));
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for c in [Compression::Gzip, Compression::Zstd] {
            let (d, bytes) = blob(&data, c);
            assert_eq!(d.diff_id, plain.diff_id, "{c:?}");
            assert_eq!(d.digest, sha256_of(&bytes), "{c:?}");
            assert_eq!(d.size, bytes.len() as u64);
            assert!(bytes.len() < data.len(), "{c:?} compresses");
            // The same input gives the same blob.
            assert_eq!(blob(&data, c).1, bytes, "{c:?}");
        }
        let (_, gz) = blob(&data, Compression::Gzip);
        let mut back = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, data);
        let (_, zst) = blob(&data, Compression::Zstd);
        assert_eq!(zstd::stream::decode_all(&zst[..]).unwrap(), data);
    }

    #[test]
    fn the_extension_picks_the_compression() {
        let c = |n: &str| Compression::from_name(Path::new(n));
        assert_eq!(c("/x/layer.tar").unwrap(), Compression::None);
        assert_eq!(c("layer.tar.gz").unwrap(), Compression::Gzip);
        assert_eq!(c("layer.tgz").unwrap(), Compression::Gzip);
        assert_eq!(c("layer.tar.zst").unwrap(), Compression::Zstd);
        let refused = c("layer.zip").unwrap_err().to_string();
        assert!(
            refused.contains("layer.zip: name the output LAYER.tar, LAYER.tar.gz"),
            "{refused}"
        );
    }
}
