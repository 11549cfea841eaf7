//! The tutorial's whole workflow on a flower_photos-shaped folder: class
//! subfolders of JPEG photos of mixed sizes (and one PNG, one upper-case
//! extension), through train (with augmentation and validation), eval,
//! predict, quantize (calibrating on the run's own folder), inspect,
//! simulate and compare — each as a user types it.
use std::path::Path;
use std::process::{Command, Output};

use host::data::synthetic::SyntheticDataset;
use host::data::ImageSource;

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host")).args(args).output().expect("run host")
}

fn ok(args: &[&str]) -> String {
    let o = host(args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "host {args:?} failed:\n{out}\n{err}");
    out.into_owned()
}

/// Five "flower" classes of JPEGs whose sizes vary like real photos.
fn flower_photos(root: &Path) -> Vec<std::path::PathBuf> {
    let names = ["daisy", "dandelion", "roses", "sunflowers", "tulips"];
    let synth = SyntheticDataset::new(8, 77);
    let mut files = Vec::new();
    for i in 0..synth.len() {
        let label = synth.label(i);
        if label >= names.len() {
            continue;
        }
        // Mixed sizes and aspect ratios, as in flower_photos (e.g. 320x240, 500x333, 240x500).
        let (w, h) = [(320, 240), (500, 333), (240, 320), (180, 180), (260, 390)][i % 5];
        let img = synth.render(i, h, w);
        let rgb = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let p = |c| (img[[y as usize, x as usize, c]] * 255.0).round() as u8;
            image::Rgb([p(0), p(1), p(2)])
        });
        let dir = root.join(names[label]);
        std::fs::create_dir_all(&dir).expect("class folder");
        let name = match i % 11 {
            3 => format!("{i:05}.png"),
            7 => format!("{i:05}.JPG"),
            _ => format!("{i:05}.jpg"),
        };
        let path = dir.join(name);
        let format = if path.extension().is_some_and(|e| e == "png") {
            image::ImageFormat::Png
        } else {
            image::ImageFormat::Jpeg
        };
        rgb.save_with_format(&path, format).expect("write photo");
        files.push(path);
    }
    files
}

#[test]
fn the_tutorial_workflow_runs_on_a_flower_photos_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("flower_photos");
    let run = tmp.path().join("run");
    let photos = flower_photos(&data);
    assert_eq!(photos.len(), 40);
    let (d, r) = (data.to_str().expect("utf-8"), run.to_str().expect("utf-8"));

    let out = ok(&[
        "train",
        "--data",
        d,
        "--arch",
        "alexnet-tiny",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--out",
        r,
        "--no-progress",
    ]);
    assert!(out.contains("32 training, 8 validation images, 5 classes"), "{out}");
    assert!(out.contains("daisy, dandelion, roses, sunflowers, tulips"), "{out}");
    assert!(out.contains("Epoch 2/2"), "{out}");
    for f in ["last.safetensors", "best.safetensors", "history.csv", "history.json", "curves.png"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let ck = run.join("best.safetensors");
    let c = ck.to_str().expect("utf-8");

    let eval: serde_json::Value = serde_json::from_str(&ok(&["eval", "--checkpoint", c, "--json"])).expect("json");
    assert_eq!(eval["images"], 8, "eval defaults to the run's validation split: {eval}");
    assert_eq!(eval["class_names"].as_array().map(Vec::len), Some(5));

    let photo = photos[0].to_str().expect("utf-8");
    let out = ok(&["predict", "--checkpoint", c, photo]);
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("This image most likely belongs to ") && first.ends_with(" percent confidence."),
        "{out}"
    );

    let int8 = tmp.path().join("model.int8");
    let i8p = int8.to_str().expect("utf-8");
    let out = ok(&["quantize", "--checkpoint", c, "--to", "int8", "--out", i8p]);
    assert!(out.contains("validated by reading it back"), "{out}");
    let f16 = tmp.path().join("model.f16");
    ok(&["quantize", "--checkpoint", c, "--to", "f16", "--out", f16.to_str().expect("utf-8")]);

    let out = ok(&["inspect", i8p]);
    assert!(out.contains("arena bytes:") && out.contains("MACs per inference:"), "{out}");
    assert!(out.contains("classes: daisy, dandelion, roses, sunflowers, tulips"), "{out}");

    let sim: serde_json::Value =
        serde_json::from_str(&ok(&["simulate", "--model", i8p, "--json", photo])).expect("json");
    assert_eq!(sim["output"].as_array().map(Vec::len), Some(5), "{sim}");
    assert!(sim["class"].is_string());

    let cmp: serde_json::Value = serde_json::from_str(&ok(&[
        "compare",
        "--checkpoint",
        c,
        "--model",
        i8p,
        "--model",
        f16.to_str().expect("utf-8"),
        "--json",
    ]))
    .expect("json");
    assert_eq!(cmp["images"], 8, "{cmp}");
    assert_eq!(cmp["models"].as_array().map(Vec::len), Some(2));
    assert!(tmp.path().join("sqnr.png").exists());

    // An impossible threshold makes compare fail, so CI can hold the line.
    let o = host(&["compare", "--checkpoint", c, "--model", i8p, "--min-agreement", "1.01"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("agreement"), "{o:?}");
}
