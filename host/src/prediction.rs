//! Predictions in the tutorial's words ("This image most likely belongs to
//! sunflowers with a 97.12 percent confidence.") with the top five classes,
//! the same for the float network, the simulator and the device.
use crate::data::load_image_file;
use crate::eval::EvalError;
use crate::nn::{Mode, Network, NnError};
use ndarray::Array4;
use serde::Serialize;
use shared::numeric::{rank, softmax_in_place};
use std::path::{Path, PathBuf};

/// One image's prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    pub class: String,
    /// Softmax probability of `class`, in percent.
    pub confidence: f32,
    /// Up to five (class, percent) pairs, most likely first.
    pub top: Vec<(String, f32)>,
}

impl Prediction {
    /// The prediction for one image's logits (softmax applied here), so the
    /// float network and the quantized engine report in the same words. The
    /// class is [`shared::numeric::argmax`]'s (ties: first; NaN: first NaN).
    pub fn from_logits(path: &Path, class_names: &[String], logits: &[f32]) -> Prediction {
        Self::from_values(path, class_names, logits, false)
    }

    /// The prediction for a model's output: logits, or probabilities when
    /// the model ends in its own Softmax layer (a converter's SOFTMAX), which
    /// must not be applied twice.
    pub fn from_output(
        path: &Path,
        class_names: &[String],
        values: &[f32],
        spec: &shared::spec::ModelSpec,
    ) -> Prediction {
        Self::from_values(path, class_names, values, spec.ends_in_softmax())
    }

    fn from_values(path: &Path, class_names: &[String], values: &[f32], probabilities: bool) -> Prediction {
        let mut order: Vec<(usize, f32)> = values.iter().copied().enumerate().collect();
        order.sort_by(|a, b| rank(*a, *b));
        let mut probs = values.to_vec();
        if !probabilities {
            softmax_in_place(&mut probs);
        }
        let name =
            |i: usize| class_names.get(i).map(|n| crate::out::printable(n)).unwrap_or_else(|| format!("class {i}"));
        let top: Vec<(String, f32)> = order.iter().take(5).map(|&(i, _)| (name(i), 100.0 * probs[i])).collect();
        let (class, confidence) = top.first().cloned().unwrap_or_else(|| ("(no classes)".into(), 0.0));
        Prediction { path: path.to_path_buf(), class, confidence, top }
    }

    /// The tutorial's sentence, exactly.
    pub fn sentence(&self) -> String {
        format!("This image most likely belongs to {} with a {:.2} percent confidence.", self.class, self.confidence)
    }

    /// The sentence followed by the top-5 lines.
    pub fn render(&self) -> String {
        let mut s = self.sentence();
        s.push('\n');
        let width = self.top.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (i, (name, p)) in self.top.iter().enumerate() {
            s.push_str(&format!("  {}. {name:<width$}  {p:6.2}%\n", i + 1));
        }
        s
    }
}

/// Classify each of `paths` (decoded and resized to the model input like the
/// training images). The first unreadable file is an error naming it, and
/// so is one the network computes non-finite logits for.
pub fn predict_files(
    net: &mut Network,
    class_names: &[String],
    paths: &[PathBuf],
) -> Result<Vec<Prediction>, EvalError> {
    let (h, w) = crate::data::image_hw(net.spec().input())?;
    paths
        .iter()
        .map(|p| {
            let img = load_image_file(p, h, w)?;
            let x = img.insert_axis(ndarray::Axis(0));
            let logits = net.forward(x.view(), Mode::Eval);
            if let Some(&value) = logits.iter().find(|v| !v.is_finite()) {
                return Err(NnError::NonFiniteOutput { what: p.display().to_string(), value }.into());
            }
            Ok(Prediction::from_output(p, class_names, &logits.row(0).to_vec(), net.spec()))
        })
        .collect()
}

/// Classify one prepared `[1, h, w, 3]` image.
pub fn predict_array(net: &mut Network, class_names: &[String], x: Array4<f32>, path: &Path) -> Prediction {
    let logits = net.forward(x.view(), Mode::Eval);
    let row: Vec<f32> = logits.row(0).to_vec();
    Prediction::from_output(path, class_names, &row, net.spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_own_softmax_is_not_applied_twice() {
        use shared::spec::{Activation, Sequential, Shape};
        let names: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
        let with = Sequential::new(Shape::Flat(4))
            .dense(3, Activation::None)
            .add(shared::spec::Layer::Softmax)
            .build()
            .unwrap();
        let without = Sequential::new(Shape::Flat(4)).dense(3, Activation::None).build().unwrap();
        let p = Prediction::from_output(Path::new("a"), &names, &[0.25, 0.5, 0.25], &with);
        assert_eq!((p.class.as_str(), p.confidence), ("c1", 50.0));
        let p = Prediction::from_output(Path::new("a"), &names, &[0.25, 0.5, 0.25], &without);
        assert!(p.confidence < 40.0, "{}", p.confidence);
    }

    #[test]
    fn sentence_matches_the_tutorial() {
        let p = Prediction {
            path: "x.jpg".into(),
            class: "sunflowers".into(),
            confidence: 97.123,
            top: vec![("sunflowers".into(), 97.123), ("tulips".into(), 2.5)],
        };
        assert_eq!(p.sentence(), "This image most likely belongs to sunflowers with a 97.12 percent confidence.");
        let r = p.render();
        assert!(r.starts_with(&p.sentence()));
        assert!(r.contains("2. tulips"), "{r}");
    }

    #[test]
    fn from_logits_ranks_by_probability() {
        let names: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        let p = Prediction::from_logits(Path::new("a.png"), &names, &[0.0, 3.0, 1.0, 3.0, -1.0, 0.5, 2.0]);
        assert_eq!(p.class, "c1");
        assert_eq!(p.top.len(), 5);
        assert_eq!(p.top[1].0, "c3");
        assert_eq!(p.top[2].0, "c6");
        let total: f32 =
            Prediction::from_logits(Path::new("a"), &names[..3], &[1.0, 2.0, 3.0]).top.iter().map(|t| t.1).sum();
        assert!((total - 100.0).abs() < 1e-3);
    }

    /// The class named is the one `eval`, `compare` and the engine count,
    /// even when the logits hold NaN (regression: they used to disagree).
    #[test]
    fn nan_logits_pick_the_shared_argmax() {
        let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        let logits = [0.5, 2.0, f32::NAN, 1.0];
        let p = Prediction::from_logits(Path::new("a"), &names, &logits);
        assert_eq!(Some(2), shared::numeric::argmax(logits));
        assert_eq!(p.class, "c2");
    }
}
