//! The compression libraries of the compressor filter, as streaming coders ([`Recode`]): each
//! call codes one piece of a body and flushes it (zlib's `Z_SYNC_FLUSH`, brotli's and zstd's
//! flush), so that the peer can decode everything sent so far, as Envoy's compressors do.

use std::io::{self, Write as _};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

use crate::body::Recode;
use crate::config::{BrotliMode, BrotliParams, CompressorLibrary, GzipParams, ZstdParams};
use crate::stats::CompressorDirectionStats;

/// A fresh compressor for `library`, counting bytes in and out into `stats`.
pub fn compressor(
    library: &CompressorLibrary,
    stats: CompressorDirectionStats,
) -> io::Result<Box<dyn Recode>> {
    let coder: Box<dyn Coder> = match library {
        CompressorLibrary::Gzip(p) => Box::new(Gzip::new(p)),
        CompressorLibrary::Brotli(p) => Box::new(Brotli::new(p)),
        CompressorLibrary::Zstd(p) => Box::new(Zstd::new(p)?),
    };
    Ok(Box::new(Counted { coder, stats }))
}

/// A compressor without its stats.
trait Coder {
    fn code(&mut self, input: &[u8], last: bool) -> io::Result<Vec<u8>>;
}

/// Envoy counts a piece's bytes before and after it is compressed.
struct Counted {
    coder: Box<dyn Coder>,
    stats: CompressorDirectionStats,
}

impl Recode for Counted {
    fn data(&mut self, input: &[u8]) -> io::Result<Bytes> {
        self.count(input, false)
    }

    fn finish(&mut self) -> io::Result<Bytes> {
        self.count(&[], true)
    }
}

impl Counted {
    fn count(&mut self, input: &[u8], last: bool) -> io::Result<Bytes> {
        self.stats.total_uncompressed_bytes.add(input.len() as u64);
        let out = self.coder.code(input, last)?;
        self.stats.total_compressed_bytes.add(out.len() as u64);
        Ok(out.into())
    }
}

// === gzip ===

/// zlib's deflate with a gzip wrapper (zlib-rs).
struct Gzip {
    z: Compress,
    chunk: usize,
}

impl Gzip {
    fn new(p: &GzipParams) -> Self {
        Gzip {
            z: Compress::new_gzip(Compression::new(p.level), p.window_bits),
            chunk: p.chunk_size as usize,
        }
    }
}

impl Coder for Gzip {
    fn code(&mut self, mut input: &[u8], last: bool) -> io::Result<Vec<u8>> {
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        let mut out = Vec::with_capacity(self.chunk.max(input.len() / 2 + 64));
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(self.chunk);
            }
            let before = self.z.total_in();
            let status = self.z.compress_vec(input, &mut out, flush)?;
            input = &input[(self.z.total_in() - before) as usize..];
            match status {
                Status::StreamEnd => return Ok(out),
                // A flush is complete once zlib stops short of the space it had.
                _ if !last && input.is_empty() && out.len() < out.capacity() => return Ok(out),
                Status::BufError if input.is_empty() && !last => return Ok(out),
                _ => {}
            }
        }
    }
}

// === brotli ===

struct Brotli {
    w: Option<brotli::CompressorWriter<Vec<u8>>>,
}

impl Brotli {
    fn new(p: &BrotliParams) -> Self {
        let params = brotli::enc::BrotliEncoderParams {
            quality: p.quality as i32,
            lgwin: p.window_bits as i32,
            lgblock: p.input_block_bits as i32,
            disable_literal_context_modeling: i32::from(p.disable_literal_context_modeling),
            mode: match p.mode {
                BrotliMode::Generic => {
                    brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_GENERIC
                }
                BrotliMode::Text => {
                    brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT
                }
                BrotliMode::Font => {
                    brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_FONT
                }
            },
            ..Default::default()
        };
        Brotli {
            w: Some(brotli::CompressorWriter::with_params(
                Vec::new(),
                p.chunk_size as usize,
                &params,
            )),
        }
    }
}

impl Coder for Brotli {
    fn code(&mut self, input: &[u8], last: bool) -> io::Result<Vec<u8>> {
        let Some(w) = self.w.as_mut() else {
            return Ok(Vec::new());
        };
        w.write_all(input)?;
        if last {
            // Into its inner writer: the stream's last block.
            return Ok(self.w.take().map(|w| w.into_inner()).unwrap_or_default());
        }
        w.flush()?;
        Ok(std::mem::take(w.get_mut()))
    }
}

// === zstd ===

struct Zstd {
    w: zstd::stream::write::Encoder<'static, Vec<u8>>,
}

