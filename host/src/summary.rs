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
    // A graph names what each layer reads, as Keras's Functional summary does ("Connected to").
    let tensor_name = |t: u16| match t {
        0 => "input".to_string(),
        t => model.layer_name(t as usize - 1).to_string(),
    };
    for (i, layer, input, output) in model.shapes() {
        let name = format!("{} ({})", model.layer_name(i), layer.kind().class_name());
        let (t, nt) = layer.params(input);
        let reads = model.inputs()[i];
        let connected = match (model.is_stack(), reads.other) {
            (true, _) => String::new(),
            (false, Some(o)) => format!("  <- {}, {}", tensor_name(reads.main), tensor_name(o)),
            (false, None) => format!("  <- {}", tensor_name(reads.main)),
        };
        let _ = writeln!(out, " {:<44} {:<22} {:>12}{connected}", name, output.to_string(), thousands(t + nt));
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
    fn a_graph_summary_names_what_each_layer_reads() {
        use shared::spec::{Activation, Conv2D, Inputs, Layer, Shape};
        let layers = [
            Layer::Conv2D(Conv2D::new(4, 3).same()),
            Layer::Conv2D(Conv2D::new(4, 3).same()),
            Layer::Add { activation: Activation::Relu },
            Layer::GlobalAvgPool,
            Layer::Dense { units: 3, activation: Activation::Softmax },
        ];
        let mut inputs: Vec<Inputs> = (0..5).map(Inputs::stack).collect();
        inputs[2] = Inputs { main: 2, other: Some(1) };
        let m = ModelSpec::graph(Shape::image(8, 8, 3), &layers, &inputs).unwrap();
        let s = render(&m, "functional");
        assert!(s.contains("add (Add)") && s.contains("<- conv2d_1, conv2d"), "{s}");
        assert!(s.contains("<- input"), "{s}");
        // A stack keeps the Sequential table.
        assert!(!render(&shared::spec::alexnet(227, 10).unwrap(), "sequential").contains("<-"));
    }

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
