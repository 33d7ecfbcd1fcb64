//! Text and JSON renderings of the per-layer and parameter tables.

use alexvgg_import::{param_shapes, tf_name};
use alexvgg_models::{Architecture, LayerInfo, LayerKind, Model, gflops};

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pair([a, b]: [usize; 2]) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}x{b}")
    }
}

/// The per-layer table as aligned text, like the study note's AlexNet table, with totals.
pub fn layers_text(arch: &Architecture, rows: &[LayerInfo]) -> String {
    let mut out = format!(
        "{} — input {}x{}x{}\n",
        arch.describe(),
        rows[0].output[1],
        rows[0].output[2],
        rows[0].output[0]
    );
    out.push_str(&format!(
        "{:<9} {:<8} {:>13} {:>7} {:>6} {:>9} {:>6} {:>12} {:>15}\n",
        "layer",
        "kind",
        "output HxWxC",
        "kernel",
        "stride",
        "padding",
        "groups",
        "params",
        "mult-adds"
    ));
    for r in rows {
        let kind = match r.kind {
            LayerKind::Input => "input",
            LayerKind::Conv if r.batch_norm => "conv+bn",
            LayerKind::Conv => "conv",
            LayerKind::Lrn => "lrn",
            LayerKind::MaxPool if r.ceil_mode => "max/ceil",
            LayerKind::MaxPool => "max",
            LayerKind::AdaptiveAvgPool => "adaptavg",
            LayerKind::Linear => "fc",
        };
        let output = if r.kind == LayerKind::Linear {
            r.output[0].to_string()
        } else {
            format!("{}x{}x{}", r.output[1], r.output[2], r.output[0])
        };
        let padding = r.padding.map_or(String::new(), |[t, l, b, rr]| {
            if t == l && l == b && b == rr {
                t.to_string()
            } else {
                format!("{t},{l},{b},{rr}")
            }
        });
        out.push_str(&format!(
            "{:<9} {:<8} {:>13} {:>7} {:>6} {:>9} {:>6} {:>12} {:>15}\n",
            r.name,
            kind,
            output,
            r.kernel.map_or(String::new(), pair),
            r.stride.map_or(String::new(), pair),
            padding,
            if r.kind == LayerKind::Conv {
                r.groups.to_string()
            } else {
                String::new()
            },
            if r.params > 0 {
                thousands(r.params as u64)
            } else {
                String::new()
            },
            if r.macs > 0 {
                thousands(r.macs)
            } else {
                String::new()
            },
        ));
    }
    let params: usize = rows.iter().map(|r| r.params).sum();
    let macs: u64 = rows.iter().map(|r| r.macs).sum();
    out.push_str(&format!(
        "total: {} parameters, {} multiply-adds ({:.2} GFLOP per image)\n",
        thousands(params as u64),
        thousands(macs),
        gflops(rows)
    ));
    out
}

/// The per-layer table as JSON.
pub fn layers_json(arch: &Architecture, rows: &[LayerInfo]) -> serde_json::Value {
    serde_json::json!({
        "model": arch.name(),
        "layers": rows,
        "total_params": rows.iter().map(|r| r.params).sum::<usize>(),
        "total_macs": rows.iter().map(|r| r.macs).sum::<u64>(),
        "gflop_per_image": gflops(rows),
    })
}

/// One parameter tensor: burn path and shape, and the TensorFlow name and shape of the note.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ParamRow {
    /// burn module path (`convs.0.conv.weight`).
    pub path: String,
    /// burn shape (OIHW convolutions, `[in, out]` linears).
    pub shape: Vec<usize>,
    /// TensorFlow name (`conv1_W`), where the TensorFlow files have the tensor.
    pub tf_name: Option<String>,
    /// TensorFlow shape (HWIO convolutions).
    pub tf_shape: Option<Vec<usize>>,
    /// Elements.
    pub numel: usize,
}

/// Every parameter tensor of `model` (BatchNorm running statistics are buffers, not counted).
pub fn param_rows(arch: &Architecture, model: &Model) -> Vec<ParamRow> {
    param_shapes(model)
        .into_iter()
        .filter(|(path, _)| !path.ends_with("running_mean") && !path.ends_with("running_var"))
        .map(|(path, shape)| {
            let tf = tf_name(arch, &path, &shape);
            ParamRow {
                numel: shape.iter().product(),
                tf_name: tf.as_ref().map(|t| t.0.clone()),
                tf_shape: tf.map(|t| t.1),
                path,
                shape,
            }
        })
        .collect()
}

/// The parameter list as aligned text with the total.
pub fn params_text(arch: &Architecture, rows: &[ParamRow]) -> String {
    let tuple = |s: &[usize]| {
        let inner = s
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        if s.len() == 1 {
            format!("({inner},)")
        } else {
            format!("({inner})")
        }
    };
    let mut out = format!(
        "{}\n{:<28} {:<20} {:<12} {:<20} {:>12}\n",
        arch.describe(),
        "burn path",
        "burn shape",
        "TF name",
        "TF shape",
        "elements"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<28} {:<20} {:<12} {:<20} {:>12}\n",
            r.path,
            format!("{:?}", r.shape),
            r.tf_name.as_deref().unwrap_or("-"),
            r.tf_shape.as_deref().map_or("-".to_string(), tuple),
            thousands(r.numel as u64)
        ));
    }
    out.push_str(&format!(
        "total: {} parameters\n",
        thousands(rows.iter().map(|r| r.numel as u64).sum())
    ));
    out
}