impl Zstd {
    fn new(p: &ZstdParams) -> io::Result<Self> {
        let mut w = zstd::stream::write::Encoder::new(Vec::new(), p.level)?;
        w.include_checksum(p.enable_checksum)?;
        if let Some(s) = zstd_strategy(p.strategy) {
            w.set_parameter(zstd::zstd_safe::CParameter::Strategy(s))?;
        }
        Ok(Zstd { w })
    }
}

/// `Zstd.Strategy` (1-9: `FAST` … `BTULTRA2`); 0 leaves it to the level.
fn zstd_strategy(n: u32) -> Option<zstd::zstd_safe::Strategy> {
    use zstd::zstd_safe::Strategy as S;
    Some(match n {
        1 => S::ZSTD_fast,
        2 => S::ZSTD_dfast,
        3 => S::ZSTD_greedy,
        4 => S::ZSTD_lazy,
        5 => S::ZSTD_lazy2,
        6 => S::ZSTD_btlazy2,
        7 => S::ZSTD_btopt,
        8 => S::ZSTD_btultra,
        9 => S::ZSTD_btultra2,
        _ => return None,
    })
}

impl Coder for Zstd {
    fn code(&mut self, input: &[u8], last: bool) -> io::Result<Vec<u8>> {
        self.w.write_all(input)?;
        if last {
            self.w.do_finish()?;
        } else {
            self.w.flush()?;
        }
        Ok(std::mem::take(self.w.get_mut()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn stats() -> CompressorDirectionStats {
        let store = shm_stats::Store::new();
        crate::stats::CompressorStats::new(&store, "t", "l", "x", false).response
    }

    fn libraries() -> [CompressorLibrary; 3] {
        [
            CompressorLibrary::Gzip(GzipParams {
                level: 6,
                window_bits: 12,
                chunk_size: 4096,
            }),
            CompressorLibrary::Brotli(BrotliParams {
                quality: 3,
                window_bits: 18,
                input_block_bits: 24,
                disable_literal_context_modeling: false,
                mode: BrotliMode::Generic,
                chunk_size: 4096,
            }),
            CompressorLibrary::Zstd(ZstdParams {
                level: 3,
                enable_checksum: true,
                strategy: 0,
                chunk_size: 4096,
            }),
        ]
    }

    fn decode(library: &CompressorLibrary, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match library {
            CompressorLibrary::Gzip(_) => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            CompressorLibrary::Brotli(_) => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            CompressorLibrary::Zstd(_) => {
                out = zstd::stream::decode_all(data).unwrap();
            }
        }
        out
    }

    /// What a decoder can read of an unfinished stream.
    fn decode_partial(library: &CompressorLibrary, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 1 << 16];
        let n = match library {
            CompressorLibrary::Gzip(_) => flate2::read::GzDecoder::new(data)
                .read(&mut out)
                .unwrap_or(0),
            CompressorLibrary::Brotli(_) => brotli::Decompressor::new(data, 4096)
                .read(&mut out)
                .unwrap_or(0),
            CompressorLibrary::Zstd(_) => zstd::stream::read::Decoder::new(data)
                .unwrap()
                .read(&mut out)
                .unwrap_or(0),
        };
        out.truncate(n);
        out
    }

    #[test]
    fn every_piece_is_flushed_and_the_whole_decodes() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("line {i} of the body\n").into_bytes())
            .collect();
        for lib in libraries() {
            let s = stats();
            let mut c = compressor(&lib, s.clone()).unwrap();
            let first = c.data(&text[..1000]).unwrap();
            // The first piece decodes on its own: nothing waits for the rest.
            assert_eq!(decode_partial(&lib, &first), &text[..1000], "{lib:?}");
            let mut all = first.to_vec();
            for piece in text[1000..].chunks(7000) {
                all.extend_from_slice(&c.data(piece).unwrap());
            }
            all.extend_from_slice(&c.finish().unwrap());
            assert_eq!(decode(&lib, &all), text, "{lib:?}");
            assert!(all.len() < text.len() / 4, "{lib:?}: {}", all.len());
            assert_eq!(s.total_uncompressed_bytes.value(), text.len() as u64);
            assert_eq!(s.total_compressed_bytes.value(), all.len() as u64);
        }
    }

    #[test]
    fn an_empty_body_is_a_valid_stream() {
        for lib in libraries() {
            let mut c = compressor(&lib, stats()).unwrap();
            let all = c.finish().unwrap();
            assert!(!all.is_empty());
            assert_eq!(decode(&lib, &all), b"", "{lib:?}");
        }
    }
}
