//! The PEM's network layers against SAM-6D's own modules at random weights.
//!
//! Fixtures: `testdata/pem-fixtures/net_*.safetensors`, made by
//! `scripts/gen_pem_fixtures_net.py` from the reference classes at reduced width (weights under
//! the official checkpoint names, `input.*`, `output.*`; weights and float inputs are float16
//! values, outputs float32):
//! - net_feature_extraction: ViTEncoder (timm ViT, 12 blocks, 12 heads, width 24, out_dim 16),
//!   two 224×224 images (8-bit levels as (x − 128)/64) and the features at 1024 pixels each;
//! - net_geo_embedding: GeometricStructureEmbedding (hidden 32), bg point + 30 points, ×2;
//! - net_geometric_transformer: GeometricTransformer(['self', 'cross'], d 32), sets of 21 and
//!   17 tokens with random embeddings;
//! - net_sparse_to_dense: SparseToDenseTransformer (d 32), dense 1+60 / 1+50 tokens, FPS-like
//!   indices 20 / 4 (both contraction orders of the linear attention);
//! - net_positional_encoding: PositionalEncoding (out 32), 300 points (spread + cluster).
//!
//! Every module must load its file strictly (no missing, no unexpected tensor) and match the
//! reference to 1e-4 (max abs). The full-size modules are checked against the checkpoint's
//! manifest by name and shape.
use sam6d::pipeline::pem::feature_extraction::{FeatureExtraction, FeatureExtractionConfig};
use sam6d::pipeline::pem::geo_embedding::{GeoEmbedding, GeoEmbeddingConfig};
use sam6d::pipeline::pem::positional_encoding::PositionalEncoding;
use sam6d::pipeline::pem::transformer::{GeometricTransformer, SparseToDenseTransformer};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

use crate::max_abs;

const TOL: f64 = 1e-4;

/// The fixture's tensors by name, and a VarStore loaded from its weights (strictly).
struct Fixture {
    name: &'static str,
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn open(name: &'static str) -> Fixture {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pem-fixtures").join(name);
        let tensors = Tensor::read_safetensors(&path).unwrap_or_else(|e| panic!("{}: {e} (scripts/gen_pem_fixtures_net.py makes it)", path.display()));
        Fixture { name, tensors: tensors.into_iter().collect() }
    }

    fn get(&self, k: &str) -> Tensor {
        self.tensors.get(k).unwrap_or_else(|| panic!("{} lacks {k}", self.name)).to_kind(Kind::Float)
    }

    fn get_int(&self, k: &str) -> Tensor {
        self.tensors.get(k).unwrap_or_else(|| panic!("{} lacks {k}", self.name)).shallow_clone()
    }

    /// Copies the weights (every name under `prefix`) into `vs`; all of the store's variables
    /// must be in the file and all of the file's weights must have a place.
    fn load_into(&self, vs: &nn::VarStore, prefix: &str) {
        let weights: Vec<(String, Tensor)> = self.tensors.iter().filter(|(k, _)| !k.starts_with("input.") && !k.starts_with("output.")).map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
        let report = sam6d::nn::load_named(vs, &weights, &[prefix]).unwrap();
        let outside: Vec<&String> = weights.iter().map(|(k, _)| k).filter(|k| !k.starts_with(prefix)).collect();
        assert!(report.missing.is_empty() && report.unexpected.is_empty() && outside.is_empty(), "{}: missing {:?}, unexpected {:?} {:?}", self.name, report.missing, report.unexpected, outside);
        assert_eq!(report.loaded, vs.variables().len());
    }
}

fn check(what: &str, got: &Tensor, want: &Tensor) -> f64 {
    let err = max_abs(got, want);
    let scale = want.abs().max().double_value(&[]);
    eprintln!("{what}: max abs error {err:.2e} (values up to {scale:.2})");
    assert!(err <= TOL, "{what}: max abs error {err:e} > {TOL:e}");
    err
}

