//! Log-probabilities and the losses built on them.

use crate::Tensor;

impl Tensor {
    /// `x - log(sum(exp(x)))` along `dim`, computed stably.
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        let d = self.dim_index(dim, "log_softmax") as isize;
        if self.shape()[d as usize] == 0 {
            // No classes: nothing to normalise (and no maximum to shift by).
            return self.mul_scalar(1.0);
        }
        // Shifting by a constant does not change the result, so the max is detached: it keeps
        // exp from overflowing and adds nothing to the graph.
        let shift = self.max_dims(&[d], true).detach();
        let shifted = self.sub(&shift);
        shifted.sub(&shifted.exp().sum_dims(&[d], true).log())
    }

    /// Mean cross-entropy of logits `[N, C]` against integer class labels.
    pub fn cross_entropy(&self, labels: &[usize]) -> Tensor {
        assert_eq!(
            self.rank(),
            2,
            "cross_entropy: logits must be [N, C], got {:?}",
            self.shape()
        );
        let (n, c) = (self.shape()[0], self.shape()[1]);
        assert_eq!(
            labels.len(),
            n,
            "cross_entropy: {} labels for {n} rows of logits",
            labels.len()
        );
        let mut one_hot = vec![0.0; n * c];
        for (i, &l) in labels.iter().enumerate() {
            assert!(l < c, "cross_entropy: label {l} out of range for {c} classes");
            one_hot[i * c + l] = 1.0;
        }
        let one_hot = Tensor::from_f64_slice(&one_hot, &[n, c], self.dtype())
            .to_device(self.device())
            .expect("the device of the logits");
        // Picked out with `where`, not multiplied by the one-hot mask: a logit of -inf (a masked
        // class) has a log-probability of -inf, and -inf * 0 would make the loss NaN.
        let log_probs = self.log_softmax(1);
        Tensor::where_cond(&one_hot, &log_probs, &log_probs.zeros_like())
            .sum()
            .mul_scalar(-1.0 / n as f64)
    }

    /// Mean binary cross-entropy between `sigmoid(self)` and `targets` in [0, 1], computed from
    /// the logits without overflow: `softplus(x) - x t`.
    pub fn binary_cross_entropy_with_logits(&self, targets: &Tensor) -> Tensor {
        assert_eq!(
            self.shape(),
            targets.shape(),
            "binary_cross_entropy_with_logits: logits {:?} and targets {:?} differ",
            self.shape(),
            targets.shape()
        );
        self.softplus().sub(&self.mul(targets)).mean()
    }
}
