//! The plot of `compare`: one bar chart per compared measure ([`MEASURES`]), a bar per server, drawn
//! as SVG with `plotters` (SVG backend only, its naive text layout; no font files needed). Integer
//! ranges are inclusive in `plotters`, so `n` bars take the segments of `0..n-1`.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use thiserror::Error;

use crate::compare_report::{format_value, label, Better, ServerFigures, MEASURES, SERVERS};

/// Drawing failed (the SVG backend's error, as text).
#[derive(Debug, Error)]
#[error("plot: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// Bar colours of the servers in [`SERVERS`] order (this server, FastAPI, Socket.IO, socketioxide,
/// tokio-fanout), so a server has the same colour whatever the run's order.
const COLOURS: [RGBColor; 5] = [
    RGBColor(0x2f, 0x80, 0x5a),
    RGBColor(0x4c, 0x6e, 0xb8),
    RGBColor(0xd9, 0x82, 0x2b),
    RGBColor(0x8e, 0x5a, 0xa8),
    RGBColor(0x80, 0x80, 0x80),
];

fn colour(server: &str) -> RGBColor {
    let at = SERVERS.iter().position(|s| *s == server).unwrap_or(COLOURS.len() - 1);
    COLOURS[at.min(COLOURS.len() - 1)]
}

/// Writes the SVG to `path`, titled `title`.
pub fn write_svg(path: &Path, title: &str, figures: &[ServerFigures]) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (2400, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let panels = root.split_evenly((2, 4));
    for (area, measure) in panels.iter().zip(&MEASURES) {
        let values: Vec<f64> = figures.iter().map(|f| (measure.value)(f).unwrap_or(0.0)).collect();
        let top = values.iter().copied().fold(0.0_f64, f64::max).max(1e-9) * 1.2;
        let better = match measure.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} ({better})", measure.name), ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(70)
            .build_cartesian_2d((0..figures.len().saturating_sub(1)).into_segmented(), 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(figures.len())
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    figures.get(*i).map_or_else(String::new, |f| label(&f.server).to_owned())
                }
                SegmentValue::Last => String::new(),
            })
            .y_label_formatter(&|y| format_value(Some(*y)))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), v)],
                    colour(&figures[i].server).filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(err)?;
        chart
            .draw_series(figures.iter().enumerate().map(|(i, f)| {
                let text = (measure.value)(f).map_or_else(|| "n/a".to_owned(), |v| format_value(Some(v)));
                Text::new(text, (SegmentValue::CenterOf(i), values[i] + top * 0.03), ("sans-serif", 13))
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg() {
        let figures: Vec<ServerFigures> = SERVERS
            .iter()
            .enumerate()
            .map(|(i, s)| ServerFigures {
                server: (*s).into(),
                held: 100 * (i as u64 + 1),
                sat_secs: 1.0,
                sat_deliveries: 1_000 / (i as u64 + 1),
                ..ServerFigures::default()
            })
            .collect();
        let path = std::env::temp_dir().join(format!("compare-plot-{}.svg", std::process::id()));
        write_svg(&path, "test", &figures).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        for text in
            ["FastAPI", "Socket.IO", "socketioxide", "tokio-fanout", "deliveries/s at saturation", "1,000"]
        {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
