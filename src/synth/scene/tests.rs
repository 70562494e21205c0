use super::*;

fn spec(seed: u64) -> SceneSpec {
    let mug = NamedMesh::new("mug", shapes::mug(40.0, 95.0, 4.0, 48));
    let bracket = NamedMesh::new("bracket", shapes::bracket(100.0, 70.0, 8.0, 50.0));
    let mut s = SceneSpec::new(seed, vec![SceneTarget { object: mug, instances: 2 }, SceneTarget { object: bracket, instances: 1 }]);
    s.occlusion = 1.0;
    s.distractors = 4;
    s
}

#[test]
fn same_seed_same_frame_other_seed_other_frame() {
    let (a, b, c) = (generate(&spec(11)), generate(&spec(11)), generate(&spec(12)));
    assert_eq!(a.depth.mm, b.depth.mm);
    assert_eq!(a.rgb, b.rgb);
    assert_eq!(a.gt.len(), b.gt.len());
    assert!(a.gt.iter().zip(&b.gt).all(|(x, y)| x.pose == y.pose));
    assert_ne!(a.depth.mm, c.depth.mm);
}

#[test]
fn ground_truth_agrees_with_the_instance_render() {
    for seed in [1, 2, 3] {
        let s = spec(seed);
        let f = generate(&s);
        assert_eq!(f.gt.len(), 3, "seed {seed}: all instances placed");
        let table_to_camera = f.world_to_camera;
        for (k, g) in f.gt.iter().enumerate() {
            let mesh = &s.targets.iter().find(|t| t.object.name == g.object).unwrap().object.mesh;
            // Rendering the model alone at the GT pose covers every pixel the instance mask
            // claims, with the same depth there.
            let alone = render_depth(mesh, &f.camera, &g.pose, 640, 480);
            let mask: Vec<usize> = (0..640 * 480).filter(|&i| f.gt_mask[i] == k as i32).collect();
            assert!(!mask.is_empty());
            assert!(mask.iter().all(|&i| alone[i] > 0.0 && (alone[i] - f.clean_depth[i]).abs() < 1e-3));
            let n_alone = alone.iter().filter(|&&z| z > 0.0).count();
            let vf = mask.len() as f32 / n_alone as f32;
            assert!((vf - g.visible_fraction).abs() < 1e-6);
            assert!(g.visible_fraction >= 0.4 - 1e-6 && g.visible_fraction <= 1.0, "{}", g.visible_fraction);
            // Vertices project into the image, around the mask.
            let uv = project_vertices(mesh, &g.pose, &f.camera);
            assert!(uv.iter().all(|p| p[0] >= 0.0 && p[1] >= 0.0 && p[0] < 640.0 && p[1] < 480.0));
            // Resting on the table: lowest point at z = 0 in the world frame.
            let world = table_to_camera.inverse().compose(&g.pose);
            let min_z = mesh.vertices.iter().map(|v| world.apply(&v.cast::<f64>()).z).fold(f64::INFINITY, f64::min);
            assert!(min_z.abs() < 1e-6, "{min_z}");
        }
        // Some occlusion happened somewhere.
        assert!(f.gt.iter().any(|g| g.visible_fraction < 0.98) || seed != 1);
    }
}

#[test]
fn noisy_depth_follows_clean_depth() {
    let f = generate(&spec(5));
    let pairs: Vec<(f32, f32)> = f.clean_depth.iter().zip(&f.depth.mm).filter(|(c, n)| **c > 0.0 && **n > 0.0).map(|(c, n)| (*c, *n)).collect();
    let valid = f.clean_depth.iter().filter(|&&c| c > 0.0 && c < 3500.0).count();
    // Some, but not too much, data is lost.
    let kept = pairs.len() as f64 / valid as f64;
    assert!(kept > 0.85 && kept < 0.999, "{kept}");
    // Errors are small: σ(z) = 1.5 mm·(z/1 m)², plus rounding; no outliers beyond 6σ + 1.
    for &(c, n) in &pairs {
        let s = 1.5 * (c / 1000.0).powi(2);
        assert!((n - c).abs() <= 6.0 * s + 1.0, "{c} → {n}");
    }
    assert!(f.depth.mm.iter().all(|z| z.fract() == 0.0));
}
