//! Holds `quant` to 20,000 gemmlowp/TFLite results (tests/data/requant_vectors.txt,
//! format in shared/golden/README.md): fields 4, 5 and 7 from fields 1, 2, 3 and 6.

use shared::quant::{channel_multiplier, multiply_by_quantized_multiplier};

const VECTORS: &str = include_str!("data/requant_vectors.txt");

#[test]
fn requant_vectors_reproduce_exactly() {
    let mut lines = 0;
    let mut failures = Vec::new();
    for (n, line) in VECTORS.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 7, "line {}: {line}", n + 1);
        let bits = |i: usize| f32::from_bits(f[i].parse::<u32>().unwrap());
        let int = |i: usize| f[i].parse::<i32>().unwrap();
        let (in_s, w_s, out_s) = (bits(0), bits(1), bits(2));
        let (m, shift) = channel_multiplier(in_s, w_s, out_s);
        let y = multiply_by_quantized_multiplier(int(5), int(3), int(4));
        if (m, shift) != (int(3), int(4)) || y != int(6) {
            failures.push(format!("line {}: got m={m} shift={shift} y={y}, want {line}", n + 1));
        }
        lines += 1;
    }
    assert_eq!(lines, 20_000);
    assert!(failures.is_empty(), "{} mismatches, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
}
