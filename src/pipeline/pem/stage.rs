//! The PEM in the pipeline: once per object, the template points and their features; per
//! frame, the ISM's detections → observed inputs → one batch through the network → poses.
//!
//! As the reference's custom script: templates sample 5000 pixels per view, detections 2048
//! observed points, the CAD 1024 points; the hypotheses come from torch's RNG seeded with 1; a
//! detection's score is the network's pose score × its ISM score. Unlike the reference, the
//! point samplers are seeded (Q16: repeatable runs) and no usable detection gives an empty
//! answer instead of a crash (Q9).
use super::inputs::{self, PointSampler, SeededSampler};
use super::model::{Pem, PemBatch};
use crate::geometry::Pose;
use crate::geometry::Proposal;
use crate::pipeline::{Frame, ObjectModel};
use crate::pipeline::ism::cache;
use crate::render::templates;
use std::path::Path;
use nalgebra::{Matrix3, Vector3};
use tch::{Kind, Tensor};

/// CAD points of the pose score (`n_sample_model_point`).
pub const MODEL_POINTS: usize = 1024;
/// Seeds of the point samplers and of the hypothesis draws (the reference's `rd_seed` is 1).
const TEMPLATE_SEED: u64 = 1;
const OBSERVED_SEED: u64 = 2;
const MODEL_SEED: u64 = 3;
const TORCH_SEED: i64 = 1;

/// What the PEM needs of one object, made once.
pub struct ObjectPemData {
    /// (1, 2048, 3) metres and (1, 2048, 256): template points and their features.
    pub dense_po: Tensor,
    pub dense_fo: Tensor,
    /// (1024, 3) CAD surface samples, metres.
    pub model_points: Tensor,
    /// Largest norm of the CAD samples, metres: the observed points' outlier gate.
    pub radius_cad_m: f32,
}

/// One detection's pose.
#[derive(Clone, Copy, Debug)]
pub struct PemPose {
    /// Index into the frame's proposals.
    pub index: usize,
    /// Model → camera, millimetres.
    pub pose: Pose,
    /// The network's pose score in [0, 1].
    pub pose_score: f32,
    /// pose_score × the detection's ISM score (the reference's final score).
    pub score: f32,
}

/// [`object_data`], with the template points and features from the cache in `cache_dir` when
/// an entry matches the mesh, the weights file `weights` and the feature extractor's precision
/// (else made and stored).
pub fn object_data_cached(pem: &Pem, weights: &Path, model: &ObjectModel, cache_dir: Option<&Path>) -> anyhow::Result<ObjectPemData> {
    let backbone = format!("{:?}", pem.feature_extraction.kind());
    let key = cache::Key::versioned().str("pem").str(&backbone).file(weights).mesh(&model.mesh);
    if let Some([dense_po, dense_fo]) = cache_dir.and_then(|d| cache::load(d, key, ["dense_po", "dense_fo"], pem.device())) {
        tracing::info!("PEM templates of {} from the cache", model.name);
        let (model_points, radius_cad_m) = model_points(model, pem.device());
        return Ok(ObjectPemData { dense_po, dense_fo, model_points, radius_cad_m });
    }
    let data = object_data(pem, model)?;
    if let Some(dir) = cache_dir {
        cache::store(dir, key, &[("dense_po", &data.dense_po), ("dense_fo", &data.dense_fo)]);
    }
    Ok(data)
}

