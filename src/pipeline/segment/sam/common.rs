//! Small pieces the prompt encoder, mask decoder and two-way transformer share.
use tch::nn::{self, Module};
use tch::Tensor;

/// `num_layers` linear layers (`layers.0`, `layers.1`, …) with ReLU between them, optionally a
/// sigmoid at the end (SAM's `MLP`, used by the hypernetworks and the IoU head).
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    sigmoid_output: bool,
}

impl Mlp {
    pub fn new(p: nn::Path, input_dim: i64, hidden_dim: i64, output_dim: i64, num_layers: usize, sigmoid_output: bool) -> Mlp {
        assert!(num_layers >= 1);
        let layers = (0..num_layers)
            .map(|i| {
                let n = if i == 0 { input_dim } else { hidden_dim };
                let k = if i + 1 == num_layers { output_dim } else { hidden_dim };
                nn::linear(&p / "layers" / i as i64, n, k, Default::default())
            })
            .collect();
        Mlp { layers, sigmoid_output }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut x = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x);
            if i < last {
                x = x.relu();
            }
        }
        if self.sigmoid_output {
            x.sigmoid()
        } else {
            x
        }
    }
}

/// An `nn.Embedding` table: only its `weight` (rows × dim) is used, whole.
pub fn embedding(p: nn::Path, rows: i64, dim: i64) -> Tensor {
    p.var("weight", &[rows, dim], nn::Init::Randn { mean: 0.0, stdev: 1.0 })
}
