//! MNIST-format data: the IDX file reader (raw or gzip-compressed) and shuffled minibatches:
//! [`Batcher`] (a permutation per epoch drawn from a `rand` generator, for the digit
//! classifier) and [`ShuffledOrder`] (a permutation per epoch that is a pure function of a seed
//! and a position, computed alike on the CPU and on a GPU, for the GAN trainer).
//!
//! An IDX file is a big-endian header, `0x00 0x00 <type> <rank>` then one u32 per dim, then
//! the data. MNIST uses type 0x08 (unsigned bytes): images are rank 3 (`[N, 28, 28]`, magic
//! 0x00000803) and labels rank 1 (`[N]`, magic 0x00000801). Every check names the file.

use crate::{bail, Error, Result};
use byteorder::{BigEndian, ReadBytesExt};
use earthmover_tensor::{shuffled_row, Tensor};
use flate2::read::GzDecoder;
use rand::seq::SliceRandom;
use rand::Rng;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The four files of an MNIST-format dataset.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// The side of an MNIST image in pixels: the networks take `[N, 1, 28, 28]`.
pub const IMAGE_SIZE: usize = 28;

/// An unsigned-byte IDX array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The most data an IDX header may declare, 4 GiB: the size of the array is checked against
/// it before anything is allocated, so a corrupt or hostile header (dims of 2^32 each) is an
/// error, not an attempt to allocate exabytes. (MNIST's training images are 47 MB.)
pub const MAX_IDX_DATA_BYTES: u64 = 1 << 32;

/// Parse an IDX file's bytes (gzip-compressed or raw); `name` is used in error messages.
///
/// Never panics: a short or corrupt header, dims whose product overflows or exceeds
/// [`MAX_IDX_DATA_BYTES`], data shorter or longer than the header promises, and corrupt gzip
/// data are all errors naming the file. A gzip stream is decompressed no further than the
/// header promises, so a small file cannot expand into an unbounded allocation.
pub fn parse_idx(bytes: &[u8], name: &str) -> Result<IdxArray> {
    parse_idx_of_rank(bytes, name, None)
}

/// [`parse_idx`], refusing a header of another rank than `rank` before reading its dims.
pub fn parse_idx_of_rank(bytes: &[u8], name: &str, expected_rank: Option<usize>) -> Result<IdxArray> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        read_idx(GzDecoder::new(bytes), name, expected_rank, true)
    } else {
        read_idx(bytes, name, expected_rank, false)
    }
}

/// Read one IDX array from `reader`: the header, then exactly the data it promises.
fn read_idx(mut reader: impl Read, name: &str, expected_rank: Option<usize>, gzip: bool) -> Result<IdxArray> {
    // A read error is corrupt compressed data when decompressing, and otherwise (and at the
    // end of the stream) a file too short for what it says it holds.
    let fail = |e: std::io::Error, short: String| match (gzip, e.kind()) {
        (false, _) => Error(short),
        // The decompressed stream ended, or the compressed one was cut short: no telling.
        (true, std::io::ErrorKind::UnexpectedEof) => Error(format!("{short}, or corrupt gzip data cut short")),
        (true, _) => Error(format!("{name}: corrupt gzip data: {e}")),
    };
    let magic = reader
        .read_u32::<BigEndian>()
        .map_err(|e| fail(e, format!("{name}: too short for an IDX header")))?;
    let (zeros, kind, rank) = (magic >> 16, (magic >> 8) & 0xff, (magic & 0xff) as usize);
    if zeros != 0 || kind != 0x08 || rank == 0 || rank > 4 {
        bail!("{name}: magic number 0x{magic:08x} is not an unsigned-byte IDX file (expected 0x0000080N)");
    }
    if let Some(want) = expected_rank.filter(|&r| r != rank_found(magic)) {
        bail!(
            "{name}: magic number 0x{magic:08x} is for a rank-{} array, but {} need 0x{:08x}",
            rank_found(magic),
            if want == 3 { "images" } else { "labels" },
            0x0800 | want
        );
    }
    let mut dims = Vec::with_capacity(rank);
    for d in 0..rank {
        let v = reader
            .read_u32::<BigEndian>()
            .map_err(|e| fail(e, format!("{name}: header ends before dim {d}")))?;
        dims.push(v as usize);
    }
    let expected = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .filter(|&n| n <= MAX_IDX_DATA_BYTES)
        .ok_or_else(|| {
            Error(format!(
                "{name}: header promises an array of {dims:?} bytes, more than the {MAX_IDX_DATA_BYTES} an IDX file \
                 may hold (corrupt header)"
            ))
        })?;
    // Read one byte more than promised to tell trailing data from an exact fit; the vector
    // grows with the data actually there, never to the promised size up front.
    let mut data = Vec::new();
    reader
        .take(expected + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error(format!("{name}: corrupt or truncated gzip data: {e}")))?; // (bytes never fail)
    if data.len() as u64 != expected {
        bail!(
            "{name}: header promises {dims:?} = {expected} bytes of data but the file holds {} (truncated or corrupt)",
            if data.len() as u64 > expected {
                "more".to_string()
            } else {
                data.len().to_string()
            }
        );
    }
    Ok(IdxArray { dims, data })
}