/// Renders the object's 42 templates and runs them through the feature extractor.
pub fn object_data(pem: &Pem, model: &ObjectModel) -> anyhow::Result<ObjectPemData> {
    let views = templates::render_templates(&model.mesh);
    let mut sampler = SeededSampler::new(TEMPLATE_SEED);
    let mut prepared = Vec::with_capacity(views.len());
    for (i, v) in views.iter().enumerate() {
        // A flat part seen edge-on shows nothing in some views: the others still cover it.
        let Some(t) = inputs::template_input(&v.rgb, &v.mask, &v.xyz, inputs::TEMPLATE_POINTS, &mut sampler) else {
            tracing::debug!("PEM template {i} of {} shows nothing of it: left out", model.name);
            continue;
        };
        let pts = Tensor::from_slice(&t.pts.iter().flatten().copied().collect::<Vec<f32>>()).view([-1, 3]);
        prepared.push((t.rgb, pts, Tensor::from_slice(&t.rgb_choose)));
    }
    anyhow::ensure!(!prepared.is_empty(), "none of the {} template views shows {}: is the mesh empty or degenerate?", views.len(), model.name);
    let refs: Vec<(&Tensor, &Tensor, &Tensor)> = prepared.iter().map(|(a, b, c)| (a, b, c)).collect();
    let (dense_po, dense_fo) = pem.object_features(&refs);
    let (model_points, radius_cad_m) = model_points(model, pem.device());
    Ok(ObjectPemData { dense_po, dense_fo, model_points, radius_cad_m })
}

/// The pose score's CAD samples (metres) and their largest norm.
fn model_points(model: &ObjectModel, device: tch::Device) -> (Tensor, f32) {
    let (samples, _) = model.mesh.sample_surface(MODEL_POINTS, MODEL_SEED);
    let flat: Vec<f32> = samples.iter().flat_map(|p| [p.x / 1000.0, p.y / 1000.0, p.z / 1000.0]).collect();
    let radius_cad_m = samples.iter().map(|p| p.norm() / 1000.0).fold(0.0f32, f32::max);
    (Tensor::from_slice(&flat).view([-1, 3]).to_device(device), radius_cad_m)
}

