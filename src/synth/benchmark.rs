//! The fixed synthetic benchmark set: scenes mixing the given targets (a real CAD model such
//! as obj_000005 plus procedural ones), distractors, occluders, Kinect noise and holes, some
//! with two instances of the same target.
use super::noise::DepthNoise;
use super::rng::Rng;
use super::scene::{generate, NamedMesh, SceneSpec, SceneTarget, SyntheticFrame};
use crate::geometry::shapes;
use rayon::prelude::*;

/// Procedural targets without rotational symmetries (so MSSD/MSPD need no symmetry handling):
/// a mug (the handle breaks the symmetry) and an L-shaped bracket.
pub fn procedural_targets() -> Vec<NamedMesh> {
    vec![NamedMesh::new("mug", shapes::mug(40.0, 95.0, 4.0, 48)), NamedMesh::new("bracket", shapes::bracket(100.0, 70.0, 8.0, 50.0))]
}

/// A printed box (cereal-box proportions, 60 × 160 × 220 mm): its shape is the same under
/// three 180° turns, and only its print tells them apart, as with the boxes of YCB-V. The print
/// is vertex colour, different on every side as on a real box: the front (+x) red above a
/// yellow band, the back blue, the top (+z) green, one narrow side (+y) white, the other orange,
/// the bottom grey.
pub fn printed_box() -> NamedMesh {
    let mut mesh = shapes::tessellated_cuboid(60.0, 160.0, 220.0, 6.0);
    let colors = mesh
        .vertices
        .iter()
        .zip(mesh.normals.as_ref().expect("the shape has normals"))
        .map(|(p, n)| match (n.x.round() as i32, n.y.round() as i32, n.z.round() as i32) {
            (1, _, _) if p.z > -40.0 => [200, 30, 35],
            (1, _, _) => [235, 200, 40],
            (-1, _, _) => [40, 70, 190],
            (_, _, 1) => [40, 160, 70],
            (_, 1, _) => [235, 235, 230],
            (_, -1, _) => [230, 120, 30],
            _ => [150, 150, 150],
        })
        .collect();
    mesh.colors = Some(colors);
    NamedMesh::new("printed_box", mesh)
}

/// Scene `i` of the set for `seed`: target `i mod n` (two instances in every other block of
/// three scenes), often a second target, 2–5 distractors, occluders in three scenes of four,
/// Kinect noise at 0.6–1.4× strength, a 1-px depth/colour misregistration in one of six.
pub fn benchmark_spec(seed: u64, i: usize, targets: &[NamedMesh]) -> SceneSpec {
    assert!(!targets.is_empty(), "the benchmark needs at least one target");
    let mut rng = Rng::new(seed.wrapping_add((i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)));
    let n = targets.len();
    let primary = i % n;
    let mut list = vec![SceneTarget { object: targets[primary].clone(), instances: if (i / 3) % 3 == 2 { 2 } else { 1 } }];
    if n > 1 && rng.chance(0.5) {
        let other = (primary + 1 + rng.below(n - 1)) % n;
        list.push(SceneTarget { object: targets[other].clone(), instances: 1 });
    }
    let mut spec = SceneSpec::new(rng.next_u64(), list);
    spec.distractors = 2 + rng.below(4);
    spec.occlusion = if i.is_multiple_of(4) { 0.0 } else { 0.7 };
    spec.noise = DepthNoise::kinect_scaled(rng.range(0.6, 1.4) as f32);
    if i % 6 == 5 {
        spec.noise.shift_px = if rng.chance(0.5) { 1 } else { -1 };
    }
    spec
}

/// `n_scenes` frames (generated in parallel; identical for the same seed and targets).
pub fn benchmark_set(seed: u64, n_scenes: usize, targets: &[NamedMesh]) -> Vec<SyntheticFrame> {
    (0..n_scenes).into_par_iter().map(|i| generate(&benchmark_spec(seed, i, targets))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_is_reproducible_and_mixed() {
        let targets = procedural_targets();
        let a = benchmark_set(7, 6, &targets);
        let b = benchmark_set(7, 6, &targets);
        assert_eq!(a.len(), 6);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.depth.mm, y.depth.mm);
        }
        // Both targets appear; scenes have several objects.
        for name in ["mug", "bracket"] {
            assert!(a.iter().any(|f| f.gt.iter().any(|g| g.object == name)), "{name} missing");
        }
        let specs: Vec<SceneSpec> = (0..24).map(|i| benchmark_spec(7, i, &targets)).collect();
        assert!(specs.iter().filter(|s| s.targets[0].instances == 2).count() >= 4);
        assert!(specs.iter().filter(|s| s.occlusion > 0.0).count() >= 12);
        assert!(specs.iter().any(|s| s.noise.shift_px != 0));
    }
}
