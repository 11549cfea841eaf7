//! `host flash --json` and `host simulate --json` speak the same shape, and
//! on the golden model the device's answer is the simulator's, value for value.
use std::path::Path;
use std::process::Command;

fn host(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_host")).args(args).output().expect("run host");
    assert!(out.status.success(), "host {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("host {args:?}: not JSON ({e})"))
}

#[test]
fn flash_json_matches_simulate_json_on_the_golden_models() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let image = golden.join("images/triangle.png");
    for file in ["micro.int8", "micro.f16"] {
        let model = golden.join(file);
        let (m, i) = (model.to_str().expect("utf-8 path"), image.to_str().expect("utf-8 path"));
        let sim = host(&["simulate", "--model", m, "--json", i]);
        let dev = host(&["flash", "--board", "qemu-an386", "--model", m, "--image", i, "--json", "--verify"]);
        for key in ["precision", "class", "confidence", "top5", "output", "logits", "arena_bytes"] {
            assert_eq!(dev[key], sim[key], "{file}: {key} differs between flash and simulate");
        }
        let hashes = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v["layers"].as_array().expect("layers").iter().map(|l| l["fnv1a64"].clone()).collect()
        };
        assert_eq!(hashes(&dev), hashes(&sim), "{file}: per-layer hashes differ");
        assert_eq!(sim["class"], "triangle", "{file}: the golden model should see the triangle");
    }
}