/// Poses of the detections `(proposal index, ISM score)` in `frame`, in the given order; those
/// without enough measured points are left out.
pub fn estimate(pem: &Pem, data: &ObjectPemData, frame: &Frame, proposals: &[Proposal], detections: &[(usize, f32)]) -> Vec<PemPose> {
    let mut sampler = SeededSampler::new(OBSERVED_SEED);
    let mut kept = Vec::new();
    let (mut pts, mut rgb, mut choose) = (Vec::new(), Vec::new(), Vec::new());
    for &(index, ism_score) in detections {
        let p = &proposals[index];
        if p.width != frame.width() || p.height != frame.height() {
            continue;
        }
        let Some(o) = inputs::observed_input(frame, &p.mask, data.radius_cad_m, inputs::OBSERVED_POINTS, &mut sampler as &mut dyn PointSampler) else {
            tracing::debug!("detection {index}: too few measured points for the PEM");
            continue;
        };
        pts.push(Tensor::from_slice(&o.pts.iter().flatten().copied().collect::<Vec<f32>>()).view([-1, 3]));
        rgb.push(o.rgb);
        choose.push(Tensor::from_slice(&o.rgb_choose));
        kept.push((index, ism_score));
    }
    if kept.is_empty() {
        return Vec::new();
    }
    let b = kept.len() as i64;
    let device = pem.device();
    let batch = PemBatch {
        pts: Tensor::stack(&pts, 0).to_device(device),
        rgb: Tensor::stack(&rgb, 0).to_device(device),
        rgb_choose: Tensor::stack(&choose, 0).to_device(device),
        model: data.model_points.unsqueeze(0).expand([b, -1, -1], false),
        dense_po: data.dense_po.expand([b, -1, -1], false),
        dense_fo: data.dense_fo.expand([b, -1, -1], false),
    };
    tch::manual_seed(TORCH_SEED);
    let out = pem.estimate(&batch);
    let r: Vec<f64> = Vec::try_from(out.pred_r.to_kind(Kind::Double).to_device(tch::Device::Cpu).flatten(0, -1)).expect("rotations");
    let t: Vec<f64> = Vec::try_from(out.pred_t.to_kind(Kind::Double).to_device(tch::Device::Cpu).flatten(0, -1)).expect("translations");
    let s: Vec<f32> = Vec::try_from(out.pose_score.to_kind(Kind::Float).to_device(tch::Device::Cpu).flatten(0, -1)).expect("scores");
    kept.iter()
        .enumerate()
        .map(|(k, &(index, ism_score))| {
            let rot = Matrix3::from_row_slice(&r[9 * k..9 * k + 9]);
            let tr = Vector3::new(t[3 * k], t[3 * k + 1], t[3 * k + 2]) * 1000.0;
            PemPose { index, pose: Pose::new(rot, tr), pose_score: s[k], score: s[k] * ism_score }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::pem::model::PemConfig;

    fn small_pem() -> Pem {
        let cfg = PemConfig::tiny();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        // The VarStore may go: the network's tensors stay alive through their handles.
        Pem::new(&vs.root(), &cfg)
    }

    #[test]
    fn template_data_is_cached_by_mesh_and_weights() {
        tch::manual_seed(0);
        let pem = small_pem();
        let model = ObjectModel::from_mesh("box", crate::geometry::shapes::cuboid(60.0, 40.0, 30.0)).unwrap();
        let dir = std::env::temp_dir().join(format!("sam6d-pem-cache-{}", std::process::id()));
        let weights = dir.join("weights.safetensors");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&weights, b"stand-in weights file").unwrap();
        let made = object_data_cached(&pem, &weights, &model, Some(&dir)).unwrap();
        let cfg = PemConfig::tiny();
        assert_eq!(made.dense_po.size(), [1, cfg.fine_npoint, 3]);
        assert_eq!(made.dense_fo.size(), [1, cfg.fine_npoint, cfg.feature_extraction.out_dim]);
        // Box half-diagonal: sqrt(30² + 20² + 15²) mm.
        assert!((made.radius_cad_m - 0.0391).abs() < 1e-3, "{}", made.radius_cad_m);
        let entries = || std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "safetensors") && e.as_ref().unwrap().path() != weights).count();
        assert_eq!(entries(), 1);
        // A differently initialised network with the same weights file is answered from the
        // cache (the key names the file, as the product loads networks from files).
        tch::manual_seed(1);
        let other_net = small_pem();
        let again = object_data_cached(&other_net, &weights, &model, Some(&dir)).unwrap();
        let diff = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
        assert_eq!(diff(&again.dense_fo, &made.dense_fo), 0.0);
        assert_eq!(diff(&again.dense_po, &made.dense_po), 0.0);
        // A changed weights file is not: the features are made again, by the other network.
        std::fs::write(&weights, b"other weights, other size").unwrap();
        let fresh = object_data_cached(&other_net, &weights, &model, Some(&dir)).unwrap();
        assert!(diff(&fresh.dense_fo, &made.dense_fo) > 1e-4);
        assert_eq!(entries(), 2);
        // Another mesh is another entry.
        let other = ObjectModel::from_mesh("box2", crate::geometry::shapes::cuboid(61.0, 40.0, 30.0)).unwrap();
        object_data_cached(&pem, &weights, &other, Some(&dir)).unwrap();
        assert_eq!(entries(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flat_part_seen_edge_on_in_some_views_still_has_template_data() {
        tch::manual_seed(0);
        let pem = small_pem();
        let sheet = crate::geometry::shapes::cuboid(60.0, 40.0, 0.0);
        let views = templates::render_templates(&sheet);
        assert!(views.iter().any(|v| !v.mask.contains(&true)), "some view sees the sheet edge-on");
        let model = ObjectModel::from_mesh("sheet", sheet).unwrap();
        let data = object_data(&pem, &model).unwrap();
        assert_eq!(data.dense_po.size(), [1, PemConfig::tiny().fine_npoint, 3]);
        // Every template point lies on the sheet (z = 0), none comes from an empty view.
        assert!(data.dense_po.select(2, 2).abs().max().double_value(&[]) < 1e-4);
    }
}
