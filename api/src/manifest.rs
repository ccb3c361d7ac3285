//! Manifests from bytes to admitted objects: [`crate::decode`] then [`crate::admit`], with
//! every problem reported as one line naming the file, document, line and field path.

use std::fmt;

use crate::decode::{self, DecodeError, Document, Source};
use crate::validation::ValidationErrors;

/// A manifest that could not be admitted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It did not decode (syntax, types, unknown or missing fields, size, encoding).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// It decoded but failed validation; `errors` has every problem.
    #[error("{}", InvalidLines(self))]
    Invalid {
        /// File path or `<stdin>`.
        source_name: String,
        /// 1-based document index.
        document: usize,
        /// 1-based line where the document starts.
        line: u64,
        /// `kind/name` of the object.
        key: String,
        /// Every field error.
        errors: ValidationErrors,
    },
}

struct InvalidLines<'a>(&'a ManifestError);

impl fmt::Display for InvalidLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.lines().iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

impl ManifestError {
    /// One line per problem: `FILE (document N, line L): kind/name: PATH: REASON`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ManifestError::Decode(e) => vec![e.to_string()],
            ManifestError::Invalid {
                source_name,
                document,
                line,
                key,
                errors,
            } => errors
                .0
                .iter()
                .map(|fe| format!("{source_name} (document {document}, line {line}): {key}: {fe}"))
                .collect(),
        }
    }
}

/// Decodes and admits every document of `source`; each document succeeds or fails alone.
pub fn load_source(source: &Source) -> Vec<Result<Document, ManifestError>> {
    match decode::documents(source) {
        Err(e) => vec![Err(e.into())],
        Ok(chunks) => crate::par::map_ordered(&chunks, |c| admit_document(c.decode(&source.name))),
    }
}

fn admit_document(doc: Result<Document, DecodeError>) -> Result<Document, ManifestError> {
    let mut doc = doc?;
    let key = doc.object.key();
    match crate::admit(doc.object) {
        Ok(admitted) => {
            doc.object = admitted;
            Ok(doc)
        }
        Err(errors) => Err(ManifestError::Invalid {
            source_name: doc.source,
            document: doc.index,
            line: doc.line,
            key,
            errors,
        }),
    }
}

/// Loads every path (files, directories, `-`), returning the admitted documents, or every
/// problem found (one line each) when there is any. Duplicate `kind/name` across the inputs
/// is a problem too. The documents of all inputs are decoded and admitted on every core.
pub fn load_paths(paths: &[String]) -> Result<Vec<Document>, Vec<String>> {
    // Problems are reported in input order: read errors, then each source's own problems.
    let mut sources = Vec::new();
    for path in paths {
        match decode::read_path(path) {
            Err(e) => sources.push(Err(e.to_string())),
            Ok(s) => sources.extend(s.into_iter().map(Ok)),
        }
    }
    let mut work: Vec<Result<(&str, decode::Chunk<'_>), String>> = Vec::new();
    for source in &sources {
        match source {
            Err(problem) => work.push(Err(problem.clone())),
            Ok(source) => match decode::documents(source) {
                Err(e) => work.push(Err(e.to_string())),
                Ok(chunks) => {
                    work.extend(chunks.into_iter().map(|c| Ok((source.name.as_str(), c))))
                }
            },
        }
    }
    let mut problems = Vec::new();
    let mut docs = Vec::new();
    let loaded = crate::par::map_ordered(&work, |item| match item {
        Err(problem) => Err(vec![problem.clone()]),
        Ok((name, c)) => admit_document(c.decode(name)).map_err(|e| e.lines()),
    });
    for result in loaded {
        match result {
            Ok(doc) => docs.push(doc),
            Err(lines) => problems.extend(lines),
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for doc in &docs {
        let key = doc.object.key();
        let here = format!("{} (document {})", doc.source, doc.index);
        if let Some(first) = seen.insert(key.clone(), here.clone()) {
            problems.push(format!("{here}: {key} is also defined in {first}"));
        }
    }
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(problems)
    }
}
