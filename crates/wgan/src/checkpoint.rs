//! Checkpoints in safetensors format, written atomically.
//!
//! A training checkpoint holds the generator and critic (`generator.fc.weight`, ... : PyTorch's
//! state-dict names and layouts under a `generator.` / `critic.` prefix), the average of the
//! generator's weights when the run keeps one (`generator_ema.`), both optimisers'
//! state (`critic_optim.state.0.exp_avg`, ...), and in the header's metadata the run's
//! configuration, the iteration, the position in the data order (`batcher_epoch`,
//! `batcher_position`: the order itself is a function of the seed and of the training split's
//! size, `data::ShuffledOrder`, which `train_len` records and a resume checks), the
//! training time so far and, in f16 runs, the two loss scalers' state (`grad_scalers`, JSON),
//! so that a resumed run continues at the same scale. Checkpoints of earlier versions also hold
//! the order of their epoch (`batcher.order`, a permutation drawn on the host); it is checked
//! against the data and otherwise not used, so such a run resumes at its position in the new
//! order. Non-finite weights are never saved: a diverged run keeps its last good checkpoint. A
//! generator file holds the state dict of the generator that draws the run's samples (the
//! average when there is one), without prefix, so that `torch` loads it into the same
//! architecture with `model.load_state_dict(safetensors.torch.load_file(path))`.

use crate::amp::{GradScaler, GradScalerState};
use crate::data::ShuffledOrder;
use crate::io::write_atomic;
use crate::models::{Generator, ModelKind};
use crate::nn::init::Init;
use crate::nn::Module;
use crate::train::{TrainConfig, Trainer};
use crate::{bail, Error, Result};
use earthmover_tensor::{bf16, f16, DType, Tensor};
use rand::SeedableRng;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

const FORMAT: &str = "earthmover-wgan-checkpoint-1";
const GENERATOR_FORMAT: &str = "earthmover-wgan-generator-1";
/// The prefix of the generator's averaged weights in a training checkpoint.
const EMA_PREFIX: &str = "generator_ema";
/// The metadata key of the loss scalers' state (f16 runs).
const SCALERS_KEY: &str = "grad_scalers";

/// The loss scalers of a trainer, as saved: `{"critic": {...}, "generator": {...}}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedScalers {
    critic: GradScalerState,
    generator: GradScalerState,
}

/// Little-endian bytes of one tensor, ready for safetensors.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn from_tensor(t: &Tensor) -> Raw {
        let (dtype, bytes) = match t.dtype() {
            DType::F32 => (
                Dtype::F32,
                t.to_vec_f32().iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            DType::F64 => (
                Dtype::F64,
                t.to_vec_f64().iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            // Widening to f32 and back is exact for 16-bit floats.
            DType::BF16 => (
                Dtype::BF16,
                t.to_vec_f32()
                    .iter()
                    .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            DType::F16 => (
                Dtype::F16,
                t.to_vec_f32()
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        };
        Raw {
            dtype,
            shape: t.shape().to_vec(),
            bytes,
        }
    }
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

impl Raw {
    /// Whether every value is finite (the float dtypes; integers always are).
    fn all_finite(&self) -> bool {
        match self.dtype {
            Dtype::F32 => self
                .bytes
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
            Dtype::F64 => self
                .bytes
                .chunks_exact(8)
                .all(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]).is_finite()),
            Dtype::BF16 => self
                .bytes
                .chunks_exact(2)
                .all(|b| bf16::from_le_bytes([b[0], b[1]]).is_finite()),
            Dtype::F16 => self
                .bytes
                .chunks_exact(2)
                .all(|b| f16::from_le_bytes([b[0], b[1]]).is_finite()),
            _ => true,
        }
    }
}

fn serialize(tensors: Vec<(String, Raw)>, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let views: Vec<(String, &Raw)> = tensors.iter().map(|(n, r)| (n.clone(), r)).collect();
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error(format!("cannot encode checkpoint: {e}")))
}

fn prefixed(prefix: &str, named: Vec<(String, Tensor)>) -> impl Iterator<Item = (String, Raw)> + '_ {
    named
        .into_iter()
        .map(move |(n, t)| (format!("{prefix}.{n}"), Raw::from_tensor(&t)))
}