fn rank_found(magic: u32) -> usize {
    (magic & 0xff) as usize
}

/// Images and labels of one split.
#[derive(Clone, Debug)]
pub struct Split {
    /// `count * rows * cols` bytes, row-major.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    /// Check that an images array and a labels array form a split.
    pub fn new(images: IdxArray, labels: IdxArray, images_name: &str, labels_name: &str) -> Result<Split> {
        if images.dims.len() != 3 {
            bail!(
                "{images_name}: images must have 3 dims [count, rows, cols], found {:?}",
                images.dims
            );
        }
        if labels.dims.len() != 1 {
            bail!("{labels_name}: labels must have 1 dim [count], found {:?}", labels.dims);
        }
        if images.dims[0] != labels.dims[0] {
            bail!(
                "{images_name} holds {} images but {labels_name} holds {} labels",
                images.dims[0],
                labels.dims[0]
            );
        }
        if images.dims[0] == 0 {
            bail!("{images_name}: no images");
        }
        if images.dims[1] == 0 || images.dims[2] == 0 {
            bail!(
                "{images_name}: images of {}x{} pixels hold nothing",
                images.dims[1],
                images.dims[2]
            );
        }
        Ok(Split {
            pixels: images.data,
            labels: labels.data,
            rows: images.dims[1],
            cols: images.dims[2],
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images `indices` as `[B, 1, rows, cols]` f32, pixels mapped from 0..255 onto `range`.
    pub fn images(&self, indices: &[usize], range: (f64, f64)) -> Tensor {
        let size = self.rows * self.cols;
        let scale = (range.1 - range.0) as f32 / 255.0;
        let lo = range.0 as f32;
        let mut values = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            values.extend(
                self.pixels[i * size..(i + 1) * size]
                    .iter()
                    .map(|&p| lo + p as f32 * scale),
            );
        }
        Tensor::from_vec(values, &[indices.len(), 1, self.rows, self.cols]).expect("sizes agree")
    }
}

/// The training order of [`Trainer`](crate::train::Trainer): position `p` of the endless
/// sequence of epochs over `len` images is image `shuffled_row(p, len, seed)`
/// (`earthmover_kernels::cpu::gather`), a new permutation of the images each epoch. A batch is
/// the `n` positions after the last, so the whole state is one number, and a GPU gathers the
/// same images from a dataset it holds (`Tensor::gather_shuffled_rows`) without a permutation
/// to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShuffledOrder {
    pub len: usize,
    pub seed: u64,
    /// Images drawn so far, over every epoch.
    pub position: u64,
}

impl ShuffledOrder {
    pub fn new(len: usize, seed: u64) -> ShuffledOrder {
        ShuffledOrder { len, seed, position: 0 }
    }

    /// Completed epochs.
    pub fn epoch(&self) -> u64 {
        self.position / self.len.max(1) as u64
    }

