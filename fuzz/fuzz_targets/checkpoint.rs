//! Arbitrary bytes into the checkpoint readers: a state dict into the DCGAN generator and
//! critic (built once, at width 1, with the project's constructors), a generator file, and a
//! whole training checkpoint. Any panic, abort or runaway allocation is a bug in
//! `earthmover_wgan::checkpoint`.
#![no_main]

use earthmover_wgan::checkpoint::{load_checkpoint_bytes, load_generator_bytes, load_module_bytes};
use earthmover_wgan::models::{Critic, CriticNorm, Generator, ModelKind};
use earthmover_wgan::nn::init::Init;
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The width of the networks the seeds were saved from (crates/wgan/tests/fuzz_seeds.rs).
const DIM: usize = 1;
/// The training-set size the seed checkpoint was saved with.
const TRAIN_LEN: usize = 16;

thread_local! {
    static NETS: (Generator, Critic) = {
        let mut rng = StdRng::seed_from_u64(0);
        (
            Generator::new(ModelKind::Dcgan, DIM, Init::PyTorch, &mut rng),
            Critic::new(ModelKind::Dcgan, DIM, CriticNorm::None, Init::PyTorch, &mut rng),
        )
    };
}

/// FNV-1a over the bytes: which reader an input goes to, the same on every run of it.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fuzz_target!(|data: &[u8]| {
    // Each input goes to one reader, picked by its hash: a valid checkpoint is ~100 KB of
    // weights, and parsing it four times a run would cut the runs four times over, while
    // every mutation of it still reaches every reader.
    match hash(data) % 4 {
        0 => NETS.with(|(generator, _)| drop(load_module_bytes(generator, data, "fuzz.safetensors"))),
        1 => NETS.with(|(_, critic)| drop(load_module_bytes(critic, data, "fuzz.safetensors"))),
        2 => drop(load_generator_bytes(data, "fuzz.safetensors")),
        _ => drop(load_checkpoint_bytes(data, "fuzz.safetensors", TRAIN_LEN)),
    }
});