/// Save everything needed to continue `trainer` exactly where it is.
pub fn save_checkpoint(trainer: &Trainer, path: &Path) -> Result<()> {
    let mut tensors: Vec<(String, Raw)> = Vec::new();
    tensors.extend(prefixed("generator", trainer.generator.state_dict()));
    tensors.extend(prefixed("critic", trainer.critic.state_dict()));
    if let Some(average) = &trainer.generator_ema {
        tensors.extend(prefixed(EMA_PREFIX, average.state_dict()));
    }
    tensors.extend(prefixed("generator_optim", trainer.generator_optim.state_dict()));
    tensors.extend(prefixed("critic_optim", trainer.critic_optim.state_dict()));
    // A training step reads its losses once, at the end of its iteration: when one diverged,
    // that iteration's updates were applied, and its weights must not replace a good file.
    if let Some((name, _)) = tensors.iter().find(|(_, raw)| !raw.all_finite()) {
        bail!("refusing to save a checkpoint: {name} holds non-finite values (the training diverged)");
    }
    let order = &trainer.order;
    let (position, epoch) = (order.position % order.len.max(1) as u64, order.epoch());
    let config = serde_json::to_string(&trainer.config).expect("the configuration serialises");
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("earthmover_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("config".to_string(), config),
        ("iteration".to_string(), trainer.iteration.to_string()),
        ("seconds".to_string(), format!("{:?}", trainer.seconds())),
        ("batcher_position".to_string(), position.to_string()),
        ("batcher_epoch".to_string(), epoch.to_string()),
        ("train_len".to_string(), order.len.to_string()),
    ]);
    if let (Some(critic), Some(generator)) = (&trainer.critic_scaler, &trainer.generator_scaler) {
        let saved = SavedScalers {
            critic: critic.state_dict(),
            generator: generator.state_dict(),
        };
        let json = serde_json::to_string(&saved).expect("the scalers' state serialises");
        metadata.insert(SCALERS_KEY.to_string(), json);
    }
    write_atomic(path, &serialize(tensors, metadata)?)
}

/// Restore the loss scalers of an f16 run from `loaded`'s metadata. A checkpoint without them
/// (written before they were saved) leaves the new trainer's: the run goes on from the
/// initial scale, which finds its level again within a few skipped steps.
fn load_scalers(trainer: &mut Trainer, loaded: &Loaded, name: &str) -> Result<()> {
    let Some(json) = loaded.metadata.get(SCALERS_KEY) else {
        return Ok(());
    };
    let (Some(critic), Some(generator)) = (&mut trainer.critic_scaler, &mut trainer.generator_scaler) else {
        bail!(
            "{name}: the checkpoint holds loss scalers, but its configuration trains in {}, which has none",
            trainer.config.precision
        );
    };
    let saved: SavedScalers =
        serde_json::from_str(json).map_err(|e| Error(format!("{name}: unreadable `{SCALERS_KEY}`: {e}")))?;
    for (which, scaler, state) in [
        ("critic", critic, saved.critic),
        ("generator", generator, saved.generator),
    ] {
        let restore = |s: &mut GradScaler| s.load_state_dict(state);
        restore(scaler).map_err(|e| Error(format!("{name}: the {which}'s loss scaler: {e}")))?;
    }
    Ok(())
}

/// Save the weights of the generator that draws the run's samples ([`Trainer::sampler`]: the
/// average when the run keeps one) alone, with the configuration that built it.
pub fn save_generator(trainer: &Trainer, path: &Path) -> Result<()> {
    let tensors = trainer
        .sampler()
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, Raw::from_tensor(&t)))
        .collect();
    let config = serde_json::to_string(&trainer.config).expect("the configuration serialises");
    let metadata = HashMap::from([
        ("format".to_string(), GENERATOR_FORMAT.to_string()),
        ("config".to_string(), config),
        ("iteration".to_string(), trainer.iteration.to_string()),
        ("weights".to_string(), weights_kind(&trainer.config).to_string()),
    ]);
    write_atomic(path, &serialize(tensors, metadata)?)
}

/// A parsed safetensors file: its tensors by name and its metadata.
struct Loaded {
    tensors: HashMap<String, Tensor>,
    orders: HashMap<String, Vec<usize>>,
    metadata: HashMap<String, String>,
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error(format!("cannot read checkpoint {}: {e}", path.display())))
}

