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
    backward: BackwardFn,
}

impl Node {
    pub(crate) fn new(name: &'static str, inputs: Vec<Tensor>, backward: BackwardFn) -> Node {
        Node {
            name,
            state: Mutex::new(Some(NodeState { inputs, backward })),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn inputs(&self) -> Option<Vec<Tensor>> {
        self.state.lock().expect("node lock").as_ref().map(|s| s.inputs.clone())
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
    let mut grads = run_backward(
        outputs,
        grad_outputs,
        Goal::Inputs(&targets),
        create_graph,
        create_graph,
    );
    inputs
        .iter()
        .map(|t| grads.remove(&t.0.id).map(|f| f.grad).unwrap_or_else(|| t.zeros_like()))
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

    // Post-order DFS from the outputs: `order` lists every tensor after all its inputs, and
    // `relevant` marks the tensors from which a target is reachable: only their gradients are
    // computed.
    let mut order: Vec<Tensor> = Vec::new();
    let mut relevant: HashSet<u64> = HashSet::new();
    let mut visited: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = outputs.iter().map(|t| ((*t).clone(), false)).collect();
    while let Some((t, children_done)) = stack.pop() {
        let id = t.0.id;
        if children_done {
            let mut rel = is_target(&t);
            if let Some(node) = &t.0.grad_fn {
                if let Some(inputs) = node.inputs() {
                    rel |= inputs.iter().any(|i| relevant.contains(&i.0.id));
                }
            }
            if rel {
                relevant.insert(id);
            }
            order.push(t);
            continue;
        }
        if !visited.insert(id) {
            continue;
        }
        let inputs = t.0.grad_fn.as_ref().map(|node| {
            node.inputs().unwrap_or_else(|| {
                panic!(
                    "backward through `{}` a second time: its graph was freed by an earlier backward; \
                     pass retain_graph (or create_graph) to the first one",
                    node.name()
                )
            })
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
                g[i].clone()
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
        let Some(node) = &t.0.grad_fn else { continue };
        let state = if retain_graph {
            None
        } else {
            node.state.lock().expect("node lock").take()
        };
        let guard;
        let (inputs, backward) = match &state {
            Some(s) => (&s.inputs, &s.backward),
            None => {
                guard = node.state.lock().expect("node lock");
                let s = guard
                    .as_ref()
                    .unwrap_or_else(|| panic!("backward through `{}` a second time: its graph was freed", node.name()));
                (&s.inputs, &s.backward)
            }
        };
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
                accumulate(&mut grads, input.0.id, ig);
            }
        }
    }
    found
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
