//! A text corpus as a list of named documents, split by document for membership experiments.
//!
//! Splitting by *file* rather than by token window matters for membership inference: windows
//! cut from one file share style and vocabulary, so a window-level split would put
//! near-duplicates of members among the non-members.

use std::path::{Path, PathBuf};

use crate::data::{MembershipSplit, fixtures_dir};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// One document: a stable name (its path relative to the corpus root) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Path relative to the corpus root, with `/` separators (`library/functions.rst.txt`).
    pub name: String,
    /// The whole text.
    pub text: String,
}

/// Documents in a fixed order (sorted by name when read from a directory).
///
/// ```
/// use quantlens::text::{Document, TextCorpus};
///
/// let corpus = TextCorpus::new((0..10).map(|i| Document {
///     name: format!("doc{i}.txt"),
///     text: format!("text of document {i}"),
/// }).collect())?;
/// let (members, non_members) = corpus.split_by_document(0.5, 7)?;
/// assert_eq!(members.len() + non_members.len(), 10);
/// // Same seed, same split.
/// assert_eq!(corpus.split_by_document(0.5, 7)?.0, members);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextCorpus {
    documents: Vec<Document>,
}

impl TextCorpus {
    /// A corpus of the given documents (at least one; names must be distinct).
    pub fn new(documents: Vec<Document>) -> Result<Self> {
        if documents.is_empty() {
            return Err(Error::InvalidParameter {
                name: "documents",
                reason: "a corpus needs at least one document".into(),
            });
        }
        let mut names: Vec<&str> = documents.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::InvalidParameter {
                name: "documents",
                reason: format!("two documents are named {:?}", w[0]),
            });
        }
        Ok(TextCorpus { documents })
    }

    /// Every file under `root` whose name ends in `suffix`, recursively, sorted by relative
    /// path (so the order does not depend on the file system). Files must be UTF-8.
    pub fn from_dir(root: impl AsRef<Path>, suffix: &str) -> Result<Self> {
        let root = root.as_ref();
        let mut paths = Vec::new();
        collect_files(root, suffix, &mut paths)?;
        let mut documents = paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let name = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                Ok(Document { name, text })
            })
            .collect::<Result<Vec<_>>>()?;
        documents.sort_by(|a, b| a.name.cmp(&b.name));
        if documents.is_empty() {
            return Err(Error::MissingFixture {
                path: root.display().to_string(),
                reason: format!("no *{suffix} files"),
            });
        }
        TextCorpus::new(documents)
    }

    /// The Python 3.11 documentation sources (reStructuredText, 497 files, 11 MB of English
    /// technical prose; PSF License) from the fixture cache (`python-docs/`, filled by
    /// `scripts/fetch-fixtures.sh` from Debian's `python3.11-doc`).
    pub fn python_docs() -> Result<Self> {
        let root = fixtures_dir().join("python-docs");
        if !root.is_dir() {
            return Err(Error::MissingFixture {
                path: root.display().to_string(),
                reason: "not found".into(),
            });
        }
        TextCorpus::from_dir(root, ".rst.txt")
    }

    /// The documents, in order.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Always false: a corpus has at least one document.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// Total characters (Unicode scalar values) over all documents.
    pub fn chars(&self) -> usize {
        self.documents.iter().map(|d| d.text.chars().count()).sum()
    }

    /// The documents at `indices` (in that order; indices must be valid and distinct).
    pub fn subset(&self, indices: &[usize]) -> Result<TextCorpus> {
        let docs = indices
            .iter()
            .map(|&i| {
                self.documents
                    .get(i)
                    .cloned()
                    .ok_or_else(|| Error::InvalidParameter {
                        name: "indices",
                        reason: format!("document {i} of a corpus of {}", self.len()),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        TextCorpus::new(docs)
    }

    /// The documents in a seeded random order (same seed, same order).
    pub fn shuffled(&self, seed: u64) -> TextCorpus {
        let mut docs = self.documents.clone();
        SplitMix64::new(seed).shuffle(&mut docs);
        TextCorpus { documents: docs }
    }

    /// A seeded split by document: a fraction `member_fraction` of the documents (rounded,
    /// at least one on each side) for training ("members"), the rest held out, each side in
    /// corpus order. The draw is [`MembershipSplit`]'s, so the same seed gives the same split.
    pub fn split_by_document(
        &self,
        member_fraction: f64,
        seed: u64,
    ) -> Result<(TextCorpus, TextCorpus)> {
        if member_fraction.is_nan() || member_fraction <= 0.0 || member_fraction >= 1.0 {
            return Err(Error::InvalidParameter {
                name: "member_fraction",
                reason: format!("{member_fraction} is not strictly between 0 and 1"),
            });
        }
        let n = self.len();
        if n < 2 {
            return Err(Error::TooFewSamples {
                what: "documents to split",
                got: n,
                needed: 2,
            });
        }
        let members = ((n as f64 * member_fraction).round() as usize).clamp(1, n - 1);
        let split = MembershipSplit::builder(n)
            .members(members)
            .non_members(n - members)
            .seed(seed)
            .build()?;
        let mut m = split.members().to_vec();
        let mut h = split.non_members().to_vec();
        m.sort_unstable();
        h.sort_unstable();
        Ok((self.subset(&m)?, self.subset(&h)?))
    }
}

fn collect_files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_files(&path, suffix, out)?;
        } else if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        {
            out.push(path);
        }
    }
    Ok(())
}