    /// The position of the next `n` images, which it moves past.
    pub fn take(&mut self, n: usize) -> u64 {
        let start = self.position;
        self.position += n as u64;
        start
    }

    /// The images at positions `start .. start + n`.
    pub fn indices(&self, start: u64, n: usize) -> Vec<usize> {
        (0..n as u64)
            .map(|i| shuffled_row(start + i, self.len as u64, self.seed) as usize)
            .collect()
    }
}

/// A train and a test split.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: Split,
    pub test: Split,
}

impl Mnist {
    /// `count` made-up 28x28 images (a fixed pattern, every label 3) in both splits: a dataset
    /// that needs no files, for tests and for trying the training loop.
    pub fn synthetic(count: usize) -> Mnist {
        let idx = |magic: u32, dims: &[u32], data: Vec<u8>| -> IdxArray {
            let mut bytes = magic.to_be_bytes().to_vec();
            dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
            bytes.extend(data);
            parse_idx(&bytes, "synthetic").expect("a well-formed IDX array")
        };
        let n = count as u32;
        let pixels: Vec<u8> = (0..count * 784).map(|i| (i * 37 % 256) as u8).collect();
        let split = || {
            Split::new(
                idx(0x0803, &[n, 28, 28], pixels.clone()),
                idx(0x0801, &[n], vec![3; count]),
                "synthetic images",
                "synthetic labels",
            )
            .expect("matching synthetic images and labels")
        };
        Mnist {
            train: split(),
            test: split(),
        }
    }

    /// Where the MNIST files are, found at run time so that a binary copied to another
    /// machine (the GPU bundle, `scripts/gpu-bundle.sh`) reads its own copy rather than the
    /// build machine's: the folder named by `EARTHMOVER_DATA` (a folder holding the files, or
    /// one holding `mnist/`), else a `data/mnist` beside the executable or in one of its
    /// ancestors, else in the current directory or one of its ancestors, and last the
    /// repository this crate was compiled from (so `cargo test` in a checkout needs nothing
    /// set).
    pub fn find_dir() -> Result<PathBuf> {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        find_data_dir(
            std::env::var_os("EARTHMOVER_DATA").map(PathBuf::from),
            exe_dir,
            std::env::current_dir().ok(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist"),
        )
    }

    /// Read the four files of [`MNIST_FILES`] from `dir` (each gzip-compressed, or raw under the
    /// same name without `.gz`).
    pub fn load_dir(dir: &Path) -> Result<Mnist> {
        if !dir.is_dir() {
            bail!(
                "data folder {} {}: it must be a folder holding the four MNIST-format files {}",
                dir.display(),
                if dir.exists() { "is a file" } else { "not found" },
                MNIST_FILES.join(", ")
            );
        }
        let mut files = Vec::new();
        for name in MNIST_FILES {
            let gz = dir.join(name);
            let raw = dir.join(name.trim_end_matches(".gz"));
            let path = if gz.exists() { gz } else { raw };
            let bytes = std::fs::read(&path).map_err(|e| {
                Error(format!(
                    "cannot read {} ({e}): the data folder must hold {} (gzip-compressed or raw)",
                    path.display(),
                    MNIST_FILES.join(", ")
                ))
            })?;
            files.push((path.display().to_string(), bytes));
        }
        let f: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        Mnist::from_files([f[0], f[1], f[2], f[3]])
    }

    /// Build from the contents of the four files, in [`MNIST_FILES`] order, as (name, bytes).
    ///
    /// Besides each file's own checks ([`parse_idx`]) and each split's ([`Split::new`]), the
    /// images must be [`IMAGE_SIZE`] pixels square: the networks are built for those, and
    /// would otherwise fail deep inside training. (Labels may be any byte: other images are
    /// scored by a classifier of their own number of classes.)
    pub fn from_files(files: [(&str, &[u8]); 4]) -> Result<Mnist> {
        // Images are rank 3 (magic 0x00000803), labels rank 1 (magic 0x00000801).
        let ranks = [3, 1, 3, 1];
        let arrays: Vec<IdxArray> = files
            .iter()
            .zip(ranks)
            .map(|((name, bytes), rank)| parse_idx_of_rank(bytes, name, Some(rank)))
            .collect::<Result<_>>()?;
        let mut it = arrays.into_iter();
        let (ti, tl, vi, vl) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );
        let train = Split::new(ti, tl, files[0].0, files[1].0)?;
        let test = Split::new(vi, vl, files[2].0, files[3].0)?;
        for (split, images) in [(&train, files[0].0), (&test, files[2].0)] {
            if (split.rows, split.cols) != (IMAGE_SIZE, IMAGE_SIZE) {
                bail!(
                    "{images}: images are {}x{} pixels, but MNIST-format data must be {IMAGE_SIZE}x{IMAGE_SIZE}",
                    split.rows,
                    split.cols
                );
            }
        }
        if (train.rows, train.cols) != (test.rows, test.cols) {
            bail!(
                "train images are {}x{} but test images are {}x{}",
                train.rows,
                train.cols,
                test.rows,
                test.cols
            );
        }
        Ok(Mnist { train, test })
    }
}

