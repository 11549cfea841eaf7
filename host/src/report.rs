//! Training history (CSV and JSON, like Keras's `History.history`), the
//! tutorial's two plots (training vs validation accuracy, training vs
//! validation loss) and the confusion-matrix picture of `host eval`.
//!
//! Text is drawn with the DejaVu Sans font shipped in `host/assets/`
//! (registered with plotters' `ab_glyph` backend), so plots render the same on
//! a headless CI machine with no fonts installed.
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One epoch of history, with Keras's metric names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based, as Keras prints it.
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    /// None when there is no validation split.
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    /// Learning rate used during this epoch.
    pub lr: f32,
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// Why a report file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot draw {}: {what}", path.display())]
    Plot { path: PathBuf, what: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

/// `epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec`.
pub fn history_csv(history: &[EpochRecord]) -> String {
    let mut s = String::from("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec\n");
    let opt = |v: Option<f32>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in history {
        s.push_str(&format!(
            "{},{},{},{},{},{},{:.3},{:.1}\n",
            r.epoch,
            r.loss,
            r.accuracy,
            opt(r.val_loss),
            opt(r.val_accuracy),
            r.lr,
            r.seconds,
            r.images_per_sec
        ));
    }
    s
}

/// Keras's `history.history` shape: one list per metric.
pub fn history_json(history: &[EpochRecord]) -> serde_json::Value {
    serde_json::json!({
        "epoch": history.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        "loss": history.iter().map(|r| r.loss).collect::<Vec<_>>(),
        "accuracy": history.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
        "val_loss": history.iter().map(|r| r.val_loss).collect::<Vec<_>>(),
        "val_accuracy": history.iter().map(|r| r.val_accuracy).collect::<Vec<_>>(),
        "lr": history.iter().map(|r| r.lr).collect::<Vec<_>>(),
        "seconds": history.iter().map(|r| r.seconds).collect::<Vec<_>>(),
    })
}

/// Write `history.csv`, `history.json` and `curves.png` into `dir`.
pub fn write_history(dir: &Path, history: &[EpochRecord]) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let csv = dir.join("history.csv");
    crate::atomic::write_atomic(&csv, history_csv(history).as_bytes()).map_err(|e| io_err(&csv)(e.source))?;
    let json = dir.join("history.json");
    let text = serde_json::to_string_pretty(&history_json(history)).unwrap_or_default();
    crate::atomic::write_atomic(&json, text.as_bytes()).map_err(|e| io_err(&json)(e.source))?;
    plot_history(&dir.join("curves.png"), history)
}

/// Register the shipped font once per process.
pub(crate) fn ensure_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        // Cannot fail on the shipped font; if it somehow did, text would be missing, not the plot.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);

