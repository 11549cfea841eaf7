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
        for key in ["precision", "class", "confidence", "top5", "output", "logits"] {
            assert_eq!(dev[key], sim[key], "{file}: {key} differs between flash and simulate");
        }
        // The desktop runs whole tensors; the firmware runs conv -> BN -> pool
        // in bands of rows, in the banded plan's smaller arena.
        let bytes = shared::format::AlignedBytes::copy_from(&std::fs::read(&model).expect("model file"));
        let parsed = shared::format::parse(&bytes).expect("golden model parses");
        let banded = shared::band::plan_banded(&parsed, shared::band::InputRows::Resident);
        assert_eq!(sim["arena_bytes"], banded.whole_tensor_bytes, "{file}: simulate's arena");
        assert_eq!(dev["arena_bytes"], banded.arena_bytes, "{file}: the device's arena");
        assert!(banded.arena_bytes < banded.whole_tensor_bytes, "{file}: {banded:?}");
        let hashes = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v["layers"].as_array().expect("layers").iter().map(|l| l["fnv1a64"].clone()).collect()
        };
        assert_eq!(hashes(&dev), hashes(&sim), "{file}: per-layer hashes differ");
        assert_eq!(sim["class"], "triangle", "{file}: the golden model should see the triangle");
        // The firmware's defmt log, decoded with the ELF's table, under "log".
        let log: Vec<&str> = dev["log"].as_array().expect("log").iter().filter_map(|l| l.as_str()).collect();
        // Run 1 reports every layer; run 2, quiet, is the inference alone
        // (`ticks`), in fewer ticks.
        let reported = format!("INFO run 1: {} ticks", dev["reported_ticks"]);
        let quiet = format!("INFO run 2: {} ticks", dev["ticks"]);
        let model_ok = format!("INFO model ok: {} bytes,", std::fs::metadata(&model).expect("model file").len());
        for done in [&reported, &quiet] {
            assert!(log.contains(&done.as_str()), "{file}: log {log:?} lacks {done:?}");
        }
        assert!(
            dev["ticks"].as_u64() < dev["reported_ticks"].as_u64(),
            "{file}: {} vs {}",
            dev["ticks"],
            dev["reported_ticks"]
        );
        assert!(log.iter().any(|l| l.starts_with(&model_ok)), "{file}: log {log:?} lacks {model_ok:?}...");
        assert_eq!(dev["log_warnings"], serde_json::json!([]), "{file}: defmt decoding problems");
    }
}

/// The decoded device log goes to stderr unless `--quiet-log`.
#[test]
fn flash_prints_the_device_log_on_stderr_unless_quiet() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let (model, image) = (golden.join("micro.int8"), golden.join("images/triangle.png"));
    let stderr = |quiet: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host"));
        cmd.arg("flash").arg("--model").arg(&model).arg("--image").arg(&image);
        if quiet {
            cmd.arg("--quiet-log");
        }
        let out = cmd.output().expect("run host");
        assert!(out.status.success(), "host flash failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let loud = stderr(false);
    assert!(loud.lines().any(|l| l.starts_with("device: INFO run 1: ") && l.ends_with(" ticks")), "{loud}");
    assert!(loud.contains("device: INFO model ok: "), "{loud}");
    let quiet = stderr(true);
    assert!(!quiet.contains("device: "), "--quiet-log still printed the log: {quiet}");
}
