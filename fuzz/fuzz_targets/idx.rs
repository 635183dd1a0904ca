//! Arbitrary bytes into the IDX reader, raw and gzip-compressed, and into the MNIST loader.
//! Any panic, abort or runaway allocation is a bug in `earthmover_wgan::data`.
#![no_main]

use earthmover_wgan::data::{parse_idx, parse_idx_of_rank, Mnist};
use flate2::Crc;
use libfuzzer_sys::fuzz_target;

/// `bytes` as a gzip file of stored (uncompressed) deflate blocks: a valid stream around any
/// contents, far cheaper per run than compressing.
fn gzip_stored(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = bytes.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend([1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let len = chunk.len() as u16;
        out.push(chunks.peek().is_none() as u8);
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(chunk);
    }
    let mut crc = Crc::new();
    crc.update(bytes);
    out.extend(crc.sum().to_le_bytes());
    out.extend((bytes.len() as u32).to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a file (a leading 0x1f 0x8b takes the gzip path with corrupt data).
    let raw = parse_idx(data, "fuzz.idx");
    let _ = parse_idx_of_rank(data, "fuzz.idx", Some(3));
    // The same bytes gzip-compressed must read to the same array.
    let unzipped = parse_idx(&gzip_stored(data), "fuzz.idx.gz");
    if !data.starts_with(&[0x1f, 0x8b]) {
        assert_eq!(raw.is_ok(), unzipped.is_ok(), "raw and gzip readings disagree");
        if let (Ok(a), Ok(b)) = (&raw, &unzipped) {
            assert_eq!(a, b);
        }
    }
    if let Ok(array) = &raw {
        let count: usize = array.dims.iter().product();
        assert_eq!(array.data.len(), count, "an array read must hold what its dims say");
    }
    // The bytes cut in two at a place the first byte picks: images and labels of both splits.
    if let Some((&cut, rest)) = data.split_first() {
        let (images, labels) = rest.split_at((cut as usize * 16).min(rest.len()));
        let files = [("img", images), ("lbl", labels), ("img", images), ("lbl", labels)];
        if let Ok(mnist) = Mnist::from_files(files) {
            let last = mnist.train.len() - 1;
            let batch = mnist.train.images(&[0, last], (-1.0, 1.0));
            assert_eq!(batch.shape(), &[2, 1, mnist.train.rows, mnist.train.cols]);
        }
    }
});
