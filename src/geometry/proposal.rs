//! An object-mask proposal: a region of the image with its box and the segmenter's scores.
//! Segmenters make them, the ISM scores them, the geometric stage searches inside them, and
//! overlays and BOP detection files show them; it lives here, below all of those.

/// One object-mask proposal, in the pixels of the frame it was computed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub width: usize,
    pub height: usize,
    /// Row-major, `width × height`; true = inside the object.
    pub mask: Vec<bool>,
    /// Tight box around the mask: x0, y0, x1, y1 with the max **inclusive** (SAM's XYXY).
    pub bbox: [f32; 4],
    /// The mask decoder's predicted IoU.
    pub predicted_iou: f32,
    /// #(logit > +offset) / #(logit > −offset), SAM's stability score.
    pub stability_score: f32,
}

impl Proposal {
    pub fn area(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    pub fn contains(&self, x: usize, y: usize) -> bool {
        x < self.width && y < self.height && self.mask[y * self.width + x]
    }
}
