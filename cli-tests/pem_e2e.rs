//! The whole PEM (`Pem::forward`) against SAM-6D's own `pose_estimation_model.Net` at random
//! weights and reduced sizes, stage by stage, plus the batch-size edge cases.
//!
//! Fixture: `testdata/pem-fixtures/e2e_pem.safetensors`, made by
//! `scripts/gen_pem_fixtures_e2e.py` (see its doc): all 462 weights under the official names
//! (float16 values), a batch of two synthetic detections (`input.*`: the image at 56×56 8-bit
//! levels, enlarged 4× by repetition and mapped to (x − 128)/64 here as there; observed, template
//! and CAD points; template features; the hypothesis uniforms the reference drew) and the
//! reference's per-stage results (`output.*`).
//!
//! Tolerances (issue 8): features and similarities 1e-4 max abs, FPS indices exact, poses 1e-3
//! (R and t), the pose score 1e-4. Every stage is measured and printed before any assertion, so
//! a failure shows which stage diverged first.
use sam6d::pipeline::pem::coarse_point_matching::MatchingConfig;
use sam6d::pipeline::pem::feature_extraction::{FeatureExtraction, FeatureExtractionConfig};
use sam6d::pipeline::pem::geo_embedding::GeoEmbeddingConfig;
use sam6d::pipeline::pem::model::{sample_points_features, tolerated_missing, Pem, PemBatch, PemConfig, PREFIXES};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

use crate::max_abs;

const FEATURE_TOL: f64 = 1e-4;
const POSE_TOL: f64 = 1e-3;
const SCORE_TOL: f64 = 1e-4;
/// The radius is one max over float32 norms: it must agree to float32 rounding.
const RADIUS_TOL: f64 = 1e-6;

/// The generator's reduced `model` config (gen_pem_fixtures_e2e.py: FE_EMBED.. N_MODEL).
fn config() -> PemConfig {
    let stage = MatchingConfig { input_dim: 16, hidden_dim: 32, out_dim: 24, nblock: 3 };
    PemConfig {
        // The reference's ViT keeps 12 blocks / 12 heads whatever the width.
        feature_extraction: FeatureExtractionConfig { embed_dim: 24, depth: 12, heads: 12, out_dim: 16, num_classes: 1000 },
        geo_embedding: GeoEmbeddingConfig { hidden_dim: 32, ..Default::default() },
        coarse: stage.clone(),
        fine: stage,
        coarse_npoint: 32,
        fine_npoint: 256,
        n_proposal1: 200,
        n_proposal2: 20,
    }
}

struct Fixture {
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn open() -> Fixture {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pem-fixtures/e2e_pem.safetensors");
        let tensors = Tensor::read_safetensors(&path).unwrap_or_else(|e| panic!("{}: {e} (scripts/gen_pem_fixtures_e2e.py makes it)", path.display()));
        Fixture { tensors: tensors.into_iter().collect() }
    }

    fn raw(&self, k: &str) -> Tensor {
        self.tensors.get(k).unwrap_or_else(|| panic!("e2e_pem.safetensors lacks {k}")).shallow_clone()
    }

    fn get(&self, k: &str) -> Tensor {
        self.raw(k).to_kind(Kind::Float)
    }

    /// The network with the fixture's weights, loaded strictly as `Pem::load` does: every
    /// variable filled, every weight placed (BatchNorm step counters aside).
    fn pem(&self) -> (nn::VarStore, Pem) {
        let vs = nn::VarStore::new(Device::Cpu);
        let pem = Pem::new(&vs.root(), &config());
        let weights: Vec<(String, Tensor)> = self.tensors.iter().filter(|(k, _)| !k.starts_with("input.") && !k.starts_with("output.")).map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
        assert_eq!(weights.len(), 462, "the fixture holds every tensor of the checkpoint layout");
        let report = sam6d::nn::load_named(&vs, &weights, PREFIXES).unwrap();
        let outside: Vec<&String> = weights.iter().map(|(k, _)| k).filter(|k| !PREFIXES.iter().any(|p| k.starts_with(p))).collect();
        let missing: Vec<&String> = report.missing.iter().filter(|n| !tolerated_missing(n)).collect();
        assert!(missing.is_empty() && report.unexpected.is_empty() && outside.is_empty(), "missing {missing:?}, unexpected {:?} {outside:?}", report.unexpected);
        (vs, pem)
    }

