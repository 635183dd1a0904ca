//! The reverse-mode engine: graph nodes, grad mode, and the backward pass.
//!
//! Each recorded op leaves a [`Node`] on its output tensor: its inputs and its backward rule.
//! A backward pass walks the graph from the outputs in reverse topological order and calls each
//! rule with the gradient of its output. Rules are written with ordinary tensor ops, so when
//! `create_graph` is true the backward pass itself is recorded and can be differentiated
//! again; when false it runs in no-grad mode and records nothing.

use crate::tensor::Tensor;
use crate::{DType, Device};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// What a backward rule receives.
pub struct BackwardArgs<'a> {
    /// The gradient of the loss with respect to the op's output.
    pub grad: &'a Tensor,
    /// The op's output, still attached to the graph (for rules like exp's `g * y`). Passing it
    /// here, instead of capturing it in the rule, avoids a reference cycle.
    pub output: &'a Tensor,
    /// The op's inputs.
    pub inputs: &'a [Tensor],
    /// Which inputs need a gradient; a rule may skip the others and return `None` for them.
    pub needs: &'a [bool],
}

pub(crate) type BackwardFn = Box<dyn Fn(&BackwardArgs) -> Vec<Option<Tensor>> + Send + Sync>;

/// A recorded op. Its state is dropped after a backward pass that does not retain the graph,
/// which frees every tensor the rule kept alive.
pub struct Node {
    name: &'static str,
    state: Mutex<Option<NodeState>>,
}

struct NodeState {
    inputs: Vec<Tensor>,
    /// Each input's [`Tensor::version`] when the op ran: the rule reads the inputs as they are
    /// at backward time, so they must not have been written since.
    versions: Vec<u64>,
    backward: BackwardFn,
}

impl Node {
    pub(crate) fn new(name: &'static str, inputs: Vec<Tensor>, backward: BackwardFn) -> Node {
        let versions = inputs.iter().map(Tensor::version).collect();
        Node {
            name,
            state: Mutex::new(Some(NodeState {
                inputs,
                versions,
                backward,
            })),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn inputs(&self) -> Option<Vec<Tensor>> {
        self.state.lock().expect("node lock").as_ref().map(|s| s.inputs.clone())
    }
}

/// Frees a graph without recursion. Dropped the plain way, a chain of a million ops (a loss
/// summed over iterations without `detach`, say) would drop each node inside the previous
/// one's drop and overflow the stack; here each tensor whose last reference this node held
/// hands its own node's inputs to one loop, and that node then drops with nothing in it.
impl Drop for Node {
    fn drop(&mut self) {
        let Some(state) = self.state.get_mut().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut stack = state.inputs;
        drop(state.backward);
        while let Some(tensor) = stack.pop() {
            let Some(mut inner) = std::sync::Arc::into_inner(tensor.0) else {
                continue;
            };
            let (grad_fn, grad) = inner.take_graph_links();
            if let Some(mut node) = grad_fn.and_then(std::sync::Arc::into_inner) {
                if let Some(state) = node.state.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                    stack.extend(state.inputs);
                }
            }
            stack.extend(grad);
        }
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    /// The ones that seed `backward` and `grad` of a scalar output, by device, dtype and
    /// shape: made once per thread and shared (storage is copy-on-write, and each use gets a
    /// tensor of its own), not a fill launch per backward pass on a GPU.
    static SCALAR_SEEDS: RefCell<HashMap<SeedKey, Tensor>> = RefCell::new(HashMap::new());
}

/// Where a seed lives, its dtype and its shape.
type SeedKey = (Device, DType, Vec<usize>);

/// Ones shaped as the scalar `out`, on its device and in its dtype, recording nothing.
fn scalar_seed(out: &Tensor) -> Tensor {
    SCALAR_SEEDS.with(|seeds| {
        let key = (out.device(), out.dtype(), out.shape().to_vec());
        let mut seeds = seeds.borrow_mut();
        seeds.entry(key).or_insert_with(|| out.ones_like().detach()).detach()
    })
}

/// Whether ops on this thread are recorded for autodiff.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops on this thread are not recorded (PyTorch's `torch.no_grad()`).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    pub fn new() -> Self {
        Self::set(false)
    }
    fn set(enabled: bool) -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(enabled));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Run `f` without recording any op.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// The gradients of `sum_i <outputs[i], grad_outputs[i]>` with respect to each of `inputs`, as
