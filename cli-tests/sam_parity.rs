//! SAM's prompt encoder and mask decoder in tch against the `segment-anything` package: the
//! Python fixture (cli-tests/fixtures/sam_decoder_fixture.py, run at test time) builds
//! `PromptEncoder` + `MaskDecoder` (+ `TwoWayTransformer`) at SAM's default sizes with seeded
//! random weights and saves weights (official names), prompts and outputs; ours loads the
//! weights by name and must give the same sparse/dense embeddings, mask logits and IoU
//! predictions (multimask on and off). Names and shapes are checked against the official ViT-B
//! checkpoint's manifest in ../shared.
use sam6d::nn::load_named;
use sam6d::pipeline::segment::sam::{MaskDecoder, MaskDecoderConfig, PromptEncoder, PromptEncoderConfig};
use crate::{max_abs, run_fixture};
use std::collections::BTreeMap;
use std::path::Path;
use tch::nn;
use tch::{Device, Tensor};

const TOL: f64 = 1e-4;

fn build(vs: &nn::VarStore) -> (PromptEncoder, MaskDecoder) {
    let pe = PromptEncoder::new(vs.root() / "prompt_encoder", &PromptEncoderConfig::default());
    let md = MaskDecoder::new(vs.root() / "mask_decoder", &MaskDecoderConfig::default());
    (pe, md)
}

#[test]
fn sam_prompt_encoder_and_mask_decoder_match_segment_anything_at_random_weights() {
    let dir = tempfile::tempdir().unwrap();
    run_fixture("sam_decoder_fixture.py", dir.path());
    let tensors = Tensor::read_safetensors(dir.path().join("sam_decoder.safetensors")).expect("read fixture");
    let fixture: BTreeMap<String, Tensor> = tensors.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
    let vs = nn::VarStore::new(Device::Cpu);
    let (pe, md) = build(&vs);
    let report = load_named(&vs, &tensors, &["prompt_encoder.", "mask_decoder."]).expect("load");
    assert!(report.missing.is_empty(), "parameters the fixture lacks: {:?}", report.missing);
    assert!(report.unexpected.is_empty(), "fixture tensors our modules do not use: {:?}", report.unexpected);
    assert_eq!(report.loaded, vs.variables().len());
    eprintln!("sam decoder parity: {} tensors loaded by name", report.loaded);

    let get = |n: &str| fixture.get(n).map(|t| t.shallow_clone());
    let image_embedding = get("image_embedding").unwrap();
    let dense_pe = tch::no_grad(|| pe.dense_pe());
    let err = max_abs(&dense_pe, &get("dense_pe").unwrap());
    eprintln!("  dense_pe {:?}: max abs error {err:.3e}", dense_pe.size());
    assert!(err <= TOL, "dense positional encoding: {err}");

    let mut worst = 0f64;
    let mut cases = 0;
    for case in ["grid", "multi", "box", "point_box", "mask"] {
        let points = get(&format!("{case}.points"));
        let labels = get(&format!("{case}.labels"));
        let boxes = get(&format!("{case}.boxes"));
        let masks_in = get(&format!("{case}.masks"));
        let (sparse, dense) = tch::no_grad(|| pe.forward(points.as_ref().zip(labels.as_ref()), boxes.as_ref(), masks_in.as_ref()));
        let mut errs = vec![("sparse", max_abs(&sparse, &get(&format!("{case}.sparse")).unwrap()))];
        if let Some(want) = get(&format!("{case}.dense")) {
            errs.push(("dense", max_abs(&dense, &want)));
        }
        for (tag, multi) in [("multi", true), ("single", false)] {
            let (masks, iou) = tch::no_grad(|| md.forward(&image_embedding, &dense_pe, &sparse, &dense, multi));
            let want_m = get(&format!("{case}.masks_{tag}")).unwrap();
            let want_i = get(&format!("{case}.iou_{tag}")).unwrap();
            assert_eq!(masks.size(), want_m.size(), "{case} {tag}: mask shape");
            assert_eq!(iou.size(), want_i.size(), "{case} {tag}: iou shape");
            errs.push((if multi { "masks(multi)" } else { "masks(single)" }, max_abs(&masks, &want_m)));
            errs.push((if multi { "iou(multi)" } else { "iou(single)" }, max_abs(&iou, &want_i)));
        }
        let listed: Vec<String> = errs.iter().map(|(w, e)| format!("{w} {e:.2e}")).collect();
        eprintln!("  case {case} ({} prompts, {} sparse tokens): {}", sparse.size()[0], sparse.size()[1], listed.join(", "));
        for (what, e) in &errs {
            assert!(*e <= TOL, "{case}: {what} max abs error {e} > {TOL}");
            worst = worst.max(*e);
        }
        cases += 1;
    }
    eprintln!("sam decoder parity: {cases} cases, worst max abs error {worst:.3e}");
}

#[test]
fn sam_decoder_names_and_shapes_match_official_checkpoint() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/manifest-sam-vit-b.json");
    let Ok(text) = std::fs::read_to_string(&p) else {
        eprintln!("skipping: {} not there", p.display());
        return;
    };
    let all: BTreeMap<String, Vec<i64>> = serde_json::from_str(&text).expect("manifest: name → shape");
    let want: BTreeMap<String, Vec<i64>> =
        all.into_iter().filter(|(k, _)| k.starts_with("prompt_encoder.") || k.starts_with("mask_decoder.")).collect();
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = build(&vs);
    let ours: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
    let not_in_manifest: Vec<&String> = ours.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(not_in_manifest.is_empty(), "our names absent from the ViT-B checkpoint: {not_in_manifest:?}");
    let unused: Vec<&String> = want.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(unused.is_empty(), "checkpoint tensors we have no place for: {unused:?}");
    for (k, shape) in &ours {
        assert_eq!(shape, &want[k], "{k}: shape");
    }
    eprintln!("sam decoder: {} names and shapes equal to the ViT-B checkpoint's", ours.len());
}