    /// Detections `items` of the fixture's batch.
    fn batch(&self, items: &[i64]) -> PemBatch {
        let idx = Tensor::from_slice(items);
        let pick = |t: Tensor| t.index_select(0, &idx);
        let rgb56 = self.raw("input.rgb56_u8").to_kind(Kind::Float);
        let rgb = (rgb56.repeat_interleave_self_int(4, 2, None).repeat_interleave_self_int(4, 3, None) - 128.0) / 64.0;
        PemBatch {
            pts: pick(self.get("input.pts")),
            rgb: pick(rgb),
            rgb_choose: pick(self.raw("input.rgb_choose")),
            model: pick(self.get("input.model")),
            dense_po: pick(self.get("input.dense_po")),
            dense_fo: pick(self.get("input.dense_fo")),
        }
    }

    fn output(&self, k: &str, items: &[i64]) -> Tensor {
        let t = self.raw(&format!("output.{k}"));
        let t = if t.kind() == Kind::Int64 { t } else { t.to_kind(Kind::Float) };
        t.index_select(0, &Tensor::from_slice(items))
    }

    fn uniforms(&self, items: &[i64]) -> Tensor {
        self.get("input.uniforms").index_select(0, &Tensor::from_slice(items))
    }
}

/// Measured stages: (name, error, tolerance); printed as they come, asserted at the end.
#[derive(Default)]
struct Report(Vec<(String, f64, f64)>);

impl Report {
    fn close(&mut self, what: &str, got: &Tensor, want: &Tensor, tol: f64) {
        assert_eq!(got.size(), want.size(), "{what}: shape");
        let err = max_abs(got, want);
        let scale = want.abs().max().double_value(&[]);
        eprintln!("{what}: max abs error {err:.2e} (values up to {scale:.3}, tolerance {tol:.0e})");
        self.0.push((what.to_string(), err, tol));
    }

    fn exact(&mut self, what: &str, got: &Tensor, want: &Tensor) {
        assert_eq!(got.size(), want.size(), "{what}: shape");
        let differ = got.to_kind(Kind::Int64).ne_tensor(&want.to_kind(Kind::Int64)).sum(Kind::Int64).int64_value(&[]);
        eprintln!("{what}: {differ} of {} indices differ", want.numel());
        self.0.push((what.to_string(), differ as f64, 0.0));
    }

    fn assert_all(&self) {
        let failed: Vec<String> = self.0.iter().filter(|(_, e, t)| e > t || e.is_nan()).map(|(w, e, t)| format!("{w} ({e:.2e} > {t:.0e})")).collect();
        assert!(failed.is_empty(), "diverging stages, first listed first: {}", failed.join("; "));
    }
}