/// The tutorial's figure: accuracy on the left, loss on the right, training
/// and validation curves over epochs.
pub fn plot_history(path: &Path, history: &[EpochRecord]) -> Result<(), ReportError> {
    ensure_font();
    let perr = |e: &dyn std::fmt::Display| ReportError::Plot { path: path.to_path_buf(), what: e.to_string() };
    let root = BitMapBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| perr(&e))?;
    let (left, right) = root.split_horizontally(600);
    let pts = |f: &dyn Fn(&EpochRecord) -> Option<f32>| -> Vec<(f64, f64)> {
        history.iter().filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v as f64))).collect()
    };
    type Series = Vec<(f64, f64)>;
    let panels: [(&DrawingArea<BitMapBackend, _>, &str, Series, Series, bool); 2] = [
        (&left, "Training and Validation Accuracy", pts(&|r| Some(r.accuracy)), pts(&|r| r.val_accuracy), false),
        (&right, "Training and Validation Loss", pts(&|r| Some(r.loss)), pts(&|r| r.val_loss), true),
    ];
    for (area, title, train, val, is_loss) in panels {
        let max_epoch = history.iter().map(|r| r.epoch).max().unwrap_or(1).max(2) as f64;
        let ys = train.iter().chain(&val).map(|p| p.1);
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(0.01);
        let (y0, y1) =
            if is_loss { ((lo - pad).max(0.0), hi + pad) } else { ((lo - pad).max(0.0), (hi + pad).min(1.02)) };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d(1.0..max_epoch, y0..y1)
            .map_err(|e| perr(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(if is_loss { "loss" } else { "accuracy" })
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .x_labels(max_epoch.min(10.0) as usize)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.2}"))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| perr(&e))?;
        let label =
            if is_loss { ("Training Loss", "Validation Loss") } else { ("Training Accuracy", "Validation Accuracy") };
        for (data, name, colour) in [(train, label.0, TRAIN_COLOUR), (val, label.1, VAL_COLOUR)] {
            if data.is_empty() {
                continue;
            }
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(data.clone(), style))
                .map_err(|e| perr(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(data.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(|e| perr(&e))?;
        }
        // The tutorial puts accuracy's legend lower right and loss's upper right.
        chart
            .configure_series_labels()
            .position(if is_loss { SeriesLabelPosition::UpperRight } else { SeriesLabelPosition::LowerRight })
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| perr(&e))?;
    }
    root.present().map_err(|e| perr(&e))?;
    Ok(())
}

/// A confusion matrix as a heat map: rows are true classes, columns
/// predictions, each cell coloured by its share of the row, with its count.
pub fn plot_confusion(path: &Path, class_names: &[String], matrix: &[Vec<u64>]) -> Result<(), ReportError> {
    ensure_font();
    let perr = |e: &dyn std::fmt::Display| ReportError::Plot { path: path.to_path_buf(), what: e.to_string() };
    let n = class_names.len().max(1);
    let cell = (480 / n).clamp(24, 90) as i32;
    let margin_l = 150;
    let margin_t = 70;
    let size = (margin_l + cell * n as i32 + 30, margin_t + cell * n as i32 + 110);
    let root = BitMapBackend::new(path, (size.0 as u32, size.1 as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| perr(&e))?;
    let text = |s: u32| TextStyle::from(("sans-serif", s).into_font()).color(&BLACK);
    root.draw(&Text::new("Confusion matrix (rows: true, columns: predicted)", (12, 16), text(18)))
        .map_err(|e| perr(&e))?;
    for (i, row) in matrix.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (j, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let shade = (255.0 * (1.0 - share * 0.85)) as u8;
            let colour = RGBColor(shade, shade, 255);
            let (x, y) = (margin_l + j as i32 * cell, margin_t + i as i32 * cell);
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], colour.filled())).map_err(|e| perr(&e))?;
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(200, 200, 200)))
                .map_err(|e| perr(&e))?;
            let label = count.to_string();
            let style = text((cell as u32 / 3).clamp(10, 18));
            let style = if share > 0.6 { style.color(&WHITE) } else { style };
            let tx = x + cell / 2 - (label.len() as i32 * cell / 14).min(cell / 2);
            root.draw(&Text::new(label, (tx, y + cell / 2 - cell / 8), style)).map_err(|e| perr(&e))?;
        }
    }
    for (i, name) in class_names.iter().enumerate() {
        let y = margin_t + i as i32 * cell + cell / 2 - 8;
        root.draw(&Text::new(name.clone(), (10, y), text(15))).map_err(|e| perr(&e))?;
        // Column names rotated so long names fit.
        let x = margin_l + i as i32 * cell + cell / 2 - 8;
        let style = text(15).transform(FontTransform::Rotate90);
        root.draw(&Text::new(name.clone(), (x, margin_t + n as i32 * cell + 8), style)).map_err(|e| perr(&e))?;
    }
    root.present().map_err(|e| perr(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<EpochRecord> {
        (1..=6)
            .map(|e| EpochRecord {
                epoch: e,
                loss: 1.6 / e as f32,
                accuracy: 0.3 + 0.1 * e as f32,
                val_loss: Some(1.7 / e as f32 + 0.05),
                val_accuracy: Some(0.25 + 0.1 * e as f32),
                lr: 1e-3,
                seconds: 1.0,
                images_per_sec: 100.0,
            })
            .collect()
    }

    #[test]
    fn csv_and_json_have_one_row_per_epoch() {
        let h = history();
        let csv = history_csv(&h);
        assert_eq!(csv.lines().count(), 7);
        assert!(csv.starts_with("epoch,loss,accuracy,val_loss,val_accuracy"));
        let j = history_json(&h);
        assert_eq!(j["val_accuracy"].as_array().unwrap().len(), 6);
        let mut no_val = h.clone();
        no_val[0].val_loss = None;
        assert!(history_csv(&no_val).lines().nth(1).unwrap().contains(",,"));
    }

    #[test]
    fn plots_render_with_text() {
        let dir = tempfile::tempdir().unwrap();
        write_history(dir.path(), &history()).unwrap();
        let img = image::open(dir.path().join("curves.png")).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1200, 560));
        // Text pixels: dark grey/black anti-aliased glyphs appear in the title band.
        let dark = (0..1200)
            .flat_map(|x| (0..40).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 200, "title text missing: {dark} dark pixels");
        let names: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
        let p = dir.path().join("confusion.png");
        plot_confusion(&p, &names, &[vec![5, 1, 0], vec![0, 6, 0], vec![2, 0, 4]]).unwrap();
        assert!(image::open(&p).is_ok());
    }
}