/// Whether `dir` holds the first of [`MNIST_FILES`] (gzip-compressed or raw).
fn holds_mnist(dir: &Path) -> bool {
    let first = MNIST_FILES[0];
    dir.join(first).is_file() || dir.join(first.trim_end_matches(".gz")).is_file()
}

/// [`Mnist::find_dir`]'s search, with its inputs as arguments so that tests can give their own.
/// An `EARTHMOVER_DATA` that holds no MNIST files is an error (a typo should not silently read
/// other data).
fn find_data_dir(
    from_env: Option<PathBuf>,
    exe_dir: Option<PathBuf>,
    current_dir: Option<PathBuf>,
    compiled_in: PathBuf,
) -> Result<PathBuf> {
    if let Some(dir) = from_env {
        return [dir.clone(), dir.join("mnist"), dir.join("data/mnist")]
            .into_iter()
            .find(|d| holds_mnist(d))
            .ok_or_else(|| {
                Error(format!(
                    "EARTHMOVER_DATA={} holds no MNIST files ({}), nor does its mnist/ or data/mnist/",
                    dir.display(),
                    MNIST_FILES.join(", ")
                ))
            });
    }
    let mut searched = Vec::new();
    for start in exe_dir.iter().chain(current_dir.iter()) {
        for dir in start.ancestors() {
            let candidate = dir.join("data/mnist");
            if holds_mnist(&candidate) {
                return Ok(candidate);
            }
        }
        searched.push(start.display().to_string());
    }
    if holds_mnist(&compiled_in) {
        return Ok(compiled_in);
    }
    Err(Error(format!(
        "no MNIST data found: set EARTHMOVER_DATA to a folder holding {}, or put a data/mnist \
         beside the executable; searched data/mnist in {} and their ancestors, and {}",
        MNIST_FILES.join(", "),
        searched.join(" and "),
        compiled_in.display()
    )))
}

/// Shuffled minibatch indices: every image once per epoch, in a new random order each epoch.
/// A batch that reaches the end of an epoch is completed from the next one.
#[derive(Clone, Debug)]
pub struct Batcher {
    len: usize,
    order: Vec<usize>,
    position: usize,
    /// Completed epochs.
    pub epoch: usize,
}

impl Batcher {
    pub fn new(len: usize) -> Batcher {
        Batcher {
            len,
            order: Vec::new(),
            position: 0,
            epoch: 0,
        }
    }

    pub fn next_batch<R: Rng + ?Sized>(&mut self, batch_size: usize, rng: &mut R) -> Vec<usize> {
        let mut batch = Vec::with_capacity(batch_size);
        while batch.len() < batch_size {
            if self.position == self.order.len() {
                if !self.order.is_empty() {
                    self.epoch += 1;
                }
                self.order = (0..self.len).collect();
                self.order.shuffle(rng);
                self.position = 0;
            }
            let take = (batch_size - batch.len()).min(self.order.len() - self.position);
            batch.extend_from_slice(&self.order[self.position..self.position + take]);
            self.position += take;
        }
        batch
    }

