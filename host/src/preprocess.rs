//! A model's input preprocessing as the host carries it: per-channel
//! `x = pixel * scale + offset` on pixels in [0, 1] (raw / 255).
//!
//! Our trainer feeds [0, 1] pixels (no preprocessing). Models trained
//! elsewhere expect other inputs: raw 0..255 pixels (Keras without
//! `Rescaling`, scale 255), [-1, 1] (`Rescaling(1/127.5, offset=-1)`), or a
//! per-channel mean/std (PyTorch's `Normalize`). The checkpoint and the model
//! file record it, and every path from an image to a model applies it: the
//! float network (predict, eval, calibration) and the quantized input
//! encoding (simulate, compare, flash). The arithmetic is
//! [`shared::model::InputTransform`]'s, so host and model file agree.
use serde::{Deserialize, Serialize};
use shared::model::InputTransform;

/// Per-channel scale and offset; never the identity (that is "no preprocessing").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Repr", into = "Repr")]
pub struct Preprocess {
    /// `scale[0..c]` then `offset[0..c]`, the model file's order.
    values: Vec<f32>,
}

/// The JSON form in checkpoints: `{"scale": [...], "offset": [...]}`.
#[derive(Serialize, Deserialize)]
struct Repr {
    scale: Vec<f32>,
    offset: Vec<f32>,
}

impl TryFrom<Repr> for Preprocess {
    type Error = String;
    fn try_from(r: Repr) -> Result<Self, String> {
        Preprocess::new(&r.scale, &r.offset)?.ok_or_else(|| "the input transform is the identity".to_string())
    }
}

impl From<Preprocess> for Repr {
    fn from(p: Preprocess) -> Repr {
        Repr { scale: p.scale().to_vec(), offset: p.offset().to_vec() }
    }
}

impl Preprocess {
    /// Check and build; `Ok(None)` for the identity (nothing to do).
    pub fn new(scale: &[f32], offset: &[f32]) -> Result<Option<Preprocess>, String> {
        if scale.is_empty() || scale.len() != offset.len() {
            return Err(format!("{} scales for {} offsets (give one per channel)", scale.len(), offset.len()));
        }
        if let Some(s) = scale.iter().find(|s| !s.is_finite() || **s == 0.0) {
            return Err(format!("input scale {s} is not finite and non-zero"));
        }
        if let Some(o) = offset.iter().find(|o| !o.is_finite()) {
            return Err(format!("input offset {o} is not finite"));
        }
        let p = Preprocess { values: [scale, offset].concat() };
        Ok((!p.transform().is_identity()).then_some(p))
    }

    /// From command-line lists: one value applies to every channel.
    pub fn from_lists(scale: &[f32], offset: &[f32], channels: usize) -> Result<Option<Preprocess>, String> {
        let widen = |v: &[f32], what: &str, default: f32| -> Result<Vec<f32>, String> {
            match v.len() {
                0 => Ok(vec![default; channels]),
                1 => Ok(vec![v[0]; channels]),
                n if n == channels => Ok(v.to_vec()),
                n => Err(format!("{n} values for --input-{what}; the model has {channels} input channels")),
            }
        };
        Preprocess::new(&widen(scale, "scale", 1.0)?, &widen(offset, "offset", 0.0)?)
    }

    /// The model file's view.
    pub fn transform(&self) -> InputTransform<'_> {
        InputTransform { values: &self.values }
    }

    /// The values as the model file stores them.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    pub fn channels(&self) -> usize {
        self.values.len() / 2
    }

    pub fn scale(&self) -> &[f32] {
        self.transform().scale()
    }

    pub fn offset(&self) -> &[f32] {
        self.transform().offset()
    }

    /// Apply in place to channel-last pixels in [0, 1].
    pub fn apply(&self, pixels: &mut [f32]) {
        self.transform().apply(pixels)
    }

    /// This transform followed by `x * scale + offset` (per channel):
    /// Keras's `Rescaling` then `Normalization`, for instance.
    pub fn then(this: Option<&Preprocess>, scale: &[f32], offset: &[f32]) -> Result<Option<Preprocess>, String> {
        let c = scale.len();
        let (s0, o0) = match this {
            Some(p) if p.channels() == c => (p.scale().to_vec(), p.offset().to_vec()),
            Some(p) => return Err(format!("{} channels after {} channels", c, p.channels())),
            None => (vec![1.0; c], vec![0.0; c]),
        };
        // (p * s0 + o0) * s + o, computed in f64 so composing adds no f32 rounding.
        let s: Vec<f32> = s0.iter().zip(scale).map(|(a, b)| (*a as f64 * *b as f64) as f32).collect();
        let o: Vec<f32> =
            o0.iter().zip(scale).zip(offset).map(|((a, b), o)| (*a as f64 * *b as f64 + *o as f64) as f32).collect();
        Preprocess::new(&s, &o)
    }

    /// For humans: `x = pixel * [..] + [..]`.
    pub fn describe(&self) -> String {
        format!("x = pixel(0..1) * {:?} + {:?}", self.scale(), self.offset())
    }
}

/// How a model takes its pixels, for humans.
pub fn describe(p: Option<&Preprocess>) -> String {
    p.map_or_else(|| "pixels in [0, 1] as they are".to_string(), Preprocess::describe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_none_and_bad_values_are_named() {
        assert_eq!(Preprocess::new(&[1.0, 1.0], &[0.0, 0.0]).unwrap(), None);
        assert!(Preprocess::new(&[0.0], &[0.0]).unwrap_err().contains("scale 0"));
        assert!(Preprocess::new(&[1.0], &[f32::NAN]).unwrap_err().contains("offset NaN"));
        assert!(Preprocess::new(&[1.0, 2.0], &[0.0]).unwrap_err().contains("2 scales for 1 offsets"));
        let e = Preprocess::from_lists(&[1.0, 2.0], &[], 3).unwrap_err();
        assert!(e.contains("2 values for --input-scale") && e.contains("3 input channels"), "{e}");
        let p = Preprocess::from_lists(&[255.0], &[], 3).unwrap().unwrap();
        assert_eq!(p.values(), &[255.0, 255.0, 255.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn applies_per_channel_and_composes() {
        let p = Preprocess::new(&[2.0, 4.0], &[1.0, -1.0]).unwrap().unwrap();
        let mut px = [0.5, 0.5, 1.0, 0.0];
        p.apply(&mut px);
        assert_eq!(px, [2.0, 1.0, 3.0, -1.0]);
        // Rescaling(255) then Normalization(mean 127.5, var 127.5^2): [-1, 1].
        let raw = Preprocess::new(&[255.0], &[0.0]).unwrap();
        let n = Preprocess::then(raw.as_ref(), &[1.0 / 127.5], &[-1.0]).unwrap().unwrap();
        assert_eq!(n.values(), &[2.0, -1.0]);
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, r#"{"scale":[2.0],"offset":[-1.0]}"#);
        assert_eq!(serde_json::from_str::<Preprocess>(&json).unwrap(), n);
        assert!(serde_json::from_str::<Preprocess>(r#"{"scale":[1.0],"offset":[0.0]}"#).is_err());
    }
}