/// PyTorch's `torch.autograd.grad`. `grad_outputs` defaults to ones (so a scalar output needs
/// none). With `create_graph` the results are differentiable (and the graph is retained);
/// without, nothing of the backward pass is recorded. An input the outputs do not depend on
/// gets a zero gradient. Nothing is accumulated into `.grad()`.
pub fn grad(
    outputs: &[&Tensor],
    inputs: &[&Tensor],
    grad_outputs: Option<&[&Tensor]>,
    create_graph: bool,
) -> Vec<Tensor> {
    let targets: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    let grads = run_backward(
        outputs,
        grad_outputs,
        Goal::Inputs(&targets),
        create_graph,
        create_graph,
    );
    inputs
        .iter()
        .map(|t| {
            grads
                .get(&t.0.id)
                .map(|f| f.grad.clone())
                .unwrap_or_else(|| t.zeros_like())
        })
        .collect()
}

impl Tensor {
    /// Accumulate the gradient of this scalar into `.grad()` of every leaf that requires grad,
    /// then free the graph.
    pub fn backward(&self) {
        assert_eq!(
            self.numel(),
            1,
            "backward: output of shape {:?} is not a scalar; use backward_with(grad)",
            self.shape()
        );
        assert!(
            self.requires_grad(),
            "backward: this tensor does not require grad (no input of its graph has requires_grad, or it was computed under no_grad)"
        );
        self.backward_with(&scalar_seed(self), false, false);
    }

    /// Backward from a non-scalar output with its given gradient. `retain_graph` keeps the
    /// graph for another backward pass; `create_graph` records this one for higher derivatives.
    pub fn backward_with(&self, grad_output: &Tensor, retain_graph: bool, create_graph: bool) {
        let leaf_grads = run_backward(
            &[self],
            Some(&[grad_output]),
            Goal::Leaves,
            retain_graph || create_graph,
            create_graph,
        );
        for (leaf, g) in leaf_grads.into_values().filter_map(|g| g.leaf.map(|l| (l, g.grad))) {
            let g = if create_graph { g } else { g.detach() };
            let total = match leaf.grad() {
                Some(old) => {
                    let _guard = (!create_graph).then(NoGradGuard::new);
                    old.add(&g)
                }
                None => g,
            };
            leaf.set_grad(Some(total));
        }
    }
}

enum Goal<'a> {
    /// Accumulate into every leaf that requires grad.
    Leaves,
    /// Return the gradients of these tensors.
    Inputs(&'a [Tensor]),
}

struct Found {
    grad: Tensor,
    leaf: Option<Tensor>,
}