fn read(path: &Path) -> Result<Loaded> {
    parse(&read_bytes(path)?, &path.display().to_string())
}

/// Parse safetensors bytes; `name` says where they came from in error messages.
fn parse(bytes: &[u8], name: &str) -> Result<Loaded> {
    let bad = |e: safetensors::SafeTensorError| Error(format!("{name} is not a valid safetensors file: {e}"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut tensors = HashMap::new();
    let mut orders = HashMap::new();
    for (tensor, view) in file.tensors() {
        match view.dtype() {
            Dtype::I64 => {
                orders.insert(tensor, decode_i64(&view));
            }
            _ => {
                let decoded = decode_float(&view).map_err(|e| Error(format!("{name}: tensor `{tensor}`: {e}")))?;
                tensors.insert(tensor, decoded);
            }
        }
    }
    Ok(Loaded {
        tensors,
        orders,
        metadata,
    })
}

fn decode_float(view: &TensorView) -> std::result::Result<Tensor, String> {
    let data = view.data();
    let t = match view.dtype() {
        Dtype::F32 => Tensor::from_vec(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            view.shape(),
        ),
        Dtype::F64 => Tensor::from_vec(
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            view.shape(),
        ),
        Dtype::BF16 => Tensor::from_vec(
            data.chunks_exact(2)
                .map(|c| bf16::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            view.shape(),
        ),
        Dtype::F16 => Tensor::from_vec(
            data.chunks_exact(2)
                .map(|c| f16::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            view.shape(),
        ),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    t.map_err(|e| e.0)
}

fn decode_i64(view: &TensorView) -> Vec<usize> {
    view.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()).max(0) as usize)
        .collect()
}

fn metadata_value<T: std::str::FromStr>(loaded: &Loaded, key: &str, name: &str) -> Result<T> {
    loaded
        .metadata
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error(format!("{name}: checkpoint metadata has no valid `{key}`")))
}

fn config_of(loaded: &Loaded, name: &str) -> Result<TrainConfig> {
    let json = loaded
        .metadata
        .get("config")
        .ok_or_else(|| Error(format!("{name}: no training configuration in its metadata")))?;
    let config: TrainConfig =
        serde_json::from_str(json).map_err(|e| Error(format!("{name}: unreadable configuration: {e}")))?;
    config.validate().map_err(|e| Error(format!("{name}: {e}")))?;
    Ok(config)
}

/// Copy `source[prefix + name]` into each of `targets`, checking names and shapes.
fn load_named(
    targets: Vec<(String, Tensor)>,
    source: &HashMap<String, Tensor>,
    prefix: &str,
    file: &str,
) -> Result<()> {
    for (name, target) in targets {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        let Some(t) = source.get(&key) else {
            bail!("{file}: checkpoint has no tensor `{key}`: it was saved from a different architecture");
        };
        if t.shape() != target.shape() {
            bail!(
                "{file}: tensor `{key}` has shape {:?} but this model's has {:?}: the checkpoint was saved from a different architecture",
                t.shape(),
                target.shape()
            );
        }
        let moved = t
            .to_dtype(target.dtype())
            .to_device(target.device())
            .map_err(|e| Error(format!("{file}: tensor `{key}`: {e}")))?;
        target.set_data(&moved);
    }
    Ok(())
}

/// Save any module's state dict (PyTorch's names, no prefix) with string metadata.
pub fn save_module(module: &dyn Module, metadata: HashMap<String, String>, path: &Path) -> Result<()> {
    let tensors = module
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, Raw::from_tensor(&t)))
        .collect();
    write_atomic(path, &serialize(tensors, metadata)?)
}

/// Load a state dict saved by [`save_module`] into `module` (names and shapes must match) and
/// return the file's metadata.
pub fn load_module(module: &dyn Module, path: &Path) -> Result<HashMap<String, String>> {
    let loaded = read(path)?;
    load_named(module.state_dict(), &loaded.tensors, "", &path.display().to_string())?;
    Ok(loaded.metadata)
}

/// The metadata of a safetensors file (its `format` says what it holds), read without loading
/// it into a model.
pub fn file_metadata(path: &Path) -> Result<HashMap<String, String>> {
    Ok(read(path)?.metadata)
}

