//! Work done once per object rather than once per detection: every detection of one object in a
//! frame shares the object's template points and features. Used by the model and its fine
//! stage, so it sits below both.
use tch::Tensor;

/// `f` of the batch's inputs, computed on the first batch element alone and repeated when every
/// input holds the same values for all elements (a frame's detections of one object share the
/// object's template points and features), else on the whole batch. Results are the same
/// either way, up to float rounding.
pub(crate) fn once_per_object<T: Repeat>(inputs: &[&Tensor], f: impl Fn(&[Tensor]) -> T) -> T {
    let b = inputs[0].size()[0];
    let shared = b > 1 && inputs.iter().all(|t| t.eq_tensor(&t.narrow(0, 0, 1)).all().int64_value(&[]) != 0);
    if shared {
        f(&inputs.iter().map(|t| t.narrow(0, 0, 1)).collect::<Vec<_>>()).repeat_batch(b)
    } else {
        f(&inputs.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>())
    }
}

/// Results whose first dimension is the batch, repeated from one element to `b`.
pub(crate) trait Repeat {
    fn repeat_batch(self, b: i64) -> Self;
}

impl Repeat for Tensor {
    fn repeat_batch(self, b: i64) -> Self {
        let mut reps = vec![1; self.dim()];
        reps[0] = b;
        self.repeat(reps)
    }
}

impl<A: Repeat, B: Repeat> Repeat for (A, B) {
    fn repeat_batch(self, b: i64) -> Self {
        (self.0.repeat_batch(b), self.1.repeat_batch(b))
    }
}

impl<A: Repeat, B: Repeat, C: Repeat> Repeat for (A, B, C) {
    fn repeat_batch(self, b: i64) -> Self {
        (self.0.repeat_batch(b), self.1.repeat_batch(b), self.2.repeat_batch(b))
    }
}