/// Every stage of `forward` on detections `items` (a sub-batch of the fixture's: the network
/// treats detections independently, so the reference's B = 2 results hold per detection).
fn compare_forward(fx: &Fixture, pem: &Pem, items: &[i64]) -> Report {
    let batch = fx.batch(items);
    let mut r = Report::default();
    // Feature extraction: the dense observed features (not in PemOutput; same public calls as
    // forward makes).
    let dense_fm = tch::no_grad(|| FeatureExtraction::features_at(&pem.feature_extraction.forward(&batch.rgb), &batch.rgb_choose));
    r.close("dense observed features", &dense_fm, &fx.output("dense_fm", items), FEATURE_TOL);

    let out = pem.forward(&batch, &fx.uniforms(items));
    r.close("radius", &out.radius, &fx.output("radius", items), RADIUS_TOL);
    r.exact("FPS indices, observed", &out.fps_idx_m, &fx.output("fps_idx_m", items));
    r.exact("FPS indices, template", &out.fps_idx_o, &fx.output("fps_idx_o", items));
    r.close("coarse similarity", &out.coarse_similarity, &fx.output("coarse_similarity", items), FEATURE_TOL);
    r.close("init_R", &out.init_r, &fx.output("init_R", items), POSE_TOL);
    r.close("init_t (normalised units)", &out.init_t, &fx.output("init_t", items), POSE_TOL);
    r.close("fine similarity", &out.fine_similarity, &fx.output("fine_similarity", items), FEATURE_TOL);
    r.close("pred_R", &out.pred_r, &fx.output("pred_R", items), POSE_TOL);
    r.close("pred_t (m)", &out.pred_t, &fx.output("pred_t", items), POSE_TOL);
    r.close("pred_pose_score", &out.pose_score, &fx.output("pred_pose_score", items), SCORE_TOL);
    r
}

#[test]
fn pem_forward_matches_reference_net() {
    let fx = Fixture::open();
    let (_vs, pem) = fx.pem();
    compare_forward(&fx, &pem, &[0, 1]).assert_all();
}

/// The fine stage alone, started from the reference's coarse pose: checks it even if a
/// legitimate float difference ever flipped one of the coarse stage's discrete choices.
#[test]
fn pem_fine_stage_from_reference_coarse_pose() {
    let fx = Fixture::open();
    let (_vs, pem) = fx.pem();
    let items = [0i64, 1];
    let batch = fx.batch(&items);
    let _guard = tch::no_grad_guard();
    let cfg = pem.config();
    let dense_fm = FeatureExtraction::features_at(&pem.feature_extraction.forward(&batch.rgb), &batch.rgb_choose);
    let radius = fx.output("radius", &items);
    let scale = (&radius + 1e-6).view([-1, 1, 1]);
    let (p1, p2, model) = (&batch.pts / &scale, &batch.dense_po / &scale, &batch.model / &scale);
    let bg = Tensor::full([2, 1, 3], 100.0, (Kind::Float, Device::Cpu));
    let (sparse_pm, _, idx_m) = sample_points_features(&p1, &dense_fm, cfg.coarse_npoint);
    let (sparse_po, _, idx_o) = sample_points_features(&p2, &batch.dense_fo, cfg.coarse_npoint);
    let geo_m = pem.geo_embedding.forward(&Tensor::cat(&[&bg, &sparse_pm], 1));
    let geo_o = pem.geo_embedding.forward(&Tensor::cat(&[&bg, &sparse_po], 1));
    let fine = pem.fine_point_matching.forward(&p1, &dense_fm, &geo_m, &idx_m, &p2, &batch.dense_fo, &geo_o, &idx_o, &fx.output("init_R", &items), &fx.output("init_t", &items), &model);
    let mut r = Report::default();
    r.close("fine similarity (reference coarse pose)", &fine.similarity, &fx.output("fine_similarity", &items), FEATURE_TOL);
    r.close("pred_R (reference coarse pose)", &fine.r, &fx.output("pred_R", &items), POSE_TOL);
    r.close("pred_t (m, reference coarse pose)", &(&fine.t * (&radius + 1e-6).view([-1, 1])), &fx.output("pred_t", &items), POSE_TOL);
    r.close("pred_pose_score (reference coarse pose)", &fine.pose_score, &fx.output("pred_pose_score", &items), SCORE_TOL);
    r.assert_all();
}

/// A single detection (B = 1; the reference's ISM side crashes on a single proposal, Q3) runs
/// and gives the reference's result for that detection.
#[test]
fn pem_single_detection_matches_reference() {
    let fx = Fixture::open();
    let (_vs, pem) = fx.pem();
    compare_forward(&fx, &pem, &[1]).assert_all();
}