/// [`load_module`] from the bytes of a safetensors file (weights built into a binary);
/// `name` says where they came from in error messages.
pub fn load_module_bytes(module: &dyn Module, bytes: &[u8], name: &str) -> Result<HashMap<String, String>> {
    let loaded = parse(bytes, name)?;
    load_named(module.state_dict(), &loaded.tensors, "", name)?;
    Ok(loaded.metadata)
}

/// Rebuild a trainer from a checkpoint, ready to continue. `train_len` is the size of the
/// training split, which must be the one the run started with.
pub fn load_checkpoint(path: &Path, train_len: usize) -> Result<Trainer> {
    load_checkpoint_bytes(&read_bytes(path)?, &path.display().to_string(), train_len)
}

/// [`load_checkpoint`] from the bytes of a checkpoint file; `name` says where they came from
/// in error messages.
///
/// Never panics on bad bytes: a file that is not safetensors, tensors whose byte length does
/// not match their dtype and shape, a missing or invalid configuration, tensors of another
/// architecture, and optimiser or data-order state that does not fit are all errors. The
/// networks are built only once the file is seen to hold weights of the width its
/// configuration names, so a small file cannot make the loader allocate a huge model.
pub fn load_checkpoint_bytes(bytes: &[u8], name: &str, train_len: usize) -> Result<Trainer> {
    let loaded = parse(bytes, name)?;
    if loaded.metadata.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("{name} is not an earthmover training checkpoint (a generator-only file cannot be resumed)");
    }
    let config = config_of(&loaded, name)?;
    check_width(&loaded, &config, "generator", name)?;
    let mut trainer = Trainer::new(config, train_len)?;
    load_named(trainer.generator.state_dict(), &loaded.tensors, "generator", name)?;
    load_named(trainer.critic.state_dict(), &loaded.tensors, "critic", name)?;
    if let Some(average) = &trainer.generator_ema {
        load_named(average.state_dict(), &loaded.tensors, EMA_PREFIX, name)?;
    }
    for (prefix, optim) in [
        ("generator_optim.", &mut trainer.generator_optim),
        ("critic_optim.", &mut trainer.critic_optim),
    ] {
        let state: HashMap<String, Tensor> = loaded
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        optim
            .load_state_dict(&state)
            .map_err(|e| Error(format!("{name}: {e}")))?;
    }
    load_scalers(&mut trainer, &loaded, name)?;
    // The split's size: recorded as `train_len` since it was, before that known only from an
    // old checkpoint's stored order. Data of another size would resume a different order of
    // images (or run past its end), silently.
    let order = loaded.orders.get("batcher.order").cloned().unwrap_or_default();
    let saved_len = match loaded.metadata.contains_key("train_len") {
        true => Some(metadata_value::<usize>(&loaded, "train_len", name)?),
        false => (!order.is_empty()).then_some(order.len()),
    };
    if let Some(saved) = saved_len.filter(|&saved| saved != train_len) {
        bail!(
            "{name}: the run was trained on {saved} images, but this training split has {train_len}; \
             resume it with the data it started with"
        );
    }
    let position: u64 = metadata_value(&loaded, "batcher_position", name)?;
    let epoch: u64 = metadata_value(&loaded, "batcher_epoch", name)?;
    if position > train_len as u64 {
        bail!("{name}: data position {position} is past the {train_len} images of this training split");
    }
    let position = epoch
        .checked_mul(train_len as u64)
        .and_then(|p| p.checked_add(position))
        .ok_or_else(|| Error(format!("{name}: data epoch {epoch} is out of range")))?;
    trainer.order = ShuffledOrder {
        position,
        ..trainer.order.clone()
    };
    trainer.iteration = metadata_value(&loaded, "iteration", name)?;
    trainer.seconds_before = metadata_value(&loaded, "seconds", name)?;
    if !(trainer.seconds_before >= 0.0 && trainer.seconds_before.is_finite()) {
        bail!(
            "{name}: checkpoint metadata `seconds` is {}, not a training time",
            trainer.seconds_before
        );
    }
    Ok(trainer)
}

