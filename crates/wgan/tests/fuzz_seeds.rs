//! The fuzz targets' seeds (fuzz/seeds/, docs/fuzzing.md), and a deterministic fuzz in
//! `cargo test`: every seed and a few thousand mutations of it (byte flips, truncations, edited
//! length fields, appended bytes) through the same byte entry points as the fuzz targets,
//! which must answer Ok or Err, never panic.
//!
//! The seeds are written by this file too:
//! `cargo test -p earthmover-wgan --test fuzz_seeds -- --ignored write_fuzz_seeds`.

use earthmover_wgan::checkpoint::{
    load_checkpoint_bytes, load_generator_bytes, load_module_bytes, save_checkpoint, save_generator, save_module,
};
use earthmover_wgan::data::{parse_idx, parse_idx_of_rank, Mnist};
use earthmover_wgan::models::{Critic, CriticNorm, Generator, ModelKind};
use earthmover_wgan::nn::init::Init;
use earthmover_wgan::train::{Algo, TrainConfig, Trainer};
use flate2::{write::GzEncoder, Compression};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The width of the networks in the checkpoint seeds, as in fuzz/fuzz_targets/checkpoint.rs.
const DIM: usize = 1;
/// The training-set size the checkpoint seed was saved with.
const TRAIN_LEN: usize = 16;

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn idx_seeds() -> Vec<(String, Vec<u8>)> {
    let pixels: Vec<u8> = (0..2 * 28 * 28).map(|i| (i * 37 % 256) as u8).collect();
    let images = idx(0x0803, &[2, 28, 28], &pixels);
    let labels = idx(0x0801, &[2], &[3, 7]);
    // The fuzz target cuts its input after `16 * first byte` bytes into images and labels.
    assert_eq!(images.len() % 16, 0);
    let mut pair = vec![(images.len() / 16) as u8];
    pair.extend(&images);
    pair.extend(&labels);
    vec![
        ("images.idx".into(), images.clone()),
        ("labels.idx".into(), labels.clone()),
        ("images.idx.gz".into(), gzip(&images)),
        ("labels.idx.gz".into(), gzip(&labels)),
        (
            "small-rank3.idx".into(),
            idx(0x0803, &[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        ),
        ("rank2.idx".into(), idx(0x0802, &[3, 2], &[1, 2, 3, 4, 5, 6])),
        ("rank4.idx".into(), idx(0x0804, &[1, 2, 1, 2], &[9, 8, 7, 6])),
        ("empty.idx".into(), idx(0x0801, &[0], &[])),
        ("mnist-pair.bin".into(), pair),
    ]
}

fn tiny_config() -> TrainConfig {
    let mut config = TrainConfig::new(Algo::WganGp);
    config.dim = DIM;
    config
}

fn nets() -> (Generator, Critic) {
    let mut rng = StdRng::seed_from_u64(0);
    (
        Generator::new(ModelKind::Dcgan, DIM, Init::PyTorch, &mut rng),
        Critic::new(ModelKind::Dcgan, DIM, CriticNorm::None, Init::PyTorch, &mut rng),
    )
}

/// Write the seeds to fuzz/seeds/ (run when a format changes, and commit them).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = seeds_dir("idx");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in idx_seeds() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let dir = seeds_dir("checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let trainer = Trainer::new(tiny_config(), TRAIN_LEN).unwrap();
    save_checkpoint(&trainer, &dir.join("checkpoint.safetensors")).unwrap();
    save_generator(&trainer, &dir.join("generator.safetensors")).unwrap();
    let (_, critic) = nets();
    let metadata = HashMap::from([("format".to_string(), "critic-seed".to_string())]);
    save_module(&critic, metadata, &dir.join("critic.safetensors")).unwrap();
}

fn read_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(seeds_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/seeds/{target}: {e}"))
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/{target}");
    seeds
}

/// `count` mutations of `seed`: a few bytes overwritten, the file cut short, a 4- or 8-byte
/// field in the first `header` bytes (where the length fields are) set to an edge value, or
/// bytes appended.
fn mutations(seed: &[u8], header: usize, count: usize, rng: &mut StdRng) -> Vec<Vec<u8>> {
    const EDGES: [u64; 8] = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];
    (0..count)
        .map(|_| {
            let mut bytes = seed.to_vec();
            match rng.random_range(0..4) {
                0 if !bytes.is_empty() => {
                    for _ in 0..rng.random_range(1..4) {
                        let i = rng.random_range(0..bytes.len());
                        bytes[i] ^= 1 << rng.random_range(0..8);
                    }
                }
                1 => bytes.truncate(rng.random_range(0..=bytes.len())),
                2 => {
                    let width = if rng.random_bool(0.5) { 4 } else { 8 };
                    let span = header.min(bytes.len()).saturating_sub(width);
                    let at = rng.random_range(0..=span);
                    let value = EDGES[rng.random_range(0..EDGES.len())].wrapping_add(rng.random_range(0..2));
                    let field = if rng.random_bool(0.5) {
                        value.to_be_bytes()
                    } else {
                        value.to_le_bytes()
                    };
                    let end = (at + width).min(bytes.len());
                    bytes[at..end].copy_from_slice(&field[8 - (end - at)..]);
                }
                _ => bytes.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
            }
            bytes
        })
        .collect()
}