fn run_backward(
    outputs: &[&Tensor],
    grad_outputs: Option<&[&Tensor]>,
    goal: Goal,
    retain_graph: bool,
    create_graph: bool,
) -> HashMap<u64, Found> {
    if let Some(g) = grad_outputs {
        assert_eq!(
            g.len(),
            outputs.len(),
            "grad: {} grad_outputs for {} outputs",
            g.len(),
            outputs.len()
        );
    }
    let target_ids: HashSet<u64> = match &goal {
        Goal::Inputs(t) => t.iter().map(|t| t.0.id).collect(),
        Goal::Leaves => HashSet::new(),
    };
    let is_target = |t: &Tensor| match goal {
        Goal::Leaves => t.is_leaf() && t.requires_grad(),
        Goal::Inputs(_) => target_ids.contains(&t.0.id),
    };

    // Post-order DFS from the outputs: `order` lists every tensor after all its inputs,
    // `relevant` marks the tensors from which a target is reachable (only their gradients are
    // computed), and `expand` those whose op has an input that is: only their rules run. A
    // target's own op runs only when another target lies below it, so `grad` with respect to
    // an intermediate tensor leaves the graph under it as it was (PyTorch's rule), and a
    // target whose graph an earlier backward freed is fine: nothing under it is needed.
    let mut order: Vec<Tensor> = Vec::new();
    let mut relevant: HashSet<u64> = HashSet::new();
    let mut expand: HashSet<u64> = HashSet::new();
    let mut visited: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = outputs.iter().map(|t| ((*t).clone(), false)).collect();
    while let Some((t, children_done)) = stack.pop() {
        let id = t.0.id;
        if children_done {
            let inputs = t.0.grad_fn.as_ref().and_then(|node| node.inputs());
            if inputs.is_some_and(|inputs| inputs.iter().any(|i| relevant.contains(&i.0.id))) {
                expand.insert(id);
            }
            if is_target(&t) || expand.contains(&id) {
                relevant.insert(id);
            }
            order.push(t);
            continue;
        }
        if !visited.insert(id) {
            continue;
        }
        let inputs = t.0.grad_fn.as_ref().and_then(|node| match node.inputs() {
            Some(inputs) => Some(inputs),
            None if is_target(&t) => None,
            None => panic!(
                "backward through `{}` a second time: its graph was freed by an earlier backward; \
                 pass retain_graph (or create_graph) to the first one",
                node.name()
            ),
        });
        stack.push((t, true));
        for i in inputs.into_iter().flatten() {
            if !visited.contains(&i.0.id) {
                stack.push((i, false));
            }
        }
    }

    let _mode = crate::autograd::NoGradGuard::set(create_graph);
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    for (i, out) in outputs.iter().enumerate() {
        let g = match grad_outputs {
            Some(g) => {
                assert_eq!(
                    g[i].shape(),
                    out.shape(),
                    "grad: grad_output of shape {:?} for an output of shape {:?}",
                    g[i].shape(),
                    out.shape()
                );
                // A seed in another dtype is taken in the output's, as every gradient is.
                g[i].to_dtype(out.dtype())
            }
            None => {
                assert_eq!(
                    out.numel(),
                    1,
                    "grad: output of shape {:?} is not a scalar; pass grad_outputs",
                    out.shape()
                );
                scalar_seed(out)
            }
        };
        accumulate(&mut grads, out.0.id, g);
    }

    let mut found: HashMap<u64, Found> = HashMap::new();
    for t in order.iter().rev() {
        let id = t.0.id;
        if !relevant.contains(&id) {
            continue;
        }
        let Some(g) = grads.remove(&id) else { continue };
        if is_target(t) {
            found.insert(
                id,
                Found {
                    grad: g.clone(),
                    leaf: t.is_leaf().then(|| t.clone()),
                },
            );
        }
        let Some(node) = t.0.grad_fn.as_ref().filter(|_| expand.contains(&id)) else {
            continue;
        };
        let state = if retain_graph {
            None
        } else {
            node.state.lock().expect("node lock").take()
        };
        let guard;
        let s = match &state {
            Some(s) => s,
            None => {
                guard = node.state.lock().expect("node lock");
                guard
                    .as_ref()
                    .unwrap_or_else(|| panic!("backward through `{}` a second time: its graph was freed", node.name()))
            }
        };
        check_versions(node.name(), t, s);
        let (inputs, backward) = (&s.inputs, &s.backward);
        let needs: Vec<bool> = inputs.iter().map(|i| relevant.contains(&i.0.id)).collect();
        let input_grads = backward(&BackwardArgs {
            grad: &g,
            output: t,
            inputs,
            needs: &needs,
        });
        assert_eq!(
            input_grads.len(),
            inputs.len(),
            "backward of `{}` returned the wrong number of gradients",
            node.name()
        );
        for ((input, ig), need) in inputs.iter().zip(input_grads).zip(&needs) {
            if let (Some(ig), true) = (ig, need) {
                assert_eq!(
                    ig.shape(),
                    input.shape(),
                    "backward of `{}` gave a gradient of shape {:?} for an input of shape {:?}",
                    node.name(),
                    ig.shape(),
                    input.shape()
                );
                // A rule's products may come out in another dtype (under autocast, say): each
                // input's gradient is taken in the input's dtype, as PyTorch's engine does.
                let ig = if ig.dtype() == input.dtype() {
                    ig
                } else {
                    ig.to_dtype(input.dtype())
                };
                accumulate(&mut grads, input.0.id, ig);
            }
        }
    }
    found
}