/// Refuse a file whose configuration names a DCGAN width that its own weights do not have,
/// before the networks are built: the largest weight, `deconv1.weight` of shape
/// `[4 dim, 2 dim, 5, 5]`, must be in the file, so the networks built are no larger than a few
/// times the file itself. (The MLP networks have a fixed size.)
fn check_width(loaded: &Loaded, config: &TrainConfig, prefix: &str, name: &str) -> Result<()> {
    if config.model != ModelKind::Dcgan {
        return Ok(());
    }
    let key = if prefix.is_empty() {
        "deconv1.weight".to_string()
    } else {
        format!("{prefix}.deconv1.weight")
    };
    let expected = config.dim.checked_mul(4).map(|four| [four, four / 2, 5, 5]);
    let found = loaded.tensors.get(&key).map(|t| t.shape());
    if expected.is_none() || found != expected.as_ref().map(|e| &e[..]) {
        bail!(
            "{name}: its configuration names a DCGAN of width {}, but its tensor `{key}` {}: the checkpoint was \
             saved from a different architecture, or is corrupt",
            config.dim,
            found.map_or("is missing".to_string(), |s| format!("has shape {s:?}"))
        );
    }
    Ok(())
}

/// What a generator file holds: the average of the generator's weights, or the weights as
/// trained.
fn weights_kind(config: &TrainConfig) -> &'static str {
    match config.ema {
        Some(_) => "exponential moving average",
        None => "as trained",
    }
}

/// Write the generator of a training checkpoint or generator file (the one [`load_generator`]
/// loads) to `out` as a generator file with its weights in `dtype`: in bf16 or f16 the file is
/// half the size of f32's. It loads back into a generator of any dtype ([`load_generator`],
/// `sample`, `eval`: each weight is converted, exactly when widened) and into PyTorch's twin
/// with `load_state_dict(strict=True)`. The metadata keeps the configuration, the iteration
/// and which weights they are, and adds the dtype.
pub fn export_generator(source: &Path, dtype: DType, out: &Path) -> Result<()> {
    let bytes = read_bytes(source)?;
    let name = source.display().to_string();
    let (generator, config) = load_generator_bytes(&bytes, &name)?;
    let iteration: u64 = metadata_value(&parse(&bytes, &name)?, "iteration", &name)?;
    let tensors = generator
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, Raw::from_tensor(&t.to_dtype(dtype))))
        .collect();
    let config_json = serde_json::to_string(&config).expect("the configuration serialises");
    let metadata = HashMap::from([
        ("format".to_string(), GENERATOR_FORMAT.to_string()),
        ("config".to_string(), config_json),
        ("iteration".to_string(), iteration.to_string()),
        ("weights".to_string(), weights_kind(&config).to_string()),
        ("dtype".to_string(), dtype.name().to_string()),
    ]);
    write_atomic(out, &serialize(tensors, metadata)?)
}

/// Load the generator that draws a run's samples from a training checkpoint (the average of
/// its weights when the run keeps one) or from a generator file, with its configuration.
pub fn load_generator(path: &Path) -> Result<(Generator, TrainConfig)> {
    load_generator_bytes(&read_bytes(path)?, &path.display().to_string())
}