/// No detection (the reference crashes on an empty stack, Q9): an empty batch gives empty
/// results, and the pipeline stage answers an empty list.
#[test]
fn pem_zero_detections_give_empty_results() {
    let fx = Fixture::open();
    let (_vs, pem) = fx.pem();
    for out in [pem.forward(&fx.batch(&[]), &fx.uniforms(&[])), pem.estimate(&fx.batch(&[]))] {
        assert_eq!(out.pred_r.size(), [0, 3, 3]);
        assert_eq!(out.pred_t.size(), [0, 3]);
        assert_eq!(out.pose_score.size(), [0]);
        assert_eq!(out.fps_idx_m.size(), [0, 32]);
        assert_eq!(out.coarse_similarity.size(), [0, 33, 33]);
        assert_eq!(out.fine_similarity.size(), [0, 257, 257]);
    }

    use sam6d::pipeline::pem::stage::{estimate, ObjectPemData};
    let data = ObjectPemData { dense_po: fx.get("input.dense_po").narrow(0, 0, 1), dense_fo: fx.get("input.dense_fo").narrow(0, 0, 1), model_points: fx.get("input.model").get(0), radius_cad_m: 0.06 };
    let (w, h) = (64usize, 48usize);
    let frame = sam6d::pipeline::Frame::new(image::RgbImage::new(w as u32, h as u32), sam6d::io::DepthMm { width: w, height: h, mm: vec![0.0; w * h] }, sam6d::io::camera::Camera::new(60.0, 60.0, 32.0, 24.0, 1.0).unwrap()).unwrap();
    assert!(estimate(&pem, &data, &frame, &[], &[]).is_empty());
    // A detection without any measured depth is unusable: left out, no crash.
    let mut mask = vec![false; w * h];
    mask[10 * w + 10..10 * w + 30].iter_mut().for_each(|m| *m = true);
    let proposal = sam6d::pipeline::segment::Proposal { width: w, height: h, mask, bbox: [10.0, 10.0, 29.0, 10.0], predicted_iou: 0.9, stability_score: 0.9 };
    assert!(estimate(&pem, &data, &frame, &[proposal], &[(0, 0.8)]).is_empty());
}

/// bf16 against f32 on the fixture's network: how far reduced precision moves each stage (a
/// measurement for the fp32-vs-bf16 question, printed: `cargo test --release --test cli
/// pem_bf16 -- --ignored --nocapture`). At random weights the coarse stage's hypotheses are
/// near ties, and bf16's ~1.6 % error on the similarities picks another one.
#[test]
#[ignore]
fn pem_bf16_agreement() {
    let fx = Fixture::open();
    let (_vs32, pem32) = fx.pem();
    let (mut vs16, pem16) = fx.pem();
    vs16.bfloat16();
    let batch = fx.batch(&[0, 1]);
    let u = fx.uniforms(&[0, 1]);
    let a = pem32.forward(&batch, &u);
    let b16 = PemBatch { rgb: batch.rgb.to_kind(Kind::BFloat16), dense_fo: batch.dense_fo.to_kind(Kind::BFloat16), ..fx.batch(&[0, 1]) };
    let b = pem16.forward(&b16, &u);
    let stages = [
        ("coarse similarity", &a.coarse_similarity, &b.coarse_similarity),
        ("init_R", &a.init_r, &b.init_r),
        ("fine similarity", &a.fine_similarity, &b.fine_similarity),
        ("pred_R", &a.pred_r, &b.pred_r),
        ("pred_t (m)", &a.pred_t, &b.pred_t),
        ("pose_score", &a.pose_score, &b.pose_score),
    ];
    for (name, x, y) in stages {
        let scale = x.to_kind(Kind::Float).abs().max().double_value(&[]);
        eprintln!("{name}: max abs f32 vs bf16 {:.3e} (values up to {scale:.3})", max_abs(&x.to_kind(Kind::Float), &y.to_kind(Kind::Float)));
    }

}
