//! The CPU kernels: the reference implementation of every kernel, parallel with rayon where the
//! work is large enough to pay for it. The CUDA kernels (a later backend) are checked against
//! these.

pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod optim;
pub mod random;
pub mod reduce;
pub mod tile;

/// Below this many elements a kernel runs on the calling thread: splitting small work across
/// threads costs more than it saves.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// Threads the CPU kernels run on: rayon's global pool (set `RAYON_NUM_THREADS` to change it).
pub fn current_num_threads() -> usize {
    rayon::current_num_threads()
}