#[test]
fn feature_extraction_matches_reference() {
    let fx = Fixture::open("net_feature_extraction.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = FeatureExtractionConfig { embed_dim: 24, depth: 12, heads: 12, out_dim: 16, num_classes: 1000 };
    let net = FeatureExtraction::with_config(vs.root() / "feature_extraction", &cfg);
    fx.load_into(&vs, "feature_extraction.");
    let rgb = (fx.get_int("input.rgb_u8").to_kind(Kind::Float) - 128.0) / 64.0;
    let map = tch::no_grad(|| net.forward(&rgb));
    assert_eq!(map.size(), [2, 16, 224, 224]);
    let got = FeatureExtraction::features_at(&map, &fx.get_int("input.choose"));
    check("feature extraction (ViT taps 2,5,8,11 → upscaling → bilinear → gather)", &got, &fx.get("output.features"));
}

#[test]
fn geo_embedding_matches_reference() {
    let fx = Fixture::open("net_geo_embedding.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = GeoEmbedding::with_config(vs.root() / "geo_embedding", &GeoEmbeddingConfig { hidden_dim: 32, ..Default::default() });
    fx.load_into(&vs, "geo_embedding.");
    let got = tch::no_grad(|| net.forward(&fx.get("input.points")));
    check("geometric structure embedding", &got, &fx.get("output.embedding"));
}

#[test]
fn geometric_transformer_matches_reference() {
    let fx = Fixture::open("net_geometric_transformer.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = GeometricTransformer::new(vs.root() / "coarse_point_matching" / "transformers" / 0, 32);
    fx.load_into(&vs, "coarse_point_matching.transformers.0.");
    let (f0, f1) = tch::no_grad(|| net.forward(&fx.get("input.f0"), &fx.get("input.emb0"), &fx.get("input.f1"), &fx.get("input.emb1")));
    check("geometric transformer, set 0", &f0, &fx.get("output.f0"));
    check("geometric transformer, set 1", &f1, &fx.get("output.f1"));
}

#[test]
fn sparse_to_dense_transformer_matches_reference() {
    let fx = Fixture::open("net_sparse_to_dense.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SparseToDenseTransformer::new(vs.root() / "fine_point_matching" / "transformers" / 0, 32);
    fx.load_into(&vs, "fine_point_matching.transformers.0.");
    let (d0, d1) = tch::no_grad(|| {
        net.forward(&fx.get("input.dense0"), &fx.get("input.dense1"), &fx.get_int("input.fps_idx0"), &fx.get_int("input.fps_idx1"), &fx.get("input.emb0"), &fx.get("input.emb1"))
    });
    check("sparse-to-dense transformer, set 0 (k·v order)", &d0, &fx.get("output.dense0"));
    check("sparse-to-dense transformer, set 1 (q·k order)", &d1, &fx.get("output.dense1"));
}

#[test]
fn positional_encoding_matches_reference() {
    let fx = Fixture::open("net_positional_encoding.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = PositionalEncoding::with_out_dim(vs.root() / "fine_point_matching" / "PE", 32);
    fx.load_into(&vs, "fine_point_matching.PE.");
    let got = tch::no_grad(|| net.forward(&fx.get("input.points")));
    check("positional encoding", &got, &fx.get("output.encoding"));
}

/// At full size the layers hold exactly the checkpoint's tensors (names and shapes) except the
/// two matching stages' own bg_token / in_proj / out_proj, and run at the real sizes.
#[test]
fn full_size_layers_follow_the_checkpoint_manifest() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/manifest-pem-base.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: {} not present", path.display());
        return;
    };
    let manifest: BTreeMap<String, Vec<i64>> = serde_json::from_str(&text).expect("manifest: name → shape");
    assert_eq!(manifest.len(), 462);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let fe = FeatureExtraction::new(&root / "feature_extraction");
    let geo = GeoEmbedding::new(&root / "geo_embedding");
    let coarse: Vec<_> = (0..3).map(|i| GeometricTransformer::new(&root / "coarse_point_matching" / "transformers" / i, 256)).collect();
    let fine: Vec<_> = (0..3).map(|i| SparseToDenseTransformer::new(&root / "fine_point_matching" / "transformers" / i, 256)).collect();
    let pe = PositionalEncoding::new(&root / "fine_point_matching" / "PE");
    let ours: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
    let only_ours: Vec<_> = ours.keys().filter(|k| !manifest.contains_key(*k)).collect();
    assert!(only_ours.is_empty(), "not in the checkpoint: {only_ours:?}");
    let wrong: Vec<_> = ours.iter().filter(|(k, v)| manifest[*k] != **v).collect();
    assert!(wrong.is_empty(), "shapes differ from the checkpoint: {wrong:?}");
    let rest: Vec<&str> = manifest.keys().filter(|k| !ours.contains_key(*k)).map(|k| k.as_str()).collect();
    let stage_own = ["bg_token", "in_proj.bias", "in_proj.weight", "out_proj.bias", "out_proj.weight"];
    let want: Vec<String> = ["coarse_point_matching", "fine_point_matching"].iter().flat_map(|s| stage_own.iter().map(move |n| format!("{s}.{n}"))).collect();
    assert_eq!(rest, want);

    // One forward at the real sizes (B = 1): shapes of §5.14, and CPU times (for orientation;
    // other work may share the machine).
    tch::no_grad(|| {
        let cpu = (Kind::Float, Device::Cpu);
        let t = Instant::now();
        let map = fe.forward(&Tensor::randn([1, 3, 224, 224], cpu));
        assert_eq!(map.size(), [1, 256, 224, 224]);
        eprintln!("full size, CPU: feature extraction {:.3} s", t.elapsed().as_secs_f64());
        let pts = Tensor::cat(&[Tensor::full([1, 1, 3], 100.0, cpu), Tensor::randn([1, 196, 3], cpu) * 0.4], 1);
        let t = Instant::now();
        let emb = geo.forward(&pts);
        assert_eq!(emb.size(), [1, 197, 197, 256]);
        eprintln!("full size, CPU: geometric embedding {:.3} s", t.elapsed().as_secs_f64());
        let f = Tensor::randn([1, 197, 256], cpu);
        let t = Instant::now();
        let (c0, c1) = coarse[0].forward(&f, &emb, &f, &emb);
        assert_eq!((c0.size(), c1.size()), (vec![1, 197, 256], vec![1, 197, 256]));
        eprintln!("full size, CPU: one geometric transformer {:.3} s", t.elapsed().as_secs_f64());
        let dense_pts = Tensor::randn([1, 2048, 3], cpu) * 0.4;
        let t = Instant::now();
        let enc = pe.forward(&dense_pts);
        eprintln!("full size, CPU: positional encoding {:.3} s", t.elapsed().as_secs_f64());
        let dense = Tensor::cat(&[Tensor::zeros([1, 1, 256], cpu), enc], 1);
        let idx = Tensor::arange(196, (Kind::Int64, Device::Cpu)).view([1, 196]) * 10;
        let t = Instant::now();
        let (d0, _) = fine[0].forward(&dense, &dense, &idx, &idx, &emb, &emb);
        assert_eq!(d0.size(), [1, 2049, 256]);
        eprintln!("full size, CPU: one sparse-to-dense transformer {:.3} s", t.elapsed().as_secs_f64());
    });
}
