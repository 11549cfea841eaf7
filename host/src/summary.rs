//! The Keras-style model summary table.
use shared::spec::ModelSpec;
use std::fmt::Write;

/// Group digits with commas, as Keras prints parameter counts.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Render `model` the way `model.summary()` does in Keras.
pub fn render(model: &ModelSpec, title: &str) -> String {
    let mut out = String::new();
    let rule_eq = "=".repeat(80);
    let rule = "_".repeat(80);
    let _ = writeln!(out, "Model: \"{title}\"");
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, " {:<44} {:<22} {:>12}", "Layer (type)", "Output Shape", "Param #");
    let _ = writeln!(out, "{rule_eq}");
    let n = model.layers().len();
    for (i, layer, input, output) in model.shapes() {
        let name = format!("{} ({})", model.layer_name(i), layer.kind().class_name());
        let (t, nt) = layer.params(input);
        let _ = writeln!(out, " {:<44} {:<22} {:>12}", name, output.to_string(), thousands(t + nt));
        let _ = writeln!(out, "{}", if i + 1 == n { &rule_eq } else { &rule });
    }
    let (t, nt) = model.params();
    let _ = writeln!(out, "Total params: {}", thousands(t + nt));
    let _ = writeln!(out, "Trainable params: {}", thousands(t));
    let _ = writeln!(out, "Non-trainable params: {}", thousands(nt));
    let _ = writeln!(out, "{rule}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alexnet_summary_has_the_tutorial_totals() {
        let m = shared::spec::alexnet(227, 1000).unwrap();
        let s = render(&m, "sequential");
        assert!(s.contains("Total params: 62,383,848"), "{s}");
        assert!(s.contains("Trainable params: 62,381,096"));
        assert!(s.contains("Non-trainable params: 2,752"));
        assert!(s.contains(" conv2d (Conv2D)"));
        assert!(s.contains("(None, 55, 55, 96)"));
        assert!(s.contains("4,097,000"));
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(62_383_848), "62,383,848");
    }
}