/// [`load_generator`] from the bytes of a checkpoint or generator file; `name` says where they
/// came from in error messages. Bad bytes are errors, as for [`load_checkpoint_bytes`].
pub fn load_generator_bytes(bytes: &[u8], name: &str) -> Result<(Generator, TrainConfig)> {
    let loaded = parse(bytes, name)?;
    let config = config_of(&loaded, name)?;
    let prefix = match loaded.metadata.get("format").map(String::as_str) {
        Some(FORMAT) if config.ema.is_some() => EMA_PREFIX,
        Some(FORMAT) => "generator",
        Some(GENERATOR_FORMAT) => "",
        _ => bail!("{name} is not an earthmover checkpoint or generator file"),
    };
    check_width(&loaded, &config, prefix, name)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let generator = Generator::new(config.model, config.dim, Init::PyTorch, &mut rng);
    load_named(generator.state_dict(), &loaded.tensors, prefix, name)?;
    Ok((generator, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Algo;

    fn tiny_trainer(dim: usize) -> Trainer {
        let mut config = TrainConfig::new(Algo::WganGp);
        config.dim = dim;
        Trainer::new(config, 100).unwrap()
    }

    /// A checkpoint file in a folder of its own, removed with the folder when the test ends
    /// (whether it passes or panics), so that test runs leave nothing in the temporary folder.
    struct ScratchFile {
        dir: std::path::PathBuf,
        file: std::path::PathBuf,
    }

    impl std::ops::Deref for ScratchFile {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.file
        }
    }

    impl AsRef<Path> for ScratchFile {
        fn as_ref(&self) -> &Path {
            &self.file
        }
    }

    impl Drop for ScratchFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn scratch(name: &str) -> ScratchFile {
        let dir = std::env::temp_dir().join(format!("em-ckpt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.safetensors");
        ScratchFile { dir, file }
    }

    #[test]
    fn a_checkpoint_loads_back_to_identical_weights() {
        let trainer = tiny_trainer(4);
        let path = scratch("roundtrip");
        save_checkpoint(&trainer, &path).unwrap();
        let loaded = load_checkpoint(&path, 100).unwrap();
        for (a, b) in trainer
            .generator
            .state_dict()
            .iter()
            .chain(&trainer.critic.state_dict())
            .zip(loaded.generator.state_dict().iter().chain(&loaded.critic.state_dict()))
        {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_vec_f32(), b.1.to_vec_f32(), "{}", a.0);
        }
        let (generator, config) = load_generator(&path).unwrap();
        assert_eq!(config, trainer.config);
        assert_eq!(
            generator.parameters()[0].to_vec_f32(),
            trainer.generator.parameters()[0].to_vec_f32()
        );
    }

    /// A diverged iteration may leave non-finite weights (its losses are read at its end):
    /// they are refused, and the last good file stays as it was.
    #[test]
    fn non_finite_weights_are_never_saved() {
        let trainer = tiny_trainer(4);
        let path = scratch("non-finite");
        save_checkpoint(&trainer, &path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let (name, weight) = trainer.critic.named_parameters().remove(0);
        weight.set_data(&weight.mul_scalar(f64::NAN));
        let err = save_checkpoint(&trainer, &path).unwrap_err().0;
        assert!(
            err.contains(&format!("critic.{name}")) && err.contains("non-finite"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), good);
    }

    /// The data order is its position: a checkpoint taken mid-epoch resumes at that position
    /// of the same epoch's order.
    #[test]
    fn a_checkpoint_keeps_the_position_in_the_data_order() {
        let mut trainer = tiny_trainer(4);
        trainer.order.position = 3 * 100 + 42;
        let path = scratch("order");
        save_checkpoint(&trainer, &path).unwrap();
        let loaded = load_checkpoint(&path, 100).unwrap();
        assert_eq!(loaded.order, trainer.order);
        // A split of another size, smaller or larger, would resume another order: refused.
        for other in [40, 200] {
            let err = load_checkpoint(&path, other).err().expect("another split").0;
            assert!(
                err.contains(&format!("trained on 100 images, but this training split has {other}")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_generator_exported_in_16_bits_is_half_the_size_and_loads_back_rounded() {
        let trainer = tiny_trainer(4);
        let checkpoint = scratch("export");
        save_checkpoint(&trainer, &checkpoint).unwrap();
        let f32_file = checkpoint.with_file_name("g32.safetensors");
        export_generator(&checkpoint, DType::F32, &f32_file).unwrap();
        let f32_size = std::fs::metadata(&f32_file).unwrap().len();
        for dtype in [DType::BF16, DType::F16] {
            let out = checkpoint.with_file_name(format!("g-{dtype}.safetensors"));
            export_generator(&checkpoint, dtype, &out).unwrap();
            let size = std::fs::metadata(&out).unwrap().len();
            assert!(
                size * 10 < f32_size * 6,
                "{dtype}: {size} bytes against f32's {f32_size}"
            );
            assert_eq!(file_metadata(&out).unwrap()["dtype"], dtype.name());
            // Loaded into an f32 generator: each weight is the f32 weight rounded to `dtype`.
            let (generator, config) = load_generator(&out).unwrap();
            assert_eq!(config, trainer.config);
            for ((name, got), (_, want)) in generator.state_dict().iter().zip(&trainer.sampler().state_dict()) {
                assert_eq!(got.dtype(), DType::F32, "{name}");
                assert_eq!(got.to_vec_f32(), want.to_dtype(dtype).to_vec_f32(), "{name}");
            }
            // Exporting the export again changes no tensor.
            let again = checkpoint.with_file_name(format!("g-{dtype}-again.safetensors"));
            export_generator(&out, dtype, &again).unwrap();
            let (first, second) = (read(&out).unwrap().tensors, read(&again).unwrap().tensors);
            assert_eq!(first.len(), second.len());
            for (name, t) in &first {
                let same =
                    t.dtype() == dtype && second[name].dtype() == dtype && t.to_vec_f64() == second[name].to_vec_f64();
                assert!(same, "{dtype}: {name} changed in a second export");
            }
        }
    }

    #[test]
    fn a_checkpoint_of_another_architecture_is_refused() {
        let path = scratch("arch");
        save_checkpoint(&tiny_trainer(4), &path).unwrap();
        // Rewrite the metadata to claim dim 8: the tensors no longer fit.
        rewrite_metadata(&path, |metadata| {
            let config = metadata["config"].replace("\"dim\":4", "\"dim\":8");
            metadata.insert("config".into(), config);
        });
        let err = load_checkpoint(&path, 100)
            .err()
            .expect("a dim-4 checkpoint cannot fill a dim-8 model")
            .0;
        assert!(err.contains("different architecture") && err.contains("shape"), "{err}");
        let err = load_generator(&path).err().expect("nor its generator").0;
        assert!(err.contains("different architecture"), "{err}");
    }

    /// Rewrite the metadata of the checkpoint at `path` with `edit`, keeping its tensors.
    fn rewrite_metadata(path: &Path, edit: impl FnOnce(&mut HashMap<String, String>)) {
        let bytes = std::fs::read(path).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut metadata = header.metadata().clone().unwrap();
        edit(&mut metadata);
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let raws: Vec<(String, Raw)> = file
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                (
                    n,
                    Raw {
                        dtype: v.dtype(),
                        shape: v.shape().to_vec(),
                        bytes: v.data().to_vec(),
                    },
                )
            })
            .collect();
        std::fs::write(path, serialize(raws, metadata).unwrap()).unwrap();
    }

    #[test]
    fn an_f16_checkpoint_keeps_its_loss_scales_and_one_without_them_still_loads() {
        let mut config = TrainConfig::new(Algo::WganGp);
        (config.dim, config.precision) = (4, crate::train::Precision::F16);
        let mut trainer = Trainer::new(config, 100).unwrap();
        let critic = GradScaler::with_options(512.0, 4.0, 0.25, 9).unwrap();
        trainer.critic_scaler = Some(critic.clone());
        let path = scratch("scalers");
        save_checkpoint(&trainer, &path).unwrap();
        let loaded = load_checkpoint(&path, 100).unwrap();
        assert_eq!(loaded.critic_scaler, Some(critic));
        assert_eq!(loaded.generator_scaler, Some(GradScaler::new()));
        // Written before the scalers were saved: the run goes on from the initial scale.
        rewrite_metadata(&path, |m| {
            m.remove(SCALERS_KEY);
        });
        let loaded = load_checkpoint(&path, 100).unwrap();
        assert_eq!(loaded.critic_scaler.map(|s| s.get_scale()), Some(65536.0));
        // A state that cannot scale, and scalers in a run without them, are refused.
        save_checkpoint(&trainer, &path).unwrap();
        rewrite_metadata(&path, |m| {
            let bad = m[SCALERS_KEY].replace("\"scale\":512.0", "\"scale\":-1.0");
            m.insert(SCALERS_KEY.into(), bad);
        });
        let err = load_checkpoint(&path, 100).err().expect("a negative scale").0;
        assert!(err.contains("the critic's loss scaler: loss scale must be"), "{err}");
        save_checkpoint(&trainer, &path).unwrap();
        rewrite_metadata(&path, |m| {
            let f32_config = m["config"].replace("\"precision\":\"f16\"", "\"precision\":\"f32\"");
            m.insert("config".into(), f32_config);
        });
        let err = load_checkpoint(&path, 100).err().expect("scalers in an f32 run").0;
        assert!(
            err.contains("holds loss scalers") && err.contains("trains in f32"),
            "{err}"
        );
    }
}