    /// The position within the current epoch, and its order: enough to resume exactly.
    pub fn state(&self) -> (Vec<usize>, usize, usize) {
        (self.order.clone(), self.position, self.epoch)
    }

    pub fn restore(len: usize, order: Vec<usize>, position: usize, epoch: usize) -> Result<Batcher> {
        if position > order.len() || order.iter().any(|&i| i >= len) || (!order.is_empty() && order.len() != len) {
            bail!("batcher state does not fit a dataset of {len} images");
        }
        Ok(Batcher {
            len,
            order,
            position,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    #[test]
    fn parses_raw_and_checks_every_field() {
        let good = idx(0x0803, &[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(parse_idx(&good, "x").unwrap().dims, vec![2, 2, 2]);
        let err = parse_idx(&good[..good.len() - 1], "images.idx").unwrap_err().0;
        assert!(err.contains("images.idx") && err.contains("truncated"), "{err}");
        let err = parse_idx(&idx(0x0903, &[1, 1, 1], &[0]), "x").unwrap_err().0;
        assert!(err.contains("magic number 0x00000903"), "{err}");
        assert!(parse_idx(&[0, 0], "x").unwrap_err().0.contains("too short"));
    }

    #[test]
    fn absurd_headers_are_errors_before_any_allocation() {
        // Dims whose product overflows a u64, and ones past the 4 GiB limit.
        let err = parse_idx(&idx(0x0804, &[u32::MAX; 4], &[]), "x").unwrap_err().0;
        assert!(err.contains("more than the 4294967296"), "{err}");
        let err = parse_idx(&idx(0x0803, &[2, 65536, 32769], &[]), "x").unwrap_err().0;
        assert!(err.contains("corrupt header"), "{err}");
        // A gzip stream is read no further than the header promises.
        let mut long = idx(0x0801, &[3], &[1, 2, 3]);
        long.extend(vec![0; 1 << 20]);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, &long).unwrap();
        let err = parse_idx(&encoder.finish().unwrap(), "x.gz").unwrap_err().0;
        assert!(err.contains("holds more"), "{err}");
        let err = parse_idx(&[0x1f, 0x8b, 8, 0, 1, 2], "x.gz").unwrap_err().0;
        assert!(err.contains("x.gz") && err.contains("corrupt gzip"), "{err}");
    }

    #[test]
    fn mnist_needs_28x28_images() {
        let files = |pixels: &[u8], rows: u32, labels: &[u8]| {
            (idx(0x0803, &[1, rows, 784 / rows], pixels), idx(0x0801, &[1], labels))
        };
        let check = |(images, labels): (Vec<u8>, Vec<u8>)| {
            Mnist::from_files([("i", &images), ("l", &labels), ("i", &images), ("l", &labels)]).map(|_| ())
        };
        check(files(&[0; 784], 28, &[9])).unwrap();
        let err = check(files(&[0; 784], 14, &[9])).unwrap_err().0;
        assert!(err.contains("14x56") && err.contains("28x28"), "{err}");
        check(files(&[0; 784], 28, &[12])).unwrap();
        let empty = idx(0x0803, &[1, 0, 28], &[]);
        let labels = idx(0x0801, &[1], &[1]);
        let err = Mnist::from_files([("i", &empty), ("l", &labels), ("i", &empty), ("l", &labels)])
            .unwrap_err()
            .0;
        assert!(err.contains("hold nothing"), "{err}");
    }

    #[test]
    fn images_and_labels_must_agree() {
        let images = parse_idx(&idx(0x0803, &[2, 1, 1], &[0, 255]), "img").unwrap();
        let labels = parse_idx(&idx(0x0801, &[3], &[0, 1, 2]), "lbl").unwrap();
        let err = Split::new(images.clone(), labels, "img", "lbl").unwrap_err().0;
        assert!(err.contains("2 images") && err.contains("3 labels"), "{err}");
        let labels = parse_idx(&idx(0x0801, &[2], &[0, 1]), "lbl").unwrap();
        let split = Split::new(images, labels, "img", "lbl").unwrap();
        assert_eq!(split.images(&[1, 0], (-1.0, 1.0)).to_vec_f32(), vec![1.0, -1.0]);
    }

    #[test]
    fn an_epoch_sees_every_image_once() {
        let mut b = Batcher::new(10);
        let mut rng = StdRng::seed_from_u64(0);
        let mut seen: Vec<usize> = (0..5).flat_map(|_| b.next_batch(4, &mut rng)).collect(); // 20 = 2 epochs
        assert_eq!(b.epoch, 1);
        let (first, second) = seen.split_at_mut(10);
        first.sort();
        second.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert_eq!(second, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_shuffled_order_shows_every_image_once_per_epoch_and_resumes_from_its_position() {
        let mut order = ShuffledOrder::new(10, 3);
        let batches: Vec<Vec<usize>> = (0..5)
            .map(|_| {
                let start = order.take(4);
                order.indices(start, 4)
            })
            .collect();
        assert_eq!(order.epoch(), 2);
        let seen: Vec<usize> = batches.concat();
        for epoch in seen[..20].chunks(10) {
            let mut sorted = epoch.to_vec();
            sorted.sort();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(seen[..10], seen[10..20], "each epoch in its own order");
        // The position is the whole state: a copy from position 8 draws what followed.
        let resumed = ShuffledOrder {
            position: 8,
            ..order.clone()
        };
        assert_eq!(resumed.indices(8, 4), batches[2]);
    }

    /// A fresh folder under the system's temp dir, removed by the caller.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("earthmover-find-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn put_mnist(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(MNIST_FILES[0]), b"").unwrap();
    }

    #[test]
    fn data_is_found_by_variable_then_beside_the_executable_then_the_current_dir() {
        let root = scratch("order");
        let (bundle, cwd, compiled) = (root.join("bundle"), root.join("cwd"), root.join("repo/data/mnist"));
        let exe_dir = bundle.join("bin/deps");
        std::fs::create_dir_all(&exe_dir).unwrap();
        put_mnist(&bundle.join("data/mnist"));
        put_mnist(&cwd.join("data/mnist"));
        put_mnist(&compiled);
        let find = |env: Option<PathBuf>, exe: Option<PathBuf>, cur: Option<PathBuf>| {
            find_data_dir(env, exe, cur, compiled.clone())
        };
        // An ancestor of the executable's folder wins over the current dir.
        assert_eq!(
            find(None, Some(exe_dir.clone()), Some(cwd.clone())).unwrap(),
            bundle.join("data/mnist")
        );
        assert_eq!(
            find(None, Some(root.clone()), Some(cwd.join("sub"))).unwrap(),
            cwd.join("data/mnist")
        );
        // The variable wins over both, naming the files' folder or one above it.
        let own = root.join("own");
        put_mnist(&own.join("mnist"));
        assert_eq!(
            find(Some(own.clone()), Some(exe_dir.clone()), None).unwrap(),
            own.join("mnist")
        );
        assert_eq!(find(Some(own.join("mnist")), None, None).unwrap(), own.join("mnist"));
        // Nothing beside the executable or the current dir: the compiled-in path.
        assert_eq!(find(None, Some(root.clone()), None).unwrap(), compiled);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_data_is_an_error_that_says_where_it_looked() {
        let root = scratch("missing");
        let e = find_data_dir(Some(root.join("typo")), None, None, root.join("repo")).unwrap_err();
        assert!(e.to_string().contains("EARTHMOVER_DATA="), "{e}");
        let e = find_data_dir(None, Some(root.clone()), None, root.join("repo")).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("EARTHMOVER_DATA") && message.contains(&root.display().to_string()),
            "{message}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// In a checkout, the search finds the repository's own data.
    #[test]
    fn find_dir_finds_the_committed_digits() {
        if std::env::var_os("EARTHMOVER_DATA").is_none() {
            let dir = Mnist::find_dir().unwrap();
            assert!(dir.ends_with("data/mnist") && holds_mnist(&dir), "{}", dir.display());
        }
    }
}
