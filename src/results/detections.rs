//! SAM-6D's `detection_ism.json`: the ISM's detections as the reference writes them, so that
//! its PEM, the BOP toolkit and pycocotools read ours.
//!
//! One record per detection: `scene_id`, `image_id`, `category_id`, `bbox` (x, y, w, h with
//! SAM's inclusive max, so w and h are one short of the mask's extent: quirk Q4, reproduced
//! because the reference's consumers expect it), `score`, `time` and `segmentation`, an
//! uncompressed COCO RLE of the mask in column-major (Fortran) order whose first count is the
//! number of leading zeros.
use crate::geometry::Proposal;
use serde::{Deserialize, Serialize};

/// One detection in the reference's layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsmRecord {
    pub scene_id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [i64; 4],
    pub score: f32,
    pub time: f64,
    pub segmentation: Rle,
}

/// One pose in SAM-6D's `detection_pem.json`: the ISM record with `score` replaced by the
/// pose score (PEM pose score × ISM score) and the pose added: `R` (rows), `t` (mm).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PemRecord {
    #[serde(flatten)]
    pub detection: IsmRecord,
    #[serde(rename = "R")]
    pub r: [[f64; 3]; 3],
    pub t: [f64; 3],
}

/// COCO's uncompressed run-length encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rle {
    pub counts: Vec<u64>,
    /// [height, width].
    pub size: [usize; 2],
}

impl IsmRecord {
    /// The record of `proposal` with its ISM score; ids as the reference's custom script (0, 0, 1)
    /// unless the caller knows better (a BOP scene).
    pub fn new(proposal: &Proposal, score: f32, scene_id: i64, image_id: i64, category_id: i64) -> IsmRecord {
        let [x0, y0, x1, y1] = proposal.bbox.map(|v| v as i64);
        IsmRecord { scene_id, image_id, category_id, bbox: [x0, y0, x1 - x0, y1 - y0], score, time: 0.0, segmentation: encode_rle(&proposal.mask, proposal.width, proposal.height) }
    }
}

/// Column-major RLE of a row-major `width × height` mask.
pub fn encode_rle(mask: &[bool], width: usize, height: usize) -> Rle {
    assert_eq!(mask.len(), width * height, "mask size");
    let mut counts = Vec::new();
    let (mut current, mut run) = (false, 0u64);
    for x in 0..width {
        for y in 0..height {
            let m = mask[y * width + x];
            if m != current {
                counts.push(run);
                current = m;
                run = 0;
            }
            run += 1;
        }
    }
    counts.push(run);
    Rle { counts, size: [height, width] }
}

/// The row-major mask of an [`Rle`]; an error when the counts do not add up to the size.
pub fn decode_rle(rle: &Rle) -> Result<Vec<bool>, String> {
    let [height, width] = rle.size;
    let total: u64 = rle.counts.iter().sum();
    if total != (width * height) as u64 {
        return Err(format!("RLE counts add up to {total}, the size {height}×{width} needs {}", width * height));
    }
    let mut mask = vec![false; width * height];
    let mut i = 0usize;
    for (k, &c) in rle.counts.iter().enumerate() {
        for j in i..i + c as usize {
            if k % 2 == 1 {
                let (x, y) = (j / height, j % height);
                mask[y * width + x] = true;
            }
        }
        i += c as usize;
    }
    Ok(mask)
}

/// The file's text: a JSON list without indentation, as the reference's `json.dump` writes it.
pub fn to_json<T: Serialize>(records: &[T]) -> String {
    serde_json::to_string(records).expect("records serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_is_column_major_with_leading_zero_count() {
        // 3 wide, 2 high; set (x=0,y=1) and (x=1,y=0), (x=1,y=1).
        //   row 0: 0 1 0
        //   row 1: 1 1 0
        let mask = [false, true, false, true, true, false];
        let rle = encode_rle(&mask, 3, 2);
        // Column-major order: (0,0)=0 (0,1)=1 (1,0)=1 (1,1)=1 (2,0)=0 (2,1)=0.
        assert_eq!(rle.counts, vec![1, 3, 2]);
        assert_eq!(rle.size, [2, 3]);
        assert_eq!(decode_rle(&rle).unwrap(), mask);
        // First pixel set: the first count is 0.
        assert_eq!(encode_rle(&[true, false], 2, 1).counts, vec![0, 1, 1]);
        assert_eq!(encode_rle(&[false; 4], 2, 2).counts, vec![4]);
    }

    #[test]
    fn rle_round_trips_random_masks() {
        let mut state = 12345u64;
        for (w, h) in [(7, 5), (1, 9), (16, 1), (33, 17)] {
            let mask: Vec<bool> = (0..w * h)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    state >> 62 == 0
                })
                .collect();
            let rle = encode_rle(&mask, w, h);
            assert_eq!(rle.counts.iter().sum::<u64>(), (w * h) as u64);
            assert_eq!(decode_rle(&rle).unwrap(), mask);
        }
        assert!(decode_rle(&Rle { counts: vec![3], size: [2, 2] }).is_err());
    }

    #[test]
    fn record_bbox_is_xywh_one_short_like_the_reference() {
        let (w, h) = (6, 4);
        let mut mask = vec![false; w * h];
        for y in 1..3 {
            for x in 2..5 {
                mask[y * w + x] = true;
            }
        }
        let p = Proposal { width: w, height: h, mask, bbox: [2.0, 1.0, 4.0, 2.0], predicted_iou: 0.9, stability_score: 0.95 };
        let r = IsmRecord::new(&p, 0.5, 0, 0, 1);
        assert_eq!(r.bbox, [2, 1, 2, 1]);
        let text = to_json(&[r]);
        assert!(text.starts_with("[{\"scene_id\":0,\"image_id\":0,\"category_id\":1,\"bbox\":[2,1,2,1],\"score\":0.5,\"time\":0.0,\"segmentation\":{\"counts\":["), "{text}");
    }
}
