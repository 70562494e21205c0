//! The fine stage's positional encoding of a point set (reference:
//! `fine_point_matching.PositionalEncoding`; spec: sam6d-pipeline.md §5.9 step 2): a two-scale
//! PointNet++ set abstraction around every point, so that the dense tokens carry their local
//! geometry.
//!
//! Per scale (radius 0.1 with 32 neighbours, 0.2 with 64, in normalised units): ball query among
//! the same points → per neighbour [neighbour − centre, neighbour] (6 channels) → shared MLP
//! 6→32→64→128 (1×1 conv without bias, BatchNorm with running statistics, ReLU) → max over the
//! neighbours. The two 128-channel results are concatenated and mixed by a 1×1 Conv1d 256→d.
//! Parameters: `mlp{1,2}.layer{0,1,2}.conv.weight`, `….normlayer.bn.*`, `mlp3.conv.*`.
use super::point_ops;
use tch::nn;
use tch::{Kind, Tensor};

/// Ball radii and neighbour counts of the two scales (`pe_radius1/2`, `nsample1/2`).
pub const SCALES: [(f64, i64); 2] = [(0.1, 32), (0.2, 64)];

/// Widths of each scale's shared MLP (`SharedMLP([6, 32, 64, 128])`).
const MLP: [i64; 4] = [6, 32, 64, 128];

/// One `pytorch_utils.Conv2d` of a shared MLP: 1×1 conv (no bias) → BatchNorm2d → ReLU.
#[derive(Debug)]
struct ConvBnRelu {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    /// Kept so the checkpoint (which stores it) loads strictly; unused at inference.
    _num_batches_tracked: Tensor,
}

/// BatchNorm's epsilon in the reference's layers.
const BN_EPS: f64 = 1e-5;

impl ConvBnRelu {
    fn new(p: nn::Path, cin: i64, cout: i64) -> Self {
        let bn = &p / "normlayer" / "bn";
        ConvBnRelu {
            conv: nn::conv2d(&p / "conv", cin, cout, 1, nn::ConvConfig { bias: false, ..Default::default() }),
            bn: nn::batch_norm2d(&bn, cout, nn::BatchNormConfig { eps: BN_EPS, ..Default::default() }),
            // int64, as PyTorch stores it, so `weights check` accepts a checkpoint that has it.
            _num_batches_tracked: bn.add("num_batches_tracked", Tensor::zeros([], (tch::Kind::Int64, bn.device())), false),
        }
    }

    /// x: (…, cin), channels last → (…, cout). The 1×1 conv and the inference-mode BatchNorm
    /// are one affine map, applied as a single matmul over the channels: twice as fast on a
    /// CPU as conv → BatchNorm on the (B, C, N, S) layout, equal up to float rounding.
    fn forward(&self, x: &Tensor) -> Tensor {
        let (cout, cin) = (self.conv.ws.size()[0], self.conv.ws.size()[1]);
        let gamma = self.bn.ws.as_ref().expect("affine BatchNorm");
        let beta = self.bn.bs.as_ref().expect("affine BatchNorm");
        let scale = gamma / (&self.bn.running_var + BN_EPS).sqrt();
        let w = self.conv.ws.view([cout, cin]) * scale.unsqueeze(1);
        let b = beta - &self.bn.running_mean * &scale;
        x.linear(&w.to_kind(x.kind()), Some(b.to_kind(x.kind()))).relu()
    }
}

/// `fine_point_matching.PE`.
#[derive(Debug)]
pub struct PositionalEncoding {
    mlps: [Vec<ConvBnRelu>; 2],
    mlp3: nn::Conv1D,
}

impl PositionalEncoding {
    /// Output width 256 (the checkpoint's `hidden_dim`) under `p` (`fine_point_matching.PE`).
    pub fn new(p: nn::Path) -> Self {
        Self::with_out_dim(p, 256)
    }

    pub fn with_out_dim(p: nn::Path, out_dim: i64) -> Self {
        let mlp = |name: &str| (0..3).map(|i| ConvBnRelu::new(&p / name / format!("layer{i}"), MLP[i], MLP[i + 1])).collect::<Vec<_>>();
        PositionalEncoding {
            mlps: [mlp("mlp1"), mlp("mlp2")],
            mlp3: nn::conv1d(&p / "mlp3" / "conv", 2 * MLP[3], out_dim, 1, Default::default()),
        }
    }

    /// points: (B, N, 3) → (B, N, out_dim).
    pub fn forward(&self, points: &Tensor) -> Tensor {
        let kind = self.mlp3.ws.kind();
        let xyz = points.to_kind(Kind::Float);
        let xyz_t = xyz.transpose(1, 2).contiguous(); // (B,3,N)
        let feats: Vec<Tensor> = SCALES
            .iter()
            .zip(&self.mlps)
            .map(|(&(radius, nsample), mlp)| {
                let idx = point_ops::ball_query(radius, nsample, &xyz, &xyz); // (B,N,S)
                let grouped = point_ops::group(&xyz_t, &idx).permute([0, 2, 3, 1]); // (B,N,S,3)
                let relative = &grouped - xyz.unsqueeze(2);
                // Channels last: [neighbour − centre, neighbour] as the reference's 6 channels.
                let mut f = Tensor::cat(&[relative, grouped], 3).to_kind(kind); // (B,N,S,6)
                for layer in mlp {
                    f = layer.forward(&f);
                }
                f.amax(2i64, false) // (B,N,128)
            })
            .collect();
        let (out, cin) = (self.mlp3.ws.size()[0], self.mlp3.ws.size()[1]);
        Tensor::cat(&feats, 2).linear(&self.mlp3.ws.view([out, cin]), self.mlp3.bs.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn names_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let pe = PositionalEncoding::new(vs.root() / "PE");
        let v = vs.variables();
        assert_eq!(v.len(), 2 * 3 * 6 + 2);
        assert_eq!(v["PE.mlp2.layer1.conv.weight"].size(), [64, 32, 1, 1]);
        assert_eq!(v["PE.mlp1.layer2.normlayer.bn.running_var"].size(), [128]);
        assert_eq!(v["PE.mlp1.layer0.normlayer.bn.num_batches_tracked"].size(), Vec::<i64>::new());
        assert_eq!(v["PE.mlp3.conv.weight"].size(), [256, 256, 1]);
        let pts = Tensor::rand([2, 50, 3], (Kind::Float, Device::Cpu)) * 0.3;
        assert_eq!(pe.forward(&pts).size(), [2, 50, 256]);
    }
}