fn feed_idx(bytes: &[u8]) {
    let _ = parse_idx(bytes, "fuzz.idx");
    let _ = parse_idx_of_rank(bytes, "fuzz.idx", Some(3));
    let _ = parse_idx(&gzip(bytes), "fuzz.idx.gz");
    if let Some((&cut, rest)) = bytes.split_first() {
        let (images, labels) = rest.split_at((cut as usize * 16).min(rest.len()));
        if let Ok(mnist) = Mnist::from_files([("i", images), ("l", labels), ("i", images), ("l", labels)]) {
            mnist.train.images(&[0, mnist.train.len() - 1], (-1.0, 1.0));
        }
    }
}

fn feed_checkpoint(bytes: &[u8], generator: &Generator, critic: &Critic) {
    let _ = load_module_bytes(generator, bytes, "fuzz.safetensors");
    let _ = load_module_bytes(critic, bytes, "fuzz.safetensors");
    let _ = load_generator_bytes(bytes, "fuzz.safetensors");
    let _ = load_checkpoint_bytes(bytes, "fuzz.safetensors", TRAIN_LEN);
}

#[test]
fn idx_seeds_are_valid_and_current() {
    let committed = read_seeds("idx");
    let written = idx_seeds();
    assert_eq!(
        committed.iter().map(|s| &s.0).collect::<Vec<_>>(),
        {
            let mut names: Vec<_> = written.iter().map(|s| &s.0).collect();
            names.sort();
            names
        },
        "fuzz/seeds/idx is out of date: rewrite it (see the top of this file)"
    );
    for (name, bytes) in &committed {
        if name.ends_with(".idx") || name.ends_with(".gz") {
            parse_idx(bytes, name).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        }
    }
}

#[test]
fn checkpoint_seeds_load() {
    let seeds: HashMap<String, Vec<u8>> = read_seeds("checkpoint").into_iter().collect();
    let trainer = load_checkpoint_bytes(&seeds["checkpoint.safetensors"], "seed", TRAIN_LEN).unwrap();
    assert_eq!(trainer.config, tiny_config());
    load_generator_bytes(&seeds["generator.safetensors"], "seed").unwrap();
    let (_, critic) = nets();
    load_module_bytes(&critic, &seeds["critic.safetensors"], "seed").unwrap();
}

#[test]
fn idx_mutations_never_panic() {
    let mut rng = StdRng::seed_from_u64(1);
    for (_, seed) in read_seeds("idx") {
        feed_idx(&seed);
        // The header of a raw file is at most 4 + 4 * 4 bytes (a gzip file's is 10).
        for bytes in mutations(&seed, 20, 400, &mut rng) {
            feed_idx(&bytes);
        }
    }
}

#[test]
fn checkpoint_mutations_never_panic() {
    let mut rng = StdRng::seed_from_u64(2);
    let (generator, critic) = nets();
    for (_, seed) in read_seeds("checkpoint") {
        feed_checkpoint(&seed, &generator, &critic);
        // The length fields: the header's size (8 bytes), then the JSON with shapes and offsets.
        let header = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
        for bytes in mutations(&seed, header, 700, &mut rng) {
            feed_checkpoint(&bytes, &generator, &critic);
        }
    }
}

/// Edits that keep the file valid safetensors but make its contents lie: the shapes in the
/// header, the configuration's width, the optimiser's step.
#[test]
fn checkpoint_header_lies_are_errors() {
    let seeds: HashMap<String, Vec<u8>> = read_seeds("checkpoint").into_iter().collect();
    let seed = &seeds["checkpoint.safetensors"];
    let header_len = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&seed[8..8 + header_len]).unwrap();
    let with_header = |text: &str| {
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend(text.as_bytes());
        bytes.extend(&seed[8 + header_len..]);
        bytes
    };
    for (from, to) in [
        (r#"\"dim\":1"#, r#"\"dim\":1000000000"#),
        (r#"\"dim\":1"#, r#"\"dim\":4611686018427387904"#),
        (r#"\"dim\":1"#, r#"\"dim\":0"#),
        (r#""seconds":""#, r#""seconds":"-1"#),
    ] {
        assert!(header.contains(from), "{from} not in the seed's header");
        let err = load_checkpoint_bytes(&with_header(&header.replacen(from, to, 1)), "lie", TRAIN_LEN)
            .err()
            .unwrap_or_else(|| panic!("{to}: loaded"));
        assert!(err.0.starts_with("lie"), "{err}");
    }
}