/// Panics unless the op's inputs and its output `t` are as the op left them: a rule reads them
/// at backward time, and one written in place since the op ran would give the gradient at the
/// new values, silently wrong (PyTorch raises the same error).
fn check_versions(name: &str, t: &Tensor, state: &NodeState) {
    // Compared first, named only on a mismatch: this runs for every node of every backward pass.
    let changed = (state.inputs.iter().zip(state.versions.iter().copied()))
        .chain(std::iter::once((t, 0)))
        .position(|(tensor, saw)| tensor.version() != saw);
    if let Some(at) = changed {
        let (tensor, saw, which) = match state.inputs.get(at) {
            Some(input) => (input, state.versions[at], format!("its input {at}")),
            None => (t, 0, "its output".to_string()),
        };
        panic!(
            "backward of `{name}`: {which} (shape {:?}, {}) was written in place after the op used it \
             (version {}, the op saw version {saw}), so its gradient would be taken at the new values; \
             compute the gradient before writing the tensor (an optimiser step, copy_, set_data), or write a copy",
            tensor.shape(),
            tensor.dtype(),
            tensor.version()
        );
    }
}

fn accumulate(grads: &mut HashMap<u64, Tensor>, id: u64, g: Tensor) {
    match grads.remove(&id) {
        Some(old) => {
            grads.insert(id, old.add(&g));
        }
        None => {
            grads.insert(id, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::grad;
    use crate::{autocast, DType, OptimizerUpdate, Tensor};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn leaf(values: &[f64]) -> Tensor {
        Tensor::from_vec(values.to_vec(), &[values.len()])
            .unwrap()
            .requires_grad_(true)
    }

    fn constant(values: &[f64]) -> Tensor {
        Tensor::from_vec(values.to_vec(), &[values.len()]).unwrap()
    }

    fn panic_message(f: impl FnOnce()) -> String {
        let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
        // A panic without arguments carries a `&str`, one with them a `String`.
        (err.downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| err.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    }

    #[test]
    fn a_saved_input_written_in_place_is_refused_not_differentiated_at_its_new_value() {
        // d/dw sum(w * b) is b as the op saw it, [3, 4]; after the copy, the rule would read
        // [100, 100].
        let (w, b) = (leaf(&[1.0, 2.0]), constant(&[3.0, 4.0]));
        let y = w.mul(&b).sum();
        b.copy_(&constant(&[100.0, 100.0])).unwrap();
        let message = panic_message(|| y.backward());
        assert!(message.contains("backward of `mul`: its input 1"), "{message}");
        assert!(message.contains("written in place"), "{message}");

        // A GAN's classic slip: stepping a network before the backward pass that read it.
        let (w, x) = (leaf(&[1.0, 2.0]), leaf(&[3.0, 4.0]));
        let y = w.mul(&x).sum();
        w.apply_update(
            Some(&constant(&[1.0, 1.0])),
            &[],
            OptimizerUpdate::Sgd { lr: 0.5, momentum: 0.0 },
        );
        let message = panic_message(|| y.backward());
        assert!(message.contains("its input 0"), "{message}");

        // Writes before the op, after the backward pass, or to tensors outside the graph are fine.
        let (w, b, other) = (leaf(&[1.0, 2.0]), constant(&[0.0, 0.0]), constant(&[0.0]));
        b.copy_(&constant(&[3.0, 4.0])).unwrap();
        let y = w.mul(&b).sum();
        other.add_scalar_(1.0).unwrap();
        y.backward();
        b.copy_(&constant(&[5.0, 6.0])).unwrap();
        assert_eq!(w.grad().unwrap().to_vec_f64(), [3.0, 4.0]);
        assert_eq!(b.version(), 2);
    }

    #[test]
    fn a_tensor_asked_for_twice_gets_its_gradient_twice() {
        let x = leaf(&[1.0, 2.0]);
        let g = grad(&[&x.mul(&x).sum()], &[&x, &x], None, false);
        assert_eq!(g[0].to_vec_f64(), [2.0, 4.0]);
        assert_eq!(g[1].to_vec_f64(), [2.0, 4.0]);
    }

    #[test]
    fn grad_with_respect_to_an_intermediate_tensor_leaves_the_graph_under_it() {
        let x = leaf(&[1.0, 2.0]);
        let h = x.mul_scalar(2.0);
        assert_eq!(grad(&[&h.sum()], &[&h], None, false)[0].to_vec_f64(), [1.0, 1.0]);
        // h's own op did not run, so the graph from x to h is still there.
        h.mul_scalar(3.0).sum().backward();
        assert_eq!(x.grad().unwrap().to_vec_f64(), [6.0, 6.0]);
        // Once that graph is freed, gradients with respect to h still need nothing under it.
        let g = grad(&[&h.mul(&h).sum()], &[&h], None, false);
        assert_eq!(g[0].to_vec_f64(), [4.0, 8.0]);
        // And a target under another target is still reached through it.
        let x = leaf(&[1.0, 2.0]);
        let h = x.mul_scalar(2.0);
        let g = grad(&[&h.square().sum()], &[&h, &x], None, false);
        assert_eq!(g[0].to_vec_f64(), [4.0, 8.0]);
        assert_eq!(g[1].to_vec_f64(), [8.0, 16.0]);
    }

    #[test]
    fn a_long_graph_is_freed_without_recursion() {
        // 200,000 ops dropped on a 256 KiB stack: the recursive drop needed several hundred
        // bytes a node.
        let dropped = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let x = leaf(&[1.0]);
                let mut y = x.clone();
                for _ in 0..200_000 {
                    y = y.add_scalar(1e-6);
                }
                drop(y);
                x.mul_scalar(2.0).sum().backward();
                x.grad().unwrap().to_vec_f64()
            })
            .unwrap()
            .join();
        assert_eq!(dropped.expect("the drop overflowed the stack"), [2.0]);
    }

    #[test]
    fn gradients_come_in_their_inputs_dtype() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requires_grad_(true);
        let seed = Tensor::from_vec(vec![1.0f64, 1.0], &[2]).unwrap();
        x.mul_scalar(3.0).backward_with(&seed, false, false);
        let g = x.grad().unwrap();
        assert_eq!((g.dtype(), g.to_vec_f64()), (DType::F32, vec![3.0, 3.0]));

        // A backward pass under autocast computes its products in bf16; the parameters'
        // gradients still come in f32.
        let w = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.25], &[2, 2])
            .unwrap()
            .requires_grad_(true);
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])
            .unwrap()
            .requires_grad_(true);
        autocast(DType::BF16, || a.matmul(&w).sum().backward());
        assert_eq!(w.grad().unwrap().dtype(), DType::F32);
        assert_eq!(a.grad().unwrap().dtype(), DType::F32);
        assert_eq!(w.grad().unwrap().to_vec_f64(), [4.0, 4.0, 6.0, 6.0]);
    }
}
